"""Scene discovery, exposure-pair sampling, paired test sets and every bad-data message."""

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SHARED_DATA, RunIf, make_paired_tree, make_scene_tree, write_image
from pairlie.data import PairLIEDataModule, discover_pairs, discover_scenes
from pairlie.data.datasets import ExposurePairDataset
from pairlie.data.sampling import Draw
from pairlie.errors import ConfigError, DataError


def write_coordinate_scene(folder: Path, exposures=3, size=(120, 90)):
    """Exposure k has R = row, G = column, B = 60·k: a crop's R and G say where it was taken."""
    h, w = size[1], size[0]
    rows, cols = np.mgrid[0:h, 0:w]
    for k in range(exposures):
        arr = np.stack([rows, cols, np.full_like(rows, 60 * k)], axis=2).astype(np.uint8)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / f"{k}.png")


def test_scenes_are_discovered_with_any_names_in_natural_order(scene_tree):
    scenes = discover_scenes(scene_tree, patch_size=32)
    assert [s.name for s in scenes] == ["7", "51", "200"]
    assert all(len(s.paths) == 3 and s.size == (48, 40) for s in scenes)


def test_upper_case_and_mixed_extensions_are_found(tmp_path):
    write_image(tmp_path / "s" / "a.PNG")
    Image.open(write_image(tmp_path / "s" / "b.png")).convert("RGB").save(tmp_path / "s" / "c.JPG")
    (tmp_path / "s" / "notes.txt").write_text("not an image")
    assert [p.name for p in discover_scenes(tmp_path, None)[0].paths] == ["a.PNG", "b.png", "c.JPG"]


def test_both_crops_come_from_the_same_window_of_two_distinct_exposures(tmp_path):
    write_coordinate_scene(tmp_path / "train" / "scene")
    dataset = ExposurePairDataset(discover_scenes(tmp_path / "train", 32), patch_size=32)
    windows = set()
    for _ in range(40):
        im1, im2 = dataset[0]
        assert im1.shape == im2.shape == (3, 32, 32)
        torch.testing.assert_close(im1[:2], im2[:2])  # same rows and columns
        assert im1[2, 0, 0] != im2[2, 0, 0]  # different exposures
        windows.add((round(im1[0, 0, 0].item() * 255), round(im1[1, 0, 0].item() * 255)))
    assert len(windows) > 10  # the window moves


def orientation(crop: torch.Tensor) -> tuple[bool, bool, bool]:
    """(horizontal flip, vertical flip, transpose) of a crop of a coordinate scene, read off its R (row) and G (column)."""
    rows, cols = (crop[:2] * 255).round().long()
    transposed = bool(rows[0, 1] != rows[0, 0])  # the row number changes along a row
    if transposed:  # flips come first: the original rows now run along the columns
        return bool(cols[1, 0] < cols[0, 0]), bool(rows[0, 1] < rows[0, 0]), True
    return bool(cols[0, 1] < cols[0, 0]), bool(rows[1, 0] < rows[0, 0]), False


@pytest.mark.parametrize("augment", [True, False])
def test_augmentation_flips_and_transposes_both_exposures_alike(tmp_path, augment):
    write_coordinate_scene(tmp_path / "train" / "scene", size=(64, 64))
    dataset = ExposurePairDataset(discover_scenes(tmp_path / "train", 32), patch_size=32, augment=augment)
    seen = set()
    for seed in range(64):
        im1, im2 = dataset[Draw(0, seed)]
        assert orientation(im1) == orientation(im2)  # one transform for both exposures
        torch.testing.assert_close(im1[:2], im2[:2])  # and one window
        assert im1[2, 0, 0] != im2[2, 0, 0]  # of two different exposures
        seen.add(orientation(im1))
    flips = {(h, v, t) for h in (False, True) for v in (False, True) for t in (False, True)}
    assert seen == (flips if augment else {(False, False, False)})


def test_epoch_visits_every_scene_repeats_times(tmp_path):
    """One epoch over the loader visits each scene ``repeats`` times; two ranks split those visits between them."""
    for scene in range(5):  # scene s: every pixel of every exposure is (40·s, 50·k, 0)
        for k in range(2):
            folder = tmp_path / "train" / f"s{scene}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 36), (40 * scene, 50 * k, 0)).save(folder / f"{k}.png")
    dm = PairLIEDataModule(train_dir=str(tmp_path / "train"), patch_size=32, repeats=4, batch_size=2)
    dm.setup("fit")

    def visits(rank: int, world: int) -> Counter:
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=world)
        return Counter(round(v * 255) // 40 for im1, _ in dm.train_dataloader() for v in im1[:, 0, 0, 0].tolist())

    assert visits(0, 1) == {s: 4 for s in range(5)}
    assert visits(0, 2) + visits(1, 2) == {s: 4 for s in range(5)}


def test_whole_images_without_patch_size(scene_tree):
    im1, im2 = ExposurePairDataset(discover_scenes(scene_tree, None), patch_size=None)[0]
    assert im1.shape == (3, 40, 48)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: write_image(r / "s" / "only.png"), r"s: scene has 1 image\(s\); each scene needs at least two"),
        (lambda r: (r / "s").mkdir(parents=True), r"s: scene has 0 image"),
        (
            lambda r: (write_image(r / "s" / "a.png", (48, 40)), write_image(r / "s" / "b.png", (40, 48))),
            r"exposures differ in size \(a.png is 48x40, b.png is 40x48\)",
        ),
        (
            lambda r: (write_image(r / "s" / "a.png", (20, 40)), write_image(r / "s" / "b.png", (20, 40))),
            r"a.png: image is 20x40, smaller than data.patch_size=32",
        ),
        (
            lambda r: (write_image(r / "s" / "a.png"), (r / "s" / "b.png").write_text("not a png")),
            r"b.png: cannot read image",
        ),
        (lambda r: None, r"no scene sub-folders"),
    ],
    ids=["one-image", "empty-scene", "sizes-differ", "smaller-than-crop", "unreadable", "no-scenes"],
)
def test_bad_training_data_is_named(tmp_path, make, message):
    root = tmp_path / "train"
    root.mkdir()
    make(root)
    with pytest.raises(DataError, match=message):
        ExposurePairDataset(discover_scenes(root, 32), patch_size=32)


def test_truncated_image_is_named_when_decoded(tmp_path):
    root = tmp_path / "train"
    write_image(root / "s" / "a.png", (64, 64))
    data = write_image(root / "s" / "b.png", (64, 64)).read_bytes()
    (root / "s" / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"b.png: cannot read image"):
        ExposurePairDataset(discover_scenes(root, 32), patch_size=32)


def test_missing_folder_names_the_key(tmp_path):
    with pytest.raises(DataError, match=r"data.train_dir=.*nope: folder does not exist"):
        discover_scenes(tmp_path / "nope", 32)


def test_pairs_by_name_and_missing_partner(tmp_path):
    root = make_paired_tree(tmp_path / "val", names=("1.png", "10.png", "2.png"))
    assert [lo.name for lo, _ in discover_pairs(root)] == ["1.png", "2.png", "10.png"]
    (root / "high" / "2.png").unlink()
    with pytest.raises(DataError, match=r"2.png: no partner in .*high"):
        discover_pairs(root, "name")
    with pytest.raises(ConfigError, match="data.pairing='bogus'"):
        discover_pairs(root, "bogus")


def test_sice_pairing_maps_seq_k_to_seq(tmp_path):
    root = tmp_path / "sice"
    for k in (1, 2, 3):
        write_image(root / "low" / f"12_{k}.JPG")
    write_image(root / "high" / "12.JPG")
    pairs = discover_pairs(root, "sice")
    assert [(lo.name, hi.name) for lo, hi in pairs] == [
        ("12_1.JPG", "12.JPG"),
        ("12_2.JPG", "12.JPG"),
        ("12_3.JPG", "12.JPG"),
    ]
    assert discover_pairs(root, "auto") == pairs
    with pytest.raises(DataError, match="no partner"):
        discover_pairs(root, "name")


def test_datamodule_checks_before_training_and_serves_batches(scene_tree, paired_tree):
    dm = PairLIEDataModule(train_dir=str(scene_tree), val_dir=str(paired_tree), patch_size=32, batch_size=2)
    dm.setup("fit")
    im1, im2 = next(iter(dm.train_dataloader()))
    assert im1.shape == im2.shape == (2, 3, 32, 32) and im1.dtype == torch.float32
    batch = next(iter(dm.val_dataloader()))
    assert batch["low"].shape == (1, 3, 40, 48) and batch["high"].shape == (1, 40, 48, 3)
    assert batch["high"].dtype == torch.uint8 and batch["name"] == ["a.png"]


def test_datamodule_refuses_bad_settings():
    with pytest.raises(ConfigError, match="data.batch_size"):
        PairLIEDataModule(train_dir="x", batch_size=0)
    with pytest.raises(ConfigError, match="needs data.patch_size"):
        PairLIEDataModule(train_dir="x", batch_size=2, patch_size=None)


def test_unreadable_validation_file_is_named_at_setup(scene_tree, paired_tree):
    (paired_tree / "high" / "b.png").write_bytes(b"")
    dm = PairLIEDataModule(train_dir=str(scene_tree), val_dir=str(paired_tree), patch_size=32)
    with pytest.raises(DataError, match=r"high/b.png: cannot read image"):
        dm.setup("fit")


@RunIf(shared=True)
def test_sice_train_scenes_are_discovered_not_counted():
    root = SHARED_DATA / "SICE-train"
    scenes = discover_scenes(root, 128)
    assert len(scenes) == len([p for p in root.iterdir() if p.is_dir()])
    assert scenes[0].name == "51" and scenes[-1].name == "229"
    assert all(len(s.paths) >= 2 and s.size == (512, 512) for s in scenes)


@RunIf(shared=True)
def test_sice_test_pairs():
    pairs = discover_pairs(SHARED_DATA / "SICE-test")
    assert len(pairs) == 150 and pairs[0][0].name == "1_1.JPG"


def test_make_scene_tree_helper_is_valid(tmp_path):
    assert len(discover_scenes(make_scene_tree(tmp_path / "t"), 32)) == 3


def _draws(dm: PairLIEDataModule, rank: int, world: int, epoch: int = 0, global_seed: int = 42) -> list[tuple]:
    """(exposure 1, exposure 2, top, left) of every item ``rank`` trains on in ``epoch``, read off coordinate scenes."""
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    torch.manual_seed(global_seed)  # as seed_everything leaves every rank
    draws = []
    for im1, im2 in loader:
        for a, b in zip(im1, im2, strict=True):
            draws.append(
                tuple(
                    round(v * 255) for v in (a[2, 0, 0].item(), b[2, 0, 0].item(), a[0, 0, 0].item(), a[1, 0, 0].item())
                )
            )
    return draws


def test_random_draws_follow_seed_epoch_index_and_rank(tmp_path, monkeypatch):
    """Item 9: ranks draw different exposures/crops; a seed, an epoch and a rank fix them, whatever the workers."""
    for name in ("a", "b", "c", "d"):
        write_coordinate_scene(tmp_path / "train" / name, exposures=4)
    monkeypatch.setenv("PL_GLOBAL_SEED", "42")  # as seed_everything(42) leaves it on every rank

    def datamodule(**kwargs):
        dm = PairLIEDataModule(train_dir=str(tmp_path / "train"), patch_size=32, batch_size=2, repeats=4, **kwargs)
        dm.setup("fit")
        return dm

    dm = datamodule()
    rank0, rank1 = _draws(dm, 0, 2), _draws(dm, 1, 2)
    assert len(rank0) == len(rank1) == 8 and rank0 != rank1
    assert len({d[2:] for d in rank0 + rank1}) > 12  # crops differ between items and ranks
    assert _draws(datamodule(), 0, 2, global_seed=1) == rank0  # reproducible, whatever the global RNG
    assert _draws(datamodule(num_workers=2), 1, 2) == rank1  # workers do not change the draws
    assert _draws(dm, 0, 2, epoch=1) != rank0
    assert _draws(datamodule(seed=42), 0, 2) == rank0 and _draws(datamodule(seed=7), 0, 2) != rank0


def test_the_training_order_follows_data_seed(scene_tree):
    """Item 9: the shuffled order comes from the seed (DistributedSampler's own seed was always 0)."""

    def order(seed: int, epoch: int = 0) -> list[int]:
        dm = PairLIEDataModule(train_dir=str(scene_tree), patch_size=32, repeats=10, seed=seed)
        dm.setup("fit")
        dm.trainer = SimpleNamespace(global_rank=0, world_size=2)
        sampler = dm.train_dataloader().sampler
        sampler.set_epoch(epoch)
        return [key.index for key in sampler]

    assert order(1) == order(1) != order(2)
    assert order(1, epoch=1) != order(1)
    with pytest.raises(ConfigError, match=r"data.seed=-1: must be an integer >= 0"):
        PairLIEDataModule(train_dir="x", seed=-1)


def test_a_compiled_model_trains_without_the_short_last_batch(scene_tree):
    """Item 16: a short last batch would make torch.compile recompile (and record another CUDA graph)."""
    dm = PairLIEDataModule(train_dir=str(scene_tree), patch_size=32, batch_size=2)  # 3 scenes: batches of 2 and 1
    dm.setup("fit")
    for compile, batches in ((None, [2, 1]), ("reduce-overhead", [2])):
        module = SimpleNamespace(hparams={"compile": compile})
        dm.trainer = SimpleNamespace(global_rank=0, world_size=1, lightning_module=module)
        assert [len(im1) for im1, _ in dm.train_dataloader()] == batches
