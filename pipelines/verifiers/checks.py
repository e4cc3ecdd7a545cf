"""Rule checks on one response: final answer, length, required/forbidden words, JSON, repetition, topic.

Each check is a frozen dataclass with a ``name`` and ``check(item) -> CheckResult``; its version is a short
hash of its parameters (and CHECKS_VERSION, bumped when a check's logic changes).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import ClassVar

from alignloop.pipelines.judges.config import ResponseItem
from alignloop.pipelines.verifiers.answers import equivalent, extract_answer, extract_reference
from alignloop.warehouse.ids import content_id

CHECKS_VERSION = 1
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
STOPWORDS = frozenset(
    ["a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these", "those", "i", "you", "he", "she", "we", "they", "them", "his", "her", "our", "your", "their", "my", "me", "us", "do", "does", "did", "not", "no", "so", "very", "can", "will", "would", "should", "could", "may", "might", "must", "have", "has", "had", "just", "also", "than", "then", "there", "here", "what", "why", "how", "who", "which", "when"]
)


def words(text: str) -> list[str]:
    return _WORD.findall(text or "")


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str = ""
    parts: tuple[CheckResult, ...] = ()
    """Per-check results of a composite."""

    def as_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "detail": self.detail,
                "parts": [p.as_dict() for p in self.parts]}


class _Check:
    name: ClassVar[str] = "check"
    needs_reference: ClassVar[bool] = False
    """Whether the check compares with the prompt's reference answer (it fails every prompt without one)."""

    @property
    def version(self) -> str:
        return content_id("verifier", {"name": self.name, "v": CHECKS_VERSION, "params": asdict(self)})[:8]

    @property
    def judge(self) -> str:
        """The judge id stored with this check's ratings: ``name@version``."""
        return f"{self.name}@{self.version}"

    def _result(self, passed: bool, detail: str) -> CheckResult:
        return CheckResult(self.name, bool(passed), detail)


@dataclass(frozen=True)
class FinalAnswer(_Check):
    """The response's final answer matches the prompt's reference (numerically or symbolically)."""

    name: ClassVar[str] = "final_answer"
    needs_reference: ClassVar[bool] = True
    timeout_s: float = 2.0

    def check(self, item: ResponseItem) -> CheckResult:
        if not item.reference:
            return self._result(False, "prompt has no reference answer")
        got, want = extract_answer(item.text), extract_reference(item.reference)
        return self._result(equivalent(got, want, self.timeout_s), f"got {got!r}, want {want!r}")


@dataclass(frozen=True)
class MaxWords(_Check):
    name: ClassVar[str] = "max_words"
    limit: int = 50

    def check(self, item: ResponseItem) -> CheckResult:
        n = len(words(item.text))
        return self._result(n <= self.limit, f"{n} words (max {self.limit})")


@dataclass(frozen=True)
class MinWords(_Check):
    name: ClassVar[str] = "min_words"
    limit: int = 3

    def check(self, item: ResponseItem) -> CheckResult:
        n = len(words(item.text))
        return self._result(n >= self.limit, f"{n} words (min {self.limit})")


@dataclass(frozen=True)
class RequiredWords(_Check):
    name: ClassVar[str] = "required_words"
    words: tuple[str, ...] = ()

    def check(self, item: ResponseItem) -> CheckResult:
        have = {w.lower() for w in words(item.text)}
        missing = [w for w in self.words if w.lower() not in have]
        return self._result(not missing, f"missing {missing}" if missing else "all present")


@dataclass(frozen=True)
class ForbiddenWords(_Check):
    name: ClassVar[str] = "forbidden_words"
    words: tuple[str, ...] = ()

    def check(self, item: ResponseItem) -> CheckResult:
        have = {w.lower() for w in words(item.text)}
        found = [w for w in self.words if w.lower() in have]
        return self._result(not found, f"found {found}" if found else "none found")


@dataclass(frozen=True)
class JsonValid(_Check):
    """The response (optionally inside one ```json fence) parses as JSON."""

    name: ClassVar[str] = "json_valid"

    def check(self, item: ResponseItem) -> CheckResult:
        text = item.text.strip()
        m = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
        try:
            json.loads(m.group(1) if m else text)
        except ValueError as exc:
            return self._result(False, f"not JSON: {exc}")
        return self._result(True, "valid JSON")


@dataclass(frozen=True)
class NoRepetition(_Check):
    """distinct-n (unique n-grams / n-grams) at least ``min_distinct``, and no content word (not a stopword)
    more than ``max_repeats`` times."""

    name: ClassVar[str] = "no_repetition"
    n: int = 2
    min_distinct: float = 0.9
    max_repeats: int | None = None

    def check(self, item: ResponseItem) -> CheckResult:
        ws = [w.lower() for w in words(item.text)]
        grams = [tuple(ws[i:i + self.n]) for i in range(len(ws) - self.n + 1)]
        distinct = len(set(grams)) / len(grams) if grams else 1.0
        if distinct < self.min_distinct:
            return self._result(False, f"distinct-{self.n} {distinct:.2f} < {self.min_distinct}")
        if self.max_repeats is not None:
            counts: dict[str, int] = {}
            for w in ws:
                if w not in STOPWORDS:
                    counts[w] = counts.get(w, 0) + 1
            over = sorted(w for w, c in counts.items() if c > self.max_repeats)
            if over:
                return self._result(False, f"repeated {over}")
        return self._result(True, f"distinct-{self.n} {distinct:.2f}")


def _stem(word: str) -> str:
    w = word.lower()
    for suffix in ("ies", "es", "s"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return w


def _mentions(ws: list[str], stem: str) -> bool:
    return any(w == stem or (w.startswith(stem.removesuffix("y")) and len(w) <= len(stem) + 3)
               for w in ws)


@dataclass(frozen=True)
class OnTopic(_Check):
    """Names the prompt's subject: some topic phrase (ResponseItem.topic; alternatives) has all its words in the
    response, allowing plural and simple inflections ("computer" matches "computers")."""

    name: ClassVar[str] = "on_topic"

    def check(self, item: ResponseItem) -> CheckResult:
        if not item.topic:
            return self._result(False, "prompt has no topic (set prompt meta 'topic' or a 'topic:WORD' tag)")
        ws = [w.lower() for w in words(item.text)]
        for phrase in item.topic:
            stems = [_stem(w) for w in words(phrase)]
            if stems and all(_mentions(ws, s) for s in stems):
                return self._result(True, f"names {phrase!r}")
        return self._result(False, f"names none of {list(item.topic)}")


def topic_words(item: ResponseItem) -> set[str]:
    """Lower-cased stems of all topic words (so length checks can leave them out)."""
    return {_stem(w) for phrase in item.topic for w in words(phrase)}


@dataclass(frozen=True)
class MinOtherWords(_Check):
    """At least ``limit`` words that are not the topic words themselves (echoing the topic is not an answer)."""

    name: ClassVar[str] = "min_other_words"
    limit: int = 2

    def check(self, item: ResponseItem) -> CheckResult:
        topic = topic_words(item)
        other = [w for w in words(item.text) if _stem(w) not in topic]
        return self._result(len(other) >= self.limit, f"{len(other)} words besides the topic (min {self.limit})")
