"""How far a policy moved from its reference: a Monte-Carlo estimate of KL(pi || ref) on the policy's answers.

    from alignloop.trainers.divergence import kl_to_reference
    kl = kl_to_reference("runs/r2/model", "runs/r1/model", prompts, answers)

For answers y sampled from pi, E[log pi(y|x) - log ref(y|x)] = KL(pi || ref) (summed over tokens, in nats).
With greedy answers the same average is a biased but stable drift measure; callers say which they pass. Pass
the sampled token ids where the backend gives them: re-tokenising decoded text can split it differently from
how it was sampled, which scores a different sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alignloop.trainers.logprobs import IGNORE_INDEX, forward_logprobs

Answer = str | Sequence[int]
"""An answer as text, or as the token ids sampled (exact: no re-tokenisation, end token included if sampled)."""


def _encode(tokenizer: Any, messages: list[dict[str, str]], answer: Answer, max_length: int,
            ended: bool = True) -> tuple[list[int], int]:
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if isinstance(answer, str):
        # An answer cut off by the token limit did not end: scoring an end token there would add a term neither
        # model produced.
        a_ids = tokenizer(answer + (tokenizer.eos_token or "" if ended else ""), add_special_tokens=False)["input_ids"]
    else:
        a_ids = list(answer)
    ids = (p_ids + a_ids)[:max_length]
    return ids, min(len(p_ids), len(ids))


@torch.no_grad()
def answer_logprobs(model: torch.nn.Module, tokenizer: Any, prompts: list[list[dict[str, str]]],
                    answers: Sequence[Answer], max_length: int = 256, batch_size: int = 8,
                    ended: list[bool] | None = None) -> torch.Tensor:
    """(N,) summed log-probs of each answer given its chat prompt; a text answer gets its end token scored where
    ``ended`` says it ended."""
    ended = ended if ended is not None else [True] * len(answers)
    out = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for i in range(0, len(prompts), batch_size):
        enc = [_encode(tokenizer, p, a, max_length, e) for p, a, e in zip(prompts[i:i + batch_size],
                                                                           answers[i:i + batch_size],
                                                                           ended[i:i + batch_size])]
        width = max(len(ids) for ids, _ in enc)
        input_ids = torch.full((len(enc), width), pad, dtype=torch.long)
        labels = torch.full((len(enc), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for row, (ids, n_prompt) in enumerate(enc):  # right padding: positions stay aligned for the causal shift
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
            mask[row, :len(ids)] = 1
        logps, _ = forward_logprobs(model, input_ids, mask, labels)
        out.append(logps)
    return torch.cat(out) if out else torch.zeros(0)


def kl_to_reference(policy: str | Path, reference: str | Path, prompts: list[list[dict[str, str]]],
                    answers: Sequence[Answer], max_length: int = 256, ended: list[bool] | None = None) -> float:
    """Mean over answers of log pi(y|x) - log ref(y|x), in nats per answer; 0.0 when the two are one folder.

    Both models are scored in float32. The answers must be samples of ``policy`` as it is stored (not a bf16
    copy of a float32 checkpoint, which is a different model) for the mean to estimate KL(pi || ref).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if Path(policy).resolve() == Path(reference).resolve() or not answers:
        return 0.0
    tokenizer = AutoTokenizer.from_pretrained(str(policy))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    totals = []
    for folder in (policy, reference):
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        totals.append(answer_logprobs(model, tokenizer, prompts, answers, max_length, ended=ended))
        del model
    return float((totals[0] - totals[1]).mean())
