"""The base of this project's networks: parameters with sharding metadata, and a forward pass
that runs as one shard_map over the network's (data, model) mesh."""

from __future__ import annotations

from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax._src import core as jax_core  # trace_state_clean: no public way to ask (JAX 0.10)
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from alexnet_jax.common.sharding import sharding_for, spec_for
from alexnet_jax.model import compiler


class ShardedNetwork(nnx.Module):
    """A network whose forward pass runs as one shard_map over its mesh.

    Subclasses set `mesh`, `input_size`, `dtype`, `dropout_rate`, `cpu_conv_impl` (which
    library computes the convolutions on a CPU, model/compiler.py); implement
    `forward_on_device(images, masks)` (this device's part of the batch and of the parameters)
    and `dropout_widths()` (units of each dropout layer). Call the network with images
    (B, H, W, 3); pass `dropout_key` to train, without it it runs in evaluation mode.
    """

    def __call__(self, images_BxHxWx3: jax.Array, *, dropout_key: jax.Array | None = None,
                 dropout_masks: list[jax.Array] | None = None) -> jax.Array:
        """Logits (B, num_classes), float32, sharded over `data`; `dropout_masks` (these
        images' rows of masks `dropout_masks()` drew) instead of `dropout_key`: a micro-batch
        takes its rows of its whole batch's masks."""
        if images_BxHxWx3.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"{type(self).__name__} built for {self.input_size}x"
                             f"{self.input_size}x3 inputs, got {images_BxHxWx3.shape[1:]}")
        # Accept any input (NumPy, one device, another layout): split the batch over `data`.
        images_BxHxWx3 = jax.sharding.reshard(images_BxHxWx3, sharding_for(self.mesh, "batch"))
        graphdef, params = nnx.split(self)
        masks = (dropout_masks if dropout_masks is not None
                 else self.dropout_masks(images_BxHxWx3.shape[0], dropout_key))
        return self._forward()(graphdef, self.mesh, params, images_BxHxWx3, masks)

    def features(self, images_BxHxWx3: jax.Array) -> jax.Array:
        """The last hidden layer's activations (B, units), float32, in evaluation mode (paper
        section 6.1: the 4096-d fc7 vectors whose Euclidean neighbours look alike)."""
        images_BxHxWx3 = jax.sharding.reshard(images_BxHxWx3, sharding_for(self.mesh, "batch"))
        graphdef, params = nnx.split(self)
        return self._forward()(graphdef, self.mesh, params, images_BxHxWx3, [], True)

    def _forward(self):
        """The jitted forward pass: called eagerly, compiled with this network's options for
        its platform; inside a function being traced (a training step, the user's own jit),
        without, since JAX takes compiler options only from the outermost jit."""
        if not jax_core.trace_state_clean():
            return _sharded_forward(())
        options = compiler.compiler_options(self.cpu_conv_impl,
                                            self.mesh.devices.flat[0].platform)
        return _sharded_forward(tuple(sorted((options or {}).items())))

    def dropout_widths(self) -> tuple[int, ...]:
        return ()

    def dropout_masks(self, batch: int, key: jax.Array | None) -> list[jax.Array]:
        """Scaled keep-masks for the dropout layers, drawn for the global batch so that a given
        key gives the same masks on any mesh (inverted dropout: kept units scaled by 1/(1-p))."""
        if key is None or self.dropout_rate == 0.0 or not self.dropout_widths():
            return []
        keep = 1.0 - self.dropout_rate
        sharding = sharding_for(self.mesh, "batch_by_column")
        widths = self.dropout_widths()
        masks = []
        for layer_key, width in zip(jax.random.split(key, len(widths)), widths):
            kept = jax.random.bernoulli(layer_key, keep, (batch, width), out_sharding=sharding)
            masks.append(kept.astype(self.dtype) * jnp.asarray(1.0 / keep, self.dtype))
        return masks

    def forward_on_device(self, images: jax.Array, masks: list[jax.Array],
                          features: bool = False) -> jax.Array:
        """This device's part of the forward pass (inside shard_map): the logits, or with
        `features` this device's share of the last hidden layer's units."""
        raise NotImplementedError


def _forward_on_device(graphdef, features, params, images, masks):
    network = nnx.merge(graphdef, params)
    if features:
        return network.forward_on_device(images, masks, features=True)
    return network.forward_on_device(images, masks)


@cache
def _sharded_forward(compiler_options: tuple[tuple[str, str], ...]):
    """`_forward_over_mesh` jitted with these compiler options (one function, and so one
    compilation cache, for each set of options)."""
    return jax.jit(_forward_over_mesh, static_argnums=(0, 1, 5),
                   compiler_options=dict(compiler_options) or None)


def _forward_over_mesh(graphdef, mesh: Mesh, params, images, masks, features: bool = False):
    """The forward pass as one shard_map over the mesh (jitted, so that eager calls are fast;
    inside an outer jit it is inlined). With `features`, the last hidden layer instead of the
    logits: each device returns its columns' units."""
    param_specs = jax.tree.map(lambda v: P(*v.out_sharding), params,
                               is_leaf=lambda v: isinstance(v, nnx.Variable))
    mask_specs = [spec_for("batch_by_column")] * len(masks)
    forward = jax.shard_map(partial(_forward_on_device, graphdef, features), mesh=mesh,
                            in_specs=(param_specs, spec_for("batch"), mask_specs),
                            out_specs=spec_for("batch_by_column" if features else "batch"))
    return forward(params, images, masks)


def count_params(model_or_params) -> int:
    """Number of learned scalars (weights and biases) of a model or of its parameter tree."""
    tree = (nnx.state(model_or_params, nnx.Param) if isinstance(model_or_params, nnx.Module)
            else model_or_params)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
