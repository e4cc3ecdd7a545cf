"""A mixture of snapshots of one kind, as the alignment handbook's dataset mixer or open-instruct's mixes make
them, written as a snapshot of its own (manifest, lint, stats, a ``datasets`` row) whose rows keep the ids they
came from.

Each part keeps a fraction of its train prompts (whole prompts, all their rows; the first ``round(fraction * n)``,
at least one, in the order of a sha256 of the seed, the part's id and the prompt id: the same inputs give the same
rows) and its whole test split. Then the mixture is made safe to train on:

* a prompt in any part's test split has no train rows (a held-out prompt never trains, whichever part holds it);
* a row two parts both hold (the same prompt and responses, the same verdict) is kept once, from the first part;
* a pair two parts orient oppositely (pairwise: chosen and rejected swapped; binary: the same completion labelled
  both ways; steps: one solution's steps labelled differently) is a contradiction: every copy is dropped.

The counts of each are in the manifest's notes, per part where they belong to one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from alignloop.pipelines.datasets.build import BuildResult
from alignloop.pipelines.datasets.derived import DerivedSpec, parent_ref
from alignloop.pipelines.datasets.snapshot import Snapshot
from alignloop.warehouse.errors import InputError
from alignloop.warehouse.snapshots import SCHEMAS

ROW_KEYS: dict[str, tuple[str, ...]] = {
    "pairwise": ("chosen_id", "rejected_id"), "binary": ("completion_id",), "listwise": ("completion_ids",),
    "steps": ("completion_id",), "correction": ("answer_id", "correction_id"), "sft": ("completion_id",)}
"""The ids that make two rows of a kind the same item (with the split and the prompt)."""


SAYS = {"binary": "label", "steps": "labels"}
"""What a row of a kind says about its item, which another part may contradict."""


def _item(kind: str, row: dict[str, Any]) -> tuple[tuple[Any, ...], Any]:
    """(what the row is about, what it says about it): a pair's two responses in either order and which won; a
    binary completion and its label; a solution and its step labels; otherwise the row's ids, saying nothing that
    could contradict."""
    if kind == "pairwise":
        a, b = row["chosen_id"], row["rejected_id"]
        return (row["split"], row["prompt_id"], min(a, b), max(a, b)), a
    ids = tuple(tuple(v) if isinstance(v := row[k], list) else v for k in ROW_KEYS[kind])
    says = row[SAYS[kind]] if kind in SAYS else None
    return (row["split"], row["prompt_id"], *ids), tuple(says) if isinstance(says, list) else says


def _sampled(snapshot: Snapshot, fraction: float, seed: int) -> set[str]:
    prompts = set(snapshot.train["prompt_id"].to_pylist())
    key = f"{seed}:{snapshot.manifest.id}:"
    ordered = sorted(prompts, key=lambda p: hashlib.sha256((key + p).encode()).hexdigest())
    return set(ordered[:max(1, round(fraction * len(ordered)))]) if ordered else set()


def check_parts(parts: Sequence[tuple[Snapshot, float]]) -> str:
    """The parts' kind, after refusing what cannot be mixed (one line naming the dataset).

    Raises:
        InputError: fewer than two parts, a part twice, a fraction outside (0, 1], or parts of different kinds.
    """
    if len(parts) < 2:
        raise InputError(f"a mixture needs at least two datasets, got {len(parts)}")
    seen: set[str] = set()
    for snapshot, fraction in parts:
        m = snapshot.manifest
        if m.id in seen:
            raise InputError(f"dataset {m.id} is given twice; give each once with its fraction")
        seen.add(m.id)
        if not 0 < fraction <= 1:
            raise InputError(f"fraction of {m.id} must be in (0, 1], got {fraction}")
        if m.kind != parts[0][0].manifest.kind:
            raise InputError(f"datasets to mix must be of one kind: {parts[0][0].manifest.id} is "
                             f"{parts[0][0].manifest.kind}, {m.id} is {m.kind}")
    return parts[0][0].manifest.kind


def mix(parts: Sequence[tuple[Snapshot, float]], seed: int = 0) -> BuildResult:
    """The mixture of ``(snapshot, fraction)`` parts, as the module says.

    Raises:
        InputError: see :func:`check_parts`; or nothing left to train on.
    """
    kind = check_parts(parts)
    held_out = {p for snapshot, _ in parts for p in snapshot.test["prompt_id"].to_pylist()}
    rows: list[dict[str, Any]] = []
    origin: list[str] = []
    per_part: dict[str, dict[str, int]] = {}
    for snapshot, fraction in parts:
        chosen = _sampled(snapshot, fraction, seed)
        train = [r for r in snapshot.train.to_pylist() if r["prompt_id"] in chosen]
        kept = [r for r in train if r["prompt_id"] not in held_out]
        test = snapshot.test.to_pylist()
        per_part[snapshot.manifest.id] = {"fraction": fraction, "train_prompts": len(chosen), "train_rows": len(kept),
                                          "train_rows_on_held_out_prompts": len(train) - len(kept),
                                          "test_rows": len(test)}
        rows += kept + test
        origin += [snapshot.manifest.id] * (len(kept) + len(test))
    items = [_item(kind, row) for row in rows]
    first: dict[tuple[Any, ...], tuple[int, Any]] = {}
    contradicted: set[tuple[Any, ...]] = set()
    duplicates = 0
    for i, (item, says) in enumerate(items):
        if item not in first:
            first[item] = (i, says)
        elif first[item][1] != says:
            contradicted.add(item)
        else:
            duplicates += 1
    keep = [i for item, (i, _) in first.items() if item not in contradicted]
    if not any(rows[i]["split"] == "train" for i in keep):
        raise InputError(f"the mixture of {', '.join(per_part)} has no train rows left (held-out prompts and "
                         "contradictions removed them all)")
    contradictions = sum(1 for item, _ in items if item in contradicted)
    keep.sort(key=lambda i: (rows[i]["split"] != "train", str(items[i][0])))  # train first, then by item
    table = pa.Table.from_pylist([rows[i] for i in keep], schema=SCHEMAS[kind])
    by_part: dict[str, int] = {}
    for i in keep:
        by_part[origin[i]] = by_part.get(origin[i], 0) + 1
    spec = DerivedSpec(kind, f"{kind}.mix", {"parts": [{**parent_ref(s), "fraction": f} for s, f in parts],
                                             "seed": seed})
    sampled = sum(p["train_rows"] + p["train_rows_on_held_out_prompts"] + p["test_rows"] for p in per_part.values())
    return BuildResult(
        spec, table,
        stage_counts={"parts": sum(s.train.num_rows + s.test.num_rows for s, _ in parts), "sampled": sampled,
                      "not_held_out": len(rows), "deduplicated": len(first), "mixed": len(keep)},
        source_counts={"table": "snapshots", "rows": len(keep), "by_source": by_part},
        notes={"parts": per_part, "duplicates_merged": duplicates, "contradictory_pairs": contradictions})
