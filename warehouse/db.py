"""The one module that opens the warehouse: connections, migrations, bulk insert-if-absent, queries."""

from __future__ import annotations

import os
import random
import re
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from warehouse.errors import AlignloopError
from warehouse.records import to_arrow

_SQL = files("warehouse") / "sql"
DEFAULT_DB = "alignloop.duckdb"

TABLES = (
    "prompts", "models", "rounds", "responses", "comparisons", "rankings", "ratings", "step_labels",
    "corrections", "feedback_history", "annotation_tasks", "datasets", "training_runs", "training_metrics",
    "evaluations", "artifacts",
)
FEEDBACK_TABLES = ("comparisons", "rankings", "ratings", "step_labels", "corrections")
_KEYS = {"training_metrics": ("run_id", "step", "name")}


class WarehouseBusy(RuntimeError):
    """Another process holds the warehouse's write lock for longer than we were willing to wait."""


class WarehouseMissing(AlignloopError):
    """A command that reads or adds to the warehouse was pointed at a file that does not exist."""


def default_path() -> str:
    return os.environ.get("ALIGNLOOP_DB", DEFAULT_DB)


def existing_path(value: str | os.PathLike[str] | None = None) -> str:
    """The warehouse file ``value`` names (default: ``default_path()``), which must exist.

    Only ``init`` and the prompt imports create a warehouse; anything else pointed at a missing file (a typo in
    ``--db`` or ``$ALIGNLOOP_DB``, another working folder) would otherwise create an empty one and report
    "nothing to do".
    """
    path = str(value) if value is not None else default_path()
    if path != ":memory:" and not Path(path).exists():
        raise WarehouseMissing(f"no warehouse at {Path(path).resolve()}; run 'alignloop init' to create it, or point "
                               "--db (a flow's db parameter) or $ALIGNLOOP_DB at an existing one")
    return path


def optional_path(value: str | os.PathLike[str] | None = None) -> str | None:
    """The warehouse a command that works without one adds to (``models default`` registers the model it prints):
    ``value`` or ``$ALIGNLOOP_DB``, which must exist when given (a typo fails), else ``./alignloop.duckdb`` where
    there is one, else None."""
    if value is not None or os.environ.get("ALIGNLOOP_DB"):
        return existing_path(value)
    return DEFAULT_DB if Path(DEFAULT_DB).exists() else None


_INCLUDE = re.compile(r"^([ \t]*)-- include: (_\w+)[ \t]*$", re.MULTILINE)


def _read(folder: Traversable, name: str) -> str:
    """A SQL file's text, each ``-- include: _NAME`` line replaced by the fragment ``_NAME.sql`` of the same folder.

    A fragment (its name starts with ``_``) is SQL that several files share, such as a CTE's body; it is
    pasted in as text before anything is bound, so its ``$parameters`` are the including query's.
    """
    text = folder.joinpath(name).read_text()
    return _INCLUDE.sub(lambda m: textwrap.indent(_read(folder, f"{m[2]}.sql").strip("\n"), m[1]), text)


def query(name: str) -> str:
    """The text of ``warehouse/sql/queries/NAME.sql`` (fragments included)."""
    return _read(_SQL / "queries", f"{name}.sql")


def sql_file(relpath: str) -> str:
    """The text of ``warehouse/sql/RELPATH`` (fragments included)."""
    folder = _SQL
    *parts, name = relpath.split("/")
    for part in parts:
        folder = folder / part
    return _read(folder, name)


def migrations() -> list[tuple[int, str]]:
    """(version, sql) for each ``schema_vN.sql``, in order."""
    found = []
    for entry in _SQL.iterdir():
        m = re.fullmatch(r"schema_v(\d+)\.sql", entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text()))
    return sorted(found)


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    current = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]
    for version, sql in migrations():
        if version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def open_connection(path: str | os.PathLike[str] | None = None, *, read_only: bool = False,
                    wait_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """Open (and migrate) the warehouse, waiting with backoff while another process holds its lock.

    Raises:
        WarehouseBusy: the lock was still held after ``wait_s`` seconds (env ``ALIGNLOOP_LOCK_WAIT``, default 60).
    """
    path = str(path if path is not None else default_path())
    if wait_s is None:
        wait_s = float(os.environ.get("ALIGNLOOP_LOCK_WAIT", "60"))
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(path, read_only=read_only)
            break
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    f"warehouse busy: {path} is locked by another process (waited {wait_s:.0f} s); "
                    "try again when it finishes"
                ) from None
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)) * (1 + random.random() * 0.2))
            delay = min(delay * 2, 2.0)
    if not read_only:
        _migrate(con)
    return con


@contextmanager
def connect(path: str | os.PathLike[str] | None = None, *, read_only: bool = False,
            wait_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """Short-lived connection: open, work, close. Nothing holds the warehouse while it computes."""
    con = open_connection(path, read_only=read_only, wait_s=wait_s)
    try:
        yield con
    finally:
        con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: a failing block writes nothing."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _check_table(table: str) -> str:
    if table not in TABLES:
        raise ValueError(f"unknown warehouse table {table!r}; known: {', '.join(TABLES)}")
    return table


def ingest(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table | Sequence[Any]) -> int:
    """Insert rows whose key is absent (insert-if-absent through Arrow); return how many were new.

    ``data`` is an Arrow table whose columns are a subset of the table's, or a list of records.
    Duplicate keys inside ``data`` keep their first row.
    """
    table = _check_table(table)
    if not isinstance(data, pa.Table):
        if not data:
            return 0
        data = to_arrow(list(data))
    if data.num_rows == 0:
        return 0
    keys = _KEYS.get(table, ("id",))
    cols = ", ".join(f'"{c}"' for c in data.column_names)
    key_list = ", ".join(keys)
    join = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    # Identifiers come from the fixed schema above; values travel as the registered Arrow table.
    sql = (
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM "
        f"(SELECT * FROM _alignloop_staged QUALIFY row_number() OVER (PARTITION BY {key_list}) = 1) s "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {join})"
    )
    con.register("_alignloop_staged", data)
    try:
        inserted = con.execute(sql).fetchall()[0][0]
    finally:
        con.unregister("_alignloop_staged")
    return int(inserted)


def replace_feedback(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table | Sequence[Any]) -> tuple[int, int]:
    """Upsert feedback rows: new ids are inserted; changed rows are replaced and the old row kept in history.

    Returns:
        (inserted, replaced)
    """
    table = _check_table(table)
    if table not in FEEDBACK_TABLES:
        raise ValueError(f"replace_feedback only applies to feedback tables, not {table!r}")
    if not isinstance(data, pa.Table):
        if not data:
            return 0, 0
        data = to_arrow(list(data))
    con.register("_alignloop_new", data)
    try:
        cols = [c for c in data.column_names if c not in ("id", "created_at")]
        differs = " OR ".join(f"t.{c} IS DISTINCT FROM n.{c}" for c in cols) or "false"
        changed = con.execute(
            f"SELECT t.id FROM {table} t JOIN _alignloop_new n ON t.id = n.id WHERE {differs}"
        ).fetchall()
        changed_ids = [r[0] for r in changed]
        if changed_ids:
            con.execute(
                f"INSERT INTO feedback_history (feedback_table, feedback_id, row_json) "
                f"SELECT ?, id, to_json(t) FROM {table} t WHERE id IN (SELECT unnest(?::VARCHAR[]))",
                [table, changed_ids],
            )
            con.execute(f"DELETE FROM {table} WHERE id IN (SELECT unnest(?::VARCHAR[]))", [changed_ids])
    finally:
        con.unregister("_alignloop_new")
    inserted = ingest(con, table, data)
    return inserted - len(changed_ids), len(changed_ids)


def ensure_round(con: duckdb.DuckDBPyConnection, name: str, **fields: Any) -> None:
    """Rounds are named by the user and created on first use."""
    from warehouse.records import Round

    if not name or not name.strip():
        raise ValueError("round name must not be empty")
    ingest(con, "rounds", [Round(id=name, **fields)])


def counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Row count per table."""
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) FROM {t}" for t in TABLES)
    return {t: int(n) for t, n in con.execute(sql).fetchall()}


def fetch_dicts(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]
