"""Rule verifiers: final answers (boxed, ####, fractions, symbolic), format checks, and the short-answer composite
that two-word nonsense and topic echoes cannot game."""

from __future__ import annotations

import pytest

from alignloop.pipelines.judges.config import ResponseItem
from alignloop.pipelines.verifiers import (
    FinalAnswer,
    ForbiddenWords,
    JsonValid,
    MaxWords,
    NoRepetition,
    RequiredWords,
    equivalent,
    extract_answer,
    get_verifier,
    rank_samples,
    rate,
    short_on_topic,
)


def item(text: str, reference: str | None = None, topic: tuple[str, ...] = (), rid: str = "r", pid: str = "p"):
    return ResponseItem(rid, pid, "question", text, reference=reference, topic=topic)


@pytest.mark.parametrize("text, want", [
    ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("nested \\boxed{\\frac{a}{\\sqrt{2}}} end", "\\frac{a}{\\sqrt{2}}"),
    ("work...\n#### 1,234", "1,234"),
    ("3 apples and then 7 pears", "7"),
    ("no numbers here", None),
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize("response, reference, ok", [
    ("\\boxed{0.5}", "1/2", True),
    ("\\boxed{\\frac{1}{2}}", "0.5", True),
    ("#### 42", "42", True),
    ("The total is 1,000 dollars", "1000", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
    ("\\boxed{(x+1)^2}", "x^2+2x+1", True),
    ("\\boxed{\\dfrac{3}{4}}", "#### 0.75", True),
    ("I think it is 41", "42", False),
    ("\\boxed{x^2}", "x^3", False),
    ("\\boxed{__import__('os')}", "1", False),
    ("no answer", "42", False),
])
def test_final_answer(response, reference, ok):
    assert FinalAnswer().check(item(response, reference)).passed is ok


def test_equivalent_guards():
    assert not equivalent(None, "1") and not equivalent("", "1")
    assert not equivalent("x" * 500, "x" * 500 + "1")  # too long for sympy: not shown equal, no hang


def test_format_checks():
    assert MaxWords(3).check(item("one two three")).passed and not MaxWords(2).check(item("one two three")).passed
    assert RequiredWords(("Paris",)).check(item("It is paris.")).passed
    assert not ForbiddenWords(("sorry",)).check(item("Sorry, no.")).passed
    assert JsonValid().check(item('```json\n{"a": 1}\n```')).passed and not JsonValid().check(item("{a: 1}")).passed
    assert not NoRepetition(n=2, min_distinct=0.9).check(item("go go go go go go")).passed
    assert NoRepetition(n=2, min_distinct=0.9).check(item("a quick brown fox jumps")).passed


TOPIC = ("computers",)


@pytest.mark.parametrize("text, ok, failed", [
    ("Lemon bars", False, {"min_words", "on_topic"}),
    ("computers", False, {"min_words", "min_other_words"}),
    ("Computers computers computers", False, {"min_other_words", "no_repetition"}),
    ("computers computers are computers", False, {"min_other_words", "no_repetition"}),
    ("Lemon bars taste great", False, {"on_topic"}),
    ("Computers make work and play much easier for everyone today", False, {"max_words"}),
    ("Computers make work and play easier.", True, set()),
    ("People like their computer for games.", True, set()),
])
def test_short_on_topic_composite_resists_gaming(text, ok, failed):
    res = short_on_topic(max_words=8).check(item(text, topic=TOPIC))
    assert res.passed is ok
    assert {p.name for p in res.parts if not p.passed} == failed
    assert len(res.parts) == 5


def test_no_topic_fails_with_a_reason():
    res = short_on_topic().check(item("Computers are handy tools."))
    assert not res.passed and "no topic" in next(p.detail for p in res.parts if p.name == "on_topic")


def test_ratings_and_ranking():
    v = get_verifier("short_on_topic:8")
    items = [item("Lemon bars", topic=TOPIC, rid="r1"), item("Computers make work easier.", topic=TOPIC, rid="r2")]
    rows = rate(v, items, "r1")
    assert [r.score for r in rows] == [0.0, 1.0]
    assert {r.source for r in rows} == {"rule"} and rows[0].judge == v.judge and (rows[0].scale_min,
                                                                                  rows[0].scale_max) == (0.0, 1.0)
    assert rows[0].meta["checks"]["parts"][0]["name"] == "max_words"
    assert rank_samples(rows) == {"p": ["r2", "r1"]}
    assert get_verifier("short_on_topic:8").judge == v.judge != get_verifier("short_on_topic:6").judge
