"""Feeding the mesh from a thread of its own (feeding.to_device(thread=True)): the same batches
in the same order as from the training loop's thread, errors raised where the loop takes its
batches, and nothing left reading the source once the loop stops early."""

import queue
import threading
import types

import jax
import numpy as np
import pytest

from alexnet_jax.data import feeding

BATCHES = 12


class CountingSource:
    """Host batches 0, 1, ... (pixels equal to the batch's number), counting how many were
    made, in which threads, and whether the iterator was closed."""

    def __init__(self, fail_at: int | None = None):
        self.made, self.threads, self.closed, self.fail_at = 0, set(), False, fail_at

    def __iter__(self):
        try:
            for index in range(BATCHES):
                if index == self.fail_at:
                    raise ValueError(f"batch {index} is unreadable")
                self.made += 1
                self.threads.add(threading.current_thread().name)
                yield {"pixels": np.full((4, 6, 6, 3), index, np.uint8),
                       "labels": np.arange(4, dtype=np.int32) + index}
        finally:
            self.closed = True


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((4, 2), ("data", "model"))


def feeding_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "feed-devices"]


def test_the_thread_feeds_the_same_batches_in_order_sharded_over_data(mesh):
    source = CountingSource()
    fed = list(feeding.to_device(iter(source), mesh, thread=True))
    inline = list(feeding.to_device(iter(CountingSource()), mesh, thread=False))
    assert len(fed) == len(inline) == BATCHES
    for ours, theirs in zip(fed, inline):
        np.testing.assert_array_equal(np.asarray(ours["pixels"]), np.asarray(theirs["pixels"]))
        np.testing.assert_array_equal(np.asarray(ours["labels"]), np.asarray(theirs["labels"]))
    assert fed[3]["pixels"].sharding.spec[0] == "data"
    assert {s.data.shape[0] for s in fed[3]["pixels"].addressable_shards} == {1}
    assert source.threads == {"feed-devices"} and source.closed
    assert not feeding_threads()


def test_an_error_making_a_batch_is_raised_where_the_loop_takes_it(mesh):
    batches = feeding.to_device(iter(CountingSource(fail_at=5)), mesh, thread=True)
    taken = []
    with pytest.raises(ValueError, match="batch 5 is unreadable"):
        for batch in batches:
            taken.append(int(np.asarray(batch["pixels"])[0, 0, 0, 0]))
    assert taken == [0, 1, 2, 3, 4]
    assert not feeding_threads()


class WatchedQueue(queue.Queue):
    """The feeding thread's queue, saying when a put finds it full (the thread then waits for
    the loop to take a batch, retrying its put every 0.1 s)."""

    def __init__(self, maxsize: int):
        super().__init__(maxsize)
        self.put_waits = threading.Event()

    def put(self, item, block=True, timeout=None):
        if self.full():
            self.put_waits.set()
        super().put(item, block, timeout)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_loop_that_stops_early_leaves_nothing_reading_the_source(mesh, prefetch, monkeypatch):
    """The stop comes in the worst case every time, not by chance: the thread has filled the
    queue and waits to put one more batch, which the stop's drain then lets through. It read
    ahead exactly as far as it may (the queue and the batch in its hands) and not one batch
    further once the stop is set."""
    queues = []

    def watched(maxsize):
        queues.append(WatchedQueue(maxsize))
        return queues[-1]

    monkeypatch.setattr(feeding, "queue_module", types.SimpleNamespace(
        Queue=watched, Full=queue.Full, Empty=queue.Empty))
    source = CountingSource()
    batches = feeding.to_device(iter(source), mesh, prefetch=prefetch, thread=True)
    assert [int(np.asarray(next(batches)["pixels"])[0, 0, 0, 0]) for _ in range(3)] == [0, 1, 2]
    queues[0].put_waits.clear()
    assert queues[0].put_waits.wait(timeout=120)  # the thread waits on the full queue now
    ahead = 3 + max(1, prefetch) + 1
    assert source.made == ahead
    batches.close()  # as the training loop's generator is dropped at a stop
    assert not feeding_threads()
    assert source.closed and source.made == ahead  # and no further once closed
