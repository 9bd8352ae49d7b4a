"""Pure layer functions of AlexNet that work on channel-last activations.

Per-column activations are stored side by side along the channel axis: a tensor holding `c`
columns of `k` maps each has `c * k` channels, column `i` in channels [i*k, (i+1)*k). LRN and
pooling never mix columns.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class LRNParams:
    """Local response normalisation, b = a / (k + alpha' * sum a^2)^beta over n adjacent maps.

    `alpha_over_n` selects cuda-convnet/Caffe/PyTorch semantics (alpha' = alpha / n) instead of
    the paper's formula as written (alpha' = alpha).
    """

    n: int = 5
    k: float = 2.0
    alpha: float = 1e-4
    beta: float = 0.75
    alpha_over_n: bool = False

    @property
    def effective_alpha(self) -> float:
        return self.alpha / self.n if self.alpha_over_n else self.alpha


def lrn_window_matrix(num_columns: int, maps_per_column: int, n: int) -> np.ndarray:
    """0/1 matrix M with M[j, i] = 1 when map j is inside map i's LRN window (same column only)."""
    index = np.arange(maps_per_column)
    band = (np.abs(index[:, None] - index[None, :]) <= n // 2).astype(np.float32)
    return np.kron(np.eye(num_columns, dtype=np.float32), band)


def local_response_norm(x: jax.Array, num_columns: int, params: LRNParams,
                        impl: str = "matmul") -> jax.Array:
    """LRN across adjacent maps of the same column, computed in float32 whatever x's dtype.

    The windowed sum of squares is computed as a matmul with a banded 0/1 matrix (`matmul`,
    HIGHEST precision: fast on every backend, where reduce_window over channels is not) or as
    a sum of n shifted slices of the channel axis (`slices`: n adds instead of a matmul). Both
    give the formula's value to float32 rounding.
    """
    maps_per_column = x.shape[-1] // num_columns
    x32 = x.astype(jnp.float32)
    squares = x32 * x32
    if impl == "matmul":
        window = jnp.asarray(lrn_window_matrix(num_columns, maps_per_column, params.n))
        sum_sq = jnp.dot(squares, window, precision=jax.lax.Precision.HIGHEST)
    elif impl == "slices":
        half = params.n // 2
        per_column = squares.reshape(*squares.shape[:-1], num_columns, maps_per_column)
        padded = jnp.pad(per_column, [(0, 0)] * (per_column.ndim - 1) + [(half, half)])
        sum_sq = sum(padded[..., d:d + maps_per_column] for d in range(params.n))
        sum_sq = sum_sq.reshape(squares.shape)
    else:
        raise ValueError(f"unknown LRN implementation {impl!r}")
    scale = _negative_power(params.k + params.effective_alpha * sum_sq, params.beta)
    return (x32 * scale).astype(x.dtype)


def _negative_power(base: jax.Array, beta: float) -> jax.Array:
    """base ** -beta; for the paper's beta = 0.75 as rsqrt(base) * sqrt(rsqrt(base)), the same
    to float32 rounding: XLA:CPU's pow (an exp of a log) took 240 ms of a batch-64 step."""
    if beta == 0.75:
        root = jax.lax.rsqrt(base)
        return root * jnp.sqrt(root)
    return jnp.power(base, -beta)


def max_pool(x: jax.Array, overlapping: bool) -> jax.Array:
    """The paper's overlapping 3x3/2 max-pooling, or the non-overlapping 2x2/2 ablation.

    XLA's pooling. As the maximum of 9 strided slices (as max_pool_ceil) pool1's forward +
    backward alone took a fifth of the time on XLA:CPU, but the whole step was 10% slower:
    XLA fused the LRN before it into each slice and computed it again for every one.
    """
    size = 3 if overlapping else 2
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, size, size, 1), (1, 2, 2, 1),
                                 "VALID")


def activation_fn(name: str):
    """relu (the paper) or tanh (the paper's Figure 1 comparison)."""
    return {"relu": jax.nn.relu, "tanh": jnp.tanh}[name]


def conv(x: jax.Array, kernel_HWIO: jax.Array, stride: int, padding, groups: int = 1,
         grad_impl: str = "xla") -> jax.Array:
    """A 2-D convolution on NHWC input with an HWIO kernel. `grad_impl`: how its kernel's
    gradient is computed, `xla` (XLA's backward-filter convolution) or `matmul` (one matrix
    product a kernel position, conv_kernel_grad_by_matmul, for stride 1); the same values to
    rounding."""
    # a strided convolution keeps XLA's gradient: as matrix products over strided windows
    # conv1's took 2,736 ms against XLA's 2,059 (forward + backward, AVX2 host)
    if grad_impl == "matmul" and groups == 1 and stride == 1:
        x, kernel_HWIO = _varying_alike(x, kernel_HWIO)
        return _conv_matmul_kernel_grad(x, kernel_HWIO, stride, _explicit(padding))
    if grad_impl not in ("xla", "matmul"):
        raise ValueError(f"unknown convolution gradient implementation {grad_impl!r}")
    return _xla_conv(x, kernel_HWIO, stride, padding, groups)


def _xla_conv(x, kernel_HWIO, stride, padding, groups=1):
    return jax.lax.conv_general_dilated(
        x, kernel_HWIO, window_strides=(stride, stride), padding=padding,
        dimension_numbers=CONV_DIMENSIONS, feature_group_count=groups)


def _varying_alike(*arrays):
    """Inside shard_map: the arrays cast to vary over the same mesh axes, as JAX does itself
    before an ordinary convolution of a column's kernel (varying over `model`) and a batch
    (over `data`); a custom gradient must return each gradient as its argument varies, and
    the cast's own transpose then sums the kernel's gradient over the batch's devices."""
    axes = [getattr(jax.typeof(a).manual_axis_type, "varying", frozenset()) for a in arrays]
    union = frozenset().union(*axes)
    return tuple(jax.lax.pcast(a, tuple(sorted(union - have)), to="varying") if union - have
                 else a for a, have in zip(arrays, axes))


def _explicit(padding) -> tuple[tuple[int, int], tuple[int, int]]:
    if padding == "VALID":
        return ((0, 0), (0, 0))
    return tuple((int(low), int(high)) for low, high in padding)


def conv_kernel_grad_by_matmul(x: jax.Array, grad_out: jax.Array, kernel_shape, stride: int,
                               padding) -> jax.Array:
    """The kernel's gradient of conv(x, kernel) given the output's gradient, as one matrix
    product a kernel position: dK[i, j] = sum over (image, row, column) of the input window at
    (i, j) (channels) times the output gradient (kernels). XLA:CPU computes the same sums as a
    backward-filter convolution 6-9 times as slow as the forward one (conv2: 4.2 s against
    0.48 s at batch 128 on an AVX2 host, docs/performance.md); as matrix products it is
    Eigen's matmul."""
    kh, kw, _, _ = kernel_shape
    (top, bottom), (left, right) = padding
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h, out_w = grad_out.shape[1], grad_out.shape[2]
    # As (output gradient)^T x (window), kernels by channels: the output gradient, shared by
    # every position, is the operand XLA:CPU lays out afresh, once; as window^T x gradient it
    # transposed every window instead (and made its input again each time): 2x as slow.
    rows = [jnp.einsum("bhwo,bhwc->oc", grad_out,
                       padded[:, i:i + stride * (out_h - 1) + 1:stride,
                              j:j + stride * (out_w - 1) + 1:stride, :],
                       preferred_element_type=jnp.float32)
            for i in range(kh) for j in range(kw)]
    kh_kw_o_i = jnp.stack(rows).reshape(kh, kw, kernel_shape[3], kernel_shape[2])
    return jnp.swapaxes(kh_kw_o_i, 2, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul_kernel_grad(x, kernel_HWIO, stride, padding):
    return _xla_conv(x, kernel_HWIO, stride, padding)


def _conv_forward(x, kernel_HWIO, stride, padding):
    return _xla_conv(x, kernel_HWIO, stride, padding), (x, kernel_HWIO)


def _conv_backward(stride, padding, saved, grad_out):
    x, kernel = saved
    _, input_vjp = jax.vjp(lambda x: _xla_conv(x, kernel, stride, padding), x)
    (grad_x,) = input_vjp(grad_out)   # XLA's input gradient is as fast as the forward pass
    grad_kernel = conv_kernel_grad_by_matmul(x, grad_out, kernel.shape, stride, padding)
    return grad_x, grad_kernel.astype(kernel.dtype)


_conv_matmul_kernel_grad.defvjp(_conv_forward, _conv_backward)


def merge_columns_out(kernel_Cx___xIxO: jax.Array) -> jax.Array:
    """Stack per-column kernels (C, ..., I, O) into one kernel (..., I, C*O), column-major outputs."""
    moved = jnp.moveaxis(kernel_Cx___xIxO, 0, -2)
    return moved.reshape(moved.shape[:-2] + (-1,))


def dense_shared_input(x: jax.Array, kernels_CxIxO: jax.Array) -> jax.Array:
    """x @ every column's kernel, the outputs column-major (as x @ merge_columns_out(kernels)).

    One batched product over the columns, the kernels read where they are: merging them first
    copied fc6's and fc7's 151 and 67 MB every step, and so did slicing out each column's
    (fc6 forward + backward at batch 64 on XLA:CPU: 250 ms against 505)."""
    columns = kernels_CxIxO.shape[0]
    x_CxBxI = jnp.broadcast_to(x, (columns,) + x.shape)
    y_CxBxO = jax.lax.dot_general(x_CxBxI, kernels_CxIxO, (((2,), (1,)), ((0,), (0,))))
    return jnp.moveaxis(y_CxBxO, 0, 1).reshape(x.shape[0], -1)


def conv_shared_input(x: jax.Array, kernels_CxHxWxIxO: jax.Array, stride: int,
                      padding, grad_impl: str = "xla") -> jax.Array:
    """Every column sees the same input (conv1 sees the image, conv3 all of conv2's maps)."""
    return conv(x, merge_columns_out(kernels_CxHxWxIxO), stride, padding, grad_impl=grad_impl)


def conv_own_column(x: jax.Array, kernels_CxHxWxIxO: jax.Array, stride: int, padding,
                    impl: str, grad_impl: str = "xla") -> jax.Array:
    """Each column sees only its own maps (conv2, conv4, conv5).

    impl `split`: one ordinary convolution per column, outputs concatenated.
    impl `grouped`: one convolution with feature_group_count = number of columns.
    Both compute the same thing; which is faster depends on the backend (see
    experiments/benchmark_step.py).
    """
    num_columns, in_per_column = kernels_CxHxWxIxO.shape[0], kernels_CxHxWxIxO.shape[-2]
    if num_columns == 1:
        return conv(x, kernels_CxHxWxIxO[0], stride, padding, grad_impl=grad_impl)
    if impl == "grouped":
        return conv(x, merge_columns_out(kernels_CxHxWxIxO), stride, padding, groups=num_columns)
    if impl == "split":
        outputs = [conv(x[..., i * in_per_column:(i + 1) * in_per_column], kernels_CxHxWxIxO[i],
                        stride, padding, grad_impl=grad_impl) for i in range(num_columns)]
        return jnp.concatenate(outputs, axis=-1)
    raise ValueError(f"unknown column implementation {impl!r}")


def conv_space_to_depth(x: jax.Array, kernel_HWIO: jax.Array, stride: int,
                        padding, grad_impl: str = "xla") -> jax.Array:
    """A strided convolution (conv1: 11 x 11, stride 4) as a stride-1 convolution over
    stride x stride blocks of the input: the image becomes (H/s, W/s, s*s*3) and the kernel,
    zero-padded to a multiple of s, (ceil(k/s), ceil(k/s), s*s*3, O). The same sums, so the
    same result to float32 rounding; a 3 x 3 convolution over 48 channels uses matrix units
    far better than an 11 x 11 one over 3 (its weight gradient was 2.5x faster on an H200).
    """
    s = stride
    (top, bottom), (left, right) = padding
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw, channels, out_channels = kernel_HWIO.shape
    out_h = (x.shape[1] - kh) // s + 1
    out_w = (x.shape[2] - kw) // s + 1
    blocks_h, blocks_w = -(-kh // s), -(-kw // s)
    need_h, need_w = s * (out_h + blocks_h - 1), s * (out_w + blocks_w - 1)
    x = x[:, :need_h, :need_w]  # rows no window reaches
    x = jnp.pad(x, ((0, 0), (0, need_h - x.shape[1]), (0, need_w - x.shape[2]), (0, 0)))
    batch = x.shape[0]
    x = x.reshape(batch, need_h // s, s, need_w // s, s, channels).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(batch, need_h // s, need_w // s, s * s * channels)
    kernel = jnp.pad(kernel_HWIO, ((0, blocks_h * s - kh), (0, blocks_w * s - kw), (0, 0), (0, 0)))
    kernel = kernel.reshape(blocks_h, s, blocks_w, s, channels, out_channels)
    kernel = kernel.transpose(0, 2, 1, 3, 4, 5).reshape(blocks_h, blocks_w, s * s * channels,
                                                        out_channels)
    return conv(x, kernel, 1, "VALID", grad_impl=grad_impl)


def conv1_padding(input_size: int, geometry: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding of conv1 (11x11, stride 4) for each input geometry of PAPER.md section 1.

    `cuda_convnet`: output size ceil((in - 11) / 4) + 1, i.e. pad 0 top/left and the rest
    bottom/right (3 pixels at 224 -> 55x55). `caffe`: no padding (227 -> 55).
    `torchvision`: 2 pixels on every side (224 -> 55).
    """
    if geometry == "cuda_convnet":
        out = -(-(input_size - 11) // 4) + 1
        extra = (out - 1) * 4 + 11 - input_size
        return (0, extra), (0, extra)
    if geometry == "caffe":
        return (0, 0), (0, 0)
    if geometry == "torchvision":
        return (2, 2), (2, 2)
    raise ValueError(f"unknown conv1 geometry {geometry!r}")


def feature_map_sizes(input_size: int, geometry: str, overlapping_pool: bool) -> dict[str, int]:
    """Spatial side of each layer's output (224 -> conv1 55, pool1 27, pool2 13, pool5 6)."""
    (top, bottom), _ = conv1_padding(input_size, geometry)
    pool = 3 if overlapping_pool else 2
    conv1 = (input_size + top + bottom - 11) // 4 + 1
    pool1 = (conv1 - pool) // 2 + 1
    pool2 = (pool1 - pool) // 2 + 1
    pool5 = (pool2 - pool) // 2 + 1
    return {"conv1": conv1, "pool1": pool1, "conv2": pool1, "pool2": pool2, "conv3": pool2,
            "conv4": pool2, "conv5": pool2, "pool5": pool5}


def max_pool_ceil(x: jax.Array, size: int, stride: int) -> jax.Array:
    """Max-pooling with cuda-convnet's output size ceil((in - size) / stride) + 1 (the last
    window may hang over the bottom/right edge).

    Computed as the maximum of size^2 strided slices: the same values as `lax.reduce_window`,
    and on XLA:CPU a forward+backward 9x faster for the CIFAR-10 net's pool1 (12 ms against
    109 ms at batch 128; the whole step 2.5x faster with `locally_connected` below). Gradients
    differ only where two inputs of a window tie for the maximum.
    """
    out = -(-(x.shape[1] - size) // stride) + 1
    extra = (out - 1) * stride + size - x.shape[1]
    padded = jnp.pad(x, ((0, 0), (0, extra), (0, extra), (0, 0)), constant_values=-jnp.inf)
    span = (out - 1) * stride + 1
    pooled = None
    for dy in range(size):
        for dx in range(size):
            window = padded[:, dy:dy + span:stride, dx:dx + span:stride, :]
            pooled = window if pooled is None else jnp.maximum(pooled, window)
    return pooled


def locally_connected(x: jax.Array, kernel_HxWxIxO: jax.Array, filter_size: int,
                      padding) -> jax.Array:
    """A convolution with a separate kernel at every output position (cuda-convnet's `local`
    layer); kernel (out H, out W, in channels * filter_size^2, out channels), stride 1.

    The patches' features are channel-major (index c * filter_size^2 + dy * filter_size + dx),
    the layout of `lax.conv_general_dilated_local`, whose result this equals exactly; as
    shifted slices and one batched matmul over positions it runs 10x faster on XLA:CPU.
    """
    batch = x.shape[0]
    out_h, out_w, features, out_channels = kernel_HxWxIxO.shape
    padded = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    patches_BxHxWxCxF = jnp.stack(
        [padded[:, dy:dy + out_h, dx:dx + out_w, :]
         for dy in range(filter_size) for dx in range(filter_size)], axis=-1)
    patches_PxBxI = patches_BxHxWxCxF.reshape(batch, out_h * out_w, features).transpose(1, 0, 2)
    kernels_PxIxO = kernel_HxWxIxO.reshape(out_h * out_w, features, out_channels)
    out_PxBxO = jax.lax.dot_general(patches_PxBxI, kernels_PxIxO, (((2,), (1,)), ((0,), (0,))))
    return out_PxBxO.transpose(1, 0, 2).reshape(batch, out_h, out_w, out_channels)
