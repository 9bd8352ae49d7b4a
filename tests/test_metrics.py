"""The metrics log: reading back one history from a run that was killed and resumed."""

from alexnet_jax.metrics_writer import surviving_records


def test_records_past_the_resumed_checkpoint_are_superseded():
    first = [{"event": "run_start", "start_step": 0}] + [
        {"step": s, "split": "train", "loss": 10.0 - s} for s in range(1, 8)]
    first.insert(5, {"step": 4, "split": "val", "top1_error": 0.5, "crops": 1})
    second = [{"event": "run_start", "start_step": 4}] + [
        {"step": s, "split": "train", "loss": 20.0 - s} for s in range(5, 9)]
    kept = surviving_records(first + second)
    train = [(r["step"], r["loss"]) for r in kept if r.get("split") == "train"]
    assert train == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0),
                     (5, 15.0), (6, 14.0), (7, 13.0), (8, 12.0)]
    assert [r["step"] for r in kept if r.get("split") == "val"] == [4]
    assert [r["start_step"] for r in kept if r.get("event")] == [0, 4]
