"""The end of the paper's augmentation on the devices, for batches of prepared uint8 crops:
subtract the mean image's window under each crop, mirror the crops drawn to be mirrored, and add
each image's PCA colour shift (PAPER.md section 4.1). The host sends a quarter of the bytes (uint8, not float32)
and does no float work; the devices' cost is one elementwise pass over the batch.

The result equals the host computation (float square - mean, cropped, flipped, plus the shift)
up to float32 rounding (tests/test_prepared.py).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alexnet_jax.common.sharding import sharding_for


def finish_images(pixels_BxHxWx3: jax.Array, offsets_Bx2: jax.Array, flips_B: jax.Array,
                  alphas_Bx3: jax.Array, mean_SxSx3: jax.Array,
                  lighting_basis_3x3: jax.Array) -> jax.Array:
    """float32 network inputs from unmirrored uint8 crops: (pixels - mean window), mirrored
    where flipped, + basis @ alphas. The mirror is here, not on the host: on the host a
    mirrored copy of a crop costs ten times an unmirrored one (docs/performance.md)."""
    crop = pixels_BxHxWx3.shape[1]

    def centred(pixels, offsets, flip):
        window = jax.lax.dynamic_slice(mean_SxSx3, (offsets[0], offsets[1], 0), (crop, crop, 3))
        image = pixels.astype(jnp.float32) - window
        return jnp.where(flip, image[:, ::-1], image)

    images = jax.vmap(centred)(pixels_BxHxWx3, offsets_Bx2, flips_B)
    shifts_Bx3 = alphas_Bx3 @ lighting_basis_3x3.T
    return images + shifts_Bx3[:, None, None, :]


def make_finisher(mean_SxSx3: np.ndarray, lighting_basis_3x3: np.ndarray,
                  mesh: Mesh) -> Callable[[dict], jax.Array]:
    """A jitted batch -> images function with the mean image and lighting basis held on every
    device of the mesh (replicated)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    mean = jax.device_put(np.asarray(mean_SxSx3, np.float32), replicated)
    basis = jax.device_put(np.asarray(lighting_basis_3x3, np.float32), replicated)
    batch = sharding_for(mesh, "batch").spec
    # each device finishes its own part of the batch (no gather across the mesh)
    finish = jax.jit(jax.shard_map(finish_images, mesh=mesh,
                                   in_specs=(batch,) * 4 + (PartitionSpec(),) * 2,
                                   out_specs=batch))
    return lambda batch: finish(batch["pixels"], batch["offsets"], batch["flips"],
                                batch["alphas"], mean, basis)
