"""Pure training and evaluation steps, jitted with explicit shardings.

The training state is (params, opt_state): params a nested dict {layer: {kernel, bias}} of
arrays sharded as the model's table says; the step number and learning rate come from the host
each step, so a learning-rate change never recompiles.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax.common.sharding import DATA_AXIS, MODEL_AXIS
from alexnet_jax.training import optim

Params = dict[str, Any]


def cross_entropy(logits_BxK: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy (the paper's multinomial logistic regression)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)


def label_scores(scores_BxK: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Each row's score for its label. A masked sum, not a gather: elementwise work keeps the
    scores' sharding whatever it is (a gather between scores and labels sharded differently,
    as after the 10-view reshape of a one-image step, has no unambiguous output sharding)."""
    is_label = jnp.arange(scores_BxK.shape[-1]) == labels_B[:, None]
    return jnp.sum(jnp.where(is_label, scores_BxK, 0.0), axis=-1)


def topk_correct(scores_BxK: jax.Array, labels_B: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the k highest-scoring classes. Scores are logits or log
    probabilities, never probabilities: those underflow to exact zeros that tie. A tie counts
    against the label (equal outputs for every class are no correct prediction), and so does a
    row holding a NaN or infinite score (no comparison with NaN is true: it would rank the label
    first)."""
    k = min(k, scores_BxK.shape[-1])
    label_score = label_scores(scores_BxK, labels_B)[:, None]
    # at least as high as the label's score: the label itself and every class that beats or
    # ties it; the label is in the top k when that makes at most k classes
    in_top_k = jnp.sum(scores_BxK >= label_score, axis=-1) <= k
    finite = jnp.all(jnp.isfinite(scores_BxK), axis=-1)
    return (in_top_k & finite).astype(jnp.float32)


def mean_softmax_log(logits_BxVxK: jax.Array) -> jax.Array:
    """log of the softmax averaged over the V views (the paper's 10-patch prediction), computed
    without leaving log space, so no class's probability underflows to a tie at zero."""
    log_probs = jax.nn.log_softmax(logits_BxVxK.astype(jnp.float32), axis=-1)
    return jax.nn.logsumexp(log_probs, axis=1) - jnp.log(logits_BxVxK.shape[1])


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    state_shardings, base_key: jax.Array, accumulate_steps: int = 1,
                    unroll: bool | None = None,
                    compiler_options: dict[str, str] | None = None) -> Callable:
    """step(params, opt_state, images, labels, learning_rate, step[, stop_votes]) ->
    (params, opt_state, metrics); params and opt_state are donated. With `stop_votes`
    (StopVotes: one per device), metrics["stop"] is their maximum, the same on every process.

    `accumulate_steps` = k > 1: the batch is computed as k micro-batches (rows i, i + k, ...:
    each device keeps its own rows, nothing moves) whose gradients are averaged before the one
    update, so the update is the whole batch's and memory that of a micro-batch. The dropout
    masks are the whole batch's too (drawn from the step's key as k = 1 draws them), each
    micro-batch taking its rows: the update is the same for any k, with dropout on.
    `unroll`: the micro-batches unrolled (True) or in a loop (False); None: unrolled on CPUs.
    `compiler_options`: XLA's, for the step (model.build.compiler_options: the CPU's
    convolution library)."""

    def loss_and_grads(params, images, labels, dropout_key, dropout_masks=None):
        def loss_fn(params):
            logits = nnx.merge(graphdef, params)(images, dropout_key=dropout_key,
                                                 dropout_masks=dropout_masks)
            return cross_entropy(logits, labels).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, {"loss": loss,
                       "top1_error": 1.0 - topk_correct(logits, labels, 1).mean(),
                       "top5_error": 1.0 - topk_correct(logits, labels, 5).mean()}

    # XLA:CPU runs the network ~20x slower inside a loop than unrolled (CIFAR-10 net, batch
    # 1,024 as 8 x 128: 15 img/s in a loop, 323 unrolled; 209 at batch 128): on CPUs the
    # micro-batches are unrolled. On accelerators a loop runs them one after the other, so
    # memory stays that of one micro-batch.
    if unroll is None:
        unroll = jax.devices()[0].platform == "cpu"

    def accumulated(params, images, labels, dropout_key):
        micro = lambda x: jnp.swapaxes(  # noqa: E731 - (B, ...) -> (k, B / k, ...)
            x.reshape(x.shape[0] // accumulate_steps, accumulate_steps, *x.shape[1:]), 0, 1)

        # the whole batch's masks (a few units a row: small beside the activations)
        masks = nnx.merge(graphdef, params).dropout_masks(images.shape[0], dropout_key)

        def one(total, inputs):
            images_i, labels_i, masks_i = inputs
            grads, metrics = loss_and_grads(params, images_i, labels_i, None, masks_i)
            return jax.tree.map(jnp.add, total, (grads, metrics)), None

        # zeros laid out like what they add up (gradients sharded like the parameters)
        zeros = (jax.tree.map(jnp.zeros_like, params),
                 {key: jnp.zeros((), jnp.float32) for key in ("loss", "top1_error",
                                                             "top5_error")})
        (grads, metrics), _ = jax.lax.scan(
            one, zeros, (micro(images), micro(labels), [micro(m) for m in masks]),
            unroll=unroll)
        return jax.tree.map(lambda x: x / accumulate_steps, (grads, metrics))

    def train_step(params: Params, opt_state, images, labels, learning_rate, step,
                   stop_votes=None):
        dropout_key = jax.random.fold_in(base_key, step)
        compute = loss_and_grads if accumulate_steps == 1 else accumulated
        grads, metrics = compute(params, images, labels, dropout_key)
        opt_state = optim.set_learning_rate(opt_state, learning_rate)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        # the rate this update used, as the optimizer state held it: what the log reports
        metrics["learning_rate"] = opt_state.hyperparams["learning_rate"]
        if stop_votes is not None:
            metrics["stop"] = jnp.max(stop_votes)
        return params, opt_state, metrics

    params_sharding, opt_sharding = state_shardings
    return jax.jit(train_step, donate_argnums=(0, 1),
                   out_shardings=(params_sharding, opt_sharding, None),
                   compiler_options=compiler_options)


def make_eval_step(graphdef: nnx.GraphDef,
                   compiler_options: dict[str, str] | None = None) -> Callable:
    """step(params, views (B, V, H, W, 3), labels, mask[, mean_views]) -> summed counts.

    With V views the softmax outputs are averaged over the views (the paper's 10-patch test),
    in log space. Views may arrive as uint8 pixels with `mean_views` (V, H, W, 3), the mean
    image's matching windows, subtracted here on the device (a quarter of the bytes to send).
    The B x V views go through the network together: evaluation.evaluate feeds B = the
    evaluation batch / V images, so a step holds as many network inputs for 10 views as for
    the centre crop. `compiler_options`: XLA's, as for make_train_step."""

    def eval_step(params: Params, images, labels, mask, mean_views=None):
        batch, views = images.shape[:2]
        inputs = images.astype(jnp.float32) - (0.0 if mean_views is None else mean_views)
        flat = inputs.reshape((batch * views, *images.shape[2:]))
        logits = nnx.merge(graphdef, params)(flat)
        scores = mean_softmax_log(logits.reshape(batch, views, -1))
        label_score = label_scores(scores, labels)
        return {"count": mask.sum(),
                "top1_correct": (topk_correct(scores, labels, 1) * mask).sum(),
                "top5_correct": (topk_correct(scores, labels, 5) * mask).sum(),
                "loss": (-label_score * mask).sum()}

    return jax.jit(eval_step, compiler_options=compiler_options)


class StopVotes:
    """One vote per device (0 or 1) that this process wants to stop, as a global array for the
    training step: every process contributes its devices' votes."""

    def __init__(self, mesh):
        self._sharding = NamedSharding(mesh, P((DATA_AXIS, MODEL_AXIS)))
        self._shape = (mesh.devices.size,)
        self._cached = {}

    def __call__(self, stop: bool) -> jax.Array:
        if stop not in self._cached:
            self._cached[stop] = jax.make_array_from_callback(
                self._shape, self._sharding, lambda index: np.full((1,), stop, np.int32))
        return self._cached[stop]


def all_finite(tree) -> jax.Array:
    """Whether every value of every array in the pytree is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def state_shardings(params: Params, opt_state) -> tuple[Any, Any]:
    """The shardings of a training state's arrays, as the arrays carry them."""
    return jax.tree.map(lambda x: x.sharding, (params, opt_state))
