"""What a parser makes of one input record, before ids are assigned."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignloop.warehouse.records import Message, Origin


class Rejected(Exception):
    """A well-formed record that cannot become training data (reported in the summary, not an error)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    key: str
    """Local name inside the record (``chosen``, ``rejected``, ``answer``, ...)."""
    text: str
    origin: Origin = "import"
    steps: list[str] | None = None
    finish_reason: str | None = None
    parent: str | None = None
    """Local key of the response this one corrects or continues."""
    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ParsedStepLabel:
    response: str
    index: int
    label: int
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class ParsedRating:
    response: str
    """Local key of the rated response."""
    score: float
    scale_min: float
    scale_max: float
    aspect: str = "overall"
    rationale: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedItem:
    line: int
    messages: list[Message]
    reference: str | None = None
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] | None = None
    split: str | None = None
    responses: tuple[ParsedResponse, ...] = ()
    comparisons: tuple[tuple[str, ...], ...] = ()
    """(response a, response b, winner in a | b | tie[, aspect]), local keys; without an aspect, the import's
    (``--aspect``, default overall)."""
    prob_a: float | None = None
    """The record's probability that each comparison's response a is the better (a soft label); None: from the
    winner (1, 0 or 0.5)."""
    step_labels: tuple[ParsedStepLabel, ...] = ()
    step_finish_reason: str | None = None
    corrections: tuple[tuple[str, str], ...] = ()
    """(original, corrected), local keys."""
    ratings: tuple[ParsedRating, ...] = ()
    ranking: tuple[str, ...] = ()
    """One ranking of responses, best first, local keys (empty: none)."""
    judge: str | None = None
    """Who gave the feedback: an annotator or labeler id; defaults to the dataset."""
