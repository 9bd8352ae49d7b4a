"""The paper's CIFAR-10 network (cuda-convnet conv-local)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alexnet_jax.common import sharding
from alexnet_jax.model import layers
from alexnet_jax.model.cifar import CifarConvLocal
from alexnet_jax.model.sharded_network import count_params


def test_shapes_and_parameter_count():
    model = nnx.eval_shape(lambda: CifarConvLocal(rngs=nnx.Rngs(0)))
    # conv1 5x5x3x64, conv2 5x5x64x64, local3/local4 unshared 3x3 at each of 6x6 positions
    assert model.local3.kernel.shape == (6, 6, 64 * 9, 64)
    assert model.local4.kernel.shape == (6, 6, 64 * 9, 32)
    assert model.fc10.kernel.shape == (6 * 6 * 32, 10)
    assert count_params(model) == (4_864 + 102_464 + (1_327_104 + 2_304) + (663_552 + 1_152)
                                   + 11_530)


def test_cuda_convnet_pooling_sizes():
    x = jnp.zeros((1, 24, 24, 2))
    assert layers.max_pool_ceil(x, 3, 2).shape == (1, 12, 12, 2)
    assert layers.max_pool_ceil(jnp.zeros((1, 12, 12, 2)), 3, 2).shape == (1, 6, 6, 2)
    ramp = jnp.arange(5.0).reshape(1, 5, 1, 1) * jnp.ones((1, 5, 5, 1))
    assert layers.max_pool_ceil(ramp, 3, 2)[0, :, 0, 0].tolist() == [2.0, 4.0]


def test_locally_connected_layer_uses_one_kernel_per_position():
    rng = np.random.RandomState(0)
    x = rng.randn(2, 4, 4, 3).astype(np.float32)
    kernel = rng.randn(4, 4, 3 * 9, 5).astype(np.float32)
    got = np.asarray(layers.locally_connected(jnp.asarray(x), jnp.asarray(kernel), 3,
                                              ((1, 1), (1, 1))))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((2, 4, 4, 5))
    for i in range(4):
        for j in range(4):
            patch = padded[:, i:i + 3, j:j + 3, :]               # (B, 3, 3, C)
            patch = patch.transpose(0, 3, 1, 2).reshape(2, -1)    # channel-major, as XLA
            want[:, i, j] = patch @ kernel[i, j]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overrides", [dict(activation="tanh"), dict(lrn=None)])
def test_switches(overrides):
    x = np.random.RandomState(0).uniform(-60, 60, (4, 24, 24, 3)).astype(np.float32)
    stds = (0.05, 0.05, 0.05, 0.05, 0.05)  # larger than cuda-convnet's, to see the input
    mesh = sharding.single_device_mesh()
    base = CifarConvLocal(init_stds=stds, mesh=mesh, rngs=nnx.Rngs(0))(x)
    changed = CifarConvLocal(init_stds=stds, mesh=mesh, rngs=nnx.Rngs(0), **overrides)(x)
    assert base.shape == changed.shape == (4, 10)
    assert np.isfinite(np.asarray(changed)).all()
    assert not np.allclose(base, changed, rtol=1e-5)


def test_fast_layers_equal_the_xla_reference_ops():
    """The slice-based pooling and local layer compute what lax.reduce_window and
    lax.conv_general_dilated_local compute (they are several times faster on XLA:CPU)."""
    import jax  # noqa: PLC0415

    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.randn(3, 12, 12, 4).astype(np.float32))
    for size in (12, 11):
        part = x[:, :size, :size]
        out = -(-(size - 3) // 2) + 1
        extra = (out - 1) * 2 + 3 - size
        want = jax.lax.reduce_window(part, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                                     ((0, 0), (0, extra), (0, extra), (0, 0)))
        np.testing.assert_array_equal(layers.max_pool_ceil(part, 3, 2), want)
    kernel = jnp.asarray(rng.randn(12, 12, 4 * 9, 5).astype(np.float32))
    want = jax.lax.conv_general_dilated_local(
        x, kernel, window_strides=(1, 1), padding=((1, 1), (1, 1)), filter_shape=(3, 3),
        dimension_numbers=layers.CONV_DIMENSIONS)
    got = layers.locally_connected(x, kernel, 3, ((1, 1), (1, 1)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_features_are_the_last_hidden_layer_that_fc10_reads():
    mesh = sharding.single_device_mesh()
    model = CifarConvLocal(mesh=mesh, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.RandomState(1).rand(3, 24, 24, 3).astype(np.float32))
    features = np.asarray(model.features(x))
    assert features.shape == (3, 6 * 6 * 32) and (features >= 0).all()   # after the ReLU
    logits = features @ np.asarray(model.fc10.kernel[...]) + np.asarray(model.fc10.bias[...])
    np.testing.assert_allclose(np.asarray(model(x)), logits, rtol=1e-5, atol=1e-6)
