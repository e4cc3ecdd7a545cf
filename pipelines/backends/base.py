"""The backend protocol shared by generation and judges.

A backend turns chat conversations into completions, and scores candidate next tokens (verdict tokens
such as "A" / "B") from log-probabilities when the engine exposes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from alignloop.warehouse.errors import OptionError

Conversation = list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}]


def continues(conversation: Conversation) -> bool:
    """Whether generation continues the conversation's last message (an assistant's, e.g. a partial solution)
    instead of opening a new assistant turn."""
    return bool(conversation) and conversation[-1].get("role") == "assistant"


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters; part of a response's identity, so keep them explicit."""

    n: int = 1
    """Samples per conversation."""
    temperature: float = 0.0
    """0 means greedy."""
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0
    """Base seed; sample i of a prompt uses a seed derived from (seed, prompt, i) so results do not depend on batching."""
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise OptionError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise OptionError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise OptionError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise OptionError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def identity(self) -> dict:
        """What defines a sample (n is not: sample i is the same whatever n is)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens,
                "stop": list(self.stop)}


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | "error"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    sample_index: int = 0
    token_ids: tuple[int, ...] | None = None
    """The sampled token ids, the end token included where the answer ended on one (None where the backend does
    not give them). Scoring these ids, not a re-tokenised ``text``, scores exactly what was sampled."""


@dataclass(frozen=True)
class TokenScores:
    """Log-probabilities of candidate next tokens for one conversation (None where the backend cannot tell)."""

    logprobs: dict[str, float | None]
    available: bool = True
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    name: str
    """Model identity as stored in the warehouse (e.g. the model folder or API model name)."""

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[list[Completion]]:
        """For each conversation, ``sampling.n`` completions in sample-index order. A conversation that ends with an
        assistant message is continued (:func:`continues`): the completion is what follows that message's text."""
        ...

    def next_token_logprobs(self, conversations: list[Conversation], candidates: list[str]) -> list[TokenScores]:
        """Log-probability of each candidate as the first token of the assistant's reply."""
        ...
