"""Calling a judge backend: retries with the cause kept, and the cost (calls, tokens, seconds) counted."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from alignloop.pipelines.backends.base import Backend, Completion, Conversation, Sampling, TokenScores
from alignloop.warehouse.errors import AlignloopError

T = TypeVar("T")
VERDICT_SAMPLING = Sampling(n=1, temperature=0.0, max_new_tokens=16)
"""Greedy, short: a verdict is a letter or a word."""


class JudgeBackendError(AlignloopError):
    """The judge backend kept failing; the message names the backend, the attempts and the last cause."""


@dataclass(frozen=True)
class CallPolicy:
    retries: int = 3
    """Attempts per batch before giving up (1 = no retry)."""
    retry_delay_s: float = 2.0
    """Delay before the second attempt; doubles after each failure."""
    batch_size: int = 16
    """Conversations per backend call (both orders of a pair always travel in the same call)."""

    def __post_init__(self) -> None:
        if self.retries < 1:
            raise ValueError(f"retries must be >= 1, got {self.retries}")
        if self.retry_delay_s < 0:
            raise ValueError(f"retry_delay_s must be >= 0, got {self.retry_delay_s}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (a pair in both orders), got {self.batch_size}")


@dataclass
class CallStats:
    """Cost of the backend calls for one batch; divided among the judgments it produced."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_chars: int = 0
    seconds: float = 0.0

    def share(self, n: int) -> dict[str, float]:
        """This batch's cost per judgment (for ``meta``)."""
        n = max(n, 1)
        return {"calls": self.calls / n, "prompt_tokens": self.prompt_tokens / n,
                "completion_tokens": self.completion_tokens / n, "prompt_chars": self.prompt_chars / n,
                "seconds": round(self.seconds / n, 6)}


def _retry(backend: Backend, what: str, fn: Callable[[], T], policy: CallPolicy) -> T:
    delay = policy.retry_delay_s
    for attempt in range(1, policy.retries + 1):
        try:
            return fn()
        except AlignloopError:
            raise
        except Exception as exc:  # any engine or network failure: retry, then fail naming the cause
            if attempt == policy.retries:
                raise JudgeBackendError(
                    f"judge backend {getattr(backend, 'name', '?')!r} failed {what} after {attempt} attempt(s): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def generate(backend: Backend, convs: list[Conversation], policy: CallPolicy, stats: CallStats,
             sampling: Sampling = VERDICT_SAMPLING) -> list[Completion]:
    """First completion per conversation; counts one call per conversation."""
    return [c[0] for c in samples(backend, convs, policy, stats, sampling)]


def samples(backend: Backend, convs: list[Conversation], policy: CallPolicy, stats: CallStats,
            sampling: Sampling) -> list[list[Completion]]:
    """``sampling.n`` completions per conversation; counts one call per conversation, and the prompt once."""
    t0 = time.perf_counter()
    out = _retry(backend, "to generate", lambda: backend.generate(convs, sampling), policy)
    stats.seconds += time.perf_counter() - t0
    stats.calls += len(convs)
    stats.prompt_chars += sum(len(m["content"]) for c in convs for m in c)
    stats.prompt_tokens += sum(c[0].prompt_tokens or 0 for c in out if c)
    stats.completion_tokens += sum(s.completion_tokens or 0 for c in out for s in c)
    return out


def logprobs(backend: Backend, convs: list[Conversation], candidates: list[str], policy: CallPolicy,
             stats: CallStats) -> list[TokenScores]:
    t0 = time.perf_counter()
    out = _retry(backend, "to score verdict tokens", lambda: backend.next_token_logprobs(convs, candidates), policy)
    stats.seconds += time.perf_counter() - t0
    stats.calls += len(convs)
    stats.prompt_chars += sum(len(m["content"]) for c in convs for m in c)
    stats.prompt_tokens += int(sum(s.extra.get("prompt_tokens", 0) for s in out))
    return out


def chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
