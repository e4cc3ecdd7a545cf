"""Immutable, versioned dataset snapshots: ``<root>/<name>/v<N>/{train,test}.parquet`` + ``manifest.json``.

Trainers read snapshots (``load_snapshot``), never the live warehouse. The content hash covers the sorted rows
only (not created_at), so the same inputs and options give the same hash, and a rebuild that changes nothing
returns the existing version instead of writing a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alignloop.pipelines.datasets.build import BuildResult
from alignloop.warehouse import db, names
from alignloop.warehouse.errors import AlignloopError, InputError
from alignloop.warehouse.records import DatasetRecord
from alignloop.warehouse.snapshots import SCHEMAS

SPLITS = ("train", "test")


def check_name(name: str) -> str:
    """``name`` if it is a valid dataset name (:func:`warehouse.names.check_name`), else one line naming it."""
    return names.check_name(name, "dataset name", field="name")


def snapshot_root(root: str | os.PathLike[str] | None = None, db_path: str | None = None) -> Path:
    """``root``, else ``$ALIGNLOOP_SNAPSHOTS``, else ``snapshots/`` next to the warehouse file."""
    if root:
        return Path(root)
    if os.environ.get("ALIGNLOOP_SNAPSHOTS"):
        return Path(os.environ["ALIGNLOOP_SNAPSHOTS"])
    path = db_path or db.default_path()
    return (Path(".") if path == ":memory:" else Path(path).resolve().parent) / "snapshots"


def content_hash(table: pa.Table) -> str:
    """sha256 over the rows in their (deterministic) order, via the Arrow IPC stream of the fixed schema."""
    sink = pa.BufferOutputStream()
    plain = table.replace_schema_metadata(None).combine_chunks()
    with pa.ipc.new_stream(sink, plain.schema) as writer:
        writer.write_table(plain, max_chunksize=1 << 16)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds: how the snapshot was made and what is in it."""

    id: str
    name: str
    version: int
    kind: str
    builder: str
    params: dict[str, Any]
    content_hash: str
    row_counts: dict[str, int]
    source_counts: dict[str, Any]
    stage_counts: dict[str, int]
    notes: dict[str, Any] = field(default_factory=dict)
    lint: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    """Kept out of the content hash."""

    def to_json(self) -> str:
        # keys in the order they were made, not sorted: the stage counts read in the order the stages ran
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        data = json.loads((path / "manifest.json").read_text())
        missing = [f for f in ("id", "name", "version", "kind", "builder", "params", "content_hash", "row_counts")
                   if f not in data]
        if missing:
            raise AlignloopError(f"{path / 'manifest.json'} is not a dataset snapshot's manifest (no "
                                 f"{', '.join(missing)}); `alignloop dataset build` writes snapshots")
        return cls(**data)

    def record(self, path: Path) -> DatasetRecord:
        return DatasetRecord(self.id, self.name, self.version, self.kind, self.params, self.content_hash,
                             str(path), self.source_counts, self.row_counts)


@dataclass(frozen=True)
class Snapshot:
    """A snapshot read back: its manifest, folder and one Arrow table per split."""

    manifest: Manifest
    path: Path
    tables: dict[str, pa.Table]

    @property
    def train(self) -> pa.Table:
        return self.tables["train"]

    @property
    def test(self) -> pa.Table:
        return self.tables["test"]


@dataclass(frozen=True)
class SnapshotOutcome:
    """Result of writing a snapshot: its manifest and folder, and whether this call created it."""

    manifest: Manifest
    path: Path
    created: bool
    previous_version: int | None = None
    """Latest version of the same name before this one, when the name was already used with other inputs."""


def versions(root: Path, name: str) -> list[int]:
    folder = root / name
    if not folder.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in folder.iterdir() if re.fullmatch(r"v\d+", p.name)
                  and (p / "manifest.json").exists())


def split_tables(table: pa.Table) -> dict[str, pa.Table]:
    return {s: table.filter(pc.equal(table["split"], s)) for s in SPLITS}


def write_snapshot(result: BuildResult, name: str, root: Path, *, lint: dict[str, Any] | None = None,
                   stats: dict[str, Any] | None = None, known_versions: tuple[int, ...] = ()) -> SnapshotOutcome:
    """Write ``result`` as the next version of ``name`` unless an existing version has the same hash and params.

    Args:
        known_versions: versions the warehouse already records for ``name`` (never reused).
    """
    check_name(name)
    params = result.spec.params()
    digest = content_hash(result.table)
    existing = versions(root, name)
    for v in reversed(existing):
        m = Manifest.read(root / name / f"v{v}")
        if m.content_hash == digest and m.params == params:
            return SnapshotOutcome(m, root / name / f"v{v}", created=False)
    version = max([0, *existing, *known_versions]) + 1
    tables = split_tables(result.table)
    manifest = Manifest(
        id=f"{name}@v{version}", name=name, version=version, kind=result.kind, builder=result.spec.builder,
        params=params, content_hash=digest, row_counts={s: t.num_rows for s, t in tables.items()},
        source_counts=result.source_counts, stage_counts=result.stage_counts, notes=result.notes,
        lint=lint or {}, stats=stats or {}, created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    final = root / name / f"v{version}"
    tmp = root / name / f".v{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for split, t in tables.items():
            pq.write_table(t, tmp / f"{split}.parquet")
        (tmp / "manifest.json").write_text(manifest.to_json())
        os.rename(tmp, final)  # atomic: a version folder is complete or absent
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SnapshotOutcome(manifest, final, created=True, previous_version=max(existing) if existing else None)


def register(con: duckdb.DuckDBPyConnection, manifest: Manifest, path: Path) -> int:
    """Record the snapshot in the ``datasets`` table (insert-if-absent); returns rows inserted."""
    with db.transaction(con):
        return db.ingest(con, "datasets", [manifest.record(path)])


def recorded_versions(con: duckdb.DuckDBPyConnection, name: str) -> tuple[int, ...]:
    return tuple(v for (v,) in con.execute("SELECT version FROM datasets WHERE name = ?", [name]).fetchall())


def parse_ref(ref: str, version: int | None = None) -> tuple[str, int | None]:
    """``name``, ``name@3`` or ``name@v3`` -> (name, version)."""
    if "@" in ref:
        ref, v = ref.split("@", 1)
        try:
            version = int(v.lstrip("v"))
        except ValueError:
            raise InputError(f"bad dataset version {v!r} in {ref}@{v}; use NAME@vN") from None
    return check_name(ref), version


def snapshot_path(name: str, version: int | None = None, root: str | os.PathLike[str] | None = None,
                  db_path: str | None = None) -> Path:
    name, version = parse_ref(name, version)
    base = snapshot_root(root, db_path)
    found = versions(base, name)
    if not found:
        names = sorted(p.name for p in base.iterdir() if p.is_dir() and versions(base, p.name)) if base.is_dir() else []
        held = f"datasets there: {', '.join(names)}" if names else "none there yet ('alignloop dataset build' makes one)"
        raise AlignloopError(f"no snapshots named {name!r} under {base}; {held}")
    if version is None:
        version = found[-1]
    if version not in found:
        raise AlignloopError(f"{name} has no version {version}; versions: {', '.join(f'v{v}' for v in found)}")
    return base / name / f"v{version}"


def load_snapshot(name: str, version: int | None = None, root: str | os.PathLike[str] | None = None,
                  db_path: str | None = None) -> Snapshot:
    """Read a snapshot for training: manifest plus Arrow tables per split (latest version by default).

    Args:
        name: dataset name, or ``name@vN``.
        version: version number; default the latest (or the one in ``name``).
        root: snapshot root; default ``$ALIGNLOOP_SNAPSHOTS`` or ``snapshots/`` next to ``db_path``.
    """
    return read_snapshot(snapshot_path(name, version, root, db_path))


def read_snapshot(path: Path) -> Snapshot:
    """The snapshot in the version folder ``path``."""
    manifest = Manifest.read(path)
    schema = SCHEMAS[manifest.kind]
    tables = {s: pq.read_table(path / f"{s}.parquet", schema=schema) for s in SPLITS}
    return Snapshot(manifest, path, tables)


def list_snapshots(root: Path) -> list[Manifest]:
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        out += [Manifest.read(folder / f"v{v}") for v in versions(root, folder.name)]
    return out
