"""A checkpoint is data: nothing a user is handed imports or runs code, and hostile files are one line each.

Every attack here ran code, deleted a file or allocated gigabytes before pairlie.trust; each test
checks what the attack would have left behind (a marker file, a missing victim, a module in
sys.modules, the process's peak memory), not only the message.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import RunIf, run_cli, save_tiny_checkpoint
from pairlie.errors import ConfigError, DataError
from pairlie.infer.enhancer import Enhancer
from pairlie.model.checkpoints import load_net, read_checkpoint, read_weights
from pairlie.model.nets import PairLIENet
from pairlie.train.module import PairLIEModule
from pairlie.train.runs import checkpoint_progress
from pairlie.trust import add_working_folder_for, allowed, check_hparams, trusted_modules


class Touch:
    """Unpickling this creates ``path``: what a ``__reduce__`` payload in a shared checkpoint does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def with_hparams(tmp_path: Path, name: str, **changes) -> Path:
    """A tiny pairlie checkpoint whose hyper-parameters are changed as given."""
    path = save_tiny_checkpoint(tmp_path / name)
    blob = torch.load(path, weights_only=True)
    blob["hyper_parameters"].update(changes)
    torch.save(blob, path)
    return path


# --- 1. resuming runs no pickle -------------------------------------------------------------------


def pickled_checkpoint(tmp_path: Path, marker: Path) -> Path:
    path = save_tiny_checkpoint(tmp_path / "shared.ckpt")
    blob = torch.load(path, weights_only=True)
    blob["callbacks"] = {"Evil": Touch(marker)}
    torch.save(blob, path)
    return path


def test_resume_progress_reads_no_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = pickled_checkpoint(tmp_path, marker)
    with pytest.raises(DataError) as info:
        checkpoint_progress(path)
    assert "only pickle can load" in one_line(info)
    with pytest.raises(DataError, match="only pickle can load"):
        read_weights(path)
    assert not marker.exists()


@RunIf(clis=("pairlie-train",))
def test_pairlie_train_refuses_to_resume_a_pickled_checkpoint_before_running_it(tmp_path, scene_tree, paired_tree):
    marker = tmp_path / "pwned"
    path = pickled_checkpoint(tmp_path, marker)
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli(
        "pairlie-train",
        f"data.train_dir={scene_tree}",
        f"data.val_dir={paired_tree}",
        "model.width=4",
        "trainer.max_steps=2",
        f"ckpt_path={path}",
        "hydra.run.dir=run",
        cwd=work,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ckpt_path=") and "only pickle can load" in lines[0]
    assert not marker.exists()
    assert not (work / "run").exists()  # the refused run's folder is gone


def test_pairlie_s_own_checkpoints_load_as_data(tiny_cfg, tmp_path):
    """What pairlie-train writes (weights, optimiser and loop state, callbacks) needs no pickle."""
    from helpers import run_train

    run_train(tiny_cfg("trainer.max_steps=2", "callbacks=default", "callbacks.rich_progress_bar=null"))
    (last,) = (tmp_path / "run" / "checkpoints").glob("last.ckpt")
    blob = read_checkpoint(last)
    assert {"state_dict", "optimizer_states", "loops", "callbacks", "hyper_parameters"} <= set(blob)
    assert checkpoint_progress(last)[1] == 2


# --- 2-3. names in a checkpoint: allowed by name before import ------------------------------------


def test_the_allowlist_decides_by_name():
    assert allowed("pairlie.model.nets.PairLIENet", "net") and allowed("torch.nn.Conv2d", "net")
    assert allowed("torch.nn.modules.container.Sequential", "net")
    assert not allowed("pairlie.train.module.PairLIEModule", "net")  # a LightningModule builds optimisers
    assert not allowed("torch.nn.parallel.DistributedDataParallel", "net")
    assert not allowed("pairlie.model.nets.enhance", "net") and not allowed("this.X", "net")
    assert allowed("torch.optim.AdamW", "optimizer") and not allowed("torch.optim.lr_scheduler.StepLR", "optimizer")
    assert allowed("torch.optim.lr_scheduler.StepLR", "scheduler") and not allowed("pathlib.Path.touch", "scheduler")
    assert allowed("pairlie.model.losses.retinex", "loss") and not allowed("numpy.savetxt", "loss")
    assert allowed("my_nets.Deep", "net", trust=("my_nets",)) and not allowed("my_nets2.Deep", "net", ("my_nets",))
    assert trusted_modules("a, b.c") == ("a", "b.c") and trusted_modules(["x"]) == ("x",)
    with pytest.raises(ConfigError, match="not a module name"):
        trusted_modules("os; rm -rf")


@pytest.mark.parametrize(
    "net",
    [
        # a LightningModule as the net: its constructor builds optimisers from specs
        {
            "_target_": "pairlie.train.module.PairLIEModule",
            "optimizer": {"_target_": "pathlib.Path.unlink", "self": "V"},
        },
        # specs as a list of pairs, and a resolver interpolation
        {
            "_target_": "pairlie.model.nets.PairLIENet",
            "reflectance": [["_target_", "pathlib.Path.unlink"], ["self", "V"]],
        },
        {"_target_": "pairlie.model.nets.PairLIENet", "width": "${oc.decode:'4'}"},
        {"_target_": "pathlib.Path.unlink", "self": "V"},
        {"_target_": "numpy.savetxt", "fname": "V", "X": [1]},
        {"_target_": "builtins.open", "file": "V", "mode": "w"},
    ],
    ids=["lightning-module", "list-of-pairs", "interpolation", "unlink", "savetxt", "open"],
)
def test_a_net_spec_that_calls_things_is_refused_and_the_victim_file_survives(net, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's data")

    def aimed(value):
        if isinstance(value, dict):
            return {k: aimed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [aimed(v) for v in value]
        return str(victim) if value == "V" else value

    path = with_hparams(tmp_path, "hostile.ckpt", net=aimed(net))
    for load in (load_net, lambda p: Enhancer.from_checkpoint(p, device="cpu"), PairLIEModule.load_from_checkpoint):
        with pytest.raises(DataError) as info:
            load(path)
        assert one_line(info).startswith(f"ckpt_path={path}: ")
    assert victim.read_text() == "the user's data"


@pytest.mark.parametrize(
    ("key", "spec"),
    [
        ("optimizer", {"_target_": "pathlib.Path.touch", "_partial_": True, "self": "M"}),
        ("scheduler", {"_target_": "pathlib.Path.touch", "_partial_": True, "self": "M"}),
        ("optimizer", {"_target_": "torch.optim.Adam", "_partial_": True, "lr": {"_target_": "pathlib.Path.touch"}}),
        ("loss", {"x": {"_target_": "pathlib.Path.touch", "self": "M"}}),
    ],
    ids=["optimizer", "scheduler", "nested-in-optimizer", "loss-term"],
)
def test_load_from_checkpoint_builds_no_optimizer_or_term_a_checkpoint_names(key, spec, tmp_path):
    marker = tmp_path / "touched"
    spec = json.loads(json.dumps(spec).replace('"M"', json.dumps(str(marker))))
    path = with_hparams(tmp_path, "hostile.ckpt", **{key: spec})
    with pytest.raises(DataError) as info:
        PairLIEModule.load_from_checkpoint(path)
    assert "a checkpoint may name" in one_line(info) or "plain values" in one_line(info)
    assert not marker.exists()


def test_load_from_checkpoint_gives_back_the_trained_module(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "ok.ckpt", width=4, gamma=0.14)
    module = PairLIEModule.load_from_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert module.hparams.gamma == 0.14 and isinstance(module.net, PairLIENet)
    assert all(torch.equal(module.state_dict()[k], v) for k, v in saved.items())
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["lr"] == 1e-4
    assert PairLIEModule.load_from_checkpoint(path, gamma=0.3).hparams.gamma == 0.3  # Lightning's overrides


IMPORT_ATTACKS = ["this.X", "venv.__main__.X", "unittest.__main__.X", "antigravity.X"]


@pytest.mark.parametrize("target", IMPORT_ATTACKS)
def test_a_named_module_is_not_imported_unless_trusted(target, tmp_path):
    """Importing is running: the check is made on the name, and the module never reaches sys.modules."""
    path = with_hparams(tmp_path, "hostile.ckpt", net={"_target_": target})
    code = textwrap.dedent(
        f"""
        import sys
        from pairlie.model.checkpoints import load_net
        from pairlie.errors import DataError
        try:
            load_net({str(path)!r})
        except DataError as exc:
            print(exc)
        print(sorted(m for m in {[t.rsplit(".", 1)[0] for t in IMPORT_ATTACKS]!r} if m in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    message, imported = result.stdout.strip().splitlines()[-2:]
    assert f"trust={target.split('.')[0]}" in message
    assert imported == "[]", result.stdout


@RunIf(clis=("pairlie-enhance",))
def test_a_module_beside_the_checkpoint_runs_only_when_trusted(tmp_path, paired_tree):
    folder = tmp_path / "shared_folder"
    folder.mkdir()
    marker = tmp_path / "helpers_ran"
    (folder / "helpers_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nfrom torch.nn import Identity as Net\n"
    )
    ckpt = with_hparams(folder, "model.ckpt", net={"_target_": "pairlie.model.nets.PairLIENet", "width": 4,
                                                      "denoiser": {"_target_": "helpers_evil.Net"}})  # fmt: skip
    result = run_cli("pairlie-enhance", f"ckpt_path={ckpt}", f"input={paired_tree / 'low'}", "output=out", cwd=folder)
    assert result.returncode == 2 and not marker.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "add trust=helpers_evil" in lines[0], result.stderr
    assert not (folder / "out").exists()
    # trusted by name: imported from the working folder (the user said so), then its weights are checked
    result = run_cli(
        "pairlie-enhance", f"ckpt_path={ckpt}", "trust=helpers_evil", f"input={paired_tree / 'low'}", "output=out",
        cwd=folder,
    )  # fmt: skip
    assert marker.exists() and result.returncode == 2 and "Unexpected key(s)" in result.stderr


@RunIf(clis=("pairlie-export",))
def test_a_file_in_the_working_folder_never_replaces_a_library_pairlie_imports(tmp_path, tiny_ckpt):
    pytest.importorskip("onnx", reason='needs onnx: pip install -e ".[export]"')
    marker = tmp_path / "fake_onnx_ran"
    work = tmp_path / "work"
    work.mkdir()
    (work / "onnx.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    result = run_cli("pairlie-export", f"ckpt_path={tiny_ckpt}", "output=m.onnx", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not marker.exists() and (work / "m.onnx").is_file()


def test_the_working_folder_is_searched_last_and_only_for_named_modules(tmp_path, monkeypatch):
    (tmp_path / "my_nets_xyz.py").write_text("")
    (tmp_path / "json.py").write_text("")  # a name that is installed: never taken from here
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd(), str(tmp_path))])
    assert not add_working_folder_for(["json.JSONDecoder", "nope_not_here.X"], str(tmp_path))
    assert str(tmp_path) not in sys.path
    assert add_working_folder_for(["my_nets_xyz.Net"], str(tmp_path))
    assert sys.path[-1] == str(tmp_path)


# --- 5. check before allocating -------------------------------------------------------------------


def load_in_a_fresh_process(path: Path) -> tuple[str, int]:
    """``load_net(path)``'s one-line error, and how many MB the process's peak memory grew while loading."""
    code = textwrap.dedent(
        f"""
        import resource
        from pairlie.model.checkpoints import load_net
        from pairlie.errors import DataError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_net({str(path)!r})
        except DataError as exc:
            print(exc)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    message, grown_mb = result.stdout.strip().splitlines()[-2:]
    assert result.returncode == 0, result.stderr[-2000:]
    return message, int(grown_mb)


@pytest.mark.parametrize("width", [3000, 10**6])
def test_a_declared_width_is_checked_on_the_meta_device_before_any_allocation(width, tmp_path):
    path = with_hparams(tmp_path, "huge.ckpt", net={"_target_": "pairlie.model.nets.PairLIENet", "width": width})
    assert path.stat().st_size < 200_000
    message, grown_mb = load_in_a_fresh_process(path)
    assert "size mismatch for denoiser.layers.1.weight" in message
    assert grown_mb < 100  # the net at width 3000 is 3.2 GB


# --- weights that cannot be right; structures that are not checkpoints ----------------------------


def test_non_finite_weights_are_refused(tmp_path):
    path = save_tiny_checkpoint(tmp_path / "nan.ckpt")
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["net.illumination.layers.1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(blob, path)
    with pytest.raises(DataError, match=r"illumination.layers.1.weight hold NaN or infinite values") as info:
        load_net(path)
    one_line(info)


@pytest.mark.parametrize("gamma", [float("nan"), float("inf"), 0.0, -0.2, 11.0, "0.2", True])
def test_a_gamma_that_cannot_be_right_is_refused(gamma, tmp_path):
    path = with_hparams(tmp_path, "g.ckpt", gamma=gamma)
    with pytest.raises(DataError, match=r"gamma .* not a number in \(0, 10\]") as info:
        Enhancer.from_checkpoint(path, device="cpu")
    one_line(info)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        ({"state_dict": [1, 2], "hyper_parameters": {}}, "state_dict is a list"),
        ({"state_dict": {"net.x": 3}, "hyper_parameters": {}}, r"state_dict\['net.x'\] is a int, not a tensor"),
        ({"state_dict": {}, "hyper_parameters": [1]}, "hyper_parameters is a list"),
        ({"state_dict": {}, "hyper_parameters": {"net": 5}}, "its model.net is a int"),
    ],
    ids=["state-list", "state-values", "hparams-list", "net-not-spec"],
)
def test_a_malformed_checkpoint_is_one_line(blob, message, tmp_path):
    path = tmp_path / "odd.ckpt"
    if "net" in blob.get("hyper_parameters", {}):
        blob["state_dict"] = PairLIENet(width=4).state_dict()
        blob["state_dict"] = {f"net.{k}": v for k, v in blob["state_dict"].items()}
    torch.save(blob, path)
    for load in (load_net, PairLIEModule.load_from_checkpoint):
        with pytest.raises(DataError, match=message) as info:
            load(path)
        one_line(info)


def test_hparams_hold_plain_data_only():
    check_hparams(
        {"net": {"_target_": "pairlie.model.nets.PairLIENet", "width": 4}, "gamma": 0.2, "loss": {"retinex": 1}}
    )
    with pytest.raises(ConfigError, match=r"hyper_parameters.log_images: a bytes value"):
        check_hparams({"log_images": b"x"})
    with pytest.raises(ConfigError, match=r"model.compile._target_=os.system: a checkpoint names classes in"):
        check_hparams({"compile": {"_target_": "os.system"}})


def test_the_official_weights_load_as_data():
    from helpers import OFFICIAL_WEIGHTS

    if not OFFICIAL_WEIGHTS.is_file():
        pytest.skip("needs ../shared/weights/PairLIE.pth (the authors' checkpoint)")
    net, hparams = load_net(OFFICIAL_WEIGHTS)
    assert isinstance(net, PairLIENet) and net.width == 64 and hparams == {}


# --- configs are code, still checked before a run folder exists ------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            "data._target_=pairlie.model.nets.PairLIENet",
            "data._target_=pairlie.model.nets.PairLIENet: not a LightningDataModule",
        ),
        (
            "+logger.x._target_=pairlie.model.nets.ConvNet",
            "logger.x._target_=pairlie.model.nets.ConvNet: not a Lightning Logger class",
        ),
        (
            "callbacks.model_summary._target_=torch.nn.Identity",
            "callbacks.model_summary._target_=torch.nn.Identity: not a Lightning Callback class",
        ),
        ("trainer.max_epochs=-5", "trainer.max_epochs=-5: must be a whole number >= 0"),
        ("hydra.run.dir=afile/run", "is a file, not a folder"),
    ],
    ids=["data", "logger", "callback", "max-epochs", "run-dir-through-a-file"],
)
@RunIf(clis=("pairlie-train",))
def test_a_config_entry_of_the_wrong_kind_is_one_line_and_no_run_folder(
    bad, message, tmp_path, scene_tree, paired_tree
):
    work = tmp_path / "work"
    work.mkdir()
    (work / "afile").write_text("the user's file")
    result = run_cli("pairlie-train", f"data.train_dir={scene_tree}", f"data.val_dir={paired_tree}", bad, cwd=work)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["afile"] and (work / "afile").read_text() == "the user's file"


def test_a_read_only_run_folder_is_one_line(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from pairlie.train.runs import check_run_folder

    cfg = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "logs" / "run")}, "mode": "RUN"}})
    check_run_folder(cfg)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)  # as on a read-only disk
    with pytest.raises(ConfigError, match=rf"cannot write in {tmp_path} \(read-only or not yours\)"):
        check_run_folder(cfg)


# --- found in review: callback state, stride tricks, huge declarations, attribute walks ------------


def test_resume_refuses_callback_state_that_names_files_by_url(tmp_path):
    """Lightning deletes a restored best/last path with a protocol wherever it points."""
    victim = tmp_path / "victim"
    victim.write_text("the user's data")
    path = save_tiny_checkpoint(tmp_path / "resume.ckpt")
    blob = torch.load(path, weights_only=True)
    blob["global_step"] = 1
    blob["callbacks"] = {
        "ModelCheckpoint{'monitor': None}": {"best_model_path": f"local://{victim}", "best_k_models": {}},
        "ModelCheckpoint{'monitor': 'val/psnr'}": {"best_k_models": {f"simplecache::{victim}": torch.tensor(1.0)}},
    }
    torch.save(blob, path)
    with pytest.raises(
        ConfigError, match=r"callback state callbacks.*names 'local://.*a URL where pairlie writes"
    ) as info:
        checkpoint_progress(path)
    one_line(info)
    del blob["callbacks"]["ModelCheckpoint{'monitor': None}"]
    torch.save(blob, path)
    with pytest.raises(ConfigError, match=r"names 'simplecache::"):
        checkpoint_progress(path)
    assert victim.read_text() == "the user's data"


def test_a_tensor_declaring_more_values_than_it_stores_is_refused_before_any_allocation(tmp_path):
    n = 20000  # 1.6 GB as a dense fp32 matrix; one number on disk
    path = tmp_path / "stride0.ckpt"
    net = {"_target_": "torch.nn.Linear", "in_features": n, "out_features": n, "bias": False}
    torch.save({"state_dict": {"net.weight": torch.zeros(1).expand(n, n)}, "hyper_parameters": {"net": net}}, path)
    assert path.stat().st_size < 10_000
    message, grown_mb = load_in_a_fresh_process(path)
    assert "declares 400000000 values but stores 1" in message
    assert grown_mb < 100
    blob = torch.load(path, weights_only=True)
    blob["optimizer_states"] = [{"state": {0: {"exp_avg": torch.zeros(1).expand(n, n)}}}]
    blob["state_dict"] = {}
    torch.save(blob, path)
    with pytest.raises(DataError, match=r"optimizer_states.*declares more values than it stores"):
        checkpoint_progress(path)


@pytest.mark.parametrize(
    ("net", "message"),
    [
        ({"_target_": "torch.nn.RNN", "input_size": 1, "hidden_size": 1, "num_layers": 100000}, "more than 10000"),
        ({"_target_": "torch.nn.quantized.Linear", "in_features": 10, "out_features": 10}, "may not name"),
        (
            {"_target_": "torch.nn.modules.module.torch.nn.parallel.DistributedDataParallel", "module": None},
            "may not name",
        ),
        ({"_target_": "torch.nn.modules.module.torch.fx.GraphModule"}, "may not name"),
    ],
    ids=["many-layers", "quantized", "attribute-walk-ddp", "attribute-walk-fx"],
)
def test_a_net_that_cannot_be_checked_cheaply_or_lives_elsewhere_is_refused(net, message, tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"net.x": torch.zeros(1)}, "hyper_parameters": {"net": net}}, path)
    with pytest.raises(DataError, match=message) as info:  # 100,000 RNN layers: refused at the 10,001st tensor
        load_net(path)
    one_line(info)
