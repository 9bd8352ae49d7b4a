"""Dataset statistics (mean image, RGB PCA) and the augmentations that use them."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax.data import pipeline, preprocess, sources, stats


@pytest.fixture(scope="module")
def source(image_tree, tmp_path_factory):
    return sources.open_source("folder", str(image_tree), str(tmp_path_factory.mktemp("tfds")))


def squares(source, resize):
    ds = source.builder.as_dataset("train", decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: preprocess.paper_square(preprocess.decode(ex["image"]), resize))
    return np.stack(list(tfds.as_numpy(ds))).astype(np.float64)


def test_statistics_equal_a_direct_numpy_computation(source):
    computed = stats.compute_stats(source, 24, sample_size=0, progress=False)
    images = squares(source, 24)
    assert computed.sample_size == len(images) == 43
    np.testing.assert_allclose(computed.mean_image, images.mean(axis=0), rtol=1e-5, atol=1e-3)
    covariance = np.cov(images.reshape(-1, 3).T, bias=True)
    np.testing.assert_allclose(computed.eigenvectors @ np.diag(computed.eigenvalues)
                               @ computed.eigenvectors.T, covariance, rtol=1e-6, atol=1e-3)
    assert list(computed.eigenvalues) == sorted(computed.eigenvalues, reverse=True)
    np.testing.assert_allclose(computed.eigenvectors.T @ computed.eigenvectors, np.eye(3),
                               atol=1e-9)


def test_statistics_of_a_bounded_sample_are_cached(source, monkeypatch):
    first = stats.dataset_stats(source, 24, sample_size=10, progress=False)
    path = stats.stats_path(source, 24, 10)
    assert first.sample_size == 10 and path.exists()
    with monkeypatch.context() as patched:  # the second call reads the cache, computes nothing
        patched.setattr(stats, "compute_stats", lambda *args: pytest.fail("computed again"))
        again = stats.dataset_stats(source, 24, sample_size=10, progress=False)
    np.testing.assert_array_equal(first.mean_image, again.mean_image)
    np.testing.assert_array_equal(first.eigenvectors, again.eigenvectors)
    everything = stats.dataset_stats(source, 24, sample_size=0, progress=False)
    assert everything.sample_size == 43
    assert not np.allclose(everything.mean_image, first.mean_image)


def test_lighting_scales_of_the_two_readings():
    s = stats.DatasetStats(np.zeros((2, 2, 3), np.float32), np.array([14400.0, 1225.0, 400.0]),
                           np.eye(3), 1)
    np.testing.assert_allclose(s.lighting_scales("cuda_convnet2"), [120.0, 35.0, 20.0])
    np.testing.assert_allclose(s.lighting_scales("eigenvalue"), [14400 / 255, 1225 / 255,
                                                                 400 / 255])


def test_published_imagenet_values():
    cuda = stats.published_imagenet_stats(8, "cuda_convnet2")
    np.testing.assert_allclose(cuda.lighting_scales("cuda_convnet2"), [121.78, 37.09, 19.72])
    np.testing.assert_allclose(cuda.eigenvectors[:, 0], [-0.564, -0.576, -0.592])
    fb = stats.published_imagenet_stats(8, "eigenvalue")
    # fb.resnet.torch: eigenvalues of the [0, 1] covariance, applied to 0-255 data (x 255)
    np.testing.assert_allclose(fb.lighting_scales("eigenvalue"),
                               np.array([0.2175, 0.0188, 0.0045]) * 255)
    np.testing.assert_allclose(fb.eigenvectors[:, 0], [-0.5675, -0.5808, -0.5836])
    assert cuda.mean_image.shape == (8, 8, 3)
    # the two publications agree on the directions
    agreement = stats.eigenvector_agreement(cuda.eigenvectors, fb.eigenvectors)
    assert agreement.min() > 0.99


def test_pca_lighting_adds_one_colour_shift_per_image():
    image = tf.random.uniform([6, 6, 3], 0, 255)
    vectors = np.linalg.qr(np.random.RandomState(0).randn(3, 3))[0].astype(np.float32)
    scales = np.array([100.0, 30.0, 10.0], np.float32)
    seed = tf.constant([4, 5], tf.int64)
    shifted = preprocess.pca_lighting(image, vectors, scales, 0.1, seed).numpy()
    offset = shifted - image.numpy()
    np.testing.assert_allclose(offset, np.broadcast_to(offset[0, 0], offset.shape), atol=1e-4)
    alphas = tf.random.stateless_normal([3], seed, stddev=0.1).numpy()
    np.testing.assert_allclose(offset[0, 0], vectors @ (alphas * scales), rtol=1e-5)
    draws = np.stack([preprocess.pca_lighting(tf.zeros([1, 1, 3]), np.eye(3, dtype=np.float32),
                                              scales, 0.1, tf.constant([1, i], tf.int64))
                      .numpy()[0, 0] for i in range(400)])
    np.testing.assert_allclose(draws.std(axis=0), 0.1 * scales, rtol=0.15)


def test_mean_image_is_cropped_and_flipped_with_the_image():
    """A training view of (image - mean) equals the same crop and flip of image minus mean."""
    rng = np.random.RandomState(0)
    mean = rng.uniform(0, 255, (12, 12, 3)).astype(np.float32)
    pixels = rng.randint(0, 255, (12, 12, 3)).astype(np.uint8)
    encoded = tf.io.encode_png(pixels)
    with_mean = pipeline.Preprocessing(resize_size=12, crop_size=8, mean=mean)
    without = pipeline.Preprocessing(resize_size=12, crop_size=8)
    seed = tf.constant([9, 9], tf.int64)
    a = with_mean.train_view(encoded, seed).numpy()
    b = without.train_view(encoded, seed).numpy()
    difference = b - a  # the mean at the crop's place, flipped like the crop
    matches = [np.allclose(difference, mean[t:t + 8, l:l + 8][:, ::f], atol=1e-3)
               for t in range(5) for l in range(5) for f in (1, -1)]
    assert sum(matches) == 1


def test_preprocessing_from_config_uses_the_dataset_statistics(source, config):
    with config.unlocked():
        config.data.stats_sample = 0
    prep = pipeline.preprocessing_from_config(config, source, progress=False)
    computed = stats.dataset_stats(source, config.data.resize_size, 0, progress=False)
    np.testing.assert_array_equal(prep.mean, computed.mean_image)
    np.testing.assert_allclose(prep.component_scales, np.sqrt(computed.eigenvalues), rtol=1e-6)
    assert prep.lighting_strength == 0.1
    with config.unlocked():
        config.data.mean, config.data.lighting = "channel", "eigenvalue"
        config.data.stats_source = "imagenet"
    prep = pipeline.preprocessing_from_config(config, source, progress=False)
    np.testing.assert_allclose(prep.mean, stats.IMAGENET_RGB_MEAN, rtol=1e-6)
    np.testing.assert_allclose(prep.component_scales,
                               np.array([0.2175, 0.0188, 0.0045]) * 255, rtol=1e-6)
    with config.unlocked():
        config.data.mean, config.data.lighting = "none", "none"
    prep = pipeline.preprocessing_from_config(config, source, progress=False)
    assert prep.mean is None and prep.lighting_strength == 0.0
