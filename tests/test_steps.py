"""The jitted training and evaluation steps."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_CONV, TINY_CROP, TINY_FC

from alexnet_jax.common import sharding
from alexnet_jax.training import steps
from alexnet_jax.training.state import build_train_state


def setup(mesh, **model_overrides):
    from configs.default import get_config  # noqa: PLC0415
    config = get_config()
    with config.unlocked():
        config.data.crop_size = TINY_CROP
        config.model.conv_widths, config.model.fc_widths = TINY_CONV, TINY_FC
        for key, value in model_overrides.items():
            setattr(config.model, key, value)
    graphdef, params, tx, opt_state = build_train_state(config, 10, mesh)
    return graphdef, params, opt_state, tx


def fixed_batch(mesh, n=8, seed=0):
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, 10, n).astype(np.int32)
    images = rng.uniform(-60, 60, (n, TINY_CROP, TINY_CROP, 3)).astype(np.float32)
    images += labels[:, None, None, None] * 10.0  # something to learn
    put = lambda x: jax.device_put(x, sharding.sharding_for(mesh, "batch"))  # noqa: E731
    return put(images), put(labels)


@pytest.mark.slow
def test_first_loss_is_uniform_and_training_lowers_it():
    mesh = jax.make_mesh((2, 2), ("data", "model"), devices=jax.devices()[:4])
    graphdef, params, opt_state, tx = setup(mesh)
    train_step = steps.make_train_step(graphdef, tx, steps.state_shardings(params, opt_state),
                                       jax.random.key(0))
    images, labels = fixed_batch(mesh)
    losses = []
    with jax.set_mesh(mesh):
        for step in range(25):
            lr = 0.05 if step < 20 else 0.005  # a rate change must not recompile
            params, opt_state, metrics = train_step(params, opt_state, images, labels,
                                                    jnp.float32(lr), jnp.int32(step))
            losses.append(float(metrics["loss"]))
    # std-0.01 weights give logits of std ~0.06 here: the first loss is close to ln(10)
    assert losses[0] == pytest.approx(math.log(10), abs=1e-2)
    assert losses[-1] < losses[0] - 0.2
    assert train_step._cache_size() == 1
    assert float(opt_state.hyperparams["learning_rate"]) == pytest.approx(0.005)
    assert params["conv1"]["kernel"].sharding.spec[0] == "model"  # sharding kept


def test_donation_frees_the_old_state():
    mesh = sharding.single_device_mesh()
    graphdef, params, opt_state, tx = setup(mesh)
    train_step = steps.make_train_step(graphdef, tx, steps.state_shardings(params, opt_state),
                                       jax.random.key(0))
    images, labels = fixed_batch(mesh)
    old_kernel = params["fc6"]["kernel"]
    with jax.set_mesh(mesh):
        train_step(params, opt_state, images, labels, jnp.float32(0.01), jnp.int32(0))
    assert old_kernel.is_deleted()


def test_topk_correct():
    scores = jnp.log(jnp.asarray([[0.1, 0.5, 0.2, 0.05, 0.05, 0.1],
                                  [0.3, 0.1, 0.1, 0.2, 0.2, 0.1]]))
    labels = jnp.asarray([2, 1])
    np.testing.assert_array_equal(steps.topk_correct(scores, labels, 1), [0.0, 0.0])
    np.testing.assert_array_equal(steps.topk_correct(scores, labels, 2), [1.0, 0.0])
    # the second label ties with two other classes for 4th place: ties count against it
    np.testing.assert_array_equal(steps.topk_correct(scores, labels, 5), [1.0, 0.0])
    np.testing.assert_array_equal(steps.topk_correct(scores, labels, 6), [1.0, 1.0])


def test_ties_and_underflow_count_against_the_label():
    labels = jnp.asarray([3, 3])
    equal = jnp.zeros((2, 10))                    # the same output for every class
    confident = jnp.zeros((2, 10)).at[:, 0].set(120.0)  # softmax of the rest underflows to 0
    for logits in (equal, confident):
        np.testing.assert_array_equal(steps.topk_correct(logits, labels, 1), [0.0, 0.0])
        np.testing.assert_array_equal(steps.topk_correct(logits, labels, 5), [0.0, 0.0])
    # the 10-view score keeps the order that the averaged probabilities lose to underflow
    views = jnp.zeros((1, 2, 10)).at[0, :, 0].set(120.0).at[0, :, 3].set(1.0)
    scores = steps.mean_softmax_log(views)
    assert bool(jnp.all(jnp.isfinite(scores)))
    np.testing.assert_array_equal(steps.topk_correct(scores, labels[:1], 2), [1.0])
    np.testing.assert_array_equal(steps.topk_correct(scores, jnp.asarray([4]), 5), [0.0])


def test_a_non_finite_score_is_never_correct():
    """No comparison with NaN is true, so a NaN row once ranked its label first (top-1
    "correct"); an infinite score in the row is no prediction either, and so is a 10-view
    average holding a NaN view."""
    labels = jnp.asarray([3, 3, 3])
    scores = jnp.zeros((3, 10)).at[:, 3].set(5.0)           # each row: the label is first
    scores = scores.at[0].set(jnp.nan).at[1, 7].set(jnp.inf).at[2, 0].set(-jnp.inf)
    for k in (1, 5):
        np.testing.assert_array_equal(steps.topk_correct(scores, labels, k), [0.0, 0.0, 0.0])
    views = jnp.zeros((1, 10, 10)).at[0, :, 3].set(5.0).at[0, 4].set(jnp.nan)
    averaged = steps.mean_softmax_log(views)
    np.testing.assert_array_equal(steps.topk_correct(averaged, labels[:1], 5), [0.0])
    np.testing.assert_array_equal(
        steps.topk_correct(jnp.zeros((1, 10)).at[0, 3].set(5.0), labels[:1], 1), [1.0])


@pytest.mark.slow
def test_eval_step_masks_padding_and_averages_views():
    mesh = jax.make_mesh((2, 1), ("data", "model"), devices=jax.devices()[:2])
    graphdef, params, _, _ = setup(mesh, columns=2, init_std=0.1, positive_bias=0.1)
    eval_step = steps.make_eval_step(graphdef)
    model = nnx.merge(graphdef, params)
    rng = np.random.RandomState(0)
    views = rng.uniform(-60, 60, (4, 3, TINY_CROP, TINY_CROP, 3)).astype(np.float32)
    labels = np.asarray([1, 2, 3, 4], np.int32)
    mask = np.asarray([1, 1, 1, 0], np.float32)
    put = lambda x: jax.device_put(x, sharding.sharding_for(mesh, "batch"))  # noqa: E731
    with jax.set_mesh(mesh):
        sums = jax.device_get(eval_step(params, put(views), put(labels), put(mask)))
        probs = np.stack([np.asarray(jax.nn.softmax(model(put(views[:, v])))) for v in range(3)])
    averaged = probs.mean(axis=0)
    top1 = (averaged.argmax(-1) == labels)[:3].sum()
    top5 = [labels[i] in np.argsort(-averaged[i])[:5] for i in range(3)]
    assert float(sums["count"]) == 3.0
    assert float(sums["top1_correct"]) == top1
    assert float(sums["top5_correct"]) == sum(top5)
    want_loss = -np.log(averaged[np.arange(3), labels[:3]]).sum()
    assert float(sums["loss"]) == pytest.approx(want_loss, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("mesh_shape,unroll", [((1, 1), True), ((1, 2), True),
                                               ((1, 1), False), ((1, 2), False)])
def test_accumulated_micro_batches_give_the_parameters_of_the_whole_batch(mesh_shape, unroll):
    """k = 4 micro-batches of 2 against one batch of 8, dropout on (each micro-batch takes
    its rows of the batch's masks): the same update, with the micro-batches unrolled (CPUs) and
    in a loop (accelerators)."""
    mesh = jax.make_mesh(mesh_shape, ("data", "model"),
                         devices=jax.devices()[:mesh_shape[0] * mesh_shape[1]])
    results = []
    for k in (1, 4):
        graphdef, params, opt_state, tx = setup(mesh, columns=2, init_std=0.1,
                                                positive_bias=0.1, dropout_rate=0.5)
        train_step = steps.make_train_step(graphdef, tx, steps.state_shardings(params, opt_state),
                                           jax.random.key(0), accumulate_steps=k,
                                           unroll=unroll)
        images, labels = fixed_batch(mesh)
        with jax.set_mesh(mesh):
            for step in range(2):
                params, opt_state, metrics = train_step(params, opt_state, images, labels,
                                                        jnp.float32(0.01), jnp.int32(step))
        results.append((jax.device_get(params), float(metrics["loss"])))
    (whole, whole_loss), (micro, micro_loss) = results
    assert micro_loss == pytest.approx(whole_loss, rel=1e-5)
    for layer in whole:
        for name in whole[layer]:
            np.testing.assert_allclose(micro[layer][name], whole[layer][name], rtol=2e-5,
                                       atol=1e-7)
    assert not np.allclose(micro["fc8"]["kernel"], setup(mesh, columns=2, init_std=0.1,
                                                         positive_bias=0.1)[1]["fc8"]["kernel"])
