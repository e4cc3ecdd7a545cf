"""Composite verifiers (all checks must pass), verifier ratings (ORM outcome labels) and best-of-N ranking."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import ClassVar

from alignloop.pipelines.judges.config import ResponseItem
from alignloop.pipelines.verifiers.checks import (
    CheckResult,
    FinalAnswer,
    JsonValid,
    MaxWords,
    MinOtherWords,
    MinWords,
    NoRepetition,
    OnTopic,
    _Check,
)
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.ids import content_id
from alignloop.warehouse.records import Rating


@dataclass(frozen=True)
class CompositeVerifier(_Check):
    """Passes when every check passes; the result keeps each check's own result in ``parts``."""

    name: ClassVar[str] = "composite"
    checks: tuple = ()
    label: str = "composite"
    """Name used in the judge id (``label@version``)."""

    def __post_init__(self) -> None:
        if not self.checks:
            raise ValueError("a composite verifier needs at least one check")

    @property
    def version(self) -> str:
        spec = [{"name": c.name, "version": c.version} for c in self.checks]
        return content_id("verifier", {"label": self.label, "checks": spec})[:8]

    @property
    def judge(self) -> str:
        return f"{self.label}@{self.version}"

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        return any(c.needs_reference for c in self.checks)

    def check(self, item: ResponseItem) -> CheckResult:
        parts = tuple(c.check(item) for c in self.checks)
        failed = [p.name for p in parts if not p.passed]
        return CheckResult(self.label, not failed, f"failed {failed}" if failed else "all passed", parts)


def short_on_topic(max_words: int = 6, min_words: int = 3, min_other_words: int = 2) -> CompositeVerifier:
    """"Answer in at most N words" that cannot be gamed by two-word nonsense or by echoing the topic word:
    at most ``max_words``, at least ``min_words``, names the prompt's topic, at least ``min_other_words`` words
    besides the topic, and no content word twice."""
    return CompositeVerifier(checks=(MaxWords(max_words), MinWords(min_words), OnTopic(),
                                     MinOtherWords(min_other_words), NoRepetition(n=1, min_distinct=0.0,
                                                                                  max_repeats=1)),
                             label=f"short_on_topic_{max_words}")


def get_verifier(name: str) -> _Check:
    """A verifier by name: ``final_answer``, ``json_valid``, ``no_repetition``, ``short_on_topic[:N]``."""
    base, _, arg = name.partition(":")
    if base == "final_answer":
        return FinalAnswer()
    if base == "json_valid":
        return JsonValid()
    if base == "no_repetition":
        return NoRepetition()
    if base == "short_on_topic":
        try:
            return short_on_topic(int(arg)) if arg else short_on_topic()
        except ValueError:
            raise AlignloopError(f"short_on_topic takes a word limit, e.g. short_on_topic:6, got {name!r}") from None
    raise AlignloopError(f"unknown verifier {name!r}; known: final_answer, json_valid, no_repetition, "
                         "short_on_topic[:N]")


def rate(verifier: _Check, items: list[ResponseItem], round_id: str) -> list[Rating]:
    """One binary rating per response (score 1.0 pass / 0.0 fail, source 'rule'): ORM outcome labels."""
    out = []
    for it in items:
        res = verifier.check(it)
        out.append(Rating(rating_id(verifier, it.id), it.prompt_id, it.id, float(res.passed), 0.0, 1.0,
                          verifier.judge, "rule", round_id, aspect=verifier_aspect(verifier), rationale=res.detail,
                          meta={"checks": res.as_dict()}))
    return out


def verifier_aspect(verifier: _Check) -> str:
    return getattr(verifier, "label", verifier.name)


def rating_id(verifier: _Check, response_id: str) -> str:
    return Rating.make_id(verifier.judge, response_id, verifier_aspect(verifier), kind="verifier")


def rank_samples(ratings: list[Rating]) -> dict[str, list[str]]:
    """Per prompt, response ids best first by score (passes first); ties keep the input order."""
    by_prompt: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        by_prompt[r.prompt_id].append(r)
    return {p: [r.response_id for r in sorted(rs, key=lambda r: -(r.score if r.score is not None else -1e9))]
            for p, rs in by_prompt.items()}
