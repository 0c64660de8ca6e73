"""The PairLIE authors' data bundle as it unpacks serves data=lol and data=sice without copying or renaming.

The bundle's layout is rebuilt from ../shared/data in a temporary folder with symbolic links:
``PairLIE-testing-dataset/LOL-test/raw|reference``, ``SICE-test/image`` (the 150 lows) and
``SICE-test/label/<seq>.JPG`` (one label per scene), ``MEF/``, and ``PairLIE-training-dataset/<n>/``
(the SICE scenes 51-229 and the LOL scenes 1-6, numbered as the authors number them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from helpers import OFFICIAL_WEIGHTS, SHARED_DATA, RunIf, composed, run_cli
from pairlie.data.scenes import discover_test_images
from pairlie.errors import DataError

pytestmark = RunIf(shared=True)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    testing, training = root / "PairLIE-testing-dataset", root / "PairLIE-training-dataset"
    (testing / "LOL-test").mkdir(parents=True)
    (testing / "LOL-test" / "raw").symlink_to(SHARED_DATA / "LOL-test" / "low")
    (testing / "LOL-test" / "reference").symlink_to(SHARED_DATA / "LOL-test" / "high")
    (testing / "MEF").symlink_to(SHARED_DATA / "unpaired" / "MEF")
    image, label = testing / "SICE-test" / "image", testing / "SICE-test" / "label"
    image.mkdir(parents=True)
    label.mkdir()
    for low in (SHARED_DATA / "SICE-test" / "low").iterdir():
        (image / low.name).symlink_to(low)
        seq = low.stem.split("_")[0]
        if not (label / f"{seq}.JPG").exists():
            (label / f"{seq}.JPG").symlink_to(SHARED_DATA / "SICE-test" / "high" / f"{seq}_1.JPG")
    training.mkdir()
    for scene in [*(SHARED_DATA / "SICE-train").iterdir(), *(SHARED_DATA / "LOL-train-subset").iterdir()]:
        (training / scene.name).symlink_to(scene)
    return root


def _datamodule(bundle: Path, preset: str, *overrides: str):
    cfg = composed(f"data={preset}", f"paths.data_dir={bundle}", "data.cache=false", *overrides, hydra=False)
    return instantiate(cfg.data)


def test_lol_test_pairs_raw_with_reference_by_equal_names(bundle):
    datamodule = _datamodule(bundle, "lol")
    datamodule.setup("test")
    pairs = datamodule.test_set.pairs
    assert len(pairs) == 15
    assert [low.name for low, _ in pairs][:4] == ["1.png", "22.png", "23.png", "55.png"]
    for low, high in pairs:
        assert (low.parent.name, high.parent.name, low.name) == ("raw", "reference", high.name)


def test_sice_test_pairs_each_low_with_its_scenes_label(bundle):
    datamodule = _datamodule(bundle, "sice")
    datamodule.setup("test")
    pairs = datamodule.test_set.pairs
    assert len(pairs) == 150 and len({high for _, high in pairs}) == 50
    assert [(low.name, high.name) for low, high in pairs[:4]] == [
        ("1_1.JPG", "1.JPG"),
        ("1_2.JPG", "1.JPG"),
        ("1_3.JPG", "1.JPG"),
        ("2_1.JPG", "2.JPG"),
    ]
    assert all(high.name == f"{low.name.split('_')[0]}.JPG" and high.parent.name == "label" for low, high in pairs)


@pytest.mark.parametrize(("preset", "scenes", "first", "last"), [("sice", 179, "51", "229"), ("lol", 6, "1", "6")])
def test_training_takes_its_own_sets_scenes_from_the_authors_one_training_folder(bundle, preset, scenes, first, last):
    datamodule = _datamodule(bundle, preset, "data.patch_size=128")
    datamodule.setup("fit")
    names = [scene.name for scene in datamodule.train_set.scenes]
    assert (len(names), names[0], names[-1]) == (scenes, first, last)
    assert all(scene.paths[0].parent.parent.name == "PairLIE-training-dataset" for scene in datamodule.train_set.scenes)
    assert len(datamodule.val_set) == 15  # LOL-test whole; SICE-test: data.val_limit=15 of 150


def test_mef_of_the_bundle_is_a_folder_of_images_without_references(bundle):
    images = discover_test_images(bundle / "MEF")
    assert len(images) == 17 and all(high is None for _, high in images)
    assert images[0][0].parent == bundle / "PairLIE-testing-dataset" / "MEF"


def test_pairlies_own_folder_comes_first_and_the_bundle_serves_the_missing_ones(bundle, tmp_path):
    (tmp_path / "LOL-test" / "low").mkdir(parents=True)
    (tmp_path / "LOL-test" / "high").mkdir()
    for name in ("1.png", "22.png"):
        (tmp_path / "LOL-test" / "low" / name).symlink_to(SHARED_DATA / "LOL-test" / "low" / name)
        (tmp_path / "LOL-test" / "high" / name).symlink_to(SHARED_DATA / "LOL-test" / "high" / name)
    for folder in ("PairLIE-testing-dataset", "PairLIE-training-dataset"):
        (tmp_path / folder).symlink_to(bundle / folder)
    datamodule = _datamodule(tmp_path, "lol", "data.patch_size=128")
    datamodule.setup("fit")
    assert [(low.parent.name, low.name) for low, _ in datamodule.val_set.pairs] == [("low", "1.png"), ("low", "22.png")]
    assert [scene.name for scene in datamodule.train_set.scenes] == ["1", "2", "3", "4", "5", "6"]
    datamodule = _datamodule(SHARED_DATA, "sice")  # pairlie's layout as before: high/<seq>_<k>.JPG
    datamodule.setup("test")
    assert len(datamodule.test_set.pairs) == 150 and datamodule.test_set.pairs[0][1].parent.name == "high"


def test_a_missing_set_says_in_one_line_where_it_was_looked_for(tmp_path):
    with pytest.raises(DataError) as info:
        _datamodule(tmp_path, "sice").setup("test")
    message = str(info.value)
    assert "\n" not in message
    assert f"data.test_dir={tmp_path / 'SICE-test'}: folder does not exist" in message
    assert f"nor the authors' bundle's {tmp_path / 'PairLIE-testing-dataset' / 'SICE-test'}" in message
    assert "set paths.data_dir (or $PAIRLIE_DATA_DIR) to the folder holding SICE-test/" in message  # data=sice typed


def test_a_bundle_folder_without_its_references_names_the_missing_sub_folder(tmp_path):
    raw = tmp_path / "PairLIE-testing-dataset" / "LOL-test" / "raw"
    raw.parent.mkdir(parents=True)
    raw.symlink_to(SHARED_DATA / "LOL-test" / "low")
    with pytest.raises(DataError, match=r"LOL-test: missing sub-folder reference/; a test folder holds low/ and high/"):
        _datamodule(tmp_path, "lol").setup("test")


def _pairlie_test(bundle: Path, run: Path, *extra: str) -> dict:
    result = run_cli(
        "pairlie-test",
        f"ckpt_path={OFFICIAL_WEIGHTS}",
        "data=sice",
        f"paths.data_dir={bundle}",
        "save_images=false",
        "noref=false",
        "lpips=false",
        f"hydra.run.dir={run}",
        *extra,
        cwd=run.parent,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((run / "metrics.json").read_text())


@RunIf(clis=("pairlie-test",), shared=True)
def test_pairlie_test_scores_sice_from_the_bundle(bundle, tmp_path):
    metrics = _pairlie_test(bundle, tmp_path / "run", "data.test_limit=6")  # all 150 counted in-process above
    assert metrics["count"] == 6
    assert metrics["test_dir"] == str((bundle / "PairLIE-testing-dataset" / "SICE-test").resolve())
    names = (tmp_path / "run" / "per_image.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in names] == ["1_1.JPG", "1_2.JPG", "1_3.JPG", "2_1.JPG", "2_2.JPG", "2_3.JPG"]
