"""The ImageFolder source: preparation into tfds format, odd and corrupt images, re-preparation."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import CLASSES, file_versions, make_image_tree

from alexnet_jax.common.errors import UserError
from alexnet_jax.data import folder_builder, sources


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
    prepared_files = file_versions(first.prepared_dir)
    again = sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    assert again.prepared_dir == first.prepared_dir
    assert file_versions(first.prepared_dir) == prepared_files  # read, not prepared again
    (tree / "train" / "ant" / "000.jpg").unlink()
    changed = sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    assert changed.prepared_dir != first.prepared_dir
    assert changed.num_examples("train") == first.num_examples("train") - 1


def test_bad_trees_get_clear_errors(tmp_path):
    with pytest.raises(UserError, match="needs data.path"):
        sources.open_source("folder", "", str(tmp_path))
    with pytest.raises(UserError, match=r"data.path='.*nowhere' does not exist"):
        sources.open_source("folder", str(tmp_path / "nowhere"), str(tmp_path))
    (tmp_path / "no_train").mkdir()
    with pytest.raises(UserError, match="train/ folder"):
        sources.open_source("folder", str(tmp_path / "no_train"), str(tmp_path))
    (tmp_path / "empty" / "train").mkdir(parents=True)
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


def test_16_bit_and_float_images_are_scaled_to_8_bits_not_clipped(tmp_path):
    """A 16-bit grey PNG (mean 104/255) became all-white before: now every pixel is within one
    level of the 8-bit image it was made from; likewise 16-bit RGB PNGs, 32-bit and float."""
    import tensorflow as tf  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    rng = np.random.RandomState(0)
    grey8 = rng.randint(60, 150, (40, 50)).astype(np.uint8)      # mean about 104
    rgb8 = rng.randint(0, 256, (40, 50, 3)).astype(np.uint8)
    tree = make_image_tree(tmp_path / "tree", train_per_class=1, val_per_class=1)
    folder = tree / "train" / "ant"
    Image.fromarray(grey8.astype(np.uint16) * 257).save(folder / "grey16.png")   # mode I;16
    (folder / "rgb16.png").write_bytes(tf.io.encode_png(rgb8.astype(np.uint16) * 257).numpy())
    Image.fromarray(grey8.astype(np.int32) * 257).save(folder / "grey32.tif")    # mode I
    Image.fromarray(grey8.astype(np.float32) / 255).save(folder / "float.tif")   # mode F
    assert Image.open(folder / "grey16.png").mode == "I;16"
    source = sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    images = {ex["file_name"].decode().split("/")[-1]: ex["image"].astype(int) for ex in
              tfds.as_numpy(source.builder.as_dataset("train"))}
    for name in ("grey16.png", "grey32.tif", "float.tif"):
        assert np.abs(images[name] - grey8[..., None]).max() <= 1, name
    assert np.abs(images["rgb16.png"] - rgb8).max() <= 1


def test_a_class_without_training_images_is_refused(tmp_path):
    tree = make_image_tree(tmp_path / "tree", train_per_class=2, val_per_class=1)
    (tree / "train" / "fox").mkdir()
    (tree / "train" / "fox" / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match=r"hold no image file: .*train/fox"):
        sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    (tree / "train" / "fox" / "bad.jpg").write_bytes(b"")            # an image name, unreadable
    with pytest.raises(UserError, match=r"no image of 1 class folder.*train/fox"):
        sources.open_source("folder", str(tree), str(tmp_path / "tfds"))


def test_a_validation_class_missing_from_training_is_refused(tmp_path):
    tree = make_image_tree(tmp_path / "tree", train_per_class=2, val_per_class=1)
    (tree / "train" / "eel" / "000.jpg").rename(tree / "val" / "eel" / "extra.jpg")
    (tree / "train" / "eel" / "001.jpg").unlink()
    (tree / "train" / "eel").rmdir()
    with pytest.raises(UserError, match="val/ has 1 class\\(es\\) that train/ does not have: eel"):
        sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    # a train/ class without validation images is fine
    tree2 = make_image_tree(tmp_path / "tree2", train_per_class=2, val_per_class=1)
    for path in (tree2 / "val" / "eel").iterdir():
        path.unlink()
    (tree2 / "val" / "eel").rmdir()
    assert sources.open_source("folder", str(tree2), str(tmp_path / "tfds")).num_classes == 5


def test_skipped_files_are_reported_with_a_plain_cause(tmp_path):
    tree = make_image_tree(tmp_path / "tree", train_per_class=2, val_per_class=1)
    folder = tree / "train" / "bee"
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "readme.jpg").write_text("this is a text file, not a picture\n")
    whole = (folder / "000.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(whole[:len(whole) // 2])
    source = sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    causes = {item["path"]: item["error"] for item in source.skipped_images["train"]}
    assert causes == {"train/bee/cut.jpg": f"truncated JPEG file ({len(whole) // 2} bytes)",
                      "train/bee/empty.jpg": "empty file (0 bytes)",
                      "train/bee/readme.jpg": "not an image: the file holds text"}


def test_macos_metadata_files_are_ignored_like_ds_store_and_counted(tmp_path, caplog):
    """A Mac writes `._name.jpg` beside every file it copies to a foreign disk: not images,
    never logged as unreadable ones, left out of training and prediction, counted as skipped."""
    tree = make_image_tree(tmp_path / "tree", train_per_class=2, val_per_class=1)
    for folder in (tree / "train" / "bee", tree / "val" / "cat"):
        (folder / "._000.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)  # AppleDouble
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    source = sources.open_source("folder", str(tree), str(tmp_path / "tfds"))
    assert source.num_examples("train") == 5 * 2 and source.num_examples("val") == 5
    assert source.skipped_images == {
        "train": [{"path": "train/bee/._000.jpg", "error": folder_builder.METADATA_CAUSE}],
        "val": [{"path": "val/cat/._000.jpg", "error": folder_builder.METADATA_CAUSE}]}
    assert "._000.jpg" not in caplog.text                        # no "unreadable image" line
    from alexnet_jax.prediction.predict import image_files  # noqa: PLC0415

    assert [p.name for p in image_files([str(tree / "train" / "bee")])] == ["000.jpg",
                                                                           "001.jpg"]


def test_file_survey_reports_what_a_tree_holds(tmp_path):
    from PIL import Image  # noqa: PLC0415

    from alexnet_jax.data.file_survey import survey  # noqa: PLC0415

    for i, (w, h) in enumerate([(400, 300), (500, 375), (640, 480)]):
        Image.new("RGB", (w, h), (i, 2 * i, 3 * i)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not counted")
    result = survey(tmp_path)
    assert (result.files, result.unreadable) == (4, 1)
    assert (result.median_width, result.median_height) == (500, 375)
    sizes = [(tmp_path / f"{i}.jpg").stat().st_size for i in range(3)] + [0]
    assert result.mean_bytes == pytest.approx(sum(sizes) / 4)
    assert result.describe().startswith(f"{tmp_path}: 4 image files, median 500 x 375 pixels")
