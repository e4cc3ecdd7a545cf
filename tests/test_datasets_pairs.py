"""Pairs from rated responses: pairing modes, the per-prompt cap and identical texts, with exact expected rows."""

from __future__ import annotations

import hashlib
import math

import pytest

from alignloop.pipelines.datasets.build import build
from alignloop.pipelines.datasets.config import parse_options
from alignloop.warehouse.errors import InputError
from tests.fixtures_datasets import *
from tests.fixtures_datasets import Wh


def run(wh: Wh, **opts):
    return build(wh.con, parse_options("pairwise", {"decontaminate": False, **opts}))


def rows(result) -> set[tuple[str, str, str]]:
    t = result.table
    prompts = [p.removeprefix("user: ") for p in t["prompt_text"].to_pylist()]
    return set(zip(prompts, t["chosen"].to_pylist(), t["rejected"].to_pylist()))


def rated(wh: Wh, scores: dict[str, list[float]]) -> dict[str, tuple[str, float, str]]:
    """Per prompt, responses "q-i" rated with the given scores; returns response id: (prompt, score, text)."""
    ids = {}
    for prompt, values in scores.items():
        p = wh.prompt(prompt)
        for i, score in enumerate(values):
            rid = wh.response(p, f"{prompt}-{i}", index=i)
            wh.rate(p, rid, score)
            ids[rid] = (prompt, score, f"{prompt}-{i}")
    return ids


def capped(pairs: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    """The cap's rule written out: the k pairs with the smallest md5(chosen_id:rejected_id)."""
    return sorted(pairs, key=lambda p: hashlib.md5(f"{p[0]}:{p[1]}".encode()).hexdigest())[:k]


@pytest.fixture
def verified(wh: Wh) -> tuple[Wh, dict[str, str]]:
    """q1: 2 correct + 2 wrong samples; q2: 1 + 1; q3: all correct (no pair). Rule ratings on a 0..1 scale."""
    ids: dict[str, str] = {}
    for prompt, samples in {"q1": [("4", 1), ("four", 1), ("5", 0), ("22", 0)], "q2": [("yes", 1), ("no", 0)],
                            "q3": [("a", 1), ("b", 1)]}.items():
        p = wh.prompt(prompt)
        for i, (text, score) in enumerate(samples):
            ids[text] = wh.response(p, text, index=i)
            wh.rate(p, ids[text], score, lo=0, hi=1, source="rule", judge="check")
    return wh, ids


def test_verifier_all_pairs_then_cap_per_prompt(verified):
    wh, ids = verified
    every = {("q1", c, w) for c in ("4", "four") for w in ("5", "22")} | {("q2", "yes", "no")}
    r = run(wh, origin="verifier")                        # auto pairing = all for the verifier
    assert rows(r) == every
    assert r.table["margin"].to_pylist() == [1.0] * 5
    cap = run(wh, origin="verifier", pairing="all", max_pairs_per_prompt=2)
    by_id = {v: k for k, v in ids.items()}
    q1 = capped([(ids[c], ids[w]) for c in ("4", "four") for w in ("5", "22")], 2)
    assert rows(cap) == {("q1", by_id[c], by_id[w]) for c, w in q1} | {("q2", "yes", "no")}
    assert cap.stage_counts["identical_texts"] == 5 and cap.stage_counts["max_pairs_per_prompt"] == 3
    again = run(wh, origin="verifier", pairing="all", max_pairs_per_prompt=2)
    assert again.table.equals(cap.table)


def test_verifier_best_vs_worst(verified):
    wh, ids = verified
    best = min(ids["4"], ids["four"])                      # ties on score: smallest id is best, largest worst
    worst = max(ids["5"], ids["22"])
    by_id = {v: k for k, v in ids.items()}
    r = run(wh, origin="verifier", pairing="best_vs_worst")
    assert rows(r) == {("q1", by_id[best], by_id[worst]), ("q2", "yes", "no")}


def test_ratings_all_pairs_drop_identical_texts(wh: Wh):
    p = wh.prompt("q")
    for i, (text, score) in enumerate([("good", 9), ("same", 7), ("ok", 7), ("same", 2)]):
        wh.rate(p, wh.response(p, text, index=i), score)
    r = run(wh, origin="ratings", pairing="all")
    t = r.table
    assert sorted(zip(t["chosen"].to_pylist(), t["rejected"].to_pylist(), t["margin"].to_pylist())) == [
        ("good", "ok", 2.0), ("good", "same", 2.0), ("good", "same", 7.0), ("ok", "same", 5.0)]  # same 7 > same 2 gone
    assert r.stage_counts["pairs"] == 5 and r.stage_counts["identical_texts"] == 4
    assert rows(run(wh, origin="ratings")) == {("q", "good", "same")}      # auto = best_vs_worst (9 over 2)
    gap = run(wh, origin="ratings", pairing="all", min_score_gap=3)
    assert rows(gap) == {("q", "good", "same"), ("q", "ok", "same")}


def test_rso_keeps_responses_by_rejection_sampling_then_pairs_the_kept(wh: Wh):
    """RSO: a response is kept with probability exp((score - its prompt's best) / beta), the draw the first 32 bits of
    md5(seed:response id) over 2^32; the best is always kept; pairs are every kept response over every lower kept."""
    scores = {"q1": [9, 8, 7, 5, 3, 1], "q2": [4, 4, 2, 0], "q3": [6, 1]}
    ids = rated(wh, scores)

    def kept(beta: float, seed: int) -> set[str]:
        best = {q: max(v) for q, v in scores.items()}
        return {rid for rid, (q, score, _) in ids.items()
                if int(hashlib.md5(f"{seed}:{rid}".encode()).hexdigest()[:8], 16) / 2**32
                < math.exp((score - best[q]) / beta)}

    def expected(beta: float, seed: int) -> set[tuple[str, str, str]]:
        keep = kept(beta, seed)
        return {(ids[c][0], ids[c][2], ids[w][2]) for c in keep for w in keep
                if ids[c][0] == ids[w][0] and ids[c][1] > ids[w][1]}

    r = run(wh, origin="ratings", pairing="rso", rso_beta=2.0)
    assert rows(r) == expected(2.0, 0) and r.stage_counts["rso_accepted"] == len(kept(2.0, 0))
    assert 3 <= len(kept(2.0, 0)) < len(ids)  # the best of each prompt, and some but not all of the rest
    assert run(wh, origin="ratings", pairing="rso", rso_beta=2.0).table.equals(r.table)  # same inputs, same rows
    other = run(wh, origin="ratings", pairing="rso", rso_beta=2.0, rso_seed=7)
    assert rows(other) == expected(2.0, 7) and kept(2.0, 7) != kept(2.0, 0)
    every = run(wh, origin="ratings", pairing="rso", rso_beta=1e6)  # a flat tilt keeps all: every pair
    assert rows(every) == rows(run(wh, origin="ratings", pairing="all"))
    with pytest.raises(InputError, match="pairing 'rso' samples rated responses: needs origin ratings or verifier"):
        parse_options("pairwise", {"pairing": "rso"})
    with pytest.raises(InputError, match="rso_samples must be >= 2"):
        parse_options("pairwise", {"origin": "ratings", "pairing": "rso", "rso_samples": "1"})
    with pytest.raises(InputError, match="rso_beta must be > 0, got 0.0"):
        parse_options("pairwise", {"origin": "ratings", "pairing": "rso", "rso_beta": "0"})


def test_rso_draws_until_m_are_kept_as_the_papers_loop(wh: Wh):
    """``rso_samples`` M: RSO's Algorithm 1 written out here, pass k over the responses left in id order, each kept
    with probability exp((score - best score left) / beta) until M are kept; pass 1 draws md5(seed:id), pass k
    md5(seed:k:id). Pairs are then every kept response over every lower-scored kept one."""
    scores = {"q1": [9, 8, 7, 6, 5, 3, 2, 1], "q2": [4, 4, 2, 0, 0], "q3": [6, 1]}
    ids = rated(wh, scores)

    def draw(seed: int, k: int, rid: str) -> float:
        key = f"{seed}:{rid}" if k == 1 else f"{seed}:{k}:{rid}"
        return int(hashlib.md5(key.encode()).hexdigest()[:8], 16) / 2**32

    def algorithm_1(m: int, beta: float, seed: int) -> tuple[set[str], int]:
        kept, passes = set(), 0
        for q in scores:
            left = sorted(rid for rid in ids if ids[rid][0] == q)
            accepted: list[str] = []
            k = 0
            while len(accepted) < m and left:
                k += 1
                best = max(ids[rid][1] for rid in left)
                for rid in list(left):
                    if draw(seed, k, rid) < math.exp((ids[rid][1] - best) / beta):
                        accepted.append(rid)
                        left.remove(rid)
                        if len(accepted) == m:
                            break
            kept |= set(accepted)
            passes = max(passes, k)
        return kept, passes

    for m, beta, seed in [(2, 0.5, 0), (3, 0.5, 0), (4, 2.0, 3), (3, 0.1, 1), (20, 1.0, 0)]:
        keep, _ = algorithm_1(m, beta, seed)
        r = run(wh, origin="ratings", pairing="rso", rso_beta=beta, rso_seed=seed, rso_samples=m)
        assert r.stage_counts["rso_accepted"] == len(keep), (m, beta, seed)
        assert rows(r) == {(ids[c][0], ids[c][2], ids[w][2]) for c in keep for w in keep
                           if ids[c][0] == ids[w][0] and ids[c][1] > ids[w][1]}, (m, beta, seed)
        assert sum(1 for q in scores if sum(ids[rid][0] == q for rid in keep) == min(m, len(scores[q]))) == 3
    assert algorithm_1(3, 0.1, 1)[1] > 1  # a sharp tilt needs more than one pass: the loop is exercised
    assert run(wh, origin="ratings", pairing="rso", rso_beta=0.5, rso_samples=3).table.equals(
        run(wh, origin="ratings", pairing="rso", rso_beta=0.5, rso_samples=3).table)


def test_cap_applies_to_comparisons_too(wh: Wh):
    p = wh.prompt("q")
    a, b, c = wh.responses(p, "a", "b", "c")
    for x, y in [(a, b), (a, c), (b, c)]:
        wh.compare(p, x, y, "a")
    r = run(wh, max_pairs_per_prompt=1)
    names = {a: "a", b: "b", c: "c"}
    assert rows(r) == {("q", names[x], names[y]) for x, y in capped([(a, b), (a, c), (b, c)], 1)}


def test_options_checked():
    with pytest.raises(InputError, match="max_pairs_per_prompt must be >= 1"):
        parse_options("pairwise", {"max_pairs_per_prompt": "0"})
    with pytest.raises(InputError, match="pairing must be one of auto, best_vs_worst, all, rso"):
        parse_options("pairwise", {"pairing": "some"})
    with pytest.raises(InputError, match="pairwise datasets only"):
        parse_options("binary", {"origin": "pairwise", "pairwise.max_pairs_per_prompt": "2"})
    assert parse_options("pairwise", {"max_pairs_per_prompt": "none"}).config.max_pairs_per_prompt is None
