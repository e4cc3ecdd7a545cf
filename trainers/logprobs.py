"""Per-sequence log-probabilities of label tokens: gather, mask, sum.

Shapes: N sequences (2B for pairs: chosen rows first, then rejected), T tokens, V vocabulary.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100

CHUNK_ELEMENTS = 1 << 24
"""Logits converted to float32 at a time (64 MB) by :func:`token_logprobs`."""


class _TokenLogprobs(torch.autograd.Function):
    """``logit[target] - logsumexp(logits)`` per row in float32, a chunk of rows at a time.

    Plain autograd would keep a float32 copy of all the (M, V) logits for the backward pass of ``logsumexp``; here only
    the logits (in their own dtype) and the (M,) normalisers are kept, and the backward pass recomputes the softmax
    chunk by chunk.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        dtype = torch.promote_types(logits.dtype, torch.float32)
        step = max(1, CHUNK_ELEMENTS // max(logits.shape[-1], 1))
        norm = torch.empty(logits.shape[0], dtype=dtype, device=logits.device)
        for start in range(0, logits.shape[0], step):
            norm[start:start + step] = torch.logsumexp(logits[start:start + step].to(dtype), dim=-1)
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).to(dtype)
        ctx.save_for_backward(logits, targets, norm)
        return picked - norm

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        logits, targets, norm = ctx.saved_tensors
        step = max(1, CHUNK_ELEMENTS // max(logits.shape[-1], 1))
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[0], step):
            end = start + step
            g = grad[start:end].to(norm.dtype).unsqueeze(-1)  # (m, 1)
            d = torch.exp(logits[start:end].to(norm.dtype) - norm[start:end].unsqueeze(-1)).mul_(-g)  # -g * softmax
            d.scatter_add_(-1, targets[start:end].unsqueeze(-1), g)  # + g at the target
            out[start:end] = d
        return out, None


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability of each row's target token, without a float32 copy of the logits kept for backward.

    Args:
        logits: (M, V) any float dtype.
        targets: (M,) long token ids in [0, V).

    Returns:
        (M,) log-probs in float32 (float64 for float64 logits).
    """
    return _TokenLogprobs.apply(logits, targets)


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of each sequence's label tokens and the number of label tokens.

    Token t is predicted by the logits at t-1 (causal shift). Positions labelled ``-100`` (prompt, padding)
    contribute nothing. Computed as ``logit[label] - logsumexp(logits)`` in float32 by :func:`token_logprobs`, which
    never materialises a (N, T, V) log-softmax or float32 copy.

    Args:
        logits: (N, T, V) model outputs (any float dtype).
        labels: (N, T) token ids, ``-100`` where ignored.

    Returns:
        ``(logps, lengths)``: (N,) float32 summed log-probs and (N,) long completion token counts.
    """
    n, t, v = logits.shape
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX  # (N, T-1)
    # position t predicts labels[t + 1]; the last position predicts nothing (target 0, masked). Targets for all T
    # positions keep ``logits`` a view (no (N, T-1, V) copy for slicing off the last position).
    targets = torch.nn.functional.pad(labels.masked_fill(~mask, 0), (0, 1))  # (N, T)
    token_logps = token_logprobs(logits.reshape(n * t, v), targets.reshape(-1)).view(n, t)[:, :-1] * mask
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
