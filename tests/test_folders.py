"""pairlie.infer.folders in this process: which files are enhanced where, what is refused, what is written."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import write_image
from pairlie.errors import ConfigError, DataError
from pairlie.infer.enhancer import Enhancer, gamma_for_brightness
from pairlie.infer.folders import check_output, collect_inputs, enhance_files, output_path
from pairlie.io.images import quantize, read_rgb, to_tensor
from pairlie.model.nets import enhance


@pytest.fixture
def enhancer(sharp_net):
    return Enhancer(sharp_net, gamma=0.3, device="cpu")


def test_a_folder_tree_is_walked_in_order_and_other_files_are_listed(tmp_path):
    src = tmp_path / "photos"
    for name in ("b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.gif", "x.jpg/e.png"):
        write_image(src / name, (8, 6))
    (src / "notes.txt").write_text("not a photo")
    (src / "sub" / "loop").symlink_to(src, target_is_directory=True)  # not followed
    found = collect_inputs(src)
    assert [rel.as_posix() for _, rel in found.items] == [
        "a.JPG",
        "b.png",
        "sub/c.webp",
        "sub/deeper/d.gif",
        "x.jpg/e.png",
    ]
    assert all(path == src / rel for path, rel in found.items)
    assert [(path.name, reason.split(" (")[0]) for path, reason in found.skipped] == [
        ("notes.txt", "not an image pairlie reads")
    ]


def test_a_single_file_and_inputs_that_hold_nothing_to_enhance(tmp_path):
    photo = write_image(tmp_path / "one.png", (8, 6))
    assert collect_inputs(photo).items == [(photo, Path("one.png"))]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes.txt: not an image pairlie reads \(png/jpg"):
        collect_inputs(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images .* in this folder or below"):
        collect_inputs(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file or folder"):
        collect_inputs(tmp_path / "missing")


@pytest.mark.parametrize(
    ("rel", "fmt", "expected"),
    [
        ("a/b.JPG", "same", "a/b.JPG"),
        ("b.gif", "same", "b.png"),  # GIF is not written: PNG
        ("b.jpg", "png", "b.png"),
        ("b.png", "jpeg", "b.jpg"),
        ("b.JPG", "jpg", "b.JPG"),  # already a JPEG: the name is kept
        ("b.png", "webp", "b.webp"),
    ],
)
def test_output_names_follow_the_format(rel, fmt, expected):
    assert output_path(Path(rel), fmt) == Path(expected)


def test_an_unknown_format_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="format='gif': must be one of same, png, jpg, jpeg, tif, webp"):
        output_path(Path("a.png"), "gif")


def test_outputs_that_would_destroy_something_are_refused(tmp_path):
    src = tmp_path / "photos"
    items = collect_inputs(write_image(src / "a.png", (8, 6)).parent).items
    with pytest.raises(ConfigError, match="is inside input"):
        check_output(src, src / "out", items, overwrite=False)
    with pytest.raises(ConfigError, match="would overwrite the input"):
        check_output(src / "a.png", src, [(src / "a.png", Path("a.png"))], overwrite=True)
    write_image(src / "a.jpg", (8, 6))
    both = collect_inputs(src).items
    with pytest.raises(ConfigError, match=r"a.jpg and a.png would both be written to .*a.png; use format=same"):
        check_output(src, tmp_path / "out", both, overwrite=False, fmt="png")
    check_output(src, tmp_path / "out", both, overwrite=False)  # formats kept: no clash, nothing there yet


def test_existing_outputs_are_kept_unless_overwrite(tmp_path):
    src = tmp_path / "photos"
    items = collect_inputs(write_image(src / "a.png", (8, 6)).parent).items
    out = tmp_path / "out"
    out.mkdir()
    (out / "gamma.csv").write_text("mine")
    with pytest.raises(ConfigError, match=r"1 file\(s\) already exist, e.g. gamma.csv; pass overwrite=true"):
        check_output(src, out, items, overwrite=False, extra=("gamma.csv",))
    check_output(src, out, items, overwrite=False)  # gamma.csv is not written without model.gamma=auto
    check_output(src, out, items, overwrite=True, extra=("gamma.csv",))


def test_each_image_is_enhanced_into_its_place_and_failures_are_returned(enhancer, tmp_path):
    src = tmp_path / "photos"
    write_image(src / "sub" / "a.png", (30, 20), scale=0.3)
    frames = [Image.fromarray(np.full((12, 10, 3), v, np.uint8)) for v in (40, 80)]
    frames[0].save(src / "b.gif", save_all=True, append_images=frames[1:])
    (src / "broken.png").write_text("not a png")
    out = tmp_path / "out"
    failures, notes = enhance_files(enhancer, collect_inputs(src).items, out)
    assert [(p.name, reason.startswith("cannot read image")) for p, reason in failures] == [("broken.png", True)]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["b.png", "sub/a.png"]
    expected = quantize(enhancer.decompose(to_tensor(read_rgb(src / "sub" / "a.png")[0])).enhanced[0])
    assert np.array_equal(read_rgb(out / "sub" / "a.png")[0], expected)
    assert [(p.name, note) for p, note in notes] == [
        ("b.gif", "first of its 2 frames/pages enhanced"),
        ("b.gif", "written as PNG (GIF is not written)"),
    ]


def test_alpha_is_carried_over_where_the_format_keeps_it(enhancer, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    rgba = np.random.default_rng(0).integers(0, 256, (12, 10, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(src / "a.png")
    items = collect_inputs(src).items
    enhance_files(enhancer, items, tmp_path / "kept")
    enhance_files(enhancer, items, tmp_path / "dropped", keep_alpha=False)
    enhance_files(enhancer, items, tmp_path / "jpg", fmt="jpg")
    kept = Image.open(tmp_path / "kept" / "a.png")
    assert kept.mode == "RGBA" and np.array_equal(np.asarray(kept)[..., 3], rgba[..., 3])
    assert Image.open(tmp_path / "dropped" / "a.png").mode == "RGB"
    assert Image.open(tmp_path / "jpg" / "a.jpg").mode == "RGB"


def test_with_a_brightness_each_image_gets_its_own_gamma(enhancer, tmp_path):
    src = tmp_path / "photos"
    write_image(src / "dark.png", (30, 20), seed=1, scale=0.1)
    write_image(src / "brighter.png", (30, 20), seed=2, scale=0.5)
    chosen = []
    enhance_files(enhancer, collect_inputs(src).items, tmp_path / "out", brightness=0.4, chosen=chosen)
    assert [rel.name for rel, _, _ in chosen] == ["brighter.png", "dark.png"]
    for rel, gamma, mean in chosen:
        parts = enhancer.decompose(to_tensor(read_rgb(src / rel)[0]))
        assert gamma == gamma_for_brightness(parts.illumination[0], parts.reflectance[0], 0.4)
        written = read_rgb(tmp_path / "out" / rel)[0]
        assert np.array_equal(written, quantize(enhance(parts.illumination[0], parts.reflectance[0], gamma)))
        assert mean == pytest.approx(written.mean() / 255)
