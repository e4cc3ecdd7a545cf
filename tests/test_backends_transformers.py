"""The transformers backend on a tiny random Llama: batching, seeds, stop handling, length policy, scoring."""

from __future__ import annotations

import pytest

from alignloop.pipelines.backends import Sampling, make_backend
from alignloop.pipelines.backends.base import Backend
from alignloop.pipelines.backends.transformers_backend import TransformersBackend, TransformersOptions
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_generate import *
from tests.fixtures_generate import QUESTIONS, user

CONVS = [user(q) for q in QUESTIONS[:6]]


def test_is_a_backend(tiny_backend):
    assert isinstance(tiny_backend, Backend)
    assert "tiny-llama" in tiny_backend.name


def test_greedy_is_deterministic_and_independent_of_batching(tiny_backend):
    s = Sampling(n=2, max_new_tokens=12)
    batched = tiny_backend.generate(CONVS, s)
    alone = [tiny_backend.generate([c], s)[0] for c in CONVS]
    assert [[c.text for c in row] for row in batched] == [[c.text for c in row] for row in alone]
    assert all(row[0].text == row[1].text for row in batched)  # greedy samples are identical
    assert [c.sample_index for c in batched[0]] == [0, 1]
    assert all(c.completion_tokens and c.prompt_tokens for row in batched for c in row)


def test_sampling_seeds_do_not_depend_on_batch(tiny_backend):
    s = Sampling(n=3, temperature=1.0, max_new_tokens=10, seed=7)
    batched = tiny_backend.generate(CONVS, s)
    alone = tiny_backend.generate([CONVS[3]], s)[0]
    assert [c.text for c in batched[3]] == [c.text for c in alone]
    assert len({c.text for c in batched[3]}) > 1  # samples differ from each other
    other = tiny_backend.generate([CONVS[3]], Sampling(n=3, temperature=1.0, max_new_tokens=10, seed=8))[0]
    assert [c.text for c in other] != [c.text for c in alone]


def test_samples_of_a_conversation_prefill_its_prompt_once(tiny_backend, monkeypatch):
    s = Sampling(n=2, temperature=1.0, max_new_tokens=6, seed=3)
    alone = [tiny_backend.generate([c], s)[0] for c in CONVS[:4]]
    calls = count_forwards(tiny_backend, monkeypatch)
    batched = tiny_backend.generate(CONVS[:4], s)  # max_batch_size 4: two batches of 2 conversations x 2 samples
    prefills = [shape for shape in calls if shape[1] > 1]
    assert [shape[0] for shape in prefills] == [2, 2]  # one row per conversation, not per sample
    assert all(shape[1] == 1 for shape in calls if shape not in prefills)
    assert [[c.text for c in row] for row in batched] == [[c.text for c in row] for row in alone]

def test_rows_that_stop_early_leave_the_batch_without_changing_others(tiny_backend):
    free = tiny_backend.generate(CONVS, Sampling(max_new_tokens=12))
    # A stop string taken from one row's output makes that row finish early while the others continue.
    word = next(ch for ch in free[0][0].text if ch.isascii() and ch.isalnum())
    s = Sampling(max_new_tokens=12, stop=(word,))
    stopped = tiny_backend.generate(CONVS, s)
    assert stopped[0][0].finish_reason == "stop" and word not in stopped[0][0].text
    changed = 0
    for before, after in zip(free, stopped):
        cut = before[0].text.find(word)
        if cut < 0:
            assert (after[0].text, after[0].finish_reason) == (before[0].text, "length")
        else:
            changed += 1
            assert after[0].text == before[0].text[:cut] and after[0].completion_tokens < 12
    assert 0 < changed < len(CONVS) or changed == len(CONVS)
    alone = [tiny_backend.generate([c], s)[0][0].text for c in CONVS]
    assert [r[0].text for r in stopped] == alone


def test_long_prompts_truncate_or_skip(tiny_model_dir, tiny_backend):
    long = user("the quick brown fox " * 40)
    limit = len(tiny_backend.encode(CONVS[0])) + 2
    trunc = TransformersBackend.load(str(tiny_model_dir), device="cpu", dtype="float32", max_prompt_tokens=limit)
    out = trunc.generate([long, CONVS[0]], Sampling(max_new_tokens=4))
    assert out[0][0].prompt_tokens == limit and trunc.stats.truncated == 1 and trunc.stats.skipped == 0
    skip = TransformersBackend.load(str(tiny_model_dir), device="cpu", dtype="float32", max_prompt_tokens=limit,
                                    long_prompts="skip")
    out = skip.generate([long, CONVS[0]], Sampling(n=2, max_new_tokens=4))
    assert [c.finish_reason for c in out[0]] == ["skipped", "skipped"] and skip.stats.skipped == 1
    assert out[1][0].finish_reason in ("stop", "length")


def test_next_token_logprobs_match_a_full_forward(tiny_backend):
    import torch

    cands = ["the", "red", "0"]
    scores = tiny_backend.next_token_logprobs(CONVS[:3], cands)
    ids = torch.tensor([tiny_backend.encode(CONVS[1])])
    with torch.inference_mode():
        logp = torch.log_softmax(tiny_backend.model(ids).logits[0, -1].float(), -1)
    first = tiny_backend.tokenizer("red", add_special_tokens=False)["input_ids"][0]
    assert scores[1].available and scores[1].logprobs["red"] == pytest.approx(float(logp[first]), abs=1e-4)
    assert all(v is not None and v < 0 for s in scores for v in s.logprobs.values())


def count_forwards(backend, monkeypatch) -> list[tuple[int, ...]]:
    """Record the input shape of every forward the backend's model runs from now on."""
    calls: list[tuple[int, ...]] = []
    real = backend.model.forward

    def counting(*args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(backend.model, "forward", counting)
    return calls


def assert_full_forward_scores(backend, forward, convs, cands, *results) -> None:
    """Every result's scores equal an unpadded full forward of that conversation alone."""
    import torch

    with torch.inference_mode():
        for k, conv in enumerate(convs):
            logp = torch.log_softmax(forward(torch.tensor([backend.encode(conv)])).logits[0, -1].float(), -1)
            for cand in cands:
                tok = backend.tokenizer(cand, add_special_tokens=False)["input_ids"][0]
                for scores in results:
                    assert scores[k].logprobs[cand] == pytest.approx(float(logp[tok]), abs=1e-4)


def test_shared_head_is_cached_once_and_scores_match_full_forwards(tiny_backend, monkeypatch):
    """Judge prompts share their head: it runs once, each batch reuses its cache, and every score equals an
    unpadded full forward of that conversation alone (rows of different lengths, several batches)."""

    from alignloop.pipelines.backends import transformers_backend as tb

    head = "the quick brown fox jumps over the lazy dog. name three colors: red, green, blue. "
    convs = [user(head + tail) for tail in ("hello", "what is two plus two today", "0123", "write a short poem",
                                             "hello there, how are you?")]
    cands = ["the", "red", "0"]
    real, calls = tiny_backend.model.forward, count_forwards(tiny_backend, monkeypatch)
    shared = tiny_backend.next_token_logprobs(convs, cands)  # max_batch_size 4: two batches after the head
    head_len = tb.shared_prefix([tiny_backend.encode(c) for c in convs])
    assert head_len >= tb.MIN_SHARED_PREFIX
    assert calls[0] == (1, head_len) and all(shape[1] < head_len for shape in calls[1:]) and len(calls) == 3
    monkeypatch.setattr(tb, "MIN_SHARED_PREFIX", 10_000)  # no head caching
    plain = tiny_backend.next_token_logprobs(convs, cands)
    assert_full_forward_scores(tiny_backend, real, convs, cands, shared, plain)



def test_prefix_groups_share_what_neighbours_share_and_never_lose_a_row():
    from alignloop.pipelines.backends.transformers_backend import _batches, prefix_groups

    q1, q2 = list(range(100, 120)), list(range(200, 230))
    tails = {0: q1 + [1, 2], 1: q2 + [7], 2: q1 + [3], 3: [5, 6, 7], 4: q2 + [8, 9], 5: q1}
    groups = prefix_groups(tails, minimum=16, limit=4)
    # q1's three rows share 19 tokens (row 5 is q1 alone and keeps its last token); q2's two share 30.
    assert sorted((n, sorted(rows)) for n, rows in groups) == [(0, [3]), (19, [0, 2, 5]), (30, [1, 4])]
    capped = prefix_groups(tails, minimum=16, limit=2)
    assert max(len(r) for _, r in capped) == 2 and sorted(i for _, r in capped for i in r) == sorted(tails)
    assert prefix_groups(tails, minimum=64, limit=4) == [(0, [i]) for i in sorted(tails, key=lambda i: tails[i])]
    # A long shared prefix is not traded for a short one: the third row would save less than it costs.
    q3 = list(range(300, 340))
    lopsided = {0: q3 + [1], 1: q3 + [2], 2: q3[:16] + [999]}  # 16 x 2 saved < 40 x 1
    assert sorted((n, sorted(r)) for n, r in prefix_groups(lopsided, 16, 8)) == [(0, [2]), (40, [0, 1])]
    lopsided[2] = q3[:21] + [999]  # 21 x 2 > 40: all three share 21
    assert prefix_groups(lopsided, 16, 8) == [(21, [0, 1, 2])]
    batches = _batches(groups, tails, limit=4)
    assert sorted(i for b in batches for _, rows in b for i in rows) == sorted(tails)
    assert all(sum(len(r) for _, r in b) <= 4 and len({n == 0 for n, _ in b}) == 1 for b in batches)


def test_both_orders_of_a_pair_share_their_question_and_scores_match_full_forwards(tiny_backend, monkeypatch):
    """Two-stage scoring: the global head once, each pair's common part once per pair, then each row's rest;
    every score equals an unpadded full forward of that conversation alone."""

    from alignloop.pipelines.backends import transformers_backend as tb

    head = "judge which answer is better. be fair and brief, and say only A or B. "
    questions = ("why is the sky blue when the sun is white and bright at noon in summer",
                 "what is two plus two, and why does it matter in the long run for kids",
                 "name three colors and say which one you like the most today")
    answers = (("because of scattering", "it is not"), ("four", "five or so, maybe six"), ("red", "green blue"))
    convs = [user(f"{head}question: {q} answer A: {a} answer B: {b}")
             for q, (x, y) in zip(questions, answers) for a, b in ((x, y), (y, x))]
    cands = ["A", "B", "the"]
    real, calls = tiny_backend.model.forward, count_forwards(tiny_backend, monkeypatch)
    scored = tiny_backend.next_token_logprobs(convs, cands)  # max_batch_size 4: 2 pairs, then 1
    seqs = [tiny_backend.encode(c) for c in convs]
    head_len = tb.shared_prefix(seqs)
    tails = {i: s[head_len:] for i, s in enumerate(seqs)}
    groups = tb.prefix_groups(tails, tb.MIN_SHARED_PREFIX, 4)
    assert sorted(sorted(rows) for _, rows in groups) == [[0, 1], [2, 3], [4, 5]]
    assert calls[0] == (1, head_len) and len(calls) == 5  # head, then (groups, rows) for each of two batches
    assert [c[0] for c in calls[1:]] == [2, 4, 1, 2]
    monkeypatch.setattr(tiny_backend.model, "forward", real)
    monkeypatch.setattr(tb, "shared_prefix", lambda seqs: 0)  # groups without a cached head
    headless = tiny_backend.next_token_logprobs(convs, cands)
    assert_full_forward_scores(tiny_backend, real, convs, cands, scored, headless)


def test_options_validate_and_unknown_model_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="max_batch_size"):
        TransformersOptions(max_batch_size=0)
    with pytest.raises(AlignloopError) as err:
        make_backend("transformers", str(tmp_path / "nope"))
    assert "\n" not in str(err.value) and "nope" in str(err.value)
    with pytest.raises(AlignloopError, match="unknown backend"):
        make_backend("tgi", "default")  # type: ignore[arg-type]
