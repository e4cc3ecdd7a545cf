"""Per-sequence log-probabilities of label tokens: gather, mask, sum.

Shapes: N sequences (2B for pairs: chosen rows first, then rejected), T tokens, V vocabulary.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each sequence's label tokens and the number of label tokens.

    Token t is predicted by the logits at t-1 (causal shift). Positions labelled ``-100`` (prompt, padding)
    contribute nothing. Computed as ``logit[label] - logsumexp(logits)`` in float32, which never materialises a
    (N, T, V) log-softmax copy.

    Args:
        logits: (N, T, V) model outputs (any float dtype).
        labels: (N, T) token ids, ``-100`` where ignored.

    Returns:
        ``(logps, lengths)``: (N,) float32 summed log-probs and (N,) long completion token counts.
    """
    logits = logits[:, :-1, :]
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe = labels.masked_fill(~mask, 0).unsqueeze(-1)  # (N, T-1, 1)
    picked = logits.gather(-1, safe).squeeze(-1).float()  # (N, T-1)
    norm = torch.logsumexp(logits.float(), dim=-1)  # (N, T-1)
    token_logps = (picked - norm) * mask
    return token_logps.sum(-1), mask.sum(-1)


def forward_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a causal LM once and return :func:`sequence_logprobs` of its logits.

    Only the positions that predict a label are kept before the vocabulary projection when the model supports
    ``logits_to_keep`` — here all positions from the first label on, shared by the whole batch.

    Args:
        model: a causal LM (``logits`` of shape (N, T, V)).
        input_ids, attention_mask, labels: (N, T).

    Returns:
        (N,) summed log-probs and (N,) label counts.
    """
    has_label = (labels != IGNORE_INDEX).any(0)  # (T,)
    first = int(has_label.float().argmax()) if bool(has_label.any()) else labels.shape[1] - 1
    keep = labels.shape[1] - max(first - 1, 0)  # logits from position first-1 predict the first label
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep)
    return sequence_logprobs(out.logits, labels[:, -keep:])
