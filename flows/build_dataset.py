"""Prefect flow ``build-dataset``: feedback -> immutable, versioned dataset snapshot (+ its ``datasets`` row).

    python -c "from alignloop.flows.build_dataset import build_dataset, BuildDatasetParams as P; \
build_dataset(P(kind='pairwise', name='prefs', options={'ties': 'keep'}))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from pydantic import Field

from alignloop.flows.params import DatasetName, FlowParams
from alignloop.pipelines.datasets import publish
from alignloop.pipelines.datasets.build import BuildResult
from alignloop.pipelines.datasets.config import DatasetSpec, parse_options
from alignloop.pipelines.datasets.lint import LintOptions, LintReport
from alignloop.pipelines.datasets.snapshot import SnapshotOutcome, recorded_versions, register, snapshot_root
from alignloop.warehouse import db
from alignloop.warehouse.snapshots import KINDS


class BuildDatasetParams(FlowParams):
    """What to build: the form the Prefect UI shows."""

    kind: str = Field(..., description=f"Dataset kind: {', '.join(KINDS)}.")
    name: DatasetName = Field(..., description="Dataset name; versions are added under it.")
    options: dict[str, str | int | float | bool | list[str]] = Field(
        default_factory=dict, description="Builder options KEY: VALUE (see `alignloop dataset build --help`).")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")
    snapshots: str | None = Field(None, description="Snapshot root; default $ALIGNLOOP_SNAPSHOTS or "
                                                    "snapshots/ next to the warehouse.")
    max_tokens: int = Field(2048, ge=1, description="Lint: count rows longer than this.")
    tokenizer: str | None = Field(None, description="Lint: local HF tokenizer folder (default: word estimate).")

    def spec(self) -> DatasetSpec:
        return parse_options(self.kind, self.options)

    def root(self) -> Path:
        return snapshot_root(self.snapshots, self.db_path())

    def db_path(self) -> str:
        return db.existing_path(self.db)


@task(name="build-rows", persist_result=False)
def build_rows(db_path: str, spec: DatasetSpec, root: Path, name: str) -> tuple[BuildResult, tuple[int, ...]]:
    """Read the warehouse (short connection): the rows, plus the versions of ``name`` already recorded."""
    with db.connect(db_path) as con:
        return publish.build_for(con, spec, root), recorded_versions(con, name)


@task(name="write-snapshot", persist_result=False)
def write_snapshot(result: BuildResult, name: str, root: Path, lint_options: LintOptions,
                   known: tuple[int, ...]) -> tuple[SnapshotOutcome, LintReport]:
    return publish.write(result, name, root, lint_options, known)


@flow(name="build-dataset", persist_result=True)
def build_dataset(params: BuildDatasetParams) -> dict[str, Any]:
    """Build rows (task) -> write the snapshot files (task) -> record the dataset (this process writes)."""
    spec, root = params.spec(), params.root()
    result, known = build_rows(params.db_path(), spec, root, params.name)
    outcome, report = write_snapshot(result, params.name, root, LintOptions(params.max_tokens, params.tokenizer),
                                     known)
    with db.connect(params.db_path()) as con:
        register(con, outcome.manifest, outcome.path)
    return _summary(outcome, report)


def _summary(outcome: SnapshotOutcome, report: LintReport) -> dict[str, Any]:
    m = outcome.manifest
    return {"id": m.id, "version": m.version, "created": outcome.created, "path": str(outcome.path),
            "rows": m.row_counts, "content_hash": m.content_hash, "lint": report.counts,
            "stage_counts": m.stage_counts}


class MixDatasetsParams(FlowParams):
    """Which snapshots to mix and how much of each: the form the Prefect UI shows."""

    name: DatasetName = Field(..., description="The mixture's dataset name; versions are added under it.")
    parts: dict[str, float] = Field(..., description="Dataset (NAME or NAME@vN) -> the fraction of its train "
                                                     "prompts kept, in (0, 1]; test splits are kept whole.")
    seed: int = Field(0, description="Seed of which prompts each part keeps (same inputs, same rows).")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")
    snapshots: str | None = Field(None, description="Snapshot root; default $ALIGNLOOP_SNAPSHOTS or "
                                                    "snapshots/ next to the warehouse.")
    max_tokens: int = Field(2048, ge=1, description="Lint: count rows longer than this.")
    tokenizer: str | None = Field(None, description="Lint: local HF tokenizer folder (default: word estimate).")


@flow(name="mix-datasets", persist_result=True)
def mix_datasets(params: MixDatasetsParams) -> dict[str, Any]:
    """Mix snapshots of one kind into a new snapshot (each part's fraction of train prompts, tests whole; held-out
    prompts, duplicates and contradictions across parts resolved), record it in ``datasets``."""
    from alignloop.pipelines.datasets.mix import mix
    from alignloop.pipelines.datasets.snapshot import load_snapshot

    path = db.existing_path(params.db)
    root = snapshot_root(params.snapshots, path)
    result = mix([(load_snapshot(ref, root=root), fraction) for ref, fraction in params.parts.items()], params.seed)
    with db.connect(path) as con:
        known = recorded_versions(con, params.name)
    outcome, report = publish.write(result, params.name, root, LintOptions(params.max_tokens, params.tokenizer), known)
    with db.connect(path) as con:
        register(con, outcome.manifest, outcome.path)
    return _summary(outcome, report)
