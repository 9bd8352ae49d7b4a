"""The training state of a config: its model, freshly initialised and sharded, and the
optimizer with its state."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh

from alexnet_jax.model.build import build_model
from alexnet_jax.training import optim


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Momentum SGD with the paper's (or decoupled) weight decay, or LARS."""
    o = config.optimizer
    rate = optim.initial_learning_rate(o.learning_rate, config.train.batch_size, o.lr_scaling)
    if o.name == "lars":
        return optim.create_lars(rate, o.momentum, o.weight_decay, o.trust_coefficient,
                                 o.decay_biases, dict(o.layer_weight_decay))
    return optim.create_optimizer(momentum=o.momentum, weight_decay=o.weight_decay,
                                  decay_mode=o.decay_mode, decay_biases=o.decay_biases,
                                  initial_learning_rate=rate,
                                  layer_weight_decay=dict(o.layer_weight_decay))


class TrainState(NamedTuple):
    """What the training step works on: the model's structure, its parameters (a nested dict
    {layer: {kernel, bias}} of sharded arrays), the optimizer and its state."""

    graphdef: Any
    params: dict[str, Any]
    tx: optax.GradientTransformation
    opt_state: Any


def build_train_state(config: ml_collections.ConfigDict, num_classes: int,
                      mesh: Mesh) -> TrainState:
    """A freshly initialised model (sharded on `mesh`) and optimizer state."""
    graphdef, params = nnx.split(build_model(config, num_classes, mesh))
    params = params.to_pure_dict()
    tx = build_optimizer(config)
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init)(params)
    return TrainState(graphdef, params, tx, opt_state)
