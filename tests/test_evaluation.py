"""pairlie.evaluate.scoring in this process: scores against an independent computation, files written, γ lists, results."""

import csv
import json

import numpy as np
import pytest

from helpers import make_paired_tree, write_image
from pairlie.errors import ConfigError
from pairlie.evaluate import scoring as evaluation
from pairlie.evaluate.metrics import paper_scores, psnr, ssim
from pairlie.evaluate.scoring import ImageScore, csv_value, evaluate, gamma_table, gammas_to_score, write_results
from pairlie.infer.enhancer import Enhancer
from pairlie.io.images import load_image, quantize, read_rgb
from pairlie.model.nets import enhance


@pytest.fixture
def enhancer(sharp_net):
    return Enhancer(sharp_net, gamma=0.3, device="cpu")


@pytest.fixture
def pairs(tmp_path):
    root = make_paired_tree(tmp_path / "pairs", names=("b.png", "a.jpg"))
    return [(root / "low" / n, root / "high" / n) for n in ("b.png", "a.jpg")]


def test_every_score_is_the_protocol_s_on_what_the_enhancer_computes(enhancer, pairs):
    result = evaluate(enhancer, pairs, no_reference=False)
    assert result.paired and result.gammas == [0.3]
    assert [s.name for s in result.rows()] == ["b.png", "a.jpg"]  # test-set order
    for score, (low, high) in zip(result.rows(), pairs, strict=True):
        ref = read_rgb(high)[0]
        expected = paper_scores(enhancer.enhance(load_image(low)), ref)
        assert (score.psnr, score.ssim) == expected
        assert (score.input_psnr, score.input_ssim) == paper_scores(load_image(low), ref)
        assert score.niqe is None and score.loe is None  # no_reference=False
    assert result.mean("psnr") == pytest.approx(np.mean([s.psnr for s in result.rows()]))


def test_images_and_the_decomposition_are_written_with_their_source_names(enhancer, pairs, tmp_path):
    out = tmp_path / "out"
    evaluate(enhancer, pairs, out, save_decomposition=True, no_reference=False)
    low = load_image(pairs[0][0])
    parts = enhancer.decompose(low)
    expected = {
        "enhanced": parts.enhanced[0],
        "L": parts.illumination[0].expand(3, -1, -1),
        "R": parts.reflectance[0],
        "X": parts.denoised[0],
        "D": (low - parts.denoised[0]).clamp(0, 1),  # the removed noise
    }
    for sub, image in expected.items():
        assert sorted(p.name for p in (out / sub).iterdir()) == ["a.jpg", "b.png"], sub
        assert np.array_equal(read_rgb(out / sub / "b.png")[0], quantize(image)), sub  # PNG: exact


def test_nothing_is_written_with_save_images_false(enhancer, pairs, tmp_path):
    evaluate(enhancer, pairs, tmp_path / "out", save_images=False, no_reference=False)
    assert not (tmp_path / "out").exists()


def test_score_saved_scores_the_written_jpeg_not_the_image_in_memory(enhancer, pairs, tmp_path):
    in_memory = evaluate(enhancer, pairs, no_reference=False).rows()[1]
    saved = evaluate(enhancer, pairs, tmp_path / "out", jpeg_quality=75, score_saved=True, no_reference=False).rows()[1]
    written, ref = read_rgb(tmp_path / "out" / "enhanced" / "a.jpg")[0], read_rgb(pairs[1][1])[0]
    assert (saved.psnr, saved.ssim) == (psnr(written, ref), ssim(written, ref))
    assert saved.psnr != in_memory.psnr  # JPEG at quality 75 loses something
    with pytest.raises(ValueError, match="one γ only"):
        evaluate(enhancer, pairs, tmp_path / "out", score_saved=True, gammas=[0.1, 0.2])


def test_a_gamma_list_scores_l_to_each_gamma_times_r_and_saves_the_first(enhancer, pairs, tmp_path):
    result = evaluate(enhancer, pairs, tmp_path / "out", gammas=[0.5, 0.1], no_reference=False)
    assert [(s.name, s.gamma) for s in result.scores] == [
        ("b.png", 0.5),
        ("b.png", 0.1),
        ("a.jpg", 0.5),
        ("a.jpg", 0.1),
    ]
    parts = enhancer.decompose(load_image(pairs[0][0]))
    ref = read_rgb(pairs[0][1])[0]
    for gamma in (0.5, 0.1):
        assert (result.rows(gamma)[0].psnr, result.rows(gamma)[0].ssim) == paper_scores(
            enhance(parts.illumination, parts.reflectance, gamma)[0], ref
        )
    saved = read_rgb(tmp_path / "out" / "enhanced" / "b.png")[0]
    assert np.array_equal(saved, quantize(enhance(parts.illumination, parts.reflectance, 0.5)[0]))


def test_a_set_without_references_gets_no_reference_scores_only(enhancer, tmp_path):
    photo = write_image(tmp_path / "photos" / "p.png", (200, 200), scale=0.3)
    (score,) = evaluate(enhancer, [(photo, None)]).rows()
    assert score.psnr is None and score.ssim is None and score.input_psnr is None
    assert score.niqe is not None and score.loe is not None and score.loe >= 0


def test_the_gamma_table_names_the_best_gamma_of_each_measure():
    result = evaluation.TestResult([0.1, 0.2, 0.3])
    for gamma, psnr_value, niqe_value in ((0.1, 20.0, 4.0), (0.2, 22.0, 5.0), (0.3, 22.0, 3.0)):
        result.scores.append(ImageScore("a.png", gamma, psnr=psnr_value, niqe=niqe_value))
        result.scores.append(ImageScore("b.png", gamma, psnr=psnr_value + 2, niqe=None))
    rows, best = gamma_table(result)
    assert [(r["gamma"], r["psnr"], r["niqe"]) for r in rows] == [(0.1, 21.0, 4.0), (0.2, 23.0, 5.0), (0.3, 23.0, 3.0)]
    assert best == {"psnr": 0.2, "niqe": 0.3}  # a tie goes to the first γ listed; NIQE: lower is better


def test_results_files_hold_the_means_of_the_first_gamma_and_every_row(tmp_path):
    result = evaluation.TestResult([0.2, 0.1])
    result.scores += [
        ImageScore("a.png", 0.2, psnr=20.0, ssim=0.5, niqe=None, niqe_na="too small"),
        ImageScore("a.png", 0.1, psnr=10.0, ssim=0.25),
        ImageScore("b.png", 0.2, psnr=30.0, ssim=0.75, niqe=4.0),
        ImageScore("b.png", 0.1, psnr=12.0, ssim=0.5),
    ]
    metrics = write_results(result, tmp_path, {"checkpoint": "x.ckpt"})
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert (metrics["psnr"], metrics["ssim"], metrics["niqe"]) == (25.0, 0.625, 4.0)
    assert (metrics["gamma"], metrics["gammas"], metrics["count"]) == (0.2, [0.2, 0.1], 2)
    assert metrics["niqe_count"] == 1 and metrics["niqe_na"] == {"a.png": "too small"}
    assert metrics["checkpoint"] == "x.ckpt" and metrics["best_gamma"]["psnr"] == 0.2
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert [(r["name"], r["gamma"], r["psnr"], r["ssim"]) for r in rows] == [
        ("a.png", "0.2", "20.0000", "0.500000"),
        ("a.png", "0.1", "10.0000", "0.250000"),
        ("b.png", "0.2", "30.0000", "0.750000"),
        ("b.png", "0.1", "12.0000", "0.500000"),
    ]
    assert rows[0]["niqe"] == "n/a" and rows[0]["note"] == "NIQE n/a: too small" and rows[1]["niqe"] == ""


def test_csv_values_have_fixed_decimals_and_say_why_a_niqe_is_missing():
    score = ImageScore(
        "a.png", 0.14, psnr=21.123456, ssim=0.1234567, input_psnr=7.654321, input_ssim=0.0123456, input_niqe_na="flat"
    )
    keys = ("name", "gamma", "psnr", "ssim", "input_psnr", "input_ssim", "input_niqe", "niqe")
    assert [csv_value(score, k) for k in keys] == [
        "a.png",
        "0.14",
        "21.1235",
        "0.123457",
        "7.6543",
        "0.012346",
        "n/a",
        "",
    ]


@pytest.mark.parametrize(
    ("gamma", "preset", "score_saved", "expected"),
    [
        (None, None, False, None),  # the checkpoint's
        (None, 0.14, False, [0.14]),  # the data preset's
        (0.3, 0.14, False, [0.3]),  # model.gamma wins
        ([0.1, 0.2], None, False, [0.1, 0.2]),
        ((1, 2), None, False, [1.0, 2.0]),
    ],
)
def test_the_gammas_to_score_come_from_model_gamma_else_the_preset(gamma, preset, score_saved, expected):
    assert gammas_to_score(gamma, preset, score_saved) == expected


@pytest.mark.parametrize(
    ("gamma", "score_saved", "message"),
    [
        ([], False, r"model.gamma=\[\]: give a number"),
        ("abc", False, "model.gamma='abc': every γ must be a number > 0"),
        ([0.1, True], False, "model.gamma=True: every γ must be a number > 0"),
        ([0.1, -1], False, "model.gamma=-1: every γ"),
        ([0.1, 0.1], False, "lists a γ twice"),
        ([0.1, 0.2], True, "score_saved=true scores the written files, which hold one γ"),
    ],
)
def test_bad_gammas_are_refused_naming_the_key(gamma, score_saved, message):
    with pytest.raises(ConfigError, match=message):
        gammas_to_score(gamma, None, score_saved)


def test_a_config_list_is_a_list_of_gammas():
    from omegaconf import OmegaConf

    assert gammas_to_score(OmegaConf.create({"g": [0.1, 0.3]}).g) == [0.1, 0.3]
