"""Batched generation and next-token scoring with transformers on CPU or CUDA.

Rows (conversation x sample) are sorted by prompt length and decoded in left-padded batches with a KV cache;
a row that reaches its end token or a stop string leaves the batch (its cache rows are dropped), so finished
rows cost nothing. Each sampled row draws from its own generator seeded from (seed, conversation, sample index),
so a sample does not depend on what else was in its batch.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Literal

from alignloop.pipelines.backends.base import Completion, Conversation, Sampling, TokenScores, continues
from alignloop.pipelines.backends.seeding import sample_seed
from alignloop.pipelines.backends.stats import GenerationStats
from alignloop.warehouse.errors import AlignloopError


@dataclass(frozen=True)
class TransformersOptions:
    device: str = "auto"
    """"auto" (CUDA when present, else CPU), "cpu" or "cuda[:i]"."""
    dtype: str | None = None
    """"bfloat16"/"bf16" or "float32"/"fp32"; default per device (bf16 on CUDA and on CPUs with native bf16)."""
    max_batch_size: int = 64
    """Rows (conversation x sample) decoded together."""
    max_prompt_tokens: int | None = None
    """Longest prompt accepted, in tokens; default: the model's context length minus ``max_new_tokens``."""
    long_prompts: Literal["truncate", "skip"] = "truncate"
    """Over-long prompts keep their last tokens ("truncate") or get no completion ("skip", finish_reason "skipped")."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        if self.long_prompts not in ("truncate", "skip"):
            raise ValueError(f"long_prompts must be 'truncate' or 'skip', got {self.long_prompts!r}")


@dataclass
class _Row:
    conv: int
    sample: int
    ids: list[int]
    seed: int


class TransformersBackend:
    """The Backend protocol over a causal LM and its tokenizer (which must have a chat template)."""

    def __init__(self, model: Any, tokenizer: Any, name: str, options: TransformersOptions | None = None):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.options = options or TransformersOptions()
        self.stats = GenerationStats()
        self.device = next(model.parameters()).device
        eos = {tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)}
        flat: set[int] = set()
        for e in eos:
            flat.update(e if isinstance(e, list) else [e] if e is not None else [])
        if not flat:
            raise AlignloopError(f"model {name}: tokenizer has no end token (eos_token_id)")
        self.eos_ids = flat
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(flat)
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        # transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns until 5.40).
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def load(cls, model: str, **opts: Any) -> TransformersBackend:
        """Load from "default"/"smollm2" or a local folder (never a hub) with :class:`TransformersOptions`."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from alignloop.pipelines.models import _check_dtype, load_dtype, resolve_model

        options = TransformersOptions(**opts)
        path = resolve_model(model)
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = _check_dtype(options.dtype) if options.dtype else load_dtype(path, device)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).to(device).eval()
        return cls(lm, tokenizer, str(path), options)

    # -- prompts -------------------------------------------------------------------------------------------------

    def encode(self, conversation: Conversation) -> list[int]:
        """Token ids of the conversation rendered with the chat template and the assistant turn opened (or, where it
        ends with an assistant message, that message left open to be continued)."""
        if continues(conversation):
            text = self.tokenizer.apply_chat_template(conversation, continue_final_message=True, tokenize=False)
        else:
            text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _fit(self, ids: list[int], max_new_tokens: int) -> list[int] | None:
        """Apply the prompt-length policy: the ids to use, or None when the prompt is skipped."""
        limit = self.options.max_prompt_tokens or self.context - max_new_tokens
        if limit < 1:
            raise AlignloopError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in a "
                                 f"{self.context}-token context")
        if len(ids) <= limit:
            return ids
        if self.options.long_prompts == "skip":
            self.stats.skipped += 1
            return None
        self.stats.truncated += 1
        return ids[-limit:]

    # -- generation ----------------------------------------------------------------------------------------------

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[list[Completion]]:
        greedy = sampling.temperature == 0
        rows: list[_Row] = []
        prompt_len: dict[int, int] = {}
        for c, conv in enumerate(conversations):
            self.stats.prompts += 1
            ids = self._fit(self.encode(conv), sampling.max_new_tokens)
            if ids is None:
                continue
            prompt_len[c] = len(ids)
            # Greedy samples are identical: decode one and copy it.
            for s in range(1 if greedy else sampling.n):
                rows.append(_Row(c, s, ids, sample_seed(sampling.seed, conv, s)))
        rows.sort(key=lambda r: -len(r.ids))
        done: dict[tuple[int, int], tuple[list[int], str, list[int]]] = {}
        size = self.options.max_batch_size
        for start in range(0, len(rows), size):
            batch = rows[start:start + size]
            for row, result in zip(batch, self._decode(batch, sampling)):
                done[(row.conv, row.sample)] = result
        out: list[list[Completion]] = []
        for c in range(len(conversations)):
            if c not in prompt_len:
                out.append([Completion("", "skipped", None, 0, s) for s in range(sampling.n)])
                continue
            self.stats.prompt_tokens += prompt_len[c]
            comps = []
            for s in range(sampling.n):
                tokens, reason, end = done[(c, 0 if greedy else s)]
                self.stats.completion_tokens += len(tokens)
                comps.append(Completion(self._text(tokens, sampling.stop), reason, prompt_len[c], len(tokens), s,
                                        tuple(tokens + end)))
            out.append(comps)
        return out

    def _text(self, tokens: list[int], stop: tuple[str, ...]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
        return text[:cut] if cut >= 0 else text

    def _batch_inputs(self, seqs: list[list[int]]) -> tuple[Any, Any, Any]:
        """Left-padded (B, L) input ids, attention mask and position ids."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    def _decode(self, batch: list[_Row], sampling: Sampling) -> list[tuple[list[int], str, list[int]]]:
        """Decode one batch; per row: new token ids without the end token, finish reason, and the end token
        sampled ([] where there was none)."""
        import torch
        from transformers import DynamicCache

        # The samples of one conversation share its prompt: prefill it once and copy its cache to their rows.
        first: dict[int, int] = {}  # conversation -> its prompt's row in the prefill
        prompts: list[list[int]] = []
        for r in batch:
            if r.conv not in first:
                first[r.conv] = len(prompts)
                prompts.append(r.ids)
        ids, mask, pos = self._batch_inputs(prompts)
        gens = None
        if sampling.temperature > 0:
            gens = [torch.Generator(device=self.device).manual_seed(r.seed) for r in batch]
        tail = max((len(s) for s in sampling.stop), default=0) + 8
        tokens: list[list[int]] = [[] for _ in batch]
        reasons = ["length"] * len(batch)
        ends: list[list[int]] = [[] for _ in batch]
        active = list(range(len(batch)))
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            logits = self._step(ids, mask, pos, cache)
            if len(prompts) < len(batch):
                idx = torch.tensor([first[r.conv] for r in batch], device=self.device)
                cache.batch_select_indices(idx)
                logits, mask, pos = logits[idx], mask[idx], pos[idx]
            while True:
                nxt = self._pick(logits.float(), sampling, None if gens is None else [gens[r] for r in active])
                keep = []
                for j, r in enumerate(active):
                    t = int(nxt[j])
                    if t in self.eos_ids:
                        reasons[r], ends[r] = "stop", [t]
                        continue
                    tokens[r].append(t)
                    if sampling.stop and any(s in self.tokenizer.decode(tokens[r][-tail:]) for s in sampling.stop):
                        reasons[r] = "stop"
                        continue
                    if len(tokens[r]) < sampling.max_new_tokens:
                        keep.append(j)
                if not keep:
                    break
                ids = nxt[:, None]
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                pos = pos[:, -1:] + 1
                if len(keep) < len(active):  # finished rows leave the batch, cache included
                    idx = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(idx)
                    ids, mask, pos = ids[idx], mask[idx], pos[idx]
                    active = [active[j] for j in keep]
                logits = self._step(ids, mask, pos, cache)
        return list(zip(tokens, reasons, ends))

    def _step(self, ids: Any, mask: Any, pos: Any, cache: Any) -> Any:
        """One forward with the KV cache: (b, V) logits of each row's last position."""
        return self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                          **{self._cache_kw: cache}).logits[:, -1, :]

    @staticmethod
    def _pick(logits: Any, sampling: Sampling, gens: list[Any] | None) -> Any:
        """Next token per row: argmax when greedy, else temperature + nucleus sampling with per-row generators.

        Args:
            logits: (b, V) float32.
        Returns:
            (b,) long.
        """
        import torch

        if gens is None:
            return logits.argmax(-1)
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            sorted_p[(sorted_p.cumsum(-1) - sorted_p) > sampling.top_p] = 0.0  # keep the smallest nucleus
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.cat([torch.multinomial(probs[j], 1, generator=g) for j, g in enumerate(gens)])

    # -- scoring -------------------------------------------------------------------------------------------------

    def next_token_logprobs(self, conversations: list[Conversation], candidates: list[str]) -> list[TokenScores]:
        """Log-probability of each candidate's first token as the assistant's first token.

        Judge prompts share a long head (chat template and instructions): the tokens every conversation starts
        with run once and their KV cache serves every batch. Conversations that go on alike after the head (the
        two orders of one pair share the question) form groups whose common part runs once per group, its cache
        copied to the group's rows; each row then runs only its own remainder.
        """
        import torch

        first: dict[str, int | None] = {}
        for cand in candidates:
            toks = self.tokenizer(cand, add_special_tokens=False)["input_ids"]
            first[cand] = toks[0] if toks else None
        fitted = [self._fit(self.encode(c), 1) for c in conversations]
        kept = [i for i, f in enumerate(fitted) if f is not None]
        scores: list[TokenScores] = [TokenScores({c: None for c in candidates}, available=False)
                                     for _ in conversations]
        head = shared_prefix([fitted[i] for i in kept]) if len(kept) > 1 else 0  # type: ignore[misc]
        head = head if head >= MIN_SHARED_PREFIX else 0
        tails = {i: fitted[i][head:] for i in kept}  # type: ignore[index]
        size = self.options.max_batch_size
        with torch.inference_mode():
            head_cache = self._prefill([fitted[kept[0]][:head]]) if head else None  # type: ignore[index]
            for batch in _batches(prefix_groups(tails, MIN_SHARED_PREFIX, size), tails, size):
                logits = self._last_logits(batch, tails, head, head_cache)
                logp = torch.log_softmax(logits.float(), dim=-1)  # (rows, V)
                for j, i in enumerate(i for _, rows in batch for i in rows):
                    scores[i] = TokenScores({c: None if t is None else float(logp[j, t]) for c, t in first.items()})
        return scores

    def _prefill(self, seqs: list[list[int]]) -> Any:
        """KV cache of ``seqs`` (one row: the shared head)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        self._step(*self._batch_inputs(seqs), cache)
        return cache

    def _last_logits(self, groups: list[tuple[int, list[int]]], tails: dict[int, list[int]], head: int,
                     head_cache: Any) -> Any:
        """(rows, V) next-token logits of every row of ``groups`` (in order) after ``head`` cached tokens (0: none).

        A group ``(n, rows)`` shares its rows' first ``n`` tokens after the head: those run once per group
        (stage 1), the cache is copied to the group's rows, and each row runs its remainder (stage 2). Every stage
        is left-padded, so the mask has holes; positions stay contiguous over each row's real tokens.
        """
        import copy

        import torch

        n_groups = len(groups)
        cache = None
        past = torch.ones((n_groups, head), dtype=torch.long, device=self.device)  # mask over cached tokens
        offset = torch.full((n_groups,), head, dtype=torch.long, device=self.device)  # real tokens before stage 2
        if head:
            cache = copy.deepcopy(head_cache)
            cache.batch_repeat_interleave(n_groups)
        if any(n for n, _ in groups):  # stage 1: one row per group
            from transformers import DynamicCache

            ids, mask, pos = self._batch_inputs([tails[rows[0]][:n] for n, rows in groups])
            cache = cache if cache is not None else DynamicCache(config=self.model.config)
            past = torch.cat([past, mask], dim=1)
            self._step(ids, past, pos + head, cache)
            offset = offset + mask.sum(-1)
        index = torch.tensor([g for g, (_, rows) in enumerate(groups) for _ in rows], device=self.device)
        ids, mask, pos = self._batch_inputs([tails[i][n:] for n, rows in groups for i in rows])
        kwargs: dict[str, Any] = {}
        if cache is not None:
            if len(index) > n_groups:  # some group has several rows: copy its cache to them
                cache.batch_select_indices(index)
            kwargs = {self._cache_kw: cache, "use_cache": True}
        return self.model(input_ids=ids, attention_mask=torch.cat([past[index], mask], dim=1),
                          position_ids=pos + offset[index, None], logits_to_keep=1, **kwargs).logits[:, -1, :]


def prefix_groups(tails: dict[int, list[int]], minimum: int, limit: int) -> list[tuple[int, list[int]]]:
    """Rows whose token lists start alike, as ``(shared length, rows)``; a row alone gets length 0.

    Rows are taken in token order (where a group's common prefix is the smallest between neighbours); a row joins
    the group before it when the prefix stays at least ``minimum`` tokens, the group stays within ``limit`` rows,
    and the tokens the group saves (prefix x (rows - 1)) do not fall. Every row keeps at least one token of its own.
    """
    groups: list[tuple[int, list[int]]] = []
    rows: list[int] = []
    length = 0
    for i in sorted(tails, key=lambda i: tails[i]):
        if rows:
            prev = tails[rows[-1]]
            shared = min(len(os.path.commonprefix([prev, tails[i]])), len(tails[i]) - 1, length if len(rows) > 1 else len(prev) - 1)
            if shared >= minimum and len(rows) < limit and shared * len(rows) >= length * (len(rows) - 1):
                rows.append(i)
                length = shared
                continue
            groups.append((length if len(rows) > 1 else 0, rows))
        rows, length = [i], 0
    if rows:
        groups.append((length if len(rows) > 1 else 0, rows))
    return groups


def _batches(groups: list[tuple[int, list[int]]], tails: dict[int, list[int]],
             limit: int) -> list[list[tuple[int, list[int]]]]:
    """Groups packed into batches of at most ``limit`` rows, longest first so similar lengths share a batch (little
    padding); grouped and lone rows never share a batch."""
    ordered = sorted(groups, key=lambda g: (g[0] == 0, -max(len(tails[i]) for i in g[1])))
    batches: list[list[tuple[int, list[int]]]] = []
    rows = 0
    for group in ordered:
        if not batches or rows + len(group[1]) > limit or (batches[-1][0][0] == 0) != (group[0] == 0):
            batches.append([])
            rows = 0
        batches[-1].append(group)
        rows += len(group[1])
    return batches


MIN_SHARED_PREFIX = 16
"""Shortest common head (tokens) worth caching once for a scoring call."""


def shared_prefix(seqs: list[list[int]]) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own to score from."""
    return max(min(len(os.path.commonprefix(seqs)), min(len(s) for s in seqs) - 1), 0)
