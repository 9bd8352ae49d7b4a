"""The one exception type for bad user input: the CLI prints its message and exits non-zero."""

# The exit code of every survivor of a multi-process run that lost a process (alexnet_jax.multihost
# and the supervisor parent); defined here so light modules need not import JAX for it.
LOST_PROCESS_EXIT_CODE = 3


class UserError(Exception):
    """A problem the user can fix (config, data, workdir); the message says what and how."""
