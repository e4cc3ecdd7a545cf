"""Collators: typed features -> padded tensors. Pairs and lists go through the model in ONE forward pass.

Policy training on pairs uses :class:`PackedPairCollator` (prompt shared by chosen and rejected, no padding between
pairs); :class:`PairCollator` (one padded row per sequence) feeds the reward model, which reads each sequence's last
token.

Reference log-probs (precomputed, see :mod:`trainers.reference`) are looked up by row index, so a batch carries
them without a reference model in memory (a short run's lookup computes a row the first time, see
:mod:`trainers.run`). Every batch carries ``rows`` (B,) so a failing step can name its examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from alignloop.trainers.packing import pack_pairs
from alignloop.trainers.tokenize import IGNORE_INDEX, Encoded, ListFeature, PairFeature, SeqFeature, UnpairedFeature


def pad(seqs: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad sequences to the longest one.

    Returns:
        ``input_ids`` (N, T) long, ``attention_mask`` (N, T) long, ``labels`` (N, T) long with -100 on padding.
    """
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        labels[i, :n] = torch.tensor(s.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _ref(ref: np.ndarray | None, rows: list[int]) -> torch.Tensor | None:
    """(B, M) reference log-probs of the given rows, or None without a reference."""
    return None if ref is None else torch.as_tensor(ref[rows], dtype=torch.float32)


@dataclass
class PairCollator:
    """Pairs -> ``input_ids`` (2B, T): rows 0..B-1 are chosen, B..2B-1 rejected; ``ref`` (B, 2); ``margin`` and ``prob`` (B,)."""

    pad_id: int
    ref: np.ndarray | None = None

    def __call__(self, feats: list[PairFeature]) -> dict[str, torch.Tensor]:
        rows = [f.row for f in feats]
        batch = pad([f.chosen for f in feats] + [f.rejected for f in feats], self.pad_id)
        batch["rows"] = torch.tensor(rows)
        batch["margin"] = torch.tensor([f.margin for f in feats], dtype=torch.float32)
        batch["prob"] = torch.tensor([f.prob for f in feats], dtype=torch.float32)
        if (r := _ref(self.ref, rows)) is not None:
            batch["ref"] = r
        return batch


@dataclass
class PackedPairCollator:
    """Pairs -> shared-prompt packed rows (:func:`trainers.packing.pack_pairs`): each pair is one
    ``prompt | chosen | rejected`` stretch of a row, so the prompt runs once and rows carry no padding between pairs.
    Sequences keep :class:`PairCollator`'s order (chosen 0..B-1, rejected B..2B-1); ``ref`` (B, 2); ``margin`` and ``prob`` (B,)."""

    pad_id: int
    ref: np.ndarray | None = None

    def __call__(self, feats: list[PairFeature]) -> dict[str, torch.Tensor]:
        rows = [f.row for f in feats]
        batch = pack_pairs([(f.chosen.input_ids, f.chosen.labels, f.rejected.input_ids, f.rejected.labels)
                            for f in feats], self.pad_id)
        batch["rows"] = torch.tensor(rows)
        batch["margin"] = torch.tensor([f.margin for f in feats], dtype=torch.float32)
        batch["prob"] = torch.tensor([f.prob for f in feats], dtype=torch.float32)
        if (r := _ref(self.ref, rows)) is not None:
            batch["ref"] = r
        return batch


@dataclass
class UnpairedCollator:
    """Binary rows -> ``input_ids`` (2B, T): rows 0..B-1 the completions, B..2B-1 the mismatched (KL) ones;
    ``desirable`` (B,) bool; ``ref`` (B, 2) as (completion, mismatched)."""

    pad_id: int
    ref: np.ndarray | None = None

    def __call__(self, feats: list[UnpairedFeature]) -> dict[str, torch.Tensor]:
        rows = [f.row for f in feats]
        batch = pad([f.completion for f in feats] + [f.mismatched for f in feats], self.pad_id)
        batch["rows"] = torch.tensor(rows)
        batch["desirable"] = torch.tensor([f.desirable for f in feats])
        if (r := _ref(self.ref, rows)) is not None:
            batch["ref"] = r
        return batch


@dataclass
class ListCollator:
    """Lists of up to K candidates -> ``input_ids`` (B*K, T) row-major (list b's candidate k at b*K + k);
    ``scores`` (B, K), ``list_mask`` (B, K) bool; ``ref`` (B, K). Short lists are padded with a copy of their
    first candidate, masked out."""

    pad_id: int
    ref: np.ndarray | None = None

    def __call__(self, feats: list[ListFeature]) -> dict[str, torch.Tensor]:
        k = max(len(f.candidates) for f in feats)
        seqs, scores, mask = [], [], []
        for f in feats:
            n = len(f.candidates)
            seqs += f.candidates + [f.candidates[0]] * (k - n)
            scores.append(f.scores + [0.0] * (k - n))
            mask.append([True] * n + [False] * (k - n))
        batch = pad(seqs, self.pad_id)
        rows = [f.row for f in feats]
        batch["rows"] = torch.tensor(rows)
        batch["scores"] = torch.tensor(scores, dtype=torch.float32)
        batch["list_mask"] = torch.tensor(mask)
        if (r := _ref(self.ref, rows)) is not None:
            batch["ref"] = r[:, :k]
        return batch


@dataclass
class SeqCollator:
    """SFT and PRM rows -> ``input_ids`` (B, T), ``labels`` (B, T) (token ids for SFT, raw step labels for PRM)."""

    pad_id: int

    def __call__(self, feats: list[SeqFeature]) -> dict[str, torch.Tensor]:
        batch = pad([f.encoded for f in feats], self.pad_id)
        batch["rows"] = torch.tensor([f.row for f in feats])
        return batch
