"""Errors the command line turns into exit codes.

0 success, 1 the work failed, 2 bad usage or bad input. A :class:`BadInput` carries a message
that says what the user must change; anything else that escapes a command is a failure (1).
"""


class BadInput(Exception):
    """The user asked for something that cannot be done as asked (exit code 2)."""


class WorkFailed(Exception):
    """The request was fine but the work did not succeed (exit code 1)."""
