"""The time a run has left, its evaluations included (the progress bar's estimate), timed
without the compilation of the first step (a fake clock: no timing in these tests)."""

from types import SimpleNamespace

import pytest

from alexnet_jax.training.records import run_log
from alexnet_jax.training.records.remaining_time import RemainingTime, format_seconds


def test_the_time_left_counts_the_steps_each_epochs_evaluation_and_the_final_views():
    left = RemainingTime(total_steps=100, steps_per_epoch=10, batch_size=8, eval_images=50,
                         epoch_views=1, final_views=(1, 10))
    assert left.seconds_left(30) is None and left.text(30) == "?"
    left.steps_measured(steps=10, seconds=20.0)                  # 2 s a step
    # before an evaluation is timed, a view costs a third of a training image: 2 / 8 / 3
    assert left.seconds_left(30) == pytest.approx(70 * 2 + (7 + 10) * 50 * 2 / 8 / 3)
    left.evaluation_measured(views=1, seconds=0.5)               # 0.01 s a view
    # 70 steps, 7 epoch ends of 1 view, the final 10 views (its centre crop is the last epoch's)
    assert left.seconds_left(30) == pytest.approx(70 * 2 + (7 + 10) * 50 * 0.01)
    assert left.text(30) == "2:28"
    assert format_seconds(3 * 3600 + 62) == "3:01:02"
    stopping_mid_epoch = RemainingTime(95, 10, 8, 50, 1, (1,), 2.0, 0.01)
    assert stopping_mid_epoch.seconds_left(90) == pytest.approx(5 * 2 + 1 * 50 * 0.01)


class FakeClock:
    """time.perf_counter as the test sets it."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def logged_run(monkeypatch, step: int, steps_per_epoch: int, remaining: RemainingTime,
               records: list) -> tuple[run_log.RunLog, FakeClock]:
    """A RunLog of a run at `step` (batch 8) whose records go to `records`, on a fake clock."""
    clock = FakeClock()
    monkeypatch.setattr(run_log, "time", SimpleNamespace(perf_counter=clock))
    writer = SimpleNamespace(write_record=records.append, write_scalars=lambda *a, **k: None)
    run = SimpleNamespace(step=step, writer=writer,
                          config=SimpleNamespace(train=SimpleNamespace(batch_size=8)))
    return run_log.RunLog(run, steps_per_epoch, remaining), clock


def test_the_first_estimate_leaves_out_the_compilation_of_the_first_step(monkeypatch):
    """A resumed run at step 100: its first step takes 60 s (compiling), the next ones 2 s
    each. The first line's estimate is timed from the first step's end, so it says 2 s a step
    where the window's own time says (60 + 9 x 2) / 10; images/s keep the window's time."""
    records = []
    left = RemainingTime(total_steps=1000, steps_per_epoch=500, batch_size=8, eval_images=50,
                         epoch_views=1, final_views=(1,))
    log, clock = logged_run(monkeypatch, 100, 500, left, records)
    metrics = {"loss": 2.3, "learning_rate": 0.01}
    clock.now = 60.0
    log.step_fetched(101)                         # the compiled first step
    for step in range(102, 111):
        clock.now += 2.0
        log.step_fetched(step)
    log.training(110, metrics)
    assert left.seconds_per_step == pytest.approx(2.0)
    assert records[-1]["images_per_sec"] == pytest.approx(10 * 8 / 78.0)
    for step in range(111, 121):                  # the next window: all of its steps
        clock.now += 3.0
        log.step_fetched(step)
    log.training(120, metrics)
    assert left.seconds_per_step == pytest.approx(3.0)


def test_no_estimate_before_a_step_after_the_first_has_been_timed(monkeypatch):
    """Logging every step: the first line's window is the compiled step alone, which says
    nothing of the steps to come."""
    left = RemainingTime(100, 10, 8, 50, 1, (1,))
    log, clock = logged_run(monkeypatch, 0, 10, left, [])
    clock.now = 45.0
    log.step_fetched(1)
    log.training(1, {"loss": 2.3, "learning_rate": 0.01})
    assert left.seconds_per_step is None and left.text(1) == "?"
    clock.now += 1.5
    log.step_fetched(2)
    log.training(2, {"loss": 2.3, "learning_rate": 0.01})
    assert left.seconds_per_step == pytest.approx(1.5)
