"""Data prepared once at the paper's resolution, the pipeline on it, the augmentation finished
on the devices, and the synthetic source that runs without TensorFlow."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from helpers import TINY_CONV, TINY_CROP, TINY_FC, TINY_RESIZE, file_versions
from test_cli import REPO, tensorboard_tags

from alexnet_jax.data import augmentation, catalog, device_augment, pipeline, preprocess
from alexnet_jax.data.augmentation import preprocessing_from_config
from alexnet_jax.training import train
from alexnet_jax.training.records.metrics_writer import read_records


def prepared_config(config, storage="raw", quality=95):
    with config.unlocked():
        config.data.prepared = str(TINY_RESIZE)
        config.data.prepared_format = storage
        config.data.prepared_quality = quality
        config.data.stats_sample = 0
    return config


@pytest.mark.parametrize("storage", ["raw", "jpeg"])
def test_squares_are_prepared_once_from_the_original_images(config, storage):
    with config.unlocked():
        config.data.prepared = "none"
    original = catalog.open_dataset(config)
    source = catalog.open_dataset(prepared_config(config, storage))
    assert source.prepared_size == TINY_RESIZE and source.prepared_storage == storage
    for split in ("train", "val"):
        assert source.num_examples(split) == original.num_examples(split)
    prepared_files = file_versions(source.builder.data_dir)
    again = catalog.open_dataset(config)
    assert again.builder.data_dir == source.builder.data_dir      # not prepared twice:
    assert file_versions(source.builder.data_dir) == prepared_files  # nothing rewritten
    decoders = None if storage == "raw" else {"image": tfds.decode.SkipDecoding()}
    stored = source.builder.as_dataset("val", shuffle_files=False, decoders=decoders)
    originals = original.builder.as_dataset("val", shuffle_files=False,
                                            decoders={"image": tfds.decode.SkipDecoding()})
    stored_squares = sorted((np.asarray(preprocess.decode(ex["image"]) if storage == "jpeg"
                                        else ex["image"]).astype(np.float32).sum(), i)
                            for i, ex in enumerate(stored))
    assert len(stored_squares) == 15
    exact = [preprocess.paper_square(preprocess.decode(ex["image"]), TINY_RESIZE).numpy()
             for ex in originals]
    # every stored square is one of the originals' squares: raw exactly (rounded), JPEG close
    for ex in stored.take(3):
        image = (preprocess.decode(ex["image"]) if storage == "jpeg" else ex["image"]).numpy()
        assert image.shape == (TINY_RESIZE, TINY_RESIZE, 3) and image.dtype == np.uint8
        errors = [np.abs(image.astype(np.float32) - square).mean() for square in exact]
        assert min(errors) <= (0.26 if storage == "raw" else 3.0)
    with config.unlocked():
        config.data.prepared_quality = 80
    if storage == "jpeg":
        assert catalog.open_dataset(config).builder.data_dir != source.builder.data_dir


@pytest.mark.parametrize("storage", ["raw", "jpeg444", "jpeg"])
def test_device_augmentation_equals_the_host_computation(config, storage):
    """Exactly (to float32 rounding) for raw and full-colour JPEG. With 4:2:0 JPEG, libjpeg
    upsamples the colour at a crop window's edge without the pixels outside it, so decoding
    only the window differs from decoding the whole square on a few edge pixels."""
    source = catalog.open_dataset(prepared_config(config, storage))
    prep = preprocessing_from_config(config, source, progress=False)
    assert prep.mean is not None and prep.lighting_strength > 0
    decoders = None if storage == "raw" else {"image": tfds.decode.SkipDecoding()}
    for index, example in enumerate(source.builder.as_dataset(
            "train", shuffle_files=False, decoders=decoders).take(6)):
        seed = tf.constant([7, index], tf.int64)
        view = prep.prepared_train_view(example["image"], seed)
        top, left = view["offsets"].numpy()
        # the host's way: float square minus the mean image, cropped, mirrored, lit
        host = prep.square(example["image"]).numpy()[top:top + TINY_CROP, left:left + TINY_CROP]
        if storage == "raw":   # the crop is sent unmirrored, flipped or not: the devices mirror
            np.testing.assert_array_equal(view["pixels"].numpy(), example["image"].numpy()[
                top:top + TINY_CROP, left:left + TINY_CROP])
        if view["flips"].numpy():
            host = host[:, ::-1]
        host = prep.add_lighting(tf.constant(host), view["alphas"]).numpy()
        device = device_augment.finish_images(
            view["pixels"].numpy()[None], view["offsets"].numpy()[None],
            view["flips"].numpy()[None], view["alphas"].numpy()[None],
            prep.mean_square(), prep.lighting_basis())[0]
        difference = np.abs(np.asarray(device) - host)
        if storage == "jpeg":
            assert difference.max() <= 2.01 and (difference > 1e-3).mean() < 0.02
        else:
            np.testing.assert_allclose(np.asarray(device), host, atol=1e-3)


def batches(source, prep, epoch=0, start=0):
    return [b for b in tfds.as_numpy(pipeline.train_dataset(source, prep, 8, seed=0, epoch=epoch,
                                                            start_batch=start))]


def test_prepared_training_batches_are_deterministic_and_resume_at_any_step(config):
    source = catalog.open_dataset(prepared_config(config, "jpeg"))
    prep = preprocessing_from_config(config, source, progress=False)
    first, second = batches(source, prep), batches(source, prep)
    assert len(first) == 5
    assert set(first[0]) == {"pixels", "offsets", "flips", "alphas", "labels"}
    assert first[0]["pixels"].dtype == np.uint8 and first[0]["pixels"].shape == (8, 67, 67, 3)
    for a, b in zip(first, second):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for start in (1, 3):
        for a, b in zip(batches(source, prep, start=start), first[start:]):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    other_epoch = batches(source, prep, epoch=1)
    assert not np.array_equal(other_epoch[0]["labels"], first[0]["labels"]) or \
        not np.array_equal(other_epoch[0]["offsets"], first[0]["offsets"])


def test_ten_views_of_prepared_squares_match_the_original_files(config):
    with config.unlocked():
        config.data.prepared = "none"
    original = catalog.open_dataset(config)
    prep_original = preprocessing_from_config(config, original, progress=False)
    source = catalog.open_dataset(prepared_config(config, "raw"))
    prep = preprocessing_from_config(config, source, progress=False)
    views = lambda s, p, key: np.concatenate([b[key][b["mask"] > 0] for b in  # noqa: E731
                                              tfds.as_numpy(pipeline.eval_dataset(s, p, 8, 10))])
    from_files = views(original, prep_original, "images")
    pixels = views(source, prep, "pixels")     # uint8; the devices subtract the mean's windows
    assert pixels.dtype == np.uint8
    from_squares = pixels.astype(np.float32) - augmentation.mean_views(prep, 10)[None]
    assert from_squares.shape == from_files.shape == (15, 10, TINY_CROP, TINY_CROP, 3)
    order = lambda x: x[np.argsort(x.reshape(len(x), -1).sum(1))]  # noqa: E731 (split order)
    # the stored squares are the original squares rounded to whole levels, and so is the mean
    # image computed from them: each differs by at most half a level
    np.testing.assert_allclose(order(from_squares), order(from_files), atol=1.0 + 1e-3)


@pytest.mark.slow
def test_a_run_trains_on_prepared_squares(config, tmp_path):
    with config.unlocked():
        config.train.num_steps = 3
        config.train.final_eval_views = (1, 10)
    outcome = train.train_and_evaluate(prepared_config(config, "jpeg"), tmp_path)
    assert outcome["step"] == 3 and [e["count"] for e in outcome["eval"]] == [15, 15]
    losses = [r["loss"] for r in read_records(tmp_path) if r.get("split") == "train"]
    assert len(losses) == 3 and all(np.isfinite(losses))


# As if TensorFlow were not installed: `import tensorflow` fails and find_spec finds nothing.
# As on a machine where TensorFlow is not installed: no path finds it (blocking it through
# sys.modules would make etils, and so tensorflow-datasets, believe it loaded). The rest,
# tensorflow-datasets included (it installs and runs its data sources without TensorFlow),
# imports as usual.
BLOCK_TENSORFLOW = """
import importlib.machinery

_find_spec = importlib.machinery.PathFinder.find_spec.__func__


def _no_tensorflow(cls, name, path=None, target=None):
    if name == "tensorflow" or name.startswith("tensorflow."):
        return None
    return _find_spec(cls, name, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(_no_tensorflow)
"""


def tensorflow_free_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a process in which TensorFlow cannot be imported (2 CPU devices)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    return dict(os.environ, PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{REPO}",
                XLA_FLAGS="--xla_force_host_platform_device_count=2")


def tiny_run_command(workdir: Path, *overrides: str) -> list[str]:
    """A 2-epoch training command of the tiny network at the tiny crop, batch 8."""
    return [sys.executable, "-m", "alexnet_jax.main", "--config=configs/default.py",
            f"--workdir={workdir}", *overrides,
            f"--config.data.crop_size={TINY_CROP}", f"--config.data.resize_size={TINY_RESIZE}",
            f"--config.data.prepared={TINY_RESIZE}",
            f"--config.model.conv_widths={TINY_CONV}", f"--config.model.fc_widths={TINY_FC}",
            "--config.train.batch_size=8", "--config.train.num_epochs=2",
            "--config.train.log_every_steps=1"]


@pytest.mark.slow
def test_the_synthetic_source_trains_where_tensorflow_is_not_installed(tmp_path):
    env = tensorflow_free_env(tmp_path)
    workdir = tmp_path / "run"
    command = tiny_run_command(workdir, "--config.data.name=synthetic",
                               "--config.data.num_classes=7",
                               "--config.data.synthetic_examples=40",
                               "--config.train.eval_batch_size=8")
    blocked = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                             capture_output=True, text=True)
    assert blocked.returncode != 0 and "ModuleNotFoundError" in blocked.stderr
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = read_records(workdir)
    assert lines[0]["dataset"] == "synthetic" and lines[0]["num_classes"] == 7
    assert [r["step"] for r in lines if r.get("split") == "train"] == list(range(1, 11))
    assert [(r["crops"], r["count"]) for r in lines if r.get("split") == "val"][-2:] == \
        [(1, 4), (10, 4)]
    tags = tensorboard_tags(workdir)  # events written without TensorFlow, read with it
    assert {"train/loss", "train/data_wait_fraction", "val_1crop/top1_error"} <= tags["scalars"]
    assert "conv1_filters" in tags["images"]


def test_a_preparation_that_cannot_fit_on_the_disk_is_refused_before_it_starts(config,
                                                                                monkeypatch):
    import shutil  # noqa: PLC0415
    from collections import namedtuple  # noqa: PLC0415

    from alexnet_jax.common.errors import UserError  # noqa: PLC0415

    with config.unlocked():
        config.data.prepared = "none"
    catalog.open_dataset(config)  # the original files are prepared (they fit)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UserError, match=r"needs about 981.5 KiB, but .* has 1000 B free.*"
                                        r"prepared_format=jpeg"):
        catalog.open_dataset(prepared_config(config, "raw"))
    assert not (Path(config.data.data_dir) / "alexnet_prepared").exists()


KILLED_PREPARATION = """
import os, sys, time
sys.path.insert(0, {repo!r})
from alexnet_jax.data import folder_builder, sources
real = folder_builder.AlexnetImageFolder._generate_examples

def slow(self, split):
    for index, example in enumerate(real(self, split)):
        if index == 3:
            print("writing", flush=True)
            time.sleep(600)          # killed here, part-way through the split
        yield example

folder_builder.AlexnetImageFolder._generate_examples = slow
sources.open_source("folder", {tree!r}, {data_dir!r})
"""


def leftovers(data_dir):
    return sorted(p.name for p in Path(data_dir).rglob("incomplete.*"))


def test_a_killed_preparation_leaves_nothing_after_the_next_one(image_tree, tmp_path, caplog):
    import signal  # noqa: PLC0415

    from alexnet_jax.data import preparation, sources  # noqa: PLC0415

    data_dir = tmp_path / "tfds"
    script = KILLED_PREPARATION.format(repo=str(REPO), tree=str(image_tree),
                                       data_dir=str(data_dir))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    assert process.stdout.readline() == "writing\n"
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = leftovers(data_dir)
    assert left and all(name.startswith("incomplete.") for name in left)  # tfds's partial output

    # While another process prepares (holds the folder's lock), nothing is removed.
    dataset_dir = next(data_dir.rglob("incomplete.*")).parent / "1.1.0"
    with (dataset_dir.parent / preparation.LOCK_FILE).open("a") as handle:
        import fcntl  # noqa: PLC0415
        fcntl.flock(handle, fcntl.LOCK_EX)
        waiting = subprocess.Popen(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
             "from alexnet_jax.data import sources\n"
             f"sources.open_source('folder', {str(image_tree)!r}, {str(data_dir)!r})"],
            stderr=subprocess.PIPE, text=True)
        for line in waiting.stderr:
            if "another process is preparing" in line:
                break
        assert leftovers(data_dir) == left                    # still there: not ours to take
        fcntl.flock(handle, fcntl.LOCK_UN)
    _, rest = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, rest[-2000:]
    assert "left by an interrupted preparation" in rest
    assert leftovers(data_dir) == []
    source = sources.open_source("folder", str(image_tree), str(data_dir))
    assert source.num_examples("train") == 43 and leftovers(data_dir) == []


def test_bounded_memory_evaluation_equals_all_views_at_once_in_float(config):
    """The evaluation (uint8 views, the mean subtracted on the devices, one view at a time)
    against the formulation it replaced: float views with the mean subtracted on the host, all
    views of a batch through the network at once, the softmax averaged."""
    from alexnet_jax.model import build  # noqa: PLC0415
    from alexnet_jax.training import evaluation, steps  # noqa: PLC0415
    from alexnet_jax.training.state import build_train_state  # noqa: PLC0415

    config = prepared_config(config, "raw")
    with config.unlocked():
        config.model.init_std, config.model.positive_bias = 0.1, 0.1  # outputs follow inputs
    source = catalog.open_dataset(config)
    prep = preprocessing_from_config(config, source, progress=False)
    mesh = build.build_mesh(config)
    graphdef, params, _, _ = build_train_state(config, source.num_classes, mesh)
    from alexnet_jax.common.sharding import single_device_mesh  # noqa: PLC0415

    model = build.model_with_params(config, source.num_classes, jax.device_get(params),
                                    single_device_mesh())
    examples = tfds.as_numpy(source.builder.as_dataset(split=source.eval_split))
    want = {"top1_correct": 0, "top5_correct": 0, "loss": 0.0}
    for example in examples:
        views = prep.eval_views(example["image"], 10).numpy()        # float, mean subtracted
        logits = np.asarray(model(views), np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        mean = (probs / probs.sum(-1, keepdims=True)).mean(0)
        rank = int(np.sum(mean >= mean[example["label"]]))            # ties against the label
        want["top1_correct"] += rank <= 1
        want["top5_correct"] += rank <= 5
        want["loss"] -= np.log(mean[example["label"]])
    with jax.set_mesh(mesh):  # as a run evaluates
        got = evaluation.evaluate(steps.make_eval_step(graphdef), params, source, prep, 8, mesh,
                                  10)
    assert got["count"] == 15 and got["crops"] == 10
    assert got["top1_error"] == pytest.approx(1 - want["top1_correct"] / 15, abs=1e-9)
    assert got["top5_error"] == pytest.approx(1 - want["top5_correct"] / 15, abs=1e-9)
    assert got["loss"] == pytest.approx(want["loss"] / 15, rel=1e-4)
    assert 0 < want["top1_correct"] < 15        # a comparison that can tell answers apart
