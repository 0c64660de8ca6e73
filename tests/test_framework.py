"""A framework to build on: nets, loss terms, optimisers and training sets from config, every tool right for them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from helpers import REPO, RunIf, composed, cpu_trainer, make_paired_tree, make_scene_tree, run_cli
from pairlie.data.datasets import ExposurePairDataset
from pairlie.data.sampling import Draw
from pairlie.errors import ConfigError, DataError
from pairlie.infer import streaming
from pairlie.infer.enhancer import Enhancer
from pairlie.infer.receptive import receptive_radius
from pairlie.model.checkpoints import load_net
from pairlie.model.nets import ConvNet, PairLIENet
from pairlie.specs import build_module
from pairlie.train.module import PairLIEModule

EXAMPLES = REPO / "examples"


# --- nets of one's own ----------------------------------------------------------------------------


class ResidualNet(nn.Module):
    """A user's own net: a residual denoiser and one shared trunk for L and R; ``forward`` gives (L, R, X)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.denoise = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1))
        self.trunk = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, padding_mode="replicate"), nn.Tanh())
        self.heads = nn.Conv2d(width, 4, 3, padding=1)
        self.receptive_radius = 4  # 2 convs in N, then 2 in the trunk and heads

    def forward(self, im):
        x = (im + self.denoise(im)).clamp(0, 1)
        out = torch.sigmoid(self.heads(self.trunk(x)))
        return out[:, :1], out[:, 1:], x


class NoRadiusNet(ResidualNet):
    """The same net without a declared radius: nothing tells how far it sees."""

    def __init__(self, width: int = 8) -> None:
        super().__init__(width)
        del self.receptive_radius


def layer(name, *args, **kwargs):
    return {"_target_": f"torch.nn.{name}", "_args_": list(args), **kwargs}


def leaky_block(cin, cout):
    return [layer("ReflectionPad2d", 1), layer("Conv2d", cin, cout, 3), layer("LeakyReLU", 0.1)]


def variants() -> dict[str, nn.Module]:
    """The variants the fast paths once got wrong, each with weights strong enough to carry texture."""
    # built from a spec, as a config gives it (the template's convention: layers as _args_ of Sequential)
    leaky_r = layer("Sequential", *leaky_block(3, 8), *leaky_block(8, 8), *leaky_block(8, 3)[:2], layer("Sigmoid"))
    nets = {
        "leaky_relu_r": build_module({"_target_": "pairlie.model.nets.PairLIENet", "width": 8, "reflectance": leaky_r}),
        "deeper_r": PairLIENet(width=8, reflectance=ConvNet(3, 3, 8, depth=6)),
        "zero_padded": PairLIENet(width=8, padding="zeros"),
        "user_module": ResidualNet(),
    }
    torch.manual_seed(0)
    for net in nets.values():
        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.normal_(module.weight, std=2.0 / (module.in_channels * 9) ** 0.5)
                    nn.init.uniform_(module.bias, -0.1, 0.1)
        net.eval()
    return nets


VARIANTS = variants()


def image(height, width, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, height, width, generator=generator)


def within_one_grey_level(got, want):
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) * 255 <= 1.0


def test_only_the_paper_structure_takes_the_streamed_path():
    assert streaming.streamable(PairLIENet(width=8))
    assert streaming.streamable(PairLIENet(width=8, channels=6, reflectance_output="relu", denoiser_output="relu"))
    assert streaming.streamable(VARIANTS["deeper_r"])  # ConvNet blocks of any depth stream exactly
    for name in ("leaky_relu_r", "zero_padded", "user_module"):
        assert not streaming.streamable(VARIANTS[name]), name
    assert [receptive_radius(VARIANTS[n]) for n in ("leaky_relu_r", "deeper_r", "zero_padded", "user_module")] == [
        10,
        12,
        10,
        4,
    ]
    assert receptive_radius(NoRadiusNet()) is None


def test_an_unknown_activation_in_the_streamed_path_is_an_error_not_a_guess():
    net = PairLIENet(width=4)
    net.reflectance.layers[2] = nn.LeakyReLU(0.1)
    with pytest.raises(ValueError, match="ReLU and Sigmoid only, not LeakyReLU"):
        streaming.forward(net, image(8, 8))


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize(
    ("tile", "size", "stream_width"),
    [("auto", (40, 52), None), (32, (70, 90), None), ("auto", (24, 150), 64)],
    ids=["cpu-default", "tile32", "wide"],
)
def test_every_variant_enhances_equal_to_its_own_whole_image_forward(name, tile, size, stream_width, monkeypatch):
    if stream_width:  # an image wider than the streamed path's column pieces
        monkeypatch.setattr(streaming, "STREAM_WIDTH", stream_width)
    net = VARIANTS[name]
    im = image(*size)
    with torch.no_grad():
        want = net(im)
    out = Enhancer(net, gamma=0.2, device="cpu", tile=tile, conv="auto").decompose(im)
    within_one_grey_level((out.illumination, out.reflectance, out.denoised), want)
    within_one_grey_level((out.enhanced,), (want[0] ** 0.2 * want[1],))


def test_a_net_that_does_not_say_how_far_it_sees_runs_whole_and_refuses_tiles():
    net = NoRadiusNet().eval()
    enhancer = Enhancer(net, device="cpu")
    assert enhancer.tile is None and not enhancer.stream
    im = image(30, 40)
    with torch.no_grad():
        within_one_grey_level(enhancer.decompose(im).enhanced[None], (net(im)[0] ** 0.2 * net(im)[1])[None])
    with pytest.raises(ConfigError, match=r"tile=64: this net's receptive radius is unknown .*receptive_radius"):
        Enhancer(net, device="cpu", tile=64)
    with pytest.raises(ConfigError, match="conv=winograd: runs the paper's nets only"):
        Enhancer(VARIANTS["zero_padded"], device="cpu", conv="winograd")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_validation_scores_each_variant_from_its_own_forward(name, tmp_path):
    from pairlie.data.datasets import PairedImageDataset
    from pairlie.data.scenes import discover_pairs
    from pairlie.evaluate.metrics import paper_scores

    module = PairLIEModule(net=VARIANTS[name], gamma=0.2)
    pairs = discover_pairs(make_paired_tree(tmp_path / "val", size=(40, 36)), "auto", key="data.val_dir")
    loader = torch.utils.data.DataLoader(PairedImageDataset(pairs), batch_size=1)
    (metrics,) = cpu_trainer(1).validate(module, loader, verbose=False)
    want = []
    for item in PairedImageDataset(pairs):
        with torch.no_grad():
            illumination, reflectance, _ = VARIANTS[name](item["low"][None])
        want.append(paper_scores((illumination**0.2 * reflectance)[0], item["high"].numpy())[0])
    assert metrics["val/psnr"] == pytest.approx(np.mean(want), abs=0.05)


def save_variant(path: Path, net: nn.Module | dict, gamma: float = 0.2) -> Path:
    module = PairLIEModule(net=net, gamma=gamma)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_variant_exports_equal_to_its_own_forward(name, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason='needs onnxruntime: pip install -e ".[export]"')
    from pairlie.deploy.export import export

    net = VARIANTS[name]
    spec = {"_target_": f"{__name__}.ResidualNet"} if name == "user_module" else net
    module_path = save_variant(tmp_path / "v.ckpt", spec)
    if name == "user_module":  # the checkpoint rebuilds the class by name: give it this net's weights
        state = torch.load(module_path, weights_only=True)
        state["state_dict"] = {f"net.{k}": v for k, v in net.state_dict().items()}
        torch.save(state, module_path)
    report = export(module_path, tmp_path / "v.onnx", trust=[__name__] if name == "user_module" else None)
    assert report.worst.grey_levels <= 1
    session = ort.InferenceSession(str(tmp_path / "v.onnx"), providers=["CPUExecutionProvider"])
    im = image(45, 61)
    with torch.no_grad():
        illumination, reflectance, _ = net(im)
    (got,) = session.run(None, {"image": im.numpy()})
    within_one_grey_level((torch.from_numpy(got),), (illumination**0.2 * reflectance,))


# --- checkpoints describe their net; loading one runs no code it names -----------------------------


def test_a_variant_checkpoint_rebuilds_its_own_net_not_the_paper_one(tmp_path):
    spec = {"_target_": "pairlie.model.nets.PairLIENet", "width": 4, "reflectance": {"_target_": "pairlie.model.nets.ConvNet",
            "in_channels": 4 - 1, "out_channels": 3, "width": 4, "depth": 6}}  # fmt: skip
    path = save_variant(tmp_path / "deep.ckpt", spec)
    net, hparams = load_net(path)
    assert hparams["net"] == spec
    assert len(net.reflectance.convs()) == 7
    enhancer = Enhancer.from_checkpoint(path, device="cpu", tile=32)
    assert enhancer.radius == 12 and enhancer.overlap == 12


@pytest.mark.parametrize("target", ["os.system", "subprocess.run", "builtins.eval", "pairlie.model.nets.enhance"])
def test_a_checkpoint_naming_a_function_is_refused_before_calling_it(target, tmp_path, monkeypatch):
    called = []
    for name in ("os.system", "subprocess.run", "builtins.eval"):
        module, attr = name.split(".")
        monkeypatch.setattr(__import__(module), attr, lambda *a, **k: called.append(a))
    path = save_variant(tmp_path / "ok.ckpt", {"_target_": "pairlie.model.nets.PairLIENet", "width": 4})
    blob = torch.load(path, weights_only=True)
    blob["hyper_parameters"]["net"] = {"_target_": target, "args": "touch pwned"}
    torch.save(blob, path)
    with pytest.raises(DataError, match=rf"model.net._target_={target}: a checkpoint may name pairlie's nets and"):
        load_net(path)
    blob["hyper_parameters"]["net"] = {"_target_": "pairlie.model.nets.PairLIENet", "reflectance": {"_target_": target}}
    torch.save(blob, path)
    with pytest.raises(DataError, match=r"model.net.reflectance._target_=.*a checkpoint may name pairlie's nets"):
        load_net(path)
    # trusted by name, a function is still not a net: refused before it is called
    top = target.split(".")[0]
    # (os.system here is the test's stand-in, which lives in this file: refused as living elsewhere)
    with pytest.raises(DataError, match=r"model.net.reflectance._target_=.*(not an nn.Module class|may not name)"):
        load_net(path, trust=[top])
    assert called == []


def test_an_unimportable_net_and_weights_that_do_not_fit_say_why_in_one_line(tmp_path):
    path = save_variant(tmp_path / "v.ckpt", {"_target_": "pairlie.model.nets.PairLIENet", "width": 4})
    blob = torch.load(path, weights_only=True)
    blob["hyper_parameters"]["net"] = {"_target_": "my_missing_nets.DeepR"}
    torch.save(blob, path)
    with pytest.raises(
        DataError, match=r"my_missing_nets is imported \(and runs\) only if you trust it: add trust=my_"
    ):
        load_net(path)
    with pytest.raises(
        DataError, match=r"cannot import my_missing_nets .*run from the folder that holds that file"
    ) as info:
        load_net(path, trust="my_missing_nets")
    assert "\n" not in str(info.value)
    blob["hyper_parameters"]["net"] = {"_target_": "pairlie.model.nets.PairLIENet", "width": 4, "depth": 5}
    torch.save(blob, path)
    with pytest.raises(DataError, match=r"Missing key\(s\) in state_dict: \"denoiser.layers.16.weight\"") as info:
        load_net(path)
    assert "\n" not in str(info.value)


def test_the_official_weights_and_old_checkpoints_still_load_as_the_paper_nets(tiny_ckpt):
    blob = torch.load(tiny_ckpt, weights_only=True)
    del blob["hyper_parameters"]["net"]  # written before checkpoints described their net
    blob["hyper_parameters"]["scheduler"] = {"step_size": 100, "factor": 0.5}
    torch.save(blob, tiny_ckpt)
    net, _ = load_net(tiny_ckpt)
    assert type(net) is PairLIENet and net.width == 4 and streaming.streamable(net)
    assert PairLIEModule(**blob["hyper_parameters"]).hparams.scheduler["gamma"] == 0.5


# --- the net's shape as keys; parts, terms, optimisers, training sets by _target_ ------------------


def test_a_hyperspectral_net_is_keys_only():
    cfg = composed(
        "model.net.channels=16",
        "model.width=12",
        "model.net.depth=2",
        "model.net.denoiser_output=relu",
        "model.net.reflectance_output=relu",
        hydra=False,
    )
    from hydra.utils import instantiate

    module = instantiate(cfg.model)
    bands = torch.rand(1, 16, 20, 20)
    illumination, reflectance, denoised = module.net(bands)
    assert illumination.shape == (1, 1, 20, 20) and reflectance.shape == denoised.shape == (1, 16, 20, 20)
    assert isinstance(module.net.reflectance.layers[-1], nn.ReLU)
    loss = module.training_step((bands, torch.rand(1, 16, 20, 20)), 0)
    assert torch.isfinite(loss)
    out = Enhancer(module.net, device="cpu").decompose(torch.rand(1, 16, 30, 33))
    assert out.enhanced.shape == (1, 16, 30, 33)


def test_three_exposures_reach_the_symmetric_terms():
    from pairlie.model.losses import consistency_loss, fidelity_loss, retinex_loss

    torch.manual_seed(0)
    module = PairLIEModule(width=4, loss={k: {"weight": w, "exposures": "all"} for k, w in
                                          {"consistency": 1.0, "retinex": 1.0, "fidelity": 500.0}.items()})  # fmt: skip
    images = [torch.rand(1, 3, 16, 16) for _ in range(3)]
    total = module.training_step(tuple(images), 0)
    with torch.no_grad():
        outs = [module.net(im) for im in images]
        consistency = sum(consistency_loss(outs[i][1], outs[j][1]) for i, j in ((0, 1), (0, 2), (1, 2))) / 3
        retinex = sum(retinex_loss(o[0], o[1], im, o[2]) for o, im in zip(outs, images, strict=True)) / 3
        fidelity = sum(fidelity_loss(im, o[2]) for o, im in zip(outs, images, strict=True)) / 3
    assert float(total.detach()) == pytest.approx(float(consistency + retinex + 500 * fidelity), rel=1e-5)


def test_a_term_of_ones_own_is_weighted_and_added_after_the_paper_terms():
    torch.manual_seed(0)
    smooth = {"_target_": "my_nets.reflectance_smoothness", "weight": 0.1}
    import sys

    sys.path.insert(0, str(EXAMPLES / "own_model"))
    try:
        module = PairLIEModule(width=4, loss={"smoothness": smooth})
        base = PairLIEModule(width=4)
        base.load_state_dict(module.state_dict())
        from my_nets import reflectance_smoothness
    finally:
        sys.path.remove(str(EXAMPLES / "own_model"))
    assert [t.name for t in module.terms] == ["consistency", "retinex", "fidelity", "smoothness"]
    ims = (torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with torch.no_grad():
        r1 = module.net(ims[0])[1]
        extra = 0.1 * ((r1[..., 1:, :] - r1[..., :-1, :]).abs().mean() + (r1[..., 1:] - r1[..., :-1]).abs().mean())
    got, want = module.training_step(ims, 0).detach(), base.training_step(ims, 0).detach() + extra
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert callable(reflectance_smoothness)


def test_an_optimiser_and_scheduler_of_ones_choice(tmp_path):
    module = PairLIEModule(
        width=4,
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9},
        scheduler={"_target_": "torch.optim.lr_scheduler.ExponentialLR", "_partial_": True, "gamma": 0.9},
    )
    config = module.configure_optimizers()
    assert type(config["optimizer"]).__name__ == "SGD" and config["optimizer"].defaults["momentum"] == 0.9
    assert type(config["lr_scheduler"]["scheduler"]).__name__ == "ExponentialLR"
    with pytest.raises(ConfigError, match=r"model.optimizer: torch.optim.SGD could not be built .*betas"):
        PairLIEModule(optimizer={"_target_": "torch.optim.SGD", "lr": 0.1, "betas": [0.9, 0.99]})
    with pytest.raises(ConfigError, match="model.optimizer._target_=torch.optim.Adamm: torch.optim has no Adamm"):
        PairLIEModule(optimizer={"_target_": "torch.optim.Adamm", "lr": 0.1})


class SyntheticDarkening(ExposurePairDataset):
    """A training set of one's own: the first exposure of a scene and the same one darkened (a missing exposure made)."""

    def __init__(self, *args, factor: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.factor = factor

    def __getitem__(self, key):
        im1, _ = super().__getitem__(key)
        return im1, im1 * self.factor


def test_a_training_set_of_ones_own_by_target(scene_tree):
    from hydra.utils import instantiate

    cfg = composed(
        f"data.train_dir={scene_tree}",
        "data.val_dir=null",
        "data.demo_root=null",
        "data.patch_size=16",
        f"data.train_set._target_={__name__}.SyntheticDarkening",
        "+data.train_set.factor=0.25",
        hydra=False,
    )
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert type(datamodule.train_set) is SyntheticDarkening
    im1, im2 = datamodule.train_set[Draw(1, 7)]
    torch.testing.assert_close(im2, im1 * 0.25)
    again, _ = datamodule.train_set[Draw(1, 7)]
    torch.testing.assert_close(again, im1)  # the draws follow the Draw's seed only
    three = ExposurePairDataset(datamodule.train_set.scenes, 16, exposures=3)[Draw(0, 3)]
    assert len(three) == 3 and all(t.shape == (3, 16, 16) for t in three)
    with pytest.raises(DataError, match=r"fewer than data.train_set.exposures=4"):
        ExposurePairDataset(datamodule.train_set.scenes, 16, exposures=4)


def test_the_template_convention_for_parts_builds_only_modules():
    net = build_module(
        {"_target_": "pairlie.model.nets.PairLIENet", "width": 4, "illumination": {"_target_": "torch.nn.Sequential"}}
    )
    assert isinstance(net.illumination, nn.Sequential)
    with pytest.raises(ConfigError, match="model.net._partial_: not accepted for a net"):
        build_module({"_target_": "pairlie.model.nets.PairLIENet", "_partial_": True})


# --- the commands as users type them ---------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_scene_tree(root / "train"), make_paired_tree(root / "val")


FEW_STEPS = ["data.patch_size=32", "model.width=8", "trainer.max_steps=3", "logger=none"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("model._target_=no_such_module.Module", "model._target_=no_such_module.Module: cannot import no_such_module"),
        ("model.net._target_=os.system", "model.net._target_=os.system: not an nn.Module class"),
        ("+model.loss.smooth._target_=nope.term", "model.loss.smooth._target_=nope.term: cannot import nope"),
        (
            "model.optimizer._target_=torch.optim.Nope",
            "model.optimizer._target_=torch.optim.Nope: torch.optim has no Nope",
        ),
        ("data.train_set._target_=nope.Dataset", "data.train_set._target_=nope.Dataset: cannot import nope"),
        ("model.net.depth=-1", "model.net.depth=-1: must be an integer >= 0"),
    ],
)
@RunIf(clis=("pairlie-train",))
def test_a_target_that_does_not_import_or_fit_is_one_line_and_no_run_folder(bad, message, data, tmp_path):
    train, val = data
    result = run_cli("pairlie-train", f"data.train_dir={train}", f"data.val_dir={val}", bad, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def copy_example(name: str, folder: Path) -> Path:
    """The example as a user takes it: copied into a fresh folder, nothing else there."""
    target = folder / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def run_ok(name, *args, cwd):
    result = run_cli(name, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize(
    ("example", "args", "term"),
    [
        ("three_exposures", ["--config-dir", ".", "experiment=three_exposures"], "consistency"),
        ("own_model", ["--config-dir", "configs", "model=deep_r"], "smoothness"),
    ],
)
@RunIf(clis=("pairlie-train", "pairlie-test", "pairlie-enhance", "pairlie-export"))
def test_an_example_trains_then_tests_enhances_and_exports_as_typed(example, args, term, data, tmp_path):
    train, val = data
    folder = copy_example(example, tmp_path)
    trained = run_ok(
        "pairlie-train",
        *args,
        f"data.train_dir={train}",
        f"data.val_dir={val}",
        *FEW_STEPS,
        "hydra.run.dir=run",
        cwd=folder,
    )
    ckpt = folder / "run" / "checkpoints" / "last.ckpt"
    # the commands the run prints trust the net's own module, and only where it has one
    (enhance_line,) = [line for line in trained.stdout.splitlines() if "pairlie-enhance ckpt_path=" in line]
    trust = ["trust=my_nets"] if example == "own_model" else []
    assert ("trust=my_nets" in enhance_line) == bool(trust), enhance_line
    saved = yaml.safe_load((folder / "run" / "config.yaml").read_text())
    # your own folders: the published schedule, nothing of the demo's
    assert (saved["data"]["repeats"], saved["data"]["demo_root"], saved["trainer"]["max_epochs"]) == (1, None, 400)
    net, hparams = (
        load_net(ckpt)
        if example == "three_exposures"
        else (None, torch.load(ckpt, weights_only=True)["hyper_parameters"])
    )
    assert term in hparams["loss"]
    run_ok("pairlie-test", f"ckpt_path={ckpt}", *trust, f"data.test_dir={val}", "hydra.run.dir=test", cwd=folder)
    metrics = json.loads((folder / "test" / "metrics.json").read_text())
    assert np.isfinite(metrics["psnr"] if "psnr" in metrics else metrics["mean"]["psnr"])
    run_ok("pairlie-enhance", f"ckpt_path={ckpt}", *trust, f"input={val / 'low'}", "output=out", "tile=32", cwd=folder)
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["a.png", "b.png"]
    run_ok("pairlie-export", f"ckpt_path={ckpt}", *trust, "output=model.onnx", cwd=folder)
    assert (folder / "model.onnx").is_file()
    if example == "own_model":  # elsewhere the user's file is not importable: one line that says so
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        result = run_cli(
            "pairlie-enhance", f"ckpt_path={ckpt}", *trust, f"input={val / 'low'}", "output=out", cwd=elsewhere
        )
        assert result.returncode == 2 and "cannot import my_nets" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def hparams_of(run: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    accumulator = EventAccumulator(str(run / "tensorboard")).Reload()  # every event file of the run
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    session = HParamsPluginData.FromString(content).session_start_info
    values = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in session.hparams.items()}
    return {"hparams": values, "scalars": set(accumulator.Tags()["scalars"])}


@RunIf(clis=("pairlie-train",))
def test_a_sweep_over_a_term_of_ones_own_tells_its_runs_apart_in_hparams(data, tmp_path):
    train, val = data
    folder = copy_example("own_model", tmp_path)
    args = ["-m", "--config-dir", "configs", "model=deep_r", "model.loss.smoothness.weight=0.05,0.1"]
    few = [a for a in FEW_STEPS if not a.startswith("logger=")] + [
        "data.val_limit=1",
        "callbacks.rich_progress_bar=null",
        "trainer.log_every_n_steps=1",
    ]
    run_ok("pairlie-train", *args, f"data.train_dir={train}", f"data.val_dir={val}", *few, cwd=folder)
    runs = sorted(p for p in (folder / "logs" / "train" / "multiruns").glob("*/*") if (p / "tensorboard").is_dir())
    assert len(runs) == 2
    logged = [hparams_of(run) for run in runs]
    weights = sorted(entry["hparams"]["model.loss.smoothness.weight"] for entry in logged)
    assert weights == pytest.approx([0.05, 0.1])
    for entry in logged:
        # every key that differs from the defaults, the swept one (even where it equals a default) and the net
        assert entry["hparams"]["model.loss.smoothness.weight"] in (pytest.approx(0.05), pytest.approx(0.1))
        assert entry["hparams"]["model.net.reflectance._target_"] == "my_nets.DeepReflectance"
        assert entry["hparams"]["model.width"] == 8
        assert "train/smoothness" in entry["scalars"]


@RunIf(clis=("pairlie-train",))
def test_help_lists_the_model_groups_and_a_missing_config_dir_is_one_line(tmp_path):
    page = run_cli("pairlie-train", "--help", cwd=tmp_path).stdout
    assert "model           pairlie" in page and "model/net       pairlie" in page
    assert "model.net.depth=4" in page and "model/optimizer adam | adamw | sgd" in page
    result = run_cli("pairlie-train", "--config-dir", "nowhere", "model=deep_r", cwd=tmp_path)
    assert result.returncode == 2 and "--config-dir" in result.stderr and "no such folder" in result.stderr
    configs = EXAMPLES / "own_model" / "configs"
    result = run_cli("pairlie-train", "--config-dir", str(configs), "model=deep_rr", cwd=tmp_path)
    assert "model=deep_rr: no such choice; did you mean model=deep_r? choose one of deep_r, pairlie" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_scale_lr_scales_an_optimiser_of_ones_choice(tiny_cfg):
    from helpers import run_train

    cfg = tiny_cfg(
        "scale_lr=true",
        "data.batch_size=2",
        "logger=none",
        "trainer.max_steps=1",
        "model/optimizer=sgd",
        "model.optimizer.lr=0.01",
    )
    seen = {}

    class Spy(PairLIEModule):
        pass

    run_train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    blob = torch.load(ckpt, weights_only=False)
    seen["lr"] = blob["optimizer_states"][0]["param_groups"][0]["lr"]
    assert blob["hyper_parameters"]["optimizer"]["_target_"] == "torch.optim.SGD"
    assert seen["lr"] == pytest.approx(0.02)


def test_a_term_dropped_and_no_scheduler_from_the_command_line():
    from hydra.utils import instantiate

    module = instantiate(
        composed("model.width=4", "model.scheduler=false", "model.loss.retinex=null", hydra=False).model
    )
    assert [t.name for t in module.terms] == ["consistency", "fidelity"]
    assert module.hparams.scheduler is None and isinstance(module.configure_optimizers(), torch.optim.Adam)


class ThreeExposures(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        generator = torch.Generator().manual_seed(i)
        scene = torch.rand(3, 16, 16, generator=generator)
        return scene * 0.2, scene * 0.4, scene * 0.6


def reflectance_tv(step) -> torch.Tensor:
    """A term of one's own: the paper's TV, on the reflectance of every exposure."""
    from pairlie.model.losses import tv_loss

    return sum(tv_loss(step.reflectance(k)) for k in range(len(step))) / len(step)


def symmetric_loss(extra: dict | None = None) -> dict:
    loss = {k: {"weight": w, "exposures": "all"} for k, w in {"consistency": 1, "retinex": 1, "fidelity": 500}.items()}
    return {**loss, **(extra or {})}


def test_under_fp16_autocast_every_net_runs_in_the_nets_precision_and_the_terms_in_fp32():
    torch.manual_seed(0)
    module = PairLIEModule(width=4, loss=symmetric_loss())
    module.log = lambda *args, **kwargs: None
    dtypes = []
    module.net.illumination.register_forward_hook(lambda mod, args, out: dtypes.append(out.dtype))
    images = ThreeExposures()[0]
    images = tuple(im[None] for im in images)
    reference = module.training_step(images, 0)
    dtypes.clear()
    with torch.autocast("cpu", dtype=torch.float16):
        mixed = module.training_step(images, 0)
    assert dtypes == [torch.float16] * 3  # L of the later exposures, computed when the terms ask, still under autocast
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=2e-2, atol=0)


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_two_processes_train_a_user_net_on_three_exposures_in_step(tmp_path, precision):
    from lightning.pytorch.plugins.precision import MixedPrecision

    from test_cluster import RecordRank

    torch.manual_seed(0)
    smooth = {"smooth": {"_target_": f"{__name__}.reflectance_tv", "weight": 0.1}}
    module = PairLIEModule(net={"_target_": f"{__name__}.ResidualNet", "width": 4}, loss=symmetric_loss(smooth))
    initial = [p.detach().clone() for p in module.parameters()]
    plugins = [MixedPrecision("16-mixed", "cpu")] if precision == "16-mixed" else None
    fit = cpu_trainer(3, strategy="ddp_spawn", devices=2, plugins=plugins, callbacks=[RecordRank(tmp_path)])
    fit.fit(module, torch.utils.data.DataLoader(ThreeExposures(), batch_size=1))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 3
    moved = False
    for a, b, c in zip(ranks[0]["params"], ranks[1]["params"], initial, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the ranks stayed in step
        assert torch.isfinite(a).all()
        moved = moved or not torch.equal(a, c)
    assert moved or precision == "16-mixed"  # 16-mixed: the GradScaler's warm-up may skip the first steps
