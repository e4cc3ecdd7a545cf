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

from alignloop.warehouse import id_functions
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.records import to_arrow

_SQL = files("alignloop.warehouse") / "sql"
DEFAULT_DB = "alignloop.duckdb"

TABLES = (
    "prompts", "models", "rounds", "responses", "comparisons", "rankings", "ratings", "step_labels",
    "corrections", "feedback_history", "annotation_tasks", "datasets", "training_runs", "training_metrics",
    "evaluations", "artifacts", "imports", "import_rows", "id_rekeys",
)
FEEDBACK_TABLES = ("comparisons", "rankings", "ratings", "step_labels", "corrections")
_KEYS = {"training_metrics": ("run_id", "step", "name"), "import_rows": ("import_id", "table_name", "row_id"),
         "id_rekeys": ("table_name", "old_id")}


class WarehouseBusy(RuntimeError):
    """Another process holds the warehouse's write lock for longer than we were willing to wait."""


class WarehouseMissing(AlignloopError):
    """A command that reads or adds to the warehouse was pointed at a file that does not exist."""


class WarehouseUnreadable(AlignloopError):
    """The warehouse path names something that is not a warehouse: a folder, an empty file, other bytes, or a DuckDB
    database of something else."""


class SchemaMismatch(AlignloopError):
    """The warehouse's schema is not the one this release reads and writes: older (``alignloop init`` migrates it) or
    newer (a later release made it)."""


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
    check_file(path)
    if path != ":memory:":
        _check_schema(path)
    return path


def optional_path(value: str | os.PathLike[str] | None = None) -> str | None:
    """The warehouse a command that works without one adds to (``models default`` registers the model it prints):
    ``value`` or ``$ALIGNLOOP_DB``, which must exist when given (a typo fails), else ``./alignloop.duckdb`` where
    there is one, else None."""
    if value is not None or os.environ.get("ALIGNLOOP_DB"):
        return existing_path(value)
    return DEFAULT_DB if Path(DEFAULT_DB).exists() else None


def _check_schema(path: str) -> None:
    """Refuse a schema this release does not write before the command loads a model or starts a flow (whose
    connections would refuse it later); a warehouse busy with a writer is checked by those connections instead."""
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:
        if _is_lock_error(exc):
            return
        raise WarehouseUnreadable(f"cannot open warehouse {path}: {_first_line(exc)}") from None
    try:
        version = schema_version(con)
    finally:
        con.close()
    if version != 0:  # a new, empty database gets its tables from the first connection that writes
        _refuse_schema(path, version, migrate=False)


_MAGIC = (8, b"DUCK")  # a DuckDB database file has these bytes at this offset (after the header's checksum)


def check_file(path: str) -> None:
    """Refuse, in one line naming it, an existing ``path`` that cannot be a warehouse: checked before DuckDB opens it,
    whose own errors for these come as a traceback, and before a command loads anything."""
    p = Path(path)
    if path == ":memory:" or not p.exists():
        return
    if p.is_dir():
        raise WarehouseUnreadable(f"{path} is a folder, not a warehouse file; point --db (or $ALIGNLOOP_DB) at the "
                                  "warehouse's .duckdb file")
    if p.stat().st_size == 0:
        raise WarehouseUnreadable(f"{path} is an empty file, not a warehouse; remove it (then 'alignloop init' "
                                  "creates one there) or point --db at the warehouse")
    offset, magic = _MAGIC
    with open(p, "rb") as fh:
        head = fh.read(offset + len(magic))
    if head[offset:] != magic:
        raise WarehouseUnreadable(f"{path} is not a DuckDB database (its first bytes are not DuckDB's header); point "
                                  "--db at the warehouse")


_INCLUDE = re.compile(r"^([ \t]*)-- include: (_\w+)(?:\(([\w=, ]*)\))?[ \t]*$", re.MULTILINE)


def _read(folder: Traversable, name: str) -> str:
    """A SQL file's text, each ``-- include: _NAME`` line replaced by the fragment ``_NAME.sql`` of the same folder.

    A fragment (its name starts with ``_``) is SQL that several files share, such as a CTE's body; it is
    pasted in as text before anything is bound, so its ``$parameters`` are the including query's. An include may
    name identifiers for the fragment, ``-- include: _NAME(table=comparisons)``, which replace its ``{{table}}``:
    identifiers written in the including file, never values.
    """
    text = folder.joinpath(name).read_text()

    def fragment(m: re.Match[str]) -> str:
        body = _read(folder, f"{m[2]}.sql").strip("\n")
        for pair in filter(None, (m[3] or "").split(",")):
            key, _, ident = (part.strip() for part in pair.partition("="))
            body = body.replace(f"{{{{{key}}}}}", ident)
        return textwrap.indent(body, m[1])

    return _INCLUDE.sub(fragment, text)


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
            found.append((int(m.group(1)), _read(_SQL, entry.name)))
    return sorted(found)


def latest_version() -> int:
    """The schema version this release reads and writes: its last ``schema_vN.sql``."""
    return migrations()[-1][0]


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The warehouse's schema version: 0 for a database without tables (a new file), None for a database with tables
    but no ``schema_version`` (not a warehouse)."""
    tables = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()}
    if "schema_version" not in tables:
        return None if tables else 0
    # fetchall: a fetchone leaves the result open, and DuckDB then refuses register() on this connection
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0])


def _migrate(con: duckdb.DuckDBPyConnection, current: int) -> None:
    """Apply every migration after ``current``, each in a transaction of its own."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    id_functions.register(con)  # a migration that re-keys rows computes ids with the Python that makes them
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


def _prepare(con: duckdb.DuckDBPyConnection, path: str, read_only: bool, migrate: bool) -> None:
    """Create a new warehouse's tables; refuse a schema this release does not write; migrate only when asked.

    Reading never migrates: a migration is a one-way change of the user's file, made by ``alignloop init`` on
    purpose, not as the side effect of ``status``.
    """
    version = schema_version(con)
    if version == 0 and not read_only:  # a new, empty file: creating its tables is not migrating anything
        _migrate(con, 0)
        return
    _refuse_schema(path, version, migrate=migrate and not read_only)
    if version is not None and version < latest_version():
        _migrate(con, version)


def _refuse_schema(path: str, version: int | None, migrate: bool) -> None:
    """Raise unless ``version`` is this release's (or an older one and ``migrate``)."""
    latest = latest_version()
    if version is None:
        raise WarehouseUnreadable(f"{path} is a DuckDB database but not an alignloop warehouse (it has tables but no "
                                  "schema_version); point --db at the warehouse")
    if version > latest:
        raise SchemaMismatch(f"warehouse {path} has schema v{version}, newer than this release of alignloop knows "
                             f"(v{latest}); use the release that made it or a later one")
    if version < latest and not migrate:
        raise SchemaMismatch(f"warehouse {path} has schema v{version}; this release needs v{latest}: run "
                             f"'alignloop init --db {path}' to migrate it (a copy of the file first keeps the old "
                             "version)")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def open_connection(path: str | os.PathLike[str] | None = None, *, read_only: bool = False,
                    wait_s: float | None = None, migrate: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (a new file gets its tables), waiting with backoff while another process holds its lock.

    Args:
        migrate: bring an older schema up to date (``alignloop init``); otherwise an older schema is refused with a
            line saying how to migrate, and a newer one is always refused.

    Raises:
        WarehouseBusy: the lock was still held after ``wait_s`` seconds (env ``ALIGNLOOP_LOCK_WAIT``, default 60).
        WarehouseUnreadable: ``path`` is a folder, an empty file, or not a warehouse.
        SchemaMismatch: the schema is older (without ``migrate``) or newer than this release's.
    """
    path = str(path if path is not None else default_path())
    if wait_s is None:
        wait_s = float(os.environ.get("ALIGNLOOP_LOCK_WAIT", "60"))
    check_file(path)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(path, read_only=read_only)
            break
        except duckdb.Error as exc:
            if not _is_lock_error(exc):
                raise WarehouseUnreadable(f"cannot open warehouse {path}: {_first_line(exc)}") from None
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    f"warehouse busy: {path} is locked by another process (waited {wait_s:.0f} s); "
                    "try again when it finishes"
                ) from None
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)) * (1 + random.random() * 0.2))
            delay = min(delay * 2, 2.0)
    try:
        _prepare(con, path, read_only, migrate)
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def connect(path: str | os.PathLike[str] | None = None, *, read_only: bool = False,
            wait_s: float | None = None, migrate: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Short-lived connection: open, work, close. Nothing holds the warehouse while it computes."""
    con = open_connection(path, read_only=read_only, wait_s=wait_s, migrate=migrate)
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


def existing_ids(con: duckdb.DuckDBPyConnection, table: str, row_ids: Sequence[str]) -> set[str]:
    """The ids among ``row_ids`` that ``table`` already holds."""
    table = _check_table(table)
    if not row_ids:
        return set()
    con.register("_alignloop_ids", pa.table({"id": pa.array(list(row_ids), pa.string())}))
    try:
        # the identifier comes from the fixed schema (checked above); the ids travel as the registered Arrow table
        return {r[0] for r in con.execute(f"SELECT t.id FROM {table} t SEMI JOIN _alignloop_ids s ON t.id = s.id"
                                          ).fetchall()}
    finally:
        con.unregister("_alignloop_ids")


@contextmanager
def removed_on_failure(path: str | os.PathLike[str]) -> Iterator[None]:
    """A block that may create the warehouse ``path``: if it fails, remove what it created (the file, its
    write-ahead log and the folders made for it), never what was there before."""
    target = Path(path)
    if str(path) == ":memory:" or target.exists():
        yield
        return
    made = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
    try:
        yield
    except BaseException:
        for leftover in (target, Path(f"{target}.wal")):
            if leftover.is_file():
                leftover.unlink()
        for folder in made:  # deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


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
    from alignloop.warehouse.records import Round

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
