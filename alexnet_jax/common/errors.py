"""The one exception type for bad user input (the CLI prints its message and exits non-zero),
and how an error is traced to the errors it came from."""

from __future__ import annotations

from typing import Iterator

# The exit code of every survivor of a multi-process run that lost a process (alexnet_jax.multihost
# and the supervisor parent); defined here so light modules need not import JAX for it.
LOST_PROCESS_EXIT_CODE = 3


class UserError(Exception):
    """A problem the user can fix (config, data, workdir); the message says what and how."""


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
    """The error, then each error it came from, as Python's traceback shows them (`raise ...
    from`, or raised while handling one, unless `from None`): libraries wrap the cause that
    says what happened (a full disk, a lost peer) in their own (Orbax's "Timed out while
    waiting for async_write_complete barrier")."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = (error.__cause__ if error.__cause__ is not None
                 else None if error.__suppress_context__ else error.__context__)
