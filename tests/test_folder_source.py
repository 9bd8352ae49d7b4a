"""The ImageFolder source: preparation into tfds format, odd and corrupt images, re-preparation."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alexnet_jax.data import folder_builder, sources
from alexnet_jax.errors import UserError
from helpers import CLASSES, make_image_tree


def test_tree_is_prepared_with_labels_from_sorted_folders(image_tree, tmp_path):
    source = sources.open_source("folder", str(image_tree), str(tmp_path))
    assert source.class_names == CLASSES
    assert source.num_examples("train") == 5 * 8 + 3  # grey, CMYK, RGBA kept; corrupt skipped
    assert source.num_examples("val") == 5 * 3
    assert (source.prepared_dir / "dataset_info.json").exists()
    examples = {ex["file_name"].decode(): ex for ex in
                tfds.as_numpy(source.builder.as_dataset("train"))}
    for name, ex in examples.items():
        assert ex["image"].ndim == 3 and ex["image"].shape[-1] == 3
        assert CLASSES[ex["label"]] == name.split("/")[1]
    grey = examples["train/ant/grey.jpg"]["image"]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 1])  # greyscale -> RGB


def test_corrupt_image_is_skipped_and_counted(image_tree, tmp_path):
    source = sources.open_source("folder", str(image_tree), str(tmp_path))
    assert [item["path"] for item in source.skipped_images["train"]] == ["train/dog/broken.jpg"]
    assert source.skipped_images["val"] == []
    recorded = json.loads((source.prepared_dir / folder_builder.SKIPPED_FILE).read_text())
    assert recorded == source.skipped_images


def test_prepared_once_and_again_when_the_tree_changes(tmp_path):
    tree = make_image_tree(tmp_path / "tree", train_per_class=2, val_per_class=1)
    first = sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    again = sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    assert again.prepared_dir == first.prepared_dir
    (tree / "train" / "ant" / "000.jpg").unlink()
    changed = sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    assert changed.prepared_dir != first.prepared_dir
    assert changed.num_examples("train") == first.num_examples("train") - 1


def test_bad_trees_get_clear_errors(tmp_path):
    with pytest.raises(UserError, match="needs data.path"):
        sources.open_source("folder", "", str(tmp_path))
    with pytest.raises(UserError, match="train/ folder"):
        sources.open_source("folder", str(tmp_path / "nowhere"), str(tmp_path))
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="no images under train/"):
        sources.open_source("folder", str(tmp_path / "empty"), str(tmp_path))
    with pytest.raises(UserError, match="not a dataset"):
        sources.open_source("mnist", "", str(tmp_path))


def test_missing_imagenet_says_how_to_provide_it(tmp_path):
    with pytest.raises(UserError) as error:
        sources.open_source("imagenet2012", "", str(tmp_path))
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
    assert str(tmp_path / "downloads" / "manual") in message
