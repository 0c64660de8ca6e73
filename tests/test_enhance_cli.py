"""pairlie-enhance on the files cameras and phones produce; never overwrites inputs."""

import numpy as np
import pytest
from PIL import Image

from helpers import RunIf, run_cli, write_image
from pairlie.infer.precision import FLAGS_VARIABLE

pytestmark = RunIf(clis=("pairlie-enhance",))


def run(args, cwd):
    return run_cli("pairlie-enhance", *args, cwd=cwd)


@pytest.fixture
def photos(tmp_path):
    """One of each awkward kind, in sub-folders, plus one broken file."""
    src = tmp_path / "photos"
    rng = np.random.default_rng(0)
    write_image(src / "plain.png", (40, 30))
    write_image(src / "sub" / "UPPER.JPG", (33, 21))
    Image.fromarray((rng.random((30, 40)) * 255).astype(np.uint8), "L").save(src / "gray.png")
    rgba = Image.fromarray((rng.random((30, 40, 4)) * 255).astype(np.uint8), "RGBA")
    rgba.save(src / "alpha.png")
    Image.fromarray((rng.random((30, 40)) * 65535).astype(np.uint16)).save(src / "deep16.png")
    Image.open(src / "plain.png").convert("P").save(src / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    Image.open(src / "plain.png").convert("RGB").save(src / "sub" / "rotated.jpg", exif=exif)
    Image.open(src / "plain.png").convert("CMYK").save(src / "cmyk.jpg")
    write_image(src / "tiny_1x1.png", (1, 1))
    write_image(src / "strip_5000x4.png", (5000, 4))
    write_image(src / "nuit_été_夜.png", (24, 18))
    (src / "broken.png").write_text("not an image")
    (src / "folder.jpg").mkdir()
    return src


@pytest.fixture
def broken(tmp_path):
    """Files that cannot be enhanced, beside one that can."""
    src = tmp_path / "broken"
    write_image(src / "good.png", (40, 30))
    (src / "zero.png").write_bytes(b"")
    png = (src / "good.png").read_bytes()
    (src / "truncated.png").write_bytes(png[: len(png) // 2])
    buffer = src / "full.jpg"
    Image.open(src / "good.png").save(buffer, quality=90)
    jpg = buffer.read_bytes()
    buffer.unlink()
    (src / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (src / "text.png").write_text("hello")
    (src / "loop.png").symlink_to(src / "loop.png")
    return src


def test_broken_files_are_listed_and_the_rest_enhanced(tmp_path, broken, tiny_ckpt):
    out = tmp_path / "out"
    result = run([f"ckpt_path={tiny_ckpt}", f"input={broken}", f"output={out}"], tmp_path)
    assert result.returncode == 1 and "enhanced 1 of 6 image(s)" in result.stdout
    for name in ("zero.png", "truncated.png", "truncated.jpg", "text.png", "loop.png"):
        assert f"{name}: cannot read image" in result.stderr, name
    assert "Traceback" not in result.stderr + result.stdout
    assert [p.name for p in out.iterdir()] == ["good.png"]


def test_every_kind_is_enhanced_and_the_broken_one_listed(tmp_path, photos, tiny_ckpt):
    out = tmp_path / "out"
    result = run([f"ckpt_path={tiny_ckpt}", f"input={photos}", f"output={out}", "tile=16"], tmp_path)
    assert result.returncode == 1  # one file failed
    assert "enhanced 11 of 12 image(s)" in result.stdout
    assert "failed:" in result.stderr and "broken.png: cannot read image" in result.stderr
    assert "Traceback" not in result.stderr
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert names == [
        "alpha.png",
        "cmyk.jpg",
        "deep16.png",
        "gray.png",
        "nuit_été_夜.png",
        "palette.png",
        "plain.png",
        "strip_5000x4.png",
        "sub/UPPER.JPG",
        "sub/rotated.jpg",
        "tiny_1x1.png",
    ]
    assert Image.open(out / "strip_5000x4.png").size == (5000, 4) and Image.open(out / "tiny_1x1.png").size == (1, 1)
    assert Image.open(out / "sub" / "rotated.jpg").size == (30, 40)  # EXIF orientation applied
    alpha = Image.open(out / "alpha.png")
    assert alpha.mode == "RGBA"
    assert np.array_equal(np.asarray(alpha)[..., 3], np.asarray(Image.open(photos / "alpha.png"))[..., 3])
    assert Image.open(out / "deep16.png").mode == "RGB" and Image.open(out / "sub" / "UPPER.JPG").format == "JPEG"
    assert Image.open(out / "cmyk.jpg").mode == "RGB"
    assert not list(out.rglob("*.part"))  # atomic writes leave no temporaries


def test_single_file_and_alpha_drop(tmp_path, photos, tiny_ckpt):
    out = tmp_path / "one"
    result = run([f"ckpt_path={tiny_ckpt}", f"input={photos / 'alpha.png'}", f"output={out}", "alpha=drop"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert Image.open(out / "alpha.png").mode == "RGB"


def test_refuses_to_write_inside_the_input_or_over_existing_files(tmp_path, photos, tiny_ckpt):
    before = {p: p.stat().st_mtime_ns for p in photos.rglob("*") if p.is_file()}
    inside = run([f"ckpt_path={tiny_ckpt}", f"input={photos}", f"output={photos / 'out'}"], tmp_path)
    assert inside.returncode == 2 and "is inside input" in inside.stderr
    same = run([f"ckpt_path={tiny_ckpt}", f"input={photos / 'plain.png'}", f"output={photos}"], tmp_path)
    assert same.returncode == 2 and "would overwrite the input" in same.stderr
    assert {p: p.stat().st_mtime_ns for p in photos.rglob("*") if p.is_file()} == before
    out = tmp_path / "out"
    out.mkdir()
    (out / "plain.png").write_text("mine")
    again = run([f"ckpt_path={tiny_ckpt}", f"input={photos / 'plain.png'}", f"output={out}"], tmp_path)
    assert again.returncode == 2 and "already exist" in again.stderr and "overwrite=true" in again.stderr
    assert (out / "plain.png").read_text() == "mine"
    forced = run(
        [f"ckpt_path={tiny_ckpt}", f"input={photos / 'plain.png'}", f"output={out}", "overwrite=true"], tmp_path
    )
    assert forced.returncode == 0 and Image.open(out / "plain.png").size == (40, 30)


def test_precision_auto_is_bf16_only_on_a_cpu_with_native_bf16(tmp_path, photos, tiny_ckpt):
    args = [f"ckpt_path={tiny_ckpt}", f"input={photos / 'plain.png'}", "model.gamma=0.3"]
    avx2 = run([*args, f"output={tmp_path / 'avx2'}"], tmp_path)  # conftest: an AVX2-only CPU
    assert avx2.returncode == 0 and "(gamma 0.3, fp32)" in avx2.stdout, avx2.stderr
    amx = run_cli(
        "pairlie-enhance", *args, f"output={tmp_path / 'amx'}", cwd=tmp_path, env={FLAGS_VARIABLE: "amx_bf16"}
    )
    assert amx.returncode == 0 and "(gamma 0.3, bf16)" in amx.stdout, amx.stderr
    exact = run([*args, f"output={tmp_path / 'exact'}", "conv=direct"], tmp_path)
    assert exact.returncode == 0 and "(gamma 0.3, fp32)" in exact.stdout, exact.stderr
    bad = run([*args, f"output={tmp_path / 'bad'}", "precision=int4"], tmp_path)
    assert bad.returncode == 2 and "error: precision='int4': must be one of" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_missing_input_is_one_line(tmp_path, tiny_ckpt):
    result = run([f"ckpt_path={tiny_ckpt}", f"input={tmp_path / 'nope'}", f"output={tmp_path / 'o'}"], tmp_path)
    assert result.returncode == 2 and "error: input=" in result.stderr and "no such file or folder" in result.stderr
