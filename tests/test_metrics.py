"""The metrics log: reading back one history from a run that was killed and resumed."""

from alexnet_jax.training.records.metrics_writer import surviving_records


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


def test_run_summary_lists_each_surviving_evaluation_and_the_schedule(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from summarize_run import summarize

    records = [{"event": "run_start", "start_step": 0},
               {"step": 1, "epoch": 0.5, "split": "train", "loss": 2.0, "learning_rate": 0.01},
               {"step": 2, "epoch": 1.0, "split": "val", "top1_error": 0.5, "top5_error": 0.2,
                "crops": 1},
               {"step": 3, "epoch": 1.5, "split": "val", "top1_error": 0.1, "top5_error": 0.0,
                "crops": 1},  # logged by a run killed before its next checkpoint...
               {"event": "run_start", "start_step": 2},  # ...which resumed from step 2
               {"step": 2, "event": "schedule_reduced", "learning_rate": 0.001},
               {"step": 4, "epoch": 2.0, "split": "val", "top1_error": 0.4, "top5_error": 0.1,
                "crops": 1}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    table = summarize(tmp_path).splitlines()
    assert table[2] == "| 1 | 2 | 0.01 | 0.5000 | 0.2000 | 1 |"
    assert table[3] == "| | 2 | schedule_reduced: now 0.001 | | | |"
    assert table[4] == "| 2 | 4 | 0.001 | 0.4000 | 0.1000 | 1 |"
    assert table[-1].startswith("best centre-crop top-1 error 0.4000")


def test_an_evaluation_redone_at_the_resumed_step_is_kept_once():
    """Killed during the final 10-view evaluation, after the centre crop's was logged: the
    resumed run (from the final step's checkpoint) logs the centre crop again."""
    run = [{"event": "run_start", "start_step": 0},
           {"step": 5, "split": "train_epoch", "top1_error": 0.6},
           {"step": 5, "split": "val", "crops": 1, "top1_error": 0.5},
           {"step": 5, "event": "schedule_reduced", "learning_rate": 0.001}]
    again = [{"event": "run_start", "start_step": 5},
             {"step": 5, "event": "config_changed_on_resume", "changes": {}},
             {"step": 5, "split": "val", "crops": 1, "top1_error": 0.5},
             {"step": 5, "split": "val", "crops": 10, "top1_error": 0.4},
             {"step": 5, "event": "config_changed_on_resume", "changes": {"x": [1, 2]}}]
    kept = surviving_records(run + again)
    assert [(r["split"], r["crops"]) for r in kept if r.get("split") == "val"] == [
        ("val", 1), ("val", 10)]
    assert [r["split"] for r in kept if r.get("split") == "train_epoch"] == ["train_epoch"]
    assert len([r for r in kept if r.get("event") == "schedule_reduced"]) == 1
    assert len([r for r in kept if r.get("event") == "config_changed_on_resume"]) == 2


def test_a_cut_off_last_line_is_not_read_and_the_writer_drops_it(tmp_path):
    import json

    import pytest

    from alexnet_jax.training.records.metrics_writer import MetricsWriter, read_records

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "split": "train"}) + "\n" + '{"step": 2, "spl')
    assert read_records(tmp_path) == [{"step": 1, "split": "train"}]
    MetricsWriter(tmp_path).write_record({"event": "run_start", "start_step": 1})
    assert [r.get("event") for r in read_records(tmp_path)] == [None, "run_start"]
    path.write_text('{"step": 2, "spl\n' + json.dumps({"step": 3}) + "\n")  # not at the end
    with pytest.raises(json.JSONDecodeError):
        read_records(tmp_path)


def test_a_full_disk_while_logging_is_a_message_not_a_traceback(tmp_path):
    import errno
    from pathlib import Path
    from unittest import mock

    import pytest

    from alexnet_jax.common.errors import UserError
    from alexnet_jax.training.records.metrics_writer import MetricsWriter

    writer = MetricsWriter(tmp_path)
    full = OSError(errno.ENOSPC, "No space left on device")
    with mock.patch.object(Path, "open", side_effect=full):
        with pytest.raises(UserError, match="no space left on the device holding .*metrics"
                           r".jsonl.*run the same command again to resume"):
            writer.write_record({"step": 1})
    with mock.patch.object(Path, "open", side_effect=OSError(errno.EACCES, "denied")):
        with pytest.raises(PermissionError):
            writer.write_record({"step": 1})


def test_speed_summary_leaves_out_the_compiling_window_and_a_superseded_one(tmp_path):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from summarize_run import speed_line

    def window(step, rate, wait):
        return {"step": step, "split": "train", "images_per_sec": rate,
                "data_wait_fraction": wait}

    records = [{"event": "run_start", "start_step": 0}, window(25, 100.0, 0.01),
               window(50, 3000.0, 0.5), window(75, 9999.0, 0.0),  # superseded by the resume
               {"event": "run_start", "start_step": 50},
               window(75, 1000.0, 0.9), window(100, 2000.0, 0.7)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    assert speed_line(tmp_path) == (f"{tmp_path}: 2,000 images/s (median; 1,000-3,000), "
                                    "data wait 0.70 (0.50-0.90), 3 windows after the first")


def test_the_evaluation_log_line_names_its_views_as_the_docs_do(caplog):
    """"centre crop" and "10 views", the words of the README and docs/training.md (the
    records keep their `crops` field)."""
    import logging
    from types import SimpleNamespace

    from alexnet_jax.training.records.run_log import log_evaluation

    records = []
    writer = SimpleNamespace(write_record=records.append, write_scalars=lambda *a: None,
                             flush=lambda: None)
    run = SimpleNamespace(writer=writer)
    caplog.set_level(logging.INFO)
    for views in (1, 10):
        log_evaluation(run, 73, 1.0, {"top1_error": 0.5, "top5_error": 0.1, "loss": 1.0,
                                      "crops": views})
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["step 73 validation (centre crop): top-1 error 0.5000, top-5 error 0.1000",
                     "step 73 validation (10 views): top-1 error 0.5000, top-5 error 0.1000"]
    assert [record["crops"] for record in records] == [1, 10]
