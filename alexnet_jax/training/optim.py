"""Momentum SGD with weight decay, the paper's way (section 5) or decoupled.

`paper` (default), exactly the paper's rule with the learning rate inside the velocity:
    v <- momentum * v - weight_decay * lr * w - lr * grad
    w <- w + v
`decoupled`: the decay bypasses the momentum (it is not accumulated in v):
    v <- momentum * v - lr * grad
    w <- w + v - weight_decay * lr * w

Note that optax.sgd(momentum=...) differs from the paper when the learning rate changes: it
accumulates raw gradients and multiplies by the *current* rate, while the paper's velocity keeps
the rate each gradient was taken with.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

DECAY_MODES = ("paper", "decoupled")


class MomentumState(NamedTuple):
    velocity: Any


def momentum_sgd(learning_rate: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                 decay_mode: str = "paper",
                 decay_scale: Callable[[Any], Any] | None = None) -> optax.GradientTransformation:
    """The paper's optimizer as an optax transformation; apply with optax.apply_updates.

    `decay_scale(params)` gives a pytree of floats multiplying `weight_decay` per parameter
    (default: 1 everywhere; 0 exempts a parameter).
    """
    if decay_mode not in DECAY_MODES:
        raise ValueError(f"decay_mode must be one of {DECAY_MODES}, got {decay_mode!r}")

    def init(params):
        return MomentumState(velocity=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params):
        if params is None:
            raise ValueError("momentum_sgd needs the parameters for its weight decay")
        scale = decay_scale(params) if decay_scale else jax.tree.map(lambda _: 1.0, params)
        decay = jax.tree.map(lambda w, c: (c * weight_decay * learning_rate) * w if c
                             else jnp.zeros_like(w), params, scale)
        if decay_mode == "paper":
            velocity = jax.tree.map(lambda v, d, g: momentum * v - d - learning_rate * g,
                                    state.velocity, decay, grads)
            return velocity, MomentumState(velocity)
        velocity = jax.tree.map(lambda v, g: momentum * v - learning_rate * g,
                                state.velocity, grads)
        return jax.tree.map(jnp.subtract, velocity, decay), MomentumState(velocity)

    return optax.GradientTransformation(init, update)


def decay_scales(weight_decay: float, decay_biases: bool,
                 layer_weight_decay: dict[str, float] | None = None) -> Callable[[Any], Any]:
    """params -> a pytree of the factors multiplying `weight_decay` per parameter: 0 for biases
    (cuda-convnet decayed weights only) unless `decay_biases`, layer / weight_decay for the
    layers `layer_weight_decay` names (cuda-convnet's per-layer `wc`), else 1."""
    overrides = tuple(sorted((layer_weight_decay or {}).items()))

    def scale(params):
        def of(path, _):
            if _is_bias(path) and not decay_biases:
                return 0.0
            layer = getattr(path[0], "key", None)
            for name, value in overrides:
                if name == layer:
                    return value / weight_decay if weight_decay else 0.0
            return 1.0
        return jax.tree_util.tree_map_with_path(of, params)

    return scale


def create_optimizer(momentum: float, weight_decay: float, decay_mode: str,
                     decay_biases: bool, initial_learning_rate: float,
                     layer_weight_decay: dict[str, float] | None = None
                     ) -> optax.GradientTransformation:
    """The optimizer with its learning rate held in its state (settable every step); which
    parameters decay, and how much: `decay_scales`."""
    return optax.inject_hyperparams(momentum_sgd, static_args=("decay_mode", "decay_scale"))(
        learning_rate=initial_learning_rate, momentum=momentum, weight_decay=weight_decay,
        decay_mode=decay_mode,
        decay_scale=decay_scales(weight_decay, decay_biases, layer_weight_decay))


PAPER_BATCH = 128  # the paper's batch: optimizer.lr_scaling=linear scales by batch / 128


def initial_learning_rate(learning_rate: float, batch_size: int, lr_scaling: str) -> float:
    """The run's initial rate: as configured, or (lr_scaling=linear, Goyal et al. 2017) scaled
    by batch_size / 128, the paper's batch."""
    return learning_rate * (batch_size / PAPER_BATCH if lr_scaling == "linear" else 1.0)


def lars(learning_rate: float, weight_decay: float, momentum: float, trust_coefficient: float,
         decay_scale: Callable[[Any], Any]) -> optax.GradientTransformation:
    """optax.lars's chain (You et al. 2017) with per-parameter weight decay: the decay
    (`weight_decay` x `decay_scale(params)` x w) added to the gradient, each kernel's update
    scaled by the trust ratio |w| / |update| (biases: not), then the rate and the momentum."""

    def add_decay(updates, state, params):
        return jax.tree.map(lambda g, w, c: g + (c * weight_decay) * w if c else g,
                            updates, params, decay_scale(params)), state

    not_bias = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: not _is_bias(path), params)
    return optax.chain(
        optax.GradientTransformation(lambda params: optax.EmptyState(), add_decay),
        optax.masked(optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient),
                     not_bias),
        optax.scale_by_learning_rate(learning_rate),
        optax.trace(decay=momentum))


def create_lars(learning_rate: float, momentum: float, weight_decay: float,
                trust_coefficient: float, decay_biases: bool = False,
                layer_weight_decay: dict[str, float] | None = None
                ) -> optax.GradientTransformation:
    """LARS with its hyperparameters (the rate, momentum, decay and trust coefficient) in its
    state like create_optimizer's; decay as `decay_scales` says (biases exempt by default)."""
    return optax.inject_hyperparams(lars, static_args=("decay_scale",))(
        learning_rate=learning_rate, weight_decay=weight_decay, momentum=momentum,
        trust_coefficient=trust_coefficient,
        decay_scale=decay_scales(weight_decay, decay_biases, layer_weight_decay))


def set_learning_rate(opt_state, learning_rate: jax.Array):
    """The same optimizer state with a new learning rate (used by the next update)."""
    hyperparams = dict(opt_state.hyperparams, learning_rate=jnp.asarray(
        learning_rate, opt_state.hyperparams["learning_rate"].dtype))
    return opt_state._replace(hyperparams=hyperparams)


def _is_bias(path) -> bool:
    return any(getattr(entry, "key", None) == "bias" for entry in path)
