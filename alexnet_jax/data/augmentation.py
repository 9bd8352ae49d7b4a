"""What the host does to an image (PAPER.md sections 2 and 4.1): the settings and statistics,
and the tf.data ops that apply them. TensorFlow is imported only when an op is built, so sources
without it (synthetic) can use the settings.

Two ways to make a training image:
- from original files (`data.prepared=none`): decode, resize to the S x S square, subtract the
  mean image, random crop and flip, PCA lighting - all on the host, in float32;
- from prepared S x S squares (`data.prepared=S`): the host decodes only the random crop window
  of the stored JPEG (or slices the raw pixels); the uint8 crop, its offsets in the square, the
  flip and the lighting coefficients a_i go to the devices, which subtract the mean image's
  matching window, mirror the crop and add the colour shift (device_augment.py): a quarter of
  the bytes, and no float work on the host.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Everything the host does to an image; see PAPER.md section 3."""

    resize_size: int = 256            # shorter side -> this, then the central square
    crop_size: int = 224              # network input
    random_crop: bool = True
    random_flip: bool = True
    lighting_strength: float = 0.0    # std of the PCA lighting coefficients; 0 = off
    eigenvectors: np.ndarray | None = None       # (3, 3), columns
    component_scales: np.ndarray | None = None   # (3,), 0-255 scale
    mean: np.ndarray | None = None    # (resize, resize, 3) mean image, (3,) channel mean, or None
    stats_sample_size: int = 0        # training images the mean and PCA came from (0: published)
    prepared_storage: str | None = None  # images already S x S squares: jpeg, jpeg444, raw

    def decoded_square(self, image):
        """The float32 S x S square of one stored image, before the mean is subtracted."""
        import tensorflow as tf  # noqa: PLC0415

        from alexnet_jax.data import preprocess  # noqa: PLC0415

        if self.prepared_storage == "raw":
            return tf.cast(image, tf.float32)
        if self.prepared_storage in ("jpeg", "jpeg444"):
            return tf.cast(preprocess.decode(image), tf.float32)
        return preprocess.paper_square(preprocess.decode(image), self.resize_size)

    def square(self, image):
        """Decoded, resized, centre-squared, mean-subtracted float32 image."""
        import tensorflow as tf  # noqa: PLC0415

        image = self.decoded_square(image)
        return image if self.mean is None else image - tf.constant(self.mean, tf.float32)

    def train_view(self, image_bytes, seed):
        """One augmented training image (crop, flip and PCA lighting), all on the host."""
        image, alphas = self.train_view_and_lighting(image_bytes, seed)
        return self.add_lighting(image, alphas)

    def train_view_and_lighting(self, image_bytes, seed):
        """The cropped, flipped image and its PCA lighting coefficients a_i, not yet added
        (the pipeline adds them to a whole batch at once: one op instead of one per image)."""
        import tensorflow as tf  # noqa: PLC0415

        from alexnet_jax.data import preprocess  # noqa: PLC0415

        crop_seed, light_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = preprocess.random_crop_and_flip(self.square(image_bytes), self.crop_size,
                                                crop_seed, self.random_crop, self.random_flip)
        alphas = preprocess.lighting_coefficients(light_seed, self.lighting_strength)
        return image, alphas

    def prepared_train_view(self, image, seed) -> dict:
        """From a prepared square: the uint8 crop (decoding only its window of a JPEG),
        unmirrored, with its offsets (top, left), flip flag and lighting coefficients: the
        devices mirror and finish it."""
        from alexnet_jax.data import preprocess  # noqa: PLC0415

        return preprocess.prepared_crop(image, seed, self.resize_size, self.crop_size,
                                        self.random_crop, self.random_flip,
                                        self.prepared_storage, self.lighting_strength)

    def add_lighting(self, images, alphas):
        """Images (..., H, W, 3) plus their colour shifts, alphas (..., 3)."""
        from alexnet_jax.data import preprocess  # noqa: PLC0415

        if self.lighting_strength <= 0:
            return images
        return images + preprocess.lighting_offsets(alphas, self.eigenvectors,
                                                    self.component_scales)

    def eval_views(self, image_bytes, views: int):
        """(views, crop, crop, 3): the centre crop (views=1) or the paper's 10 views."""
        from alexnet_jax.data import preprocess  # noqa: PLC0415

        return preprocess.eval_views(self.square(image_bytes), self.crop_size, views)

    def mean_square(self) -> np.ndarray:
        """The subtracted mean as an S x S x 3 image (zeros when none is subtracted)."""
        shape = (self.resize_size, self.resize_size, 3)
        mean = np.zeros(shape, np.float32) if self.mean is None else self.mean
        return np.broadcast_to(np.asarray(mean, np.float32), shape).copy()

    def lighting_basis(self) -> np.ndarray:
        """(3, 3): column i is eigenvector i times its scale, so a colour shift is basis @ a
        (zeros when lighting is off)."""
        off = self.lighting_strength <= 0
        return np.zeros((3, 3), np.float32) if off else (
            np.asarray(self.eigenvectors, np.float32)
            * np.asarray(self.component_scales, np.float32)[None, :])


def eval_pixels(prep: Preprocessing, image, views: int):
    """From a prepared square: (views, crop, crop, 3) uint8 views, the mean not subtracted
    (the devices subtract `mean_views`)."""
    from alexnet_jax.data import preprocess  # noqa: PLC0415

    square = preprocess.decode(image) if prep.prepared_storage != "raw" else image
    return preprocess.eval_views(square, prep.crop_size, views)


def view_windows(size: int, crop: int, views: int) -> list[tuple[int, int, bool]]:
    """(top, left, mirrored) of each evaluation view of a size x size square, in the order of
    preprocess.eval_views: the centre (views=1), or the 4 corners, the centre, and the same 5
    mirrored (views=10)."""
    centre = (size - crop) // 2
    if views == 1:
        return [(centre, centre, False)]
    if views == 10:
        far = size - crop
        patches = [(0, 0), (0, far), (far, 0), (far, far), (centre, centre)]
        return [(top, left, mirrored) for mirrored in (False, True) for top, left in patches]
    raise ValueError(f"evaluation views must be 1 or 10, got {views}")


def crop_views(square_SxSx3: np.ndarray, crop: int, views: int) -> np.ndarray:
    """(views, crop, crop, 3): the evaluation views of one square, in NumPy."""
    patches = []
    for top, left, mirrored in view_windows(square_SxSx3.shape[0], crop, views):
        patch = square_SxSx3[top:top + crop, left:left + crop]
        patches.append(patch[:, ::-1] if mirrored else patch)
    return np.stack(patches)


def mean_views(prep: Preprocessing, views: int) -> np.ndarray:
    """(views, crop, crop, 3): the mean image's windows under the evaluation views."""
    return crop_views(prep.mean_square(), prep.crop_size, views)


def dataset_statistics(config: ml_collections.ConfigDict, source, progress: bool = True):
    """The statistics config.data needs (DatasetStats: mean image, RGB PCA), or None when it
    subtracts no mean and adds no lighting; computed on first use (cached beside the prepared
    data), or ImageNet's published ones (data.stats_source=imagenet)."""
    d = config.data
    if d.mean == "none" and d.lighting == "none":
        return None
    if d.stats_source == "dataset" and hasattr(source, "dataset_stats"):
        return source.dataset_stats(d.resize_size)  # a source that knows its own (synthetic)
    if d.stats_source == "dataset":
        from alexnet_jax.data import stats as stats_lib  # noqa: PLC0415

        return stats_lib.dataset_stats(source, d.resize_size, d.stats_sample, progress)
    from alexnet_jax.data.published_stats import published_imagenet_stats  # noqa: PLC0415

    mode = d.lighting if d.lighting != "none" else "cuda_convnet2"
    return published_imagenet_stats(d.resize_size, mode)


def preprocessing_from_stats(config: ml_collections.ConfigDict, stats,
                             prepared_storage: str | None = None) -> Preprocessing:
    """The host-side preprocessing of config.data with the given statistics (a workdir's own,
    for prediction, or a dataset's)."""
    d = config.data
    mean = {"image": stats.mean_image if stats else None,
            "channel": stats.channel_mean if stats else None, "none": None}[d.mean]
    lighting = d.lighting != "none" and d.lighting_strength > 0
    return Preprocessing(
        resize_size=d.resize_size, crop_size=d.crop_size, random_crop=d.random_crop,
        random_flip=d.random_flip, mean=None if mean is None else np.asarray(mean, np.float32),
        lighting_strength=d.lighting_strength if lighting else 0.0,
        eigenvectors=stats.eigenvectors.astype(np.float32) if lighting else None,
        component_scales=stats.lighting_scales(d.lighting).astype(np.float32)
        if lighting else None, stats_sample_size=stats.sample_size if stats else 0,
        prepared_storage=prepared_storage)


def preprocessing_from_config(config: ml_collections.ConfigDict, source,
                              progress: bool = True) -> Preprocessing:
    """The host-side preprocessing of config.data; computes the dataset statistics it needs
    on first use (cached beside the prepared data)."""
    return preprocessing_from_stats(config, dataset_statistics(config, source, progress),
                                    getattr(source, "prepared_storage", None))
