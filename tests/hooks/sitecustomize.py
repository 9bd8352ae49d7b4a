"""Imported by every Python process started with this directory on PYTHONPATH (tests only).

With ALEXNET_TEST_SIGTERM_BEFORE_STEP=N, the training process of jax process
ALEXNET_TEST_SIGTERM_PROCESS (default 0) sends itself SIGTERM just before its step N (0-based)
is dispatched, as a preemption would while a step computes: the stop vote of that step is
already cast without it. This reaches the training child of a supervised multi-process run,
which an in-process patch could not.
"""

import os

if os.environ.get("ALEXNET_TEST_SIGTERM_BEFORE_STEP"):
    import signal

    import jax

    from alexnet_jax.training import steps

    _BEFORE = int(os.environ["ALEXNET_TEST_SIGTERM_BEFORE_STEP"])
    _PROCESS = int(os.environ.get("ALEXNET_TEST_SIGTERM_PROCESS", "0"))
    _real = steps.make_train_step

    def _make(*args, **kwargs):
        step_fn = _real(*args, **kwargs)

        def step(*step_args):
            if int(step_args[5]) == _BEFORE and jax.process_index() == _PROCESS:
                os.kill(os.getpid(), signal.SIGTERM)
            return step_fn(*step_args)

        return step

    steps.make_train_step = _make
