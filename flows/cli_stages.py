"""Registers each stage's command group on the main app (one module per stage keeps cli.py short)."""

from __future__ import annotations

import importlib

import typer

STAGE_MODULES = (
    "alignloop.flows.cli_models", "alignloop.flows.cli_generate", "alignloop.flows.cli_judge",
    "alignloop.flows.cli_dataset", "alignloop.flows.cli_train", "alignloop.flows.cli_annotate",
    "alignloop.flows.cli_round", "alignloop.flows.cli_serve",
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
