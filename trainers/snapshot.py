"""Read an immutable dataset snapshot folder (train.parquet, test.parquet, manifest.json) for training.

Trainers never read the live warehouse: the flow resolves a dataset name to its snapshot folder and passes the path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.snapshots import SCHEMAS

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Snapshot:
    """One dataset snapshot: its kind, content hash and both splits as Arrow tables."""

    path: Path
    name: str
    kind: str
    content_hash: str
    train: pa.Table
    test: pa.Table
    dataset_id: str | None = None

    def split(self, name: str) -> pa.Table:
        return self.train if name == "train" else self.test


def _infer_kind(schema: pa.Schema, path: Path) -> str:
    cols = set(schema.names)
    matches = [k for k, kind_schema in SCHEMAS.items() if set(kind_schema.names) <= cols]
    if len(matches) != 1:
        raise AlignloopError(f"{path}: cannot tell the dataset kind from its columns and manifest.json has no 'kind'")
    return matches[0]


def _checked_kind(manifest: dict, schema: pa.Schema, root: Path) -> str:
    kind = manifest.get("kind") or _infer_kind(schema, root)
    if kind not in SCHEMAS:
        raise AlignloopError(f"{root / 'manifest.json'}: unknown dataset kind {kind!r}; known: {', '.join(SCHEMAS)}")
    missing = [n for n in SCHEMAS[kind].names if n not in schema.names]
    if missing:
        raise AlignloopError(f"{root / 'train.parquet'}: {kind} snapshot lacks column(s) {', '.join(missing)}")
    return kind


def snapshot_kind(path: str | Path) -> tuple[str, str]:
    """A snapshot folder's name and kind from its manifest and train schema, without reading its rows.

    Raises:
        AlignloopError: as :func:`load_snapshot_dir` for a missing folder, train split, unknown kind or columns.
    """
    root = Path(path)
    manifest = _manifest(root)
    kind = _checked_kind(manifest, pq.read_schema(root / "train.parquet"), root)
    return manifest.get("name") or root.name, kind


def _manifest(root: Path) -> dict:
    if not root.is_dir():
        raise AlignloopError(f"dataset snapshot {root} not found")
    if not (root / "train.parquet").is_file():
        raise AlignloopError(f"dataset snapshot {root} has no train.parquet")
    manifest_path = root / "manifest.json"
    return json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}


def _file_hash(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()[:32]


def load_snapshot_dir(path: str | Path) -> Snapshot:
    """Load a snapshot folder.

    The manifest (optional) gives ``name``, ``kind``, ``content_hash`` and ``id``; without it the kind is inferred
    from the columns and the hash is computed from the Parquet bytes.

    Raises:
        AlignloopError: missing folder or train split, unknown kind, or missing columns (one line each).
    """
    root = Path(path)
    manifest = _manifest(root)
    files = {s: root / f"{s}.parquet" for s in SPLITS}
    kind = _checked_kind(manifest, pq.read_schema(files["train"]), root)
    train = pq.read_table(files["train"])
    test = pq.read_table(files["test"]) if files["test"].is_file() else train.schema.empty_table()
    content_hash = manifest.get("content_hash") or _file_hash([f for f in files.values() if f.is_file()])
    return Snapshot(root, manifest.get("name") or root.name, kind, content_hash, train, test, manifest.get("id"))


def prompt_ids(path: str | Path, splits: tuple[str, ...] = SPLITS) -> list[str]:
    """The distinct prompt ids of a snapshot folder's splits, sorted, read from that one column."""
    files = [Path(path) / f"{s}.parquet" for s in splits]
    return sorted({pid for f in files if f.is_file() for pid in pq.read_table(f, columns=["prompt_id"])
                   .column("prompt_id").to_pylist()})


def write_snapshot_dir(path: str | Path, kind: str, train: pa.Table, test: pa.Table, name: str = "test") -> Path:
    """Write a snapshot folder in the contract schema (tests and benchmarks; builders own the real ones)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    schema = SCHEMAS[kind]
    for split, table in (("train", train), ("test", test)):
        pq.write_table(table.select(schema.names).cast(schema), root / f"{split}.parquet")
    content_hash = _file_hash([root / "train.parquet", root / "test.parquet"])
    manifest = {"name": name, "kind": kind, "content_hash": content_hash, "id": f"{name}@1"}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root
