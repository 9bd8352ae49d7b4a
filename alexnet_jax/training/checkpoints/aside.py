"""A checkpoint written again at its own step (an epoch's end work done after a resume: the same
parameters, a newer progress record) must not be lost if the run dies before the new one is on
disk. The old one waits in <workdir>/checkpoint_being_replaced/<step> until then, and a run
killed in between gets it back at its next start."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
from absl import logging

from alexnet_jax.training.processes import multihost

REPLACING_DIR = "checkpoint_being_replaced"


class SetAside:
    """The aside place of one checkpoint directory, and the step waiting there."""

    def __init__(self, directory: Path, owner: bool):
        """`owner`: the training run holding the workdir's lock, which alone may put back a
        checkpoint its killed predecessor was replacing (a reader, such as `--mode=eval` beside
        a training run, must not move what that run is writing)."""
        self.directory = Path(directory)
        self.owner = owner
        self.aside = self.directory.parent / REPLACING_DIR
        self.step: int | None = None  # set aside, until its replacement is saved and waited for
        self.saved = False
        if owner:
            recover(self.directory, self.aside)

    def move(self, step: int) -> None:
        """Move checkpoint `step` aside (process 0; every process waits for it)."""
        def move_it():
            self.aside.mkdir(parents=True, exist_ok=True)
            (self.directory / str(step)).rename(self.aside / str(step))

        multihost.chief_only(move_it, "checkpoint_set_aside")
        self.step, self.saved = step, False

    def note_saved(self, step: int) -> None:
        self.saved = self.saved or step == self.step

    def drop_if_replaced(self) -> None:
        """After waiting for every save started: the old copy of a replaced step is deleted."""
        if self.step is not None and self.saved:
            if jax.process_index() == 0:
                shutil.rmtree(self.aside, ignore_errors=True)
            self.step, self.saved = None, False


def recover(directory: Path, aside: Path) -> None:
    """At a run's start: a checkpoint set aside for a replacement that never reached the disk
    goes back to its place (one whose replacement is there is deleted); process 0, every
    process waiting for it."""
    def put_back():
        if not aside.is_dir():
            return
        for old in aside.iterdir():
            if (directory / old.name).exists():
                shutil.rmtree(old)
            else:
                directory.mkdir(parents=True, exist_ok=True)
                logging.warning("checkpoint %s was being replaced when its run stopped; it is "
                                "put back", old.name)
                old.rename(directory / old.name)
        shutil.rmtree(aside, ignore_errors=True)

    multihost.chief_only(put_back, "checkpoint_recovered")
