"""Held-out evaluation between rounds: text statistics that expose degeneration, and the stopping rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import mean


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the corpus (Li et al. 2016); low values mean repetitive text."""
    total, seen = 0, set()
    for t in texts:
        w = t.lower().split()
        grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def repetition_rate(texts: Sequence[str]) -> float:
    """Share of answers in which some word makes up more than a third of the words (at least 3 words)."""
    def repetitive(t: str) -> bool:
        w = t.lower().split()
        return len(w) >= 3 and max(w.count(x) for x in set(w)) > len(w) / 3
    return sum(map(repetitive, texts)) / len(texts) if texts else 0.0


def win_rate(mine: Sequence[float], theirs: Sequence[float]) -> float:
    """Share of paired scores where ``mine`` is higher, a tie counting half; NaN without pairs."""
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(mine, theirs, strict=True)]
    return sum(wins) / len(wins) if wins else float("nan")


def text_stats(texts: Sequence[str]) -> dict[str, float]:
    """Mean length in words, distinct-1/2 and the repetition rate of a set of answers."""
    return {
        "mean_words": mean(len(t.split()) for t in texts) if texts else 0.0,
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition": repetition_rate(texts),
        "unique_answers": len({t.strip().lower() for t in texts}) / len(texts) if texts else 0.0,
    }


@dataclass(frozen=True)
class StoppingRule:
    """When to stop iterating: improvement on held-out prompts too small or negative, or rising degeneration.

    The alignment literature names "when to stop iterating" as open; this rule is deliberately simple and
    reported with its reason every round.
    """

    metric: str = "heldout_accuracy"
    """Held-out metric to watch (higher is better)."""
    min_improvement: float = 0.02
    """Stop when a round improves the metric by less than this (absolute)."""
    max_repetition: float = 0.2
    """Stop when the share of repetitive answers exceeds this."""
    max_distinct2_drop: float = 0.25
    """Stop when distinct-2 falls by more than this fraction of the first round's value."""
    patience: int = 1
    """Rounds in a row that may fail to improve before stopping."""

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")

    def decide(self, history: Sequence[dict[str, float]]) -> tuple[bool, str]:
        """Given per-round metrics (round 0 = the initial policy), decide whether to stop and why."""
        if len(history) < 2:
            return False, "not enough rounds to compare"
        last = history[-1]
        if last.get("repetition", 0.0) > self.max_repetition:
            return True, f"degeneration: repetition {last['repetition']:.2f} > {self.max_repetition}"
        d0, d = history[0].get("distinct_2"), last.get("distinct_2")
        if d0 and d is not None and (d0 - d) / d0 > self.max_distinct2_drop:
            return True, f"degeneration: distinct-2 fell from {d0:.2f} to {d:.2f}"
        stalled = 0
        for prev, cur in zip(history[-self.patience - 1:-1], history[-self.patience:]):
            if cur[self.metric] - prev[self.metric] < self.min_improvement:
                stalled += 1
        gain = last[self.metric] - history[-2][self.metric]
        if stalled >= self.patience:
            return True, f"{self.metric} changed by {gain:+.3f} (< {self.min_improvement}) for {stalled} round(s)"
        return False, f"{self.metric} improved by {gain:+.3f}"
