"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) as a Flax NNX module on a (data, model) mesh.

Every per-column weight has a leading column axis sharded over the mesh's `model` axis, so each
device holds its columns' kernels. The forward pass runs inside one `shard_map`: each device
computes its columns on its part of the batch, and devices exchange activations only where the
paper's GPUs did - into conv3, fc6 and fc7 (all-gathers of the columns' maps) and into fc8 (a sum
of the columns' partial logits).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from alexnet_jax.common.sharding import MODEL_AXIS, axes_for, single_device_mesh
from alexnet_jax.model import layers
from alexnet_jax.model.sharded_network import ShardedNetwork, count_params  # noqa: F401

PAPER_CONV_WIDTHS = (96, 256, 384, 384, 256)
PAPER_FC_WIDTHS = (4096, 4096)


class ColumnParams(nnx.Module):
    """The weights of one layer, split into columns: kernel (C, *shape), bias (C, out)."""

    def __init__(self, columns: int, kernel_shape: tuple[int, ...], bias_value: float,
                 init_std: float, mesh: Mesh, rngs: nnx.Rngs):
        shape = (columns, *kernel_shape)
        self.kernel = nnx.Param(init_std * jax.random.normal(rngs.params(), shape), mesh=mesh,
                                out_sharding=axes_for("column_param", len(shape)))
        self.bias = nnx.Param(jnp.full((columns, kernel_shape[-1]), bias_value, jnp.float32),
                              mesh=mesh, out_sharding=axes_for("column_param", 2))


class ColumnSumParams(nnx.Module):
    """fc8: each column maps its own fc7 units to partial logits (kernel (C, in, K)); the
    columns' partial logits are summed, then one shared bias (K,) is added."""

    def __init__(self, columns: int, inputs_per_column: int, outputs: int, init_std: float,
                 mesh: Mesh, rngs: nnx.Rngs):
        shape = (columns, inputs_per_column, outputs)
        self.kernel = nnx.Param(init_std * jax.random.normal(rngs.params(), shape), mesh=mesh,
                                out_sharding=axes_for("column_param", 3))
        self.bias = nnx.Param(jnp.zeros((outputs,), jnp.float32), mesh=mesh,
                              out_sharding=axes_for("shared_param", 1))


def one_column_widths(conv_widths: tuple[int, ...]) -> tuple[int, ...]:
    """The paper's one-GPU ablation (section 3.2 and footnote): half the kernels in conv1-conv4,
    conv5 and the fully connected layers unchanged."""
    return tuple(w // 2 for w in conv_widths[:4]) + (conv_widths[4],)


def column_layer_shapes(columns: int, widths: tuple[int, ...], fc_widths: tuple[int, ...],
                        pool5_size: int, positive_bias: float) -> dict[str, tuple]:
    """conv1 ... fc7: (kernel shape of one column, initial bias). Own-column layers see their
    column's maps; conv3, fc6 and fc7 see both columns' (the paper's cross-GPU connections)."""
    c = columns
    per_col = [w // c for w in widths]
    fc_per_col = [w // c for w in fc_widths]
    if any(w % c for w in (*widths, *fc_widths)):
        raise ValueError(f"every layer width must be divisible by the {c} columns")
    one = positive_bias  # paper section 5: biases 1 in conv2, conv4, conv5, fc6 and fc7
    return {
        "conv1": ((11, 11, 3, per_col[0]), 0.0),              # sees the whole image
        "conv2": ((5, 5, per_col[0], per_col[1]), one),       # own column
        "conv3": ((3, 3, widths[1], per_col[2]), 0.0),        # both columns
        "conv4": ((3, 3, per_col[2], per_col[3]), one),       # own column
        "conv5": ((3, 3, per_col[3], per_col[4]), one),       # own column
        "fc6": ((pool5_size ** 2 * widths[4], fc_per_col[0]), one),  # all of pool5
        "fc7": ((fc_widths[0], fc_per_col[1]), one),          # all of fc6
    }


class AlexNet(ShardedNetwork):
    """The paper's eight-layer network, two columns (or the one-column ablation).

    Call it with images (B, H, W, 3) sharded over the mesh's `data` axis. Pass `dropout_key` to
    train (dropout on fc6/fc7); without it the network runs in evaluation mode.
    """

    FEATURE_LAYER = "fc7"  # what features() returns (paper section 6.1)

    def __init__(self, *, num_classes: int = 1000, input_size: int = 224, columns: int = 2,
                 conv_widths: tuple[int, ...] = PAPER_CONV_WIDTHS,
                 fc_widths: tuple[int, ...] = PAPER_FC_WIDTHS, lrn: layers.LRNParams | None =
                 layers.LRNParams(), overlap_pool: bool = True, dropout_rate: float = 0.5,
                 activation: str = "relu", conv1_geometry: str = "cuda_convnet",
                 column_impl: str = "split", init_std: float = 0.01, positive_bias: float = 1.0,
                 lrn_impl: str = "matmul", conv1_impl: str = "direct",
                 conv_grad_impl: str = "xla", cpu_conv_impl: str = "eigen",
                 dtype=jnp.float32, mesh: Mesh | None = None, rngs: nnx.Rngs):
        if columns not in (1, 2):
            raise ValueError(f"columns must be 1 or 2, got {columns}")
        widths = tuple(conv_widths) if columns == 2 else one_column_widths(tuple(conv_widths))
        self.columns, self.num_classes, self.input_size = columns, num_classes, input_size
        self.lrn, self.overlap_pool, self.dropout_rate = lrn, overlap_pool, dropout_rate
        self.activation, self.conv1_geometry = activation, conv1_geometry
        self.column_impl, self.conv_grad_impl = column_impl, conv_grad_impl
        self.cpu_conv_impl = cpu_conv_impl
        self.dtype, self.lrn_impl, self.conv1_impl = dtype, lrn_impl, conv1_impl
        self.mesh = mesh if mesh is not None else single_device_mesh()
        map_sizes = layers.feature_map_sizes(input_size, conv1_geometry, overlap_pool)
        if map_sizes["pool5"] < 1:
            raise ValueError(f"input size {input_size} is too small for AlexNet's five layers")
        self.conv1_pad = layers.conv1_padding(input_size, conv1_geometry)

        # Parameters are born sharded on this model's mesh.
        layer = partial(ColumnParams, columns, init_std=init_std, mesh=self.mesh, rngs=rngs)
        shapes = column_layer_shapes(columns, widths, tuple(fc_widths), map_sizes["pool5"],
                                     positive_bias)
        for name, (shape, bias) in shapes.items():
            setattr(self, name, layer(shape, bias))
        self.fc8 = ColumnSumParams(columns, fc_widths[1] // columns, num_classes, init_std,
                                   self.mesh, rngs)

    def dropout_widths(self) -> tuple[int, ...]:
        """fc6 and fc7 units (all columns)."""
        return tuple(layer.kernel.shape[0] * layer.kernel.shape[-1]
                     for layer in (self.fc6, self.fc7))

    # -- what each device runs on its own shard (inside shard_map) --------------------------

    def forward_on_device(self, images: jax.Array, masks: list[jax.Array],
                          features: bool = False) -> jax.Array:
        """This device's part of the forward pass. Parameters are this device's columns.
        With `features`, this device's columns' fc7 units (float32) instead of the logits."""
        act = layers.activation_fn(self.activation)
        cols = self.conv1.kernel.shape[0]  # columns held by this device
        w = lambda p: p.kernel[...].astype(self.dtype)  # noqa: E731
        b = lambda p: p.bias[...].reshape(-1).astype(self.dtype)  # noqa: E731

        x = images.astype(self.dtype)
        grads = self.conv_grad_impl
        pool = partial(layers.max_pool, overlapping=self.overlap_pool)
        x = conv1_of_columns(x, w(self.conv1), self.conv1_impl, self.conv1_pad, grads)
        x = act(x + b(self.conv1))
        x = pool(self._lrn(x, cols))
        own = partial(layers.conv_own_column, impl=self.column_impl, grad_impl=grads)
        x = act(own(x, w(self.conv2), 1, ((2, 2), (2, 2))) + b(self.conv2))
        x = pool(self._lrn(x, cols))
        x = gather_columns(x)                                  # GPUs talk: into conv3
        x = act(layers.conv_shared_input(x, w(self.conv3), 1, ((1, 1), (1, 1)), grads)
                + b(self.conv3))
        x = act(own(x, w(self.conv4), 1, ((1, 1), (1, 1))) + b(self.conv4))
        x = act(own(x, w(self.conv5), 1, ((1, 1), (1, 1))) + b(self.conv5))
        x = pool(x)
        x = gather_columns(x).reshape(x.shape[0], -1)         # into fc6: all 6x6x256 features
        x = act(layers.dense_shared_input(x, w(self.fc6)) + b(self.fc6))
        x = x * masks[0] if masks else x
        x = gather_columns(x)                                  # into fc7: all 4096 units
        x = act(layers.dense_shared_input(x, w(self.fc7)) + b(self.fc7))
        x = x * masks[1] if masks else x
        if features:
            return x.astype(jnp.float32)
        partial_logits = x @ w(self.fc8).reshape(-1, self.num_classes)
        logits = jax.lax.psum(partial_logits.astype(jnp.float32), MODEL_AXIS)  # into fc8
        return logits + self.fc8.bias[...]

    def _lrn(self, x: jax.Array, columns_here: int) -> jax.Array:
        return (layers.local_response_norm(x, columns_here, self.lrn, self.lrn_impl)
                if self.lrn else x)


def conv1_of_columns(images: jax.Array, kernel: jax.Array, impl: str, padding,
                     grad_impl: str) -> jax.Array:
    """conv1 (11x11, stride 4) of every column this device holds, in the formulation `impl`:
    "direct" (one convolution) or "space_to_depth" (the stride folded into channels first)."""
    if impl == "space_to_depth":
        return layers.conv_space_to_depth(images, layers.merge_columns_out(kernel), 4, padding,
                                          grad_impl)
    return layers.conv_shared_input(images, kernel, 4, padding, grad_impl)


def gather_columns(x: jax.Array) -> jax.Array:
    """All columns' maps on every device of the `model` axis, in column order (channels last)."""
    return jax.lax.all_gather(x, MODEL_AXIS, axis=x.ndim - 1, tiled=True)
