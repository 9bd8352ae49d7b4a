"""Pure training and evaluation steps, jitted with explicit shardings.

The training state is (params, opt_state): params a nested dict {layer: {kernel, bias}} of
arrays sharded as the model's table says; the step number and learning rate come from the host
each step, so a learning-rate change never recompiles.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from alexnet_jax import optim

Params = dict[str, Any]


def cross_entropy(logits_BxK: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy (the paper's multinomial logistic regression)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)


def topk_correct(probs_BxK: jax.Array, labels_B: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the k most probable classes."""
    k = min(k, probs_BxK.shape[-1])
    label_prob = jnp.take_along_axis(probs_BxK, labels_B[:, None], axis=-1)
    # The label is in the top k when fewer than k classes beat it (ties count for the label).
    return (jnp.sum(probs_BxK > label_prob, axis=-1) < k).astype(jnp.float32)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    state_shardings, base_key: jax.Array) -> Callable:
    """step(params, opt_state, images, labels, learning_rate, step) ->
    (params, opt_state, metrics); params and opt_state are donated."""

    def train_step(params: Params, opt_state, images, labels, learning_rate, step):
        dropout_key = jax.random.fold_in(base_key, step)

        def loss_fn(params):
            logits = nnx.merge(graphdef, params)(images, dropout_key=dropout_key)
            return cross_entropy(logits, labels).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        opt_state = optim.set_learning_rate(opt_state, learning_rate)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        probs = jax.nn.softmax(logits)
        metrics = {"loss": loss,
                   "top1_error": 1.0 - topk_correct(probs, labels, 1).mean(),
                   "top5_error": 1.0 - topk_correct(probs, labels, 5).mean()}
        return params, opt_state, metrics

    params_sharding, opt_sharding = state_shardings
    return jax.jit(train_step, donate_argnums=(0, 1),
                   out_shardings=(params_sharding, opt_sharding, None))


def make_eval_step(graphdef: nnx.GraphDef) -> Callable:
    """step(params, images (B, V, H, W, 3), labels, mask) -> summed counts over the batch.

    With V views the softmax outputs are averaged over the views (the paper's 10-patch test).
    """

    def eval_step(params: Params, images, labels, mask):
        batch, views = images.shape[:2]
        flat = images.reshape((batch * views, *images.shape[2:]))
        logits = nnx.merge(graphdef, params)(flat)
        probs = jax.nn.softmax(logits).reshape(batch, views, -1).mean(axis=1)
        return {"count": mask.sum(),
                "top1_correct": (topk_correct(probs, labels, 1) * mask).sum(),
                "top5_correct": (topk_correct(probs, labels, 5) * mask).sum(),
                "loss": (cross_entropy(jnp.log(probs + 1e-12), labels) * mask).sum()}

    return jax.jit(eval_step)


def state_shardings(params: Params, opt_state) -> tuple[Any, Any]:
    """The shardings of a training state's arrays, as the arrays carry them."""
    return jax.tree.map(lambda x: x.sharding, (params, opt_state))
