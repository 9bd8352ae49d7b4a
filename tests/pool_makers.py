"""A batch maker for tests of the reading workers' pool, in a module of its own: the spawned
workers import it, and nothing heavy with it."""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Counting:
    """Batch k: rows full of k (and k + 1 ... in the second field); `fail_at` raises."""

    rows: int = 4
    fail_at: int = -1

    def fields(self):
        return {"pixels": ((self.rows, 8, 8, 3), np.dtype(np.uint8)),
                "step": ((self.rows,), np.dtype(np.int64))}

    def fill(self, step, arrays):
        if step == self.fail_at:
            raise ValueError(f"no batch {step} here")
        arrays["pixels"][:] = step % 251
        arrays["step"][:] = step + np.arange(self.rows)
