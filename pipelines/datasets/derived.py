"""Snapshots derived from a snapshot rather than built from the warehouse's feedback, for weak-to-strong (Burns et
al. 2023): one part of its train prompts (cut by a hash of the prompt id), and a pairwise part relabelled by a weak
judge's scores. Each is written like a built one (manifest, lint, stats, a ``datasets`` row) and its rows carry the
ids they came from; the test split is the parent's, unchanged, so every model of an experiment is measured on the
same held-out labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from alignloop.pipelines.datasets.build import BuildResult
from alignloop.pipelines.datasets.snapshot import Snapshot
from alignloop.warehouse.errors import InputError
from alignloop.warehouse.ids import hash_parts
from alignloop.warehouse.snapshots import SCHEMAS


@dataclass(frozen=True)
class DerivedSpec:
    """What defines a derived snapshot (the manifest's builder and params; the same ones give the same version)."""

    kind: str
    builder: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "builder": self.builder, **self.parameters}


def parent_ref(snapshot: Snapshot) -> dict[str, str]:
    """How a derived snapshot's manifest names a snapshot it came from."""
    return {"id": snapshot.manifest.id, "content_hash": snapshot.manifest.content_hash}


def train_part(snapshot: Snapshot, part: int, parts: int) -> BuildResult:
    """The train rows of the prompts in ``part`` (0-based) of ``parts`` (``warehouse.ids.hash_parts``), with the
    parent's whole test split.

    Raises:
        InputError: a part out of range, or fewer train prompts than parts.
    """
    if not 0 <= part < parts:
        raise InputError(f"part must be in 0..{parts - 1}, got {part}", field="part")
    prompts = snapshot.train["prompt_id"].to_pylist()
    part_of = hash_parts(prompts, parts)
    if len(part_of) < parts:
        raise InputError(f"dataset {snapshot.manifest.id} has {len(part_of)} train prompt(s); cutting them into "
                         f"{parts} parts needs at least {parts}")
    kept = snapshot.train.filter(pa.array([part_of[p] == part for p in prompts]))
    spec = DerivedSpec(snapshot.manifest.kind, f"{snapshot.manifest.kind}.prompt_part",
                       {"parent": parent_ref(snapshot), "part": part + 1, "parts": parts})
    return BuildResult(spec, pa.concat_tables([kept, snapshot.test]),
                       stage_counts={"parent_train": snapshot.train.num_rows, "prompt_part": kept.num_rows},
                       source_counts=snapshot.manifest.source_counts,
                       notes={"parent": snapshot.manifest.id, "prompts": sum(v == part for v in part_of.values())})


def responses(snapshot: Snapshot) -> list[dict[str, str]]:
    """The distinct responses of a pairwise snapshot's train split (what a judge scores to relabel it): id,
    prompt_id, round_id, prompt (JSON messages), prompt_text, text."""
    if snapshot.manifest.kind != "pairwise":
        raise InputError(f"dataset {snapshot.manifest.id} is {snapshot.manifest.kind}; relabelling needs pairwise")
    seen: dict[str, dict[str, str]] = {}
    for r in snapshot.train.to_pylist():
        for side in ("chosen", "rejected"):
            seen.setdefault(r[f"{side}_id"], {"id": r[f"{side}_id"], "prompt_id": r["prompt_id"],
                                              "round_id": r["round_id"], "prompt": r["prompt"],
                                              "prompt_text": r["prompt_text"], "text": r[side]})
    return list(seen.values())


def relabel(snapshot: Snapshot, scores: Mapping[str, tuple[float, str]], labeler: str,
            soft_labels: bool = True) -> BuildResult:
    """The train pairs oriented by a judge's scores, the test split as it was.

    Args:
        scores: response id -> (score, id of the rating that holds it), for every train response.
        labeler: the judge's id, recorded in the manifest (``feedback_ids`` name its ratings).
        soft_labels: ``prob`` = sigmoid(score gap), the judge's Bradley-Terry probability (Burns et al. train on the
            weak model's soft labels); False: 1.0, and 0.5 for a tie.

    Each pair's chosen side is the higher-scored one; ``margin`` is the gap, ``source`` 'reward_model'. The notes
    hold how often the judge agrees with the parent's labels on the train split.

    Raises:
        InputError: a response without a score (an unscored pair would need a made-up label).
    """
    rows, agree, ties = [], 0, 0
    for r in snapshot.train.to_pylist():
        missing = [r[f"{s}_id"] for s in ("chosen", "rejected") if scores.get(r[f"{s}_id"], (None,))[0] is None]
        if missing:
            raise InputError(f"response {missing[0]} of prompt {r['prompt_id']} has no score from {labeler}")
        (sc, fc), (sr, fr) = scores[r["chosen_id"]], scores[r["rejected_id"]]
        gap = sc - sr
        agree, ties = agree + (gap > 0), ties + (gap == 0)
        if gap < 0:
            r |= {"chosen": r["rejected"], "rejected": r["chosen"], "chosen_id": r["rejected_id"],
                  "rejected_id": r["chosen_id"]}
            fc, fr = fr, fc
        prob = 1 / (1 + math.exp(-abs(gap))) if soft_labels else (0.5 if gap == 0 else 1.0)
        rows.append(r | {"prob": prob, "margin": abs(gap), "source": "reward_model", "feedback_ids": [fc, fr]})
    n, scored = len(rows), {r[f"{s}_id"] for r in rows for s in ("chosen", "rejected")}
    spec = DerivedSpec("pairwise", "pairwise.relabelled", {"parent": parent_ref(snapshot), "labeler": labeler,
                                                           "soft_labels": soft_labels})
    train = pa.Table.from_pylist(rows, schema=SCHEMAS["pairwise"])
    return BuildResult(spec, pa.concat_tables([train, snapshot.test]),
                       stage_counts={"parent_train": snapshot.train.num_rows, "relabelled": n},
                       source_counts={"table": "ratings", "rows": len(scored),
                                      "by_source": {"reward_model": len(scored)}},
                       notes={"parent": snapshot.manifest.id, "labeler": labeler,
                              "agreement_with_parent": agree / n if n else None, "ties": ties})
