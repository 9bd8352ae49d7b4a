"""Learning-rate schedules."""

import json

import pytest

from alexnet_jax.training.schedule import Schedule
from configs.default import get_config


def schedule(**overrides):
    config = get_config().schedule
    with config.unlocked():
        for key, value in overrides.items():
            setattr(config, key, value)
    return Schedule(config, 0.01)


def test_plateau_divides_by_ten_after_patience_evaluations_without_improvement():
    s = schedule(patience=2)
    assert [s.record_evaluation(e) for e in (0.9, 0.8, 0.8, 0.85)] == [None, None, None,
                                                                      "reduced"]
    assert s.learning_rate == pytest.approx(0.001) and s.state.reductions == 1
    assert s.record_evaluation(0.7) is None and s.state.best_error == 0.7
    assert s.record_evaluation(0.71) is None and s.record_evaluation(0.72) == "reduced"
    assert s.learning_rate == pytest.approx(0.0001)


def test_plateau_stops_after_the_third_reduction_or_continues():
    s = schedule(patience=1)
    events = [s.record_evaluation(0.5) for _ in range(5)]
    assert events == [None, "reduced", "reduced", "reduced", "finished"]
    assert s.state.finished and s.learning_rate == pytest.approx(1e-5)
    s = schedule(patience=1, after_last="continue")
    events = [s.record_evaluation(0.5) for _ in range(6)]
    assert events == [None, "reduced", "reduced", "reduced", None, None]
    assert not s.state.finished


def test_min_improvement():
    s = schedule(patience=1, min_improvement=0.01)
    assert s.record_evaluation(0.50) is None
    assert s.record_evaluation(0.495) == "reduced"  # better, but not by 0.01
    assert s.state.best_error == 0.495


def test_step_schedule_and_constant():
    s = schedule(name="step", step_epochs=(2, 4))
    rates = []
    for epoch in range(6):
        s.start_epoch(epoch)
        rates.append(s.learning_rate)
        assert s.record_evaluation(0.5) is None  # validation never changes it
    assert rates == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001])
    c = schedule(name="constant", patience=1)
    assert [c.record_evaluation(0.5) for _ in range(3)] == [None, None, None]
    assert c.learning_rate == 0.01


def test_state_round_trip():
    s = schedule(patience=1)
    s.record_evaluation(0.4)
    s.record_evaluation(0.4)
    saved = s.to_dict()
    restored = schedule(patience=1)
    restored.load_dict(saved)
    assert restored.state == s.state
    # a schedule with no evaluation yet (best error inf) goes through strict JSON, as in a
    # checkpoint, and comes back with inf
    as_json = json.dumps(schedule().to_dict(), allow_nan=False)
    fresh = schedule(patience=1)
    fresh.record_evaluation(0.3)
    fresh.load_dict(json.loads(as_json))
    assert fresh.state.best_error == float("inf")


def test_linear_warmup_from_the_unscaled_rate_then_the_schedule():
    from alexnet_jax.training.schedule import Schedule  # noqa: PLC0415
    from configs.default import get_config  # noqa: PLC0415

    config = get_config()
    with config.unlocked():
        config.schedule.name = "step"
        config.schedule.step_epochs = (3,)
        config.schedule.warmup_epochs = 2.0
    schedule = Schedule(config.schedule, 0.08, warmup_start=0.01)  # lr 0.01 x 1024 / 128
    schedule.start_epoch(0)
    rates = [schedule.rate_at(step, 10) for step in (0, 5, 10, 19, 20)]
    assert rates == pytest.approx([0.01, 0.01 + 0.07 / 4, 0.045, 0.01 + 0.07 * 19 / 20, 0.08])
    schedule.start_epoch(3)
    assert schedule.rate_at(30, 10) == pytest.approx(0.008)


def test_lars_and_linear_scaling_build_from_the_config():
    import jax  # noqa: PLC0415

    from alexnet_jax.training import optim  # noqa: PLC0415
    from alexnet_jax.training.state import build_optimizer  # noqa: PLC0415
    from configs.large_batch import get_config  # noqa: PLC0415

    config = get_config()
    assert optim.initial_learning_rate(0.01, 4096, "linear") == pytest.approx(0.32)
    assert optim.initial_learning_rate(0.01, 4096, "none") == 0.01
    tx = build_optimizer(config)
    params = {"fc6": {"kernel": jax.numpy.ones((4, 3)), "bias": jax.numpy.ones((3,))}}
    state = tx.init(params)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(0.32)
    assert float(state.hyperparams["momentum"]) == pytest.approx(0.9)
    grads = jax.tree.map(lambda x: 0.5 * x, params)
    updates, _ = tx.update(grads, optim.set_learning_rate(state, 0.1), params)
    # the kernel's step is its trust ratio times the rate: |w| / |g + wd w| * eta * lr
    trust = 0.001 * 1.0 / (0.5 + 0.0005)
    assert float(updates["fc6"]["kernel"][0, 0]) == pytest.approx(-0.1 * trust * (0.5 + 0.0005),
                                                                 rel=1e-4)
    assert float(updates["fc6"]["bias"][0]) == pytest.approx(-0.1 * 0.5, rel=1e-4)  # no trust
