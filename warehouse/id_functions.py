"""The id functions of ``warehouse/ids.py`` and the records, as SQL functions for migrations that re-key rows.

A migration computes new ids in SQL (``warehouse/sql/schema_vN.sql``) with the very functions the importers and
judges call, so a migrated row's id is the one a re-import or a re-run computes: nothing is written twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import duckdb

from alignloop.warehouse import ids
from alignloop.warehouse.records import Comparison, Correction, Ranking, Rating, StepLabel

V, D, INT, BIG, BOOL = "VARCHAR", "DOUBLE", "INTEGER", "BIGINT", "BOOLEAN"


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


FUNCTIONS: dict[str, tuple[Callable[..., str], list[str]]] = {
    "alignloop_content_id": (lambda kind, obj: ids.content_id(kind, _loads(obj)), [V, V]),
    "alignloop_judgment_id": (lambda kind, judge, items, aspect: ids.judgment_id(kind, judge, _loads(items), aspect),
                              [V, V, V, V]),
    "alignloop_response_id": (lambda prompt, model, sampling, seed, index, text: ids.response_id(
        prompt, model, _loads(sampling), seed, index, text), [V, V, V, BIG, INT, V]),
    "alignloop_imported_response_id": (ids.imported_response_id, [V, V, V, "VARCHAR[]"]),
    "alignloop_comparison_label_id": (Comparison.label_id, [V, V, V, V, D, V]),
    "alignloop_ranking_label_id": (Ranking.label_id, [V, "VARCHAR[]", V]),
    "alignloop_rating_label_id": (Rating.label_id, [V, V, V, D, D, D]),
    "alignloop_step_label_id": (StepLabel.label_id, [V, V, INT, INT, BOOL]),
    "alignloop_correction_label_id": (Correction.label_id, [V, V, V, V]),
}
"""name -> (function, SQL parameter types); each returns the id as VARCHAR."""


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Make every function of ``FUNCTIONS`` callable from SQL on ``con`` (NULL arguments reach Python as None)."""
    for name, (fn, params) in FUNCTIONS.items():
        con.create_function(name, fn, params, V, null_handling="special", side_effects=False)
