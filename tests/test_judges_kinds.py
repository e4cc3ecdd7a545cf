"""Listwise (permutations, Borda), rating, binary, step and correction judges with a deterministic fake backend."""

from __future__ import annotations

import json
import re

import pytest

from alignloop.pipelines.judges.calls import CallPolicy
from alignloop.pipelines.judges.config import JudgeConfig, ResponseItem
from alignloop.pipelines.judges.listwise import borda, permutations
from alignloop.pipelines.judges.parsing import read, read_steps
from alignloop.pipelines.judges.run import JudgeRequest, build_judge, execute, make_judge, select_items, store
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_judges import *
from tests.fixtures_judges import FakeBackend, answer, quality

FAST = CallPolicy(retries=1, retry_delay_s=0.0, batch_size=8)


def test_borda_exact():
    order, points = borda([[0, 1, 2], [1, 0, 2], [1, 2, 0]], 3)
    assert order == [1, 0, 2] and points == [5.0, 3.0, 1.0]
    assert borda([[0, 1], [1, 0]], 2) == ([0, 1], [1.0, 1.0])  # tie keeps the lower index first


def test_permutations_cyclic_and_random():
    assert permutations(4, 2, "cyclic") == [[0, 1, 2, 3], [2, 3, 0, 1]]
    assert permutations(3, 3, "cyclic") == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    r1, r2 = permutations(5, 3, "random", seed=7), permutations(5, 3, "random", seed=7)
    assert r1 == r2 and r1[0] == [0, 1, 2, 3, 4] and all(sorted(p) == list(range(5)) for p in r1)


def test_parse_ranking_and_rating_and_steps():
    assert read("listwise", "C > A > B", ["A", "B", "C"]).verdict == [2, 0, 1]
    assert read("listwise", "C > A", ["A", "B", "C"]).verdict == [2, 0, 1]  # the last one may be left out
    assert read("listwise", "C > D > A", ["A", "B", "C"]).verdict is None
    assert read("listwise", "A", ["A", "B", "C"]).verdict is None
    assert [read("rating", t).verdict for t in ("7", "Rating: 8/10", "11", "3 or 4")] == [7.0, 8.0, None, None]
    assert read_steps("Step 1: +1\nStep 2: -1", 3).labels == [1, -1, None]
    assert read_steps("Step 1: +1\nStep 2: -1\nStep 9: 0", 3).labels == [None] * 3  # no step 9: misaligned


def test_ratings_are_read_on_their_templates_scale_and_keep_why_not():
    items = [ResponseItem("r", "p", "Question?", "An answer.")]
    signless = make_judge("rating", FakeBackend(reply=lambda c: "-3"), JudgeConfig(mode="text", calls=FAST))
    (row,) = signless.judge_items(items, "r1")
    assert row.score is None and row.meta["invalid_reason"] == "-3 is outside 1..10 (line 1)"  # not 3: the sign
    digit = make_judge("rating", FakeBackend(reply=lambda c: "0"), JudgeConfig(mode="text", template="rating_digit",
                                                                               calls=FAST))
    (row,) = digit.judge_items(items, "r1")
    assert (row.score, row.scale_min, row.scale_max, row.meta["invalid_reason"]) == (0.0, 0.0, 9.0, None)
    (row,) = make_judge("binary", FakeBackend(reply=lambda c: "No problems, the answer is correct.", logprobs=False),
                        JudgeConfig(calls=FAST)).judge_items(items, "r1")
    assert row.score is None and row.meta["invalid_reason"].startswith("no verdict: the template asks for Yes or No")
    with pytest.raises(AlignloopError, match="a binary judge cannot read replies to template 'rating'"):
        make_judge("binary", FakeBackend(), JudgeConfig(template="rating"))


def test_steps_labelled_twice_are_stored_unlabelled_with_the_reason():
    judge = make_judge("steps", FakeBackend(reply=lambda c: "Step 1: 1\nStep 1: -1"), JudgeConfig(calls=FAST))
    items = [ResponseItem("r", "p", "Question?", "First step.\nSecond step.")]
    rows = judge.judge_items(items, "r1")
    assert [r.label for r in rows] == [None, None] and all(r.flagged for r in rows)
    assert {r.meta["invalid_reason"] for r in rows} == {"step 1 labelled twice (line 2)"}


def rank_by_quality(content: str) -> str:
    labels = [lab for lab in "ABCDEFGH" if answer(content, lab) is not None]
    return " > ".join(sorted(labels, key=lambda lab: -quality(answer(content, lab))))


def test_listwise_judge_borda_over_permutations(seeded):
    backend = FakeBackend(reply=rank_by_quality)
    judge = make_judge("listwise", backend, JudgeConfig(permutations=3, calls=FAST))
    items, _ = select_items(seeded, JudgeRequest("listwise", "r1", group_size=3), judge)
    out = execute(judge, "listwise", items, "r1")
    store(seeded, out)
    rows = seeded.execute("SELECT response_ids, scores, permutations FROM rankings").fetchall()
    assert len(rows) == 3 and backend.generate_calls == 9
    texts = dict(seeded.execute("SELECT id, text FROM responses").fetchall())
    for ids, scores, perms in rows:
        assert [quality(texts[i]) for i in ids] == sorted((quality(texts[i]) for i in ids), reverse=True)
        assert scores == [6.0, 3.0, 0.0]
        assert perms is not None and len(json.loads(perms)) == 3
    # the same judge asked for harmlessness ranks the same groups again, stored under that aspect with their own ids
    harmless = make_judge("listwise", backend, JudgeConfig(permutations=3, calls=FAST, aspects=("harmlessness",)))
    items, _ = select_items(seeded, JudgeRequest("listwise", "r1", group_size=3), harmless)
    assert len(items) == 3 and harmless.judge == judge.judge
    store(seeded, execute(harmless, "listwise", items, "r1"))
    by_aspect = seeded.execute("SELECT aspect, count(DISTINCT id) FROM rankings GROUP BY aspect ORDER BY 1").fetchall()
    assert by_aspect == [("harmlessness", 3), ("overall", 3)]
    with pytest.raises(Exception, match="a listwise judge ranks by one aspect per run, got 2"):
        make_judge("listwise", backend, JudgeConfig(aspects=("a", "b")))


def test_rating_per_aspect_and_invalid(seeded):
    backend = FakeBackend(reply=lambda c: "7" if "helpfulness" in c else "no idea")
    judge = make_judge("rating", backend, JudgeConfig(aspects=("helpfulness", "honesty"), calls=FAST))
    items, _ = select_items(seeded, JudgeRequest("rating", "r1"), judge)
    out = execute(judge, "rating", items, "r1")
    assert out.invalid == 9
    store(seeded, out)
    got = dict(seeded.execute("SELECT aspect, max(score) FROM ratings GROUP BY aspect").fetchall())
    assert got == {"helpfulness": 7.0, "honesty": None}
    assert seeded.execute("SELECT count(*) FROM ratings WHERE rationale = 'no idea'").fetchone()[0] == 9


def test_rating_by_log_probs_is_the_expected_digit(seeded):
    """Direct RLAIF's scoring: the rating_digit template (0-9, one token each), no text generated, the score the
    expected digit under the judge's probabilities renormalised over the ten digits; scale 0..9."""
    import math

    from alignloop.pipelines.judges.pointwise import expected_digit

    def digits(content: str) -> dict[str, float]:  # 3x the weight on 7 (an answer with "good") or on 2 (without)
        rated = re.search(r"\[\[\[BEGIN ANSWER\]\]\]\n(.*?)\n\[\[\[END ANSWER\]\]\]", content, re.DOTALL).group(1)
        top = "7" if "good" in rated else "2"
        return {str(d): math.log(3.0 if str(d) == top else 1.0) - 5.0 for d in range(10)}

    backend = FakeBackend(scores=digits)
    judge = make_judge("rating", backend, JudgeConfig(mode="logprobs", calls=FAST))
    items, _ = select_items(seeded, JudgeRequest("rating", "r1"), judge)
    rows = judge.judge_items(items, "r1")
    assert backend.generate_calls == 0 and judge.template.name == "rating_digit"
    shown = [b for batch in backend.batches for b in batch]
    assert shown and all("from 0 (worst) to 9 (best). Reply with the digit only." in b for b in shown)
    text = {it.id: it.text for it in items}
    assert len(rows) == len(items) and {"good" in t for t in text.values()} == {True, False}
    for r in rows:  # (45 + 2 x top) / 12: weight 1 on each digit, 3 on the top one
        top = 7 if "good" in text[r.response_id] else 2
        assert r.score == pytest.approx((45 + 2 * top) / 12) and (r.scale_min, r.scale_max) == (0.0, 9.0)
        assert r.meta["mode"] == "logprobs" and r.meta["mass"] == pytest.approx(12 * math.exp(-5.0))
    from alignloop.pipelines.backends.base import TokenScores

    assert expected_digit(TokenScores({str(d): None for d in range(10)}, available=False)) is None
    assert expected_digit(TokenScores({**{str(d): -math.inf for d in range(10)}})) is None
    # an endpoint's top log-probabilities leave out unlikely digits: they weigh nothing, the rest still count
    top_k = TokenScores({**{str(d): None for d in range(10)}, "6": math.log(0.75), "9": math.log(0.25)})
    assert expected_digit(top_k) == pytest.approx(6.75)
    text = make_judge("rating", FakeBackend(reply=lambda c: "8"), JudgeConfig(calls=FAST))  # text mode unchanged
    assert text.template.name == "rating" and {r.score for r in text.judge_items(items, "r1")} == {8.0}


def test_binary_logprobs_and_text(seeded):
    def verdict(content: str) -> str:
        return "Yes" if "good" in (answer(content, "") or re.search(r"ANSWER\]\]\]\n(.*?)\n", content).group(1)) \
            else "No"

    judge = make_judge("binary", FakeBackend(reply=verdict), JudgeConfig(calls=FAST))
    items, _ = select_items(seeded, JudgeRequest("binary", "r1"), judge)
    rows = judge.judge_items(items, "r1")
    assert [r.score for r in rows] == [float("good" in it.text) for it in items]
    assert all(r.meta["mode"] == "logprobs" and r.meta["p_yes"] in (pytest.approx(0.8), pytest.approx(0.2))
               for r in rows)
    text_rows = make_judge("binary", FakeBackend(reply=verdict, logprobs=False),
                           JudgeConfig(calls=FAST)).judge_items(items, "r1")
    assert [r.score for r in text_rows] == [r.score for r in rows]


def test_step_labels(seeded):
    backend = FakeBackend(reply=lambda c: "Step 1: +1\nStep 2: -1")
    judge = make_judge("steps", backend, JudgeConfig(calls=FAST))
    items, _ = select_items(seeded, JudgeRequest("steps", "r1", limit=1), judge)
    items = [type(items[0])(**{**{s: getattr(items[0], s) for s in items[0].__slots__},
                               "steps": ("x = 2", "so y = 5", "done")})]
    rows = judge.judge_items(items, "r1")
    assert [r.label for r in rows] == [1, -1, None]
    assert [r.flagged for r in rows] == [False, False, True]
    assert {r.finish_reason for r in rows} == {"found_error"}


def test_step_labels_of_responses_stored_without_steps_build_a_step_dataset(con):
    from alignloop.pipelines.datasets.build import build
    from alignloop.pipelines.datasets.config import parse_options
    from alignloop.warehouse.records import Prompt, Response

    db.ensure_round(con, "r1")
    p = Prompt.create([{"role": "user", "content": "What is 2 + 3?"}], "test")
    lines = Response.sampled(p.id, "m", "r1", "2 + 3 = 5\nSo the answer is 5.", {}, 0, 0)
    stored = Response.sampled(p.id, "m", "r1", "five", {}, 0, 1, steps=["2 and 3", "make five"])
    db.ingest(con, "prompts", [p])
    db.ingest(con, "responses", [lines, stored])
    judge = make_judge("steps", FakeBackend(reply=lambda c: "Step 1: +1\nStep 2: -1"), JudgeConfig(calls=FAST))
    items, _ = select_items(con, JudgeRequest("steps", "r1"), judge)
    assert store(con, execute(judge, "steps", items, "r1")) == {"step_labels": 4}
    # the split the labels index is kept with the response that had none; stored steps stay as they were
    assert dict(con.execute("SELECT id, steps FROM responses").fetchall()) == {
        lines.id: ["2 + 3 = 5", "So the answer is 5."], stored.id: ["2 and 3", "make five"]}
    t = build(con, parse_options("steps", {"decontaminate": False, "sources": "ai"})).table
    assert sorted(zip(t["completion_id"].to_pylist(), t["steps"].to_pylist(), t["labels"].to_pylist())) == sorted(
        [(lines.id, ["2 + 3 = 5", "So the answer is 5."], [1, -1]), (stored.id, ["2 and 3", "make five"], [1, -1])])
    assert select_items(con, JudgeRequest("steps", "r1"), judge) == ([], 2)


def test_correction_makes_aligner_response(seeded):
    backend = FakeBackend(reply=lambda c: "A corrected, polite answer.")
    judge = make_judge("correction", backend, JudgeConfig(calls=FAST))
    items, _ = select_items(seeded, JudgeRequest("correction", "r1", limit=2), judge)
    assert store(seeded, execute(judge, "correction", items, "r1")) == {"responses": 2, "corrections": 2}
    rows = seeded.execute(
        "SELECT r.origin, r.parent_id, c.original_id, c.corrected_id = r.id FROM corrections c "
        "JOIN responses r ON r.id = c.corrected_id").fetchall()
    assert {(o, p == orig, same) for o, p, orig, same in rows} == {("aligner", True, True)}
    # corrections are not corrected again, and the two done are cached
    again, cached = select_items(seeded, JudgeRequest("correction", "r1"), judge)
    assert cached == 2 and len(again) == 7
    # the same judge correcting for harmlessness: corrections of their own, stored under that aspect
    harmless = make_judge("correction", backend, JudgeConfig(calls=FAST, aspects=("harmlessness",)))
    items, cached = select_items(seeded, JudgeRequest("correction", "r1", limit=2), harmless)
    assert cached == 0 and len(items) == 2
    store(seeded, execute(harmless, "correction", items, "r1"))
    assert seeded.execute("SELECT aspect, count(*) FROM corrections GROUP BY 1 ORDER BY 1").fetchall() == [
        ("harmlessness", 2), ("overall", 2)]


def test_verifier_judge_writes_rule_ratings(seeded):
    judge = build_judge("binary", "verifier:short_on_topic:8")
    items, _ = select_items(seeded, JudgeRequest("binary", "r1"), judge)
    store(seeded, execute(judge, "binary", items, "r1"))
    src, judge_id, n = seeded.execute("SELECT source, judge, count(*) FROM ratings GROUP BY ALL").fetchone()
    assert src == "rule" and judge_id.startswith("short_on_topic_8@") and n == 9
    assert select_items(seeded, JudgeRequest("binary", "r1"), judge)[1] == 9
