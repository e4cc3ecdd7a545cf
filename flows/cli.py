"""The ``alignloop`` command line: ``alignloop --help``."""

from __future__ import annotations

import typer
from alignloop.flows.cli_common import (  # noqa: F401  (re-exported: programs and tests import them from here)
    DbOption,
    JsonOption,
    console,
    db_path,
    emit_json,
    err_console,
    fail,
    key_values,
    user_errors,
    validated,
)

app = typer.Typer(help="alignloop: prompts -> responses -> feedback -> datasets -> training, in rounds.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


def _register_all() -> None:
    from alignloop.flows import cli_core, cli_stages

    cli_core.register(app)
    cli_stages.register(app)


_register_all()

if __name__ == "__main__":
    app()
