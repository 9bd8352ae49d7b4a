"""A study's records: the small files of its finished runs, kept where they can be committed.

A run's workdir holds gigabytes of checkpoints and is lost when the machine's session ends; its
record is the three small files that say what it was and what it measured (`config.json`,
`metrics.jsonl`, `run_complete.json`; a long metrics.jsonl compressed), copied to
RECORD/<arm>/seed<k>/ when it finishes. A study counts a recorded run as finished, so a study
can span as many sessions as it needs when its record directory is committed
(docs/results/<study name>/).

A record is used only if its config is the one the study would run now: a protocol that changed
since (another budget, schedule or switch) is refused with the differing keys named, never mixed
silently into the same table. No JAX or TensorFlow here: reports and study runners stay cheap.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.nested import flatten
from alexnet_jax.common.run_files import (
    COMPLETION_FILE,
    COMPRESSED_METRICS_FILE,
    CONFIG_FILE,
    EVAL_RESULTS_FILE,
    FORMULATION_KEYS,
    METRICS_FILE,
)

REPO = Path(__file__).resolve().parents[2]
# eval_results.jsonl: the evaluation of the training images made after the run (study.py)
RECORDED_FILES = (CONFIG_FILE, METRICS_FILE, COMPLETION_FILE, EVAL_RESULTS_FILE)
# a run that logged every step (Figure 1's protocol) writes megabytes of metrics: its record
# keeps them gzip-compressed (about a fifth), so committed records stay small
COMPRESS_METRICS_ABOVE_BYTES = 1 << 20
# Keys that say where things are or how a result is computed, not what is measured: a record
# made with other values is the same experiment. Data locations differ between machines; the
# implementation switches compute the same function (tests/test_model.py checks they are equal);
# logging and checkpoint cadence change no parameter.
NOT_PROTOCOL_KEYS = frozenset({
    "data.path", "data.data_dir", *(f"model.{key}" for key in FORMULATION_KEYS),
    "train.log_every_steps", "train.checkpoint_every_steps", "train.keep_checkpoints",
    "train.eval_batch_size", "train.profile_steps",
})


def record_dir(record_root: Path, arm: str, seed: int) -> Path:
    """Where the record of one run lives."""
    return Path(record_root) / arm / f"seed{seed}"


def save_record(workdir: Path, destination: Path) -> None:
    """Copy a finished run's small files to `destination`, all or nothing: they are written
    beside it and renamed into place, so an interrupted copy is never taken for a record; a
    record being replaced is moved aside first, and put back by `recover_record` should the
    process die before the new one is in place."""
    destination = Path(destination)
    recover_record(destination)
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in RECORDED_FILES:
        source = Path(workdir) / name
        if not source.exists():
            continue
        if name == METRICS_FILE and source.stat().st_size > COMPRESS_METRICS_ABOVE_BYTES:
            name = COMPRESSED_METRICS_FILE   # read_records reads either
            (partial / name).write_bytes(gzip.compress(source.read_bytes(), mtime=0))
        else:
            shutil.copy2(source, partial / name)
        if name == CONFIG_FILE:
            _data_path_from_repository(partial / name)
        _sync(partial / name)
    _sync(partial)
    replaced = _replaced(destination)
    if destination.exists():
        destination.rename(replaced)
    partial.rename(destination)
    _sync(destination.parent)  # the renames themselves survive a power loss too
    shutil.rmtree(replaced, ignore_errors=True)


def recover_record(destination: Path) -> None:
    """Put back a record that `save_record` moved aside to replace it, if it died before the
    new one was in place (else drop the aside copy)."""
    destination, replaced = Path(destination), _replaced(destination)
    if replaced.exists():
        if destination.exists():
            shutil.rmtree(replaced)
        else:
            replaced.rename(destination)


def _replaced(destination: Path) -> Path:
    return destination.with_name(destination.name + ".replaced")


def _data_path_from_repository(config_file: Path) -> None:
    """A record names its data as the repository sees it (../shared/data/cifar10), not by
    this machine's absolute path: the same record then reads the same on any checkout."""
    config = json.loads(config_file.read_text())
    path = (config.get("data") or {}).get("path")
    if not path or not os.path.isabs(path):
        return
    relative = os.path.relpath(path, REPO)
    if not relative.startswith(os.path.join(os.pardir, os.pardir)):  # beside the checkout
        config["data"]["path"] = relative
        config_file.write_text(json.dumps(config, indent=2))


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def resolved_config(config_args: list[str]) -> dict[str, Any]:
    """The config a training command would run, as its config.json holds it: `config_args` are
    that command's `--config=FILE` and `--config.<key>=<value>` arguments, read the same way
    (ml_collections' own parser), file paths relative to the repository."""
    from absl import flags  # noqa: PLC0415 - only when a config is compared
    from ml_collections import config_flags  # noqa: PLC0415

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # config files import `configs.default`
    argv = ["study", *(arg if not arg.startswith("--config=") else
                       f"--config={_in_repo(arg.split('=', 1)[1])}" for arg in config_args)]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    try:
        values(argv)
    except (flags.Error, TypeError, ValueError) as error:
        raise UserError(f"the study's config arguments {config_args[1:]} are not valid for "
                        f"{config_args[0]}: {error}") from error
    return json.loads(values.config.to_json_best_effort())


def _in_repo(path: str) -> str:
    return str(path if Path(path).is_absolute() else REPO / path)


def config_differences(recorded: dict[str, Any], expected: dict[str, Any],
                       defaults: dict[str, Any], ignore: frozenset[str] = frozenset()
                       ) -> list[str]:
    """The protocol keys on which a recorded config.json and the config a study would run now
    differ, one "key: recorded X, now Y" each. A key the record lacks was added to the project
    after it was made; new keys keep the old behaviour at their default, so the record agrees
    when the study runs the default (`defaults`: the base config file's values). Keys in
    `ignore` are not compared either (a value a sweep has not chosen yet)."""
    recorded, expected, defaults = flatten(recorded), flatten(expected), flatten(defaults)
    differences = []
    for key in sorted(set(recorded) | set(expected)):
        if key in NOT_PROTOCOL_KEYS or key in ignore:
            continue
        if key not in recorded:
            if expected[key] != defaults.get(key, expected[key]):
                differences.append(f"{key}: not in the record (made before the key existed), "
                                   f"now {expected[key]!r}")
        elif key not in expected:
            differences.append(f"{key}: recorded {recorded[key]!r}, no longer a config key")
        elif recorded[key] != expected[key]:
            differences.append(f"{key}: recorded {recorded[key]!r}, now {expected[key]!r}")
    return differences


def check_same_protocol(workdir: Path, config_args: list[str], what: str,
                        ignore: frozenset[str] = frozenset()) -> None:
    """Refuse (UserError) a finished run or record whose config.json differs from the config
    the study would run now (but for the keys in `ignore`), naming each differing key and the
    ways forward."""
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise UserError(f"{what} {workdir} has no {CONFIG_FILE}, so its protocol cannot be "
                        "checked; remove that directory to run it again.")
    differences = config_differences(json.loads(path.read_text()), resolved_config(config_args),
                                     resolved_config(config_args[:1]), ignore)
    if differences:
        raise UserError(
            f"{what} {workdir} was made with a different config than this study runs now: "
            + "; ".join(differences) + ". Results of two protocols are not mixed in one study: "
            "run the study with the overrides it was made with, or move that directory away "
            "(or delete it) to run it again with the current protocol.")
