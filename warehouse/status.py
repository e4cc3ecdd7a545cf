"""What the warehouse holds: row counts per table, per round and per feedback kind."""

from __future__ import annotations

from typing import Any

import duckdb

from alignloop.warehouse import db


def status(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    rounds: dict[str, dict[str, Any]] = {}
    for round_id, state, what, n in con.execute(db.query("status_rounds")).fetchall():
        entry = rounds.setdefault(round_id, {"status": state, "counts": {}})
        if what is not None:
            entry["counts"][what] = int(n)
    feedback: dict[str, dict[str, int]] = {}
    for kind, source, n in con.execute(db.query("status_feedback")).fetchall():
        feedback.setdefault(kind, {})[source] = int(n)
    aspects: dict[str, dict[str, int]] = {}
    for kind, aspect, n in con.execute(db.query("status_aspects")).fetchall():
        aspects.setdefault(kind, {})[aspect] = int(n)
    splits = {split: int(n) for split, n in con.execute(db.query("status_splits")).fetchall()}
    version = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    return {"schema_version": version, "tables": db.counts(con), "prompt_splits": splits, "rounds": rounds,
            "feedback": feedback, "aspects": aspects}
