"""KL to the reference: sampled ids scored exactly, the estimate agrees with the exact per-token KL, and a
float32 checkpoint is never silently run in bf16."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from alignloop.pipelines import models
from alignloop.pipelines.backends import Sampling
from alignloop.pipelines.backends.transformers_backend import TransformersBackend
from alignloop.trainers.divergence import answer_logprobs, kl_to_reference
from tests.fixtures_generate import build_tiny_model, user

PROMPTS = [user(t) for t in ("what is two plus two", "hello there", "write a poem", "name three colors")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("kl")
    return build_tiny_model(root / "pi", seed=1), build_tiny_model(root / "ref", seed=2)


def test_load_dtype_keeps_a_float32_checkpoint_in_float32(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNLOOP_DTYPE", raising=False)
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float32"}))
    assert models.load_dtype(tmp_path) == "float32"
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert models.load_dtype(tmp_path) == models.default_dtype()
    assert models.load_dtype(tmp_path, "cuda") == "bfloat16"
    monkeypatch.setenv("ALIGNLOOP_DTYPE", "bf16")
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float32"}))
    assert models.load_dtype(tmp_path) == "bfloat16"  # the user's word wins


def test_sampled_token_ids_decode_to_the_text_and_carry_the_end_token(pair):
    backend = TransformersBackend.load(str(pair[0]), device="cpu", max_batch_size=3)
    assert backend.model.dtype == torch.float32  # saved in float32, so loaded so
    out = backend.generate(PROMPTS, Sampling(n=4, temperature=1.0, max_new_tokens=12, seed=3))
    comps = [c for row in out for c in row]
    assert {c.finish_reason for c in comps} <= {"stop", "length"}
    for c in comps:
        assert c.token_ids is not None
        ended = c.finish_reason == "stop"
        assert (c.token_ids[-1] in backend.eos_ids) == ended
        body = c.token_ids[:-1] if ended else c.token_ids
        assert len(body) == c.completion_tokens
        assert backend.tokenizer.decode(list(body), skip_special_tokens=True) == c.text


def _exact_token_kl(pi, ref, tokenizer, prompt, ids) -> float:
    """sum_t KL(pi(.|x, y<t) || ref(.|x, y<t)) along one sample: the same expectation, with less variance."""
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    p_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    seq = torch.tensor([p_ids + list(ids)])
    with torch.no_grad():
        lp = torch.log_softmax(pi(seq).logits[0, len(p_ids) - 1:-1].float(), -1)
        lq = torch.log_softmax(ref(seq).logits[0, len(p_ids) - 1:-1].float(), -1)
    return float((lp.exp() * (lp - lq)).sum())


def test_kl_estimate_from_sampled_ids_matches_the_exact_per_token_kl(pair):
    from transformers import AutoModelForCausalLM

    backend = TransformersBackend.load(str(pair[0]), device="cpu", max_batch_size=16)
    out = backend.generate(PROMPTS, Sampling(n=16, temperature=1.0, max_new_tokens=10, seed=0))
    prompts = [p for p in PROMPTS for _ in range(16)]
    ids = [c.token_ids for row in out for c in row]
    estimate = kl_to_reference(pair[0], pair[1], prompts, ids)
    pi = AutoModelForCausalLM.from_pretrained(str(pair[0]), dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(str(pair[1]), dtype=torch.float32).eval()
    exact = [_exact_token_kl(pi, ref, backend.tokenizer, p, i) for p, i in zip(prompts, ids)]
    ratios = answer_logprobs(pi, backend.tokenizer, prompts, ids) - answer_logprobs(ref, backend.tokenizer, prompts, ids)
    assert estimate == pytest.approx(float(ratios.mean()), abs=1e-4)
    mean_exact = sum(exact) / len(exact)
    se = float(ratios.std()) / math.sqrt(len(ids))
    print(f"KL estimate {estimate:.3f}, exact per-token {mean_exact:.3f}, se {se:.3f}")
    assert mean_exact > 0 and estimate > 0
    assert abs(estimate - mean_exact) < 3 * se, (estimate, mean_exact, se)


def test_kl_of_a_model_against_its_copy_is_zero(pair, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(pair[0], copy)
    ids = [[5, 6, 7], [8, 9]]
    assert kl_to_reference(pair[0], copy, PROMPTS[:2], ids) == pytest.approx(0.0, abs=1e-5)
