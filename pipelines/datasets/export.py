"""Export a snapshot in the formats trainers read: TRL (HF ``datasets`` folder), OpenRLHF JSONL, JSONL, Parquet.

TRL columns: preference ``prompt``/``chosen``/``rejected``, unpaired ``prompt``/``completion``/``label``,
stepwise ``prompt``/``completions``/``labels`` (booleans by the snapshot's recorded rule), prompt-completion for
SFT. Conversational by default (prompt = message list, completions = [{"role": "assistant", ...}]);
``standard=True`` gives plain strings. Every row keeps its lineage ids as extra columns.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alignloop.pipelines.datasets.card import dataset_card
from alignloop.pipelines.datasets.snapshot import SPLITS, Snapshot
from alignloop.warehouse import db
from alignloop.warehouse.errors import InputError
from alignloop.warehouse.outputs import check_replaceable, staging_dir, swap_in
from alignloop.warehouse.snapshots import SCHEMAS

Format = Literal["trl", "openrlhf", "jsonl", "parquet"]
FORMATS: tuple[str, ...] = ("trl", "openrlhf", "jsonl", "parquet")
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
_OPENRLHF_KINDS = ("pairwise", "binary", "sft")
_LINEAGE_SKIP = {"prompt", "prompt_text"}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    rows: dict[str, int]
    label_rule: str | None = None


def _messages(prompts: pa.ChunkedArray) -> pa.Array:
    """JSON chat lists -> list<struct<role, content>> (each distinct prompt parsed once)."""
    unique = pc.unique(prompts)
    parsed = pa.array([[{"role": m["role"], "content": m["content"]} for m in json.loads(p)] for p in
                       unique.to_pylist()], pa.list_(MESSAGE))
    return parsed.take(pc.index_in(prompts, unique))


def _assistant(texts: pa.ChunkedArray) -> pa.Array:
    """Each text -> [{"role": "assistant", "content": text}]."""
    content = texts.combine_chunks()
    roles = pa.array(["assistant"] * len(content), pa.string())
    structs = pa.StructArray.from_arrays([roles, content], fields=list(MESSAGE))
    return pa.ListArray.from_arrays(pa.array(range(len(content) + 1), pa.int32()), structs)


def _bool_labels(labels: pa.ChunkedArray, neutral: bool) -> pa.Array:
    """-1/0/+1 -> False/neutral/True, keeping list structure."""
    arr = labels.combine_chunks()
    flat = pc.list_flatten(arr)
    mapped = pc.if_else(pc.equal(flat, 0), neutral, pc.greater(flat, 0))
    return pa.ListArray.from_arrays(arr.offsets, mapped)


def _neutral(snap: Snapshot) -> bool:
    return bool(snap.manifest.params.get("config", {}).get("neutral_label", True))


def trl_table(table: pa.Table, kind: str, *, standard: bool, neutral: bool = True) -> pa.Table:
    """Snapshot rows -> TRL column conventions, lineage columns kept after the TRL ones."""
    prompt = table["prompt_text"] if standard or kind == "steps" else _messages(table["prompt"])
    conv = (lambda c: table[c]) if standard else (lambda c: _assistant(table[c]))
    cols: dict[str, Any] = {"prompt": prompt}
    if kind == "pairwise":
        cols.update(chosen=conv("chosen"), rejected=conv("rejected"))
    elif kind == "binary":
        cols.update(completion=conv("completion"), label=table["label"])
    elif kind == "sft":
        cols.update(completion=conv("completion"))
    elif kind == "steps":
        cols.update(completions=table["steps"], labels=_bool_labels(table["labels"], neutral),
                    raw_labels=table["labels"])
    elif kind == "listwise":
        cols.update(completions=table["completions"])
    elif kind == "correction":
        cols.update(answer=table["answer"], correction=table["correction"])
    for name in table.column_names:
        if name not in cols and name not in _LINEAGE_SKIP and name not in ("steps", "labels"):
            cols[name] = table[name]
    return pa.table(cols)


def openrlhf_table(table: pa.Table, kind: str, *, standard: bool) -> pa.Table:
    """OpenRLHF keys: prompt/chosen/rejected (reward, DPO), prompt/response/label (KTO), prompt/response (SFT)."""
    if kind not in _OPENRLHF_KINDS:
        raise InputError(f"openrlhf export supports {', '.join(_OPENRLHF_KINDS)}, not {kind}; use trl or jsonl")
    t = trl_table(table, kind, standard=standard)
    if kind in ("binary", "sft"):
        t = t.rename_columns(["response" if c == "completion" else c for c in t.column_names])
    return t


def _write_jsonl(table: pa.Table, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist())


EXPORT_FILE = "alignloop_export.json"
"""What an export writes besides its data and card: the dataset, kind and format it holds (how --force knows one)."""
_EXPORT_NAMES = frozenset({EXPORT_FILE, "README.md", "dataset_dict.json", *SPLITS,
                           *(f"{s}.{ext}" for s in SPLITS for ext in ("jsonl", "parquet"))})


def export_problem(folder: Path) -> str | None:
    """None where ``folder`` is a previous export (its ``alignloop_export.json`` and dataset card) holding nothing
    an export does not write; else why it is not one."""
    if not folder.is_dir():
        return "it is a file, not an alignloop export"
    try:
        meta = json.loads((folder / EXPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"it is not an alignloop export (no readable {EXPORT_FILE})"
    if not isinstance(meta, dict) or not {"dataset", "format"} <= meta.keys() or not (folder / "README.md").is_file():
        return f"it is not an alignloop export ({EXPORT_FILE} without the dataset it holds, or no README.md card)"
    other = sorted(p.name for p in folder.iterdir() if p.name not in _EXPORT_NAMES)
    if other:
        more = f" and {len(other) - 1} more" if len(other) > 1 else ""
        return f"it is an export that also holds {other[0]!r}{more}, which no export writes"
    return None


def export_snapshot(snap: Snapshot, fmt: str, out: str | os.PathLike[str], *, standard: bool = False,
                    force: bool = False, warehouse: str | None = None) -> ExportResult:
    """Write ``snap`` to folder ``out`` in format ``fmt``.

    An existing ``out`` is refused unless ``force`` and it is a previous export holding nothing else, and never
    when it is the current folder or holds it, is ``warehouse``'s folder or holds a warehouse
    (:func:`warehouse.outputs.replace_problem`). The export is written beside ``out`` and swapped in at the end: a
    failure leaves a previous export whole.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    kind = snap.manifest.kind
    if fmt == "openrlhf" and kind not in _OPENRLHF_KINDS:
        openrlhf_table(snap.train, kind, standard=standard)  # raises the one-line error
    out = Path(out)
    check_replaceable(out, "--out", export_problem, [warehouse or db.default_path()], force)
    tmp = staging_dir(out.resolve())
    rows = {s: snap.tables[s].num_rows for s in SPLITS}
    label_rule = snap.manifest.notes.get("label_rule")
    try:
        if fmt == "trl":
            tables = {s: trl_table(snap.tables[s], kind, standard=standard, neutral=_neutral(snap)) for s in SPLITS}
        elif fmt == "openrlhf":
            tables = {s: openrlhf_table(snap.tables[s], kind, standard=standard) for s in SPLITS}
        else:
            tables = dict(snap.tables)
        files: dict[str, str] = {}  # each split's file, for the card (an empty split is left out of it)
        if fmt == "trl":
            import datasets

            datasets.disable_progress_bars()
            parts = {s: datasets.Dataset(datasets.table.InMemoryTable(tables[s]))
                     for s in SPLITS if rows[s]}  # an empty split cannot be reloaded by datasets: left out
            datasets.DatasetDict(parts).save_to_disk(str(tmp))
        else:
            ext = "parquet" if fmt == "parquet" else "jsonl"
            for s in SPLITS:
                (pq.write_table if fmt == "parquet" else _write_jsonl)(tables[s], tmp / f"{s}.{ext}")
                if rows[s]:
                    files[s] = f"{s}.{ext}"
        meta = {"dataset": snap.manifest.id, "kind": kind, "format": fmt, "standard": standard, "rows": rows,
                "content_hash": snap.manifest.content_hash, "label_rule": label_rule}
        (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2))
        card = dataset_card(snap, fmt, files, tables[SPLITS[0]].column_names, standard=standard, label_rule=label_rule)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        swap_in(tmp, out.resolve())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, fmt, rows, label_rule)


def read_export(path: str | os.PathLike[str], kind: str | None = None) -> dict[str, pa.Table]:
    """Read an export back as Arrow tables per split (for checks and round-trip tests)."""
    path = Path(path)
    meta = json.loads((path / EXPORT_FILE).read_text())
    kind = kind or meta["kind"]
    if meta["format"] == "trl":
        import datasets

        dd = datasets.load_from_disk(str(path))
        return {s: dd[s].data.table for s in dd}
    if meta["format"] == "parquet":
        return {s: pq.read_table(path / f"{s}.parquet") for s in SPLITS}
    out = {}
    for s in SPLITS:
        rows = [json.loads(line) for line in (path / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()]
        schema = SCHEMAS[kind] if meta["format"] == "jsonl" else None
        out[s] = pa.Table.from_pylist(rows, schema=schema) if rows or schema else pa.table({})
    return out
