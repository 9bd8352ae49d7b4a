"""The time a run has left, its evaluations included (the progress bar's estimate)."""

import pytest

from alexnet_jax.training.eta import RemainingTime, format_seconds


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
