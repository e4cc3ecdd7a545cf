"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class AlignloopError(Exception):
    """Bad input or a state the user must fix; the message is shown as is, without a traceback."""

    exit_code = 2


class InputError(AlignloopError):
    """A problem in a file the user gave us, located by file, line and field where known."""

    def __init__(self, reason: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.reason, self.file, self.line, self.field = reason, file, line, field
        where = ":".join(str(x) for x in (file, line) if x is not None)
        what = f" field {field!r}:" if field else ""
        super().__init__(f"{where}:{what} {reason}" if where else f"{what} {reason}".strip())


class OptionError(AlignloopError, ValueError):
    """An option out of range (``n must be >= 1, got 0``): one line in the CLI, and still a ValueError for code
    that validates configs."""
