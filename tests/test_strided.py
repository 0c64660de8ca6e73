"""A net that is not the paper's is computed right or refused: tiles of a strided net, export of a net with a minimum size.

The net under test is the third example's (examples/strided_l): L at half resolution, a stride-2
encoder and a bilinear x2 upsample, declaring its receptive radius, alignment and minimum size.
"""

from __future__ import annotations

import logging
import shutil
import sys

import numpy as np
import pytest
import torch
from torch import nn

from helpers import REPO, RunIf, make_paired_tree, make_scene_tree, run_cli, write_image
from pairlie.errors import ConfigError, VerificationError
from pairlie.infer.enhancer import Enhancer, dependence_radius
from pairlie.infer.receptive import alignment, receptive_radius
from pairlie.infer.streaming import split
from pairlie.model.nets import PairLIENet, enhance

EXAMPLE = REPO / "examples" / "strided_l"
sys.path.insert(0, str(EXAMPLE))
from strided_nets import HalfResIllumination  # noqa: E402


def strided_net(seed: int = 0, **declared) -> PairLIENet:
    torch.manual_seed(seed)
    illumination = HalfResIllumination(width=8)
    for name, value in declared.items():
        setattr(illumination, name, value)
    net = PairLIENet(width=8, illumination=illumination).eval()
    with torch.no_grad():  # trained-like sensitivity: far pixels matter, so a wrong tiling shows
        for conv in net.modules():
            if isinstance(conv, nn.Conv2d):
                conv.weight.mul_(3)
    return net


def whole(net: PairLIENet, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        illumination, reflectance, _ = net(image)
    return illumination, enhance(illumination, reflectance, 0.2)


def grey_levels(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) * 255


def test_split_puts_every_tile_and_its_context_on_the_alignment():
    for length, tile, margin, align in ((301, 64, 9, 2), (1099, 450, 10, 4), (17, 16, 3, 8), (1301, 512, 13, 1)):
        pieces = split(length, tile, margin, align)
        assert pieces[0][0] == 0 and pieces[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))  # no gap, no overlap
        for start, end, cstart, cend in pieces:
            assert start % align == 0 and cstart % align == 0
            assert end == length or end % align == 0
            assert cend == length or cend % align == 0
            assert start - cstart >= min(margin, start) and cend - end >= min(margin, length - end)


def test_strided_resampling_pooling_global_and_circular_layers_are_not_derived():
    conv = nn.Conv2d(3, 3, 3, padding=1)
    assert receptive_radius(nn.Sequential(conv)) == 1
    for layer in (
        nn.Conv2d(3, 3, 3, stride=2, padding=1),
        nn.Upsample(scale_factor=2),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"),
    ):
        assert receptive_radius(nn.Sequential(conv, layer)) is None, layer
    assert alignment(strided_net()) == 2 and receptive_radius(strided_net()) == 5 + 8  # N 5 + max(L 8, R 5)


def test_the_measured_reach_is_the_example_s_declared_radius():
    for depth in (0, 2, 3):
        net = HalfResIllumination(depth=depth)
        assert dependence_radius(net, 3, net.receptive_radius, 2, torch.device("cpu")) == net.receptive_radius


@pytest.mark.parametrize("tile", [64, 100])
def test_a_strided_net_that_declares_its_contract_tiles_exactly(tile):
    net = strided_net()
    image = torch.rand(1, 3, 301, 257, generator=torch.Generator().manual_seed(3))
    enhancer = Enhancer(net, device="cpu", tile=tile)
    assert (enhancer.tile, enhancer.align, enhancer.radius) == (tile, 2, 13)
    out = enhancer.decompose(image)
    illumination, enhanced = whole(net, image)
    assert grey_levels(out.illumination, illumination) < 0.01 and grey_levels(out.enhanced, enhanced) < 0.01


def test_without_the_alignment_the_tiles_would_differ_and_are_refused():
    net = strided_net(alignment=1)
    image = torch.rand(1, 3, 301, 257, generator=torch.Generator().manual_seed(3))
    # what tiles on the wrong grid compute (the same code, the check bypassed)
    from pairlie.infer.enhancer import tile_forward

    with torch.no_grad():
        shifted = tile_forward(lambda patch, borders: net(patch), image, 64, 13, 1)
    assert grey_levels(shifted[0], whole(net, image)[0]) > 1  # wrong by more than a grey level
    with pytest.raises(ConfigError, match=r"tile=64: its tiles differ from its whole-image forward .* alignment=1"):
        Enhancer(net, device="cpu", tile=64)


def test_a_radius_declared_too_small_is_refused_naming_the_radius_to_declare():
    net = strided_net(receptive_radius=2)
    with pytest.raises(ConfigError, match=r"depend on input pixels 13 away, .* declare receptive_radius=13") as info:
        Enhancer(net, device="cpu", tile=64)
    assert "\n" not in str(info.value)


def test_tile_auto_runs_whole_images_with_a_note_when_the_contract_fails(caplog):
    net = strided_net(alignment=1)
    with caplog.at_level(logging.WARNING, logger="pairlie"):
        enhancer = Enhancer(net, device="cpu", tile="auto")
    assert enhancer.tile is None and "running whole images" in caplog.text
    image = torch.rand(1, 3, 90, 70, generator=torch.Generator().manual_seed(4))
    assert grey_levels(enhancer.decompose(image).illumination, whole(net, image)[0]) < 0.01


def test_export_of_a_net_that_cannot_take_a_thin_image_is_one_line_and_writes_nothing(tmp_path):
    pytest.importorskip("onnxruntime", reason='needs onnxruntime: pip install -e ".[export]"')
    from pairlie.deploy.export import export
    from pairlie.train.module import PairLIEModule

    spec = {"_target_": "pairlie.model.nets.PairLIENet", "width": 8,
            "illumination": {"_target_": "strided_nets.HalfResIllumination", "width": 8}}  # fmt: skip
    module = PairLIEModule(net=spec)
    ckpt = tmp_path / "strided.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    report = export(ckpt, tmp_path / "ok.onnx", trust=["strided_nets"])
    assert report.worst.grey_levels <= 1 and (1, 3, 1, 1) in [c.shape for c in report.checks]
    assert report.metadata["min_size"].startswith("1x1 (sides under 3 px are replicated to 3 px")
    declared = HalfResIllumination.__init__

    def undeclared(self, *args, **kwargs):
        declared(self, *args, **kwargs)
        del self.min_size

    try:
        HalfResIllumination.__init__ = undeclared
        with pytest.raises(VerificationError, match=r"cannot run on a 1×3×1×1 image .*declare min_size") as info:
            export(ckpt, tmp_path / "bad.onnx", trust=["strided_nets"])
    finally:
        HalfResIllumination.__init__ = declared
    assert "\n" not in str(info.value) and not (tmp_path / "bad.onnx").exists()


@RunIf(clis=("pairlie-train", "pairlie-enhance", "pairlie-export"))
def test_the_strided_example_trains_enhances_a_wide_photo_exactly_and_exports(tmp_path):
    folder = tmp_path / "strided_l"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    train, val = make_scene_tree(tmp_path / "train"), make_paired_tree(tmp_path / "val")
    result = run_cli(
        "pairlie-train", "--config-dir", "configs", "model=strided_l", f"data.train_dir={train}",
        f"data.val_dir={val}", "model.width=8", "data.patch_size=32", "trainer.max_steps=4", "logger=none",
        "hydra.run.dir=run", cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trust=strided_nets" in result.stdout
    ckpt = folder / "run" / "checkpoints" / "last.ckpt"
    photos = tmp_path / "photos"
    write_image(photos / "wide.png", size=(700, 90), seed=5, scale=0.3)  # wider than a 256 px tile
    result = run_cli(
        "pairlie-enhance", f"ckpt_path={ckpt}", "trust=strided_nets", f"input={photos}", "output=out", "tile=256",
        "format=png", cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    from PIL import Image

    from pairlie.model.checkpoints import load_net

    sys.path.insert(0, str(folder))
    net, hparams = load_net(ckpt, trust=["strided_nets"])
    image = torch.from_numpy(np.asarray(Image.open(photos / "wide.png").convert("RGB"))).permute(2, 0, 1)[None] / 255
    with torch.no_grad():
        illumination, reflectance, _ = net(image.float())
    expected = (enhance(illumination, reflectance, hparams["gamma"])[0].clamp(0, 1) * 255).to(torch.uint8)
    got = torch.from_numpy(np.asarray(Image.open(folder / "out" / "wide.png"))).permute(2, 0, 1)
    assert int((got.int() - expected.int()).abs().max()) <= 1
    result = run_cli("pairlie-export", f"ckpt_path={ckpt}", "trust=strided_nets", "output=l.onnx", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified: worst difference from pairlie" in result.stdout
    assert result.stdout.count("checked ") >= 5
