"""A newcomer's first hour: the README's commands, help pages, one-line mistakes, readable outputs."""

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from helpers import (
    DOC_FILES,
    REPO,
    RunIf,
    composed,
    documented_commands,
    make_paired_tree,
    make_scene_tree,
    run_cli,
    save_tiny_checkpoint,
)
from helpers import (
    cli as cli_path,
)
from pairlie.cli import enhance as enhance_cli
from pairlie.cli import export as export_cli
from pairlie.cli import test as test_cli
from pairlie.cli import train as train_cli
from pairlie.configuration import check, group_options
from pairlie.errors import ConfigError
from pairlie.io.files import write_atomic

SPECS = {
    "pairlie-train": train_cli.SPEC,
    "pairlie-test": test_cli.SPEC,
    "pairlie-enhance": enhance_cli.SPEC,
    "pairlie-export": export_cli.SPEC,
}
MAINS = {
    "pairlie-train": train_cli.main,
    "pairlie-test": test_cli.main,
    "pairlie-enhance": enhance_cli.main,
    "pairlie-export": export_cli.main,
}
PUBLISHED = {"max_epochs": 400, "repeats": 1, "lr": 1e-4, "step_size": 100, "factor": 0.5, "batch": 1, "patch": 128}
GAMMA = {"lol": 0.14, "sice": 0.2}  # the authors' per data set; every other preset enhances with 0.2


def pairlie_commands(files=DOC_FILES) -> list[tuple[str, list[str]]]:
    """``(file, words)`` of every pairlie-* command line in the bash blocks of the README and docs/*.md."""
    return [(name, words) for name, words in documented_commands(files) if words[0] in SPECS]


def test_the_readme_and_the_docs_have_commands_for_every_cli():
    assert {words[0] for _, words in pairlie_commands([REPO / "README.md"])} == set(SPECS)
    assert {words[0] for _, words in pairlie_commands()} == set(SPECS)
    assert sum(1 for _, words in pairlie_commands() if "-m" in words) >= 4  # the sweeps are among them


def unique_commands() -> list[tuple[str, list[str]]]:
    """Each documented command once (the README, the tutorial and the CLI page share many), with the files it is in."""
    files: dict[tuple[str, ...], list[str]] = {}
    for name, words in pairlie_commands():
        files.setdefault(tuple(words), []).append(name)
    return [(",".join(dict.fromkeys(names)), list(words)) for words, names in files.items()]


@pytest.mark.parametrize(
    ("file", "words"), unique_commands(), ids=lambda x: x if isinstance(x, str) else " ".join(x)[:80]
)
def test_every_documented_command_composes_as_written(file, words, monkeypatch, tmp_path):
    """Each command of the README and the docs passes the checks (keys, groups, plugins, required keys) the CLI makes first."""
    monkeypatch.chdir(tmp_path)
    argv = [w.replace("<time>", "2026-01-01_00-00-00") for w in words[1:]]
    if "--config-dir" in argv:  # the docs run it in a copy of the example folder they cd into
        home = example_home(argv)
        monkeypatch.chdir(home)
        monkeypatch.syspath_prepend(str(home))  # as the console scripts put the working folder first
    check(argv, SPECS[words[0]])


def example_home(argv: list[str]) -> Path:
    """The example folder whose config folder holds every group choice a ``--config-dir`` command makes."""
    folder = argv[argv.index("--config-dir") + 1]
    choices = [a.split("=", 1) for a in argv if "=" in a and "." not in a.split("=", 1)[0] and not a.startswith("-")]
    for home in sorted((REPO / "examples").iterdir()):
        if choices and all((home / folder / group / f"{choice}.yaml").is_file() for group, choice in choices
                           if (home / folder / group).is_dir()) and any((home / folder / g).is_dir() for g, _ in choices):  # fmt: skip
            return home
    raise AssertionError(f"no example folder holds the config groups of {argv}")


@pytest.mark.parametrize("config", sorted(group_options("experiment")) + [f"data={d}" for d in group_options("data")])
def test_every_experiment_and_data_preset_trains_its_published_settings(config):
    """Discovered, not listed: a new preset is checked the day it is added."""
    override = config if "=" in config else f"experiment={config}"
    cfg = composed(override)
    data = cfg.hydra.runtime.choices.data
    assert cfg.model.gamma == GAMMA.get(data, 0.2)
    assert cfg.data.gamma in (None, cfg.model.gamma)  # pairlie-test and training use the same gamma
    schedule = {
        "max_epochs": cfg.trainer.max_epochs,
        "repeats": cfg.data.repeats,
        "lr": cfg.model.optimizer.lr,
        "step_size": cfg.model.scheduler.step_size,
        "factor": cfg.model.scheduler.gamma,
        "batch": cfg.data.batch_size,
        "patch": cfg.data.patch_size,
    }
    expected = {**PUBLISHED, "max_epochs": 4, "repeats": 2} if data == "demo" else PUBLISHED
    assert schedule == expected


def test_data_lol_alone_trains_with_lols_gamma_and_saves_it(tmp_path):
    from hydra.utils import instantiate

    cfg = composed("data=lol", "model.width=4", hydra=False)
    assert instantiate(cfg.model).hparams.gamma == 0.14  # what the checkpoint keeps


@pytest.mark.parametrize("cli", sorted(SPECS))
def test_help_says_what_the_cli_does_with_usage_examples_and_its_own_keys(cli, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [cli, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        MAINS[cli]()
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{cli}: ") and "powered by Hydra" not in out
    assert "\nusage: " in out and out.count(f"\n  {cli}") >= 3  # three examples
    if cli == "pairlie-enhance":
        assert "input=(required)" in out and "output=(required)" in out
        assert not re.search(r"\b(trainer|callbacks|experiment|logger)\b", out)
    if cli == "pairlie-train":
        assert "model.loss.fidelity=500.0" in out and "experiment      demo | lol | sice" in out
    if cli in ("pairlie-train", "pairlie-test"):  # what a bare run uses: the demo set, and for training its schedule
        demo = composed(config=cli.removeprefix("pairlie-"), hydra=False).paths.demo_dir
        key = "data.train_dir" if cli == "pairlie-train" else "data.test_dir"
        assert f"  {key}={demo}/{'train' if cli == 'pairlie-train' else 'val'} " in out
    if cli == "pairlie-train":
        assert "  data.repeats=2 " in out and "  trainer.max_epochs=4 " in out
    # only the commands that write run folders sweep: enhance and export have no multirun to offer
    assert ("-m key=a,b" in out) == (cli in ("pairlie-train", "pairlie-test"))
    assert not list(tmp_path.iterdir())  # --help writes nothing


@pytest.mark.parametrize(
    ("cli", "args", "message"),
    [
        ("pairlie-enhance", ["input=photos"], "error: output: required; usage: pairlie-enhance input="),
        ("pairlie-test", ["data.test_dir=???"], "data.test_dir: required"),
        (
            "pairlie-train",
            ["trainer.max_epoch=1"],
            "error: trainer.max_epoch: no such key; did you mean trainer.max_epochs?",
        ),
        ("pairlie-train", ["model.loss.fidelty=1,2", "-m"], "did you mean model.loss.fidelity?"),
        ("pairlie-train", ["modle.width=8"], "did you mean model.width?"),
        (
            "pairlie-train",
            ["trainer.gradient_clip_val=1"],
            "add it with +trainer.gradient_clip_val=VALUE (an argument of Trainer)",
        ),
        (
            "pairlie-train",
            ["callbacks.last_checkpoint.every_n_train_steps=5"],
            "add it with +callbacks.last_checkpoint.every_n_train_steps=VALUE",
        ),
        ("pairlie-train", ["data=lol2"], "error: data=lol2: no such choice; did you mean data=lol?"),
        ("pairlie-enhance", ["--input", "photos"], "takes key=value overrides, not --options: write input=VALUE"),
        ("pairlie-enhance", ["photos/"], "write input=photos/"),
        ("pairlie-enhance", ["PairLIE.pth", "input=x", "output=y"], "write ckpt_path=PairLIE.pth"),
        ("pairlie-enhance", ["gamma=0.2", "input=x", "output=y"], "gamma: no such key; did you mean model.gamma?"),
        ("pairlie-test", ["data=LOL"], "data=LOL: no such choice; did you mean data=lol?"),
        ("pairlie-train", ["model.width=["], "model.width=[: cannot parse"),
    ],
)
def test_mistakes_are_one_line_and_leave_nothing_behind(cli, args, message, tmp_path, monkeypatch, capsys):
    """The console script's main() in this process (the mistakes stop before Hydra runs anything)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [cli, *args])
    with pytest.raises(SystemExit) as exit_info:
        MAINS[cli]()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "+trainer.max_epoch" not in err  # never suggest adding a key that cannot exist
    assert not list(tmp_path.iterdir())


@RunIf(clis=("pairlie-enhance",))
def test_a_mistake_through_the_installed_command_is_one_line(tmp_path):
    result = run_cli("pairlie-enhance", "--input", "photos", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: --input: pairlie-enhance takes key=value")
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["hparams_search=loss_weights"], ["-m", "hydra/launcher=submitit_local"]])
def test_missing_sweep_extra_says_what_to_install(args, tmp_path):
    code = (
        "import sys, hydra_plugins; hydra_plugins.__path__ = []\n"  # as if pairlie[sweep] were not installed
        "from pairlie.cli.train import main; sys.argv = ['pairlie-train', *sys.argv[1:]]; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert 'pip install "pairlie[sweep]"' in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


@RunIf(clis=("pairlie-test",))
def test_a_refused_run_leaves_no_run_folder(tmp_path):
    result = run_cli("pairlie-test", "ckpt_path=missing.ckpt", cwd=tmp_path)
    assert result.returncode == 2 and "ckpt_path=missing.ckpt: no such file" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_result_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~umask


def test_enhanced_images_and_test_results_are_readable_by_the_group(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    pairs = make_paired_tree(tmp_path / "pairs")
    env = {**os.environ}
    code = "import os, sys; os.umask(0o002); from pairlie.cli.{0} import main; sys.argv = ['x', *sys.argv[1:]]; main()"
    for cli, args in (
        ("enhance", [f"ckpt_path={ckpt}", f"input={pairs / 'low'}", f"output={tmp_path / 'out'}"]),
        ("test", [f"ckpt_path={ckpt}", f"data.test_dir={pairs}", f"hydra.run.dir={tmp_path / 'scores'}"]),
    ):
        result = subprocess.run(
            [sys.executable, "-c", code.format(cli), *args], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr[-2000:]
    written = [*(tmp_path / "out").iterdir(), *(tmp_path / "scores").glob("*.*"), *(tmp_path / "scores").glob("*/*")]
    assert len(written) >= 6
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o060 == 0o060 for p in written if p.is_file())


@RunIf(clis=("pairlie-train", "pairlie-test"))
def test_own_folders_as_typed_train_the_published_schedule_and_the_next_commands_score_them(tmp_path):
    """``pairlie-train data.train_dir=mine/train data.val_dir=mine/val trainer.max_epochs=2`` from a fresh folder."""
    make_scene_tree(tmp_path / "mine" / "train"), make_paired_tree(tmp_path / "mine" / "val")
    args = ["data.train_dir=mine/train", "data.val_dir=mine/val", "trainer.max_epochs=2"]
    result = run_cli("pairlie-train", *args, "data.patch_size=32", "model.width=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    checkpoint = next((run_dir / "checkpoints").glob("epoch*.ckpt"))
    block = out[out.index("pairlie-train finished") :]
    assert "validation (2 images): input" in block and f"run folder:  {run_dir}" in block
    test_line = f"pairlie-test ckpt_path={checkpoint} data.test_dir={tmp_path / 'mine' / 'val'}"
    assert test_line in block and f"pairlie-enhance ckpt_path={checkpoint}" in block
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}" in block
    log = (run_dir / "train.log").read_text()
    assert "validation (2 images): input" in log and log.count("pairlie-train finished") == 1
    # not the demo's schedule (2 visits of each scene an epoch) nor its folders: the published one, said in one line
    assert "schedule: 2 epoch(s) x 3 steps = 6 steps (3 scenes x 1 visit(s) an epoch, batch 1); data=default" in log
    data = OmegaConf.load(run_dir / "config.yaml").data
    assert (data.repeats, data.demo_root, data.test_dir) == (1, None, None)  # no demo set built, nor scored
    noise = ("💡", "GPU available: False", "TPU available", "Total FLOPs", "Seed set to", "val_means")
    assert not [n for n in noise if n in out + result.stderr]
    # output into a pipe, as under nohup or SLURM: progress as log lines (a bar would draw nothing), epochs from 1
    assert "progress: epoch 2/2, step 6/6" in out and "progress: epoch 2/2" in log
    assert re.search(r"progress: epoch 2/2, step 6/6, loss [\d.e+-]+, [\d.]+ pairs/s", out), out
    # the printed next command, run as printed, scores the user's own validation pairs
    scored = run_cli(*shlex.split(test_line), f"hydra.run.dir={tmp_path / 'scores'}", "noref=false", cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert f"pairlie-test: 2 images of {tmp_path / 'mine' / 'val'}" in scored.stdout


@pytest.mark.parametrize(
    ("overrides", "data"),
    [
        (["data.train_dir=mine/train", "data.val_dir=mine/val"], "default"),
        (["-m", "data.train_dir=a,b"], "default"),
        (["data=demo", "data.train_dir=mine/train"], "demo"),  # chosen by name: kept
        (["experiment=sice", "data.train_dir=mine/train"], "sice"),
        (["data.val_dir=mine/val"], "demo"),  # the demo's training set: the demo's schedule
        ([], "demo"),
    ],
)
def test_naming_your_own_training_folder_leaves_the_demo_preset(overrides, data):
    """Composed from what ``pairlie-train`` passes on to Hydra (the sweep's first value)."""
    from pairlie.train.runs import own_data

    words = [o for o in own_data(overrides) if o != "-m"]
    cfg = composed(*(w.split(",")[0] for w in words))
    assert cfg.hydra.runtime.choices.data == data
    assert (cfg.trainer.max_epochs, cfg.data.repeats) == ((4, 2) if data == "demo" else (400, 1))


@RunIf(clis=("pairlie-train",))
def test_a_run_stopped_by_max_steps_before_validation_still_names_a_checkpoint(tmp_path):
    train, val = make_scene_tree(tmp_path / "train"), make_paired_tree(tmp_path / "val")
    args = [f"data.train_dir={train}", f"data.val_dir={val}", "data.demo_root=null", "data.patch_size=32"]
    result = run_cli("pairlie-train", *args, "model.width=4", "trainer.max_steps=2", "logger=none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert f"pairlie-test ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}" in result.stdout


def test_progress_bar_counts_epochs_from_one_and_the_whole_run():
    from types import SimpleNamespace

    from pairlie.train.callbacks import RunProgressBar, run_steps

    trainer = SimpleNamespace(
        max_epochs=4, max_steps=-1, num_training_batches=82, accumulate_grad_batches=1, global_step=0
    )
    bar = RunProgressBar()
    bar._trainer = trainer
    assert bar._get_train_description(0).strip() == "Epoch 1/4"
    assert run_steps(trainer) == 328
    trainer.max_steps = 100
    assert run_steps(trainer) == 100


@RunIf(clis=("pairlie-enhance",))
def test_enhance_reads_webp_and_gif_names_what_it_skips_and_writes_no_run_folder(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    frames = [Image.fromarray((rng.random((30, 40, 3)) * 80).astype(np.uint8)) for _ in range(3)]
    for name in ("a.png", "b.webp", "c.bmp"):
        frames[0].save(photos / name)
    frames[0].save(photos / "d.gif", save_all=True, append_images=frames[1:])
    (photos / "notes.txt").write_text("not a photo")
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli("pairlie-enhance", f"ckpt_path={ckpt}", f"input={photos}", "output=out", cwd=work)
    assert result.returncode == 0, result.stderr
    assert "enhanced 4 of 4 image(s)" in result.stdout
    assert f"skipped: {photos / 'notes.txt'}: not an image pairlie reads" in result.stdout
    assert f"note: {photos / 'd.gif'}: first of its 3 frames" in result.stdout
    assert sorted(p.name for p in (work / "out").iterdir()) == ["a.png", "b.webp", "c.bmp", "d.png"]
    assert sorted(p.name for p in work.iterdir()) == ["out"]  # no ./logs, no enhance.log
    again = run_cli("pairlie-enhance", f"ckpt_path={ckpt}", f"input={photos}", "output=jpg", "format=jpg", cwd=work)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in (work / "jpg").iterdir()) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    bad = run_cli("pairlie-enhance", f"ckpt_path={ckpt}", f"input={photos}", "output=x", "format=gif", cwd=work)
    assert bad.returncode == 2 and "format='gif': must be one of same, png" in bad.stderr


@RunIf(clis=("pairlie-enhance",))
def test_two_inputs_that_would_share_an_output_name_are_refused(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt")
    photos = tmp_path / "photos"
    for name in ("a.png", "a.jpg"):
        photos.mkdir(exist_ok=True)
        Image.new("RGB", (20, 20)).save(photos / name)
    result = run_cli(
        "pairlie-enhance", f"ckpt_path={ckpt}", f"input={photos}", "output=out", "format=png", cwd=tmp_path
    )
    assert result.returncode == 2 and "would both be written to" in result.stderr
    assert not (tmp_path / "out").exists()


def test_readonly_arrays_enhance_without_a_warning(recwarn):
    from pairlie.io.images import to_tensor

    array = np.asarray(Image.new("RGB", (8, 8)))
    assert not array.flags.writeable
    to_tensor(array)
    assert not [w for w in recwarn if "not writable" in str(w.message)]


def test_preflight_rejects_an_unknown_key_in_a_sweep_without_running_it():
    with pytest.raises(ConfigError, match=r"model\.loss\.fidelty: no such key; did you mean model\.loss\.fidelity\?"):
        check(["-m", "model.loss.fidelty=interval(1,2)"], train_cli.SPEC)


def test_the_enhancer_says_what_it_is(sharp_net, monkeypatch):
    from pairlie import Enhancer
    from pairlie.infer.precision import FLAGS_VARIABLE

    # the tests' CPU is AVX2-only (conftest): fp32 runs in bands there; an AVX-512 CPU streams rows
    assert (
        repr(Enhancer(sharp_net, gamma=0.14, conv="direct"))
        == "Enhancer(gamma=0.14, device='cpu', dtype=float32, bands, conv='direct', precision='fp32', width=8)"
    )
    monkeypatch.setenv(FLAGS_VARIABLE, "avx avx2 fma avx512f")
    assert "dtype=float32, streamed rows, conv='direct'" in repr(Enhancer(sharp_net, gamma=0.14, conv="direct"))
    assert "64 px tiles" in repr(Enhancer(sharp_net, tile=64))


@pytest.mark.parametrize(
    ("test_dir", "expected"),
    [
        ("/home/me/demo/val", "pairlie-test ckpt_path=x.ckpt"),  # the demo's pairs: pairlie-test's own default
        ("mine/val", f"pairlie-test ckpt_path=x.ckpt data.test_dir={Path('mine/val').resolve()}"),
        (None, "pairlie-test ckpt_path=x.ckpt data.test_dir=PAIRS"),  # no folder known: never the demo silently
    ],
)
def test_the_printed_test_command_scores_what_the_run_validated_on(test_dir, expected):
    from pairlie.train.runs import test_command

    assert test_command("x.ckpt", test_dir, "/home/me/demo") == expected


def test_the_added_data_choice_keeps_hydra_s_flags_before_the_overrides():
    from pairlie.train.runs import own_data

    argv = ["-m", "model.loss.fidelity=100,500", "data.train_dir=a", "--cfg", "job"]
    assert own_data(argv) == ["-m", "data=default", "model.loss.fidelity=100,500", "data.train_dir=a", "--cfg", "job"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            [],
            "schedule: 4 epoch(s) x 82 steps = 328 steps (41 scenes x 2 visit(s) an epoch, batch 1); data=demo: the demo",
        ),
        (
            ["data=sice"],
            "schedule: 400 epoch(s) x 179 steps = 71600 steps (179 scenes x 1 visit(s) an epoch, batch 1); data=sice: the published schedule",
        ),
        (["data=sice", "trainer.max_steps=50"], "schedule: up to 50 steps (trainer.max_steps) (179 scenes"),
    ],
)
def test_the_schedule_line_says_what_trains_and_where_it_comes_from(overrides, expected):
    from pairlie.train.runs import schedule_line

    cfg = composed(*overrides, hydra=False)
    scenes = 41 if not overrides else 179  # the demo set's scenes; SICE-train's
    line = schedule_line(cfg, scenes, "sice" if overrides else "demo")
    assert line.startswith(expected) and line.endswith(
        "unless trainer.max_epochs=N or trainer.max_steps=N says otherwise"
    )


@pytest.mark.parametrize("name", ["pairlie-enhance", "pairlie-test"])
def test_help_into_a_pipe_already_closed_ends_without_a_traceback(name, tmp_path):
    # `pairlie-enhance --help | head -1`, the reader gone before the help is written: our end of the
    # pipe is closed before the process has imported anything
    proc = subprocess.Popen([cli_path(name), "--help"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in stderr and "Error" not in stderr, stderr
