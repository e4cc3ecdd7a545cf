"""Run builder SQL files (``warehouse/sql/builders/``) as a chain of stages, counting rows after each one.

Each stage reads its input as the registered Arrow table ``_in`` (plus any named side tables), binds only the
``$name`` parameters its file uses, and returns an Arrow table. The counts say which filter emptied a dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from warehouse import db
from warehouse.errors import AlignloopError

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_COMMENT = re.compile(r"--[^\n]*")


class EmptyDataset(AlignloopError):
    """A build ended with zero rows; the message names the stage that emptied it."""


def builder_sql(name: str) -> str:
    """The text of ``warehouse/sql/builders/NAME.sql``."""
    return db.sql_file(f"builders/{name}.sql")


def run_sql(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any],
            tables: dict[str, pa.Table] | None = None) -> pa.Table:
    """Run one builder file with the parameters it names; ``tables`` are registered under their keys first."""
    sql = builder_sql(name)
    used = sorted(set(_PARAM.findall(_COMMENT.sub("", sql))))
    missing = [p for p in used if p not in params]
    if missing:
        raise KeyError(f"builder {name}.sql needs parameters {missing}")
    tables = tables or {}
    # duckdb 2 refuses a relation while an earlier execute() result is unfinished (e.g. a fetchone() elsewhere);
    # a fresh execute() replaces that pending result.
    con.execute("SELECT 1").fetchall()
    for key, table in tables.items():
        con.register(key, table)
    try:
        return con.sql(sql, params={p: params[p] for p in used}).to_arrow_table()
    finally:
        for key in tables:
            con.unregister(key)


@dataclass
class StageLog:
    """Rows after each stage of one build, in order."""

    kind: str
    counts: list[tuple[str, int]] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)

    def record(self, stage: str, table: pa.Table) -> pa.Table:
        """Log the count; raise EmptyDataset naming the stage (and the counts so far) when it is zero."""
        self.counts.append((stage, table.num_rows))
        if table.num_rows == 0:
            before = self.counts[-2][1] if len(self.counts) > 1 else None
            trail = ", ".join(f"{s}={n}" for s, n in self.counts)
            what = f"filter {stage!r} removed all {before} rows" if before else f"{stage!r} found no rows"
            raise EmptyDataset(f"{self.kind} dataset is empty: {what} (rows after each stage: {trail})")
        return table

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


class Chain:
    """Stages over one connection: ``chain.source(...)`` then ``chain.then(...)`` for each filter."""

    def __init__(self, con: duckdb.DuckDBPyConnection, kind: str, params: dict[str, Any]):
        self.con, self.params, self.log = con, params, StageLog(kind)
        self.table: pa.Table | None = None
        self.side: dict[str, pa.Table] = {}

    def source(self, stage: str, name: str, **tables: pa.Table) -> Chain:
        self.table = self.log.record(stage, run_sql(self.con, name, self.params, {**self.side, **tables}))
        return self

    def then(self, stage: str, name: str, **tables: pa.Table) -> Chain:
        assert self.table is not None, "a chain starts with source()"
        out = run_sql(self.con, name, self.params, {**self.side, **tables, "_in": self.table})
        self.table = self.log.record(stage, out)
        return self
