"""The paper's CIFAR-10 network (sections 3.1 and 3.3, Figure 1), as in cuda-convnet's layer file
`layers-conv-local-11pct.cfg`: four learned hidden layers - two convolutional, two locally
connected (unshared weights) - and a 10-way softmax, on 24 x 24 crops.

    conv1 5x5x64, pad 2 -> max-pool 3/2 -> LRN(9) -> conv2 5x5x64, pad 2 -> LRN(9)
    -> max-pool 3/2 -> local3 3x3x64 -> local4 3x3x32 -> fc10

Paper: with response normalisation 11% test error, without 13%; with tanh instead of ReLU, six
times slower to reach 25% training error (Figure 1). cuda-convnet normalises as
a / (1 + alpha/n * sum a^2)^beta with n = 9, alpha = 0.001, beta = 0.75 (configs/cifar10.py).
Weights are replicated on every device; the batch is split over the mesh's `data` axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from alexnet_jax.common.sharding import MODEL_AXIS, axes_for, single_device_mesh
from alexnet_jax.model import layers
from alexnet_jax.model.sharded_network import ShardedNetwork

# cuda-convnet's initial weight standard deviations (initW) of conv1, conv2, local3, local4, fc10.
CUDA_CONVNET_INIT_STDS = (1e-4, 1e-2, 4e-2, 4e-2, 1e-2)


class Dense(nnx.Module):
    """Weights of one layer of the CIFAR-10 net, replicated on every device."""

    def __init__(self, kernel_shape: tuple[int, ...], bias_shape: tuple[int, ...],
                 init_std: float, mesh: Mesh, rngs: nnx.Rngs):
        self.kernel = nnx.Param(init_std * jax.random.normal(rngs.params(), kernel_shape),
                                mesh=mesh, out_sharding=axes_for("shared_param", 0))
        self.bias = nnx.Param(jnp.zeros(bias_shape, jnp.float32), mesh=mesh,
                              out_sharding=axes_for("shared_param", 0))


class CifarConvLocal(ShardedNetwork):
    """cuda-convnet's conv-local CIFAR-10 network with the paper's ReLU/tanh and LRN switches."""

    FEATURE_LAYER = "local4 (last hidden layer)"  # what features() returns

    def __init__(self, *, num_classes: int = 10, input_size: int = 24,
                 widths: tuple[int, ...] = (64, 64, 64, 32),
                 lrn: layers.LRNParams | None = layers.LRNParams(n=9, k=1.0, alpha=1e-3,
                                                                 beta=0.75, alpha_over_n=True),
                 activation: str = "relu", init_stds: tuple[float, ...] = CUDA_CONVNET_INIT_STDS,
                 cpu_conv_impl: str = "eigen", dtype=jnp.float32, mesh: Mesh | None = None,
                 rngs: nnx.Rngs):
        self.num_classes, self.input_size, self.lrn = num_classes, input_size, lrn
        self.cpu_conv_impl = cpu_conv_impl
        self.activation, self.dtype, self.dropout_rate = activation, dtype, 0.0
        self.mesh = mesh if mesh is not None else single_device_mesh()
        pooled = -(-(input_size - 3) // 2) + 1           # 24 -> 12
        self.local_size = -(-(pooled - 3) // 2) + 1      # 12 -> 6
        s, w = self.local_size, widths
        layer = lambda k, b, std: Dense(k, b, std, self.mesh, rngs)  # noqa: E731
        self.conv1 = layer((5, 5, 3, w[0]), (w[0],), init_stds[0])
        self.conv2 = layer((5, 5, w[0], w[1]), (w[1],), init_stds[1])
        self.local3 = layer((s, s, w[1] * 9, w[2]), (s, s, w[2]), init_stds[2])
        self.local4 = layer((s, s, w[2] * 9, w[3]), (s, s, w[3]), init_stds[3])
        self.fc10 = layer((s * s * w[3], num_classes), (num_classes,), init_stds[4])

    def forward_on_device(self, images: jax.Array, masks: list[jax.Array],
                          features: bool = False) -> jax.Array:
        """The logits; with `features`, this device's share of the last hidden layer (local4,
        flattened: 6 x 6 x 32 = 1,152 units), the analogue of AlexNet's fc7."""
        del masks  # no dropout in this network
        act = layers.activation_fn(self.activation)
        w = lambda p: p.kernel[...].astype(self.dtype)  # noqa: E731
        b = lambda p: p.bias[...].astype(self.dtype)  # noqa: E731
        pad2, pad1 = ((2, 2), (2, 2)), ((1, 1), (1, 1))
        x = images.astype(self.dtype)
        x = act(layers.conv(x, w(self.conv1), 1, pad2) + b(self.conv1))
        x = self._lrn(layers.max_pool_ceil(x, 3, 2))
        x = self._lrn(act(layers.conv(x, w(self.conv2), 1, pad2) + b(self.conv2)))
        x = layers.max_pool_ceil(x, 3, 2)
        x = act(layers.locally_connected(x, w(self.local3), 3, pad1) + b(self.local3))
        x = act(layers.locally_connected(x, w(self.local4), 3, pad1) + b(self.local4))
        if features:
            # every device of the model axis holds all units (the weights are replicated);
            # features are gathered as columns' shares, so each returns its slice of them
            units = x.reshape(x.shape[0], -1).astype(jnp.float32)
            share = units.shape[1] // jax.lax.axis_size(MODEL_AXIS)
            return jax.lax.dynamic_slice_in_dim(
                units, jax.lax.axis_index(MODEL_AXIS) * share, share, axis=1)
        logits = x.reshape(x.shape[0], -1) @ w(self.fc10) + b(self.fc10)
        return logits.astype(jnp.float32)

    def _lrn(self, x: jax.Array) -> jax.Array:
        return layers.local_response_norm(x, 1, self.lrn) if self.lrn else x
