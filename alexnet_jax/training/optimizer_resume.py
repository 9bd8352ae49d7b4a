"""Resuming with other optimizer settings: the new values are applied, and said.

A checkpoint carries the optimizer's hyperparameters (momentum, weight decay, the learning rate)
in its state and the schedule's current rate in its progress record. A run resumed with other
`optimizer.*` values in its config uses the new ones, never silently the old:
- `optimizer.learning_rate` is the initial rate; the schedule's current rate is scaled by
  new / old, so the reductions made so far are kept (0.01 reduced once to 0.001, resumed with
  0.005: 0.0005);
- `optimizer.momentum` and `optimizer.weight_decay` replace the values in the state;
- `decay_mode`, `decay_biases` and `layer_weight_decay` are read from the config at every start.
Every change is logged and recorded in metrics.jsonl, so config.json (the new values) and the
run agree. The velocity is kept: it is the run's momentum, whatever its coefficient.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from alexnet_jax.common.run_files import CONFIG_FILE
from alexnet_jax.training.schedule import Schedule

STATE_KEYS = ("momentum", "weight_decay")  # hyperparameters held in the optimizer state


def optimizer_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config's optimizer section as plain JSON values (saved in every checkpoint)."""
    return json.loads(config.optimizer.to_json())


def previous_settings(progress: dict[str, Any], workdir: Path) -> dict[str, Any] | None:
    """The optimizer settings the checkpoint was trained with: recorded in its progress, or
    (a checkpoint written before they were) in the config.json of the run that wrote it."""
    if "optimizer" in progress:
        return progress["optimizer"]
    path = Path(workdir) / CONFIG_FILE
    if path.exists():
        return json.loads(path.read_text()).get("optimizer")
    return None


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """"optimizer.<key>: old -> new" for each key whose value differs."""
    return [f"optimizer.{key}: {old.get(key)!r} -> {new.get(key)!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def apply_new_settings(config: ml_collections.ConfigDict, progress: dict[str, Any],
                       workdir: Path, opt_state, schedule: Schedule) -> tuple[Any, list[str]]:
    """The optimizer state and schedule of a resumed run with the config's optimizer values in
    place of the checkpoint's; returns (opt_state, the changes, as lines)."""
    old = previous_settings(progress, workdir)
    new = optimizer_settings(config)
    if old is None:
        return opt_state, []
    changes = changed_settings(old, new)
    if not changes:
        return opt_state, []
    if old.get("learning_rate") != new["learning_rate"] and old.get("learning_rate"):
        schedule.state.learning_rate *= new["learning_rate"] / old["learning_rate"]
    hyperparams = dict(opt_state.hyperparams)
    for key in STATE_KEYS:
        held = hyperparams[key]
        hyperparams[key] = jax.device_put(np.asarray(new[key], held.dtype), held.sharding)
    logging.warning("resuming with changed optimizer settings (applied from now on): %s; the "
                    "learning rate is now %g", "; ".join(changes), schedule.learning_rate)
    return opt_state._replace(hyperparams=hyperparams), changes
