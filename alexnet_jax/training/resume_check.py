"""What may change when a run is resumed, and what may not.

A resumed run continues one experiment: its checkpoint's step counts batches of the config's
size, its data order and augmentation follow the config's seed and data settings. A run resumed
with another batch size would misplace its epochs (a resumed step 3 of batch 8 read as step 3
of batch 16 skips most of an epoch), and one resumed with another seed, dataset or augmentation
would leave a config.json that describes neither half. Those keys are refused, naming each
difference. The others may change:
- where things are and how they are computed or logged (`data.path`, `model.column_impl`,
  `train.log_every_steps`, ...): silently;
- how long the run goes and how it is steered or evaluated (`train.num_epochs`, `schedule.*`,
  `optimizer.*`, `model.dtype`, ...): recorded in metrics.jsonl as `config_changed_on_resume`,
  so the record says when the run changed course (optimizer values are applied and recorded by
  optimizer_resume).
The model's shape is checked separately, against the checkpoint's fingerprint (run.py).
"""

from __future__ import annotations

from typing import Any

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.nested import flatten

# changing these moves no result: locations, exactly-equal implementations, cadence of logs and
# checkpoints, evaluation batch size, profiling, the device layout
SILENT = frozenset({
    "data.path", "data.data_dir", "model.column_impl", "model.lrn_impl", "model.conv1_impl",
    "train.log_every_steps", "train.checkpoint_every_steps", "train.keep_checkpoints",
    "train.eval_batch_size", "train.profile_steps", "mesh.model", "data.process_sharding",
})
# these may change the rest of the run: the change is recorded
RECORDED_PREFIXES = ("optimizer.", "schedule.")
RECORDED = frozenset({
    "train.num_epochs", "train.num_steps", "train.final_eval_views", "train.epoch_eval_views",
    "train.stop_at_train_error", "model.dtype", "model.dropout_rate", "data.shuffle_buffer",
    "data.prepared", "data.prepared_format", "data.prepared_quality", "data.stats_source",
    "data.stats_sample",
})


def resume_changes(previous: dict[str, Any], now: dict[str, Any],
                   config_path: str) -> dict[str, list[Any]]:
    """The changes to record ({key: [was, now]}) of a run resumed with config `now` after
    `previous` (its workdir's config.json); a UserError naming every key that cannot change
    within a run. A key the previous config lacks (added to the project since) is not
    compared."""
    previous, now = flatten(previous), flatten(now)
    refused, recorded = [], {}
    for key in sorted(set(previous) & set(now)):
        if previous[key] == now[key] or key in SILENT:
            continue
        if key in RECORDED or key.startswith(RECORDED_PREFIXES):
            recorded[key] = [previous[key], now[key]]
        else:
            refused.append(f"{key}: was {previous[key]!r}, now {now[key]!r}")
    if refused:
        raise UserError(
            "this workdir's run was made with a config that cannot change within a run: "
            + "; ".join(refused) + f". Resume it with the values in {config_path}, or train "
            "the new config in a new --workdir.")
    return recorded
