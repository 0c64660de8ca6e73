"""pairlie.model.checkpoints in this process: both kinds of file load to the same weights; bad files are one line."""

import pytest
import torch

from helpers import save_tiny_checkpoint
from pairlie.errors import DataError
from pairlie.model.checkpoints import OFFICIAL_PREFIXES, load_net, read_weights
from pairlie.model.nets import PairLIENet
from pairlie.train.module import PairLIEModule


def official_layout(net: PairLIENet) -> dict[str, torch.Tensor]:
    """``net``'s weights under the names the authors' PairLIE.pth uses (``N_net.N_net.<i>.weight``, ...)."""
    ours_to_theirs = {new: old for old, new in OFFICIAL_PREFIXES.items()}
    state = {}
    for key, value in net.state_dict().items():
        (prefix,) = [p for p in ours_to_theirs if key.startswith(p)]
        state[ours_to_theirs[prefix] + key[len(prefix) :]] = value.clone()
    return state


def assert_same_weights(a: PairLIENet, b: PairLIENet) -> None:
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_a_pairlie_checkpoint_gives_its_net_and_hyper_parameters(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "tiny.ckpt", width=6, gamma=0.14, seed=5)
    torch.manual_seed(5)
    saved = PairLIEModule(width=6, gamma=0.14)
    net, hparams = load_net(path)
    assert net.width == 6 and not net.training
    assert hparams["gamma"] == 0.14 and hparams["width"] == 6
    assert_same_weights(saved.net, net)


def test_the_official_layout_is_renamed_to_the_same_weights(tmp_path):
    torch.manual_seed(1)
    net = PairLIENet(width=8)
    torch.save(official_layout(net), tmp_path / "PairLIE.pth")
    state, hparams = read_weights(tmp_path / "PairLIE.pth")
    assert hparams == {} and set(state) == set(net.state_dict())
    loaded, _ = load_net(tmp_path / "PairLIE.pth")
    assert loaded.width == 8
    assert_same_weights(net, loaded)


def test_an_official_file_with_an_extra_tensor_is_refused_as_not_fitting(tmp_path):
    state = official_layout(PairLIENet(width=4))
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(
        DataError,
        match=r"odd.pth: weights do not fit the net pairlie.model.nets.PairLIENet built from the checkpoint \(Unexpected key\(s\) in state_dict: \"extra.weight\"",
    ):
        load_net(tmp_path / "odd.pth")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint", r"not a readable PyTorch checkpoint \(UnpicklingError\)"),
        ({"state_dict": {"model.conv.weight": torch.zeros(1)}}, "no PairLIE network weights inside"),
        ([torch.zeros(1)], "holds neither a pairlie checkpoint nor the official PairLIE weights"),
    ],
    ids=["garbage", "other-lightning-model", "a-list"],
)
def test_files_that_hold_no_pairlie_weights_are_one_line(tmp_path, content, message):
    path = tmp_path / "x.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(DataError, match=message) as info:
        read_weights(path)
    assert str(info.value).startswith(f"ckpt_path={path}: ") and "\n" not in str(info.value)


def test_a_checkpoint_of_another_width_cannot_be_loaded_into_the_wrong_nets(tmp_path):
    state = PairLIENet(width=4).state_dict()
    state["reflectance.layers.1.weight"] = torch.zeros(5, 4, 3, 3)  # a width 5 conv in a width 4 net
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}}, tmp_path / "mixed.ckpt")
    with pytest.raises(
        DataError,
        match=r"weights do not fit the net pairlie.model.nets.PairLIENet built from the checkpoint \(size mismatch for reflectance.layers.1.weight",
    ):
        load_net(tmp_path / "mixed.ckpt")
