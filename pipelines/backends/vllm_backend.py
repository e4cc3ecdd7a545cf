"""Generation and next-token scoring with vLLM's offline engine (``pip install alignloop[vllm]``, CUDA).

Each sampled (conversation, sample) pair is its own request with ``n=1`` and a seed derived from
(seed, conversation, sample index), so sample i is the same whatever ``n`` or the batch is; greedy decodes
once per conversation and copies. vLLM batches all requests internally (continuous batching).
"""

from __future__ import annotations

from typing import Any

from alignloop.pipelines.backends.base import Completion, Conversation, Sampling, TokenScores, continues
from alignloop.pipelines.backends.seeding import sample_seed
from alignloop.pipelines.backends.stats import GenerationStats
from alignloop.warehouse.errors import AlignloopError

TOP_LOGPROBS = 20


def sampling_kwargs(sampling: Sampling, seed: int | None) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one sample (no vLLM import needed)."""
    kw: dict[str, Any] = {"n": 1, "temperature": sampling.temperature, "top_p": sampling.top_p,
                          "max_tokens": sampling.max_new_tokens, "stop": list(sampling.stop)}
    if sampling.temperature > 0:
        kw["seed"] = seed
    return kw


def scoring_kwargs() -> dict[str, Any]:
    """``SamplingParams`` for next-token scoring: one greedy token with the top log-probabilities."""
    return {"n": 1, "temperature": 0.0, "max_tokens": 1, "logprobs": TOP_LOGPROBS}


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise AlignloopError(f"the vllm backend needs vLLM: pip install 'alignloop[vllm]' ({exc})") from None
    return vllm


class VLLMBackend:
    """The Backend protocol over ``vllm.LLM`` (model folder resolved locally; never a hub name by accident)."""

    def __init__(self, model: str, **engine_kwargs: Any):
        from alignloop.pipelines.models import resolve_model

        vllm = _import_vllm()
        path = resolve_model(model)
        self.name = str(path)
        self.stats = GenerationStats()
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(path), **engine_kwargs)

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[list[Completion]]:
        greedy = sampling.temperature == 0
        keys: list[tuple[int, int]] = []
        params = []
        for c, conv in enumerate(conversations):
            for s in range(1 if greedy else sampling.n):
                keys.append((c, s))
                params.append(self._vllm.SamplingParams(**sampling_kwargs(sampling, sample_seed(sampling.seed, conv,
                                                                                                  s))))
        results = {}
        for cont in (False, True):  # vLLM continues the last message (or not) for a whole call
            part = [i for i, (c, _) in enumerate(keys) if continues(conversations[c]) == cont]
            if part:
                outputs = self.llm.chat([conversations[keys[i][0]] for i in part], [params[i] for i in part],
                                        use_tqdm=False, add_generation_prompt=not cont, continue_final_message=cont)
                results.update({keys[i]: out for i, out in zip(part, outputs)})
        completions: list[list[Completion]] = []
        for c in range(len(conversations)):
            self.stats.prompts += 1
            row = []
            for s in range(sampling.n):
                out = results[(c, 0 if greedy else s)]
                gen = out.outputs[0]
                n_tokens = len(gen.token_ids)
                self.stats.completion_tokens += n_tokens
                row.append(Completion(gen.text, gen.finish_reason or "stop", len(out.prompt_token_ids), n_tokens, s))
            self.stats.prompt_tokens += len(results[(c, 0)].prompt_token_ids)
            completions.append(row)
        return completions

    def next_token_logprobs(self, conversations: list[Conversation], candidates: list[str]) -> list[TokenScores]:
        tokenizer = self.llm.get_tokenizer()
        first = {}
        for cand in candidates:
            toks = tokenizer.encode(cand, add_special_tokens=False)
            first[cand] = toks[0] if toks else None
        params = self._vllm.SamplingParams(**scoring_kwargs())
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [scores_from_top(out.outputs[0].logprobs[0], first) for out in outputs]


def scores_from_top(top: dict[int, Any], first: dict[str, int | None]) -> TokenScores:
    """TokenScores from vLLM's top log-probs ``{token_id: Logprob}``; candidates outside the top get None."""
    return TokenScores({c: (float(top[t].logprob) if t is not None and t in top else None) for c, t in first.items()})
