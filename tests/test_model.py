"""The network itself: parameter counts, geometry, initialisation, LRN, and a NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_alexnet
from flax import nnx
from helpers import TINY_CONV, TINY_CROP, TINY_FC

from alexnet_jax.common import sharding
from alexnet_jax.model import layers
from alexnet_jax.model.alexnet import AlexNet, count_params

TINY = dict(num_classes=10, input_size=TINY_CROP, conv_widths=TINY_CONV, fc_widths=TINY_FC)


def tiny_model(**overrides):
    kwargs = {**TINY, **overrides}
    return AlexNet(**kwargs, mesh=sharding.single_device_mesh(), rngs=nnx.Rngs(0))


def images(batch=4, size=TINY_CROP, seed=0):
    return np.random.RandomState(seed).uniform(-100, 100, (batch, size, size, 3)).astype(np.float32)


# At the paper's initialisation (std 0.01, biases 1) a tiny network's logits hardly depend on
# its input (other images move them by about 1e-7): a comparison of two networks' outputs then
# passes whatever they compute. With this one the input reaches the logits.
VISIBLE = dict(init_std=0.1, positive_bias=0.1)


def assert_input_reaches_the_logits(model, tolerance):
    """Two image batches give logits further apart than `tolerance`, so that an equality of
    outputs up to `tolerance` says something about how the input was computed with."""
    first, second = (np.asarray(model(jnp.asarray(images(seed=s)))) for s in (0, 1))
    assert np.abs(first - second).max() > 100 * tolerance


def test_paper_parameter_counts():
    two_columns = nnx.eval_shape(lambda: AlexNet(rngs=nnx.Rngs(0)))
    one_column = nnx.eval_shape(lambda: AlexNet(columns=1, rngs=nnx.Rngs(0)))
    assert count_params(two_columns) == 60_965_224
    assert count_params(one_column) == 59_798_312


def test_paper_layer_shapes():
    model = nnx.eval_shape(lambda: AlexNet(rngs=nnx.Rngs(0)))
    assert model.conv1.kernel.shape == (2, 11, 11, 3, 48)
    assert model.conv2.kernel.shape == (2, 5, 5, 48, 128)
    assert model.conv3.kernel.shape == (2, 3, 3, 256, 192)   # sees both columns
    assert model.conv4.kernel.shape == (2, 3, 3, 192, 192)
    assert model.conv5.kernel.shape == (2, 3, 3, 192, 128)
    assert model.fc6.kernel.shape == (2, 9216, 2048)
    assert model.fc7.kernel.shape == (2, 4096, 2048)
    assert model.fc8.kernel.shape == (2, 2048, 1000)
    one = nnx.eval_shape(lambda: AlexNet(columns=1, rngs=nnx.Rngs(0)))
    assert one.conv1.kernel.shape == (1, 11, 11, 3, 48)
    assert one.conv5.kernel.shape == (1, 3, 3, 192, 256)     # conv5 not halved
    assert one.fc6.kernel.shape == (1, 9216, 4096)


@pytest.mark.slow
@pytest.mark.parametrize("geometry,size", [("cuda_convnet", 224), ("caffe", 227),
                                           ("torchvision", 224)])
def test_conv1_geometries_give_the_paper_map_sizes(geometry, size):
    sizes = layers.feature_map_sizes(size, geometry, overlapping_pool=True)
    assert (sizes["conv1"], sizes["pool1"], sizes["pool2"], sizes["pool5"]) == (55, 27, 13, 6)
    assert layers.feature_map_sizes(size, geometry, overlapping_pool=False)["pool5"] == 6
    assert layers.conv1_padding(224, "cuda_convnet") == ((0, 3), (0, 3))


def test_neuron_counts_of_the_paper():
    sizes = layers.feature_map_sizes(224, "cuda_convnet", True)
    # Paper: 290,400 (conv1) - 186,624 - 64,896 - 64,896 - 43,264 neurons.
    assert sizes["conv1"] ** 2 * 96 == 290_400
    assert sizes["conv2"] ** 2 * 256 == 186_624
    assert sizes["conv3"] ** 2 * 384 == 64_896
    assert sizes["conv5"] ** 2 * 256 == 43_264


@pytest.mark.slow
def test_paper_initialisation():
    model = AlexNet(num_classes=10, input_size=TINY_CROP, mesh=sharding.single_device_mesh(),
                    rngs=nnx.Rngs(0))
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        np.testing.assert_array_equal(getattr(model, name).bias[...], 1.0)
    for name in ("conv1", "conv3", "fc8"):
        np.testing.assert_array_equal(getattr(model, name).bias[...], 0.0)
    for name in ("conv1", "conv3", "fc6", "fc8"):
        kernel = np.asarray(getattr(model, name).kernel[...])
        assert abs(kernel.std() - 0.01) < 0.0005 and abs(kernel.mean()) < 0.0005
    # the two columns are initialised independently
    assert not np.allclose(model.conv2.kernel[0], model.conv2.kernel[1])


@pytest.mark.parametrize("alpha_over_n, beta", [(False, 0.75), (True, 0.75), (False, 0.6)])
def test_lrn_matches_the_formula_within_each_column(alpha_over_n, beta):
    """beta 0.75 (the paper's, taken as rsqrt * sqrt(rsqrt)) and another (a power)."""
    x = np.random.RandomState(1).uniform(-400, 400, (2, 3, 3, 12)).astype(np.float32)
    params = layers.LRNParams(alpha_over_n=alpha_over_n, beta=beta)
    alpha = 1e-4 / 5 if alpha_over_n else 1e-4
    got = np.asarray(layers.local_response_norm(jnp.asarray(x), 2, params))
    want = np.concatenate([reference_alexnet.lrn(x[..., :6].astype(np.float64), 5, 2.0, alpha, beta),
                           reference_alexnet.lrn(x[..., 6:].astype(np.float64), 5, 2.0, alpha, beta)],
                          axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # map 5 (last of column 0) must not see map 6 (first of column 1)
    bumped = x.copy()
    bumped[..., 6] *= 10
    got_bumped = np.asarray(layers.local_response_norm(jnp.asarray(bumped), 2, params))
    np.testing.assert_array_equal(got_bumped[..., :6], got[..., :6])


def test_lrn_runs_in_float32_under_bfloat16():
    x = np.full((1, 2, 2, 8), 600.0, np.float32)  # squares sum to ~1.8e6: bf16 loses it badly
    got = layers.local_response_norm(jnp.asarray(x, jnp.bfloat16), 1, layers.LRNParams())
    assert got.dtype == jnp.bfloat16
    want = reference_alexnet.lrn(x.astype(np.float64), 5, 2.0, 1e-4, 0.75)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-2)
    # bit for bit the float32 computation rounded once to bfloat16: a square or a sum taken in
    # bfloat16 (0.4% apart) would round some of these many outputs differently
    varied = jnp.asarray(np.random.RandomState(0).normal(0, 300, (2, 6, 6, 32)), jnp.bfloat16)
    for impl in ("matmul", "slices"):
        in_float32 = layers.local_response_norm(varied.astype(jnp.float32), 2,
                                                layers.LRNParams(), impl)
        np.testing.assert_array_equal(
            np.asarray(layers.local_response_norm(varied, 2, layers.LRNParams(), impl),
                       np.float32),
            np.asarray(in_float32.astype(jnp.bfloat16), np.float32))


@pytest.mark.parametrize("columns", [2, 1])
def test_forward_matches_numpy_reference(columns):
    model = tiny_model(columns=columns, **VISIBLE)
    params = nnx.state(model, nnx.Param).to_pure_dict()
    x = images()
    got = np.asarray(model(jnp.asarray(x)))
    want = reference_alexnet.forward(params, x)
    tolerance = 2e-4 * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=tolerance)
    assert_input_reaches_the_logits(model, tolerance)


def test_grouped_and_split_columns_compute_the_same():
    x = jnp.asarray(images())
    split = tiny_model(column_impl="split", **VISIBLE)
    grouped = tiny_model(column_impl="grouped", **VISIBLE)
    want = np.asarray(split(x))
    tolerance = 1e-5 * np.abs(want).max()
    np.testing.assert_allclose(np.asarray(grouped(x)), want, rtol=1e-5, atol=tolerance)
    assert_input_reaches_the_logits(split, tolerance)


def test_columns_are_connected_only_where_the_paper_connects_them():
    """Changing column 0's conv1 kernels leaves column 1's conv2 maps unchanged (conv2 sees
    only its own column) but changes column 1's conv3 maps (conv3 sees both)."""
    model = tiny_model(lrn=None)
    x = jnp.asarray(images(batch=2))
    kernels = {n: np.asarray(getattr(model, n).kernel[...]) for n in ("conv1", "conv2", "conv3")}

    def conv2_and_conv3_maps(conv1_kernel):
        h = jax.nn.relu(layers.conv_shared_input(x, conv1_kernel, 4, model.conv1_pad))
        h2 = jax.nn.relu(layers.conv_own_column(layers.max_pool(h, True), kernels["conv2"], 1,
                                                ((2, 2), (2, 2)), "split"))
        h3 = jax.nn.relu(layers.conv_shared_input(layers.max_pool(h2, True), kernels["conv3"],
                                                  1, ((1, 1), (1, 1))))
        return np.asarray(h2), np.asarray(h3)

    bumped = kernels["conv1"].copy()
    bumped[0] *= 3.0
    conv2_before, conv3_before = conv2_and_conv3_maps(kernels["conv1"])
    conv2_after, conv3_after = conv2_and_conv3_maps(bumped)
    half2, half3 = conv2_before.shape[-1] // 2, conv3_before.shape[-1] // 2
    np.testing.assert_array_equal(conv2_after[..., half2:], conv2_before[..., half2:])
    assert not np.allclose(conv2_after[..., :half2], conv2_before[..., :half2])
    assert not np.allclose(conv3_after[..., half3:], conv3_before[..., half3:])


def test_dropout_masks_and_modes():
    model = tiny_model()
    x = jnp.asarray(images())
    np.testing.assert_array_equal(model(x), model(x))  # evaluation: deterministic
    key = jax.random.key(3)
    np.testing.assert_array_equal(model(x, dropout_key=key), model(x, dropout_key=key))
    assert not np.allclose(model(x, dropout_key=key), model(x, dropout_key=jax.random.key(4)))
    masks = model.dropout_masks(64, key)
    assert [m.shape for m in masks] == [(64, 32), (64, 32)]
    values = np.asarray(masks[0])
    assert set(np.unique(values)) == {0.0, 2.0}  # inverted dropout with p = 0.5
    assert 0.4 < (values > 0).mean() < 0.6
    assert tiny_model(dropout_rate=0.0).dropout_masks(4, key) == []


@pytest.mark.parametrize("overrides", [dict(overlap_pool=False), dict(activation="tanh"),
                                       dict(lrn=None), dict(conv1_geometry="torchvision"),
                                       dict(dtype=jnp.bfloat16)])
def test_ablation_switches_change_the_output(overrides):
    x = jnp.asarray(images())
    base = np.asarray(tiny_model(**VISIBLE)(x))
    changed = np.asarray(tiny_model(**VISIBLE, **overrides)(x), np.float32)
    assert changed.shape == base.shape and np.isfinite(changed).all()
    assert not np.allclose(changed, base, rtol=1e-6, atol=1e-7)


def test_wrong_input_size_is_refused():
    with pytest.raises(ValueError, match="built for 67x67x3"):
        tiny_model()(jnp.zeros((1, 64, 64, 3)))


@pytest.mark.parametrize("columns", [1, 2])
def test_lrn_as_shifted_slices_equals_the_banded_matmul(columns):
    from alexnet_jax.model import layers  # noqa: PLC0415

    x = jnp.asarray(np.random.RandomState(3).uniform(0, 40, (2, 5, 5, 12)).astype(np.float32))
    for params in (layers.LRNParams(), layers.LRNParams(n=9, k=1.0, alpha=1e-3,
                                                        alpha_over_n=True)):
        want = layers.local_response_norm(x, columns, params, "matmul")
        got = layers.local_response_norm(x, columns, params, "slices")
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size,geometry", [(224, "cuda_convnet"), (227, "caffe"),
                                           (224, "torchvision"), (67, "cuda_convnet")])
def test_conv1_as_space_to_depth_equals_the_strided_convolution(size, geometry):
    from alexnet_jax.model import layers  # noqa: PLC0415

    rng = np.random.RandomState(4)
    x = jnp.asarray(rng.uniform(-100, 100, (2, size, size, 3)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(0, 0.01, (11, 11, 3, 8)).astype(np.float32))
    padding = layers.conv1_padding(size, geometry)
    want = layers.conv(x, kernel, 4, padding)
    got = layers.conv_space_to_depth(x, kernel, 4, padding)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=2e-4)


def test_the_whole_network_is_the_same_with_the_fast_formulations():
    from flax import nnx  # noqa: PLC0415

    from alexnet_jax.model.alexnet import AlexNet  # noqa: PLC0415

    x = np.random.RandomState(5).uniform(-100, 100, (2, 67, 67, 3)).astype(np.float32)
    small = dict(input_size=67, conv_widths=(8, 16, 16, 16, 16), fc_widths=(32, 32),
                 num_classes=5, init_std=0.05, positive_bias=0.1)
    base = AlexNet(**small, rngs=nnx.Rngs(0))(x)
    fast = AlexNet(**small, lrn_impl="slices", conv1_impl="space_to_depth", rngs=nnx.Rngs(0))(x)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(base), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride, padding, dtype", [
    (1, ((2, 2), (2, 2)), np.float32), (4, ((2, 1), (2, 1)), np.float32),
    (1, "VALID", np.float32), (1, ((1, 1), (1, 1)), jnp.bfloat16)])
def test_kernel_gradients_by_matmul_are_xlas(stride, padding, dtype):
    """Stride 1 as matrix products; a strided convolution keeps XLA's (the same either way)."""
    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.normal(0, 1, (3, 19, 19, 5)), dtype)
    kernel = jnp.asarray(rng.normal(0, 0.1, (5, 5, 5, 7)), dtype)

    def grads(impl):
        loss = lambda x, k: jnp.sum(jnp.sin(layers.conv(x, k, stride, padding,  # noqa: E731
                                                        grad_impl=impl).astype(jnp.float32)))
        return jax.jit(jax.grad(loss, (0, 1)))(x, kernel)

    by_matmul = jax.grad(lambda k: jnp.sum(layers.conv(x, k, stride, padding,
                                                       grad_impl="matmul")))
    program = str(jax.make_jaxpr(by_matmul)(kernel))   # the kernel's gradient: matrix products
    assert ("dot_general" in program) == (stride == 1)
    tolerance = 1e-5 if dtype == np.float32 else 2e-2
    for mine, xlas in zip(grads("matmul"), grads("xla")):
        assert mine.dtype == xlas.dtype
        np.testing.assert_allclose(np.asarray(mine, np.float32), np.asarray(xlas, np.float32),
                                   rtol=tolerance, atol=tolerance * float(jnp.max(jnp.abs(
                                       xlas.astype(jnp.float32)))))


def test_the_whole_networks_gradients_are_the_same_with_kernel_gradients_by_matmul():
    from flax import nnx  # noqa: PLC0415

    from alexnet_jax.model.alexnet import AlexNet  # noqa: PLC0415

    x = np.random.RandomState(5).uniform(-100, 100, (2, 67, 67, 3)).astype(np.float32)
    small = dict(input_size=67, conv_widths=(8, 16, 16, 16, 16), fc_widths=(32, 32),
                 num_classes=5, init_std=0.05, positive_bias=0.1)

    def gradients(**impl):
        model = AlexNet(**small, **impl, rngs=nnx.Rngs(0))
        return nnx.grad(lambda m: jnp.sum(jnp.sin(m(x))))(model)

    base, mine = gradients(), gradients(conv_grad_impl="matmul")
    for path, value in nnx.to_flat_state(nnx.state(base, nnx.Param)):
        other = dict(nnx.to_flat_state(nnx.state(mine, nnx.Param)))[path]
        np.testing.assert_allclose(np.asarray(other.value), np.asarray(value.value), rtol=2e-4,
                                   atol=2e-5 * float(np.max(np.abs(value.value))) + 1e-8,
                                   err_msg=str(path))


def test_auto_formulations_are_the_fastest_measured_on_each_platform():
    from configs.default import get_config  # noqa: PLC0415

    from alexnet_jax.model import build  # noqa: PLC0415

    config = get_config()
    assert config.model.lrn_impl == config.model.conv1_impl == config.model.conv_grad_impl == "auto"
    assert config.model.cpu_conv_impl == "auto"
    assert build.formulations(config, "gpu") == {"lrn_impl": "slices",
                                                 "conv1_impl": "space_to_depth",
                                                 "conv_grad_impl": "xla", "cpu_conv_impl": "none"}
    assert build.formulations(config, "cpu") == {"lrn_impl": "matmul",
                                                 "conv1_impl": "direct",
                                                 "conv_grad_impl": "matmul",
                                                 "cpu_conv_impl": "eigen"}
    assert build.compiler_options(config, "gpu") is None  # only the CPU's compiler is asked
    assert build.formulations(config) == build.formulations(config, "cpu")  # these tests: CPU
    with config.unlocked():
        config.model.lrn_impl = "slices"          # an explicit choice is kept everywhere
    assert build.formulations(config, "cpu")["lrn_impl"] == "slices"


def convolutions_by_library(compiled_text: str) -> dict[str, int]:
    """How many convolutions of a compiled XLA:CPU program YNNPACK computes (inside a
    `__ynn_fusion`) and how many XLA:CPU itself."""
    bodies = {}  # fused computation -> its text
    for block in compiled_text.split("\n\n"):
        name = block.lstrip().split(" ", 1)[0].lstrip("%")
        bodies[name] = block
    in_ynn = 0
    for line in compiled_text.splitlines():
        if '"__ynn_fusion"' in line:
            called = line.split("calls=%", 1)[1].split(",", 1)[0].split(" ", 1)[0]
            in_ynn += bodies[called].count(" convolution(")
    return {"ynnpack": in_ynn, "xla": compiled_text.count(" convolution(") - in_ynn}


@pytest.mark.parametrize("cpu_conv_impl", ["eigen", "ynnpack"])
def test_the_cpus_convolutions_run_in_the_library_chosen(cpu_conv_impl):
    """In the training step, the evaluation step and the eager forward pass: `eigen` (the CPU's
    auto) keeps every convolution in XLA:CPU, `ynnpack` leaves them to YNNPACK (JAX 0.10's
    default); matrix products stay YNNPACK's either way."""
    from configs.default import get_config  # noqa: PLC0415

    from alexnet_jax.model import build  # noqa: PLC0415
    from alexnet_jax.training import steps  # noqa: PLC0415
    from alexnet_jax.training.state import build_train_state  # noqa: PLC0415

    config = get_config()
    with config.unlocked():
        config.model.cpu_conv_impl = cpu_conv_impl
        # wide enough for YNNPACK to take a column's convolutions on 4 images a device (it
        # leaves smaller ones to XLA:CPU whatever the option)
        config.model.conv_widths, config.model.fc_widths = (32, 64, 64, 64, 64), TINY_FC
        config.data.crop_size = TINY_CROP
    options = build.compiler_options(config)
    mesh = build.build_mesh(config)
    graphdef, params, tx, opt_state = build_train_state(config, 10, mesh)
    model = nnx.merge(graphdef, params)
    x = jax.device_put(images(batch=16), sharding.sharding_for(mesh, "batch"))
    labels = jnp.zeros(16, jnp.int32)
    with jax.set_mesh(mesh):
        train = steps.make_train_step(graphdef, tx, steps.state_shardings(params, opt_state),
                                      jax.random.key(0), compiler_options=options)
        evaluate = steps.make_eval_step(graphdef, options)
        programs = {
            "train": train.lower(params, opt_state, x, labels, jnp.float32(0.01), jnp.int32(0)),
            "eval": evaluate.lower(params, x[:, None], labels, jnp.ones(16)),
            "forward": model._forward().lower(nnx.graphdef(model), mesh, nnx.state(model), x,
                                              [])}
    for name, lowered in programs.items():
        text = lowered.compile().as_text()
        counts = convolutions_by_library(text)
        assert sum(counts.values()) >= 5, (name, counts)  # conv1-conv5 (and gradients)
        if cpu_conv_impl == "eigen":
            assert counts == {"ynnpack": 0, "xla": sum(counts.values())}, name
        else:
            assert counts["ynnpack"] >= 4, (name, counts)  # conv2-conv5 at least
        assert '"__ynn_fusion"' in text, name  # fc6-fc8's products: YNNPACK's in both


def test_the_network_computes_the_same_with_either_cpu_convolution_library():
    from alexnet_jax.model import compiler  # noqa: PLC0415

    x = np.random.RandomState(6).uniform(-100, 100, (4, 67, 67, 3)).astype(np.float32)
    # one device, wide enough that YNNPACK takes conv2-conv5 when asked
    model = AlexNet(input_size=67, conv_widths=(32, 64, 64, 64, 64), fc_widths=(32, 32),
                    num_classes=5, init_std=0.05, positive_bias=0.1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    def loss(params):
        return jnp.sum(jnp.sin(nnx.merge(graphdef, params)(x)))

    def value_and_grads(impl):
        step = jax.jit(jax.value_and_grad(loss),
                       compiler_options=compiler.compiler_options(impl, "cpu"))
        used = convolutions_by_library(step.lower(params).compile().as_text())
        return step(params), used

    (eigen_loss, eigen), eigen_used = value_and_grads("eigen")
    (ynn_loss, ynn), ynn_used = value_and_grads("ynnpack")
    assert eigen_used["ynnpack"] == 0 and ynn_used["ynnpack"] >= 4  # two programs, not one
    np.testing.assert_allclose(float(eigen_loss), float(ynn_loss), rtol=1e-5)
    for (path, mine), (_, theirs) in zip(nnx.to_flat_state(eigen), nnx.to_flat_state(ynn)):
        np.testing.assert_allclose(np.asarray(mine.value), np.asarray(theirs.value), rtol=2e-4,
                                   atol=2e-5 * float(np.max(np.abs(theirs.value))) + 1e-8,
                                   err_msg=str(path))
