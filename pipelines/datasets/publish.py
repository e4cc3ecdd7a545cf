"""Build -> lint -> stats -> immutable snapshot -> ``datasets`` row: the whole of ``alignloop dataset build``.

The steps are separate functions so a Prefect flow can run the read-only ones as tasks and keep the one
warehouse write (``snapshot.register``) in the flow process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from alignloop.pipelines.datasets.build import BuildResult, build
from alignloop.pipelines.datasets.config import DatasetSpec
from alignloop.pipelines.datasets.lint import LintOptions, LintReport, lint
from alignloop.pipelines.datasets.snapshot import (
    SnapshotOutcome,
    check_name,
    load_snapshot,
    recorded_versions,
    register,
    write_snapshot,
)
from alignloop.pipelines.datasets.stats import compute_stats, plot_stats


@dataclass(frozen=True)
class Published:
    """What one build produced: the snapshot outcome, its lint report and whether the warehouse row is new."""

    outcome: SnapshotOutcome
    lint: LintReport
    registered: bool


def eval_texts_for(spec: DatasetSpec, root: Path) -> pa.Table | None:
    """Evaluation prompts from ``common.eval_dataset`` (all its prompts), or None for the warehouse test split."""
    if not spec.common.decontaminate or not spec.common.eval_dataset:
        return None
    snap = load_snapshot(spec.common.eval_dataset, root=root)
    texts = pa.concat_tables([t.select(["prompt_text"]) for t in snap.tables.values()])
    return pa.table({"text": pc.unique(texts["prompt_text"])})


def build_for(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, root: Path) -> BuildResult:
    return build(con, spec, eval_texts_for(spec, root))


def write(result: BuildResult, name: str, root: Path, lint_options: LintOptions | None = None,
          known_versions: tuple[int, ...] = ()) -> tuple[SnapshotOutcome, LintReport]:
    """Lint, compute stats, write the snapshot (or find the identical existing one) and its PNG."""
    report = lint(result.table, result.kind, lint_options or LintOptions())
    stats = compute_stats(result.table, result.kind, result.notes)
    outcome = write_snapshot(result, name, root, lint=report.as_dict(), stats=stats, known_versions=known_versions)
    if outcome.created:
        plot_stats(result.table, result.kind, outcome.path / "stats.png")
    return outcome, report


def build_and_publish(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, name: str, root: Path,
                      lint_options: LintOptions | None = None) -> Published:
    """Everything in one process (the CLI): build on ``con``, write the snapshot, record it in ``datasets``."""
    check_name(name)
    result = build_for(con, spec, root)
    outcome, report = write(result, name, root, lint_options, recorded_versions(con, name))
    inserted = register(con, outcome.manifest, outcome.path)
    return Published(outcome, report, inserted > 0)
