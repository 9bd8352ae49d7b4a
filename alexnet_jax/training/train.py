"""Training a run to its end, resuming it, and evaluating a workdir: the entry points of
--mode=train and --mode=eval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging

from alexnet_jax.common.run_files import COMPLETION_FILE
from alexnet_jax.training import resume_policy
from alexnet_jax.training.evaluation import evaluate_workdir  # noqa: F401 - --mode=eval
from alexnet_jax.training.processes.preemption import StopRequest
from alexnet_jax.training.run import setup_run, write_run_facts
from alexnet_jax.training.trainer import Trainer, run_ends


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train (resuming if the workdir has checkpoints), evaluate, checkpoint; final metrics.

    SIGTERM or SIGINT ends the run cleanly after the current step, with a checkpoint.
    """
    run = setup_run(config, workdir)
    try:
        with jax.set_mesh(run.mesh), StopRequest() as stop:
            trainer = Trainer(run, stop)
            complete = trainer.completion()
            if complete is not None:  # a finished run: say so (and what it does not apply)
                line = resume_policy.finished_line(run.resume, run.workdir, run.step,
                                                   run_ends(run, trainer.total_steps))
                changed = run.resume is not None and bool(run.resume.applied)
                logging.log(logging.WARNING if changed else logging.INFO, "%s", line)
                return complete
            if run.lock:
                run.lock.record_holder()
            if run.is_chief:  # an extended run is not complete until it finishes again
                (run.workdir / COMPLETION_FILE).unlink(missing_ok=True)
            write_run_facts(run)
            if run.resume is not None and run.resume.applied:
                # what was applied, and how (resume_policy); silent changes move no result
                logging.warning("%s", resume_policy.applied_line(run.resume,
                                                                 run.schedule.learning_rate))
                run.writer.write_record({"step": run.step, **run.resume.event(),
                                         "learning_rate": run.schedule.learning_rate})
            return trainer.train()
    finally:
        try:
            run.checkpointer.close()
        finally:
            run.writer.close()
            if hasattr(run.source, "close"):  # a prepared folder's reading workers
                run.source.close()
            if run.lock:
                run.lock.release()
