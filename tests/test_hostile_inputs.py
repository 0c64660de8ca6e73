"""Hostile and careless inputs: FIFOs, outputs that cannot be written, tiny pairs, bombs, odd TIFFs, bad settings, NaN.

Each gets one line naming the file or key and the fix, no traceback, and nothing half-written left behind.
Tests run as root, whom chmod does not stop: read-only folders and full disks are injected as the OSError
the system call would raise.
"""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from helpers import REPO, composed, make_paired_tree, run_cli, write_image
from pairlie.data import PairLIEDataModule
from pairlie.data.datasets import ExposurePairDataset
from pairlie.data.scenes import discover_test_images
from pairlie.deploy.export import check_request, export, verify
from pairlie.errors import ConfigError, DataError, VerificationError
from pairlie.evaluate.scoring import evaluate
from pairlie.infer.enhancer import Enhancer
from pairlie.infer.folders import check_output, collect_inputs, enhance_files
from pairlie.infer.precision import FLAGS_VARIABLE
from pairlie.io import files
from pairlie.io.images import DEFAULT_MAX_PIXELS, check_jpeg_quality, image_size, read_rgb, to_tensor
from pairlie.model.nets import PairLIENet
from pairlie.train.sweep import RESULT_FILE, SweepSummary

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def one_line_error(result, *parts: str) -> str:
    """The CLI's stderr, checked to be one ``error:`` line holding every part, without a traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for part in parts:
        assert part in lines[0]
    return lines[0]


def within(seconds: float, fn, *args):
    """``fn(*args)`` in a thread; fails instead of hanging the suite when it blocks (a FIFO opened for reading)."""
    outcome: list = []

    def call():
        try:
            outcome.append(("value", fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(("raised", exc))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"{fn.__name__} blocked for {seconds} s"
    return outcome[0]


class FullDisk:
    """A file handle whose writes fail as on a full disk; no ``fileno``, so Pillow writes through it."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        raise ENOSPC

    def fileno(self):
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def fill_disk_after(monkeypatch, files_written: int) -> None:
    """Writes through :func:`pairlie.io.files.atomic_open` succeed ``files_written`` times, then fail with ENOSPC."""
    real, opened = os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        opened.append(fd)
        fh = real(fd, *args, **kwargs)
        return fh if len(opened) <= files_written else FullDisk(fh)

    monkeypatch.setattr(files.os, "fdopen", fdopen)


def read_only(monkeypatch) -> None:
    """Every new file fails as in a read-only file system (what chmod cannot show a root user)."""

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(files.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".part"))


@pytest.fixture
def enhancer(sharp_net):
    return Enhancer(sharp_net, gamma=0.3, device="cpu")


# --- 1. a FIFO named like an image ---------------------------------------------------------------


def test_a_fifo_named_like_an_image_is_skipped_unopened(tmp_path):
    src = tmp_path / "photos"
    write_image(src / "a.png")
    os.mkfifo(src / "pipe.png")
    inputs = within(10, collect_inputs, src)[1]
    assert [rel.name for _, rel in inputs.items] == ["a.png"]
    assert [(p.name, reason) for p, reason in inputs.skipped] == [("pipe.png", "not a regular file")]
    kind, exc = within(10, read_rgb, src / "pipe.png")
    assert kind == "raised" and isinstance(exc, DataError) and "pipe.png: not a regular file" in str(exc)
    with pytest.raises(DataError, match="not a regular file"):
        collect_inputs(src / "pipe.png")
    # test sets and training scenes pass over it too
    os.mkfifo(tmp_path / "photos" / "pipe2.jpg")
    assert [low.name for low, _ in within(10, discover_test_images, src)[1]] == ["a.png"]


def test_pairlie_enhance_skips_a_fifo_and_enhances_the_rest(tmp_path, tiny_ckpt):
    src = tmp_path / "photos"
    write_image(src / "a.png")
    os.mkfifo(src / "pipe.png")
    result = run_cli(
        "pairlie-enhance",
        f"ckpt_path={tiny_ckpt}",
        f"input={src}",
        f"output={tmp_path / 'out'}",
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"skipped: {src / 'pipe.png'}: not a regular file" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


# --- 2. outputs that cannot be written -----------------------------------------------------------


def test_pairlie_enhance_refuses_a_file_or_a_path_under_one_as_output(tmp_path, tiny_ckpt):
    src = tmp_path / "photos"
    write_image(src / "a.png")
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    for output, said in ((note, f"output={note}: {note} is a file, not a folder"), (note / "sub", "is a file")):
        result = run_cli("pairlie-enhance", f"ckpt_path={tiny_ckpt}", f"input={src}", f"output={output}", cwd=tmp_path)
        one_line_error(result, said)
    assert note.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "photos", "tiny.ckpt"]


def test_a_read_only_output_is_refused_before_any_work_and_nothing_is_made(tmp_path, monkeypatch):
    src = tmp_path / "photos"
    write_image(src / "a.png")
    items = collect_inputs(src).items
    read_only(monkeypatch)
    with pytest.raises(
        DataError, match=r"output=.*new/out: cannot write in .* \(Read-only file system\); .*write elsewhere"
    ):
        check_output(src, tmp_path / "new" / "out", items, overwrite=False)
    assert not (tmp_path / "new").exists()
    with pytest.raises(DataError, match=r"output=/proc/x/y: cannot write in /proc"):
        check_output(src, Path("/proc/x/y"), items, overwrite=False)


def test_a_full_disk_stops_the_batch_in_one_line_and_keeps_what_was_written(tmp_path, enhancer, monkeypatch):
    src = tmp_path / "photos"
    for name in ("a.png", "b.png", "c.png"):
        write_image(src / name)
    out = tmp_path / "out"
    fill_disk_after(monkeypatch, files_written=1)
    with pytest.raises(DataError) as caught:
        enhance_files(enhancer, collect_inputs(src).items, out)
    assert str(caught.value) == (
        f"output={out}: cannot write {out / 'b.png'} (No space left on device); free some space or write to "
        "another disk (1 image(s) written before it are kept)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # complete, no .part file
    assert read_rgb(out / "a.png")[0].shape == (40, 48, 3)


def test_pairlie_test_removes_what_it_wrote_when_the_disk_fills(tmp_path, tiny_ckpt, monkeypatch):
    from pairlie.cli.test import test

    data = make_paired_tree(tmp_path / "pairs")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)  # as Hydra leaves it before the task starts
    cfg = composed(
        f"ckpt_path={tiny_ckpt}",
        f"data.test_dir={data}",
        f"paths.output_dir={run}",
        "data.demo_root=null",
        "lpips=false",
        "noref=false",
        "device=cpu",
        "conv=direct",
        "tile=null",
        "keep_freed_memory=false",
        config="test",
        hydra=False,
    )
    fill_disk_after(monkeypatch, files_written=3)
    with pytest.raises(DataError, match=rf"hydra.run.dir={run}: cannot write .*No space left on device.*was removed"):
        test(cfg)
    assert sorted(p.name for p in run.iterdir()) == [".hydra"]


def test_pairlie_export_refuses_outputs_it_cannot_write_and_leaves_nothing(tmp_path, tiny_ckpt, monkeypatch):
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    with pytest.raises(DataError, match=rf"output={note}/x.onnx: {note} is a file, not a folder; write elsewhere"):
        check_request(tiny_ckpt, note / "x.onnx", "onnx", "enhanced", 17, overwrite=False)
    with pytest.raises(DataError, match=rf"output={note}: exists; pass overwrite=true"):
        check_request(tiny_ckpt, note, "onnx", "enhanced", 17, overwrite=False)
    with pytest.raises(DataError, match=r"output=/proc/x.onnx: cannot write in /proc"):
        check_request(tiny_ckpt, Path("/proc/x.onnx"), "onnx", "enhanced", 17, overwrite=False)
    with monkeypatch.context() as patch:
        read_only(patch)
        with pytest.raises(DataError, match=r"output=.*x.pt: cannot write in .*Read-only file system"):
            check_request(tiny_ckpt, tmp_path / "x.pt", "torchscript", "enhanced", 17, overwrite=False)
    # the disk fills while the verified model is written: the old file is intact, no part of the new one is left
    fill_disk_after(monkeypatch, files_written=0)
    with pytest.raises(DataError, match=rf"output={note}: cannot write {note} \(No space left.*nothing was written"):
        export(tiny_ckpt, note, fmt="torchscript", verify_on=False, overwrite=True)
    assert note.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "tiny.ckpt"]


def test_pairlie_export_to_a_path_under_a_file_is_one_line(tmp_path, tiny_ckpt):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("pairlie-export", f"ckpt_path={tiny_ckpt}", "output=notes.txt/x.onnx", cwd=tmp_path)
    one_line_error(result, "output=notes.txt/x.onnx: notes.txt is a file, not a folder")


# --- 3. pairs smaller than SSIM's window ---------------------------------------------------------


def test_pairlie_test_on_pairs_smaller_than_the_ssim_window_is_one_line_and_leaves_no_run_folder(tmp_path, tiny_ckpt):
    data = make_paired_tree(tmp_path / "pairs", names=("a.png", "b.png"), size=(10, 40))
    run = tmp_path / "logs" / "run"
    result = run_cli(
        "pairlie-test", f"ckpt_path={tiny_ckpt}", f"data.test_dir={data}", f"hydra.run.dir={run}", cwd=tmp_path
    )
    one_line_error(result, "a.png", "is 10x40, smaller than SSIM's 11x11 window", "at least 11x11 pixels")
    assert not run.exists()


def test_evaluate_refuses_a_pair_smaller_than_the_ssim_window_before_writing(tmp_path, enhancer):
    data = make_paired_tree(tmp_path / "pairs", names=("a.png", "b.png"), size=(11, 11))
    write_image(data / "high" / "b.png", (11, 10))
    pairs = discover_test_images(data)
    with pytest.raises(DataError, match=r"b.png: the pair is 11x10, smaller than SSIM's 11x11 window"):
        evaluate(enhancer, pairs, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    evaluate(enhancer, pairs[:1], tmp_path / "out", no_reference=False)  # 11x11 is scored


# --- 4. patch sizes ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 0, -3, True, 2.5, "big"])
def test_a_patch_size_the_nets_cannot_take_is_one_line(size, scene_tree):
    with pytest.raises(ConfigError, match=rf"data.patch_size={size!r}: must be an integer of at least 2"):
        PairLIEDataModule(train_dir=str(scene_tree), patch_size=size)
    with pytest.raises(ConfigError, match="data.patch_size"):
        ExposurePairDataset([], patch_size=size)
    PairLIEDataModule(train_dir=str(scene_tree), patch_size=2)


def test_pairlie_train_with_patch_size_1_is_one_line(tmp_path, scene_tree, paired_tree):
    result = run_cli(
        "pairlie-train",
        "model.width=4",
        "data.patch_size=1",
        "logger=none",
        "data.demo_root=null",
        f"data.train_dir={scene_tree}",
        f"data.val_dir={paired_tree}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    one_line_error(result, "data.patch_size=1: must be an integer of at least 2")


# --- 5. decompression bombs ----------------------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG of a few hundred bytes whose header declares ``width`` x ``height`` (its data is not all there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * (width + 1) * 4)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def test_an_image_over_max_pixels_is_refused_from_its_header(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 12000, 12000)
    assert bomb.stat().st_size < 2000
    message = f"{bomb}: 144000000 pixels is over max_pixels={DEFAULT_MAX_PIXELS}; raise max_pixels to enhance it"
    with pytest.raises(DataError) as caught:
        read_rgb(bomb)
    assert str(caught.value) == message
    with pytest.raises(DataError, match="over max_pixels=100;"):
        read_rgb(write_image(tmp_path / "small.png", (20, 10)), max_pixels=100)
    assert read_rgb(tmp_path / "small.png", max_pixels=200)[0].shape == (10, 20, 3)
    assert image_size(bomb) == (12000, 12000)  # the header alone


def test_max_pixels_replaces_pillow_s_own_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses over twice this outright
    image = write_image(tmp_path / "a.png", (30, 30))
    assert read_rgb(image, max_pixels=None)[0].shape == (30, 30, 3)
    assert read_rgb(image, max_pixels=900)[0].shape == (30, 30, 3)
    assert image_size(image) == (30, 30)
    assert Image.MAX_IMAGE_PIXELS == 100  # put back


def test_the_max_pixels_default_is_pillow_s_everywhere():
    import inspect

    assert DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS == 89478485
    for config in ("enhance", "test"):
        assert yaml.safe_load((REPO / "configs" / f"{config}.yaml").read_text())["max_pixels"] == DEFAULT_MAX_PIXELS
    for fn in (read_rgb, enhance_files, evaluate, PairLIEDataModule):
        assert inspect.signature(fn).parameters["max_pixels"].default == DEFAULT_MAX_PIXELS


def test_pairlie_enhance_lists_a_bomb_as_failed_and_enhances_the_rest(tmp_path, tiny_ckpt):
    src = tmp_path / "photos"
    write_image(src / "a.png")
    bomb = png_header_only(src / "bomb.png", 12000, 12000)
    out = tmp_path / "out"
    result = run_cli("pairlie-enhance", f"ckpt_path={tiny_ckpt}", f"input={src}", f"output={out}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "DecompressionBomb" not in result.stderr
    assert (
        f"failed: {bomb}: 144000000 pixels is over max_pixels=89478485; raise max_pixels to enhance it" in result.stderr
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]


# --- 6. integer and float TIFFs ------------------------------------------------------------------


def test_integer_and_float_tiffs_read_as_the_same_pixels_saved_as_png(tmp_path):
    rng = np.random.default_rng(0)
    pixels = (rng.random((30, 40)) * 200 + 30).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "ref.png")
    Image.fromarray(pixels.astype(np.int32)).save(tmp_path / "int32.tif")  # mode I
    Image.fromarray(pixels.astype(np.float32)).save(tmp_path / "float255.tif")  # mode F, 0-255
    Image.fromarray(pixels.astype(np.float32) / 255).save(tmp_path / "float1.tif")  # mode F, 0-1
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "deep16.tif")  # mode I;16
    Image.fromarray(pixels.astype(np.int32) * 257).save(tmp_path / "int32_16bit.tif")  # mode I, 16-bit values
    Image.fromarray(pixels.astype(np.float32) * 257).save(tmp_path / "float65535.tif")  # mode F, 0-65535
    assert {Image.open(tmp_path / f).mode for f in ("int32.tif", "float1.tif", "deep16.tif")} == {"I", "F", "I;16"}
    expected = to_tensor(read_rgb(tmp_path / "ref.png")[0])
    for name in ("int32", "float255", "float1", "deep16", "int32_16bit", "float65535"):
        got = to_tensor(read_rgb(tmp_path / f"{name}.tif")[0])
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-6), (name, float(got.mean() * 255), float(expected.mean() * 255))
    assert read_rgb(tmp_path / "int32.tif")[0].dtype == np.uint8


def test_float_tiffs_with_nan_infinity_and_hdr_values(tmp_path):
    values = np.array([[np.nan, np.inf, -5.0, 1000.0, 200000.0, 400000.0]], np.float32)
    Image.fromarray(values).save(tmp_path / "hdr.tif")
    rgb = read_rgb(tmp_path / "hdr.tif")[0]
    assert rgb.dtype == np.uint16
    assert rgb[0, :, 0].tolist() == [0, 65535, 0, round(1000 / 400000 * 65535), round(65535 / 2), 65535]


# --- 7. JPEG quality, format collisions, sweep summaries -----------------------------------------


@pytest.mark.parametrize("quality", [500, -3, 0, 101, True, 9.5, "high"])
def test_a_jpeg_quality_outside_1_to_100_is_refused(quality):
    with pytest.raises(ConfigError, match=rf"jpeg_quality={quality!r}: must be an integer from 1 to 100"):
        check_jpeg_quality(quality)


def test_pairlie_enhance_and_test_refuse_a_jpeg_quality_in_one_line(tmp_path, tiny_ckpt):
    src = tmp_path / "photos"
    write_image(src / "a.png")
    result = run_cli(
        "pairlie-enhance", f"ckpt_path={tiny_ckpt}", f"input={src}", "output=out", "jpeg_quality=500", cwd=tmp_path
    )
    one_line_error(result, "jpeg_quality=500: must be an integer from 1 to 100")
    data = make_paired_tree(tmp_path / "pairs")
    run = tmp_path / "logs" / "run"
    result = run_cli(
        "pairlie-test",
        f"ckpt_path={tiny_ckpt}",
        f"data.test_dir={data}",
        f"hydra.run.dir={run}",
        "jpeg_quality=-3",
        cwd=tmp_path,
    )
    one_line_error(result, "jpeg_quality=-3: must be an integer from 1 to 100")
    assert not (tmp_path / "out").exists() and not run.exists()


def test_a_format_collision_recommends_what_resolves_it(tmp_path):
    src = tmp_path / "photos"
    for name in ("a.gif", "a.png", "b.jpg", "b.png"):
        write_image(src / name)
    items = collect_inputs(src).items
    gif_png = [i for i in items if i[0].stem == "a"]
    jpg_png = [i for i in items if i[0].stem == "b"]
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as caught:  # format=same writes the GIF as PNG: same cannot be the fix
        check_output(src, out, gif_png, overwrite=False, fmt="same")
    assert "a.gif and a.png would both be written to" in str(caught.value)
    assert "format=same" not in str(caught.value).split(";")[1] and "rename one of them" in str(caught.value)
    with pytest.raises(ConfigError, match="; rename one of them"):
        check_output(src, out, gif_png, overwrite=False, fmt="png")
    with pytest.raises(ConfigError, match="b.jpg and b.png would both .*; use format=same to keep each file's format"):
        check_output(src, out, jpg_png, overwrite=False, fmt="png")
    check_output(src, out, jpg_png, overwrite=False, fmt="same")


def test_the_sweep_summary_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / RESULT_FILE).write_text(json.dumps({"val/psnr": 20.0}))

    def interrupted(src, dst):
        raise ENOSPC

    monkeypatch.setattr(files.os, "replace", interrupted)
    with pytest.raises(DataError, match="summary.json"):
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0"]


# --- 8. export verification on NaN ---------------------------------------------------------------


@pytest.mark.parametrize("flags", ["avx avx2 fma", "avx avx2 fma avx512f avx512_bf16"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_net_with_nan_weights_computes_nan_on_every_cpu_and_precision(monkeypatch, flags, precision):
    """The fast paths' fused ReLUs (fp32 bands on AVX2, bf16 bands) map NaN to 0: such a net takes the generic path."""
    monkeypatch.setenv(FLAGS_VARIABLE, flags)
    torch.manual_seed(0)
    net = PairLIENet(width=4).eval()
    image = torch.rand(1, 3, 40, 30)
    assert torch.isfinite(Enhancer(net, gamma=0.2, device="cpu", precision=precision).decompose(image).enhanced).all()
    with torch.no_grad():
        net.denoiser.convs()[0].weight.view(-1)[0] = float("nan")
    enhancer = Enhancer(net, gamma=0.2, device="cpu", precision=precision)
    out = enhancer.decompose(image)
    assert torch.isnan(out.denoised).any() and torch.isnan(out.enhanced).any(), enhancer
    with pytest.raises(ConfigError, match="conv=winograd: the net's weights hold NaN"):
        Enhancer(net, gamma=0.2, device="cpu", conv="winograd")
    monkeypatch.setenv(FLAGS_VARIABLE, f"{flags} avx512f avx512_vnni")  # a CPU that runs int8
    with pytest.raises(ConfigError, match="precision=int8: the net's weights hold NaN.*fp32 computes them"):
        Enhancer(net, gamma=0.2, device="cpu", precision="int8", calibration=[image[0]])


def test_export_verification_fails_on_nan_from_either_side():
    torch.manual_seed(0)
    net = PairLIENet(width=4).eval()
    image = torch.rand(1, 3, 16, 12)

    def exported_nan(array, gamma):
        return [np.full(array.shape, np.nan, np.float32)]

    with pytest.raises(VerificationError, match=r"the exported model computed NaN or infinite values \(enhanced\)"):
        verify(exported_nan, net, 0.2, "enhanced", [image])
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] = float("nan")  # pairlie itself computes NaN: so does the same net exported

    def same_net(array, gamma):
        out = Enhancer(net, gamma=gamma or 0.2, device="cpu", conv="direct").decompose(torch.from_numpy(array))
        return [out.enhanced.numpy()]

    with pytest.raises(VerificationError, match="and pairlie computed NaN or infinite values.*nothing was written"):
        verify(same_net, net, 0.2, "enhanced", [image])
