"""Counters a backend keeps across calls, so stages can report truncated/skipped prompts and token totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class GenerationStats:
    """Running totals for one backend instance (reset by the caller when it wants per-shard numbers)."""

    prompts: int = 0
    """Conversations received."""
    truncated: int = 0
    """Prompts longer than the prompt limit that kept only their last tokens."""
    skipped: int = 0
    """Prompts longer than the prompt limit that got no completion (finish_reason "skipped")."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    """Generated tokens (all samples)."""

    def snapshot(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        self.prompts = self.truncated = self.skipped = self.prompt_tokens = self.completion_tokens = 0
