"""The training loop in process: reproducibility, full augmentation, resumption."""

import subprocess
from pathlib import Path
from unittest import mock

import flax
import jax
import numpy as np
import pytest
from helpers import file_versions

from alexnet_jax.common import host_memory
from alexnet_jax.common.errors import UserError
from alexnet_jax.common.run_files import read_completion, read_divergence, surviving_records
from alexnet_jax.training import evaluation, steps, train
from alexnet_jax.training.records.metrics_writer import read_records


def train_losses(config, workdir):
    train.train_and_evaluate(config, workdir)
    return [r["loss"] for r in read_records(workdir) if r.get("split") == "train"]


@pytest.mark.slow
def test_same_seed_same_losses_with_the_full_augmentation(config, tmp_path):
    with config.unlocked():
        config.train.num_steps = 4
        config.train.final_eval_views = ()
        config.data.stats_sample = 0
        # losses that follow the images: at the paper's initialisation a tiny network's loss
        # moves by under a float32 step when they change, and would match whatever they were
        config.model.init_std, config.model.positive_bias = 0.1, 0.1
    assert config.data.mean == "image" and config.data.lighting == "cuda_convnet2"
    first = train_losses(config, tmp_path / "a")
    second = train_losses(config, tmp_path / "b")
    assert len(first) == 4 and first == second  # bit-identical
    [start] = [r for r in read_records(tmp_path / "a") if r.get("event") == "run_start"]
    assert start["formulations"] == {"lrn_impl": "matmul",  # the CPU's auto
                                     "conv1_impl": "direct", "conv_grad_impl": "matmul",
                                     "cpu_conv_impl": "eigen"}
    # what made the run: this checkout's commit, the installed versions, devices and processes
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent, check=True).stdout.strip()
    assert start["code"]["commit"] == head and isinstance(start["code"]["dirty"], bool)
    assert start["versions"]["jax"] == jax.__version__
    assert start["versions"]["flax"] == flax.__version__
    assert start["versions"]["numpy"] == np.__version__
    assert set(start["versions"]) >= {"optax", "orbax-checkpoint", "tensorflow-datasets"}
    assert start["num_devices"] == jax.device_count() and start["process_count"] == 1
    assert start["device_kind"] == jax.devices()[0].device_kind
    assert start["platform"]["machine"] and start["platform"]["python"]
    assert start["platform"]["host_memory"] == host_memory.state()
    with config.unlocked():
        config.seed = 1
    other = train_losses(config, tmp_path / "c")
    assert not np.allclose(other, first)


def two_steps_into(config, workdir):
    """Train two steps into `workdir`; the versions of the files it then holds."""
    with config.unlocked():
        config.train.num_steps = 2
        config.train.final_eval_views = ()
    train.train_and_evaluate(config, workdir)
    return file_versions(workdir)


def scripted_evaluation(errors):
    """A stand-in for evaluate() whose top-1 errors are `errors`, one per call, in order."""
    remaining = list(errors)

    def evaluate(eval_step, params, source, prep, batch, mesh, views=1):
        error = remaining.pop(0)
        return {"top1_error": error, "top5_error": error / 2, "loss": 1.0, "count": 15,
                "crops": views}

    return evaluate


def kept_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_keeps_the_last_checkpoints_and_the_best_across_resumes(config, tmp_path):
    with config.unlocked():
        config.train.num_epochs = 2               # 5 steps per epoch
        config.train.keep_checkpoints = 1
        config.train.checkpoint_every_steps = 2
        config.train.final_eval_views = (1,)
        config.schedule.name = "constant"
    # epoch 1 is the best (0.3); the run is resumed twice after it
    with mock.patch.object(evaluation, "evaluate", scripted_evaluation([0.3, 0.5])):
        assert train.train_and_evaluate(config, tmp_path)["step"] == 10
    assert kept_steps(tmp_path) == [5, 10]
    for epochs, error in ((3, 0.6), (4, 0.7)):
        with config.unlocked():
            config.train.num_epochs = epochs
        with mock.patch.object(evaluation, "evaluate", scripted_evaluation([error])):
            train.train_and_evaluate(config, tmp_path)
        assert kept_steps(tmp_path) == [5, 5 * epochs]     # the best survives every resume
    with config.unlocked():
        config.train.num_epochs = 5
    with mock.patch.object(evaluation, "evaluate", scripted_evaluation([0.2])):
        train.train_and_evaluate(config, tmp_path)
    assert kept_steps(tmp_path) == [25]                    # a new best replaces it
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
    assert (tmp_path / "conv1_filters.png").exists()
    again = train.train_and_evaluate(config, tmp_path)  # complete: nothing more to do
    assert again["step"] == 25
    assert len([r for r in read_records(tmp_path) if r.get("split") == "val"]) == 5


@pytest.mark.slow
def test_plateau_schedule_reduces_stops_and_is_restored(config, tmp_path):
    with config.unlocked():
        config.train.num_epochs = 30
        config.train.final_eval_views = (1,)
        config.optimizer.learning_rate = 1e-6     # nothing improves: every epoch is a plateau
        config.schedule.patience = 1
        config.schedule.max_reductions = 2
    outcome = train.train_and_evaluate(config, tmp_path)
    records = read_records(tmp_path)
    events = [r["event"] for r in records if str(r.get("event", "")).startswith("schedule_")]
    assert events == ["schedule_reduced", "schedule_reduced", "schedule_finished"]
    assert outcome["step"] == 4 * 5 and outcome["stopped_by_schedule"]  # 4 epochs, not 30
    rates = sorted({r["learning_rate"] for r in records if r.get("split") == "train"})
    assert rates == pytest.approx([1e-8, 1e-7, 1e-6])
    from alexnet_jax.training.checkpoints.checkpointing import Checkpointer  # noqa: PLC0415
    checkpointer = Checkpointer(tmp_path / "checkpoints", 3)
    saved = checkpointer.restore_progress(checkpointer.latest_step())["schedule"]
    checkpointer.close()
    assert saved["reductions"] == 2 and saved["finished"]
    assert saved["learning_rate"] == pytest.approx(1e-8)


@pytest.mark.slow
def test_a_resume_after_a_reduction_trains_at_the_reduced_rate_and_an_ended_run_stays_ended(
        config, tmp_path):
    with config.unlocked():
        config.train.num_epochs = 2
        config.train.final_eval_views = ()
        config.optimizer.learning_rate = 1e-6     # nothing improves: epoch 2 is a plateau
        config.schedule.patience = 1
        config.schedule.max_reductions = 1
    train.train_and_evaluate(config, tmp_path)   # epoch 2's evaluation reduces the rate
    with config.unlocked():
        config.train.num_epochs = 30
    outcome = train.train_and_evaluate(config, tmp_path)
    rates = [(r["step"], r["learning_rate"]) for r in read_records(tmp_path)
             if r.get("split") == "train"]
    after = [rate for step, rate in rates if 10 < step <= 15]
    assert after == pytest.approx([1e-7] * 5)
    assert outcome["stopped_by_schedule"] and outcome["step"] == 15   # epoch 3: the end
    before = read_records(tmp_path)
    again = train.train_and_evaluate(config, tmp_path)   # the schedule ended it: stays ended
    assert again["step"] == 15 and read_records(tmp_path) == before


def test_the_last_steps_are_saved_before_the_final_evaluation(config, tmp_path):
    with config.unlocked():
        config.train.num_steps = 3                # inside epoch 1: no epoch-end checkpoint
        config.train.final_eval_views = (10,)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("the 10 views do not fit")

    with mock.patch.object(evaluation, "evaluate", out_of_memory):
        with pytest.raises(MemoryError):
            train.train_and_evaluate(config, tmp_path)
    assert kept_steps(tmp_path) == [3]


def test_every_fetched_step_reaches_the_log_that_times_the_estimate_of_the_time_left(
        config, tmp_path):
    """The progress bar's estimate is timed from the first step's end (tests/test_eta.py),
    which the log learns when the step's metrics are fetched."""
    from alexnet_jax.training.records.run_log import RunLog  # noqa: PLC0415

    with config.unlocked():
        config.train.num_steps = 3
        config.train.final_eval_views = ()
    fetched = []
    original = RunLog.step_fetched

    def recorded(log, step):
        fetched.append(step)
        original(log, step)

    with mock.patch.object(RunLog, "step_fetched", recorded):
        train.train_and_evaluate(config, tmp_path)
    assert fetched == [1, 2, 3]


@pytest.mark.parametrize("learning_rate", [1e8, 1e39])
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(config, tmp_path,
                                                                            learning_rate):
    """1e39 (inf in float32): the parameters overflow in the first update, whose loss (taken
    before it) was finite."""
    from alexnet_jax.training.checkpoints.checkpointing import load_params  # noqa: PLC0415

    with config.unlocked():
        config.train.num_steps = 30
        config.train.checkpoint_every_steps = 1
        config.optimizer.learning_rate = learning_rate
    with pytest.raises(UserError, match="the (training loss|parameters) became (nan|inf|non-"
                       "finite)") as error:
        train.train_and_evaluate(config, tmp_path)
    bad_step = int(str(error.value).split(" at step ")[1].split(";")[0])
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert max(kept, default=0) < bad_step
    if not kept:
        assert "has no checkpoint to go back to" in str(error.value)
    for step in kept:       # "the last good checkpoint" holds finite parameters
        params = load_params(tmp_path / "checkpoints" / str(step) / "params")
        assert all(np.isfinite(value).all() for layer in params.values()
                   for value in layer.values())
    if kept:
        assert f"last good checkpoint (step {max(kept)})" in str(error.value)
    assert read_divergence(tmp_path) == {"event": "diverged", "step": bad_step,
                                         "loss": mock.ANY, "time": mock.ANY}


def test_parameters_that_overflow_at_an_epochs_last_step_are_never_evaluated(config,
                                                                            tmp_path):
    """One step an epoch at a rate that overflows the parameters: the epoch's end must not
    record an evaluation of them (NaN outputs once ranked every label first: 0% error)."""
    with config.unlocked():
        config.train.batch_size, config.train.eval_batch_size = 40, 40   # the 40 images
        config.train.num_epochs = 2
        config.optimizer.learning_rate = 1e39
    with pytest.raises(UserError, match="the parameters became non-finite at step 1"):
        train.train_and_evaluate(config, tmp_path)
    records = read_records(tmp_path)
    assert not [r for r in records if r.get("split") == "val"]
    assert read_divergence(tmp_path)["step"] == 1


@pytest.mark.parametrize("section,key,value,message", [
    ("model", "columns", 3, "model.columns=3 is not valid"),
    ("data", "crop_size", 300, "larger than the resized image"),
    ("train", "batch_size", 6, "cannot be split evenly over the mesh's data axis"),
    ("mesh", "model", 3, "must be 1 or 2"),
    ("data", "name", "mnist", "data.name='mnist' is not valid"),
    ("model", "dropout_rate", 1.0, "dropout_rate"),
    ("data", "path", "/no/such/tree", r"data.path=./no/such/tree. does not exist"),
    ("train", "batch_size", 4096, r"train.batch_size: was 8, now 4096 \(refused"),
])
def test_bad_values_are_refused_before_anything_is_touched(config, tmp_path, section, key,
                                                            value, message):
    workdir = tmp_path / "run"
    before = two_steps_into(config, workdir)
    with config.unlocked():
        setattr(config[section], key, value)
    with pytest.raises(UserError, match=message):
        train.train_and_evaluate(config, workdir)
    assert file_versions(workdir) == before


def test_a_batch_larger_than_the_training_split_creates_no_workdir(config, tmp_path):
    with config.unlocked():
        config.train.batch_size = 4096
    with pytest.raises(UserError, match="fewer images .* than one batch"):
        train.train_and_evaluate(config, tmp_path / "new_run")
    assert not (tmp_path / "new_run").exists()


def test_mesh_larger_than_the_devices_is_refused(config, tmp_path):
    import jax  # noqa: PLC0415

    from alexnet_jax.common import sharding  # noqa: PLC0415
    with pytest.raises(UserError, match="device count divisible by 2"):
        sharding.make_mesh(2, 2, jax.devices()[:1])


def test_checkpoint_of_another_model_is_refused_and_kept(config, tmp_path):
    before = two_steps_into(config, tmp_path)
    with config.unlocked():
        config.model.fc_widths = (64, 64)
        config.train.num_steps = 4
    with pytest.raises(UserError, match="written by a different model"):
        train.train_and_evaluate(config, tmp_path)
    assert file_versions(tmp_path) == before


def test_a_workdir_that_is_a_file_is_refused(config, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match=f"the workdir {blocker} is a file, not a directory"):
        train.train_and_evaluate(config, blocker)
    with pytest.raises(UserError, match=f"is inside {blocker} is a file, not a directory"):
        train.train_and_evaluate(config, blocker / "run")
    assert blocker.read_text() == "not a directory"


def full_snapshot(directory):
    """Every file and folder under a directory with its size and modification time."""
    return {str(p.relative_to(directory)): (p.is_dir(), p.stat().st_size if p.is_file() else 0,
                                            p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*"))}


def test_a_run_refused_for_its_data_creates_no_workdir(config, tmp_path):
    with config.unlocked():
        config.data.path = str(tmp_path / "no_such_tree")
    with pytest.raises(UserError, match="ImageFolder tree"):
        train.train_and_evaluate(config, tmp_path / "new" / "run")
    assert not (tmp_path / "new").exists()


def test_evaluating_a_workdir_without_checkpoints_changes_nothing(config, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    before = full_snapshot(tmp_path)
    with pytest.raises(UserError, match="has no checkpoint to evaluate"):
        train.evaluate_workdir(config, tmp_path / "run")
    assert full_snapshot(tmp_path) == before


def test_running_a_finished_run_again_changes_nothing(config, tmp_path):
    workdir = tmp_path / "run"
    two_steps_into(config, workdir)
    before = full_snapshot(workdir)
    outcome = train.train_and_evaluate(config, workdir)
    assert outcome["step"] == 2
    assert full_snapshot(workdir) == before


def epoch_records(workdir):
    return [r for r in read_records(workdir) if r.get("split") == "train_epoch"]


@pytest.mark.slow
def test_epoch_training_error_is_the_mean_of_its_steps_and_survives_a_resume(config, tmp_path):
    with config.unlocked():
        config.train.num_epochs = 1                # 5 steps
        config.train.final_eval_views = ()
        config.train.checkpoint_every_steps = 2
    train.train_and_evaluate(config, tmp_path / "whole")
    steps = [r for r in read_records(tmp_path / "whole") if r.get("split") == "train"]
    (epoch,) = epoch_records(tmp_path / "whole")
    assert epoch["steps"] == 5 and epoch["epoch"] == 1
    assert epoch["loss"] == pytest.approx(np.mean([r["loss"] for r in steps]), rel=1e-5)
    assert epoch["top1_error"] == pytest.approx(np.mean([r["top1_error"] for r in steps]),
                                                abs=1e-6)
    with config.unlocked():
        config.train.num_steps = 3                 # stop mid-epoch (checkpoint at 3)...
    train.train_and_evaluate(config, tmp_path / "resumed")
    with config.unlocked():
        config.train.num_steps = -1                # ...and finish the epoch in a new process
    train.train_and_evaluate(config, tmp_path / "resumed")
    (resumed,) = epoch_records(tmp_path / "resumed")
    assert resumed["steps"] == 5
    for key in ("loss", "top1_error", "top5_error"):
        assert resumed[key] == pytest.approx(epoch[key], rel=1e-6)


def test_training_error_target_ends_the_run(config, tmp_path):
    with config.unlocked():
        config.train.num_epochs = 4
        config.train.final_eval_views = (1,)
        config.train.stop_at_train_error = 0.99    # any epoch reaches it
        config.schedule.name = "constant"
    outcome = train.train_and_evaluate(config, tmp_path)
    assert outcome["step"] == 5 and outcome["train_error_target_reached"]["epoch"] == 1
    events = [r["event"] for r in read_records(tmp_path) if "event" in r]
    assert "train_error_target_reached" in events
    again = train.train_and_evaluate(config, tmp_path)  # complete: nothing more to do
    assert again["step"] == 5


def signal_before_step(number: int):
    """A make_train_step whose steps send this process SIGTERM just before step `number`
    (0-based) runs, as a preemption would while it computes."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    real = steps.make_train_step

    def make(*args, **kwargs):
        step_fn = real(*args, **kwargs)

        def step(*step_args):
            if int(step_args[5]) == number:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_fn(*step_args)

        return step

    return mock.patch.object(steps, "make_train_step", make)


@pytest.mark.slow
def test_a_stop_during_an_epochs_last_step_keeps_its_end_of_epoch_work(config, tmp_path):
    with config.unlocked():
        config.train.num_epochs = 2               # 5 steps per epoch
        config.train.final_eval_views = ()
    with signal_before_step(4):                   # the last step of epoch 1
        outcome = train.train_and_evaluate(config, tmp_path / "stopped")
    assert outcome == {"step": 5, "interrupted": "SIGTERM"}
    assert not [r for r in read_records(tmp_path / "stopped") if r.get("split") == "val"]
    train.train_and_evaluate(config, tmp_path / "stopped")      # resumed: the owed work first
    train.train_and_evaluate(config, tmp_path / "whole")
    ends = {name: [(r["step"], r["split"], r["top1_error"]) for r in read_records(tmp_path / name)
                   if r.get("split") in ("val", "train_epoch")] for name in ("stopped", "whole")}
    assert [step for step, split, _ in ends["whole"]] == [5, 5, 10, 10]
    assert ends["stopped"] == ends["whole"]
    assert kept_steps(tmp_path / "stopped") == kept_steps(tmp_path / "whole")


@pytest.mark.slow
def test_the_epoch_end_done_after_a_resume_rewrites_its_checkpoint_as_the_best(config,
                                                                              tmp_path):
    """Stopped at epoch 1's last step, the checkpoint there has no evaluation yet; the resumed
    epoch end must write it again with its evaluation, or the best epoch (the first) is not a
    candidate for "best" and, keeping one checkpoint, is lost."""
    with config.unlocked():
        config.train.num_epochs = 3               # 5 steps per epoch
        config.train.final_eval_views = ()
        config.train.keep_checkpoints = 1
        config.schedule.name = "constant"
    with mock.patch.object(evaluation, "evaluate", scripted_evaluation([0.2, 0.5, 0.6])):
        with signal_before_step(4):               # the last step of epoch 1
            train.train_and_evaluate(config, tmp_path)
        assert kept_steps(tmp_path) == [5]
        train.train_and_evaluate(config, tmp_path)
    assert kept_steps(tmp_path) == [5, 15]        # the best (epoch 1) and the last


@pytest.mark.slow
def test_a_run_killed_while_rewriting_a_checkpoint_gets_the_old_one_back(config, tmp_path):
    """The resumed epoch end writes its step's checkpoint again; were the old one deleted
    first, a kill before the new one is on disk would leave no checkpoint at that step (with
    keep_checkpoints=1, none at all: the run would start over)."""
    from alexnet_jax.training.checkpoints import aside, checkpointing  # noqa: PLC0415

    with config.unlocked():
        config.train.num_epochs = 2               # 5 steps per epoch
        config.train.final_eval_views = ()
        config.train.keep_checkpoints = 1
    with signal_before_step(4):                   # stopped at epoch 1's last step: owed work
        train.train_and_evaluate(config, tmp_path)
    assert kept_steps(tmp_path) == [5]
    with mock.patch.object(checkpointing.ocp.CheckpointManager, "save",
                           side_effect=RuntimeError("killed while saving")):
        with pytest.raises(RuntimeError, match="killed while saving"):
            train.train_and_evaluate(config, tmp_path)
    train.train_and_evaluate(config, tmp_path)    # resumes at step 5, not from scratch
    starts = [r["start_step"] for r in read_records(tmp_path) if r.get("event") == "run_start"]
    assert starts == [0, 5, 5] and kept_steps(tmp_path) == [10]
    assert not (tmp_path / aside.REPLACING_DIR).exists()


def test_a_run_killed_in_its_final_evaluation_does_only_what_is_left(config, tmp_path):
    """Killed during the final multi-view evaluation (out of memory, say): the same command
    evaluates only the views not yet logged, each logged once."""
    with config.unlocked():
        config.train.num_epochs = 1               # 5 steps
        config.train.final_eval_views = (1, 10)
    real, views = evaluation.evaluate, []

    def dies_at_ten_views(*args):
        views.append(args[-1])
        if args[-1] == 10 and len(views) < 3:
            raise MemoryError("killed")
        return real(*args)

    with mock.patch.object(evaluation, "evaluate", dies_at_ten_views):
        with pytest.raises(MemoryError):
            train.train_and_evaluate(config, tmp_path)
        outcome = train.train_and_evaluate(config, tmp_path)
    assert views == [1, 10, 10]  # the epoch's centre crop (also the final one), then 10 twice
    assert [e["crops"] for e in outcome["eval"]] == [1, 10]
    logged = [(r["step"], r["crops"]) for r in read_records(tmp_path) if r.get("split") == "val"]
    assert logged == [(5, 1), (5, 10)]


def test_resuming_with_new_optimizer_values_applies_them_and_says_so(config, tmp_path):
    from alexnet_jax.training.checkpoints.checkpointing import Checkpointer  # noqa: PLC0415

    with config.unlocked():
        config.train.num_epochs = 1
        config.train.final_eval_views = ()
        config.schedule.name = "constant"
    train.train_and_evaluate(config, tmp_path)
    assert read_completion(tmp_path)["step"] == 5
    with config.unlocked():
        config.train.num_epochs = 2
        config.optimizer.learning_rate = 0.001
        config.optimizer.momentum = 0.5
    with mock.patch.object(train.Trainer, "train", side_effect=RuntimeError("killed")):
        with pytest.raises(RuntimeError, match="killed"):  # the extension killed at once
            train.train_and_evaluate(config, tmp_path)
    assert read_completion(tmp_path) is None  # extended: not complete (a study must not
    train.train_and_evaluate(config, tmp_path)  # take it for finished) until it is again
    assert read_completion(tmp_path)["step"] == 10
    records = surviving_records(read_records(tmp_path))
    rates = [(r["step"], r["learning_rate"]) for r in records if r.get("split") == "train"]
    assert {rate for step, rate in rates if step <= 5} == {0.01}
    assert [rate for step, rate in rates if step > 5] == pytest.approx([0.001] * 5)
    # said by the resume that trained (the killed one wrote no checkpoint: the next resume
    # applies the same changes to the same checkpoint, and says so again)
    *_, course = [r for r in records if r.get("event") == "config_changed_on_resume"]
    assert {key: (value["was"], value["now"]) for key, value in course["applied"].items()} == {
        "optimizer.learning_rate": (0.01, 0.001), "optimizer.momentum": (0.9, 0.5),
        "train.num_epochs": (1, 2)}
    assert course["step"] == 5 and course["learning_rate"] == pytest.approx(0.001)
    from alexnet_jax.model import build  # noqa: PLC0415
    from alexnet_jax.training.checkpoints import checkpointing  # noqa: PLC0415
    from alexnet_jax.training.state import build_train_state  # noqa: PLC0415

    _, params, _, opt_state = build_train_state(config, 5, build.build_mesh(config))
    saved = Checkpointer(tmp_path / "checkpoints", 3)
    _, state, progress = saved.restore(10, checkpointing.abstract_like(params),
                                       checkpointing.abstract_like(opt_state))
    saved.close()
    assert float(state.hyperparams["momentum"]) == pytest.approx(0.5)
    assert progress["schedule"]["learning_rate"] == pytest.approx(0.001)
    assert progress["config"]["optimizer"]["momentum"] == 0.5


def test_a_resume_that_would_change_the_experiment_is_refused_and_writes_nothing(
        config, tmp_path):
    """Another batch size would misplace the epochs (step 5 of batch 8 read as batch 16's);
    another seed or augmentation would leave a config.json describing neither half."""
    with config.unlocked():
        config.train.num_steps = 3                 # mid-epoch (5 steps an epoch at batch 8)
        config.train.final_eval_views = ()
    train.train_and_evaluate(config, tmp_path)
    before = file_versions(tmp_path)
    with config.unlocked():
        config.train.num_steps = 10
        config.train.batch_size, config.train.eval_batch_size = 16, 16
        config.seed = 7
        config.data.random_flip = False
        config.train.log_every_steps = 1           # cadence: may change
    with pytest.raises(UserError, match=(
            r"cannot go on with this config: data.random_flip: was True, now False \(refused: "
            r".*\); seed: was 0, now 7 \(refused: .*\); train.batch_size: was 8, now 16 "
            r"\(refused: a step counts batches of this size.*\)\. Resume it with the values "
            r"it was trained with \(the checkpoint's record of its config\), or train the new "
            r"config in a new --workdir")):
        train.train_and_evaluate(config, tmp_path)
    assert file_versions(tmp_path) == before


def test_profile_steps_write_a_trace_for_tensorboard(config, tmp_path):
    with config.unlocked():
        config.train.num_steps = 4
        config.train.final_eval_views = ()
        config.train.profile_steps = (2, 3)
    train.train_and_evaluate(config, tmp_path)
    traces = list((tmp_path / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
    with config.unlocked():
        config.train.profile_steps = (3, 2)
    with pytest.raises(UserError, match=r"train.profile_steps=\(3, 2\) must be"):
        train.train_and_evaluate(config, tmp_path / "other")


@pytest.mark.slow
def test_accumulated_steps_with_a_scaled_rate_train_like_the_whole_batch_and_log_its_rate(
        config, tmp_path):
    """Linear scaling at batch 8 gives 0.01 x 8 / 128 (a warm-up to it would ramp down and is
    refused: tests/test_resume_policy.py); the micro-batches take their rows of the whole
    batch's dropout masks, so the accumulated run trains as the whole batch does, up to
    rounding."""
    with config.unlocked():
        config.train.num_epochs = 2               # 5 steps per epoch
        config.train.final_eval_views = ()
        config.train.accumulate_steps = 2
        config.optimizer.lr_scaling = "linear"    # 0.01 x 8 / 128 = 0.000625
        config.schedule.name = "constant"
    train.train_and_evaluate(config, tmp_path)
    rates = [r["learning_rate"] for r in read_records(tmp_path) if r.get("split") == "train"]
    # the rates the steps' updates used (read from the optimizer state the step returns)
    assert rates == pytest.approx([0.000625] * 10)
    with config.unlocked():
        config.train.accumulate_steps = 1
    train.train_and_evaluate(config, tmp_path / "whole")
    losses = {name: [r["loss"] for r in read_records(path) if r.get("split") == "train"]
              for name, path in (("micro", tmp_path), ("whole", tmp_path / "whole"))}
    np.testing.assert_allclose(losses["micro"], losses["whole"], rtol=1e-4)
    with config.unlocked():
        config.train.accumulate_steps = 3
    with pytest.raises(UserError, match="train.accumulate_steps=3 must be >= 1 and divide"):
        train.train_and_evaluate(config, tmp_path / "other")
