"""A prepared folder read without TensorFlow (data.name=prepared): ArrayRecord files written by
tensorflow-datasets and read through its data source, Grain's reader with and without worker
processes; the same examples, evaluation views and statistics as the tf.data pipeline on the
same squares, training batches that are crops of the stored squares and a pure function of seed
and epoch, every read record checked, a clear refusal of a broken or TFRecord folder, and a run
where TensorFlow is not installed."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import TINY_CROP, TINY_RESIZE
from test_cli import REPO
from test_prepared import prepared_config, tensorflow_free_env, tiny_run_command

from alexnet_jax.common.errors import UserError
from alexnet_jax.data import augmentation, catalog, preprocess, stats, stats_files
from alexnet_jax.data.augmentation import preprocessing_from_config
from alexnet_jax.data.feeding import Shard
from alexnet_jax.data.prepared_folder import PreparedFolderSource
from alexnet_jax.data.published_stats import DatasetStats
from alexnet_jax.training.records.metrics_writer import read_records


def prepared(config, storage="raw", workers=0):
    """(the tfds source of the prepared squares in TFRecord files, its preprocessing, the same
    squares in ArrayRecord files read without TensorFlow)."""
    source = catalog.open_dataset(prepared_config(config, storage))
    prep = preprocessing_from_config(config, source, progress=False)  # caches the statistics
    with config.unlocked():
        config.data.file_format = "array_record"
        config.data.read_workers = workers
    folder = catalog.open_dataset(config, preparing=True)
    with config.unlocked():
        config.data.file_format = "tfrecord"
    return source, prep, folder


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_the_folder_holds_the_examples_tfds_reads(config, storage):
    source, _, folder = prepared(config, storage)
    assert isinstance(folder, PreparedFolderSource) and folder.folder.name == "1.1.0"
    assert "array_record" in folder.folder.parent.name          # kept apart from TFRecord's
    assert list(folder.folder.glob("*.array_record-*")) and not list(folder.folder.glob(
        "*.tfrecord-*"))
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
            # simplejpeg with libjpeg's fast integer IDCT: exactly tf.data's decode_jpeg
            np.testing.assert_array_equal(square, tf.io.decode_jpeg(example["image"],
                                                                    channels=3).numpy())


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_evaluation_views_and_statistics_equal_the_tfds_pipelines(config, storage):
    """Exactly, JPEG squares included: both decode them whole with the fast integer IDCT."""
    source, prep, folder = prepared(config, storage)
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
    from_tf_data = stats.dataset_stats(source, TINY_RESIZE, 0)
    computed = folder.dataset_stats(TINY_RESIZE)      # computed without TensorFlow
    np.testing.assert_allclose(computed.mean_image, from_tf_data.mean_image, rtol=1e-6)
    np.testing.assert_allclose(computed.eigenvalues, from_tf_data.eigenvalues, rtol=1e-6)
    np.testing.assert_allclose(np.abs(computed.eigenvectors),
                               np.abs(from_tf_data.eigenvectors), atol=1e-6)
    assert computed.sample_size == source.num_examples("train")
    assert (folder.folder / stats_files.stats_file_name(TINY_RESIZE, 0)).exists()


def whose_crop(batch, row, squares):
    """The index of the stored square whose window (at the row's offsets; sent unmirrored)
    the row's pixels are, and whose label it carries."""
    top, left = batch["offsets"][row]
    found = [index for index, (square, label) in enumerate(squares)
             if label == batch["labels"][row] and np.array_equal(
                 square[top:top + TINY_CROP, left:left + TINY_CROP], batch["pixels"][row])]
    assert len(found) == 1, (row, found)
    return found[0]


def epoch_of(folder, prep, epoch, start=0, shard=Shard(0, 1), seed=3):
    return list(folder.train_batches(prep, 8, seed, epoch, start, shard))


def assert_same_batches(found, expected):
    assert len(found) == len(expected)
    for mine, theirs in zip(found, expected):
        assert set(mine) == set(theirs)
        for key in mine:
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=key)


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_training_batches_are_crops_of_the_squares_and_a_function_of_seed_and_epoch(config,
                                                                                   storage):
    _, prep, folder = prepared(config, storage)
    assert prep.lighting_strength > 0
    squares = [folder.example("train", i) for i in range(folder.num_examples("train"))]
    epoch = epoch_of(folder, prep, 1)
    assert len(epoch) == len(squares) // 8
    assert set(epoch[0]) == {"pixels", "offsets", "flips", "alphas", "labels"}
    assert epoch[0]["pixels"].dtype == np.uint8 and epoch[0]["labels"].dtype == np.int32
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
    fixed = epoch_of(folder, dataclasses.replace(prep, random_crop=False, random_flip=False), 1)
    assert (fixed[0]["offsets"] == (TINY_RESIZE - TINY_CROP) // 2).all()  # the centre window
    assert not fixed[0]["flips"].any()
    assert_same_batches(epoch_of(folder, prep, 1), epoch)       # a pure function
    assert_same_batches(epoch_of(folder, prep, 1, start=2), epoch[2:])   # resumed at batch 2
    halves = [epoch_of(folder, prep, 1, shard=Shard(k, 2)) for k in (0, 1)]
    assert_same_batches([{key: np.concatenate([a[key], b[key]]) for key in a}
                         for a, b in zip(*halves)], epoch)      # two processes' parts
    next_epoch = epoch_of(folder, prep, 2)
    assert [whose_crop(batch, row, squares) for batch in next_epoch for row in range(8)] != seen
    assert epoch_of(folder, prep, 1, seed=4)[0]["offsets"].tolist() != epoch[0][
        "offsets"].tolist()


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_one_stream_serves_the_run(config):
    _, prep, folder = prepared(config, "jpeg")
    alone = epoch_of(folder, prep, 0) + epoch_of(folder, prep, 1)
    _, _, workers = prepared(config, "jpeg", workers=2)
    assert workers.workers == 2
    found = epoch_of(workers, prep, 0)
    stream = workers._stream
    found += epoch_of(workers, prep, 1)      # the next epoch: the same iterator goes on
    assert workers._stream is stream and stream.next_step == 10
    assert_same_batches(found, alone)
    assert_same_batches(epoch_of(workers, prep, 1, start=3), alone[8:])  # a new start
    workers.close()


def test_the_workers_end_with_a_killed_trainer(config, tmp_path):
    _, _, folder = prepared(config, "jpeg")
    script = f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
from alexnet_jax.data.augmentation import Preprocessing
from alexnet_jax.data.feeding import Shard
from alexnet_jax.data.prepared_folder import PreparedFolderSource
folder = PreparedFolderSource({str(folder.folder)!r}, {TINY_RESIZE}, 0, workers=2)
prep = Preprocessing(resize_size={TINY_RESIZE}, crop_size={TINY_CROP})
next(iter(folder.train_batches(prep, 8, 0, 0, 0, Shard(0, 1))))
children = os.popen(f"pgrep -P {{os.getpid()}}").read().split()
# Grain's workers (spawned), not multiprocessing's resource tracker (which ends on its own)
workers = [pid for pid in children
           if b"spawn_main" in open(f"/proc/{{pid}}/cmdline", "rb").read()]
print(" ".join(workers), flush=True)
time.sleep(600)
"""
    trainer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               text=True, cwd=tmp_path)
    children = [int(pid) for pid in trainer.stdout.readline().split()]
    assert len(children) == 2
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() and "Z" not in
                                         Path(f"/proc/{pid}/stat").read_text().split()[2]
                                         for pid in children):
        time.sleep(0.2)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
             and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
    assert not alive, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in alive]


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_a_label_or_an_image_is_refused_naming_the_file(config, tmp_path):
    """ArrayRecord's chunks carry hashes of their data: one flipped bit in a record's label or
    in its JPEG bytes is refused, never read as another label or other pixels."""
    _, _, good = prepared(config, "jpeg")
    for what in ("label", "image"):
        folder = tmp_path / what
        shutil.copytree(good.folder, folder)
        [shard] = folder.glob("*-val.array_record-*")
        data = shard.read_bytes()
        if what == "label":   # the third record's label: its "label" key, then the value
            start = [i for i in range(len(data)) if data.startswith(b"label", i)][2]
            offset = data.index(b"\x1a", start) + 4      # int64_list { value: <label> }
            assert data[offset] == good.example("val", 2)[1]   # (a label < 128: one byte)
        else:                 # a byte inside the third record's JPEG data
            offset = [i for i in range(len(data)) if data.startswith(b"\xff\xd8\xff", i)][2]
            offset += 200
        flip_bit(shard, offset)
        damaged = PreparedFolderSource(str(folder), TINY_RESIZE, 0, workers=0)
        with pytest.raises(UserError, match=rf"record \d+ of the val split in {shard} is "
                           r"damaged \(.*hash mismatch"):
            for index in range(damaged.num_examples("val")):
                damaged.example("val", index)


def test_a_folder_that_is_not_prepared_data_or_holds_tfrecord_files_is_refused(config,
                                                                               image_tree):
    source, _, folder = prepared(config)
    with pytest.raises(UserError, match="holds no prepared squares"):
        PreparedFolderSource(str(image_tree), TINY_RESIZE, 0)
    with pytest.raises(UserError, match=f"data.resize_size={TINY_RESIZE + 1}"):
        PreparedFolderSource(str(folder.folder), TINY_RESIZE + 1, 0)
    with pytest.raises(UserError, match=r"holds tfrecord files, which only tf.data "
                       r"\(TensorFlow\) reads.*--mode=prepare "
                       r"--config.data.file_format=array_record"):
        PreparedFolderSource(str(source.builder.data_dir), TINY_RESIZE, 0)
    with config.unlocked():
        config.data.file_format = "array_record"
    with pytest.raises(UserError, match="read by the TensorFlow-free reader, not by tf.data"):
        catalog.open_dataset(config)                             # training through tf.data


@pytest.mark.slow
def test_prepare_writes_array_record_and_a_run_trains_from_it_without_tensorflow(config,
                                                                                 tmp_path):
    """--mode=prepare writes the folder and names it; a machine without TensorFlow trains
    from it (statistics computed there), in Grain worker processes, with the devices
    finishing and mirroring the crops."""
    prepare = [sys.executable, "-m", "alexnet_jax.main", "--config=configs/default.py",
               "--mode=prepare", "--config.data.name=folder",
               f"--config.data.path={config.data.path}",
               f"--config.data.data_dir={config.data.data_dir}",
               f"--config.data.resize_size={TINY_RESIZE}", f"--config.data.crop_size={TINY_CROP}",
               f"--config.data.prepared={TINY_RESIZE}", "--config.data.file_format=array_record"]
    result = subprocess.run(prepare, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = Path(result.stdout.split("--config.data.path=")[-1].strip())
    assert list(folder.glob("*.array_record-*"))
    for cached in folder.glob("alexnet_stats_*"):
        cached.unlink()  # computed in the run, without TensorFlow
    env = tensorflow_free_env(tmp_path)
    workdir = tmp_path / "run"
    command = tiny_run_command(workdir, "--config.data.name=prepared",
                               f"--config.data.path={folder}", "--config.data.stats_sample=0",
                               "--config.data.read_workers=1",
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
    assert refused.returncode == 2 and "holds no prepared squares" in refused.stderr
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
    """Rewrite one record of an ArrayRecord shard with change(example) applied."""
    from array_record.python import array_record_module  # noqa: PLC0415

    reader = array_record_module.ArrayRecordReader(str(shard))
    records = [reader.read([i])[0] for i in range(reader.num_records())]
    reader.close()
    example = tf.train.Example.FromString(records[index])
    change(example)
    records[index] = example.SerializeToString()
    writer = array_record_module.ArrayRecordWriter(str(shard), "group_size:1")
    for record in records:
        writer.write(record)
    writer.close()


def test_damaged_or_incomplete_folders_are_refused_with_what_is_wrong(config, tmp_path):
    _, _, prepared_folder = prepared(config, "jpeg")
    original = prepared_folder.folder

    def copy(name):
        folder = tmp_path / name
        shutil.copytree(original, folder)
        return folder

    def refused(folder, match, resize=TINY_RESIZE):
        with pytest.raises(UserError, match=match):
            PreparedFolderSource(str(folder), resize, 0)

    folder = copy("bad_features")
    (folder / "features.json").write_text(json.dumps({"featuresDict": {}}))
    refused(folder, "metadata .* cannot be read as a prepared folder's")
    folder = copy("no_splits")
    info = json.loads((folder / "dataset_info.json").read_text())
    (folder / "dataset_info.json").write_text(json.dumps({**info, "splits": "?"}))
    refused(folder, "metadata .* cannot be read as a prepared folder's")
    folder = copy("empty_val")
    for split in info["splits"]:
        if split["name"] == "val":
            split["shardLengths"] = ["0" for _ in split["shardLengths"]]
    (folder / "dataset_info.json").write_text(json.dumps(info))
    refused(folder, "val split holds no examples")

    # a JPEG square of another size would shift every crop and misplace the mean's windows
    folder = copy("wrong_size")
    [shard] = folder.glob("*-train.array_record-*")
    other = tf.io.encode_jpeg(np.zeros((TINY_RESIZE + 4, TINY_RESIZE + 4, 3), np.uint8)).numpy()
    rewrite_record(shard, 0, lambda example: example.features.feature["image"].bytes_list
                   .value.__setitem__(0, other))
    damaged = PreparedFolderSource(str(folder), TINY_RESIZE, 0)
    with pytest.raises(UserError, match=f"is {TINY_RESIZE + 4} x {TINY_RESIZE + 4}, not the "
                                         f"folder's {TINY_RESIZE} x {TINY_RESIZE}"):
        damaged.example("train", 0)
    damaged.example("train", 1)   # the others read


def test_a_missing_file_of_the_preparation_is_called_missing(config, tmp_path):
    """Not "damaged" when a record is read, nor read around: without label.labels.txt
    tensorflow-datasets would name the classes '0', '1', ... and train on."""
    _, _, good = prepared(config, "jpeg")
    [val_shard] = good.folder.glob("*-val.array_record-*")
    for name, what in (("dataset_info.json", "the splits and their shards"),
                       ("features.json", "the features: image size and storage"),
                       ("label.labels.txt", "the class names"),
                       (val_shard.name, f"a shard of the val split, "
                                        f"{good.num_examples('val')} records")):
        folder = tmp_path / name
        shutil.copytree(good.folder, folder)
        (folder / name).unlink()
        with pytest.raises(UserError, match=re.escape(
                f"{folder} is missing {name} ({what}), which every prepared folder holds: copy "
                "the whole folder again from where it was prepared, or prepare the data again."
                )) as refused:
            PreparedFolderSource(str(folder), TINY_RESIZE, 0)
        assert "damaged" not in str(refused.value)


def test_what_does_not_belong_to_the_preparation_is_refused_naming_it(config, tmp_path,
                                                                      monkeypatch):
    _, _, good = prepared(config, "jpeg")
    [train_shard] = good.folder.glob("*-train.array_record-*")
    # what runs add belongs: the statistics caches, and the temporary file of one being
    # written while another run opens the folder
    folder = tmp_path / "with_statistics"
    shutil.copytree(good.folder, folder)
    written, replace = [], os.replace

    def replace_while_opened(source, destination):
        written.append(Path(source).name)
        assert PreparedFolderSource(str(folder), TINY_RESIZE, 0).class_names == \
            good.class_names
        replace(source, destination)

    monkeypatch.setattr(stats_files.os, "replace", replace_while_opened)
    stats = DatasetStats(np.zeros((TINY_RESIZE, TINY_RESIZE, 3), np.float32), np.ones(3),
                         np.eye(3), 1)
    stats_files.save_stats(stats, folder / stats_files.stats_file_name(TINY_RESIZE, 7))
    monkeypatch.undo()
    assert len(written) == 1 and written[0].endswith(".tmp.npz")
    assert PreparedFolderSource(str(folder), TINY_RESIZE, 0).num_examples("train") == \
        good.num_examples("train")

    strays = {  # name: (a folder?, what the refusal says it is)
        train_shard.name.replace(".array_record", ".tfrecord"): (
            False, "a TFRecord shard among the ArrayRecord ones"),
        "incomplete.5c1f0e_1.1.0": (
            True, "a leftover of an interrupted tensorflow-datasets write"),
        train_shard.name.replace("-of-00001", "-of-00002"): (
            False, "an ArrayRecord shard that no split of dataset_info.json names"),
        "notes": (True, "a folder"),
        "notes.txt": (False, "a file that is not the preparation's"),
    }
    for index, (name, (is_folder, what)) in enumerate(strays.items()):
        folder = tmp_path / f"stray_{index}"
        shutil.copytree(good.folder, folder)
        stray = folder / name
        if is_folder:
            stray.mkdir()
            (stray / train_shard.name).write_bytes(train_shard.read_bytes())
        else:
            stray.write_bytes(train_shard.read_bytes())
        with pytest.raises(UserError, match=re.escape(f"{folder} holds {name}: {what}") +
                           r".* move " + re.escape(name) + " out of the folder"):
            PreparedFolderSource(str(folder), TINY_RESIZE, 0)
    # several: the first named, the others counted
    (folder / "a.txt").write_text("")
    with pytest.raises(UserError, match=re.escape(f"{folder} holds a.txt: a file that is not "
                                                  "the preparation's. It holds 1 more that do "
                                                  "not belong (notes.txt).") + ".* move them"):
        PreparedFolderSource(str(folder), TINY_RESIZE, 0)


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


@pytest.mark.slow
def test_ctrl_c_stops_a_run_read_by_workers_cleanly_and_leaves_nothing(config, tmp_path):
    """The terminal's Ctrl-C reaches the trainer and its reading workers (one process group):
    the run saves and exits 0, no worker prints or dies first, no shared memory is left or
    reported leaked, and the same command resumes."""
    from test_resilience import wait_for_step  # noqa: PLC0415

    from alexnet_jax.data import batch_pool  # noqa: PLC0415

    _, _, folder = prepared(config, "jpeg")
    workdir = tmp_path / "run"
    command = tiny_run_command(workdir, "--config.data.name=prepared",
                               f"--config.data.path={folder.folder}",
                               "--config.data.read_workers=2", "--config.train.num_epochs=40",
                               "--config.train.eval_batch_size=10",
                               "--config.train.final_eval_views=[1]")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    run = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_step(workdir, 3, run)
        os.killpg(run.pid, signal.SIGINT)
        _, errors = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, errors[-3000:]
    assert "SIGINT received: saved a checkpoint at step" in errors
    assert "Traceback" not in errors and "leaked" not in errors, errors[-3000:]
    assert not list(batch_pool.shared_memory_dir().glob(
        f"{batch_pool.FILE_PREFIX}-{run.pid}-*"))
    stopped = int(errors.split("saved a checkpoint at step ")[1].split(";")[0])
    again = subprocess.run([*command, "--config.train.num_steps=" + str(stopped + 2)],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["start_step"] for r in read_records(workdir) if r.get("event") == "run_start"] \
        == [0, stopped]
