"""pairlie-export: one self-contained ONNX file, any N/H/W, γ an input, equal to pairlie in ONNX Runtime."""

import hashlib
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import OFFICIAL_WEIGHTS, REPO, SHARED_DATA, RunIf, run_cli, save_tiny_checkpoint
from pairlie.deploy.export import MIN_SIDE, ONNX_OPSETS, export
from pairlie.errors import ConfigError, DataError, VerificationError
from pairlie.infer.enhancer import Enhancer
from pairlie.io.images import read_rgb, to_tensor
from pairlie.model.checkpoints import load_net

pytestmark = pytest.mark.xdist_group("test_export")  # one exported model per session

ort = pytest.importorskip("onnxruntime", reason='needs onnxruntime: pip install -e ".[export]"')
onnx = pytest.importorskip("onnx")


def session(path: Path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def grey(x) -> np.ndarray:
    return (np.clip(np.asarray(x), 0, 1) * 255).astype(np.uint8).astype(int)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A width-4 checkpoint (γ 0.3) exported once through the installed ``pairlie-export``, with outputs=all."""
    folder = tmp_path_factory.mktemp("export")
    ckpt = save_tiny_checkpoint(folder / "tiny.ckpt", gamma=0.3)
    out = folder / "models" / "tiny.onnx"
    out.parent.mkdir()
    result = run_cli("pairlie-export", f"ckpt_path={ckpt}", f"output={out}", "outputs=all", cwd=folder)
    assert result.returncode == 0, result.stderr[-2000:]
    return ckpt, out, result.stdout


@RunIf(clis=("pairlie-export",))
def test_the_cli_verifies_and_writes_one_file_only(exported):
    ckpt, out, stdout = exported
    assert [p.name for p in out.parent.iterdir()] == ["tiny.onnx"]  # no .onnx.data, no .part, no run folder
    assert "checked 1×3×37×51 at gamma 0.3" in stdout and "checked 1×3×400×600" in stdout
    assert f"checked 1×3×{MIN_SIDE}×{MIN_SIDE}" in stdout and "checked 1×3×37×51 at gamma 0.15" in stdout
    worst = re.search(r"verified: worst difference from pairlie (\d+) grey level", stdout)
    assert worst and int(worst.group(1)) <= 1
    assert "opset 17" in stdout


@RunIf(clis=("pairlie-export",))
def test_one_file_runs_any_batch_and_size_like_the_enhancer(exported):
    ckpt, out, _ = exported
    net, _ = load_net(ckpt)
    model = session(out)
    assert [i.name for i in model.get_inputs()] == ["image"]  # gamma is an overridable initializer
    assert [i.name for i in model.get_overridable_initializers()] == ["gamma"]
    enhancer = Enhancer(net, gamma=0.3, device="cpu", conv="direct")  # the exact path
    for n, h, w in [(1, 37, 51), (2, 16, 16), (4, 9, 30), (1, 64, 3), (3, 1, 1), (1, 1, 9), (2, 8, 1)]:
        image = torch.rand(n, 3, h, w)
        enhanced, illumination, reflectance, denoised = model.run(None, {"image": image.numpy()})
        parts = enhancer.decompose(image)
        assert enhanced.shape == (n, 3, h, w) and illumination.shape == (n, 1, h, w), (n, h, w)
        for got, ref in [
            (enhanced, parts.enhanced),
            (illumination, parts.illumination),
            (reflectance, parts.reflectance),
            (denoised, parts.denoised),
        ]:
            np.testing.assert_allclose(got, ref.numpy(), atol=2e-5)
            assert np.abs(grey(got) - grey(ref)).max() <= 1


@RunIf(clis=("pairlie-export",))
def test_gamma_is_an_input_and_the_output_is_L_to_the_gamma_times_R(exported):
    _, out, _ = exported
    model = session(out)
    image = {"image": torch.rand(1, 3, 20, 24).numpy()}
    enhanced, illumination, reflectance, _ = model.run(None, image)
    np.testing.assert_allclose(enhanced, illumination**0.3 * reflectance, rtol=1e-5, atol=1e-6)  # the default
    results = []
    for gamma in (0.1, 0.3, 0.8):
        got, illumination_g, reflectance_g, _ = model.run(None, {**image, "gamma": np.array(gamma, np.float32)})
        np.testing.assert_array_equal(illumination_g, illumination)  # γ changes only the last step
        np.testing.assert_allclose(got, illumination**gamma * reflectance, rtol=1e-5, atol=1e-6)
        results.append(got)
    np.testing.assert_allclose(results[1], enhanced, atol=1e-7)
    assert np.abs(results[0] - results[2]).max() > 0.01  # γ really moves the output


@RunIf(clis=("pairlie-export",))
def test_the_onnx_file_alone_runs_in_another_folder_and_says_what_it_is(exported, tmp_path):
    ckpt, out, _ = exported
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    shutil.copyfile(out, alone)  # only the .onnx: no .onnx.data beside it
    model = onnx.load(str(alone))
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert meta["source_checkpoint"] == "tiny.ckpt" and meta["gamma"] == "0.3" and meta["opset"] == "17"
    assert meta["pairlie_version"] == __import__("pairlie").__version__
    assert "any N, H, W >= 1" in meta["inputs"] and "default 0.3" in meta["inputs"]
    assert meta["outputs"].startswith("enhanced: float32 N×3×H×W in [0, 1]: L**gamma * R; illumination")
    assert meta["min_size"].startswith("1x1")
    outputs = session(alone).run(None, {"image": np.random.rand(2, 3, 11, 13).astype(np.float32)})
    assert outputs[0].shape == (2, 3, 11, 13)


def _bad_pth(folder: Path) -> Path:
    path = folder / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    return path


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("text", DataError, r"^ckpt_path=.*notes\.txt: not a readable PyTorch checkpoint"),
        ("other_net", DataError, r"^ckpt_path=.*resnet\.pth: holds neither a pairlie checkpoint nor the official"),
        ("no_folder", DataError, r"^output=.*missing/p\.onnx: folder .*missing does not exist; create it"),
        ("exists", DataError, r"^output=.*taken\.onnx: exists; pass overwrite=true to replace it"),
        ("opset_old", ConfigError, rf"^opset=12: unsupported; choose {ONNX_OPSETS[0]} to {ONNX_OPSETS[-1]}"),
        ("opset_new", ConfigError, r"^opset=24: unsupported"),
        ("format", ConfigError, r"^format='tflite': must be one of onnx, torchscript"),
        ("is_ckpt", DataError, r"^output=.*tiny\.ckpt: is the checkpoint being exported"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(case, error, message, tmp_path, tiny_ckpt):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "taken.onnx").write_bytes(b"keep me")
    kwargs = {"ckpt_path": tiny_ckpt, "output": tmp_path / "p.onnx"}
    kwargs |= {
        "text": {"ckpt_path": tmp_path / "notes.txt"},
        "other_net": {"ckpt_path": _bad_pth(tmp_path)},
        "no_folder": {"output": tmp_path / "missing" / "p.onnx"},
        "exists": {"output": tmp_path / "taken.onnx"},
        "opset_old": {"opset": 12},
        "opset_new": {"opset": 24},
        "format": {"fmt": "tflite"},
        "is_ckpt": {"output": tiny_ckpt, "overwrite": True},
    }[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(error, match=message) as info:
        export(**kwargs)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "taken.onnx").read_bytes() == b"keep me"


@RunIf(clis=("pairlie-export",))
def test_a_bad_checkpoint_through_the_installed_cli_is_one_line(tmp_path, tiny_ckpt):
    result = run_cli("pairlie-export", f"ckpt_path={_bad_pth(tmp_path)}", "output=p.onnx", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ckpt_path=") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet.pth", "tiny.ckpt"]
    opset = run_cli("pairlie-export", f"ckpt_path={tiny_ckpt}", "output=p.onnx", "opset=9", cwd=tmp_path)
    assert opset.returncode == 2 and opset.stderr.strip().startswith("error: opset=9: unsupported")


def test_overwrite_true_replaces_and_a_failed_verification_leaves_the_old_file(tmp_path, tiny_ckpt, monkeypatch):
    out = tmp_path / "p.onnx"
    out.write_bytes(b"old")
    report = export(tiny_ckpt, out, overwrite=True, verify_images=())
    assert out.read_bytes()[:4] != b"old" and report.worst.grey_levels <= 1
    import pairlie.deploy.export as export_module

    other = save_tiny_checkpoint(tmp_path / "other.ckpt", seed=1)
    real = export_module.to_onnx
    monkeypatch.setattr(export_module, "to_onnx", lambda net, *a: real(load_net(other)[0], *a))
    written = out.read_bytes()
    with pytest.raises(VerificationError, match=r"^the exported model differs from pairlie by \d+ grey levels on a 1"):
        export(tiny_ckpt, out, overwrite=True)
    assert out.read_bytes() == written and sorted(p.name for p in tmp_path.iterdir()) == [
        "other.ckpt",
        "p.onnx",
        "tiny.ckpt",
    ]
    with pytest.raises(VerificationError):
        export(tiny_ckpt, tmp_path / "new.onnx")
    assert not (tmp_path / "new.onnx").exists()


def test_without_onnxruntime_the_export_is_written_and_says_how_to_verify(tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    report = export(tiny_ckpt, tmp_path / "p.onnx")
    assert (
        report.checks == []
        and report.skipped == 'onnxruntime is not installed (pip install "pairlie[export]" to verify)'
    )
    assert (tmp_path / "p.onnx").stat().st_size > 10_000


def test_torchscript_runs_any_size_with_gamma_and_keeps_the_metadata(tmp_path, tiny_ckpt):
    report = export(tiny_ckpt, tmp_path / "p.pt", fmt="torchscript")
    assert report.worst.grey_levels <= 1
    files = {"pairlie.json": ""}
    module = torch.jit.load(str(tmp_path / "p.pt"), _extra_files=files)
    assert '"gamma": "0.2"' in files["pairlie.json"].decode()
    net, _ = load_net(tiny_ckpt)
    for shape in [(1, 3, 5, 70), (2, 3, 1, 1)]:
        image = torch.rand(shape)
        expected = Enhancer(net, gamma=0.5, device="cpu", conv="direct").decompose(image).enhanced
        torch.testing.assert_close(module(image, torch.tensor(0.5)), expected, atol=2e-5, rtol=0)


def deploy_example() -> str:
    """The python block of the deploying page's "## Running the ONNX file" section."""
    section = (REPO / "docs" / "deploying.md").read_text().split("\n## Running the ONNX file", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    return code


def test_the_docs_deploy_example_runs_as_written(tmp_path, monkeypatch):
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.ckpt", gamma=0.3)
    assert len(deploy_example().strip().splitlines()) <= 10
    export(ckpt, tmp_path / "pairlie.onnx", verify_on=False)
    photo = (np.random.default_rng(0).random((30, 41, 3)) * 80).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(deploy_example(), "docs/deploying.md#running-the-onnx-file", "exec"), {})
    result = np.asarray(Image.open(tmp_path / "photo_enhanced.png"))
    expected = Enhancer(load_net(ckpt)[0], gamma=0.3, device="cpu", conv="direct").enhance(photo)
    assert result.shape == (30, 41, 3) and np.abs(result.astype(int) - expected).max() <= 1


# `pairlie-test ckpt_path=PairLIE.pth data=lol` (γ 0.14), metrics.json of 2026-11-25; pinned so this test runs
# the 15 photos through ONNX Runtime only (test_test_cli.py checks pairlie-test against the authors' 19.514)
LOL_PAIRLIE_TEST = {"psnr": 19.513868985793543, "ssim": 0.7358555875169527}


@RunIf(shared=True)
def test_lol_through_onnx_scores_as_pairlie_test(tmp_path):
    """The official weights at LOL's γ 0.14, verified on a LOL photo: the ONNX outputs score pairlie-test's numbers."""
    from pairlie.evaluate.metrics import paper_scores

    lows = sorted((SHARED_DATA / "LOL-test" / "low").glob("*.png"))
    report = export(OFFICIAL_WEIGHTS, tmp_path / "p.onnx", gamma=0.14, verify_images=[lows[0]])
    assert report.checks[-1].shape == (1, 3, 400, 600) and report.worst.grey_levels <= 1
    model = session(tmp_path / "p.onnx")
    scores = []
    for low in lows:
        (enhanced,) = model.run(None, {"image": to_tensor(read_rgb(low)[0])[None].numpy()})
        high = read_rgb(SHARED_DATA / "LOL-test" / "high" / low.name)[0]
        scores.append(paper_scores(torch.from_numpy(enhanced[0]), high))
    assert len(scores) == 15
    assert np.mean([s[0] for s in scores]) == pytest.approx(LOL_PAIRLIE_TEST["psnr"], abs=0.001)
    assert np.mean([s[1] for s in scores]) == pytest.approx(LOL_PAIRLIE_TEST["ssim"], abs=1e-5)


@RunIf(clis=("pairlie-export",))
def test_the_cli_writes_no_run_folder(tmp_path, tiny_ckpt):
    env = {"PAIRLIE_LOG_DIR": str(tmp_path / "logs")}
    args = [f"ckpt_path={tiny_ckpt}", "output=p.pt", "format=torchscript", "verify=false"]
    result = run_cli("pairlie-export", *args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verification skipped: verify=false" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pt", "tiny.ckpt"]
