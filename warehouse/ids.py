"""Content-hash ids: a row's id is the sha256 of the canonical JSON of what defines it."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

ID_HEX = 32  # 128 bits: collisions are not a practical concern at warehouse scale


_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """Text as compared for exact dedup: NFKC, lower case, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _WS.sub(" ", _PUNCT.sub(" ", text)).strip()


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 kept, floats as Python repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_id(kind: str, obj: Any) -> str:
    """Hex id of ``obj`` within namespace ``kind`` (the kind keeps equal payloads of two tables apart)."""
    digest = hashlib.sha256(f"{kind}\x00{canonical_json(obj)}".encode())
    return digest.hexdigest()[:ID_HEX]


def prompt_id(messages: list[dict[str, str]]) -> str:
    """A prompt is defined by its chat messages (role and content only)."""
    return content_id("prompt", [{"role": m["role"], "content": m["content"]} for m in messages])


def model_id(uri: str, role: str) -> str:
    return content_id("model", {"uri": uri, "role": role})


def response_id(
    prompt: str,
    model: str,
    sampling: dict[str, Any] | None,
    seed: int | None,
    sample_index: int,
    text: str | None = None,
) -> str:
    """A sampled response: prompt, model, sampling parameters, seed and sample index.

    Responses that were not sampled by the platform (imported, human edits, corrections) also hash
    their text, since two different imported answers may share everything else.
    """
    key: dict[str, Any] = {"prompt": prompt, "model": model, "sampling": sampling or {}, "seed": seed,
                           "index": sample_index}
    if text is not None:
        key["text"] = text
    return content_id("response", key)


def imported_response_id(prompt: str, text: str, origin: str, steps: list[str] | None = None) -> str:
    """A response that came in a file: its prompt, its text, what it is (an answer, a human edit) and its steps.

    Not the file, the format or the source name: the same answer in a renamed, re-downloaded or overlapping file is
    the same response.
    """
    return content_id("response", {"prompt": prompt, "text": text, "origin": origin, "steps": steps})


def label_id(kind: str, labeller: str, items: list[str] | dict[str, Any], label: Any, aspect: str = "overall") -> str:
    """Feedback that came in a file: its kind, who labelled it, the items labelled and the label itself.

    A data set's anonymous labellers can give the same items different labels (two rows, both kept), while a second
    copy of a file gives the same label again (one row): so the label is part of the identity, and the file is not.
    """
    if aspect != "overall":
        items = {"items": items, "aspect": aspect}
    return content_id("label", {"kind": kind, "by": labeller, "items": items, "label": label})


def judgment_id(kind: str, judge: str, items: list[str] | dict[str, Any], aspect: str = "overall") -> str:
    """A judgment: its kind, the judge (model + template version, verifier, or annotator) and the items judged;
    with an ``aspect`` other than overall, the responses judged and that aspect (an overall judgment keeps the id it
    had before comparisons, rankings and corrections had aspects)."""
    if aspect != "overall":
        items = {"responses": items, "aspect": aspect}
    return content_id("judgment", {"kind": kind, "judge": judge, "items": items})


def hash_parts(ids: Iterable[str], parts: int, rank: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Each distinct id's part (0-based) when the ids, ordered by a sha256 of each, are cut into ``parts`` runs of
    sizes that differ by at most one: a split that depends on the set of ids only, never on their order (sDPO's
    stages, weak-to-strong's halves). With ``rank`` (id -> a sortable key), the ids are ordered by it first, the hash
    breaking ties: part 0 holds the lowest ranks."""
    ordered = sorted(set(ids), key=lambda p: (rank[p] if rank is not None else 0,
                                              hashlib.sha256(p.encode()).hexdigest()))
    return {p: i * parts // len(ordered) for i, p in enumerate(ordered)}
