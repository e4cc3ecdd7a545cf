"""The ``alignloop`` command line: ``alignloop --help``."""

from __future__ import annotations

import typer

from alignloop.flows.cli.common import (  # noqa: F401  (re-exported: programs and tests import them from here)
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

# Each command module defines its commands and a register(app); they import their heavy parts (torch, Prefect,
# transformers) inside the commands, so `alignloop --help` stays light.
from alignloop.flows.cli import (
    annotate,
    core,
    dataset,
    generate,
    judge,
    models,
    round,
    serve,
    train,
)

COMMAND_MODULES = (core, models, generate, judge, dataset, train, annotate, round, serve)
"""The command modules in the order --help lists their commands."""
for _module in COMMAND_MODULES:
    _module.register(app)

if __name__ == "__main__":
    app()
