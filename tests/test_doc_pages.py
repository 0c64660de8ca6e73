"""The pages a newcomer looks for say what the code does: the tutorial's numbers, the method, the CLI
reference, the citation, the changelog, and the pictures the figure script draws.

What the result files hold is checked against docs/outputs.md by the tests that make real ones
(test_test_cli.py, test_train_cli.py: ``helpers.undocumented``).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys

import pytest
from omegaconf import DictConfig
from PIL import Image

from helpers import REPO, composed, make_paired_tree, save_tiny_checkpoint
from pairlie.configuration import group_options
from pairlie.model.losses import PAPER_WEIGHTS
from pairlie.model.nets import PairLIENet

DOCS = REPO / "docs"
FIGURES = {"before-after.jpg": "index.md", "gamma.jpg": "enhancing.md", "method.jpg": "method.md"}
MAX_FIGURE_BYTES = 300_000


def _table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of every row of each Markdown table in ``text`` whose header line is ``header``."""
    rows, inside = [], False
    for line in text.splitlines():
        if line == header:
            inside = True
        elif inside and line.startswith("|---"):
            continue
        elif inside and line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        else:
            inside = False
    return rows


# --- the tutorial ---------------------------------------------------------------------------------


def test_the_tutorial_expects_the_numbers_of_the_readme_s_results_table():
    readme = (REPO / "README.md").read_text()
    results = readme[readme.index("| | PSNR (dB) | SSIM |") :].split("\n\n", 1)[0]
    tutorial = (DOCS / "tutorial-reproduce.md").read_text()
    rows = _table_rows(tutorial, "| | PSNR (dB) | SSIM |")
    assert len(rows) == 6
    for label, psnr, ssim in rows:
        for number in (psnr.strip("*"), ssim.strip("*")):
            assert f" {number} " in results or f"**{number}**" in results, (label, number)
    # the two scoring commands, with the γ each preset gives
    assert "pairlie-test ckpt_path=official data=lol paths.data_dir=/data" in tutorial
    assert "pairlie-test ckpt_path=official data=sice paths.data_dir=/data" in tutorial
    assert composed("data=lol", config="test", hydra=False).data.gamma == 0.14
    assert composed("data=sice", config="test", hydra=False).data.gamma == 0.2


def test_the_tutorial_s_hours_are_the_measured_step_rates_times_the_published_schedule():
    cfg = composed("experiment=sice", hydra=False)
    scenes = len(range(51, 230))  # the bundle's SICE training scenes (docs/data-and-weights.md)
    steps = scenes * cfg.data.repeats * cfg.trainer.max_epochs // cfg.data.batch_size
    tutorial = (DOCS / "tutorial-reproduce.md").read_text()
    assert steps == 71_600 and "71,600 optimiser steps" in tutorial
    assert round(steps * 0.284 / 3600, 1) == 5.6 and round(steps * 0.173 / 3600, 1) == 3.4
    assert 9 <= steps / 2.2 / 3600 and steps / 2.0 / 3600 <= 10  # "about 9-10 hours" at 2.0-2.2 pairs/s
    benchmark = (DOCS / "benchmark.md").read_text() + (DOCS / "design-notes.md").read_text()
    for figure in ("0.173 s", "0.284 s", "2.0–2.2 pairs/s", "16.474 / 0.6895"):
        assert figure in benchmark, figure


# --- the method -----------------------------------------------------------------------------------


def test_the_method_page_describes_the_nets_and_losses_pairlie_trains():
    page = (DOCS / "method.md").read_text()
    net = PairLIENet()
    assert f"{sum(p.numel() for p in net.parameters()):,} parameters" in page
    for part, (cin, cout) in zip(net.parts(), [(3, 3), (3, 1), (3, 3)], strict=True):
        layers = [type(m).__name__ for m in part.layers]
        assert layers == ["ReflectionPad2d", "Conv2d", "ReLU"] * 4 + ["ReflectionPad2d", "Conv2d", "Sigmoid"]
        convs = part.convs()
        assert (convs[0].in_channels, convs[-1].out_channels) == (cin, cout)
        assert {c.out_channels for c in convs[:-1]} == {64} and {c.kernel_size for c in convs} == {(3, 3)}
    total = " + ".join(f"{weight:g} · {name}" for name, weight in PAPER_WEIGHTS.items())
    assert f"total = {total}" in page
    for name, weight in PAPER_WEIGHTS.items():
        assert f"| {name} | {weight:g} |" in page


# --- the CLI reference ----------------------------------------------------------------------------


def _console_scripts() -> dict[str, str]:
    text = (REPO / "pyproject.toml").read_text()  # no tomllib before Python 3.11
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([\w.:]+)"', section, flags=re.M))


def _has_key(cfg, dotted: str) -> bool:
    """Whether ``cfg`` has the key ``dotted``, also where its value is required (``???``)."""
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True


@pytest.mark.parametrize("script", sorted(_console_scripts()))
def test_the_cli_page_has_a_section_per_console_script_whose_keys_exist(script):
    page = (DOCS / "cli.md").read_text()
    assert f"\n## `{script}`\n" in page
    section = page.split(f"\n## `{script}`\n", 1)[1].split("\n## ", 1)[0]
    config = {
        "pairlie-train": "train",
        "pairlie-test": "test",
        "pairlie-enhance": "enhance",
        "pairlie-export": "export",
    }
    cfg = composed(config=config[script])
    named = [
        token for row in _table_rows(section, "| key | default | what |") for token in re.findall(r"`([^`]+)`", row[0])
    ]
    assert len(named) >= 8
    for token in named:
        if token.endswith("="):
            assert group_options(token[:-1]), f"{script}: no config group {token}"
        else:
            assert _has_key(cfg, token), f"{script}: no key {token}"


# --- citation and changelog -----------------------------------------------------------------------


def _bibtex(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """``(type, key, fields)`` of each entry in the ```bibtex blocks of ``text``; fails on unbalanced braces."""
    entries = []
    for block in re.findall(r"```bibtex\n(.*?)```", text, flags=re.S):
        for match in re.finditer(r"@(\w+)\{([^,\s]+),", block):
            depth, i = 1, match.end()
            while depth:
                assert i < len(block), f"unbalanced braces in {match.group(2)}"
                depth += {"{": 1, "}": -1}.get(block[i], 0)
                i += 1
            body, fields = block[match.end() : i - 1], {}
            for field in re.finditer(r"(\w+)\s*=\s*\{", body):
                depth, j = 1, field.end()
                while depth:
                    depth += {"{": 1, "}": -1}.get(body[j], 0)
                    j += 1
                fields[field.group(1)] = body[field.end() : j - 1]
            entries.append((match.group(1), match.group(2), fields))
    return entries


def test_the_citations_parse_and_name_the_paper_and_this_version():
    (paper_type, _, paper), (software_type, _, software) = _bibtex((DOCS / "citation.md").read_text())
    assert paper_type == "inproceedings" and software_type == "software"
    # as the authors' own README cites it (github.com/zhenqifu/PairLIE)
    assert (
        paper["author"]
        == "Fu, Zhenqi and Yang, Yan and Tu, Xiaotong and Huang, Yue and Ding, Xinghao and Ma, Kai-Kuang"
    )
    assert paper["title"] == "Learning a Simple Low-Light Image Enhancer From Paired Low-Light Instances"
    assert (paper["pages"], paper["year"]) == ("22252--22261", "2023") and "CVPR" in paper["booktitle"]
    assert software["version"] == importlib.metadata.version("pairlie")


def test_the_changelog_s_rounds_are_dated_by_the_history_newest_first():
    dates = re.findall(r"^## (\d{4}-\d\d-\d\d): ", (DOCS / "changelog.md").read_text(), flags=re.M)
    assert len(dates) >= 4 and dates == sorted(dates, reverse=True)
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    history = subprocess.run(
        ["git", "log", "--format=%ad", "--date=short"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    if not history:
        pytest.skip("a shallow or empty history")
    assert set(dates) <= set(history), set(dates) - set(history)


# --- the pictures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("figure", "page"), FIGURES.items())
def test_each_figure_is_small_and_shown_on_its_page(figure, page):
    path = DOCS / "images" / figure
    assert path.stat().st_size < MAX_FIGURE_BYTES
    assert f"](images/{figure})" in (DOCS / page).read_text()


def test_the_figure_script_draws_the_three_figures_from_the_demo_s_photographs(tmp_path):
    demo = tmp_path / "demo"  # a stand-in demo set: the two validation photographs by their names
    make_paired_tree(demo / "val", names=("chelsea.png", "coffee.png"), size=(60, 40))
    (demo / "train").mkdir()
    (demo / "COMPLETE").write_text("stand-in demo set\n")
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt", sharpen=4.0)
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "doc_figures.py"), "--ckpt", str(ckpt), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PAIRLIE_DEMO_DIR": str(demo)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sizes = {}
    for name in FIGURES:
        with Image.open(tmp_path / "out" / name) as image:
            sizes[name] = image.size
        assert (tmp_path / "out" / name).stat().st_size < MAX_FIGURE_BYTES
    # panels of 240x160 under a 22 px caption, 4 px apart: 3 across and 2 down; 5 across; 4 across
    assert sizes == {"before-after.jpg": (728, 368), "gamma.jpg": (1216, 182), "method.jpg": (972, 182)}
    for name in FIGURES:  # the committed figures are the script's, at its sizes
        with Image.open(DOCS / "images" / name) as image:
            assert image.size == sizes[name], name
