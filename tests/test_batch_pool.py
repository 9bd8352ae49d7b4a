"""The reading workers' pool of shared-memory batches (alexnet_jax/data/batch_pool.py): batches
in order and a function of the step, a slot never overwritten while an array (a JAX array on a
CPU included) still views it, slots reused once let go, a worker's error raised in the trainer,
a dead worker named, and nothing left in shared memory, nor a leak reported, after a normal end,
a Ctrl-C or a SIGKILL (the last: removed by the next pool)."""

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from helpers import signal_masks
from pool_makers import Counting
from test_cli import REPO

from alexnet_jax.common.errors import UserError
from alexnet_jax.data import batch_pool


def my_files(pid=None):
    prefix = f"{batch_pool.FILE_PREFIX}-{pid or os.getpid()}-"
    return sorted(p.name for p in batch_pool.shared_memory_dir().glob(prefix + "*"))


def expected(step, rows=4):
    return step + np.arange(rows)


def test_batches_come_in_order_and_held_ones_are_never_overwritten():
    pool = batch_pool.WorkerBatches(Counting(), workers=2, first_step=5, ahead=2)
    try:
        held = pool.next()                                   # batch 5, kept throughout
        on_device = jax.device_put(pool.next()["pixels"])    # batch 6, viewed by JAX on a CPU
        for step in range(7, 40):
            batch = pool.next()
            np.testing.assert_array_equal(batch["step"], expected(step))
            assert (batch["pixels"] == step % 251).all()
            del batch
        np.testing.assert_array_equal(held["step"], expected(5))
        assert (held["pixels"] == 5).all() and (np.asarray(on_device) == 6).all()
        # batches let go are reused: the pool holds what is ahead, the two kept, and a
        # slot or two still on their way back
        assert len(pool._slots) <= 2 * (2 + 1) + 2 + 2
        assert my_files() == []   # every slot's name removed once its worker mapped it
    finally:
        pool.close()


def test_a_consumer_that_keeps_every_batch_gets_new_slots_and_never_waits():
    pool = batch_pool.WorkerBatches(Counting(), workers=1, first_step=0, ahead=2)
    try:
        kept = [pool.next() for _ in range(12)]
        for step, batch in enumerate(kept):
            np.testing.assert_array_equal(batch["step"], expected(step))
        assert len(pool._slots) >= 12
    finally:
        pool.close()
    np.testing.assert_array_equal(kept[3]["step"], expected(3))  # readable after the close


def test_a_slot_goes_back_only_when_its_last_array_is_gone():
    pool = batch_pool.WorkerBatches(Counting(), workers=1, first_step=0, ahead=1)
    try:
        batch = pool.next()
        view = batch["pixels"][1:3]          # a view of a field keeps the batch's slot
        del batch
        gc.collect()
        assert pool._slots._released.empty()
        del view
        assert pool._slots._released.qsize() == 1
    finally:
        pool.close()


def test_letting_a_batch_go_runs_no_python_code_a_ctrl_c_could_be_lost_in():
    """A KeyboardInterrupt raised inside a weakref callback is only printed, and the reader
    loops on: the slot's return must run no Python frame (a profiler sees none)."""
    pool = batch_pool.WorkerBatches(Counting(), workers=1, first_step=0, ahead=1)
    try:
        batch = pool.next()
        python_calls = []
        sys.setprofile(lambda frame, event, _: event == "call" and python_calls.append(
            frame.f_code.co_qualname))
        try:
            del batch
        finally:
            sys.setprofile(None)
        assert pool._slots._released.qsize() == 1   # the slot did come back
        assert python_calls == []
        assert pool.next()["step"][0] == 1           # and is handed out again
    finally:
        pool.close()


def test_a_workers_error_is_raised_in_the_trainer_with_its_message():
    pool = batch_pool.WorkerBatches(Counting(fail_at=3), workers=2, first_step=0)
    try:
        for step in range(3):
            np.testing.assert_array_equal(pool.next()["step"], expected(step))
        with pytest.raises(ValueError, match="no batch 3 here"):
            pool.next()
    finally:
        pool.close()


@pytest.mark.parametrize("seen_by", ["the next order", "whichever comes first"])
def test_a_killed_worker_is_named(seen_by):
    pool = batch_pool.WorkerBatches(Counting(), workers=2, first_step=0)
    try:
        pool.next()
        os.kill(pool.pids[1], signal.SIGKILL)
        if seen_by == "the next order":
            # Dead before the trainer writes its next order: the send meets a broken pipe.
            pool._processes.processes[1].join(timeout=10)
        with pytest.raises(RuntimeError, match=rf"reading worker 1 \(pid {pool.pids[1]}\) "
                                               r"died \(signal SIGKILL"):
            for _ in range(6):
                pool.next()
    finally:
        pool.close()


def test_stale_files_of_a_dead_process_are_removed_and_others_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"{batch_pool.FILE_PREFIX}-{dead}-1-0"
    mine = tmp_path / f"{batch_pool.FILE_PREFIX}-{os.getpid()}-1-0"
    other = tmp_path / "unrelated-1"
    for path in (stale, mine, other):
        path.write_bytes(b"x")
    assert batch_pool.remove_stale_files(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and other.exists()


READER = textwrap.dedent("""
    import faulthandler, signal, sys, time
    faulthandler.register(signal.SIGUSR1)   # the test asks where it hangs, if it does
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    from pool_makers import Counting
    from alexnet_jax.data import batch_pool
    pool = batch_pool.WorkerBatches(Counting(), workers=2, first_step=0)
    for _ in range(5):
        pool.next()
    print("reading", flush=True)
    if {close}:
        pool.close()
        print("closed", flush=True)
    else:
        while True:
            pool.next()
            time.sleep(0.01)
""")


@pytest.fixture
def start_reader():
    """Start a process that reads from a pool of 2 workers (and closes it, if asked); it is
    killed at the test's end, whatever the test found."""
    readers = []

    def start(close: bool):
        script = READER.format(repo=str(REPO), tests=str(REPO / "tests"), close=close)
        reader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True,
                                  preexec_fn=as_a_shell_starts_it)
        readers.append(reader)
        assert reader.stdout.readline().strip() == "reading"
        return reader

    yield start
    for reader in readers:
        if reader.poll() is None:
            os.killpg(reader.pid, signal.SIGKILL)
            reader.wait()


def as_a_shell_starts_it():
    """In the reader, before it runs: SIGINT at its default and not blocked, as a shell starts
    a program. A Popen child inherits an ignored or blocked SIGINT from the test process, and
    the suite's process has run hundreds of tests by then: twice, under load, a reader sat on
    in its loop, stack and all, after the Ctrl-C, with no KeyboardInterrupt at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def workers_of(pid):
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                              text=True).stdout.split()
    return [int(c) for c in children
            if b"spawn_main" in open(f"/proc/{c}/cmdline", "rb").read()]


def gone(pids, within=20.0):
    deadline = time.time() + within
    while time.time() < deadline:
        if not any(os.path.exists(f"/proc/{p}") and
                   open(f"/proc/{p}/stat").read().split()[2] != "Z" for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("ending", ["normal", "ctrl_c"])
def test_nothing_is_left_or_reported_after_a_normal_end_or_a_ctrl_c(ending, start_reader):
    reader = start_reader(close=ending == "normal")
    workers = workers_of(reader.pid)
    if ending == "ctrl_c":   # the terminal's Ctrl-C: SIGINT to the whole process group
        os.killpg(reader.pid, signal.SIGINT)
    try:
        _, errors = reader.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        as_hex = lambda masks: {name: hex(mask) for name, mask in masks.items()}  # noqa: E731
        state = as_hex(signal_masks(reader.pid)) or "(gone)"
        reader.send_signal(signal.SIGUSR1)   # its threads' stacks, to stderr
        time.sleep(2)
        reader.kill()
        _, errors = reader.communicate()
        pytest.fail(f"the reader did not end within 60 s ({ending}); its signals: {state}; "
                    f"the test process's: {as_hex(signal_masks())}; {errors[-4000:]}")
    # at most the trainer's own KeyboardInterrupt: nothing from a worker, no leak reported
    assert errors.count("Traceback") == (ending == "ctrl_c"), errors
    assert "leaked" not in errors and "resource_tracker" not in errors, errors
    assert gone(workers)
    assert my_files(reader.pid) == []


def test_after_a_sigkill_the_workers_end_and_the_next_pool_removes_what_was_left(
        start_reader):
    reader = start_reader(close=False)
    workers = workers_of(reader.pid)
    assert len(workers) == 2
    # a slot file that a killed trainer could leave: made, its worker not yet told
    left = batch_pool.shared_memory_dir() / f"{batch_pool.FILE_PREFIX}-{reader.pid}-0-99"
    left.write_bytes(b"\0" * 64)
    reader.send_signal(signal.SIGKILL)
    reader.wait()
    assert gone(workers)
    pool = batch_pool.WorkerBatches(Counting(), workers=1, first_step=0)
    pool.close()
    assert not left.exists()


def test_a_full_shared_memory_is_refused_in_words_and_leaves_nothing(monkeypatch):
    def full(descriptor, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch_pool.os, "posix_fallocate", full)
    with pytest.raises(UserError, match=r"no room in .* for another batch of the reading "
                                        r"workers .*--config.data.read_workers=0"):
        batch_pool.WorkerBatches(Counting(), workers=1, first_step=0)
    assert my_files() == []
