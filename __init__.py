"""alignloop: prompts -> responses -> feedback -> datasets -> training, in rounds.

The repository's top-level folders are this package's layers: ``alignloop.warehouse`` (DuckDB schema, records,
ids), ``alignloop.pipelines`` (intake, generation, judges, dataset builders), ``alignloop.annotation`` (Label
Studio), ``alignloop.trainers`` (losses and trainers) and ``alignloop.flows`` (Prefect flows and the CLI).
Nothing is imported here eagerly: ``import alignloop`` stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alignloop")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
