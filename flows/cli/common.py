"""What the command modules share: options, the console, one-line user errors, parameter checks.

Kept apart from ``flows.cli`` (the app, which registers every command module when imported) so that a command
module imported on its own finds these without starting that registration halfway through its own import.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from alignloop.flows.params import validated  # noqa: F401  (the commands' parameter check)
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError, InputError

T = TypeVar("T")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# the commands draw their own bars (prompts, rows, steps); transformers' "Loading weights" ones are noise here.
# transformers reads the variable when it is imported; where it already is (a program that imports the CLI), its
# switch is turned off directly.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
if "transformers" in sys.modules and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
    sys.modules["transformers"].utils.logging.disable_progress_bar()
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# A command without PREFECT_API_URL starts a temporary Prefect server; on a busy machine (or with a fresh
# database to migrate) it can take longer than Prefect's default 20 s to answer.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
_NO_SERVER = "Timed out while attempting to connect to ephemeral Prefect API server"

console = Console()
err_console = Console(stderr=True)

DbOption = Annotated[str | None, typer.Option("--db", help="Warehouse file (default: $ALIGNLOOP_DB or ./alignloop.duckdb).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def db_path(value: str | None) -> str:
    """The warehouse file a command names (it may not exist yet: ``init`` and imports create it)."""
    return value or db.default_path()


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, a non-zero exit, no traceback."""
    err_console.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


_USER_ERRORS = (AlignloopError, db.WarehouseBusy, FileNotFoundError)
_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class _QuietUserErrors(logging.Filter):
    """Drops Prefect's run-log records of an error the command reports in one line: the traceback of the failed
    task or flow run, and the 'Finished in state Failed(... exception NAME: ...)' lines that repeat it."""

    def __init__(self) -> None:
        super().__init__()
        self.names = {t.__name__ for t in _USER_ERRORS}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _USER_ERRORS):
            self.names.add(type(exc).__name__)  # a subclass: its later "Failed" lines name it
            return False
        msg = record.getMessage()  # a task's "... an exception NAME: ...", a flow's "... an exception: NAME: ..."
        return not (record.levelno >= logging.ERROR
                    and any(f"exception {n}:" in msg or f"exception: {n}:" in msg for n in self.names))


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can act on into one line and exit code 2 (Prefect's run logs of them included)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet = _QuietUserErrors()
        for name in _RUN_LOGGERS:
            logging.getLogger(name).addFilter(quiet)
        try:
            return fn(*args, **kwargs)
        except _USER_ERRORS as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; rerun the same command to resume", 130)
        except RuntimeError as exc:
            if _NO_SERVER not in str(exc):
                raise
            wait = os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]
            fail(f"the temporary Prefect server did not answer within {wait} s; raise "
                 "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start 'alignloop server' and export the "
                 "PREFECT_API_URL it prints; rerun the same command to resume")
        finally:
            for name in _RUN_LOGGERS:
                logging.getLogger(name).removeFilter(quiet)

    return wrapper


class _NoTemporaryServerLines(logging.Filter):
    """Drops Prefect's 'Starting/Stopping temporary server on ...' lines (the second comes at exit)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Starting temporary server", "Stopping temporary server"))


_SERVER_LINES = _NoTemporaryServerLines()


@contextmanager
def flow_in_process() -> Iterator[None]:
    """For a command that runs a flow's body in its own process and draws its own progress (train, evaluate).

    Without PREFECT_API_URL its tasks start a temporary Prefect server, whose start and stop lines, like the
    tasks' 'Finished in state Completed()' ones, would only interleave with the command's bars and summary;
    warnings and errors still show. The tasks run without a flow run, so their logs stay on the console,
    without Prefect's warning about it.
    """
    from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

    prefect_log = logging.getLogger("prefect")
    if _SERVER_LINES not in prefect_log.filters:
        prefect_log.addFilter(_SERVER_LINES)  # kept: the stop line is logged when the process exits
    task_log = logging.getLogger("prefect.task_runs")
    level = task_log.level
    task_log.setLevel(logging.WARNING)
    try:
        with temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
            yield
    finally:
        task_log.setLevel(level)


def key_values(pairs: list[str] | None, lists: Collection[str] = ()) -> dict[str, Any]:
    """``["k=v", ...]`` from repeated ``--option``/``--set`` flags as a dict (one-line error otherwise); a key in
    ``lists`` gathers its values into a list, one per flag (``--set prompt_tags=a --set prompt_tags=b``)."""
    out: dict[str, Any] = {}
    for item in pairs or []:
        if "=" not in item:
            raise InputError(f"option {item!r} must be KEY=VALUE")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in lists:
            out.setdefault(key, []).append(value)
        else:
            out[key] = value
    return out


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
