"""Registers each stage's command group on the main app (one module per stage keeps cli.py short)."""

from __future__ import annotations

import importlib

import typer

STAGE_MODULES = (
    "flows.cli_models", "flows.cli_generate", "flows.cli_judge", "flows.cli_dataset", "flows.cli_train",
    "flows.cli_annotate", "flows.cli_round", "flows.cli_serve",
)


def register(app: typer.Typer) -> None:
    for name in STAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not built yet
                continue
            raise
        module.register(app)
