"""Run builder SQL files (``warehouse/sql/builders/``) as a chain of stages, counting rows after each one.

Each stage file reads the previous stage as ``_in`` (plus named side tables such as ``_rated``) and names its
``$parameters``. The chain composes the files into one DuckDB query (each stage a CTE), so intermediate stages
never leave DuckDB and are never written out; the per-stage row counts and small summaries ("notes") come back
in the same query, and the finished rows cross into Python once, as Arrow. The counts say which filter emptied
a dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_COMMENT = re.compile(r"--[^\n]*")
_IN = re.compile(r"\b_in\b")
_COUNTS, _NOTES = "_chain_counts", "_chain_notes"


class EmptyDataset(AlignloopError):
    """A build ended with zero rows; the message names the stage that emptied it."""

    def __init__(self, message: str, at_source: bool = False, stage: str = ""):
        super().__init__(message)
        self.at_source = at_source
        """The build's first stage found nothing (no filter removed rows)."""
        self.stage = stage
        """The stage that left no rows."""


def builder_sql(name: str) -> str:
    """The text of ``warehouse/sql/builders/NAME.sql``."""
    return db.sql_file(f"builders/{name}.sql")


def _bound(name: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The file's SQL and the parameters it names (a KeyError lists any that are missing)."""
    sql = builder_sql(name)
    used = sorted(set(_PARAM.findall(_COMMENT.sub("", sql))))
    missing = [p for p in used if p not in params]
    if missing:
        raise KeyError(f"builder {name}.sql needs parameters {missing}")
    return sql, {p: params[p] for p in used}


def run_sql(con: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any],
            tables: dict[str, pa.Table] | None = None) -> pa.Table:
    """Run one builder file with the parameters it names; ``tables`` are registered under their keys first."""
    sql, bound = _bound(name, params)
    tables = tables or {}
    # duckdb 2 refuses a relation while an earlier execute() result is unfinished (e.g. a fetchone() elsewhere);
    # a fresh execute() replaces that pending result.
    con.execute("SELECT 1").fetchall()
    for key, table in tables.items():
        con.register(key, table)
    try:
        return con.sql(sql, params=bound).to_arrow_table()
    finally:
        for key in tables:
            con.unregister(key)


@dataclass
class StageLog:
    """Rows after each stage of one build, in order."""

    kind: str
    counts: list[tuple[str, int]] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)

    def record(self, stage: str, rows: int) -> int:
        """Log the count; raise EmptyDataset naming the stage (and the counts so far) when it is zero."""
        self.counts.append((stage, rows))
        if rows == 0:
            before = self.counts[-2][1] if len(self.counts) > 1 else None
            trail = ", ".join(f"{s}={n}" for s, n in self.counts)
            what = f"filter {stage!r} removed all {before} rows" if before else f"{stage!r} found no rows"
            raise EmptyDataset(f"{self.kind} dataset is empty: {what} (rows after each stage: {trail})",
                               at_source=before is None, stage=stage)
        return rows

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass
class ChainResult:
    """What one run of a chain gives back."""

    table: pa.Table
    """The finished rows (the last file's output)."""
    log: StageLog
    """Rows after each stage."""
    notes: dict[str, list[dict[str, Any]]]
    """Each note's rows (a file run over the stage that was current when the note was asked for)."""


class Chain:
    """Stages over one connection: ``source(...)`` then ``then(...)`` per filter, ``note(...)`` for summaries,
    ``finish(...)`` to run everything as one query.

    Stage ``k`` becomes the CTE ``_s{k}``; a file's ``_in`` is rewritten to the previous stage's CTE and each
    ``$name`` to ``$name_s{k}`` (bound to the value ``params`` had when the stage was added).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, kind: str, params: dict[str, Any]):
        self.con, self.params, self.kind = con, params, kind
        self._ctes: list[str] = []
        self._stages: list[tuple[str, str]] = []
        self._notes: list[tuple[str, str]] = []
        self.bound: dict[str, Any] = {}
        """Parameter values by their per-stage names."""
        self._tables: dict[str, pa.Table] = {}

    def _sql(self, name: str, tag: str, reads_in: bool) -> str:
        sql, bound = _bound(name, self.params)
        for p, value in bound.items():
            sql = re.sub(rf"\${p}\b", f"${p}_{tag}", sql)
            self.bound[f"{p}_{tag}"] = value
        if reads_in:
            assert self._stages, "a chain starts with source()"
            sql = _IN.sub(self._stages[-1][1], sql)
        return sql

    def _add(self, stage: str, name: str, reads_in: bool, tables: dict[str, pa.Table]) -> Chain:
        cte = f"_s{len(self._stages)}"
        self._ctes.append(f"{cte} AS (\n{self._sql(name, cte, reads_in)}\n)")
        self._stages.append((stage, cte))
        self._tables.update(tables)
        return self

    def source(self, stage: str, name: str, **tables: pa.Table) -> Chain:
        """First stage (or a new start): a file that reads warehouse tables and side tables, not ``_in``."""
        return self._add(stage, name, False, tables)

    def then(self, stage: str, name: str, **tables: pa.Table) -> Chain:
        """Next stage: a file that reads the previous stage as ``_in``."""
        return self._add(stage, name, True, tables)

    def keep_as(self, name: str) -> None:
        """Later stages may read the current stage as ``name`` (e.g. ``_rated``)."""
        self._ctes.append(f"{name} AS (SELECT * FROM {self._stages[-1][1]})")

    def note(self, key: str, name: str) -> None:
        """Run file ``name`` over the current stage (as ``_in``); its rows come back as ``notes[key]``."""
        self._notes.append((key, self._sql(name, f"n{len(self._notes)}", True)))

    def query(self, name: str, rows: bool = True) -> str:
        """The one query that ``finish(name)`` runs (its parameters are in ``bound``); ``rows=False``: counts only.

        With rows, the last stage is not counted in the query: ``name`` only orders it, so its rows are that count.
        A count is a second reader of its stage, which makes DuckDB keep the stage's rows (texts, once rendered)
        instead of streaming them into the final sort.
        """
        final = self._sql(name, "final", True)
        counted = self._stages[:-1] if rows else self._stages
        counts = ", ".join(f"(SELECT count(*) FROM {cte})" for _, cte in counted)
        notes = ", ".join(f"'{key}': (SELECT list(_n) FROM (\n{sql}\n) AS _n)" for key, sql in self._notes) or "'_': NULL"
        side = f"(SELECT [{counts}]) AS {_COUNTS}, (SELECT {{{notes}}}) AS {_NOTES}"
        if not rows:
            return f"WITH {', '.join(self._ctes)}\nSELECT {side}"
        # The counts and notes ride along as two constant columns of a projection over the final file's rows:
        # a projection keeps the final ORDER BY (a join would not).
        return f"WITH {', '.join(self._ctes)}\nSELECT {side}, _final.*\nFROM (\n{final}\n) AS _final"

    def _run(self, query: str) -> pa.Table:
        self.con.execute("SELECT 1").fetchall()
        for key, table in self._tables.items():
            self.con.register(key, table)
        try:
            return self.con.sql(query, params=self.bound).to_arrow_table()
        finally:
            for key in self._tables:
                self.con.unregister(key)

    def finish(self, name: str) -> ChainResult:
        """Run file ``name`` over the last stage and everything before it in one query. ``name`` orders the rows
        (the ``finalize_*`` files); it must not drop any, since its row count stands for the last stage's.

        Raises:
            EmptyDataset: a stage left no rows (the message names it and lists the counts so far).
        """
        out = self._run(self.query(name))
        if out.num_rows:
            side, counts = out, [*out[_COUNTS][0].as_py(), out.num_rows]
        else:
            side = self._run(self.query(name, rows=False))
            counts = side[_COUNTS][0].as_py()
        log = StageLog(self.kind)
        for (stage, _), n in zip(self._stages, counts):
            log.record(stage, n)
        found = side[_NOTES][0].as_py()
        table = out.drop_columns([_COUNTS, _NOTES])
        return ChainResult(table, log, {key: found[key] or [] for key, _ in self._notes})
