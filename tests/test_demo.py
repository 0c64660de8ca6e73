"""The embedded demo set: built from scikit-image's photographs with simulated low light."""

import numpy as np
import pytest

from pairlie.data import discover_pairs, discover_scenes
from pairlie.data.demo import TILE, build_demo, linear_to_srgb, simulate_exposure, srgb_to_linear
from pairlie.errors import DataError
from pairlie.io.images import read_rgb


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("cache") / "demo")


def test_demo_is_a_valid_training_and_validation_set(demo):
    scenes = discover_scenes(demo / "train", 128)
    assert len(scenes) >= 30
    assert all(len(s.paths) == 3 and s.size == (TILE, TILE) for s in scenes)
    pairs = discover_pairs(demo / "val")
    assert [lo.name for lo, _ in pairs] == ["chelsea.png", "coffee.png"]


def test_low_exposures_are_dark_noisy_and_ordered(demo):
    scene = discover_scenes(demo / "train", None)[0]
    means = [read_rgb(p)[0].mean() for p in scene.paths]
    assert means == sorted(means) and means[-1] < 80
    low, high = (read_rgb(demo / "val" / sub / "chelsea.png")[0] for sub in ("low", "high"))
    assert low.mean() < 0.5 * high.mean()


def test_second_build_reuses_the_complete_set(demo):
    stamp = (demo / "COMPLETE").stat().st_mtime_ns
    assert build_demo(demo) == demo and (demo / "COMPLETE").stat().st_mtime_ns == stamp


def test_incomplete_folder_is_not_overwritten(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="remove it to rebuild"):
        build_demo(tmp_path / "demo")
    assert (tmp_path / "demo" / "mine.txt").read_text() == "keep"


def test_srgb_round_trip_and_noise_model():
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    photo = np.full((64, 64, 3), 200, np.uint8)
    rng = np.random.default_rng(0)
    shot = simulate_exposure(photo, 0.1, rng).astype(float)
    # 10% of the light: linear 0.578 * 0.1 = 0.0578 -> sRGB 1.055 * 0.0578**(1/2.4) - 0.055 = 0.267 -> ~68 levels
    assert 64 < shot.mean() < 72 and shot.std() > 2
