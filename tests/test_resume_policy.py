"""The resume policy (alexnet_jax/training/resume_policy.py): one table for every config key, and
each decision as a user meets it: applied and read back from the next checkpoint, or refused
before any data is prepared or any file written, naming the key with its old and new value."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY_RESIZE, file_versions

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.run_files import read_completion, read_records, surviving_records
from alexnet_jax.training import resume_policy, train

REPO = Path(__file__).resolve().parents[1]


def test_every_key_of_the_default_config_has_a_resume_decision():
    """A key added to configs/default.py without a decision fails here (at run time it would
    be refused as undecided); a decision for a key that no longer exists does too."""
    from configs import default  # noqa: PLC0415

    keys = resume_policy.config_values(json.loads(default.get_config().to_json_best_effort()))
    assert set(keys) == set(resume_policy.POLICY)


def test_the_users_table_in_docs_reliability_is_the_policys():
    check = subprocess.run([sys.executable, "experiments/resume_table.py", "--check",
                            "docs/reliability.md"], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_epoch_order_keys_change_at_an_epochs_end_and_split_needs_the_same_processes():
    before = {"data": {"shuffle_buffer": 100, "process_sharding": "split"}, "seed": 0}
    after = {"data": {"shuffle_buffer": 200, "process_sharding": "split"}, "seed": 0}
    at_end = resume_policy.decide(before, after, mid_epoch=False, shard_counts=(2, 1))
    assert at_end.applied == {"data.shuffle_buffer": (100, 200)} and not at_end.refused
    inside = resume_policy.decide(before, after, mid_epoch=True, shard_counts=(2, 1))
    assert [line.split(" (")[0] for line in inside.refused] == [
        "data.shuffle_buffer: was 100, now 200", "the parts the data is read in: was 2, now 1"]
    same = resume_policy.decide(before, before, mid_epoch=True, shard_counts=(2, 2))
    assert not same.refused and not same.applied
    interleaved = {"data": {"shuffle_buffer": 100, "process_sharding": "interleaved"}}
    assert not resume_policy.decide(interleaved, interleaved, True, (2, 1)).refused
    # another preparation of the same images has other files, read in another order
    squares = ({"data": {"prepared": "none"}}, {"data": {"prepared": "256"}})
    assert resume_policy.decide(*squares, mid_epoch=False).applied == {
        "data.prepared": ("none", "256")}
    [line] = resume_policy.decide(*squares, mid_epoch=True).refused
    assert line.startswith("data.prepared: was 'none', now '256' (refused mid-epoch")
    assert line.endswith("train to the epoch's end with the old value, then change it)")
    undecided = resume_policy.decide({"new_key": 1}, {"new_key": 2}, False)
    assert "no resume decision is recorded" in undecided.refused[0]


def restored(workdir, config, step):
    """(optimizer state, progress) of checkpoint `step`, restored as a run would."""
    from alexnet_jax.model import build  # noqa: PLC0415
    from alexnet_jax.training.checkpoints import checkpointing  # noqa: PLC0415
    from alexnet_jax.training.state import build_train_state  # noqa: PLC0415

    _, params, _, opt_state = build_train_state(config, 5, build.build_mesh(config))
    saved = checkpointing.Checkpointer(workdir / "checkpoints", 3)
    try:
        _, state, progress = saved.restore(step, checkpointing.abstract_like(params),
                                           checkpointing.abstract_like(opt_state))
    finally:
        saved.close()
    return state, progress


def applied_events(workdir):
    return [r for r in surviving_records(read_records(workdir))
            if r.get("event") == "config_changed_on_resume"]


@pytest.mark.slow
def test_a_lars_run_resumed_with_new_trust_scaling_momentum_and_decay_runs_with_them(
        config, tmp_path):
    """Each new value is in force after the resume (read back from the next checkpoint's
    optimizer state and schedule, and from the rate the steps logged), the record says so
    once, and a later resume with the same values changes nothing (the checkpoint records
    the values in force, not the config's)."""
    with config.unlocked():
        config.optimizer.name = "lars"
        config.train.num_epochs = 1               # 5 steps of batch 8
        config.train.final_eval_views = ()
        config.schedule.name = "constant"
    train.train_and_evaluate(config, tmp_path)
    with config.unlocked():
        config.train.num_epochs = 2
        config.optimizer.trust_coefficient = 0.5
        config.optimizer.lr_scaling = "linear"     # 0.01 x 8 / 128
        config.optimizer.momentum = 0.8
        config.optimizer.weight_decay = 0.001
    train.train_and_evaluate(config, tmp_path)
    state, progress = restored(tmp_path, config, 10)
    hyper = {key: float(value) for key, value in state.hyperparams.items()}
    assert hyper == pytest.approx({"learning_rate": 0.000625, "trust_coefficient": 0.5,
                                   "momentum": 0.8, "weight_decay": 0.001})
    assert progress["schedule"]["learning_rate"] == pytest.approx(0.000625)
    optimizer = progress["config"]["optimizer"]
    assert (optimizer["trust_coefficient"], optimizer["lr_scaling"], optimizer["momentum"],
            optimizer["weight_decay"]) == (0.5, "linear", 0.8, 0.001)
    records = surviving_records(read_records(tmp_path))
    rates = [(r["step"], r["learning_rate"]) for r in records if r.get("split") == "train"]
    assert [rate for step, rate in rates if step > 5] == pytest.approx([0.000625] * 5)
    [event] = applied_events(tmp_path)
    assert sorted(event["applied"]) == [
        "optimizer.lr_scaling", "optimizer.momentum", "optimizer.trust_coefficient",
        "optimizer.weight_decay", "train.num_epochs"]
    assert event["applied"]["optimizer.trust_coefficient"]["was"] == 0.001
    assert event["learning_rate"] == pytest.approx(0.000625)
    with config.unlocked():
        config.train.num_epochs = 3
    train.train_and_evaluate(config, tmp_path)
    assert list(applied_events(tmp_path)[-1]["applied"]) == ["train.num_epochs"]
    state, _ = restored(tmp_path, config, 15)
    assert float(state.hyperparams["trust_coefficient"]) == pytest.approx(0.5)


def train_steps(config, workdir, steps, **changes):
    with config.unlocked():
        config.train.num_steps = steps
        config.train.final_eval_views = ()
        for key, value in changes.items():
            section, name = key.split(".")
            setattr(config[section], name, value)
    train.train_and_evaluate(config, workdir)


def test_a_new_weight_decay_and_lr_scaling_are_in_force_after_a_resume(config, tmp_path):
    """The fast tier's check of two applied optimizer values (the slow LARS test above checks
    them all): a new optimizer.weight_decay is written into the optimizer state (read back
    from the next checkpoint, and recorded there as in force), and a new optimizer.lr_scaling
    rescales the schedule's rate (linear: 0.01 x 8 / 128), the rate the resumed step used."""
    train_steps(config, tmp_path, 1)
    train_steps(config, tmp_path, 2, **{"optimizer.weight_decay": 0.001,
                                        "optimizer.lr_scaling": "linear"})
    state, progress = restored(tmp_path, config, 2)
    assert float(state.hyperparams["weight_decay"]) == pytest.approx(0.001)
    assert progress["config"]["optimizer"]["weight_decay"] == 0.001
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.000625)
    assert progress["schedule"]["learning_rate"] == pytest.approx(0.000625)
    rates = {r["step"]: r["learning_rate"] for r in surviving_records(read_records(tmp_path))
             if r.get("split") == "train"}
    assert [rates[1], rates[2]] == pytest.approx([0.01, 0.000625])
    [event] = applied_events(tmp_path)
    assert sorted(event["applied"]) == ["optimizer.lr_scaling", "optimizer.weight_decay",
                                        "train.num_steps"]


def test_another_optimizer_is_refused_naming_the_key_and_writes_nothing(config, tmp_path):
    train_steps(config, tmp_path, 2)
    before = file_versions(tmp_path)
    with config.unlocked():
        config.optimizer.name = "lars"
        config.train.num_steps = 4
    with pytest.raises(UserError, match=r"optimizer.name: was 'momentum', now 'lars' \(refused"
                       r": the optimizer state has another structure\)"):
        train.train_and_evaluate(config, tmp_path)
    assert file_versions(tmp_path) == before


def test_more_accumulation_on_resume_trains_the_same_global_batch(config, tmp_path):
    """The policy's claim: k micro-batches give the update of the whole batch, equal up to
    rounding, with dropout on (the default; each micro-batch takes its rows of the batch's
    masks): resumed with k = 2, steps 3 and 4 have the losses of a run that kept k = 1 (step
    3's: the same masks on the same parameters; step 4's: the same update too)."""
    with config.unlocked():  # losses that follow the parameters and masks (helpers.VISIBLE_INIT)
        config.model.init_std, config.model.positive_bias = 0.1, 0.1
    train_steps(config, tmp_path / "whole", 4)
    train_steps(config, tmp_path / "run", 2)
    train_steps(config, tmp_path / "run", 4, **{"train.accumulate_steps": 2})
    [event] = applied_events(tmp_path / "run")
    assert event["applied"]["train.accumulate_steps"]["now"] == 2

    def losses(workdir):
        return {r["step"]: r["loss"] for r in surviving_records(read_records(workdir))
                if r.get("split") == "train"}

    whole, resumed = losses(tmp_path / "whole"), losses(tmp_path / "run")
    assert sorted(resumed) == [1, 2, 3, 4]
    assert [resumed[3], resumed[4]] == pytest.approx([whole[3], whole[4]], rel=1e-5)


def rewrite_progress(workdir, step, **fields):
    """Change fields of a checkpoint's progress record on disk (as another run wrote them)."""
    [path] = [p for p in (workdir / "checkpoints" / str(step) / "progress").rglob("*")
              if p.name == "metadata"]
    progress = json.loads(path.read_text())
    path.write_text(json.dumps({**progress, **fields}))


def test_split_sharding_resumes_mid_epoch_only_on_the_layout_that_saved_it(
        config, tmp_path):
    """Each part of the data (the processes holding distinct rows of the mesh's data axis) is
    read from its own share of the files: a checkpoint inside an epoch, written by two parts,
    resumed as one would repeat and skip images. At the epoch's end it may."""
    train_steps(config, tmp_path, 3, **{"data.process_sharding": "split"})  # 5 steps an epoch
    assert restored(tmp_path, config, 3)[1]["data_shards"] == 1
    rewrite_progress(tmp_path, 3, data_shards=2)          # as two processes' run wrote it
    before = file_versions(tmp_path)
    with pytest.raises(UserError, match=r"the parts the data is read in: was 2, now 1 \(refused "
                       r"mid-epoch with data.process_sharding=split"):
        train_steps(config, tmp_path, 6)
    assert file_versions(tmp_path) == before
    rewrite_progress(tmp_path, 3, data_shards=1)
    train_steps(config, tmp_path, 5)                      # the same layout: resumes
    rewrite_progress(tmp_path, 5, data_shards=2)
    train_steps(config, tmp_path, 6)                      # an epoch's end: any layout


def test_another_models_config_is_refused_before_its_data_is_prepared(config, tmp_path):
    """A 2x larger crop on a trained workdir: refused naming the key with both values, for
    training and evaluation alike, and no new preparation of the data is written. Training
    names every refused change at once (here the seed too, and the data keys the crop came
    with), so that one correction is enough; the crop, refused by both checks, once."""
    from alexnet_jax.training.evaluation import evaluate_workdir  # noqa: PLC0415

    workdir = tmp_path / "run"
    train_steps(config, workdir, 2, **{"data.prepared": str(TINY_RESIZE)})
    data_dir = Path(config.data.data_dir)
    prepared = file_versions(data_dir)
    with config.unlocked():
        config.data.resize_size, config.data.prepared = 2 * TINY_RESIZE, str(2 * TINY_RESIZE)
        config.data.crop_size = 2 * config.data.crop_size
        config.train.num_steps = 4
        config.seed = 1
    model = (r"written by a different model or dataset: data.crop_size: checkpoint 67, this "
             r"config 134")
    with pytest.raises(UserError, match=model + r"; and this workdir's run cannot go on with "
                       r"this config: data.prepared: was '76', now '152' \(refused mid-epoch.*; "
                       r"data.resize_size: was 76, now 152 \(refused.*; seed: was 0, now 1 "
                       r"\(refused: data order, augmentation and dropout follow it\)\. Resume"
                       ) as refusal:
        train.train_and_evaluate(config, workdir)
    assert str(refusal.value).count("data.crop_size") == 1
    with pytest.raises(UserError, match=model + r"\. Use the config"):
        evaluate_workdir(config, workdir)
    assert file_versions(data_dir) == prepared            # nothing prepared for the refusal


def test_warm_up_without_a_larger_scaled_rate_and_lars_with_decoupled_decay_are_refused(
        config, tmp_path):
    """A warm-up ramps up from the unscaled rate to the scaled one: without scaling there is
    nothing to ramp, and linear scaling below the paper's batch of 128 (here 8: 0.01 x 8 / 128)
    scales the rate down, so a warm-up would start 16x above its target and ramp down."""
    with config.unlocked():
        config.schedule.warmup_epochs = 1.0
    with pytest.raises(UserError, match=r"schedule.warmup_epochs=1 ramps the rate up .* "
                       r"\(optimizer.lr_scaling=none\): there is nothing to ramp"):
        train.train_and_evaluate(config, tmp_path / "a")
    with config.unlocked():
        config.optimizer.lr_scaling = "linear"
    with pytest.raises(UserError, match=r"the scaled rate is not above it \(train.batch_size=8 "
                       r"x 0.01 / 128 = 0.000625: a warm-up would ramp the rate down\)"):
        train.train_and_evaluate(config, tmp_path / "down")
    with config.unlocked():
        config.schedule.warmup_epochs, config.optimizer.lr_scaling = 0.0, "none"
        config.optimizer.name, config.optimizer.decay_mode = "lars", "decoupled"
    with pytest.raises(UserError, match="optimizer.decay_mode=decoupled is momentum SGD's"):
        train.train_and_evaluate(config, tmp_path / "b")
    assert not [path for path in tmp_path.iterdir() if path.name in ("a", "down", "b")]


def test_another_tree_at_data_path_is_refused_where_a_moved_one_is_not(config, tmp_path):
    """data.path is where the data is (silent: a run may move), but the data must be the same:
    another tree with the same classes and more images is refused, naming what differs."""
    from helpers import make_image_tree  # noqa: PLC0415

    train_steps(config, tmp_path / "run", 2)
    moved = tmp_path / "moved"
    shutil.copytree(config.data.path, moved)
    train_steps(config, tmp_path / "run", 3, **{"data.path": str(moved)})   # the same data
    other = make_image_tree(tmp_path / "other", train_per_class=12)
    with pytest.raises(UserError, match=r"trained on other data than data.path names now: "
                       r"train_examples: checkpoint 43, now 60"):
        train_steps(config, tmp_path / "run", 4, **{"data.path": str(other)})


def test_a_finished_run_says_in_one_line_what_it_does_not_apply_and_goes_on_when_it_may(
        config, tmp_path, caplog):
    """Applied means applied: a run ended by train.stop_at_train_error, run again with a larger
    train.num_epochs and new final views, trains and evaluates nothing, changes no file and
    says so in one line (why, and what would let it go on), not that the changes apply;
    resumed with a lower target (here: none) it trains on to the new end and evaluates."""
    with config.unlocked():
        config.train.num_epochs = 2               # 5 steps an epoch
        config.train.final_eval_views = ()
        config.train.stop_at_train_error = 0.99   # reached by the first epoch (5 classes)
    train.train_and_evaluate(config, tmp_path)
    complete, before = read_completion(tmp_path), file_versions(tmp_path)
    assert complete["step"] == 5
    with config.unlocked():
        config.train.num_epochs, config.train.final_eval_views = 3, (1,)
    caplog.clear()
    assert train.train_and_evaluate(config, tmp_path) == complete
    assert file_versions(tmp_path) == before
    said = [r.getMessage() for r in caplog.records]
    assert not [line for line in said if "applied from now on" in line]
    [line] = [line for line in said if "already complete" in line]
    assert line.endswith(
        "is already complete (step 5): it reached its training-error target, so nothing runs "
        "and the config changes are not applied (train.final_eval_views: [] -> [1]; "
        "train.num_epochs: 2 -> 3); to train on it needs a lower train.stop_at_train_error "
        "(0: none); a finished run is not evaluated again: --mode=eval evaluates its last "
        "checkpoint with train.final_eval_views (into eval_results.jsonl)")
    with config.unlocked():
        config.train.stop_at_train_error = 0.0
    outcome = train.train_and_evaluate(config, tmp_path)
    assert outcome["step"] == 15 and len(outcome["eval"]) == 1


def test_a_run_its_plateau_schedule_ended_is_not_extended_by_more_epochs(config, tmp_path,
                                                                          caplog):
    """The plateau schedule ends the run at its second evaluation (no improvement by 2, no
    reduction left): a larger train.num_epochs changes nothing, and the one line says what
    would let the run train on."""
    with config.unlocked():
        config.train.num_epochs = 3               # 5 steps an epoch
        config.train.final_eval_views = ()
        config.schedule.patience, config.schedule.min_improvement = 1, 2.0
        config.schedule.max_reductions = 0
    train.train_and_evaluate(config, tmp_path)
    complete, before = read_completion(tmp_path), file_versions(tmp_path)
    assert complete["step"] == 10 and complete["stopped_by_schedule"]
    with config.unlocked():
        config.train.num_epochs = 6
    caplog.clear()
    assert train.train_and_evaluate(config, tmp_path) == complete
    assert file_versions(tmp_path) == before
    [line] = [r.getMessage() for r in caplog.records if "already complete" in r.getMessage()]
    assert line.endswith(
        "(step 10): its plateau schedule ended it after its last reduction, so nothing runs and "
        "the config changes are not applied (train.num_epochs: 3 -> 6); to train on it needs a "
        "larger schedule.max_reductions or schedule.after_last=continue")


def test_the_config_in_force_is_read_from_the_optimizer_state(config):
    """What a checkpoint records as its optimizer values comes from the state the steps use,
    not from the config (a value the config names but the state does not hold is not in
    force)."""
    from alexnet_jax.model import build  # noqa: PLC0415
    from alexnet_jax.training.state import build_train_state  # noqa: PLC0415

    with config.unlocked():
        config.optimizer.name = "lars"
    _, _, _, opt_state = build_train_state(config, 5, build.build_mesh(config))
    with config.unlocked():
        config.optimizer.trust_coefficient, config.optimizer.momentum = 0.5, 0.7
    recorded = resume_policy.config_in_force(config, opt_state)["optimizer"]
    assert recorded["trust_coefficient"] == pytest.approx(0.001)
    assert recorded["momentum"] == pytest.approx(0.9)
    assert recorded["weight_decay"] == 0.0005     # the state's float32, given as the config's
