"""The transformers backend on a tiny random Llama: batching, seeds, stop handling, length policy, scoring."""

from __future__ import annotations

import pytest

from pipelines.backends import Sampling, make_backend
from pipelines.backends.base import Backend
from pipelines.backends.transformers_backend import TransformersBackend, TransformersOptions
from tests.fixtures_generate import *
from tests.fixtures_generate import QUESTIONS, user
from warehouse.errors import AlignloopError

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


def test_shared_head_is_cached_once_and_scores_match_full_forwards(tiny_backend, monkeypatch):
    """Judge prompts share their head: it runs once, each batch reuses its cache, and every score equals an
    unpadded full forward of that conversation alone (rows of different lengths, several batches)."""
    import torch

    from pipelines.backends import transformers_backend as tb

    head = "the quick brown fox jumps over the lazy dog. name three colors: red, green, blue. "
    convs = [user(head + tail) for tail in ("hello", "what is two plus two today", "0123", "write a short poem",
                                             "hello there, how are you?")]
    cands = ["the", "red", "0"]
    calls = []
    real = tiny_backend.model.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_backend.model, "forward", counting)
    shared = tiny_backend.next_token_logprobs(convs, cands)  # max_batch_size 4: two batches after the head
    head_len = tb.shared_prefix([tiny_backend.encode(c) for c in convs])
    assert head_len >= tb.MIN_SHARED_PREFIX
    assert calls[0] == (1, head_len) and all(shape[1] < head_len for shape in calls[1:]) and len(calls) == 3
    monkeypatch.setattr(tb, "MIN_SHARED_PREFIX", 10_000)  # no head caching
    plain = tiny_backend.next_token_logprobs(convs, cands)
    with torch.inference_mode():
        for conv, s, p in zip(convs, shared, plain):
            logp = torch.log_softmax(real(torch.tensor([tiny_backend.encode(conv)])).logits[0, -1].float(), -1)
            for cand in cands:
                tok = tiny_backend.tokenizer(cand, add_special_tokens=False)["input_ids"][0]
                assert s.logprobs[cand] == pytest.approx(float(logp[tok]), abs=1e-4)
                assert p.logprobs[cand] == pytest.approx(float(logp[tok]), abs=1e-4)


def test_options_validate_and_unknown_model_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="max_batch_size"):
        TransformersOptions(max_batch_size=0)
    with pytest.raises(AlignloopError) as err:
        make_backend("transformers", str(tmp_path / "nope"))
    assert "\n" not in str(err.value) and "nope" in str(err.value)
    with pytest.raises(AlignloopError, match="unknown backend"):
        make_backend("tgi", "default")  # type: ignore[arg-type]
