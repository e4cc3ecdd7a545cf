"""Dataset lints: problems counted, never silently fixed (no truncation, no dropping).

Checks: empty completions, chosen == rejected, sequences over ``max_tokens`` (whitespace-word estimate or a
local HF tokenizer folder), prompt chats that are malformed or repeat a role in consecutive turns, step rows
without labels.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from alignloop.warehouse.errors import AlignloopError

ROLES = ("system", "user", "assistant")
_COMPLETION_COLUMNS = {"pairwise": ("chosen", "rejected"), "binary": ("completion",), "sft": ("completion",),
                       "correction": ("answer", "correction"), "listwise": ("completions",), "steps": ("steps",)}


@dataclass(frozen=True)
class LintOptions:
    """How strictly to lint; not part of a dataset's identity."""

    max_tokens: int = 2048
    """Prompt + completion length above which a row is counted as too long."""
    tokenizer: str | None = None
    """Local HF tokenizer folder; default a whitespace word count as the estimate."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


@dataclass(frozen=True)
class LintReport:
    """Counts of rows with each problem (0 = clean)."""

    rows: int
    counts: dict[str, int] = field(default_factory=dict)
    tokenizer: str = "whitespace"
    max_tokens: int = 2048

    @property
    def problems(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A list<string> column joined into one string per row (lists of steps/completions)."""
    return pc.binary_join(col, " ") if pa.types.is_list(col.type) else col


def _empty(col: pa.ChunkedArray) -> int:
    if pa.types.is_list(col.type):
        flat = pc.list_flatten(col)
        lens = pc.list_value_length(col)
        empty_lists = pc.sum(pc.equal(lens, 0)).as_py() or 0
        blank = pc.sum(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(flat)), 0)).as_py() or 0
        return int(empty_lists + blank)
    return int(pc.sum(pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), True)).as_py() or 0)


def _token_counts(col: pa.ChunkedArray, tokenizer: str | None) -> pa.Array:
    """Tokens per row: whitespace-separated words (an estimate) or a local HF tokenizer's count."""
    col = pc.fill_null(col, "")
    if tokenizer is None:
        return pc.list_value_length(pc.utf8_split_whitespace(col))
    tok = _load_tokenizer(tokenizer)
    return pa.array([len(ids) for ids in tok(col.to_pylist(), add_special_tokens=False)["input_ids"]])


@functools.lru_cache(maxsize=2)
def _load_tokenizer(name: str) -> Any:
    """'default' (the embedded model's) or a local folder; a one-line error otherwise (never a hub look-up)."""
    from transformers import AutoTokenizer  # heavy: only when a tokenizer is asked for

    from alignloop.pipelines.models import DEFAULT_NAMES, resolve_model

    folder = resolve_model(name) if name.lower() in DEFAULT_NAMES else Path(name).expanduser()
    if not folder.is_dir():
        raise AlignloopError(f"tokenizer {name!r}: not a local folder; pass 'default' (the embedded model's), a "
                             "folder saved with save_pretrained, or no --tokenizer for a word-count estimate")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise AlignloopError(f"tokenizer {name!r}: cannot load it from {folder} "
                             f"({str(exc).splitlines()[0][:200]})") from None


def _chat_problem(prompt: str | None) -> str | None:
    """What is wrong with a prompt's chat, or None.

    ``bad_chat_prompt``: not a JSON list of {role, content} with known roles, a system turn after the first, or not
    ending with a user turn. ``consecutive_same_role``: otherwise valid but two turns in a row share a role (HH-RLHF
    transcripts have some); ChatML renders it, templates that demand user/assistant alternation raise.
    """
    try:
        msgs = json.loads(prompt) if prompt else None
    except json.JSONDecodeError:
        return "bad_chat_prompt"
    if not isinstance(msgs, list) or not msgs:
        return "bad_chat_prompt"
    if any(not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str)
           for m in msgs):
        return "bad_chat_prompt"
    turns = [m["role"] for m in msgs if m["role"] != "system"]
    if any(m["role"] == "system" for m in msgs[1:]) or not turns or turns[-1] != "user":
        return "bad_chat_prompt"
    if any(a == b for a, b in itertools.pairwise(turns)):
        return "consecutive_same_role"
    return None if turns[0] == "user" else "bad_chat_prompt"


def lint(table: pa.Table, kind: str, options: LintOptions = LintOptions()) -> LintReport:
    """Count problems in a built dataset (rows in the snapshot schema of ``kind``)."""
    counts: dict[str, int] = {}
    cols = _COMPLETION_COLUMNS[kind]
    counts["empty_completion"] = sum(_empty(table[c]) for c in cols if c != "answer")
    if kind == "pairwise":
        counts["chosen_equals_rejected"] = int(pc.sum(pc.equal(table["chosen"], table["rejected"])).as_py() or 0)
    prompt_tokens = _token_counts(table["prompt_text"], options.tokenizer)
    over = pa.array([False] * table.num_rows)
    for c in cols:
        total = pc.add(prompt_tokens, _token_counts(_text(table[c]), options.tokenizer))
        over = pc.or_(over, pc.greater(total, options.max_tokens))
    counts[f"over_{options.max_tokens}_tokens"] = int(pc.sum(over).as_py() or 0)
    problems = {p: _chat_problem(p) for p in pc.unique(table["prompt"]).to_pylist()}
    per_row = [problems[p] for p in table["prompt"].to_pylist()] if any(problems.values()) else []
    for name in ("bad_chat_prompt", "consecutive_same_role"):
        counts[name] = per_row.count(name)
    if kind == "steps":
        labels, steps = table["labels"], table["steps"]
        no_label = pc.or_(pc.equal(pc.list_value_length(labels), 0),
                          pc.not_equal(pc.list_value_length(labels), pc.list_value_length(steps)))
        flat_nulls = pc.list_parent_indices(labels).filter(pc.is_null(pc.list_flatten(labels)))
        rows_with_gaps = set(flat_nulls.to_pylist())
        counts["steps_without_labels"] = int(sum(
            bool(a) or i in rows_with_gaps for i, a in enumerate(pc.fill_null(no_label, True).to_pylist())))
    return LintReport(table.num_rows, counts, options.tokenizer or "whitespace", options.max_tokens)
