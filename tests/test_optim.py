"""The optimizer's update rule against a hand-written NumPy version of paper section 5."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax.training import optim

LEARNING_RATES = [0.01, 0.01, 0.01, 0.001, 0.001, 0.0001]  # two drops by 10


def params_and_grads(seed=0, steps=len(LEARNING_RATES)):
    rng = np.random.RandomState(seed)
    params = {"conv1": {"kernel": rng.randn(3, 4).astype(np.float32),
                        "bias": rng.randn(4).astype(np.float32)}}
    grads = [{"conv1": {"kernel": rng.randn(3, 4).astype(np.float32),
                        "bias": rng.randn(4).astype(np.float32)}} for _ in range(steps)]
    return params, grads


def run_optimizer(mode, decay_biases=False):
    params, grads = params_and_grads()
    tx = optim.create_optimizer(momentum=0.9, weight_decay=0.0005, decay_mode=mode,
                                decay_biases=decay_biases, initial_learning_rate=0.5)
    state = tx.init(params)
    params = jax.tree.map(jnp.asarray, params)
    for lr, g in zip(LEARNING_RATES, grads):
        state = optim.set_learning_rate(state, lr)
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return jax.tree.map(np.asarray, params)


def numpy_paper_rule(decay_biases=False):
    """v <- 0.9 v - 0.0005 lr w - lr g;  w <- w + v   (biases without decay unless asked)."""
    params, grads = params_and_grads()
    w = {k: v.astype(np.float64) for k, v in params["conv1"].items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for lr, g in zip(LEARNING_RATES, grads):
        for name in w:
            decay = 0.0005 if (name == "kernel" or decay_biases) else 0.0
            v[name] = 0.9 * v[name] - decay * lr * w[name] - lr * g["conv1"][name]
            w[name] = w[name] + v[name]
    return w


def numpy_decoupled_rule():
    """v <- 0.9 v - lr g;  w <- w + v - 0.0005 lr w."""
    params, grads = params_and_grads()
    w = {k: v.astype(np.float64) for k, v in params["conv1"].items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    for lr, g in zip(LEARNING_RATES, grads):
        for name in w:
            decay = 0.0005 if name == "kernel" else 0.0
            v[name] = 0.9 * v[name] - lr * g["conv1"][name]
            w[name] = w[name] + v[name] - decay * lr * w[name]
    return w


@pytest.mark.parametrize("decay_biases", [False, True])
def test_paper_mode_is_the_paper_rule(decay_biases):
    got = run_optimizer("paper", decay_biases)["conv1"]
    want = numpy_paper_rule(decay_biases)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)


def test_decoupled_mode():
    got = run_optimizer("decoupled")["conv1"]
    want = numpy_decoupled_rule()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
    paper = numpy_paper_rule()
    assert not np.allclose(got["kernel"], paper["kernel"], rtol=1e-7, atol=0)


def test_paper_rule_differs_from_optax_sgd_after_a_learning_rate_drop():
    """optax.sgd scales the accumulated raw gradients by the *current* rate, so after a drop
    it forgets the old rate at once; the paper's velocity keeps it. Without decay and with a
    constant rate, the two agree."""
    params, grads = params_and_grads()
    ours = run_optimizer("paper")["conv1"]["bias"]  # biases: no decay by default
    schedule = lambda count: jnp.asarray(LEARNING_RATES)[count]  # noqa: E731
    tx = optax.sgd(schedule, momentum=0.9)
    state, p = tx.init(params), jax.tree.map(jnp.asarray, params)
    for g in grads:
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
    assert not np.allclose(np.asarray(p["conv1"]["bias"]), ours, rtol=1e-4)


def test_learning_rate_lives_in_the_state():
    params, _ = params_and_grads()
    tx = optim.create_optimizer(0.9, 0.0005, "paper", False, 0.01)
    state = tx.init(params)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.01)
    assert float(optim.set_learning_rate(state, 0.001).hyperparams["learning_rate"]) == \
        pytest.approx(0.001)


def test_unknown_decay_mode_is_refused():
    with pytest.raises(ValueError, match="decay_mode"):
        optim.momentum_sgd(0.01, decay_mode="adamw")


def test_lars_moves_each_kernel_by_a_fixed_fraction_of_its_norm_and_biases_plainly():
    """You et al. 2017: a kernel's step is rate x trust x |w| / |g + wd w| x (g + wd w),
    whatever the size of its gradient; biases get neither trust ratio nor decay (optax's
    masks), so their step is rate x g. The rate is set like the momentum optimizer's."""
    rng = np.random.RandomState(0)
    params = {"conv1": {"kernel": 1e-4 * rng.randn(5, 5, 3, 8).astype(np.float32),
                        "bias": np.zeros(8, np.float32)},
              "fc": {"kernel": rng.randn(20, 10).astype(np.float32),
                     "bias": np.ones(10, np.float32)}}
    grads = {"conv1": {"kernel": 100 * rng.randn(5, 5, 3, 8).astype(np.float32),
                       "bias": rng.randn(8).astype(np.float32)},
             "fc": {"kernel": 1e-3 * rng.randn(20, 10).astype(np.float32),
                    "bias": rng.randn(10).astype(np.float32)}}
    tx = optim.create_lars(0.5, momentum=0.9, weight_decay=0.0005, trust_coefficient=0.001)
    state = optim.set_learning_rate(tx.init(params), 2.0)
    updates, _ = tx.update(grads, state, params)
    for layer in ("conv1", "fc"):
        kernel, grad = params[layer]["kernel"], grads[layer]["kernel"]
        step = np.asarray(updates[layer]["kernel"])
        np.testing.assert_allclose(np.linalg.norm(step) / np.linalg.norm(kernel),
                                   2.0 * 0.001, rtol=1e-4)   # the same fraction for both
        direction = grad + 0.0005 * kernel                     # the decay inside the direction
        np.testing.assert_allclose(step / np.linalg.norm(step),
                                   -direction / np.linalg.norm(direction), atol=1e-5)
        np.testing.assert_allclose(np.asarray(updates[layer]["bias"]),
                                   -2.0 * grads[layer]["bias"], rtol=1e-5)


def test_lars_honours_per_layer_decay_and_decayed_biases():
    """With a zero gradient the update is the decay alone: a layer exempted by
    layer_weight_decay does not move, another layer's value is used, and decay_biases decays
    the biases (without the trust ratio, which LARS gives kernels only)."""
    params = {"conv1": {"kernel": np.full((3, 3), 2.0, np.float32),
                        "bias": np.full(3, 1.0, np.float32)},
              "fc8": {"kernel": np.full((3, 3), 2.0, np.float32),
                      "bias": np.full(3, 1.0, np.float32)},
              "fc7": {"kernel": np.full((3, 3), 2.0, np.float32),
                      "bias": np.full(3, 1.0, np.float32)}}
    zero = jax.tree.map(np.zeros_like, params)
    tx = optim.create_lars(0.1, momentum=0.0, weight_decay=0.01, trust_coefficient=1.0,
                           decay_biases=True, layer_weight_decay={"fc8": 0.0, "fc7": 0.05})
    updates, _ = tx.update(zero, tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(updates["fc8"]["kernel"]), 0.0)
    # kernels: decay 0.01 x 2 scaled by the trust ratio |w| / |decay| to a step of |w| x rate
    np.testing.assert_allclose(np.asarray(updates["conv1"]["kernel"]), -0.1 * 2.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(updates["fc7"]["kernel"]), -0.1 * 2.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(updates["conv1"]["bias"]), -0.1 * 0.01, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(updates["fc7"]["bias"]), -0.1 * 0.05, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(updates["fc8"]["bias"]), 0.0)
    plain = optim.create_lars(0.1, momentum=0.0, weight_decay=0.01, trust_coefficient=1.0)
    updates, _ = plain.update(zero, plain.init(params), params)
    np.testing.assert_array_equal(np.asarray(updates["conv1"]["bias"]), 0.0)  # default: exempt
