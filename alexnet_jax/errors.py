"""The one exception type for bad user input: the CLI prints its message and exits non-zero."""


class UserError(Exception):
    """A problem the user can fix (config, data, workdir); the message says what and how."""
