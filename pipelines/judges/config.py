"""Judge settings (one frozen dataclass) and the items judges read (typed records, not dict rows)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from alignloop.pipelines.judges.calls import CallPolicy
from alignloop.pipelines.judges.templates import DEFAULT_PRINCIPLES
from alignloop.warehouse.errors import AlignloopError

JudgeKind = Literal["pairwise", "listwise", "rating", "binary", "steps", "correction"]
JUDGE_KINDS: tuple[str, ...] = ("pairwise", "listwise", "rating", "binary", "steps", "correction")
Mode = Literal["auto", "logprobs", "text"]
Disagreement = Literal["tie", "drop", "first"]


@dataclass(frozen=True)
class JudgeConfig:
    principles: tuple[str, ...] = DEFAULT_PRINCIPLES
    """Principle names (helpful, harmless, honest) or sentences, inserted into the template."""
    template: str | None = None
    """Template name under pipelines/templates (default: the kind's own)."""
    mode: Mode = "auto"
    """logprobs: verdict-token probabilities (pairwise, binary; a rating: the expected digit 0-9 of the
    ``rating_digit`` template); text: generate and parse; auto: logprobs where the backend has them (ratings: text),
    text otherwise."""
    tie_band: float = 0.05
    """Pairwise with log-probs: |prob_a - 0.5| <= tie_band is a tie."""
    disagreement: Disagreement = "tie"
    """Pairwise without log-probs, when the two orders disagree: tie, drop (stored as invalid), or first order."""
    max_chars: int | None = 4000
    """Clip each conversation and answer to this many characters before judging (None: no clipping)."""
    permutations: int = 3
    """Listwise: orders shown per item set (aggregated by Borda count)."""
    permutation_kind: Literal["cyclic", "random"] = "cyclic"
    seed: int = 0
    """Listwise random permutations: base seed (mixed with the item ids, so results do not depend on batching)."""
    aspects: tuple[str, ...] = ("overall",)
    """Pointwise rating: one rating per aspect (e.g. helpfulness, harmlessness, honesty); pairwise: the one aspect
    its comparisons are stored under (the principles say what the judge weighs)."""
    calls: CallPolicy = field(default_factory=CallPolicy)
    """Retries and batch size."""

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "logprobs", "text"):
            raise ValueError(f"mode must be auto, logprobs or text, got {self.mode!r}")
        if not 0 <= self.tie_band < 0.5:
            raise ValueError(f"tie_band must be in [0, 0.5), got {self.tie_band}")
        if self.disagreement not in ("tie", "drop", "first"):
            raise ValueError(f"disagreement must be tie, drop or first, got {self.disagreement!r}")
        if self.max_chars is not None and self.max_chars < 16:
            raise ValueError(f"max_chars must be >= 16 or None, got {self.max_chars}")
        if self.permutations < 1:
            raise ValueError(f"permutations must be >= 1, got {self.permutations}")
        if self.permutation_kind not in ("cyclic", "random"):
            raise ValueError(f"permutation_kind must be cyclic or random, got {self.permutation_kind!r}")
        if not self.aspects or any(not a.strip() for a in self.aspects):
            raise ValueError("aspects must be non-empty names")

    def one_aspect(self, does: str) -> str:
        """The one aspect a pairwise, listwise or correction judge stores its verdicts under; ``does`` says what it
        does (``"a listwise judge ranks by"``) in the error for more than one."""
        if len(self.aspects) != 1:
            raise AlignloopError(f"{does} one aspect per run, got {len(self.aspects)}: {', '.join(self.aspects)}")
        return self.aspects[0]


@dataclass(frozen=True, slots=True)
class ResponseItem:
    """One response with what judges and verifiers need from its prompt."""

    id: str
    prompt_id: str
    question: str
    text: str
    steps: tuple[str, ...] | None = None
    reference: str | None = None
    tags: tuple[str, ...] = ()
    topic: tuple[str, ...] = ()
    """Subject word(s) of the prompt (prompt meta "topic"/"subject" or tags "topic:WORD"), for on-topic checks."""
    messages: str | None = None
    """The prompt's chat messages as JSON (``question`` is them flattened); a reward model reads them as trained."""
    partial: bool = False
    """The response stops mid-solution (cut at the token limit, or a branch of another such as PRM800K's alternative
    steps): no final answer of its own."""

    def chat(self) -> list[dict[str, str]]:
        """The prompt as a chat: its stored messages, else the question as one user turn."""
        return json.loads(self.messages) if self.messages else [{"role": "user", "content": self.question}]


@dataclass(frozen=True, slots=True)
class PairItem:
    """Two responses to the same prompt; ``a`` is stored as response_a."""

    prompt_id: str
    question: str
    a_id: str
    a_text: str
    b_id: str
    b_text: str


@dataclass(frozen=True, slots=True)
class GroupItem:
    """k responses to the same prompt, for listwise ranking (ids sorted, so the set defines the item)."""

    prompt_id: str
    question: str
    ids: tuple[str, ...]
    texts: tuple[str, ...]
