"""Shared-prompt packing: a prompt and all its completions in one row, so the prompt goes through the model once.

A pair becomes the row ``prompt | chosen | rejected`` instead of two padded rows ``prompt | chosen`` and
``prompt | rejected``. Position ids restart at the prompt's length for each completion, and a 4D mask lets a
completion token see its own prompt and the earlier tokens of its own completion, nothing else. Every token therefore
sees exactly the context and positions it has in its own sequence: the log-probs are those of the unpacked batch
(equal up to float rounding). Several short groups share a row (up to :data:`ROW_TOKENS` tokens) instead of being
padded to the longest one, and only the positions that predict a completion token reach the vocabulary projection.

Shapes: G groups (pairs), R packed rows of S tokens, N scored completion tokens, 2G sequences (chosen 0..G-1, then
rejected G..2G-1, the order of :class:`trainers.collators.PairCollator`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from alignloop.trainers.logprobs import IGNORE_INDEX, forward_logprobs, token_logprobs

ROW_TOKENS = 512
"""Groups share a row up to this many tokens (a longer group gets a row of its own). Attention over a packed row costs
S^2 whatever the mask, so rows stay short; padding between rows is what packing removes."""

PROMPT, PAD = 1, 0
"""``part_ids`` values: 0 padding, 1 prompt, 2 + k completion k of the group."""


def pack_groups(groups: Sequence[tuple[list[int], Sequence[list[int]]]], pad_id: int,
                row_tokens: int = ROW_TOKENS) -> dict[str, torch.Tensor]:
    """Pack ``(prompt_ids, [completion_ids, ...])`` groups, K completions each, into right-padded rows.

    Completion k of group g is sequence ``k * G + g``. Its token j is scored from the position before it in its own
    sequence: the prompt's last token for j = 0 (a completion without a prompt has its first token unscored, as in
    :func:`trainers.logprobs.sequence_logprobs`).

    Returns:
        ``input_ids``, ``position_ids``, ``group_ids`` (-1 on padding), ``part_ids`` (R, S) long;
        ``target_row``, ``target_pos``, ``target_ids``, ``target_seq`` (N,) long: row, predicting position, token id
        and sequence of each scored token; ``keep_pos`` (U,) the distinct predicting positions (the logits the model
        computes) and ``target_keep`` (N,) each token's index in it; ``target_counts`` (K*G,) scored tokens per
        sequence.
    """
    n_groups = len(groups)
    capacity = max([row_tokens] + [len(p) + sum(len(c) for c in cs) for p, cs in groups])
    rows: list[tuple[list[int], list[int], list[int], list[int]]] = []
    targets: list[tuple[int, int, int, int]] = []
    n_seq = 0
    for g, (prompt, completions) in enumerate(groups):
        size = len(prompt) + sum(len(c) for c in completions)
        if not rows or len(rows[-1][0]) + size > capacity:
            rows.append(([], [], [], []))
        r = len(rows) - 1
        ids, pos, grp, part = rows[-1]
        last_prompt = len(ids) + len(prompt) - 1
        ids += prompt
        pos += range(len(prompt))
        grp += [g] * len(prompt)
        part += [PROMPT] * len(prompt)
        for k, comp in enumerate(completions):
            start, seq = len(ids), k * n_groups + g
            n_seq = max(n_seq, seq + 1)
            ids += comp
            pos += range(len(prompt), len(prompt) + len(comp))
            grp += [g] * len(comp)
            part += [PROMPT + 1 + k] * len(comp)
            for j, token in enumerate(comp):
                if j == 0 and not prompt:
                    continue
                targets.append((r, last_prompt if j == 0 else start + j - 1, token, seq))
    width = max(len(row[0]) for row in rows)
    out = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
           "position_ids": torch.zeros((len(rows), width), dtype=torch.long),
           "group_ids": torch.full((len(rows), width), -1, dtype=torch.long),
           "part_ids": torch.full((len(rows), width), PAD, dtype=torch.long)}
    for i, row in enumerate(rows):
        for key, values in zip(("input_ids", "position_ids", "group_ids", "part_ids"), row, strict=True):
            out[key][i, : len(values)] = torch.tensor(values, dtype=torch.long)
    t = torch.tensor(targets, dtype=torch.long).view(-1, 4)
    keep, where = torch.unique(t[:, 1], return_inverse=True)  # here on the CPU: no device sync in the forward
    out |= {"target_row": t[:, 0], "target_pos": t[:, 1], "target_ids": t[:, 2], "target_seq": t[:, 3],
            "keep_pos": keep, "target_keep": where, "target_counts": torch.bincount(t[:, 3], minlength=n_seq)}
    return out


def pack_pairs(pairs: Sequence[tuple[list[int], list[int], list[int], list[int]]],
               pad_id: int, row_tokens: int = ROW_TOKENS) -> dict[str, torch.Tensor]:
    """Pairs given as ``(chosen_ids, chosen_labels, rejected_ids, rejected_labels)`` (prompt labelled -100) -> rows."""
    groups = []
    for c_ids, c_labels, r_ids, r_labels in pairs:
        n = _prompt_length(c_labels)
        if _prompt_length(r_labels) != n or c_ids[:n] != r_ids[:n]:
            raise ValueError("chosen and rejected of a pair must start with the same prompt")
        groups.append((c_ids[:n], [c_ids[n:], r_ids[n:]]))
    return pack_groups(groups, pad_id, row_tokens)


def _prompt_length(labels: Sequence[int]) -> int:
    n = 0
    while n < len(labels) and labels[n] == IGNORE_INDEX:
        n += 1
    return n


def _allowed(group_ids: torch.Tensor, part_ids: torch.Tensor) -> torch.Tensor:
    """(R, 1, S, S) bool: causal, same group, and the key is the query's own part or its prompt. Padding attends to
    earlier padding (never an empty row, so no NaN)."""
    s = group_ids.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=group_ids.device).tril()
    same_group = group_ids[:, :, None] == group_ids[:, None, :]
    key_part = part_ids[:, None, :]
    visible = (key_part == part_ids[:, :, None]) | (key_part == PROMPT)
    return (causal & same_group & visible).unsqueeze(1)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "module"):  # DDP / DataParallel wrappers
        model = model.module
    return model


def _mask_kind(model: torch.nn.Module, width: int) -> str | None:
    """"bool" (SDPA), "additive" (eager) or None when a custom 4D mask cannot express the model's attention (flash
    attention kernels take no 4D mask; a sliding window shorter than the row would be dropped)."""
    config = getattr(_unwrap(model), "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    if window is not None and window < width:
        return None
    return {"sdpa": "bool", "eager": "additive"}.get(getattr(config, "_attn_implementation", None) or "eager")


def _unpacked(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (K*G, T) padded ``input_ids``, ``attention_mask``, ``labels`` the packed rows stand for (fallback path)."""
    ids, group, part = batch["input_ids"], batch["group_ids"], batch["part_ids"]
    n_seq = batch["target_counts"].numel()
    n_groups = int(group.max()) + 1
    seqs = []
    for s in range(n_seq):
        g, k = s % n_groups, s // n_groups
        prompt = (group == g) & (part == PROMPT)
        comp = (group == g) & (part == PROMPT + 1 + k)
        labels = torch.where(comp, ids, IGNORE_INDEX)
        keep = prompt | comp  # row-major order: the prompt, then the completion
        seqs.append((ids[keep], labels[keep]))
    width = max(x.numel() for x, _ in seqs)
    out_ids = ids.new_zeros((n_seq, width))
    out_mask = ids.new_zeros((n_seq, width))
    out_labels = ids.new_full((n_seq, width), IGNORE_INDEX)
    for i, (x, lab) in enumerate(seqs):
        out_ids[i, : x.numel()], out_labels[i, : x.numel()], out_mask[i, : x.numel()] = x, lab, 1
    return out_ids, out_mask, out_labels


def packed_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of each packed sequence, in one forward pass of the packed rows.

    Args:
        model: a causal LM (any wrapper: DDP, FSDP, peft); called as ``model(...)`` so its hooks and autocast apply.
        batch: the output of :func:`pack_groups` (on the model's device).

    Returns:
        ``(logps, lengths)``: (K*G,) float32 summed log-probs and (K*G,) long scored-token counts.
    """
    ids, counts = batch["input_ids"], batch["target_counts"]
    kind = _mask_kind(model, ids.shape[1])
    if kind is None:
        return forward_logprobs(model, *_unpacked(batch))
    allowed = _allowed(batch["group_ids"], batch["part_ids"])
    if kind == "additive":
        mask = torch.zeros(allowed.shape, device=ids.device).masked_fill(~allowed, torch.finfo(torch.float32).min)
    else:
        mask = allowed
    out = model(input_ids=ids, attention_mask=mask, position_ids=batch["position_ids"], use_cache=False,
                logits_to_keep=batch["keep_pos"])  # (R, U, V): only positions that predict a scored token
    logits = out.logits[batch["target_row"], batch["target_keep"]]  # (N, V)
    tokens = token_logprobs(logits, batch["target_ids"])  # (N,) float32
    logps = tokens.new_zeros(counts.numel()).index_add(0, batch["target_seq"], tokens)
    return logps, counts


def batch_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed log-probs of a packed batch (:func:`pack_groups`) or a padded one (``labels``)."""
    if "target_ids" in batch:
        return packed_logprobs(model, batch)
    return forward_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
