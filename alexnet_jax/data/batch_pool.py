"""Worker processes that make training batches straight into a fixed pool of shared-memory
batches, which the training process reads in place.

Why not Grain's worker processes (`mp_prefetch`), which the reader used before: they put every
batch into a new shared-memory segment (create, fill, open, unlink: 0.215 CPU-ms an image
against 0.015 for a plain copy), the training process then copies it out, and their segments
were reported leaked after every run (docs/performance.md, "The TensorFlow-free reader").
Here each worker owns a few slots, each one batch's arrays in a memory-mapped file of its own,
made once; a worker is told which batch to make into which slot and answers with a few bytes.
The training process hands out NumPy arrays that view the slot (on a CPU, JAX's arrays made
from them view it too): the slot goes back to its worker when the last array that views it is
gone, so no batch is overwritten while anything still reads it, whoever holds it. A worker
short of free slots (the consumer keeps many batches) gets a new one: nothing ever waits for
the consumer to let go.

Nothing is left behind: a slot's file is removed as soon as its worker has mapped it (the
mappings live on, nameless); files of a process that died before that (a SIGKILL in the first
second) are removed by the next pool that starts. A worker ends when the training process
does, however it ends: it reads its orders from a pipe, whose end is gone with its parent.

Batch k is made by worker k mod W, so the batches come back in order without sorting; what a
batch holds is the maker's business (`maker.fill(step, arrays)`), a pure function of the step.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue
import signal
import tempfile
import weakref
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from alexnet_jax.common.errors import UserError

FILE_PREFIX = "alexnet_jax_batch"
ALIGN = 64                     # each field starts on a cache line
WORKER_START_TIMEOUT_S = 300   # a worker imports NumPy and tensorflow-datasets, no more
POLL_S = 1.0                   # how often a wait for a batch checks that its worker lives


class BatchMaker(Protocol):
    """What the pool needs of a batch's maker (sent to every worker, so picklable)."""

    def fields(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Each array of a batch: its shape and dtype."""

    def fill(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        """Write batch `step` into `arrays` (every element of every array)."""


def shared_memory_dir() -> Path:
    """Where slot files live: RAM (/dev/shm) where the platform has it."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def remove_stale_files(directory: Path | None = None) -> list[Path]:
    """Remove the slot files of pools whose process is gone (a trainer killed before its
    workers mapped them); the paths removed."""
    removed = []
    for path in (directory or shared_memory_dir()).glob(f"{FILE_PREFIX}-*"):
        try:
            pid = int(path.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not _alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _layout(fields) -> tuple[dict[str, tuple[int, tuple[int, ...], np.dtype]], int]:
    """{field: (offset, shape, dtype)} in one slot, and the slot's size in bytes."""
    layout, offset = {}, 0
    for name, (shape, dtype) in fields.items():
        dtype = np.dtype(dtype)
        layout[name] = (offset, tuple(shape), dtype)
        offset += -(-int(np.prod(shape)) * dtype.itemsize // ALIGN) * ALIGN
    return layout, max(offset, ALIGN)


def _map_file(path: Path, size: int, create: bool) -> np.ndarray:
    """The file at `path` mapped shared, as bytes (created at `size` if `create`)."""
    import mmap  # noqa: PLC0415

    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    descriptor = os.open(path, flags, 0o600)
    try:
        if create:
            _reserve(descriptor, path, size)
        return np.frombuffer(mmap.mmap(descriptor, size), np.uint8)
    finally:
        os.close(descriptor)  # the mapping stays


def _reserve(descriptor: int, path: Path, size: int) -> None:
    """Give the new file its memory now: a full /dev/shm (a container's is 64 MB unless told
    otherwise) refuses here, in words, instead of killing a worker with SIGBUS mid-batch."""
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(descriptor, 0, size)
        else:  # macOS: no reservation; a full disk fails the worker's write instead
            os.ftruncate(descriptor, size)
    except OSError as error:
        path.unlink(missing_ok=True)
        raise UserError(
            f"no room in {path.parent} for another batch of the reading workers "
            f"({size / 2 ** 20:.0f} MB; {error.strerror}). Give it more (Docker: "
            "--shm-size=4g), or read with fewer workers (--config.data.read_workers=N) or in "
            "threads of the training process (--config.data.read_workers=0).") from None


def _views(memory: np.ndarray, layout) -> dict[str, np.ndarray]:
    return {name: memory[offset:offset + int(np.prod(shape)) * dtype.itemsize]
            .view(dtype).reshape(shape) for name, (offset, shape, dtype) in layout.items()}


class _Lease:
    """One handing-out of a slot: the batch's arrays keep it alive; when it dies (the last
    array is gone) its slot goes back to the pool."""

    __slots__ = ("__weakref__",)


class _Field:
    """One field of a leased slot as NumPy's array interface, so that the array made from it
    has this object as its base, and through it the lease."""

    __slots__ = ("__array_interface__", "lease", "memory")

    def __init__(self, lease: _Lease, memory: np.ndarray, offset: int, shape, dtype):
        self.lease, self.memory = lease, memory
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "version": 3,
                                    "data": (memory.ctypes.data + offset, False)}


class _Slot:
    def __init__(self, ident: int, worker: int, path: Path, memory: np.ndarray):
        self.ident, self.worker, self.path, self.memory = ident, worker, path, memory


def _worker_main(maker: BatchMaker, orders, slot_size: int) -> None:
    """A worker: make the batches its orders name into the slots they name, until the
    orders end (a stop, or the training process gone)."""
    # No death signal tied to the parent (die_with_parent): Linux ties it to the thread that
    # started the worker, and a run's feeding thread ends every epoch; the pipe ends instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the trainer's to handle
    layout, _ = _layout(maker.fields())
    slots: dict[int, dict[str, np.ndarray]] = {}
    orders.send(("ready",))
    while True:
        try:
            order = orders.recv()
        except (EOFError, OSError):
            return   # the training process is gone
        if order[0] == "stop":
            return
        _, step, ident, path = order
        try:
            if ident not in slots:
                slots[ident] = _views(_map_file(Path(path), slot_size, create=False), layout)
            maker.fill(step, slots[ident])
            answer = ("done", step, ident)
        except Exception as error:  # noqa: BLE001 - raised in the training process instead
            answer = ("error", step, ident, _picklable(error))
        try:
            orders.send(answer)
        except (BrokenPipeError, OSError):
            return


def _picklable(error: BaseException) -> BaseException:
    import pickle  # noqa: PLC0415

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - an error that does not pickle travels as its text
        return RuntimeError(f"{type(error).__name__}: {error}")


class _Slots:
    """The training process's side of the slots: each made once for one worker, handed out as
    arrays that view it, and free again when the last of those is gone."""

    def __init__(self, layout, size: int, workers: int):
        self.layout, self.size, self.directory = layout, size, shared_memory_dir()
        self._released: queue.SimpleQueue = queue.SimpleQueue()   # from any thread
        self._leases: dict[weakref.ref, int] = {}   # a live lease's reference: its slot
        self._free = [collections.deque() for _ in range(workers)]
        self._all: dict[int, _Slot] = {}
        self._named: set[int] = set()    # slots whose file still has its name

    def __len__(self) -> int:
        return len(self._all)

    def free_one(self, worker: int) -> tuple[int, str | None]:
        """(a free slot of `worker`, the path of its file if the worker has yet to map it); a
        new slot if none is free."""
        while not self._released.empty():
            ident = self._leases.pop(self._released.get_nowait())
            self._free[self._all[ident].worker].append(ident)
        if self._free[worker]:
            ident = self._free[worker].popleft()
        else:
            ident = len(self._all)
            path = self.directory / f"{FILE_PREFIX}-{os.getpid()}-{id(self):x}-{ident}"
            self._all[ident] = _Slot(ident, worker, path, _map_file(path, self.size, True))
            self._named.add(ident)
        return ident, str(self._all[ident].path) if ident in self._named else None

    def lease(self, ident: int) -> dict[str, np.ndarray]:
        """Slot `ident`'s arrays (its worker has filled it, so has mapped it: its name goes)."""
        slot = self._all[ident]
        if ident in self._named:
            slot.path.unlink(missing_ok=True)
            self._named.discard(ident)
        lease = _Lease()
        # The callback is the queue's own C method, given the dead reference: no Python code
        # runs when a lease dies, so a Ctrl-C cannot land in it and be swallowed there (an
        # exception in a weakref callback is only printed), which would leave a reader
        # looping on after its KeyboardInterrupt.
        self._leases[weakref.ref(lease, self._released.put)] = ident
        return {name: np.asarray(_Field(lease, slot.memory, offset, shape, dtype))
                for name, (offset, shape, dtype) in self.layout.items()}

    def remove_names(self) -> None:
        for ident in self._named:
            self._all[ident].path.unlink(missing_ok=True)
        self._named.clear()


class _Processes:
    """The worker processes and the pipes that carry their orders and answers."""

    def __init__(self, maker: BatchMaker, count: int, slot_size: int):
        context = multiprocessing.get_context("spawn")
        self.pipes, self.processes = [], []
        for _ in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(target=_worker_main, daemon=True,
                                      args=(maker, theirs, slot_size))
            process.start()
            theirs.close()
            self.pipes.append(mine)
            self.processes.append(process)

    def receive(self, worker: int, timeout: float | None):
        """The worker's next answer; RuntimeError if it died or (with `timeout`) is silent."""
        pipe, process = self.pipes[worker], self.processes[worker]
        waited = 0.0
        while not pipe.poll(POLL_S):
            waited += POLL_S
            if not process.is_alive():
                raise RuntimeError(
                    f"reading worker {worker} (pid {process.pid}) died "
                    f"({_ending(process.exitcode)}) without an error of its own; see the "
                    "system log if the kernel killed it for memory.")
            if timeout is not None and waited >= timeout:
                raise RuntimeError(f"reading worker {worker} (pid {process.pid}) did not "
                                   f"start in {timeout:.0f} s.")
        try:
            return pipe.recv()
        except (EOFError, ConnectionResetError):
            raise self._died(worker) from None

    def send(self, worker: int, order: tuple) -> None:
        """Give the worker an order; RuntimeError naming it if it died (its pipe is broken)."""
        try:
            self.pipes[worker].send(order)
        except (BrokenPipeError, ConnectionResetError):
            raise self._died(worker) from None

    def _died(self, worker: int) -> RuntimeError:
        # A worker that died between two orders is seen first by whichever of send and
        # receive touches its pipe next; both name it the same way.
        process = self.processes[worker]
        process.join(timeout=5)
        return RuntimeError(f"reading worker {worker} (pid {process.pid}) died "
                            f"({_ending(process.exitcode)}).")

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(("stop",))
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


class WorkerBatches:
    """Batches `first_step`, `first_step` + 1, ... made by `workers` processes, each at most
    `ahead` batches ahead of the one taken; `next()` returns the next one, as arrays that view
    its slot."""

    def __init__(self, maker: BatchMaker, workers: int, first_step: int, ahead: int = 2):
        remove_stale_files()
        self.workers = workers
        layout, size = _layout(maker.fields())
        self._slots = _Slots(layout, size, workers)
        self._next_step = self._next_order = first_step
        self._closed = False
        self._processes = _Processes(maker, workers, size)
        try:
            for worker in range(workers):
                self._processes.receive(worker, WORKER_START_TIMEOUT_S)   # "ready"
            for _ in range(workers * ahead):
                self._order_next()
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes.processes]

    def next(self) -> dict[str, np.ndarray]:
        """The next batch, in order."""
        answer = self._processes.receive(self._next_step % self.workers, None)
        if answer[0] == "error":
            raise answer[3]
        _, step, ident = answer
        assert step == self._next_step, (step, self._next_step)
        self._next_step += 1
        self._order_next()
        return self._slots.lease(ident)

    def close(self) -> None:
        """Stop the workers and remove every slot's name; batches handed out stay readable."""
        if not self._closed:
            self._closed = True
            self._processes.stop()
            self._slots.remove_names()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit, half of this may be gone
            pass

    def _order_next(self) -> None:
        """Order the next batch not yet ordered from its worker, into one of its slots."""
        worker = self._next_order % self.workers
        ident, path = self._slots.free_one(worker)
        self._processes.send(worker, ("make", self._next_order, ident, path))
        self._next_order += 1


def _ending(exitcode: Any) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        return f"signal {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"
