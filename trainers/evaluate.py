"""Evaluation after training: held-out metrics of the objective and PRM step scores.

* Preference accuracy of the implicit reward, reward-model accuracy and PRM step accuracy are the objective's own
  metrics (``rewards/accuracies``, ``step_accuracy``) averaged over the test split without gradients.
* Best-of-N selection by a PRM, an ORM or majority vote is measured on the warehouse's scored samples by
  ``alignloop judge report`` (``pipelines.judges.best_of_n``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from alignloop.trainers.tokenize import IGNORE_INDEX, Encoded

Objective = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@torch.no_grad()
def evaluate_split(model: torch.nn.Module, objective: Objective, features: Sequence[Any],
                   collate: Callable[[list[Any]], dict[str, torch.Tensor]], batch_size: int = 8,
                   bf16: bool = False, on_rows: Callable[[int], None] | None = None) -> dict[str, float]:
    """Objective metrics over ``features``, each a mean weighted by batch size (``eval/`` prefix); ``on_rows`` is
    called after each batch with its number of rows (progress).

    Returns:
        e.g. ``{"eval/loss": ..., "eval/rewards/accuracies": ..., "eval/examples": n}``; empty for no features.
    """
    if not features:
        return {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, float] = defaultdict(float)
    for start in range(0, len(features), batch_size):
        chunk = list(features[start:start + batch_size])
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            _, metrics = objective(model, batch)
        for name, value in metrics.items():
            v = float(value)
            if not math.isnan(v):  # skip NaN (e.g. an empty subset)
                sums[name] += v * len(chunk)
                weights[name] += len(chunk)
        if on_rows:
            on_rows(len(chunk))
    model.train(was_training)
    out = {f"eval/{k}": sums[k] / weights[k] for k in sums}
    out["eval/examples"] = float(len(features))
    return out


@torch.no_grad()
def prm_step_probabilities(model: torch.nn.Module, encoded: Sequence[Encoded], num_classes: int,
                           pad_id: int) -> list[list[float]]:
    """P(step is good) at every labelled position (step end) of each encoded solution.

    Encode unlabelled solutions with any placeholder label (e.g. 1) so the step ends are marked. 3-class heads give
    P(good) = softmax[2] (PRM800K "positive"); binary heads softmax[1].
    """
    from alignloop.trainers.collators import pad

    model.eval()
    device = next(model.parameters()).device
    out = []
    for enc in encoded:
        batch = pad([enc], pad_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        probs = logits.logits[0].float().softmax(-1)[:, num_classes - 1]  # (T,)
        keep = batch["labels"][0] != IGNORE_INDEX
        out.append(probs[keep.to(device)].tolist())
    return out


def performance_gap_recovered(weak: float, weak_to_strong: float, ceiling: float) -> float | None:
    """Burns et al. 2023's PGR: ``(weak_to_strong - weak) / (ceiling - weak)``, the share of the gap between a weak
    supervisor and a strong model trained on ground truth that the strong model trained on the weak one's labels
    recovers (1: all of it, 0: none, below 0: worse than its supervisor). None where the ceiling does not beat the
    weak model (no gap to recover). Give the three runs' figure on the same held-out labels (e.g. reward accuracy)."""
    gap = ceiling - weak
    return None if gap <= 0 else (weak_to_strong - weak) / gap
