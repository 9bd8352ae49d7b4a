"""Host-side preprocessing and the tf.data pipelines."""

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax.data import pipeline, preprocess, sources


@pytest.fixture(scope="module")
def source(image_tree, tmp_path_factory):
    return sources.open_source("folder", str(image_tree), str(tmp_path_factory.mktemp("tfds")))


def test_resize_shorter_side_and_central_crop():
    image = tf.zeros([60, 90, 3], tf.uint8)
    assert preprocess.resize_shorter_side(tf.cast(image, tf.float32), 32).shape == (32, 48, 3)
    assert preprocess.paper_square(tf.zeros([90, 60, 3], tf.uint8), 32).shape == (32, 32, 3)
    ramp = tf.reshape(tf.range(6 * 8, dtype=tf.float32), [6, 8, 1]) * tf.ones([1, 1, 3])
    np.testing.assert_array_equal(preprocess.central_crop(ramp, 4)[..., 0],
                                  ramp.numpy()[1:5, 2:6, 0])


def test_ten_views_are_corners_centre_and_mirrors():
    image = tf.reshape(tf.range(8 * 8 * 3, dtype=tf.float32), [8, 8, 3])
    views = preprocess.ten_views(image, 4).numpy()
    full = image.numpy()
    expected = [full[:4, :4], full[:4, 4:], full[4:, :4], full[4:, 4:], full[2:6, 2:6]]
    for i, patch in enumerate(expected):
        np.testing.assert_array_equal(views[i], patch)
        np.testing.assert_array_equal(views[5 + i], patch[:, ::-1])


def test_random_crop_and_flip_are_seeded_and_cover_the_image():
    image = tf.reshape(tf.range(10 * 10 * 3, dtype=tf.float32), [10, 10, 3])
    seed = tf.constant([1, 2], tf.int64)
    a = preprocess.random_crop_and_flip(image, 6, seed).numpy()
    b = preprocess.random_crop_and_flip(image, 6, seed).numpy()
    np.testing.assert_array_equal(a, b)
    corners, flips = set(), set()
    for i in range(200):
        crop = preprocess.random_crop_and_flip(image, 6, tf.constant([3, i], tf.int64)).numpy()
        flipped = crop[0, 0, 0] > crop[0, -1, 0]
        top_left = crop[0, -1 if flipped else 0, 0] // 3
        corners.add(divmod(int(top_left), 10))
        flips.add(bool(flipped))
    assert corners == {(r, c) for r in range(5) for c in range(5)} and flips == {True, False}


def test_training_batches_are_deterministic_and_resumable(source):
    prep = pipeline.Preprocessing(resize_size=40, crop_size=32)
    first = list(tfds.as_numpy(pipeline.train_dataset(source, prep, 8, seed=1, epoch=0)))
    again = list(tfds.as_numpy(pipeline.train_dataset(source, prep, 8, seed=1, epoch=0)))
    resumed = list(tfds.as_numpy(pipeline.train_dataset(source, prep, 8, seed=1, epoch=0,
                                                        start_batch=2)))
    other_epoch = list(tfds.as_numpy(pipeline.train_dataset(source, prep, 8, seed=1, epoch=1)))
    assert len(first) == pipeline.train_steps_per_epoch(source, 8) == 43 // 8
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["images"], b["images"])
    assert len(resumed) == len(first) - 2
    for a, b in zip(first[2:], resumed):
        np.testing.assert_array_equal(a["images"], b["images"])
        np.testing.assert_array_equal(a["labels"], b["labels"])
    assert not np.array_equal(first[0]["labels"], other_epoch[0]["labels"]) or \
        not np.array_equal(first[0]["images"], other_epoch[0]["images"])
    assert first[0]["images"].shape == (8, 32, 32, 3) and first[0]["images"].dtype == np.float32


def test_evaluation_sees_every_image_once_with_padding(source):
    prep = pipeline.Preprocessing(resize_size=40, crop_size=32)
    batches = list(tfds.as_numpy(pipeline.eval_dataset(source, prep, 4, views=10)))
    assert len(batches) == pipeline.eval_batches_per_process(source, 4) == 4  # 15 -> 16
    masks = np.concatenate([b["mask"] for b in batches])
    assert masks.sum() == 15 and masks[-1] == 0
    labels = np.concatenate([b["labels"] for b in batches])[:15]
    assert sorted(labels.tolist()) == sorted([c for c in range(5) for _ in range(3)])
    assert batches[0]["images"].shape == (4, 10, 32, 32, 3)


def test_batches_reach_the_mesh_sharded_over_data(source):
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    prep = pipeline.Preprocessing(resize_size=40, crop_size=32)
    dataset = pipeline.train_dataset(source, prep, 8, seed=0, epoch=0)
    host = list(tfds.as_numpy(dataset))
    device = list(pipeline.to_device(tfds.as_numpy(dataset), mesh))
    assert len(device) == len(host)
    images = device[0]["images"]
    assert images.shape == (8, 32, 32, 3) and images.sharding.spec[0] == "data"
    assert {s.data.shape[0] for s in images.addressable_shards} == {2}
    np.testing.assert_array_equal(np.asarray(images), host[0]["images"])


def test_crop_and_flip_switches():
    pixels = np.random.RandomState(0).randint(0, 255, (12, 12, 3)).astype(np.uint8)
    encoded = tf.io.encode_png(pixels)
    seeds = [tf.constant([0, i], tf.int64) for i in range(20)]
    fixed = pipeline.Preprocessing(resize_size=12, crop_size=8, random_crop=False,
                                   random_flip=False)
    for seed in seeds:
        np.testing.assert_array_equal(fixed.train_view(encoded, seed), pixels[2:10, 2:10])
    flips_only = pipeline.Preprocessing(resize_size=12, crop_size=8, random_crop=False)
    views = {flips_only.train_view(encoded, seed).numpy().tobytes() for seed in seeds}
    assert views == {pixels[2:10, 2:10].astype(np.float32).tobytes(),
                     pixels[2:10, 2:10][:, ::-1].astype(np.float32).tobytes()}
