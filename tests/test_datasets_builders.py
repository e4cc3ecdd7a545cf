"""Each dataset builder on a small hand-made warehouse, with exact expected rows."""

from __future__ import annotations

import json

import pytest

from alignloop.pipelines.datasets.build import build
from alignloop.pipelines.datasets.config import parse_options
from alignloop.pipelines.datasets.stages import EmptyDataset
from alignloop.warehouse.errors import InputError
from alignloop.warehouse.snapshots import SCHEMAS
from tests.fixtures_datasets import *
from tests.fixtures_datasets import Wh


def run(wh: Wh, kind: str, **opts):
    opts.setdefault("decontaminate", False)
    return build(wh.con, parse_options(kind, opts))


def pairs(result) -> set[tuple[str, str, float]]:
    t = result.table
    return set(zip(t["chosen"].to_pylist(), t["rejected"].to_pylist(), t["prob"].to_pylist()))


def test_pairwise_from_comparisons_policies(wh: Wh):
    p = wh.prompt("How do I boil an egg?")
    a, b, c, d = wh.responses(p, "A", "B", "C", "D")
    wh.compare(p, a, b, "a")                                   # human A > B
    wh.compare(p, a, b, "b", source="ai", judge="j1", prob_a=0.2, consistent=True)  # AI disagrees: human wins
    wh.compare(p, c, d, "a", source="ai", judge="j1", prob_a=0.9, consistent=False)  # swap-inconsistent
    wh.compare(p, b, c, "tie", source="ai", judge="j1", prob_a=0.5, consistent=True)
    r = run(wh, "pairwise")
    assert pairs(r) == {("A", "B", 1.0)}
    assert r.table.schema == SCHEMAS["pairwise"]
    assert r.stage_counts == {"comparisons": 4, "require_consistent": 3, "merge_duplicates": 3, "contradictions": 3,
                              "prefer_human": 2, "ties": 1, "render": 1,
                              "identical_texts": 1}
    assert r.source_counts["by_source"] == {"ai": 3, "human": 1}
    assert r.notes["ai_swap_consistency"] == pytest.approx(2 / 3, abs=1e-3)
    assert sorted(r.table["feedback_ids"][0].as_py()) == r.table["feedback_ids"][0].as_py()
    kept = run(wh, "pairwise", ties="keep", require_consistent=False, soft_labels=True, prefer_human=False)
    assert pairs(kept) == {("A", "B", 1.0), ("B", "A", 0.8), ("B", "C", 0.5), ("C", "D", 0.9)}
    margin = run(wh, "pairwise", require_consistent=False, soft_labels=True, min_margin=0.35, sources="ai")
    assert pairs(margin) == {("C", "D", 0.9)}
    assert margin.stage_counts["min_margin"] == 1


def test_pairwise_aggregation_of_annotators(wh: Wh):
    p = wh.prompt("Name a colour.")
    a, b = wh.responses(p, "red", "blue")
    wh.compare(p, a, b, "a", judge="ann1")
    wh.compare(p, a, b, "a", judge="ann2")
    wh.compare(p, b, a, "a", judge="ann3")   # shown the other way round: prefers blue
    with pytest.raises(EmptyDataset, match="contradictions.*; -o aggregate=majority or -o aggregate=mean resolves"):
        run(wh, "pairwise")
    r = run(wh, "pairwise", aggregate="majority", soft_labels=True)
    assert pairs(r) == {("red", "blue", 2 / 3)}
    assert r.notes["contradictory_pairs"] == 1 and r.notes["duplicates_merged"] == 2
    assert r.notes["human_agreement"] == 0.0
    assert len(r.table["feedback_ids"][0].as_py()) == 3
    r = run(wh, "pairwise", aggregate="mean", soft_labels=False)
    assert pairs(r) == {("red", "blue", 1.0)}


def test_pairwise_duplicates_merge(wh: Wh):
    p = wh.prompt("Say hi.")
    a, b = wh.responses(p, "hi", "go away")
    wh.compare(p, a, b, "a", judge="ann1")
    wh.compare(p, b, a, "b", judge="ann2")  # same preference, other position
    r = run(wh, "pairwise")
    assert pairs(r) == {("hi", "go away", 1.0)} and r.notes["duplicates_merged"] == 1


def test_pairwise_from_rankings_modes(wh: Wh):
    p = wh.prompt("Rank these.")
    x, y, z = wh.responses(p, "x", "y", "z")
    wh.rank(p, [x, y, z], scores=[3.0, 2.0, 0.5])
    assert {(c, r) for c, r, _ in pairs(run(wh, "pairwise", origin="rankings"))} == {("x", "y"), ("x", "z"), ("y", "z")}
    adj = run(wh, "pairwise", origin="rankings", ranking_pairs="adjacent")
    assert {(c, r) for c, r, _ in pairs(adj)} == {("x", "y"), ("y", "z")}
    assert sorted(adj.table["margin"].to_pylist()) == [1.0, 1.5]
    best = run(wh, "pairwise", origin="rankings", ranking_pairs="best_vs_rest")
    assert {(c, r) for c, r, _ in pairs(best)} == {("x", "y"), ("x", "z")}


def test_pairwise_from_ratings_best_vs_worst_with_gap(wh: Wh):
    p1, p2 = wh.prompt("q1"), wh.prompt("q2")
    r1 = wh.responses(p1, "good", "mid", "bad")
    for rid, s in zip(r1, [9, 5, 2]):
        wh.rate(p1, rid, s)
    r2 = wh.responses(p2, "g2", "b2")
    wh.rate(p2, r2[0], 6)
    wh.rate(p2, r2[1], 5)
    r = run(wh, "pairwise", origin="ratings", min_score_gap=2)
    assert pairs(r) == {("good", "bad", 1.0)}
    assert r.table["margin"].to_pylist() == [7.0]
    assert r.stage_counts["pairs"] == 2 and r.stage_counts["min_score_gap"] == 1


def test_pairwise_from_corrections_and_verifier(wh: Wh):
    p = wh.prompt("2+2?")
    wrong, right, right2 = wh.responses(p, "5", "4", "four")
    wh.correct(p, wrong, "It is 4.")
    wh.correct(p, wrong, "Please check: 2+2 is 4.", aspect="harmlessness")  # the same annotator, another aspect
    assert pairs(run(wh, "pairwise", origin="corrections")) == {("It is 4.", "5", 1.0)}
    assert pairs(run(wh, "pairwise", origin="corrections", aspect="harmlessness")) == {
        ("Please check: 2+2 is 4.", "5", 1.0)}
    for rid, s in [(wrong, 0), (right, 1), (right2, 1)]:
        wh.rate(p, rid, s, lo=0, hi=1, source="rule", judge="exact_match")
    wh.rate(p, wrong, 1, lo=0, hi=1, source="human", judge="ann1")  # not a verifier: ignored
    assert pairs(run(wh, "pairwise", origin="verifier")) == {("4", "5", 1.0), ("four", "5", 1.0)}


def test_length_ratio_filter(wh: Wh):
    p = wh.prompt("q")
    a, b, c = wh.responses(p, "short", "a much much much longer answer", "shorty")
    wh.compare(p, b, a, "a")
    wh.compare(p, c, a, "a")
    r = run(wh, "pairwise", max_length_ratio=1.5)
    assert pairs(r) == {("shorty", "short", 1.0)}
    assert r.stage_counts["max_length_ratio"] == 1


def test_listwise_from_rankings_and_ratings(wh: Wh):
    p1, p2 = wh.prompt("q1"), wh.prompt("q2")
    a, b, c = wh.responses(p1, "a", "b", "c")
    wh.rank(p1, [c, a, b], scores=[3, 2, 1])
    wh.rank(p2, wh.responses(p2, "only", "two"))
    r = run(wh, "listwise", k=3)
    assert r.table["completions"].to_pylist() == [["c", "a", "b"]]
    assert r.table["scores"].to_pylist() == [[3.0, 2.0, 1.0]]
    two = run(wh, "listwise", k=2)
    assert sorted(map(tuple, two.table["completions"].to_pylist())) == [("c", "a"), ("only", "two")]
    for rid, s in zip([a, b, c], [4, 8, 6]):
        wh.rate(p1, rid, s)
    r = run(wh, "listwise", origin="ratings", k=3)
    assert r.table["completions"].to_pylist() == [["b", "c", "a"]]
    assert r.table["scores"].to_pylist() == [[8.0, 6.0, 4.0]]
    # the same three ranked by harmlessness by the same annotator: another ranking (its own id), read by its aspect
    assert wh.rank(p1, [b, a, c], aspect="harmlessness") != wh.rank(p1, [c, a, b])
    safe = run(wh, "listwise", k=3, aspect="harmlessness")
    assert safe.table["completions"].to_pylist() == [["b", "a", "c"]]
    assert run(wh, "listwise", k=3).table["completions"].to_pylist() == [["c", "a", "b"]]
    assert pairs(run(wh, "pairwise", origin="rankings", aspect="harmlessness", ranking_pairs="adjacent")) == {
        ("b", "a", 1.0), ("a", "c", 1.0)}


def test_listwise_leaves_out_lists_with_a_missing_response(wh: Wh):
    p = wh.prompt("q")
    a, b = wh.responses(p, "a", "b")
    wh.rank(p, [a, "gone", b])                     # a ranked response that is not in the warehouse
    wh.rank(p, [b, a], judge="ann2", scores=[2, 1])
    r = run(wh, "listwise", k=2)
    assert r.table["completions"].to_pylist() == [["b", "a"]]
    assert r.stage_counts == {"rankings_with_2": 2, "render": 1}
    for rid, s in zip([a, b], [3, 5]):
        wh.rate(p, rid, s)
    wh.rate(p, "gone", 9)                          # the best rated response is missing: its list is left out
    with pytest.raises(EmptyDataset, match="filter 'render' removed all 1 rows"):
        run(wh, "listwise", origin="ratings", k=2)


def test_binary_thumbs_ratings_and_pairwise(wh: Wh):
    p = wh.prompt("q")
    a, b, c = wh.responses(p, "yes", "no", "meh")
    wh.rate(p, a, 1, lo=0, hi=1)
    wh.rate(p, b, 0, lo=0, hi=1)
    wh.rate(p, c, 5, judge="ann2")  # graded: not a thumb
    t = run(wh, "binary")
    assert set(zip(t.table["completion"].to_pylist(), t.table["label"].to_pylist())) == {("yes", True), ("no", False)}
    g = run(wh, "binary", origin="ratings", desirable_min=7, undesirable_max=5)
    assert set(zip(g.table["completion"].to_pylist(), g.table["label"].to_pylist())) == {("meh", False)}
    wh.compare(p, a, b, "a")
    wh.compare(p, a, c, "a")
    wh.compare(p, c, b, "a")   # c is chosen once and rejected once: conflicting, dropped
    s = run(wh, "binary", origin="pairwise")
    assert set(zip(s.table["completion"].to_pylist(), s.table["label"].to_pylist())) == {("yes", True), ("no", False)}
    assert len(s.table["feedback_ids"][0].as_py()) == 2


def test_steps_labels_truncation(wh: Wh):
    p = wh.prompt("Solve x+1=2")
    r1 = wh.response(p, "sol1", steps=["s1", "s2", "s3", "s4"])
    r2 = wh.response(p, "sol2", steps=["t1", "t2", "t3"], index=1)
    wh.step_labels(p, r1, [1, 0, -1, 1])
    wh.step_labels(p, r2, [1, 1])  # third step never labelled: cut
    r = run(wh, "steps")
    rows = sorted(zip(r.table["steps"].to_pylist(), r.table["labels"].to_pylist()))
    assert rows == [(["s1", "s2", "s3", "s4"], [1, 0, -1, 1]), (["t1", "t2"], [1, 1])]
    assert r.notes["label_rule"] == "+1 -> True, 0 -> True, -1 -> False"
    t = run(wh, "steps", truncate_after_negative=True)
    assert sorted(t.table["labels"].to_pylist()) == [[1, 0, -1], [1, 1]]


def test_correction_identity_subset(wh: Wh):
    for i in range(10):
        p = wh.prompt(f"question {i}")
        wh.correct(p, wh.response(p, f"answer {i}"), f"better {i}")
    r = run(wh, "correction", identity_fraction=0.3)
    ident = r.table.filter(r.table["identity"])
    assert r.table.num_rows == 13 and ident.num_rows == 3
    assert ident["answer"].to_pylist() == ident["correction"].to_pylist()
    again = run(wh, "correction", identity_fraction=0.3)
    assert again.table.equals(r.table)
    p = wh.prompt("question 10")
    wh.correct(p, wh.response(p, "answer 10"), "safer 10", aspect="harmlessness")  # read by its aspect only
    assert run(wh, "correction", identity_fraction=0.3).table.equals(r.table)
    safe = run(wh, "correction", identity_fraction=0.0, aspect="harmlessness").table
    assert safe["correction"].to_pylist() == ["safer 10"]


def test_sft_best_of_n_and_rejection(wh: Wh):
    p1, p2 = wh.prompt("q1"), wh.prompt("q2")
    for rid, s in zip(wh.responses(p1, "a1", "b1", "c1"), [3, 9, 6]):
        wh.rate(p1, rid, s)
    for rid, s in zip(wh.responses(p2, "a2", "b2"), [2, 4]):
        wh.rate(p2, rid, s)
    r = run(wh, "sft")
    assert sorted(r.table["completion"].to_pylist()) == ["b1", "b2"]
    r = run(wh, "sft", min_score=5, per_prompt=2)
    assert sorted(zip(r.table["completion"].to_pylist(), r.table["score"].to_pylist())) == [("b1", 9.0), ("c1", 6.0)]
    x, y = wh.responses(p2, "x", "y")
    wh.rank(p2, [y, x])
    assert run(wh, "sft", origin="rankings").table["completion"].to_pylist() == ["y"]


def test_decontamination_drops_train_prompts_overlapping_test(wh: Wh):
    test_q = "What is the capital city of France and why is it famous"
    pt = wh.prompt(test_q, split="test")
    p_dup = wh.prompt("Tell me: what is the capital city of France and why is it famous?")
    p_ok = wh.prompt("How do volcanoes form under the ocean floor over millions of years")
    for p in (pt, p_dup, p_ok):
        a, b = wh.responses(p, "good " + p[:4], "bad " + p[:4])
        wh.compare(p, a, b, "a")
    r = run(wh, "pairwise", decontaminate=True, ngram=8)
    assert set(r.table["prompt_id"].to_pylist()) == {pt, p_ok}
    assert r.stage_counts["decontaminate"] == 2
    loose = run(wh, "pairwise", decontaminate=True, ngram=8, decontam_threshold=0.9)
    assert set(loose.table["prompt_id"].to_pylist()) == {pt, p_dup, p_ok}


def test_split_never_shares_a_prompt(wh: Wh):
    for i in range(12):
        p = wh.prompt(f"prompt number {i}", split="test" if i % 3 == 0 else "train")
        a, b, c = wh.responses(p, f"a{i}", f"b{i}", f"c{i}")
        wh.rank(p, [a, b, c])
    r = run(wh, "pairwise", origin="rankings")
    by_split: dict[str, set[str]] = {}
    for pid, split in zip(r.table["prompt_id"].to_pylist(), r.table["split"].to_pylist()):
        by_split.setdefault(split, set()).add(pid)
    assert len(by_split["test"]) == 4 and len(by_split["train"]) == 8
    assert not by_split["train"] & by_split["test"]
    assert json.loads(r.table["prompt"][0].as_py())[0]["role"] == "user"


def test_bad_input_messages(wh: Wh):
    with pytest.raises(InputError, match="valid kinds: pairwise"):
        parse_options("nope", {})
    with pytest.raises(InputError, match="valid options: .*aggregate"):
        parse_options("pairwise", {"agregate": "mean"})
    with pytest.raises(InputError, match="ties must be one of drop, keep"):
        parse_options("pairwise", {"ties": "maybe"})
    with pytest.raises(InputError, match="not a valid bool"):
        parse_options("pairwise", {"soft_labels": "perhaps"})
    with pytest.raises(EmptyDataset, match="'comparisons' found no rows"):
        run(wh, "pairwise")


def test_a_build_whose_source_finds_nothing_says_what_the_warehouse_holds(wh: Wh):
    with pytest.raises(EmptyDataset, match="this build read comparisons; the warehouse holds no feedback yet"):
        run(wh, "pairwise")
    p = wh.prompt("What is 2 + 2?")
    right, wrong = wh.responses(p, "4", "5")
    wh.rate(p, right, 1, lo=0, hi=1, source="rule", judge="exact", aspect="correct")
    wh.rate(p, wrong, 0, lo=0, hi=1, source="rule", judge="exact", aspect="correct")
    with pytest.raises(EmptyDataset) as err:
        run(wh, "pairwise", origin="verifier")
    msg = str(err.value)
    assert "'rated_responses' found no rows" in msg and "this build read ratings (aspect 'overall')" in msg
    assert f"the warehouse holds 2 ratings with aspect 'correct' from rule in rounds {ROUND}" in msg
    assert "-o origin=, aspect=, sources=, rounds=" in msg
    # a filter that empties the build names the filter, not the inventory
    r = run(wh, "pairwise", origin="verifier", aspect="correct")
    assert pairs(r) == {("4", "5", 1.0)}
    with pytest.raises(EmptyDataset, match=r"filter 'min_score_gap' removed all 1 rows \(rows after each stage: "
                                            r"rated_responses=2, pairs=1, min_score_gap=0\); a lower -o min_score_gap keeps them$"):
        run(wh, "pairwise", origin="verifier", aspect="correct", min_score_gap=2)


def test_a_filter_that_empties_a_build_names_the_option_that_relaxes_it(wh: Wh):
    p = wh.prompt("Pick a number.")
    a, b = wh.responses(p, "3", "7")
    wh.compare(p, a, b, "a", source="ai", judge="j1", prob_a=0.9, consistent=False)
    with pytest.raises(EmptyDataset, match=r"filter 'require_consistent' removed all 1 rows .*; "
                                           r"-o require_consistent=false keeps verdicts that flipped"):
        run(wh, "pairwise")
    with pytest.raises(EmptyDataset, match=r"; -o pairwise.require_consistent=false keeps"):  # the nested key
        run(wh, "binary", origin="pairwise")
    assert pairs(run(wh, "pairwise", require_consistent=False)) == {("3", "7", 1.0)}
    wh.compare(p, a, b, "tie", judge="ann1")  # a person called it a tie: human over AI leaves only the tie
    with pytest.raises(EmptyDataset, match="filter 'ties' removed all 1 rows .*; -o ties=keep keeps ties"):
        run(wh, "pairwise", require_consistent=False)
    with pytest.raises(EmptyDataset, match="every pair left is a tie, and unpaired rows need a preferred side"):
        run(wh, "binary", origin="pairwise")


def test_judges_option_selects_whose_feedback_a_build_reads(wh: Wh):
    p = wh.prompt("q1")
    a, b, c = wh.responses(p, "a1", "b1", "c1")
    for rid, old, new in ((a, 9, 2), (b, 1, 2), (c, 1, 8)):  # two reward models that disagree
        wh.rate(p, rid, old, source="reward_model", judge="rm-v1")
        wh.rate(p, rid, new, source="reward_model", judge="rm-v2")
    assert run(wh, "sft").table["completion"].to_pylist() == ["a1"]  # the mean of both: 5.5, 1.5, 4.5
    r = run(wh, "sft", judges="rm-v2")
    assert r.table["completion"].to_pylist() == ["c1"] and r.table["feedback_ids"].to_pylist()[0] == [
        wh.con.execute("SELECT id FROM ratings WHERE judge = 'rm-v2' AND response_id = $r", {"r": c}).fetchall()[0][0]]
    wh.compare(p, a, b, "a", judge="ann1")
    wh.compare(p, a, b, "b", judge="ann2")
    assert pairs(run(wh, "pairwise", judges="ann2")) == {("b1", "a1", 1.0)}
    with pytest.raises(EmptyDataset, match=r"by judges rm-v3; the warehouse holds .* by rm-v1, rm-v2"):
        run(wh, "sft", judges="rm-v3")
    # unset, the option is left out of a snapshot's parameters: builds from before it keep their version
    assert "judges" not in parse_options("sft", {}).params()["common"]
    assert parse_options("sft", {"judges": "rm-v2"}).params()["common"]["judges"] == ["rm-v2"]
