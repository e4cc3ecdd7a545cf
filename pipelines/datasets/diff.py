"""What changed between two snapshots of one kind: options, and rows added, removed, moved between splits or changed
(matched by the warehouse ids each row came from), with the columns that changed.

A data team reads this before training on a new version: did the new filter drop what it should, did the split
move prompts, did the soft labels change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from alignloop.pipelines.datasets.snapshot import Snapshot
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError

KEYS: dict[str, tuple[str, ...]] = {
    "pairwise": ("chosen_id", "rejected_id"),
    "binary": ("completion_id", "label"),
    "listwise": ("prompt_id",),
    "steps": ("completion_id",),
    "correction": ("answer_id", "correction_id", "identity"),
    "sft": ("completion_id",),
}
"""The columns that name a row of each kind (the warehouse ids it came from)."""

CHANGES = ("added", "removed", "moved", "changed", "same")


@dataclass(frozen=True)
class SnapshotDiff:
    old: str
    new: str
    kind: str
    same_content: bool
    """Equal content hashes: the rows are identical (options may still differ)."""
    params: dict[str, list[Any]] = field(default_factory=dict)
    """Option (dotted for nested ones) -> [old value, new value], for the options that differ."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Split -> change -> rows (``moved`` rows count under their new split)."""
    columns: dict[str, int] = field(default_factory=dict)
    """Column -> rows whose value changed in it, over the changed and moved rows."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """Change -> a few row keys (the key columns joined by '/')."""

    def total(self, change: str) -> int:
        return sum(c.get(change, 0) for c in self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _options(params: dict[str, Any]) -> dict[str, Any]:
    """A manifest's parameters by the names ``-o`` takes (``min_margin``, ``pairwise.ties``, ``sources``)."""
    flat = _flat(params)
    return {k.split(".", 1)[1] if k.startswith(("config.", "common.")) else k: v for k, v in flat.items()}


def param_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """The options whose values differ, by their ``-o`` names, each as [old, new]."""
    a, b = _options(old), _options(new)
    return {k: [a.get(k), b.get(k)] for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def _keyed(snap: Snapshot) -> pa.Table:
    table = pa.concat_tables([snap.train, snap.test])
    parts = [pc.cast(table[c], pa.string()) for c in KEYS[snap.manifest.kind]]
    key = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "/")
    return table.append_column("_key", pc.fill_null(key, ""))


def diff_snapshots(old: Snapshot, new: Snapshot, examples: int = 3) -> SnapshotDiff:
    """Compare ``old`` with ``new`` row by row; ``examples`` keys kept per kind of change.

    Raises:
        AlignloopError: the snapshots are of different kinds.
    """
    mo, mn = old.manifest, new.manifest
    if mo.kind != mn.kind:
        raise AlignloopError(f"{mo.id} is a {mo.kind} dataset and {mn.id} a {mn.kind} one; diff compares two "
                             "snapshots of one kind")
    con = duckdb.connect()
    try:
        con.register("_old", _keyed(old))
        con.register("_new", _keyed(new))
        con.execute(db.query("snapshot_diff"))
        found = con.execute(db.query("snapshot_diff_counts")).fetchall()
        shown = {change: [] for change in CHANGES[:-1]}
        for change, key in con.execute(db.query("snapshot_diff_examples"), {"n": examples}).fetchall():
            shown[change].append(key)
        columns = dict(con.execute(db.query("snapshot_diff_columns")).fetchall())
    finally:
        con.close()
    counts = {s: dict.fromkeys(CHANGES, 0) for s in sorted({split for split, _, _ in found})}
    for split, change, n in found:
        counts[split][change] = n
    return SnapshotDiff(mo.id, mn.id, mo.kind, mo.content_hash == mn.content_hash,
                        param_changes(mo.params, mn.params), counts, columns, shown)
