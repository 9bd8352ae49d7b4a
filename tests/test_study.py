"""Studies: the runner (ordinary runs, resumed, skipped when finished) and the report."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
from test_cli import REPO, tiny_overrides

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.run_files import read_records
from alexnet_jax.studies import records as study_records
from alexnet_jax.studies import report as study_report
from alexnet_jax.studies import study as study_lib


def write_study(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def run_study(study_file, directory, *overrides, record=None):
    command = [sys.executable, "experiments/run_study.py", f"--study={study_file}",
               *([f"--dir={directory}"] if directory else []),
               *([f"--record={record}"] if record else []), *overrides]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_two_arm_study_runs_resumes_skips_and_reports(image_tree, tmp_path):
    study_file = write_study(tmp_path / "two_arms.py", """
        def get_study():
            return {"name": "two_arms", "description": "two tiny arms",
                    "base_config": "configs/default.py",
                    "overrides": {"train.num_steps": 2, "train.final_eval_views": (1,)},
                    "seeds": (0,), "baseline": "base",
                    "arms": [{"name": "base", "overrides": {}},
                             {"name": "no_lrn", "overrides": {"model.lrn": False},
                              "paper": {"top1": 1.4, "top5": 1.2}}]}
    """)
    directory = tmp_path / "study"
    overrides = tiny_overrides(image_tree, tmp_path / "tfds")
    # An interrupted second arm: one step trained and checkpointed by the ordinary command.
    partial = subprocess.run(
        [sys.executable, "-m", "alexnet_jax.main", "--config=configs/default.py",
         f"--workdir={directory / 'no_lrn' / 'seed0'}", "--config.seed=0",
         "--config.model.lrn=False", "--config.train.num_steps=1",
         "--config.train.final_eval_views=(1,)", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert partial.returncode == 0, partial.stderr[-2000:]
    (directory / "no_lrn" / "seed0" / "run_complete.json").unlink()  # as if killed
    # ... at step 1 of the study's 2: its config.json is the study's
    config_file = directory / "no_lrn" / "seed0" / "config.json"
    config = json.loads(config_file.read_text())
    config["train"]["num_steps"] = 2
    config_file.write_text(json.dumps(config))

    record = tmp_path / "record"
    first = run_study(study_file, directory, *overrides, record=record)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    assert "[1/2] base seed 0: training" in first.stdout
    starts = [json.loads(line) for line in
              (directory / "no_lrn" / "seed0" / "metrics.jsonl").read_text().splitlines()
              if '"run_start"' in line]
    assert [s["start_step"] for s in starts] == [0, 1]  # resumed, not restarted
    config = json.loads((directory / "no_lrn" / "seed0" / "config.json").read_text())
    assert config["model"]["lrn"] is False and config["train"]["num_steps"] == 2
    for arm in ("base", "no_lrn"):  # the small files only, never checkpoints
        assert sorted(p.name for p in (record / arm / "seed0").iterdir()) == [
            "config.json", "eval_results.jsonl", "metrics.jsonl", "run_complete.json"]
        # the training images evaluated after the run, for the val - train gap
        fit = json.loads((record / arm / "seed0" / "eval_results.jsonl").read_text())
        start = json.loads((record / arm / "seed0" / "metrics.jsonl").read_text()
                           .splitlines()[0])
        assert (fit["split"], fit["crops"], fit["count"], fit["step"]) == (
            "train", 1, start["train_examples"], 2)   # every training image once
    assert "base seed 0: evaluating its training images" in first.stdout

    again = run_study(study_file, directory, *overrides, record=record)
    assert again.returncode == 0
    assert "[1/2] base seed 0: complete (recorded)" in again.stdout
    assert "[2/2] no_lrn seed 0: complete (recorded)" in again.stdout

    # A later session on a fresh machine: the workdirs are gone, the committed records remain.
    shutil.rmtree(directory)
    (record / "results.md").unlink()
    fresh = run_study(study_file, directory, *overrides, record=record)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr[-3000:]
    assert "training" not in fresh.stdout and not (directory / "base").exists()
    assert (record / "results.md").exists()  # reported from the records
    (record / "results.md").unlink()
    alone = run_study(study_file, None, "--report", *overrides,  # from the records alone
                      record=record)
    assert alone.returncode == 0, alone.stderr[-2000:]

    results = json.loads((record / "results.json").read_text())
    for arm in ("base", "no_lrn"):
        run = results["arms"][arm]["runs"]["0"]
        assert run["complete"] and run["steps"] == 2 and run["wall_time_s"] > 0
        assert 0 <= run["final_train_eval_error"] <= 1
        assert run["workdir"] == f"{arm}/seed0"
        assert 0 <= run["final"]["val_1crop"]["top1_error"] <= 1
        assert run["final"]["val_10crop"] is None
    table = (record / "results.md").read_text()
    assert "| `no_lrn` | `model.lrn=False` | 1/1 |" in table and "+1.4 / +1.2" in table
    # what ran, from the records: the data, the crops and the budget (2 steps, not "epochs"),
    # and the code that made the runs
    start = json.loads((record / "base" / "seed0" / "metrics.jsonl").read_text().splitlines()[0])
    assert f"What ran (from the records): {start['dataset']}, 67 px, 2 steps." in table
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    assert list(results["code"]["commits"]) == [head]
    assert sorted(results["code"]["commits"][head]) == ["base/seed0", "no_lrn/seed0"]
    assert f"Code: `{head[:10]}` (2 runs)." in table
    assert (record / "results.png").stat().st_size > 10_000

    # The same study at another budget would mix two protocols: refused, naming the key.
    other = run_study(study_file, directory, *overrides, "--config.train.num_steps=3",
                      record=record)
    assert other.returncode == 2 and not (directory / "base").exists()
    assert "train.num_steps: recorded 2, now 3" in other.stderr
    typo = run_study(study_file, directory, *overrides, "--arms=bsae", record=record)
    assert typo.returncode == 2 and "has no arm 'bsae'; its arms are base, no_lrn" in typo.stderr


def write_run(workdir: Path, epochs_train_error, final_top1, complete=True, start=1000.0,
              train_evaluation=None):
    """A workdir as a run leaves it: run_start, epoch training errors, evaluations (and the
    training images' evaluation after the run, when `train_evaluation` is given)."""
    workdir.mkdir(parents=True)
    lines = [{"event": "run_start", "start_step": 0, "time": start}]
    for epoch, error in enumerate(epochs_train_error, 1):
        lines.append({"step": 10 * epoch, "epoch": epoch, "split": "train_epoch",
                      "top1_error": error, "loss": 1.0, "time": start + 60 * epoch})
        lines.append({"step": 10 * epoch, "epoch": epoch, "split": "val", "crops": 1,
                      "top1_error": final_top1 + 0.01 * (len(epochs_train_error) - epoch),
                      "top5_error": 0.1, "time": start + 60 * epoch + 5})
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if complete:
        final = {"step": 10 * len(epochs_train_error), "epoch": len(epochs_train_error),
                 "crops": 1, "top1_error": final_top1, "top5_error": 0.1}
        (workdir / "run_complete.json").write_text(json.dumps(
            {"step": final["step"], "eval": [final]}))
    if train_evaluation is not None:
        (workdir / "eval_results.jsonl").write_text(json.dumps(
            {"step": 10 * len(epochs_train_error), "split": "train", "crops": 1,
             "top1_error": train_evaluation, "top5_error": 0.1}) + "\n")


def write_config(workdir: Path, study, arm: str, seed: int, directory: Path, **changes) -> None:
    """The config.json the study's run would write (with `changes`: {"a.b": value})."""
    overrides = study_lib.arm_overrides(study, study.arm(arm), directory,
                                        study_report.final_train_error)
    config = study_records.resolved_config(
        study_lib.config_args(study, seed, {**overrides, **changes}, []))
    (workdir / "config.json").write_text(json.dumps(config))


def test_the_target_is_found_at_the_step_where_every_step_was_logged(tmp_path):
    """Running training error: the mean batch error of the last epoch's steps (4 a epoch here).
    It reaches 0.46 at step 7 (0.45), where the epoch means reach it only at epoch 2's end."""
    errors = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.2, 0.1, 0.1, 0.1]

    def workdir(name, logged_steps):
        path = tmp_path / name
        write_run(path, [0.75, 0.35, 0.125], 0.5)
        lines = [{"step": step, "epoch": step / 4, "split": "train", "loss": 1.0,
                  "top1_error": errors[step - 1]} for step in logged_steps]
        with open(path / "metrics.jsonl", "a") as out:
            out.write("".join(json.dumps(line) + "\n" for line in lines))
        return path

    every = study_report.run_result(workdir("every", range(1, 13)), 0.46)
    assert every["epochs_to_target"] == 1.75 and every["epochs_to_target_at_epoch_end"] == 2
    assert every["target_resolution_epochs"] == 0.25
    assert study_report.run_result(workdir("never", range(1, 13)), 0.05)["epochs_to_target"] is None
    # one batch logged in two: too few a window, so whole epochs as before
    sparse = study_report.run_result(workdir("sparse", range(2, 13, 2)), 0.46)
    assert sparse["epochs_to_target"] == 2 and sparse["target_resolution_epochs"] == 1.0
    from alexnet_jax.studies import measures  # noqa: PLC0415

    results = {"arms": {"a": {"runs": {"0": every}}}}
    assert measures.metric_resolution(results, "epochs_to_target") == 0.25
    results["arms"]["b"] = {"runs": {"0": sparse}}   # the coarsest run sets the study's floor
    assert measures.metric_resolution(results, "epochs_to_target") == 1.0


def test_report_epochs_to_target_choice_and_deltas(tmp_path):
    study_file = write_study(tmp_path / "fig.py", """
        def get_study():
            sweep = [{"name": f"relu_lr{r}", "sweep": True,
                      "overrides": {"optimizer.learning_rate": r}} for r in (0.1, 0.2)]
            return {"name": "fig", "description": "d", "base_config": "configs/cifar10.py",
                    "seeds": (0, 1), "baseline": "relu", "target_train_error": 0.25,
                    "arms": [*sweep,
                             {"name": "relu", "choose": {"key": "optimizer.learning_rate",
                                                         "among": ["relu_lr0.1", "relu_lr0.2"]}},
                             {"name": "tanh", "overrides": {"model.activation": "tanh"},
                              "paper": {"note": "6x the epochs"}}]}
    """)
    study = study_lib.load_study(study_file)
    directory = tmp_path / "dir"
    with pytest.raises(UserError, match="needs the finished runs of 'relu_lr0.1'"):
        study_lib.arm_overrides(study, study.arm("relu"), directory,
                                study_report.final_train_error)
    study_report.write_report(study, directory, "the command", [])  # the sweep not yet run
    table = (directory / "results.md").read_text()  # ...so no value is named as its choice
    assert "`optimizer.learning_rate` not chosen yet |" in table and "=None" not in table
    assert "Chosen: `relu`: `optimizer.learning_rate` not chosen yet" in table
    for seed in (0, 1):
        write_run(directory / "relu_lr0.1" / f"seed{seed}", [0.6, 0.5], 0.5)
        write_run(directory / "relu_lr0.2" / f"seed{seed}", [0.6, 0.4], 0.5)
        write_run(directory / "relu" / f"seed{seed}", [0.5, 0.3, 0.2], 0.30 + 0.02 * seed)
        write_run(directory / "tanh" / f"seed{seed}", [0.7, 0.5, 0.4, 0.3, 0.24, 0.2][:6 - 2 * seed],
                  0.40)
    for arm in ("relu_lr0.1", "relu_lr0.2", "relu", "tanh"):
        for seed in (0, 1):
            write_config(directory / arm / f"seed{seed}", study, arm, seed, directory)
    overrides = study_lib.arm_overrides(study, study.arm("relu"), directory,
                                        study_report.final_train_error)
    assert overrides["optimizer.learning_rate"] == 0.2
    command = study_lib.run_command(study, study.arm("relu"), 1, directory, overrides, ["--x"])
    assert "--config.optimizer.learning_rate=0.2" in command and command[-1] == "--x"
    assert f"--workdir={directory / 'relu' / 'seed1'}" in command

    results = study_report.write_report(study, directory, "the command", [])
    relu, tanh = results["arms"]["relu"]["runs"], results["arms"]["tanh"]["runs"]
    assert relu["0"]["epochs_to_target"] == 3 and tanh["0"]["epochs_to_target"] == 5
    assert tanh["1"]["epochs_to_target"] is None     # 0.3 after 4 epochs: never reached
    assert relu["0"]["wall_time_s"] == pytest.approx(185.0)
    table = (directory / "results.md").read_text()
    tanh_row = next(line for line in table.splitlines() if line.startswith("| `tanh`"))
    # the run that never reached it counts as its 4 epochs, a lower bound: (5 + 4) / 2 against
    # 3 (leaving it out would give 5 / 3, the arm looking faster than its seeds were)
    assert "| 5 (not reached: >4) | ≥1.50 | (6x the epochs) |" in tanh_row
    from alexnet_jax.studies import claims, claims_tables  # noqa: PLC0415

    assert claims.values(results, "tanh", "epochs_to_target") == [5.0, 4.0]
    assert claims.never_reached(results, "tanh") == [4] and claims.never_reached(results, "relu") == []
    assert claims_tables._notes(results, "tanh") == "; 1 never reached it, counted as 4 (a lower bound)"
    assert "| 40.00 ± 0.00 | +9.00 |" in tanh_row          # relu: 30 and 32 -> 31
    assert "`optimizer.learning_rate=0.2` (chosen by the sweep)" in table


def test_a_diverged_sweep_run_counts_as_failed_and_the_study_goes_on(tmp_path, capsys):
    study_file = write_study(tmp_path / "sweep.py", """
        def get_study():
            sweep = [{"name": f"lr{r}", "sweep": True,
                      "overrides": {"optimizer.learning_rate": r}} for r in (0.1, 0.2)]
            return {"name": "sweep", "description": "d", "base_config": "configs/cifar10.py",
                    "seeds": (0,), "baseline": "main",
                    "arms": [*sweep, {"name": "main", "choose": {
                        "key": "optimizer.learning_rate", "among": ["lr0.1", "lr0.2"]}}]}
    """)
    study = study_lib.load_study(study_file)
    directory = tmp_path / "dir"
    write_run(directory / "lr0.1" / "seed0", [0.6, 0.5], 0.5)
    write_run(directory / "lr0.2" / "seed0", [0.6], 0.5, complete=False)
    with (directory / "lr0.2" / "seed0" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"event": "diverged", "step": 13, "loss": "nan"}) + "\n")
    for arm in ("lr0.1", "lr0.2"):
        write_config(directory / arm / "seed0", study, arm, 0, directory)
    overrides = study_lib.arm_overrides(study, study.arm("main"), directory,
                                        study_report.final_train_error)
    assert overrides["optimizer.learning_rate"] == 0.1   # the diverged rate is never chosen
    # Both sweep runs are done (one finished, one diverged): nothing is launched for them.
    launched = []
    launch = training_launcher(launched)

    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=launch):
        with pytest.raises(RuntimeError, match="launched"):
            study_lib.run_study(study, directory, [], study_report.final_train_error)
    assert "lr0.2 seed 0: diverged at step 13 (a failed sweep run)" in capsys.readouterr().out
    assert len(launched) == 1 and "--config.optimizer.learning_rate=0.1" in launched[0]
    table = study_report.markdown(study_report.collect(study, directory, []), "cmd")
    assert "| `lr0.2` | `optimizer.learning_rate=0.2` | - | diverged at step 13 |" in table

    (directory / "lr0.1" / "seed0" / "run_complete.json").unlink()
    with (directory / "lr0.1" / "seed0" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"event": "diverged", "step": 20, "loss": "inf"}) + "\n")
    with pytest.raises(UserError, match="every run that arm 'main' chooses"):
        study_lib.arm_overrides(study, study.arm("main"), directory,
                                study_report.final_train_error)


def test_bad_study_files_get_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no study file"):
        study_lib.load_study(tmp_path / "missing.py")
    bad = write_study(tmp_path / "bad.py", """
        def get_study():
            return {"base_config": "configs/default.py", "baseline": "x",
                    "arms": [{"name": "y"}]}
    """)
    with pytest.raises(UserError, match="include the baseline 'x'"):
        study_lib.load_study(bad)


def test_override_formatting_round_trips():
    assert study_lib.format_override("a.b", (1,)) == "--config.a.b=(1,)"
    assert study_lib.format_override("a.b", ()) == "--config.a.b=()"
    assert study_lib.format_override("a.b", (11, 13)) == "--config.a.b=(11, 13)"
    assert study_lib.format_override("a.b", False) == "--config.a.b=False"
    assert study_lib.format_override("a.b", "none") == "--config.a.b=none"


@pytest.mark.parametrize("name", ["cifar10_figure1", "cifar10_lrn", "imagenette_ablations",
                                  "cifar10_large_batch",
                                  "imagenette128_ablations"])
def test_the_project_studies_load_and_their_overrides_are_config_keys(name):
    import importlib  # noqa: PLC0415

    study = study_lib.load_study(REPO / "configs" / "studies" / f"{name}.py")
    config = importlib.import_module(study.base_config[:-3].replace("/", ".")).get_config()
    for arm in study.arms:
        for key in {**study.overrides, **arm.overrides}:
            node = config
            for part in key.split("."):
                assert part in node, f"{name}: {arm.name}: unknown key {key}"
                node = node[part]


SEEDS_STUDY = """
    def get_study():
        sweep = [{"name": f"lr{r}", "sweep": True, "seeds": (0, 1),
                  "overrides": {"optimizer.learning_rate": r}} for r in (0.1, 0.2)]
        return {"name": "order", "description": "d", "base_config": "configs/cifar10.py",
                "seeds": (0, 1), "baseline": "base",
                "arms": [*sweep,
                         {"name": "base", "seeds": (0, 1, 2)},
                         {"name": "chosen", "choose": {"key": "optimizer.learning_rate",
                                                       "among": ["lr0.1", "lr0.2"]}},
                         {"name": "other", "overrides": {"model.lrn": False}}]}
"""


def test_every_arm_runs_its_first_seed_before_any_arm_its_second(tmp_path):
    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    order = [(arm.name, seed) for arm, seed in study_lib.run_order(study)]
    assert order == [("lr0.1", 0), ("lr0.1", 1), ("lr0.2", 0), ("lr0.2", 1),  # chosen among
                     ("base", 0), ("chosen", 0), ("other", 0),
                     ("base", 1), ("chosen", 1), ("other", 1),
                     ("base", 2)]
    assert [(arm.name, seed) for arm, seed in study_lib.run_order(study, rounds=1)] == order[:7]


def test_a_run_of_some_arms_runs_only_those_and_the_sweep_they_choose_from(tmp_path):
    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    pairs = lambda **kwargs: [(arm.name, seed)  # noqa: E731
                              for arm, seed in study_lib.run_order(study, **kwargs)]
    assert pairs(rounds=3, arms=["base"]) == [("base", 0), ("base", 1), ("base", 2)]
    assert pairs(arms=["other", "chosen"]) == [
        ("lr0.1", 0), ("lr0.1", 1), ("lr0.2", 0), ("lr0.2", 1),
        ("chosen", 0), ("other", 0), ("chosen", 1), ("other", 1)]
    assert pairs(arms=["lr0.2"]) == [("lr0.2", 0), ("lr0.2", 1)]
    with pytest.raises(UserError, match="no arm 'bsae'; its arms are lr0.1, lr0.2, base"):
        study_lib.run_order(study, arms=["base", "bsae"])
    with pytest.raises(UserError, match="no arm named to run"):  # --arms=, or --arms=
        study_lib.run_order(study, arms=[])


def finish_sweep(study, directory: Path) -> None:
    for arm, error in (("lr0.1", 0.5), ("lr0.2", 0.4)):
        for seed in (0, 1):
            write_run(directory / arm / f"seed{seed}", [0.6, error], 0.5)
            write_config(directory / arm / f"seed{seed}", study, arm, seed, directory)


def test_a_run_that_exits_without_finishing_stops_the_study(tmp_path, capsys):
    """A stop signal sent to the run alone: it saves and exits 0 unfinished; the study must
    not take it for complete and go on to the next arm."""
    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    directory = tmp_path / "dir"
    finish_sweep(study, directory)
    launched = []

    def launch(command, **kwargs):
        launched.append(command)
        return mock.Mock(wait=mock.Mock(return_value=0))  # exit 0, no run_complete.json

    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=launch):
        code = study_lib.run_study(study, study_lib.StudyDirs(directory, tmp_path / "rec"), [],
                                   study_report.final_train_error)
    assert code == 1 and len(launched) == 1
    assert "base seed 0: stopped after" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "rec").iterdir()) == ["lr0.1", "lr0.2"]


def training_launcher(launched: list):
    """A Popen stand-in: a training command is noted and stops the study ("launched"); an
    evaluation of a finished run's training images succeeds."""
    def launch(command, **kwargs):
        if "--mode=eval" in command:
            return mock.Mock(wait=mock.Mock(return_value=0))
        launched.append(command)
        raise RuntimeError("launched")
    return launch


def test_a_finished_run_or_record_of_another_protocol_is_refused(tmp_path):
    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    directory, record = tmp_path / "dir", tmp_path / "rec"
    finish_sweep(study, directory)
    workdir = directory / "base" / "seed0"
    write_run(workdir, [0.6, 0.5], 0.5)
    write_config(workdir, study, "base", 0, directory, **{"optimizer.momentum": 0.5,
                                                          "data.path": "/elsewhere"})
    dirs = study_lib.StudyDirs(directory, record)
    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=AssertionError):
        with pytest.raises(UserError, match=r"the finished run .*base/seed0 was made with a "
                           r"different config .*: optimizer.momentum: recorded 0.5, now 0.9\. "):
            study_lib.run_study(study, dirs, [], study_report.final_train_error)
    # the sweep's records were kept; the mismatched run was not recorded
    assert (record / "lr0.2" / "seed1" / "run_complete.json").exists()
    assert not (record / "base").exists()
    # the same run under the study's protocol is recorded, and the record is then what counts
    write_config(workdir, study, "base", 0, directory, **{"data.path": "/elsewhere"})
    shutil.rmtree(directory / "lr0.1")
    launched = []
    launch = training_launcher(launched)

    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=launch):
        with pytest.raises(RuntimeError, match="launched"):
            study_lib.run_study(study, dirs, [], study_report.final_train_error)
    assert "--workdir=" + str(directory / "chosen" / "seed0") in launched[0]
    assert "--config.optimizer.learning_rate=0.2" in launched[0]   # chosen from the records
    config = json.loads((record / "base" / "seed0" / "config.json").read_text())
    config["optimizer"]["learning_rate"] = 0.02
    (record / "base" / "seed0" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"the record .*base/seed0 .*optimizer.learning_rate: "
                       r"recorded 0.02, now 0.001"):
        study_lib.run_study(study, dirs, [], study_report.final_train_error)


def test_config_differences_ignore_locations_and_keys_added_at_their_default():
    defaults = {"a": {"x": 1, "new": "old"}, "data": {"path": ""}}
    now = {"a": {"x": 1, "new": "old"}, "data": {"path": "/here"}}
    recorded = {"a": {"x": 1}, "data": {"path": "/there"}}
    assert study_records.config_differences(recorded, now, defaults) == []
    changed = {"a": {"x": 2, "new": "changed"}, "data": {"path": "/here"}}
    assert study_records.config_differences(recorded, changed, defaults) == [
        "a.new: not in the record (made before the key existed), now 'changed'",
        "a.x: recorded 1, now 2"]
    assert study_records.config_differences({"a": {"gone": 1, "x": 1}}, {"a": {"x": 1}},
                                            defaults) == [
        "a.gone: recorded 1, no longer a config key"]


def test_an_unfinished_run_of_another_protocol_is_not_resumed(tmp_path):
    """Resuming it would train its remaining steps under the study's config and record the run
    as made wholly under it."""
    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    directory = tmp_path / "dir"
    finish_sweep(study, directory)
    workdir = directory / "base" / "seed0"
    write_run(workdir, [0.6], 0.5, complete=False)
    write_config(workdir, study, "base", 0, directory, **{"optimizer.momentum": 0.5})
    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=AssertionError):
        with pytest.raises(UserError, match=r"the unfinished run .*base/seed0 was made with a "
                           r"different config .*optimizer.momentum: recorded 0.5, now 0.9"):
            study_lib.run_study(study, directory, [], study_report.final_train_error)
    write_config(workdir, study, "base", 0, directory)  # the study's own: resumed
    launched = []
    launch = training_launcher(launched)

    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=launch):
        with pytest.raises(RuntimeError, match="launched"):
            study_lib.run_study(study, directory, [], study_report.final_train_error)
    assert f"--workdir={workdir}" in launched[0]


def record_runs(study, directory: Path, record: Path, errors: dict, data=None) -> None:
    """Finished runs of the order study's sweep and `errors` ({(arm, seed): top-1}), recorded."""
    finish_sweep(study, directory)
    for (arm, seed), top1 in errors.items():
        write_run(directory / arm / f"seed{seed}", [0.6, 0.4], top1)
        write_config(directory / arm / f"seed{seed}", study, arm, seed, directory)
    for workdir in directory.glob("*/seed*"):
        if data and workdir.parent.name in data:
            lines = (workdir / "metrics.jsonl").read_text().splitlines()
            start = {**json.loads(lines[0]), **data[workdir.parent.name]}
            (workdir / "metrics.jsonl").write_text("\n".join([json.dumps(start), *lines[1:]])
                                                  + "\n")
        study_records.save_record(workdir, record / workdir.parent.name / workdir.name)


def test_a_report_refuses_records_of_another_protocol_or_other_data(tmp_path):
    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    directory, record = tmp_path / "dir", tmp_path / "rec"
    facts = {"dataset": "cifar10", "num_classes": 10, "train_examples": 50000,
             "eval_examples": 10000}
    record_runs(study, directory, record, {("base", 0): 0.3, ("base", 1): 0.32},
                data={"base": facts})
    dirs = study_lib.StudyDirs(None, record)
    results = study_report.write_report(study, dirs, "cmd", [])
    assert results["arms"]["base"]["runs"]["0"]["data"] == facts
    # a run-wide override the records were not made with: refused, as when the study runs
    with pytest.raises(UserError, match=r"the record .*lr0.1/seed0 .*optimizer.momentum: "
                       r"recorded 0.9, now 0.5"):
        study_report.write_report(study, dirs, "cmd", ["--config.optimizer.momentum=0.5"])
    # another dataset under the same data.name (data.path is not compared): refused
    start = json.loads((record / "base" / "seed1" / "metrics.jsonl").read_text()
                       .splitlines()[0])
    lines = (record / "base" / "seed1" / "metrics.jsonl").read_text().splitlines()
    lines[0] = json.dumps({**start, "train_examples": 9469})
    (record / "base" / "seed1" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"different data.*base/seed1: .*9469"):
        study_report.write_report(study, dirs, "cmd", [])


def test_a_report_checks_the_protocol_of_workdirs_and_of_arms_not_chosen_yet(tmp_path):
    """Without records the report reads workdirs: a run made under another protocol is
    refused there too. An arm whose sweep is unfinished is still checked on every key but the
    one its sweep will choose, and the claims table leaves it out."""
    from alexnet_jax.studies import claims  # noqa: PLC0415

    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    directory = tmp_path / "dir"
    finish_sweep(study, directory)
    for arm in ("base", "chosen"):
        write_run(directory / arm / "seed0", [0.6, 0.4], 0.3)
        write_config(directory / arm / "seed0", study, arm, 0, directory)
    assert study_report.collect(study, directory, [])["arms"]["chosen"]["chosen"] is True
    write_config(directory / "base" / "seed0", study, "base", 0, directory,
                 **{"optimizer.momentum": 0.5})
    with pytest.raises(UserError, match=r"the run .*base/seed0 was made with a different "
                       r"config .*optimizer.momentum: recorded 0.5, now 0.9"):
        study_report.collect(study, directory, [])
    write_config(directory / "base" / "seed0", study, "base", 0, directory)
    shutil.rmtree(directory / "lr0.1" / "seed1")  # the sweep unfinished: no choice
    results = study_report.collect(study, directory, [])
    assert results["arms"]["chosen"]["chosen"] is False
    assert results["arms"]["chosen"]["runs"]["0"]["complete"]
    assert claims.values(results, "chosen", "top1") == []
    assert claims.values(results, "base", "top1") == [pytest.approx(30.0)]
    config = json.loads((directory / "chosen" / "seed0" / "config.json").read_text())
    config["optimizer"]["momentum"] = 0.5
    (directory / "chosen" / "seed0" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"chosen/seed0 .*: optimizer.momentum: recorded 0.5, "
                       r"now 0.9\. "):   # the rate, still to be chosen, is not compared
        study_report.collect(study, directory, [])


def test_the_gap_column_pairs_each_runs_own_errors(tmp_path):
    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    directory = tmp_path / "dir"
    finish_sweep(study, directory)
    write_run(directory / "base" / "seed0", [], 0.30)  # its training images not evaluated
    # logged last-epoch error 38%, the images evaluated after the run 36%: gap 4 points
    write_run(directory / "base" / "seed1", [0.6, 0.38], 0.40, train_evaluation=0.36)
    for seed in (0, 1):
        write_config(directory / "base" / f"seed{seed}", study, "base", seed, directory)
    table = study_report.markdown(study_report.collect(study, directory, []), "cmd")
    row = next(line for line in table.splitlines() if line.startswith("| `base`"))
    assert row.endswith("| 38.00 | 36.00 | 4.00 | - |") and "| 30.00 |" not in row


def test_a_reports_command_does_not_depend_on_where_it_ran(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "experiments"))
    from run_study import reproduce_command  # noqa: PLC0415

    expected = ("python experiments/run_study.py --study=configs/studies/s.py "
                "--dir=runs/studies/s --record=docs/results/s --config.data.path=../d")
    for runs, record in ((Path("/tmp/runs"), Path("docs/results/s")),
                         (None, REPO / "docs" / "results" / "s"),
                         (Path("x"), Path("/elsewhere/checkout/docs/results/s")),
                         (Path("x"), Path("../checkout/docs/results/s"))):   # from a worktree
        assert reproduce_command("configs/studies/s.py", runs, record,
                                 ["--config.data.path=../d"]) == expected
    # a study run in part says which part: a recheck of one arm is not the whole study
    assert reproduce_command("configs/studies/s.py", None, Path("docs/results/s"),
                             ["--config.data.path=../d"], 1, ["baseline"]) == expected.replace(
        "--record=docs/results/s", "--record=docs/results/s --rounds=1 --arms=baseline")
    assert reproduce_command(str(REPO / "configs/studies/s.py"), Path("/r"), None, []) == (
        "python experiments/run_study.py --study=configs/studies/s.py --dir=/r")


def test_the_claims_tables_of_both_pages_are_the_ones_the_committed_records_give(tmp_path):
    """The README's summary and docs/results.md's full tables are written by a command run by
    hand: a record landed without them would leave either page saying less (or other) than the
    records do. `--check` alone checks both pages; one named page (a copy, here) is checked
    alone."""
    command = [sys.executable, str(REPO / "experiments" / "claims_table.py"), "--check"]

    def check(*arguments, cwd=REPO):
        return subprocess.run([*command, *arguments], cwd=cwd, capture_output=True, text=True)

    assert check().returncode == 0
    for page in ("README.md", "docs/results.md"):
        stale = tmp_path / "one" / page
        stale.parent.mkdir(parents=True, exist_ok=True)
        text = (REPO / page).read_text()
        assert "| ReLU trains faster" in text
        stale.write_text(text.replace("| ReLU trains faster", "| ReLU trains slower"))
        result = check(str(stale))
        assert result.returncode == 1, page
        assert f"claims_table.py --write {stale}" in result.stderr
    # the default pages, from where the command runs: a stale results page alone is caught
    both = tmp_path / "both"
    (both / "docs").mkdir(parents=True)
    (both / "README.md").write_text((REPO / "README.md").read_text())
    (both / "docs" / "results.md").write_text((tmp_path / "one" / "docs" / "results.md")
                                              .read_text())
    result = check(f"--results={REPO / 'docs' / 'results'}", cwd=both)
    assert result.returncode == 1 and "docs/results.md are out of date" in result.stderr
    assert "README.md" not in result.stderr
    refused = check(str(tmp_path / "notes.md"))
    assert refused.returncode == 2 and "none of the pages" in refused.stderr


def test_a_recorded_run_gets_its_training_images_evaluated_while_its_checkpoint_is_here(
        tmp_path, capsys):
    """Records made before the evaluation of the training images existed get it from their
    finished workdir; the gap claim reads it (the training error logged while training has
    dropout on)."""
    from alexnet_jax.studies import claims  # noqa: PLC0415

    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    directory, record = tmp_path / "dir", tmp_path / "rec"
    record_runs(study, directory, record, {("base", 0): 0.3})
    launched = []

    def launch(command, **kwargs):
        launched.append(command)
        if "--mode=eval" not in command:
            raise RuntimeError("launched a training")
        workdir = Path(next(a for a in command if a.startswith("--workdir="))[10:])
        (workdir / "eval_results.jsonl").write_text(json.dumps(
            {"step": 20, "split": "train", "crops": 1, "top1_error": 0.25}) + "\n")
        return mock.Mock(wait=mock.Mock(return_value=0))

    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=launch):
        with pytest.raises(RuntimeError, match="launched a training"):
            study_lib.run_study(study, study_lib.StudyDirs(directory, record), [],
                                study_report.final_train_error)
    evaluated = [c for c in launched if "--mode=eval" in c]
    assert all("--split=train" in c for c in evaluated)
    assert f"--workdir={directory / 'base' / 'seed0'}" in evaluated[-1]
    assert "base seed 0: evaluating its training images" in capsys.readouterr().out
    results = study_report.collect(study, study_lib.StudyDirs(None, record), [])
    run = results["arms"]["base"]["runs"]["0"]
    assert run["final_train_eval_error"] == 0.25 and run["final_train_error"] == 0.4
    assert claims.values(results, "base", "gap") == [pytest.approx(30.0 - 25.0)]
    # measured once: a second pass launches no evaluation for it
    launched.clear()
    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=launch):
        with pytest.raises(RuntimeError, match="launched a training"):
            study_lib.run_study(study, study_lib.StudyDirs(directory, record), [],
                                study_report.final_train_error)
    assert not [c for c in launched if "--mode=eval" in c and "base/seed0" in " ".join(c)]


def test_a_stop_signal_while_a_finished_run_is_evaluated_stops_the_study(tmp_path, capsys):
    """The signal reaches the evaluation of a finished run's training images: the study must
    stop there, not start the next run (whose process would never see the signal)."""
    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    directory, record = tmp_path / "dir", tmp_path / "rec"
    record_runs(study, directory, record, {("base", 0): 0.3})
    launched = []

    def launch(command, **kwargs):
        launched.append(command)
        if "--mode=eval" in command:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a session's end sends it
            return mock.Mock(wait=mock.Mock(return_value=1), poll=mock.Mock(return_value=1))
        raise RuntimeError("launched a training")

    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=launch):
        code = study_lib.run_study(study, study_lib.StudyDirs(directory, record), [],
                                   study_report.final_train_error)
    assert code == 1 and len(launched) == 1 and "--mode=eval" in launched[0]
    assert "base seed 0: stopped by SIGTERM" in capsys.readouterr().out
    assert (record / "base" / "seed0" / "run_complete.json").exists()  # still its record


def test_a_record_replaced_by_a_process_that_dies_midway_is_put_back(tmp_path):
    """Replacing a record moves the old one aside first: a death before the new one is in
    place must not lose it (the study would train the run again)."""
    study = study_lib.load_study(write_study(tmp_path / "order.py", SEEDS_STUDY))
    directory, record = tmp_path / "dir", tmp_path / "rec"
    record_runs(study, directory, record, {("base", 0): 0.3})
    dirs = study_lib.StudyDirs(None, record)
    base = study.arm("base")
    assert dirs.recorded(base, 0) == record / "base" / "seed0"
    real_rename, renames = Path.rename, []

    def first_real(self, target):  # the old record moved aside, then the process dies
        renames.append(target)
        if len(renames) == 1:
            return real_rename(self, target)
        raise OSError("killed")

    with mock.patch.object(Path, "rename", first_real):
        with pytest.raises(OSError, match="killed"):
            study_records.save_record(directory / "base" / "seed0", record / "base" / "seed0")
    assert not (record / "base" / "seed0").exists()  # mid-replacement
    assert dirs.recorded(base, 0) == record / "base" / "seed0"  # put back
    assert not (record / "base" / "seed0.replaced").exists()
    study_records.save_record(directory / "base" / "seed0", record / "base" / "seed0")
    assert sorted(p.name for p in (record / "base").iterdir()) == ["seed0"]


def test_a_training_images_evaluation_of_an_earlier_checkpoint_is_not_the_runs_fit(tmp_path):
    workdir = tmp_path / "run"
    write_run(workdir, [0.6, 0.4], 0.3, train_evaluation=0.25)  # at the final step, 20
    assert study_report.run_result(workdir)["final_train_eval_error"] == 0.25
    lines = (workdir / "eval_results.jsonl").read_text().splitlines()
    earlier = {**json.loads(lines[0]), "step": 10, "top1_error": 0.5}
    (workdir / "eval_results.jsonl").write_text(json.dumps(earlier) + "\n")
    assert study_report.run_result(workdir)["final_train_eval_error"] is None


def test_a_record_names_data_beside_the_checkout_by_its_relative_path(tmp_path):
    for path, recorded in ((str(REPO.parent / "shared" / "data" / "cifar10"),
                            "../shared/data/cifar10"),
                           ("/elsewhere/cifar10", "/elsewhere/cifar10"),
                           ("../shared/data/cifar10", "../shared/data/cifar10")):
        workdir = tmp_path / "run"
        workdir.mkdir(exist_ok=True)
        (workdir / "config.json").write_text(json.dumps({"data": {"path": path}, "seed": 3},
                                                        indent=2))
        study_records.save_record(workdir, tmp_path / "record")
        assert json.loads((tmp_path / "record" / "config.json").read_text()) == {
            "data": {"path": recorded}, "seed": 3}


def test_a_run_that_logged_every_step_is_recorded_compressed_and_reads_the_same(tmp_path):
    """Figure 1's protocol logs every step: megabytes of metrics, kept gzip-compressed in the
    record (a short run's stay plain), and its report reads the same numbers from either."""
    workdir = tmp_path / "run"
    write_run(workdir, [0.6, 0.4], 0.3, train_evaluation=0.25)
    short = study_report.run_result(workdir)
    study_records.save_record(workdir, tmp_path / "short")
    assert (tmp_path / "short" / "metrics.jsonl").exists()
    with (workdir / "metrics.jsonl").open("a") as out:   # a long run's step lines
        for _ in range(study_records.COMPRESS_METRICS_ABOVE_BYTES // 100 + 1):
            out.write(json.dumps({"event": "note", "text": "x" * 100}) + "\n")
    study_records.save_record(workdir, tmp_path / "long")
    names = sorted(p.name for p in (tmp_path / "long").iterdir())
    assert names == ["eval_results.jsonl", "metrics.jsonl.gz", "run_complete.json"]
    assert (tmp_path / "long" / "metrics.jsonl.gz").stat().st_size < 100_000
    assert read_records(tmp_path / "long") == read_records(workdir)
    long = study_report.run_result(tmp_path / "long")
    assert {**long, "workdir": None} == {**short, "workdir": None}


def test_an_evaluation_of_diverged_parameters_is_never_a_runs_best(tmp_path):
    """A line logged before the run stopped as diverged (written by older code: NaN outputs
    ranked every label first, 0% error, loss NaN) is no result."""
    workdir = tmp_path / "run"
    write_run(workdir, [0.6, 0.4], 0.3, complete=False)
    with (workdir / "metrics.jsonl").open("a") as out:
        out.write(json.dumps({"step": 30, "epoch": 3, "split": "val", "crops": 1,
                              "top1_error": 0.0, "top5_error": 0.0, "loss": float("nan")})
                  + "\n")
        out.write(json.dumps({"step": 30, "event": "diverged", "loss": "nan"}) + "\n")
    result = study_report.run_result(workdir)
    assert result["best_val_1crop"]["top1_error"] == pytest.approx(0.3)
    assert result["diverged_at_step"] == 30
