"""Write an import's plan: what is new and what was already there, the rows, and the file's provenance."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from alignloop.warehouse import db

if TYPE_CHECKING:
    from alignloop.pipelines.intake.importer import ImportPlan, ImportSummary

TABLES = ("prompts", "responses", "comparisons", "rankings", "ratings", "step_labels", "corrections")
"""The tables an import fills, in the order it writes them (a row's references come before it)."""
_ROUND_TABLES = TABLES[1:]
"""Tables whose rows belong to the import's round."""


def write_plan(con: duckdb.DuckDBPyConnection, plan: ImportPlan) -> ImportSummary:
    """Store the plan's rows that are not stored yet, in one transaction, and record the import in ``imports``
    (which file, its sha256, the options, the counts) and ``import_rows`` (each row it carried, new or not).

    A record counts as imported when it stored at least one row, as already present when every row it carries was
    stored before (by an earlier import, or earlier in this file).
    """
    summary = plan.summary
    with db.transaction(con):
        carried = sorted({row for rows in plan.carried for row in rows})
        stored = {t: db.existing_ids(con, t, [r for table, r in carried if table == t]) for t in TABLES}
        new = _classify(plan, stored)
        if any(summary.inserted[t] for t in _ROUND_TABLES):
            db.ensure_round(con, plan.record.round_id or "import")
        if plan.model is not None and summary.inserted["responses"]:
            summary.inserted["models"] = db.ingest(con, "models", [plan.model])
        for table, rows in plan.tables.items():
            db.ingest(con, table, rows)  # inserts exactly the rows _classify counted new
        summary.import_id = plan.record.id
        record = replace(plan.record, counts={k: v for k, v in summary.as_dict().items()
                                              if k in ("read", "imported", "already_present", "near_duplicates",
                                                       "skipped", "inserted", "present")}
                         | {"rejected": sum(summary.rejected.values())})
        summary.seen_before = db.ingest(con, "imports", [record]) == 0
        db.ingest(con, "import_rows", pa.table({
            "import_id": [record.id] * len(carried), "table_name": [t for t, _ in carried],
            "row_id": [r for _, r in carried], "is_new": [row in new for row in carried]}))
    return summary


def _classify(plan: ImportPlan, stored: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Count records and rows as new or already present; returns the (table, id) of the rows this import stores."""
    summary = plan.summary
    summary.inserted = dict.fromkeys((*TABLES, "models"), 0)
    summary.present = dict.fromkeys(TABLES, 0)
    new: set[tuple[str, str]] = set()
    for rows in plan.carried:
        fresh = False
        for table, row_id in rows:
            if row_id in stored[table] or (table, row_id) in new:
                summary.present[table] += 1
            else:
                new.add((table, row_id))
                summary.inserted[table] += 1
                fresh = True
        summary.imported += fresh
        summary.already_present += not fresh
    return new
