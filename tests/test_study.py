"""Studies: the runner (ordinary runs, resumed, skipped when finished) and the report."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest

from alexnet_jax import study as study_lib
from alexnet_jax import study_report
from alexnet_jax.errors import UserError
from test_cli import REPO, tiny_overrides


def write_study(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def run_study(study_file, directory, *overrides):
    command = [sys.executable, "experiments/run_study.py", f"--study={study_file}",
               f"--dir={directory}", *overrides]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)


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
         "--config.model.lrn=False", "--config.train.num_steps=1", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert partial.returncode == 0, partial.stderr[-2000:]
    (directory / "no_lrn" / "seed0" / "run_complete.json").unlink()  # as if killed

    first = run_study(study_file, directory, *overrides)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    assert "[1/2] base seed 0: training" in first.stdout
    starts = [json.loads(line) for line in
              (directory / "no_lrn" / "seed0" / "metrics.jsonl").read_text().splitlines()
              if '"run_start"' in line]
    assert [s["start_step"] for s in starts] == [0, 1]  # resumed, not restarted
    config = json.loads((directory / "no_lrn" / "seed0" / "config.json").read_text())
    assert config["model"]["lrn"] is False and config["train"]["num_steps"] == 2

    again = run_study(study_file, directory, *overrides)
    assert again.returncode == 0
    assert "[1/2] base seed 0: complete" in again.stdout
    assert "[2/2] no_lrn seed 0: complete" in again.stdout

    results = json.loads((directory / "results.json").read_text())
    for arm in ("base", "no_lrn"):
        run = results["arms"][arm]["runs"]["0"]
        assert run["complete"] and run["steps"] == 2 and run["wall_time_s"] > 0
        assert 0 <= run["final"]["val_1crop"]["top1_error"] <= 1
        assert run["final"]["val_10crop"] is None
    table = (directory / "results.md").read_text()
    assert "| `no_lrn` | `model.lrn=False` | 1/1 |" in table and "+1.4 / +1.2" in table
    assert (directory / "results.png").stat().st_size > 10_000


def write_run(workdir: Path, epochs_train_error, final_top1, complete=True, start=1000.0):
    """A workdir as a run leaves it: run_start, epoch training errors, evaluations."""
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
    for seed in (0, 1):
        write_run(directory / "relu_lr0.1" / f"seed{seed}", [0.6, 0.5], 0.5)
        write_run(directory / "relu_lr0.2" / f"seed{seed}", [0.6, 0.4], 0.5)
        write_run(directory / "relu" / f"seed{seed}", [0.5, 0.3, 0.2], 0.30 + 0.02 * seed)
        write_run(directory / "tanh" / f"seed{seed}", [0.7, 0.5, 0.4, 0.3, 0.24, 0.2][:6 - 2 * seed],
                  0.40)
    overrides = study_lib.arm_overrides(study, study.arm("relu"), directory,
                                        study_report.final_train_error)
    assert overrides["optimizer.learning_rate"] == 0.2
    command = study_lib.run_command(study, study.arm("relu"), 1, directory, overrides, ["--x"])
    assert "--config.optimizer.learning_rate=0.2" in command and command[-1] == "--x"
    assert f"--workdir={directory / 'relu' / 'seed1'}" in command

    results = study_report.write_report(study, directory, "the command")
    relu, tanh = results["arms"]["relu"]["runs"], results["arms"]["tanh"]["runs"]
    assert relu["0"]["epochs_to_target"] == 3 and tanh["0"]["epochs_to_target"] == 5
    assert tanh["1"]["epochs_to_target"] is None     # 0.3 after 4 epochs: never reached
    assert relu["0"]["wall_time_s"] == pytest.approx(185.0)
    table = (directory / "results.md").read_text()
    tanh_row = next(line for line in table.splitlines() if line.startswith("| `tanh`"))
    assert "| 5 (not reached: >4) | 1.67 | (6x the epochs) |" in tanh_row   # 5 against 3
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
    overrides = study_lib.arm_overrides(study, study.arm("main"), directory,
                                        study_report.final_train_error)
    assert overrides["optimizer.learning_rate"] == 0.1   # the diverged rate is never chosen
    # Both sweep runs are done (one finished, one diverged): nothing is launched for them.
    launched = []

    def launch(command, **kwargs):
        launched.append(command)
        raise RuntimeError("launched")

    with mock.patch.object(study_lib.subprocess, "Popen", side_effect=launch):
        with pytest.raises(RuntimeError, match="launched"):
            study_lib.run_study(study, directory, [], study_report.final_train_error)
    assert "lr0.2 seed 0: diverged at step 13 (a failed sweep run)" in capsys.readouterr().out
    assert len(launched) == 1 and "--config.optimizer.learning_rate=0.1" in launched[0]
    table = study_report.markdown(study_report.collect(study, directory), "cmd")
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


@pytest.mark.parametrize("name", ["cifar10_figure1", "cifar10_lrn", "imagenette_ablations"])
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
