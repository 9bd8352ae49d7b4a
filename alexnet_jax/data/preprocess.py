"""The paper's image preprocessing (section 2 and 4.1), as TensorFlow ops run on the host.

All functions take and return float32 HxWx3 images on the 0-255 scale unless said otherwise.
Randomness is stateless: every random op takes an explicit (2,) int seed, so a given example in
a given epoch gets the same crop, flip and lighting whatever the parallelism or a resume.
"""

from __future__ import annotations

import tensorflow as tf


def decode(image_bytes: tf.Tensor) -> tf.Tensor:
    """JPEG/PNG/GIF/BMP bytes -> uint8 HxWx3 (greyscale expanded to RGB)."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
    """Scale so that the shorter side is `size` (bilinear, antialiased when shrinking)."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_size = tf.cast(tf.round(tf.stack([height * scale, width * scale])), tf.int32)
    new_size = tf.maximum(new_size, size)  # rounding must never leave a side below `size`
    # Antialiasing matters only when shrinking; plain bilinear is the same and faster otherwise.
    # An image already at the size (a prepared square) is returned as it is.
    return tf.cond(
        tf.equal(tf.minimum(shape[0], shape[1]), size), lambda: tf.cast(image, tf.float32),
        lambda: tf.cond(scale < 1.0,
                        lambda: tf.image.resize(image, new_size, method="bilinear",
                                                antialias=True),
                        lambda: tf.image.resize(image, new_size, method="bilinear")))


def central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """The central size x size patch."""
    shape = tf.shape(image)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return tf.ensure_shape(image[top:top + size, left:left + size], [size, size, 3])


def paper_square(image_uint8: tf.Tensor, size: int) -> tf.Tensor:
    """Paper section 2: shorter side to `size`, then the central size x size patch (float32)."""
    return central_crop(resize_shorter_side(tf.cast(image_uint8, tf.float32), size), size)


def random_crop_and_flip(image: tf.Tensor, crop: int, seed: tf.Tensor, random_crop: bool = True,
                         random_flip: bool = True) -> tf.Tensor:
    """Paper augmentation 1: a random crop x crop patch and, half of the time, its mirror."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if random_crop:
        image = tf.image.stateless_random_crop(image, [crop, crop, 3], crop_seed)
    else:
        image = central_crop(image, crop)
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def lighting_coefficients(seed: tf.Tensor, strength: float) -> tf.Tensor:
    """Paper augmentation 2's random a_i ~ N(0, strength), one draw per image per use: (3,)."""
    return tf.random.stateless_normal([3], seed, stddev=strength)


def lighting_offsets(alphas: tf.Tensor, eigenvectors, component_scales) -> tf.Tensor:
    """sum_i eigvec_i * a_i * scale_i for alphas (..., 3), shaped to broadcast over (..., H, W, 3).

    `eigenvectors` (3, 3) holds the RGB covariance's eigenvectors as columns; `component_scales`
    are the components' standard deviations (cuda-convnet2) or eigenvalues (fb.resnet reading),
    on the 0-255 scale.
    """
    weighted = alphas * tf.cast(component_scales, tf.float32)
    offsets = tf.linalg.matvec(tf.cast(eigenvectors, tf.float32), weighted)
    return offsets[..., None, None, :]


def pca_lighting(image: tf.Tensor, eigenvectors, component_scales, strength: float,
                 seed: tf.Tensor) -> tf.Tensor:
    """Paper augmentation 2 on one image: add one random colour shift to every pixel."""
    alphas = lighting_coefficients(seed, strength)
    return image + lighting_offsets(alphas, eigenvectors, component_scales)


def ten_views(image: tf.Tensor, crop: int) -> tf.Tensor:
    """Paper section 4.1 test views: 4 corner + centre patches and their mirrors -> (10, c, c, 3)."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    offsets = [(0, 0), (0, width - crop), (height - crop, 0), (height - crop, width - crop),
               ((height - crop) // 2, (width - crop) // 2)]
    patches = tf.stack([image[top:top + crop, left:left + crop] for top, left in offsets])
    patches = tf.ensure_shape(patches, [5, crop, crop, 3])
    return tf.concat([patches, tf.reverse(patches, axis=[2])], axis=0)


def prepared_crop(image, seed, size: int, crop: int, random_crop: bool, random_flip: bool,
                  storage: str, lighting_strength: float) -> dict:
    """A training crop of a prepared size x size square (uint8; of a JPEG only the crop's
    window is decoded), unmirrored, with its offsets (top, left), flip flag (set half of the
    time) and lighting coefficients: what the devices need to finish and mirror it
    (device_augment.py)."""
    crop_seed, light_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offset_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(crop_seed, 2))
    if random_crop:
        offsets = tf.random.stateless_uniform([2], offset_seed, 0, size - crop + 1, tf.int32)
    else:
        offsets = tf.fill([2], (size - crop) // 2)
    if storage in ("jpeg", "jpeg444"):
        pixels = tf.image.decode_and_crop_jpeg(
            image, tf.stack([offsets[0], offsets[1], crop, crop]), channels=3)
    else:
        pixels = tf.slice(image, tf.stack([offsets[0], offsets[1], 0]), [crop, crop, 3])
    pixels = tf.ensure_shape(pixels, [crop, crop, 3])
    flip = (tf.random.stateless_uniform([], flip_seed) < 0.5 if random_flip
            else tf.constant(False))
    return {"pixels": pixels, "offsets": offsets, "flips": flip,
            "alphas": lighting_coefficients(light_seed, lighting_strength)}


def eval_views(square, crop: int, views: int):
    """(views, crop, crop, 3): the centre crop (views=1) or the paper's 10 views."""
    if views == 1:
        return central_crop(square, crop)[None]
    if views == 10:
        return ten_views(square, crop)
    raise ValueError(f"evaluation views must be 1 or 10, got {views}")
