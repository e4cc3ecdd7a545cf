"""Parse judge replies. Anything unclear (no verdict, two verdicts, a refusal) is None, i.e. invalid, never a guess."""

from __future__ import annotations

import math
import re

from pipelines.backends.base import TokenScores

_REFUSAL = re.compile(
    r"^\W*(i\s*(?:can(?:no|')t|cannot|won't|will not|am not able|'m not able|am unable|'m unable)|"
    r"i'?m sorry|sorry\b|as an ai\b|i apologi[sz]e)",
    re.IGNORECASE,
)
_ONLY = re.compile(r"^[\s\[\(\*\"'`]*(A|B|tie)[\s\]\)\*\"'`.!]*$", re.IGNORECASE)
_PATTERNS = (
    re.compile(r"^[\s\[\(\*\"'`]*(A|B)(?=[\s\]\)\*\"'`.:,;!]|$)"),  # "A", "A.", "(B) because ..."
    re.compile(r"\b(?:verdict|winner|choice|answer)\s*(?:is)?\s*[:\-]?\s*[\[\(\*\"'`]*\s*(A|B|tie)\b", re.IGNORECASE),
    re.compile(r"\b(?:answer|response|assistant)\s+(A|B)\s+(?:is|was)\s+(?:better|preferred|the better)\b"),
    re.compile(r"^\W*(tie)\b", re.IGNORECASE),
)


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text or ""))


def parse_pairwise(text: str) -> str | None:
    """"A", "B", "tie" as shown to the judge, or None when the reply holds no single clear verdict."""
    if not text or not text.strip() or is_refusal(text):
        return None
    m = _ONLY.match(text)
    if m:
        return _norm(m.group(1))
    explicit = {_norm(m.group(1)) for pat in _PATTERNS[1:3] for m in pat.finditer(text)}
    if explicit:
        return explicit.pop() if len(explicit) == 1 else None
    found = {_norm(m.group(1)) for pat in (_PATTERNS[0], _PATTERNS[3]) for m in pat.finditer(text)}
    mentions = set(re.findall(r"(?<![A-Za-z])(A|B)(?![A-Za-z])", text))
    if len(found) != 1 or len(mentions) > 1:  # "A or B ...", "A is good but B is better": no clear verdict
        return None
    return found.pop()


def _norm(v: str) -> str:
    return "tie" if v.lower() == "tie" else v.upper()


def parse_ranking(text: str, labels: list[str]) -> list[int] | None:
    """Positions best first from a reply like ``C > A > B``; one missing label (the last) is filled in."""
    if not text or is_refusal(text):
        return None
    allowed = set(labels)
    seen: list[str] = []
    for tok in re.findall(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", text):
        if tok in allowed and tok not in seen:
            seen.append(tok)
        elif tok not in allowed:
            return None
    missing = [x for x in labels if x not in seen]
    if len(missing) > 1:
        return None
    seen += missing
    return [labels.index(x) for x in seen]


def parse_rating(text: str, lo: int = 1, hi: int = 10) -> float | None:
    """The first integer in [lo, hi] when the reply holds exactly one number (``7``, ``7/10`` or ``Rating: 7``)."""
    if not text or is_refusal(text):
        return None
    nums = re.findall(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.])", text)
    if nums[1:2] == [str(hi)] and len(nums) == 2:  # "7/10"
        nums = nums[:1]
    if len(nums) != 1:
        return None
    v = float(nums[0])
    return v if lo <= v <= hi else None


def parse_binary(text: str) -> bool | None:
    if not text or is_refusal(text):
        return None
    words = set(re.findall(r"[a-z]+", text.lower()))
    yes, no = bool(words & {"yes", "acceptable"}), bool(words & {"no", "unacceptable", "not"})
    if yes == no:
        return None
    return yes


def parse_steps(text: str, n_steps: int) -> list[int | None]:
    """One label in {-1, 0, +1} per step from lines like ``Step 2: -1``; None for steps the reply leaves out."""
    labels: list[int | None] = [None] * n_steps
    if not text or is_refusal(text):
        return labels
    for m in re.finditer(r"step\s*(\d+)\s*[:=\-]\s*([+\-−]?\s*[01])\b", text, re.IGNORECASE):
        i = int(m.group(1)) - 1
        v = int(m.group(2).replace(" ", "").replace("−", "-"))
        if 0 <= i < n_steps and labels[i] is None:
            labels[i] = v
    return labels


def two_way_prob(scores: TokenScores, first: str, second: str) -> float | None:
    """P(first) / (P(first) + P(second)) from log-probabilities, computed stably; None if either is missing.

    Equal to sigmoid(logp_first - logp_second): the mass on other tokens cancels.
    """
    if not scores.available:
        return None
    la, lb = scores.logprobs.get(first), scores.logprobs.get(second)
    if la is None or lb is None or (math.isinf(la) and math.isinf(lb)) or math.isnan(la) or math.isnan(lb):
        return None
    d = la - lb
    if d >= 0:
        return 1.0 / (1.0 + math.exp(-d))
    e = math.exp(d)
    return e / (1.0 + e)


def mass(scores: TokenScores, candidates: tuple[str, ...]) -> float | None:
    """Total probability on the candidate tokens (how much the judge wanted to answer in the format at all)."""
    if not scores.available:
        return None
    vals = [scores.logprobs.get(c) for c in candidates]
    return sum(math.exp(v) for v in vals if v is not None)
