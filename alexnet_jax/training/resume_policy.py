"""What a resume does with a changed config: one table, every key of configs/default.py.

A resumed run continues one experiment from a checkpoint. Each config key's change is one of:

- silent: moves no result (where files are, exactly-equal implementations, logging cadence);
- applied: the run goes on with the new value, applied as the table says (written into the
  optimizer state, the schedule's rate rescaled, read at every start, ...), logged and recorded
  in metrics.jsonl (`config_changed_on_resume`, with how each was applied);
- at an epoch's end: applied when the checkpoint ends an epoch; refused in the middle of one,
  where it would repeat and skip images (the order of an epoch's images depends on it);
- refused: the run would become another experiment, or cannot go on from the checkpoint. The
  command stops with exit code 2, naming each such key with its old and new value and what to
  do instead, before any data is prepared or any file is written.

The "old" values are those the checkpoint was trained with: every checkpoint's progress record
holds the config in force when it was written (`config_in_force`: the optimizer values read
back from the optimizer state), so a resume killed before its next checkpoint leaves nothing
half-applied. Checkpoints written before that record existed are compared with the workdir's
config.json and their optimizer record. The model's shape is the fingerprint's business
(`check_same_model`), checked against every checkpoint before it is restored, also by
--mode=eval and --mode=predict; a resume names the model's differences and every refused key in
one refusal, so that one correction is enough. docs/reliability.md shows this table (a test
keeps them equal).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.nested import flatten
from alexnet_jax.common.run_files import CONFIG_FILE, FORMULATION_KEYS
from alexnet_jax.training import optim
from alexnet_jax.training.schedule import Schedule


class Fate(enum.Enum):
    SILENT = "silent"
    APPLIED = "applied"
    AT_EPOCH_END = "applied at an epoch's end, refused mid-epoch"
    REFUSED = "refused"


@dataclasses.dataclass(frozen=True)
class Rule:
    fate: Fate
    how: str  # applied: how; refused: why


def _rules(fate: Fate, how: str, *keys: str) -> dict[str, Rule]:
    return {key: Rule(fate, how) for key in keys}


S, A, E, R = Fate.SILENT, Fate.APPLIED, Fate.AT_EPOCH_END, Fate.REFUSED
# optimizer hyperparameters held in the optimizer's state: a resume writes the new values there
STATE_HYPERPARAMS = {"momentum": "momentum", "weight_decay": "weight_decay",
                     "trust_coefficient": "trust_coefficient"}
POLICY: dict[str, Rule] = {
    **_rules(S, "where the data and files are", "data.path", "data.data_dir"),
    **_rules(S, "exactly-equal formulations (tests/test_model.py)",
             *(f"model.{key}" for key in FORMULATION_KEYS)),
    **_rules(S, "logging, checkpoint and profiling cadence", "train.log_every_steps",
             "train.checkpoint_every_steps", "train.keep_checkpoints", "train.profile_steps"),
    **_rules(S, "the evaluation's batch (the same results)", "train.eval_batch_size"),
    **_rules(S, "the devices' layout (the same global batch and parameters)", "mesh.model"),
    **_rules(S, "how many processes read (the same batches)", "data.read_workers"),
    **_rules(S, "which thread sends the batches (the same batches)", "data.feed_thread"),
    **_rules(A, "the schedule's current rate is scaled by new / old (its reductions are kept)",
             "optimizer.learning_rate"),
    **_rules(A, "the schedule's current rate is scaled by the new scaling over the old (linear: "
                "batch / 128)", "optimizer.lr_scaling"),
    **_rules(A, "written into the optimizer state (the velocity is kept)", "optimizer.momentum",
             "optimizer.weight_decay"),
    **_rules(A, "written into the LARS state (momentum SGD has none)",
             "optimizer.trust_coefficient"),
    **_rules(A, "read at every start: the next update decays this way", "optimizer.decay_mode",
             "optimizer.decay_biases", "optimizer.layer_weight_decay"),
    **_rules(A, "the schedule goes on from its saved state under the new setting",
             "schedule.name", "schedule.factor", "schedule.patience",
             "schedule.min_improvement", "schedule.max_reductions", "schedule.after_last",
             "schedule.step_epochs"),
    **_rules(A, "each remaining step's rate follows the new warm-up (by step number)",
             "schedule.warmup_epochs"),
    **_rules(A, "the run trains to the new end (a run its last step ended is extended; one its "
                "schedule or training-error target ended only when that end is lifted too)",
             "train.num_epochs", "train.num_steps"),
    **_rules(A, "the evaluations from now on (a finished run is not evaluated again: "
                "--mode=eval evaluates its checkpoint with them)", "train.epoch_eval_views",
             "train.final_eval_views"),
    **_rules(A, "checked at the end of each epoch from now on", "train.stop_at_train_error"),
    **_rules(A, "the same global batch, as k micro-batches (the update equal up to rounding, "
                "with dropout too: each micro-batch takes its rows of the batch's masks)",
             "train.accumulate_steps"),
    **_rules(A, "the next steps drop units at the new rate", "model.dropout_rate"),
    **_rules(A, "the next steps compute in the new dtype (the parameters stay float32)",
             "model.dtype"),
    **_rules(A, "the same images from another storage (read only by data.name=prepared, "
                "which names its folder itself)", "data.file_format"),
    **_rules(A, "the mean and the lighting's PCA from the new source from now on",
             "data.stats_source", "data.stats_sample"),
    **_rules(E, "the order of each epoch's images depends on it (the preparation: through its "
                "files)", "data.shuffle_buffer", "data.process_sharding", "data.prepared",
             "data.prepared_format", "data.prepared_quality"),
    **_rules(R, "data order, augmentation and dropout follow it", "seed"),
    **_rules(R, "another dataset or other images", "data.name", "data.resize_size",
             "data.num_classes", "data.synthetic_examples"),
    **_rules(R, "the augmentation and input the parameters were trained on", "data.crop_size",
             "data.random_crop", "data.random_flip", "data.mean", "data.lighting",
             "data.lighting_strength"),
    **_rules(R, "a step counts batches of this size: the epochs would be misplaced",
             "train.batch_size"),
    **_rules(R, "the optimizer state has another structure", "optimizer.name"),
    **_rules(R, "another network than the checkpoint's", "model.arch", "model.columns",
             "model.conv_widths", "model.fc_widths", "model.lrn", "model.lrn_n", "model.lrn_k",
             "model.lrn_alpha", "model.lrn_beta", "model.lrn_alpha_over_n",
             "model.overlap_pool", "model.activation", "model.conv1_geometry"),
    **_rules(R, "the checkpoint was initialised otherwise", "model.init_std",
             "model.positive_bias"),
}
# A finished run does not start again: a change is applied to it only where it lifts what ended
# it (`apply`: more steps, more reductions, a target not reached); else nothing runs, and one
# line says so (`finished_line`): what ended the run, and what would let it train on.
RUN_ENDS = {
    "steps": ("it trained its last step", "a larger train.num_epochs (or train.num_steps)"),
    "schedule": ("its plateau schedule ended it after its last reduction",
                 "a larger schedule.max_reductions or schedule.after_last=continue"),
    "target": ("it reached its training-error target",
               "a lower train.stop_at_train_error (0: none)"),
}
EVALUATION_KEYS = ("train.epoch_eval_views", "train.final_eval_views")
# a key whose value is a dict of free keys (layer names), decided as one key
WHOLE_KEYS = ("optimizer.layer_weight_decay",)
NO_DECISION = Rule(R, "no resume decision is recorded for this key (resume_policy.POLICY)")


def rule(key: str) -> Rule:
    return POLICY.get(key, NO_DECISION)


def config_values(config: dict[str, Any]) -> dict[str, Any]:
    """A config (nested JSON dict) flattened to the table's keys."""
    flat = flatten({k: v for k, v in config.items()})
    for whole in WHOLE_KEYS:
        section, name = whole.split(".")
        value = (config.get(section) or {}).get(name)
        flat = {k: v for k, v in flat.items() if not k.startswith(whole + ".")}
        flat[whole] = dict(value or {})
    return flat


@dataclasses.dataclass
class Decision:
    """What a resume does: {key: (was, now)} applied and silent, and each refusal's line."""

    applied: dict[str, tuple[Any, Any]]
    silent: dict[str, tuple[Any, Any]]
    refused: list[str]

    def event(self) -> dict[str, Any]:
        """The metrics.jsonl record of what was applied, and how."""
        return {"event": "config_changed_on_resume", "applied": {
            key: {"was": was, "now": now, "how": rule(key).how}
            for key, (was, now) in self.applied.items()}}


def decide(previous: dict[str, Any], now: dict[str, Any], mid_epoch: bool,
           shard_counts: tuple[int | None, int] | None = None) -> Decision:
    """The fate of each key that differs between the checkpoint's config and this one;
    `mid_epoch`: the checkpoint is inside an epoch; `shard_counts`: (the checkpoint's, this
    run's) number of parts the batches are read in (feeding.Shard.for_mesh: the processes
    holding distinct rows of the mesh's data axis). A key the previous config lacks (added
    since) is not compared."""
    previous, now = config_values(previous), config_values(now)
    decision = Decision({}, {}, [])
    for key in sorted(set(previous) & set(now)):
        was, new = previous[key], now[key]
        if _same(was, new):
            continue
        fate = rule(key).fate
        if fate is S:
            decision.silent[key] = (was, new)
        elif fate is A or (fate is E and not mid_epoch):
            decision.applied[key] = (was, new)
        else:
            later = ("; train to the epoch's end with the old value, then change it"
                     if fate is E else "")
            decision.refused.append(f"{key}: was {was!r}, now {new!r} (refused"
                                    f"{' mid-epoch' if fate is E else ''}: {rule(key).how}"
                                    f"{later})")
    old_count, count = shard_counts or (None, None)
    if (mid_epoch and now.get("data.process_sharding") == "split" and old_count is not None
            and old_count != count):
        decision.refused.append(
            f"the parts the data is read in: was {old_count}, now {count} (refused mid-epoch "
            "with data.process_sharding=split: each part reads its own share of the files, so "
            "the rest of the epoch would repeat and skip images; resume on the same layout "
            "(processes, mesh.model) to the epoch's end, or use data.process_sharding="
            "interleaved, whose batches are the same for any layout)")
    return decision


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def refuse(decision: Decision, config_source: str, model: dict[str, str] | None = None,
           where: str = "") -> None:
    """UserError naming every refused change at once, when there is one: `model`, the
    checkpoint's model differences ({key: line}, model_differences) and the decision's
    refusals (a key named by both, once)."""
    model = model or {}
    others = [line for line in decision.refused if line.split(": ")[0] not in model]
    if not others:
        _refuse_other_model(model, where)
        return
    found = (f"the checkpoint at {where} was written by a different model or dataset: "
             + "; ".join(model.values()) + "; and " if model else "")
    raise UserError(
        found + "this workdir's run cannot go on with this config: " + "; ".join(others)
        + f". Resume it with the values it was trained with ({config_source}), or train "
        "the new config in a new --workdir.")


def previous_config(progress: dict[str, Any], workdir: Path) -> tuple[dict[str, Any], str]:
    """The config a checkpoint was trained with, and where it was read: its progress record
    ("config"), or for older checkpoints the workdir's config.json with the checkpoint's
    optimizer record over it."""
    if "config" in progress:
        return progress["config"], "the checkpoint's record of its config"
    path = Path(workdir) / CONFIG_FILE
    config = json.loads(path.read_text()) if path.exists() else {}
    if "optimizer" in progress:
        config = {**config, "optimizer": {**config.get("optimizer", {}),
                                          **progress["optimizer"]}}
    return config, str(path)


def is_mid_epoch(progress: dict[str, Any]) -> bool:
    """Whether a checkpoint lies inside an epoch (its epoch count is not whole)."""
    epoch = float(progress.get("epoch", 0.0))
    return not math.isclose(epoch, round(epoch), abs_tol=1e-9)


def check_resume(config: ml_collections.ConfigDict, progress: dict[str, Any],
                 workdir: Path, data_shards: int, fingerprint: dict[str, Any] | None = None,
                 where: str = "", compare_classes: bool = True) -> Decision:
    """The decision for resuming from a checkpoint whose progress record is `progress`, in a
    run that reads its data in `data_shards` parts; UserError naming every refused change at
    once: a refused config key, and with `fingerprint` (this config's model, compared as
    check_same_model does) each way the checkpoint's model differs."""
    previous, source = previous_config(progress, workdir)
    decision = decide(previous, json.loads(config.to_json_best_effort()),
                      is_mid_epoch(progress), (progress.get("data_shards"), data_shards))
    model = ({} if fingerprint is None else
             model_differences(progress.get("fingerprint"), fingerprint, compare_classes))
    refuse(decision, source, model, where)
    return decision


def data_identity(source) -> dict[str, Any]:
    """What a checkpoint records of the data it was trained on, to refuse other data: the
    classes (a digest of their names) and the sizes of the splits."""
    names = json.dumps(list(source.class_names)).encode()
    return {"classes_sha256": hashlib.sha256(names).hexdigest()[:16],
            "train_examples": source.num_examples(source.train_split),
            "eval_examples": source.num_examples(source.eval_split)}


def check_same_data(saved: dict[str, Any] | None, data: dict[str, Any], where: str,
                    only_classes: bool = False) -> None:
    """Refuse (UserError) a checkpoint trained on other data than the source now open: its
    classes or (unless `only_classes`: an evaluation may use another validation set) its
    splits' sizes differ; data.path, silent as a location, may name another tree. A checkpoint
    that recorded none (older ones) is not compared."""
    if not saved:
        return
    keys = ["classes_sha256"] if only_classes else sorted(set(saved) | set(data))
    differences = [f"{key}: checkpoint {saved.get(key)!r}, now {data.get(key)!r}"
                   for key in keys if saved.get(key) != data.get(key)]
    if differences:
        raise UserError(
            f"the checkpoint at {where} was trained on other data than data.path names now: "
            + "; ".join(differences) + ". Point data.path at the data the run was trained on "
            "(it may move; it must be the same), or train on this data in a new --workdir.")


def model_differences(saved: dict[str, Any] | None, fingerprint: dict[str, Any],
                      compare_classes: bool = True) -> dict[str, str]:
    """{key: line} of each way a checkpoint's model (its fingerprint, `saved`) differs from
    this config's, with both values; `compare_classes` False before the dataset (whose class
    count is part of the fingerprint) is open."""
    names = {"crop_size": "data.crop_size", "num_classes": "the dataset's class count"}
    ours, theirs = flatten(fingerprint), flatten(saved or {})
    keys = set(ours) | set(theirs)
    if not compare_classes:
        keys.discard("num_classes")
    return {names.get(key, key): f"{names.get(key, key)}: checkpoint "
            f"{theirs.get(key, 'not recorded')!r}, this config {ours.get(key, 'not set')!r}"
            for key in sorted(keys) if not _same(theirs.get(key), ours.get(key))}


def check_same_model(saved: dict[str, Any] | None, fingerprint: dict[str, Any],
                     where: str, compare_classes: bool = True) -> None:
    """Refuse (UserError) a checkpoint of another model, naming each difference with the
    checkpoint's and this config's value (model_differences)."""
    _refuse_other_model(model_differences(saved, fingerprint, compare_classes), where)


def _refuse_other_model(differences: dict[str, str], where: str) -> None:
    if differences:
        raise UserError(
            f"the checkpoint at {where} was written by a different model or dataset: "
            + "; ".join(differences.values()) + ". Use the config the run was trained with "
            "(its config.json, with the same --config overrides), or a new --workdir for a "
            "different model.")


def apply(decision: Decision, config: ml_collections.ConfigDict, previous: dict[str, Any],
          opt_state, schedule: Schedule, progress: dict[str, Any]):
    """The optimizer state, schedule and progress of a resumed run with the applied changes in
    force (those the table says are read at every start need nothing here); the new opt_state.
    A run that its schedule or its training-error target ended goes on when the new values no
    longer end it (RUN_ENDS; the trainer logs what was applied once it knows the run goes
    on)."""
    if not decision.applied:
        return opt_state
    s = config.schedule
    if schedule.state.finished and (s.after_last == "continue"
                                    or schedule.state.reductions < s.max_reductions):
        schedule.state.finished = False  # more reductions allowed, or no stop after the last
    reached, target = progress.get("target_reached"), config.train.stop_at_train_error
    if reached and (target <= 0 or reached["top1_error"] > target):
        progress["target_reached"] = None  # the new target is not reached yet (or is off)
    old = config_values(previous)
    o = config.optimizer
    rate_keys = ("optimizer.learning_rate", "optimizer.lr_scaling")
    if any(key in decision.applied for key in rate_keys):
        was = optim.initial_learning_rate(old.get("optimizer.learning_rate", o.learning_rate),
                                          config.train.batch_size,
                                          old.get("optimizer.lr_scaling", o.lr_scaling))
        now = optim.initial_learning_rate(o.learning_rate, config.train.batch_size,
                                          o.lr_scaling)
        if was:
            schedule.state.learning_rate *= now / was
    hyperparams = dict(opt_state.hyperparams)
    for key, name in STATE_HYPERPARAMS.items():
        if f"optimizer.{key}" in decision.applied and name in hyperparams:
            held = hyperparams[name]
            hyperparams[name] = jax.device_put(np.asarray(o[key], held.dtype), held.sharding)
    return opt_state._replace(hyperparams=hyperparams)


def _changes(decision: Decision) -> str:
    return "; ".join(f"{k}: {w!r} -> {n!r}" for k, (w, n) in decision.applied.items())


def applied_line(decision: Decision, learning_rate: float) -> str:
    """The line a resumed run logs as it starts to train with the applied changes."""
    return (f"resuming with config changes (applied from now on): {_changes(decision)}; the "
            f"learning rate is now {learning_rate:g}")


def finished_line(decision: Decision | None, workdir: Path, step: int, ends: list[str]) -> str:
    """The one line a finished run logs when run again: it is complete, and, when the config
    changed, that nothing runs and the changes are not applied, why (`ends`: the RUN_ENDS that
    hold) and what would let it train on (or evaluate the new views)."""
    line = f"the run in {workdir} is already complete (step {step})"
    if decision is None or not decision.applied:
        return line
    line += (f": {' and '.join(RUN_ENDS[end][0] for end in ends)}, so nothing runs and the "
             f"config changes are not applied ({_changes(decision)}); to train on it needs "
             + " and ".join(RUN_ENDS[end][1] for end in ends))
    if any(key in decision.applied for key in EVALUATION_KEYS):
        line += ("; a finished run is not evaluated again: --mode=eval evaluates its last "
                 "checkpoint with train.final_eval_views (into eval_results.jsonl)")
    return line


def config_in_force(config: ml_collections.ConfigDict, opt_state) -> dict[str, Any]:
    """The config a checkpoint records as the one it was trained with: the run's config, with
    the optimizer values held in the optimizer state read back from it (what is in force)."""
    values = json.loads(config.to_json_best_effort())
    hyperparams = getattr(opt_state, "hyperparams", {})
    for key, name in STATE_HYPERPARAMS.items():
        if name in hyperparams:
            held = hyperparams[name]  # a replicated scalar: any process's copy is the value
            value = np.asarray(held.addressable_data(0))
            # the state holds float32: the config's value when it is that value rounded
            if value != np.asarray(values["optimizer"][key], value.dtype):
                values["optimizer"][key] = float(value)
    return values


def table_markdown() -> str:
    """The table as docs/reliability.md shows it: one row per fate and reason."""
    rows: dict[tuple[Fate, str], list[str]] = {}
    for key, value in POLICY.items():
        rows.setdefault((value.fate, value.how), []).append(key)
    lines = ["| on resume | keys | how, or why |", "|---|---|---|"]
    for fate in Fate:
        for (row_fate, how), keys in rows.items():
            if row_fate is fate:
                lines.append(f"| {fate.value} | {', '.join(f'`{k}`' for k in keys)} | {how} |")
    return "\n".join(lines) + "\n"
