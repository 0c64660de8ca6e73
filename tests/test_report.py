"""pairlie-test's no-reference scores, γ list and report.html, checked in a real browser (headless Chromium)."""

import csv
import json
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import (
    OFFICIAL_WEIGHTS,
    SHARED_DATA,
    RunIf,
    chromium_path,
    make_paired_tree,
    run_cli,
    save_tiny_checkpoint,
)
from pairlie.evaluate.report import KINDS, THUMB_DIR, thumbnail_name
from pairlie.evaluate.scoring import evaluate
from pairlie.infer.enhancer import Enhancer
from pairlie.model.nets import PairLIENet

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",  # wait for every image and the page's check script
]
pytestmark = [RunIf(clis=("pairlie-test",)), pytest.mark.xdist_group("test_report")]  # one paired_run per session


def textured(path: Path, size=(200, 120), seed=0, scale=1.0) -> Path:
    """An image with structure and noise, large enough for two NIQE blocks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    base = 128 + 60 * np.sin(x / (5.0 + seed)) * np.cos(y / 9.0)
    image = (base[..., None] + rng.normal(0, 12, (size[1], size[0], 3))).clip(0, 255) * scale
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.astype(np.uint8)).save(path)
    return path


def sharp_checkpoint(path: Path) -> Path:
    """A width-4 checkpoint whose outputs keep the input's texture (a plain random one gives flat images: NIQE n/a)."""
    return save_tiny_checkpoint(path, sharpen=4.0)


def run_test(args, cwd):
    return run_cli("pairlie-test", *args, cwd=cwd)


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory):
    """A pairlie-test run on two low/high pairs with the γ list [0.1, 0.3]."""
    root = tmp_path_factory.mktemp("paired")
    for i, name in enumerate(("b.png", "a b.png")):  # a space: thumbnails' URLs are quoted
        textured(root / "pairs" / "low" / name, seed=i, scale=0.25)
        textured(root / "pairs" / "high" / name, seed=i)
    ckpt = sharp_checkpoint(root / "sharp.ckpt")
    out = root / "out"
    args = [f"ckpt_path={ckpt}", f"data.test_dir={root / 'pairs'}", "model.gamma=[0.1,0.3]", f"hydra.run.dir={out}"]
    result = run_test(args, root)
    assert result.returncode == 0, result.stderr[-2000:]
    return out, result.stdout


def test_a_folder_without_references_gets_niqe_and_loe_and_na_with_the_reason(tmp_path):
    ckpt = sharp_checkpoint(tmp_path / "sharp.ckpt")
    photos = tmp_path / "photos"
    textured(photos / "1.png", seed=1, scale=0.3)
    textured(photos / "2.jpg", seed=2, scale=0.3)
    Image.new("RGB", (48, 40), (20, 20, 30)).save(photos / "small.png")
    out = tmp_path / "out"
    result = run_test([f"ckpt_path={ckpt}", f"data.test_dir={photos}", f"hydra.run.dir={out}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["paired"] is False and metrics["psnr"] is None and metrics["count"] == 3
    assert isinstance(metrics["niqe"], float) and isinstance(metrics["input_niqe"], float), metrics
    assert isinstance(metrics["loe"], float) and metrics["loe"] >= 0
    assert metrics["niqe_count"] == 2 and list(metrics["niqe_na"]) == ["small.png"]
    assert "needs at least two" in metrics["niqe_na"]["small.png"]
    assert "MATLAB niqe" in metrics["protocol"]["niqe"] and "min(H,W)" in metrics["protocol"]["loe"]
    rows = {r["name"]: r for r in csv.DictReader((out / "per_image.csv").open())}
    assert rows["small.png"]["niqe"] == "n/a" and "needs at least two" in rows["small.png"]["note"]
    assert rows["1.png"]["psnr"] == "" and float(rows["1.png"]["niqe"]) > 0
    niqes = [float(rows[n]["niqe"]) for n in ("1.png", "2.jpg")]
    assert metrics["niqe"] == pytest.approx(np.mean(niqes), abs=1e-4)
    assert "NIQE" in result.stdout and "LOE" in result.stdout and "PSNR" not in result.stdout
    assert "NIQE n/a for 1 image(s), e.g. small.png" in result.stdout
    assert (out / "report.html").is_file() and "report.html" in result.stdout
    thumbs = sorted(p.name for p in (out / THUMB_DIR).iterdir())
    assert thumbs == sorted(thumbnail_name(n, k) for n in rows for k in ("input", "enhanced", "L", "R"))


def test_gamma_list_scores_every_gamma_and_names_the_best(paired_run):
    out, stdout = paired_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gammas"] == [0.1, 0.3] and metrics["gamma"] == 0.1
    table = metrics["gamma_table"]
    assert [r["gamma"] for r in table] == [0.1, 0.3]
    assert table[0]["psnr"] == metrics["psnr"] and table[0]["niqe"] == metrics["niqe"]
    for key, pick in (("psnr", max), ("ssim", max), ("niqe", min), ("loe", min)):
        assert metrics["best_gamma"][key] == pick(table, key=lambda r: r[key])["gamma"]
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [(r["name"], r["gamma"]) for r in rows] == [
        ("a b.png", "0.1"),
        ("a b.png", "0.3"),
        ("b.png", "0.1"),
        ("b.png", "0.3"),
    ]
    assert "best gamma: PSNR (dB)" in stdout and "enhanced, gamma 0.3" in stdout


def test_gamma_list_decomposes_once_and_scores_as_single_gamma_runs(tmp_path, monkeypatch):
    pairs = []
    for i in range(2):
        low = textured(tmp_path / "low" / f"{i}.png", seed=i, scale=0.25)
        pairs.append((low, textured(tmp_path / "high" / f"{i}.png", seed=i)))
    net = PairLIENet(width=4)
    calls = []
    decompose = Enhancer.decompose
    monkeypatch.setattr(Enhancer, "decompose", lambda self, image: calls.append(1) or decompose(self, image))
    listed = evaluate(Enhancer(net, gamma=0.1), pairs, gammas=[0.1, 0.14, 0.3])
    assert len(calls) == 2  # one decomposition per image for all three γ
    for gamma in (0.1, 0.14, 0.3):
        single = evaluate(Enhancer(net, gamma=gamma), pairs)  # what one run of a multirun computes
        assert single.rows() == listed.rows(gamma)  # every score, exactly


class _Keyed(HTMLParser):
    """Text of every element with a data-key, and the <html> element's data attributes."""

    def __init__(self):
        super().__init__()
        self.values, self.root, self._open = {}, {}, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.root = attrs
        if "data-key" in attrs:
            self._open.append([attrs["data-key"], ""])

    def handle_data(self, data):
        if self._open:  # the innermost: a cell's score, not the input score in a span inside it
            self._open[-1][1] += data

    def handle_endtag(self, tag):
        if self._open and tag in ("td", "th", "span"):
            key, text = self._open.pop()
            self.values[key] = text.strip()


def _chromium(*args, cwd):
    profile = cwd / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=180, cwd=cwd, env={**os.environ, "HOME": str(cwd)}
    )


@RunIf(chromium=True)
def test_report_in_a_real_browser_loads_every_image_and_shows_the_numbers_of_metrics_json(paired_run, tmp_path):
    out, _ = paired_run
    metrics = json.loads((out / "metrics.json").read_text())
    per_image = {r["name"]: r for r in csv.DictReader((out / "per_image.csv").open()) if r["gamma"] == "0.1"}
    url = (out / "report.html").as_uri()
    dom = _chromium("--dump-dom", f"{url}#check", cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = _Keyed()
    page.feed(dom.stdout)
    expected_images = len(per_image) * len(KINDS)  # input, enhanced, reference, L, R
    assert page.root.get("data-images-loaded") == f"{expected_images}/{expected_images}", page.root
    assert page.root.get("data-images-broken") == ""

    checked = 0
    for key, text in page.values.items():
        parts = key.split(".")
        if parts[0] == "per_image":
            value = float(per_image[".".join(parts[1:-1])][parts[-1]])
        elif parts[0] == "gamma_table":
            value = metrics["gamma_table"][int(parts[1])][parts[2]]
        else:
            value = metrics[key]
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(float(text) - value) <= 0.5 * 10**-decimals + 1e-9, (key, text, value)
        checked += 1
    # summary (input + enhanced), the γ table (2 rows) and both images: PSNR, SSIM, NIQE, LOE each
    assert checked >= 8 + 2 * 5 + 2 * 6, sorted(page.values)
    assert page.values["psnr"] == f"{metrics['psnr']:.3f}" and page.values["niqe"] == f"{metrics['niqe']:.3f}"
    rows = [
        k[len("per_image.") : -len(".psnr")] for k in page.values if k.startswith("per_image.") and k.endswith(".psnr")
    ]
    assert rows == sorted(rows, key=lambda n: float(per_image[n]["psnr"]))  # worst first

    shot = tmp_path / "report.png"
    taken = _chromium(f"--screenshot={shot}", "--window-size=1280,1600", url, cwd=tmp_path)
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
        assert np.asarray(image.convert("L")).std() > 10  # a page with tables and photos, not a blank one


@RunIf(shared=True)
def test_mef_with_the_official_weights_prints_niqe_and_loe_and_writes_the_report(tmp_path):
    """The issue's acceptance run on 4 of MEF's 17 images (the README's table has all of them)."""
    args = [
        f"ckpt_path={OFFICIAL_WEIGHTS}",
        f"data.test_dir={SHARED_DATA / 'unpaired' / 'MEF'}",
        "data.test_limit=4",
        "model.gamma=0.2",
        "save_images=false",
        "lpips=false",
        f"hydra.run.dir={tmp_path / 'out'}",
    ]
    result = run_test(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["count"] == 4 and metrics["niqe_count"] == 4
    assert 2 < metrics["niqe"] < 8 and 2 < metrics["input_niqe"] < 8 and metrics["loe"] > 0
    assert "NIQE" in result.stdout and "LOE" in result.stdout and f"{metrics['niqe']:.3f}" in result.stdout
    assert (tmp_path / "out" / "report.html").is_file()


def test_auto_gamma_finds_the_gamma_of_the_target_brightness():
    """L = 0.25 and R = 0.8 everywhere: the mean of L**g * R is 0.8 * 0.25**g, so 0.4 needs g = 0.5 exactly."""
    from pairlie.infer.enhancer import gamma_for_brightness

    illumination, reflectance = torch.full((1, 1, 8, 8), 0.25), torch.full((1, 3, 8, 8), 0.8)
    assert gamma_for_brightness(illumination, reflectance, 0.4) == 0.5
    assert gamma_for_brightness(illumination, reflectance, 0.95) == 0.01  # brighter than any gamma gives
    assert gamma_for_brightness(illumination, reflectance, 0.1) == 1.0  # darker than gamma 1 gives


@RunIf(clis=("pairlie-enhance",))
def test_pairlie_enhance_gamma_auto_writes_the_chosen_gammas_and_refuses_a_bad_brightness(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt", seed=3)
    photos = make_paired_tree(tmp_path / "pairs", names=("a.png", "b.png")) / "low"

    def run(source, output, *args):
        return run_cli(
            "pairlie-enhance", f"ckpt_path={ckpt}", f"input={source}", f"output={output}", *args, cwd=tmp_path
        )

    auto = run(photos, "auto", "model.gamma=auto", "brightness=0.3")
    assert auto.returncode == 0, auto.stderr
    rows = list(csv.DictReader((tmp_path / "auto" / "gamma.csv").open()))
    assert [r["file"] for r in rows] == ["a.png", "b.png"]
    for row in rows:
        assert f"gamma {row['gamma']}" in auto.stdout
        # the same image as asking for that gamma by hand
        fixed = run(photos / row["file"], f"fixed_{row['file']}", f"model.gamma={row['gamma']}")
        assert fixed.returncode == 0, fixed.stderr
        a = np.asarray(Image.open(tmp_path / "auto" / row["file"]))
        b = np.asarray(Image.open(tmp_path / f"fixed_{row['file']}" / row["file"]))
        assert np.array_equal(a, b)
        assert 0.01 <= float(row["gamma"]) <= 1
    bad = run(photos, "bad", "model.gamma=auto", "brightness=1.5")
    assert (
        bad.returncode == 2
        and bad.stderr.startswith("error: brightness=1.5: must be")
        and not (tmp_path / "bad").exists()
    )


def test_scoring_saved_files_needs_a_folder_to_save_them_in(sharp_net):
    with pytest.raises(ValueError, match="give out_dir"):
        evaluate(Enhancer(sharp_net), [], None, score_saved=True)
