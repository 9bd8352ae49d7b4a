"""The steps of one epoch: batches to the devices, the jitted training step, its metrics fetched
one step late (so the host never stalls the devices), the stop vote of every process, and the
epoch's running training error."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from alexnet_jax.data import catalog, device_augment, feeding
from alexnet_jax.model import build
from alexnet_jax.training import steps
from alexnet_jax.training.checkpoints import checkpointing
from alexnet_jax.training.processes.preemption import StopRequest
from alexnet_jax.training.records.epoch_means import EpochMeans
from alexnet_jax.training.records.profiling import StepProfiler
from alexnet_jax.training.records.run_log import RunLog


class StepRunner:
    """Runs training steps; `diverged(step, what, loss)` is called (and must raise) when a
    step's loss is not finite."""

    def __init__(self, run, stop: StopRequest, log: RunLog, steps_per_epoch: int,
                 diverged: Callable[[int, str, float], None]):
        self.run, self.stop, self.log, self.diverged = run, stop, log, diverged
        self.steps_per_epoch = steps_per_epoch
        self.train_step = steps.make_train_step(
            run.graphdef, run.tx, steps.state_shardings(run.params, run.opt_state),
            jax.random.key(run.config.seed), run.config.train.accumulate_steps,
            compiler_options=build.compiler_options(run.config))
        # prepared uint8 crops are finished (mean, lighting) on the devices
        self.finish = device_augment.make_finisher(run.prep.mean_square(),
                                                   run.prep.lighting_basis(), run.mesh)
        # A stop requested on any process is agreed through the training step (every
        # process's vote goes in, their maximum comes out with the metrics), so every process
        # reads the same answer after the same step and all stop and save together.
        self.votes = steps.StopVotes(run.mesh)
        self.stop_agreed = False
        self.pending: tuple[int, Any] | None = None  # (step, metrics on device)
        self.learning_rate = run.schedule.learning_rate  # of the latest step
        self.profiler = StepProfiler(tuple(run.config.train.profile_steps), run.workdir)
        self.epoch_means = EpochMeans()  # the epoch's mean training error (paper Figure 1)

    def stopping(self) -> bool:
        """Whether the run stops now: in one process at its own signal; in several only when
        all agree (the vote of the step before), so that all stop after the same step."""
        if jax.process_count() == 1:
            return bool(self.stop)
        return self.stop_agreed

    def agree_now(self) -> bool:
        """`stopping()`, with a stop that reached any process during the steps whose votes
        are already cast agreed now, by a collective of every process's flag: called by all
        processes at the same step before work that could outlast a preemption's grace
        period (an epoch's end, the final evaluation). One process: its own signal."""
        if jax.process_count() > 1 and not self.stop_agreed:
            self.stop_agreed = not checkpointing.all_processes_ok(not self.stop)
        return self.stopping()

    def run_epoch(self, epoch: int, start_batch: int, step: int, last_step: int,
                  save: Callable[[int], None]) -> int:
        """Train epoch `epoch` from batch `start_batch` until its end, `last_step` or a stop;
        `save(step)` at the checkpoint cadence. Returns the step reached."""
        run, every = self.run, self.run.config.train.checkpoint_every_steps
        self.epoch_means.start(epoch, run.progress.get("epoch_train") if start_batch else None)
        batches = feeding.to_device(catalog.train_batches(
            run.source, run.prep, run.config, epoch, start_batch,
            feeding.Shard.for_mesh(run.mesh)), run.mesh,
            thread=run.config.data.feed_thread)
        while step < last_step:
            self.learning_rate = run.schedule.rate_at(step, self.steps_per_epoch)
            wait_start = time.perf_counter()
            batch = next(batches, None)  # the host waits here if the input pipeline is behind
            self.log.add_data_wait(time.perf_counter() - wait_start)
            if batch is None:
                break
            images = self.finish(batch) if "pixels" in batch else batch["images"]
            self.profiler.before(step + 1)
            run.params, run.opt_state, metrics = self.train_step(
                run.params, run.opt_state, images, batch["labels"],
                jnp.float32(self.learning_rate), jnp.int32(step), self.votes(bool(self.stop)))
            step += 1
            self.profiler.after(step, run.params)
            self.flush(last_step)
            self.pending = (step, metrics)
            self.epoch_means.add(metrics)
            self.log.bar.update(1)
            # (at the end of an epoch the checkpoint waits for the evaluation: "best" needs it)
            if step % every == 0 and step % self.steps_per_epoch:
                self.flush(last_step)  # never checkpoint a state whose loss is not yet checked
                save(step)
            if self.stopping() or step % self.steps_per_epoch == 0:
                break
        return step

    def flush(self, last_step: int) -> None:
        """Fetch the pending step's metrics (by now the devices are on the next step)."""
        if self.pending is None:
            return
        (step, metrics), self.pending = self.pending, None
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        self.log.step_fetched(step)
        self.stop_agreed = self.stop_agreed or metrics.pop("stop") > 0
        if not math.isfinite(metrics["loss"]):
            self.diverged(step, f"the training loss became {metrics['loss']} at step {step}",
                          metrics["loss"])
        if step % self.run.config.train.log_every_steps == 0 or step == last_step:
            self.log.training(step, metrics)
