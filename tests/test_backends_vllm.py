"""The vLLM backend: parameter mapping and score parsing need no GPU; the engine itself is skipped without one."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import pytest

from alignloop.pipelines.backends import Sampling, make_backend
from alignloop.pipelines.backends.vllm_backend import TOP_LOGPROBS, sampling_kwargs, scores_from_top, scoring_kwargs
from alignloop.warehouse.errors import AlignloopError

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_sampling_maps_to_one_seeded_request_per_sample():
    kw = sampling_kwargs(Sampling(n=4, temperature=0.7, top_p=0.9, max_new_tokens=33, stop=("\n\n",)), seed=123)
    assert kw == {"n": 1, "temperature": 0.7, "top_p": 0.9, "max_tokens": 33, "stop": ["\n\n"], "seed": 123}
    assert "seed" not in sampling_kwargs(Sampling(temperature=0.0), seed=5)  # greedy needs no seed


def test_scoring_asks_for_one_token_with_top_logprobs():
    assert scoring_kwargs() == {"n": 1, "temperature": 0.0, "max_tokens": 1, "logprobs": TOP_LOGPROBS}


@dataclass
class Logprob:
    logprob: float


def test_scores_from_top_logprobs():
    scores = scores_from_top({7: Logprob(-0.1), 9: Logprob(-2.5)}, {"A": 7, "B": 9, "C": 11, "": None})
    assert scores.available and scores.logprobs == {"A": -0.1, "B": -2.5, "C": None, "": None}


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_missing_vllm_says_how_to_install():
    with pytest.raises(AlignloopError, match=r"alignloop\[vllm\]"):
        make_backend("vllm", "default")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (optional extra alignloop[vllm], CUDA only)")
def test_vllm_generates_on_gpu():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA device")
    backend = make_backend("vllm", "default", gpu_memory_utilization=0.3)
    out = backend.generate([[{"role": "user", "content": "Say hi."}]], Sampling(n=2, temperature=0.8, max_new_tokens=8))
    assert len(out[0]) == 2 and all(c.completion_tokens for c in out[0])
    scores = backend.next_token_logprobs([[{"role": "user", "content": "Answer A or B."}]], ["A", "B"])
    assert scores[0].available


def test_generate_continues_assistant_messages_in_a_call_of_their_own():
    """vLLM's ``continue_final_message`` holds for a whole ``chat`` call: a batch mixing new turns and partial answers
    is sent as two calls, and every completion comes back to its own conversation and sample."""
    from types import SimpleNamespace

    from alignloop.pipelines.backends.stats import GenerationStats
    from alignloop.pipelines.backends.vllm_backend import VLLMBackend

    calls = []

    class FakeLLM:
        def chat(self, messages, params, use_tqdm, add_generation_prompt, continue_final_message):
            calls.append((add_generation_prompt, continue_final_message, [m[-1]["content"] for m in messages]))
            return [SimpleNamespace(prompt_token_ids=[0] * 3, outputs=[SimpleNamespace(
                text=f"{m[-1]['content']}|{p['seed']}", token_ids=[1, 2], finish_reason="stop")])
                for m, p in zip(messages, params)]

    backend = VLLMBackend.__new__(VLLMBackend)
    backend.name, backend.stats, backend.llm = "m", GenerationStats(), FakeLLM()
    backend._vllm = SimpleNamespace(SamplingParams=lambda **kw: kw)
    ask = [{"role": "user", "content": "q1"}]
    partial = [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "step 1\n"}]
    out = backend.generate([ask, partial, ask[:]], Sampling(n=2, temperature=1.0, max_new_tokens=4))
    assert [(a, c, len(m)) for a, c, m in calls] == [(True, False, 4), (False, True, 2)]
    assert [[c.text.split("|")[0] for c in row] for row in out] == [["q1", "q1"], ["step 1\n", "step 1\n"],
                                                                   ["q1", "q1"]]
    assert len({c.text for row in out for c in row}) == 4  # each sample its own seed (the two q1 share theirs)
