"""The nets' structure, the official checkpoint, and parity with the authors' released LOL outputs."""

import numpy as np
import pytest
import torch

from helpers import OFFICIAL_WEIGHTS, SHARED_DATA, RunIf
from pairlie.errors import DataError
from pairlie.io.images import load_image, quantize, read_rgb
from pairlie.model.checkpoints import load_net, read_weights
from pairlie.model.nets import PairLIENet, enhance


def conv_params(cin, cout):
    return cin * cout * 9 + cout


def test_parameter_count_matches_the_paper_architecture():
    net = PairLIENet(width=64)
    hidden = conv_params(3, 64) + 3 * conv_params(64, 64)
    expected = 3 * hidden + 2 * conv_params(64, 3) + conv_params(64, 1)
    assert sum(p.numel() for p in net.parameters()) == expected == 341_767


def test_forward_shapes_and_ranges():
    net = PairLIENet(width=8)
    illumination, reflectance, denoised = net(torch.rand(2, 3, 17, 23))
    assert illumination.shape == (2, 1, 17, 23)
    assert reflectance.shape == denoised.shape == (2, 3, 17, 23)
    for t in (illumination, reflectance, denoised):
        assert 0 < t.min() and t.max() < 1
    torch.testing.assert_close(net.reflectance_only(torch.ones(1, 3, 8, 8)), net(torch.ones(1, 3, 8, 8))[1])


def test_enhance_is_l_to_gamma_times_r():
    illumination, reflectance = torch.full((1, 1, 2, 2), 0.25), torch.full((1, 3, 2, 2), 0.5)
    torch.testing.assert_close(enhance(illumination, reflectance, 0.5), torch.full((1, 3, 2, 2), 0.25))


@RunIf(shared=True)
def test_official_weights_load_strictly_and_keep_every_tensor():
    raw = torch.load(OFFICIAL_WEIGHTS, map_location="cpu", weights_only=True)
    net, hparams = load_net(OFFICIAL_WEIGHTS)
    assert hparams == {} and net.width == 64
    ours = net.state_dict()
    assert len(ours) == len(raw) == 30
    torch.testing.assert_close(ours["illumination.layers.13.weight"], raw["L_net.L_net.13.weight"])
    torch.testing.assert_close(ours["denoiser.layers.1.bias"], raw["N_net.N_net.1.bias"])


def test_unknown_checkpoint_content_is_refused(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(DataError, match="neither a pairlie checkpoint nor the official"):
        read_weights(path)
    with pytest.raises(DataError, match="no such file"):
        read_weights(tmp_path / "missing.pth")


LOL_NAMES = ["1.png", "22.png", "780.png"]
LOL_ALL = sorted(p.name for p in (SHARED_DATA / "LOL-test" / "low").glob("*.png")) if SHARED_DATA.is_dir() else []


def _assert_matches_released_output(name):
    net, _ = load_net(OFFICIAL_WEIGHTS)
    with torch.no_grad():
        illumination, reflectance, _ = net(load_image(SHARED_DATA / "LOL-test" / "low" / name)[None])
    ours = quantize(enhance(illumination, reflectance, 0.14)[0]).astype(int)
    released = read_rgb(SHARED_DATA / "reference-outputs" / "PairLIE" / "LOL-test" / "I" / name)[0].astype(int)
    diff = np.abs(ours - released)
    assert diff.max() <= 1, f"{name}: max difference {diff.max()} grey levels"
    assert diff.mean() < 0.05


@RunIf(shared=True)
@pytest.mark.parametrize("name", LOL_NAMES)
def test_official_weights_reproduce_released_lol_outputs(name):
    _assert_matches_released_output(name)


@RunIf(shared=True)
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in LOL_ALL if n not in LOL_NAMES])
def test_official_weights_reproduce_released_lol_outputs_all(name):
    _assert_matches_released_output(name)
