"""A prepared folder read without TensorFlow (data.name=prepared): the records tfds wrote, the
same examples, evaluation views and statistics as the tfds pipeline, training batches that are
crops of the stored squares and a pure function of seed and epoch, a clear refusal of a broken
folder, and a run where TensorFlow is not installed."""

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import TINY_CROP, TINY_RESIZE
from test_cli import REPO
from test_prepared import prepared_config, tensorflow_free_env, tiny_run_command

from alexnet_jax.common.errors import UserError
from alexnet_jax.data import (
    augmentation,
    catalog,
    preprocess,
    record_files,
    stats,
    stats_files,
)
from alexnet_jax.data.augmentation import preprocessing_from_config
from alexnet_jax.data.feeding import Shard
from alexnet_jax.data.prepared_folder import PreparedFolderSource
from alexnet_jax.training.metrics_writer import read_records


def prepared(config, storage="raw"):
    """(the tfds source of the prepared squares, its preprocessing, the same folder read
    without TensorFlow)."""
    source = catalog.open_dataset(prepared_config(config, storage))
    prep = preprocessing_from_config(config, source, progress=False)  # caches the statistics
    return source, prep, PreparedFolderSource(source.builder.data_dir, TINY_RESIZE, 0)


def test_examples_parse_as_tensorflow_wrote_them(tmp_path):
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x00\xffabc", b""])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label, -3, 2 ** 40])),
        "score": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, -1.25]))}))
        for label in (0, 7, 300)]
    path = tmp_path / "records.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(example.SerializeToString())
    offsets, lengths = record_files.index_records(path)
    assert len(offsets) == 3
    for offset, length, label in zip(offsets, lengths, (0, 7, 300)):
        assert record_files.parse_example(record_files.read_record(path, offset, length)) == {
            "image": [b"\x00\xffabc", b""], "label": [label, -3, 2 ** 40],
            "score": [0.5, -1.25]}


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_unpacked_lists_parse_too_and_a_cut_example_is_refused():
    """Other writers than TensorFlow may store int64 and float lists unpacked."""
    ints = b"".join(varint(1 << 3 | 0) + varint(v) for v in (5, -1, -(2 ** 63), 2 ** 63 - 1))
    floats = b"".join(varint(1 << 3 | 5) + np.float32(v).tobytes() for v in (0.25, -2.0))
    features = (field(1, field(1, b"label") + field(2, field(3, ints)))
                + field(1, field(1, b"score") + field(2, field(2, floats))))
    example = field(1, features)
    assert record_files.parse_example(example) == {
        "label": [5, -1, -(2 ** 63), 2 ** 63 - 1], "score": [0.25, -2.0]}
    with pytest.raises(ValueError, match="past the end"):
        record_files.parse_example(example[:-3])


def test_a_cut_or_foreign_record_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "records.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(b"x" * 100)
        writer.write(b"y" * 100)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="records.tfrecord ends inside record 1"):
        record_files.index_records(path)
    path.write_text("not a record file, but long enough to hold a header")
    with pytest.raises(UserError, match="not a readable TFRecord"):
        record_files.index_records(path)


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_the_folder_holds_the_examples_tfds_reads(config, storage):
    source, _, folder = prepared(config, storage)
    assert (folder.class_names, folder.eval_split) == (source.class_names, source.eval_split)
    assert folder.prepared_storage == storage and folder.prepared_size == TINY_RESIZE
    decoders = None if storage == "raw" else {"image": tfds.decode.SkipDecoding()}
    for split in ("train", "val"):
        assert folder.num_examples(split) == source.num_examples(split)
        stored = source.builder.as_dataset(split, shuffle_files=False, decoders=decoders)
        for index, example in enumerate(tfds.as_numpy(stored)):
            square, label = folder.example(split, index)
            assert label == example["label"] and square.dtype == np.uint8
            if storage == "raw":
                np.testing.assert_array_equal(square, example["image"])
                continue
            # Pillow decodes with libjpeg's accurate integer IDCT: exactly TensorFlow's with
            # that method; tf.data's default, the fast IDCT, one or two levels away on average
            accurate = tf.io.decode_jpeg(example["image"], channels=3,
                                         dct_method="INTEGER_ACCURATE").numpy()
            np.testing.assert_array_equal(square, accurate)
            fast = preprocess.decode(example["image"]).numpy().astype(np.float32)
            assert np.abs(square - fast).mean() < 3.0


def test_evaluation_views_and_statistics_equal_the_tfds_pipelines(config):
    source, prep, folder = prepared(config)
    for views in (1, 10):
        square = np.random.default_rng(views).uniform(0, 255, (TINY_RESIZE, TINY_RESIZE, 3))
        np.testing.assert_array_equal(
            augmentation.crop_views(square, TINY_CROP, views),
            preprocess.eval_views(tf.constant(square), TINY_CROP, views).numpy())
        for shard in (Shard(0, 1), Shard(0, 2), Shard(1, 2)):
            expected = list(catalog.eval_batches(source, prep, 8, views, shard))
            found = list(folder.eval_batches(prep, 8, views, shard))
            assert len(found) == len(expected) > 0
            for mine, theirs in zip(found, expected):
                assert set(mine) == set(theirs) == {"pixels", "labels", "mask"}
                for key in mine:
                    np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)
    cached = stats.dataset_stats(source, TINY_RESIZE, 0)
    np.testing.assert_array_equal(folder.dataset_stats(TINY_RESIZE).mean_image,
                                  cached.mean_image)  # the cache tfds's run wrote
    stats.stats_path(source, TINY_RESIZE, 0).unlink()
    computed = folder.dataset_stats(TINY_RESIZE)      # computed without TensorFlow
    np.testing.assert_allclose(computed.mean_image, cached.mean_image, rtol=1e-6)
    np.testing.assert_allclose(computed.eigenvalues, cached.eigenvalues, rtol=1e-6)
    np.testing.assert_allclose(np.abs(computed.eigenvectors), np.abs(cached.eigenvectors),
                               atol=1e-6)
    assert computed.sample_size == source.num_examples("train")
    assert stats.stats_path(source, TINY_RESIZE, 0).exists()


def whose_crop(batch, row, squares):
    """The index of the stored square whose window (at the row's offsets, mirrored with its
    flip) the row's pixels are, and whose label it carries."""
    top, left = batch["offsets"][row]
    found = []
    for index, (square, label) in enumerate(squares):
        window = square[top:top + TINY_CROP, left:left + TINY_CROP]
        window = window[:, ::-1] if batch["flips"][row] else window
        if label == batch["labels"][row] and np.array_equal(window, batch["pixels"][row]):
            found.append(index)
    assert len(found) == 1, (row, found)
    return found[0]


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_training_batches_are_crops_of_the_squares_and_a_function_of_seed_and_epoch(config,
                                                                                   storage):
    _, prep, folder = prepared(config, storage)
    assert prep.lighting_strength > 0
    squares = [folder.example("train", i) for i in range(folder.num_examples("train"))]
    epoch = list(folder.train_batches(prep, 8, 3, 1, 0, Shard(0, 1)))
    assert len(epoch) == len(squares) // 8
    seen = [whose_crop(batch, row, squares) for batch in epoch for row in range(8)]
    assert len(set(seen)) == len(seen)  # each image at most once an epoch
    offsets = np.concatenate([batch["offsets"] for batch in epoch])
    flips = np.concatenate([batch["flips"] for batch in epoch])
    # every window of the square, its edges included (tf's [0, S - C]), and both mirrorings
    assert offsets.min() == 0 and offsets.max() == TINY_RESIZE - TINY_CROP
    assert 0 < flips.mean() < 1
    alphas = np.concatenate([batch["alphas"] for batch in epoch])
    assert abs(alphas.mean()) < 0.05 and alphas.std() == pytest.approx(
        prep.lighting_strength, rel=0.25)  # N(0, 0.1): the paper's lighting
    fixed = next(folder.train_batches(dataclasses.replace(prep, random_crop=False,
                                                          random_flip=False), 8, 3, 1, 0,
                                      Shard(0, 1)))
    assert (fixed["offsets"] == (TINY_RESIZE - TINY_CROP) // 2).all()  # the centre window
    assert not fixed["flips"].any()
    again = list(folder.train_batches(prep, 8, 3, 1, 0, Shard(0, 1)))
    resumed = list(folder.train_batches(prep, 8, 3, 1, 2, Shard(0, 1)))
    halves = [list(folder.train_batches(prep, 8, 3, 1, 0, Shard(k, 2))) for k in (0, 1)]
    for k, batch in enumerate(epoch):
        for key in batch:
            np.testing.assert_array_equal(again[k][key], batch[key])
            if k >= 2:
                np.testing.assert_array_equal(resumed[k - 2][key], batch[key])
            np.testing.assert_array_equal(
                np.concatenate([halves[0][k][key], halves[1][k][key]]), batch[key])
    next_epoch = list(folder.train_batches(prep, 8, 3, 2, 0, Shard(0, 1)))
    assert [whose_crop(batch, row, squares) for batch in next_epoch for row in range(8)] != seen


def test_a_folder_that_is_not_prepared_data_is_refused(config, image_tree, tmp_path):
    source, _, _ = prepared(config)
    with pytest.raises(UserError, match="holds no prepared squares"):
        PreparedFolderSource(str(image_tree), TINY_RESIZE, 0)
    with pytest.raises(UserError, match=f"data.resize_size={TINY_RESIZE + 1}"):
        PreparedFolderSource(source.builder.data_dir, TINY_RESIZE + 1, 0)
    shard = next(Path(source.builder.data_dir).glob("*-val.tfrecord-*"))
    data = bytearray(shard.read_bytes())
    data[12:24] = b"\xff" * 12  # the first record's message, its header intact
    shard.write_bytes(bytes(data))
    damaged = PreparedFolderSource(source.builder.data_dir, TINY_RESIZE, 0)
    with pytest.raises(UserError, match="record 0 of the val split is not a prepared example"):
        damaged.example("val", 0)
    damaged.example("val", 1)  # the others read
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.raises(UserError, match="ends inside record"):
        PreparedFolderSource(source.builder.data_dir, TINY_RESIZE, 0)


def test_a_run_trains_from_a_prepared_folder_where_tensorflow_is_not_installed(config,
                                                                                  tmp_path):
    source, _, _ = prepared(config, "jpeg")
    folder = Path(source.builder.data_dir)
    for cached in folder.glob("alexnet_stats_*"):
        cached.unlink()  # computed in the run, without TensorFlow
    env = tensorflow_free_env(tmp_path)
    workdir = tmp_path / "run"
    command = tiny_run_command(workdir, "--config.data.name=prepared",
                               f"--config.data.path={folder}", "--config.data.stats_sample=0",
                               "--config.train.eval_batch_size=10")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = read_records(workdir)
    assert lines[0]["dataset"] == "prepared" and lines[0]["num_classes"] == 5
    assert [r["step"] for r in lines if r.get("split") == "train"] == list(range(1, 11))
    assert [(r["crops"], r["count"]) for r in lines if r.get("split") == "val"][-2:] == \
        [(1, 15), (10, 15)]
    assert (folder / "alexnet_stats_76_0.npz").exists()
    refused = subprocess.run([*command[:4], f"--workdir={tmp_path / 'refused'}",
                              "--config.data.name=prepared",
                              f"--config.data.path={tmp_path}"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "holds no prepared squares" in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_an_enlarged_folder_repeats_the_training_squares(config, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "experiments"))
    from enlarge_prepared import enlarge  # noqa: PLC0415

    _, _, folder = prepared(config, "jpeg")
    count = enlarge(folder.folder, tmp_path / "x3", 3)
    larger = PreparedFolderSource(str(tmp_path / "x3"), TINY_RESIZE, 0)
    train = folder.num_examples("train")
    assert count == larger.num_examples("train") == 3 * train
    assert larger.num_examples("val") == folder.num_examples("val")
    for index in (0, train - 1):
        for repeat in range(3):
            square, label = larger.example("train", repeat * train + index)
            expected, expected_label = folder.example("train", index)
            assert label == expected_label
            np.testing.assert_array_equal(square, expected)


def rewrite_record(shard: Path, index: int, change) -> None:
    """Rewrite one record of a shard file with change(example) applied (TensorFlow's writer)."""
    records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(shard))]
    example = tf.train.Example.FromString(records[index])
    change(example)
    records[index] = example.SerializeToString()
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in records:
            writer.write(record)


def test_damaged_or_incomplete_folders_are_refused_with_what_is_wrong(config, tmp_path):
    source, _, _ = prepared(config, "jpeg")
    original = Path(source.builder.data_dir)

    def copy(name):
        folder = tmp_path / name
        shutil.copytree(original, folder)
        return folder

    def refused(folder, match, resize=TINY_RESIZE):
        with pytest.raises(UserError, match=match):
            PreparedFolderSource(str(folder), resize, 0)

    folder = copy("no_labels")
    (folder / "label.labels.txt").unlink()
    refused(folder, "label.labels.txt could not be read")
    folder = copy("bad_features")
    (folder / "features.json").write_text(json.dumps({"featuresDict": {}}))
    refused(folder, "metadata .* lacks what a prepared folder holds")
    folder = copy("no_splits")
    info = json.loads((folder / "dataset_info.json").read_text())
    (folder / "dataset_info.json").write_text(json.dumps({**info, "splits": "?"}))
    refused(folder, "metadata .* lacks what a prepared folder holds")
    folder = copy("empty_val")
    for split in info["splits"]:
        if split["name"] == "val":
            split["shardLengths"] = ["0" for _ in split["shardLengths"]]
    (folder / "dataset_info.json").write_text(json.dumps(info))
    for shard in folder.glob("*-val.tfrecord-*"):
        shard.write_bytes(b"")
    refused(folder, "val split holds no examples")

    # a record whose field has another wire type (one bit flipped: bytes -> varint)
    folder = copy("wire_type")
    shard = sorted(folder.glob("*-val.tfrecord-*"))[0]
    data = bytearray(shard.read_bytes())
    assert data[12] == 0x0A  # the first record's message starts with field 1, bytes
    data[12] = 0x08
    shard.write_bytes(bytes(data))  # the header's checksum covers the length, not the data
    with pytest.raises(UserError, match="record 0 of the val split is not a prepared example"):
        PreparedFolderSource(str(folder), TINY_RESIZE, 0).example("val", 0)

    # a JPEG square of another size would shift every crop and misplace the mean's windows
    folder = copy("wrong_size")
    shard = sorted(folder.glob("*-train.tfrecord-*"))[0]
    other = tf.io.encode_jpeg(np.zeros((TINY_RESIZE + 4, TINY_RESIZE + 4, 3), np.uint8)).numpy()
    rewrite_record(shard, 0, lambda example: example.features.feature["image"].bytes_list
                   .value.__setitem__(0, other))
    damaged = PreparedFolderSource(str(folder), TINY_RESIZE, 0)
    with pytest.raises(UserError, match=f"is {TINY_RESIZE + 4} x {TINY_RESIZE + 4}, not the "
                                         f"folder's {TINY_RESIZE} x {TINY_RESIZE}"):
        damaged.example("train", 0)
    damaged.close()


def test_the_statistics_cache_is_shared_and_a_damaged_one_is_named(config):
    _, _, folder = prepared(config)
    for cached in folder.folder.glob("alexnet_stats_*"):
        cached.unlink()
    folder.dataset_stats(TINY_RESIZE)
    [cache] = folder.folder.glob("alexnet_stats_*")
    umask = os.umask(0o022)
    os.umask(umask)
    assert cache.stat().st_mode & 0o777 == 0o666 & ~umask  # not a temporary file's 0600
    assert not list(folder.folder.glob("*.tmp.npz"))
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.raises(UserError, match=f"{cache.name} cannot be read.*delete the file"):
        folder.dataset_stats(TINY_RESIZE)
    with pytest.raises(ValueError, match="no images"):
        stats_files.StatsSums(4).stats()


def test_the_training_images_evaluate_like_the_validation_ones(config):
    """--mode=eval --split=train on a prepared folder: every training image once, as the
    validation images are evaluated (centre crop of the stored square, no flip)."""
    _, prep, folder = prepared(config)
    train = catalog.with_eval_split(folder, "train")
    assert folder.eval_split == "val" and train.eval_split == "train"
    batches = list(train.eval_batches(prep, 8, 1, Shard(0, 1)))
    labels = np.concatenate([b["labels"][b["mask"] > 0] for b in batches])
    assert len(labels) == folder.num_examples("train")
    offset = (TINY_RESIZE - TINY_CROP) // 2
    square, label = folder.example("train", 0)
    np.testing.assert_array_equal(batches[0]["pixels"][0, 0],
                                  square[offset:offset + TINY_CROP, offset:offset + TINY_CROP])
    assert labels[0] == label
