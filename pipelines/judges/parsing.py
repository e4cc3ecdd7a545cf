"""Read judge replies by their template's reply grammar (GRAMMARS: one record per template); anything else is invalid,
with the reason kept, never a guess.

Where a verdict stands (pairwise, binary, rating, listwise; the templates ask for the verdict alone):
  - alone on a line of its own: the whole reply ("B", "**B**", "[[B]]"; a lower-case "b" only as the whole reply), or
    a line after reasoning;
  - after a label, as the rest of its line: "Verdict: B", "**Final answer:** [[A]]", "The better answer is B",
    "Rating: 7/10", "Ranking: C > A > B";
  - a whole-line sentence: "Answer B is better", "It's a tie", "I would rate it 7";
  - at the very start of the reply, before an explanation: "A, because ...", "Yes. It is correct.", "8 - clear".
Every such statement in a reply must give the same verdict (two different ones are a contradiction), and the text
after the last must name no other ("The answer is A.\nActually, B."). A verdict is the whole rest of its line, so an
article is no letter: "My answer is a tie" is a tie, "The answer is a bit unclear" and "Tie-breaker: A" hold none.
Numbers keep their sign ("-3" is outside 1..10, not 3).

Steps: one line ``Step N: L`` per step, L in +1, 0, -1; a step labelled twice, a step the solution does not have or a
step line without a label makes the whole reply invalid; steps the reply leaves out stay unlabelled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from alignloop.pipelines.backends.base import TokenScores
from alignloop.warehouse.errors import AlignloopError

_REFUSAL = re.compile(
    r"^\W*(i\s*(?:can(?:no|')t|cannot|won't|will not|am not able|'m not able|am unable|'m unable)|"
    r"i'?m sorry|sorry\b|as an ai\b|i apologi[sz]e)",
    re.IGNORECASE,
)
_W = r"[\[\](){}\"'“”‘’*_]*"  # what may wrap a verdict: brackets, quotes, emphasis
_END = _W + r"\s*[.!]?\s*" + _W + r"\s*$"
_COLON = r"\s*[:=\-–—?]\s*"  # "Verdict: B", "Acceptable? Yes"
_IS = r"\s+(?i:is|was|would\s+be)\s*:?\s*"  # "The better answer is B"


@dataclass(frozen=True, slots=True)
class Reading:
    """What a reply says: ``verdict`` (None when unreadable) and, when unreadable, ``reason`` in words."""

    verdict: Any
    reason: str | None = None


@dataclass(frozen=True)
class Grammar:
    """The replies one template asks for: what a verdict looks like (see the module docstring for where it stands)."""

    template: str
    """The template (``pipelines/templates/NAME.txt``) whose replies this reads."""
    kind: Literal["pairwise", "binary", "rating", "listwise", "steps"]
    """Which judge reads it."""
    asks: str
    """The verdict the template asks for, in words (an unreadable reply's reason names it)."""
    token: str = ""
    """Regex of one verdict after a label or at the start of the reply (letters in capitals)."""
    alone: str = ""
    """Regex of one verdict alone on its line."""
    whole: str = ""
    """Regex of a verdict read only as the whole reply (a lower-case "b": in reasoning a line "a" is no verdict)."""
    labels: str = ""
    """Regex of the labels a verdict may follow (case-insensitive)."""
    mention: str = ""
    """Regex of a verdict named in passing; after the last statement it contradicts a different verdict."""
    sentences: tuple[str, ...] = ()
    """Whole-line sentences that state a verdict (group 1), matched against the line without markdown."""
    head: str = r"(?:\s*[.,;:!]|\s+[-–—]|\s+(?i:because|since|as)\b)(?=\s|$)"
    """What separates a verdict at the start of the reply from its explanation."""
    scale: tuple[int, int] = (0, 0)
    """Ratings: the lowest and highest score the template asks for."""
    value: Callable[[str, Grammar, Sequence[str]], tuple[Any, str | None]] | None = None
    """A stated token -> (verdict, None), or (None, why it is no verdict) (a score out of range, an unknown letter)."""


def _pairwise(token: str, g: Grammar, labels: Sequence[str]) -> tuple[Any, str | None]:
    return ("tie" if "tie" in token.lower() else token[-1].upper()), None  # "Response B" -> B


def _binary(token: str, g: Grammar, labels: Sequence[str]) -> tuple[Any, str | None]:
    return token.lower() == "yes", None


def _rating(token: str, g: Grammar, labels: Sequence[str]) -> tuple[Any, str | None]:
    m = re.fullmatch(r"([+\-−]?)\s*([0-9]+(?:\.[0-9]+)?)(?:\s*(?:/|(?i:out\s+of))\s*([0-9]+))?", token.strip())
    if m is None:
        return None, f"{token!r} is no number"
    value = float(m.group(2)) * (-1 if m.group(1) in ("-", "−") else 1)
    lo, hi = g.scale
    if m.group(3) is not None and int(m.group(3)) != hi:
        return None, f"{token.strip()} is not on the template's scale {lo}..{hi}"
    if not lo <= value <= hi:
        return None, f"{_show(value)} is outside {lo}..{hi}"
    return value, None


def _ranking(token: str, g: Grammar, labels: Sequence[str]) -> tuple[Any, str | None]:
    named = [x.upper() for x in re.findall(r"[A-Za-z]", token)]
    for x in named:
        if x not in labels:
            return None, f"{x} is not one of the answers {', '.join(labels)}"
        if named.count(x) > 1:
            return None, f"{x} ranked twice"
    missing = [x for x in labels if x not in named]
    if len(missing) > 1:  # one left out can only be the last; more are not a ranking
        return None, f"ranks {len(named)} of {len(labels)} answers"
    return [list(labels).index(x) for x in named + missing], None


_NUMBER = r"[+\-−]?[0-9]+(?:\.[0-9]+)?(?:\s*(?:/|(?i:out\s+of))\s*[0-9]+)?"
_SIDE = r"(?i:(?:answer|response|assistant|option)\s+)?[AB]|(?i:(?:a\s+)?tie)"  # "B", "Response B", "a tie"
_PAIRWISE = Grammar(
    "pairwise", "pairwise", "A, B or tie, alone or after a label such as 'Verdict:'",
    token=_SIDE, alone=_SIDE, whole="a|b",
    labels=r"(?:(?:my|the|final|overall|your)\s+)*(?:verdict|answer|decision|choice|winner|judge?ment|preference|"
           r"result|output|better\s+(?:answer|response|one)|preferred\s+(?:answer|response))",
    mention=r"(?<![\w'’])(A|B|(?i:tie))(?![\w'’])",
    sentences=(r"^(?i:(?:the\s+)?(?:answer|response|assistant|option)\s+)?" + _W + r"([AB])" + _W +
               r"\s+(?i:is\s+(?:clearly\s+)?(?:better|preferred|the\s+better(?:\s+(?:one|answer|response))?))" + _END,
               r"^(?i:i\s+(?:would\s+)?(?:prefer|choose|pick|select))\s+(?i:answer\s+|response\s+)?" + _W + r"([AB])"
               + _END,
               r"^(?i:it(?:'s|’s|\s+is)\s+)(?i:(a\s+tie))" + _END),
    value=_pairwise)
_BINARY = Grammar(
    "binary", "binary", "Yes or No, alone or after a label such as 'Verdict:'",
    token=r"(?i:yes|no)", alone=r"(?i:yes|no)",
    labels=r"(?:(?:my|the|final|your)\s+)*(?:verdict|answer|decision|judge?ment|acceptable|acceptability|"
           r"is\s+(?:the\s+)?answer\s+acceptable)",
    mention=r"(?<![\w'’])((?i:yes|no))(?=\s*(?:[.,;:!?]|$))", value=_binary)


def _rating_grammar(template: str, lo: int, hi: int) -> Grammar:
    return Grammar(
        template, "rating", f"a score from {lo} to {hi}, alone or after a label such as 'Rating:'",
        token=_NUMBER, alone=_NUMBER,
        labels=r"(?:(?:my|the|final|overall|your)\s+)*(?:[a-z]+\s+)?(?:rating|score|grade|verdict|answer)",
        mention=r"(?<![\w.])([+\-−]?[0-9]+(?:\.[0-9]+)?\s*(?:/|(?i:out\s+of))\s*[0-9]+)",
        sentences=(r"^(?i:i\s+(?:would\s+)?(?:rate|give|score)\s+(?:it|this|the\s+answer|this\s+answer)"
                   r"(?:\s+(?:a|an))?)\s+" + _W + "(" + _NUMBER + ")" + _END,),
        head=r"\s+[-–—](?=\s|$)",  # "8 - clear" ("1. The ..." opens a numbered list, "1, 2 and 3" a list)
        scale=(lo, hi), value=_rating)


_LISTWISE = Grammar(
    "listwise", "listwise", "the answers' letters best first, separated by '>', alone or after 'Ranking:'",
    token=r"[A-Z](?:\s*>\s*[A-Z])*", alone=r"[A-Z]|[A-Za-z](?:\s*>\s*[A-Za-z])+",
    labels=r"(?:(?:my|the|final|overall|your)\s+)*(?:ranking|order|answer|verdict)",
    mention=r"(?<![\w])([A-Za-z](?:\s*>\s*[A-Za-z])+)(?![\w])", value=_ranking)
_STEPS = Grammar("steps", "steps", "one line 'Step N: L' per step, L one of +1, 0, -1")

GRAMMARS: dict[str, Grammar] = {g.template: g for g in (
    _PAIRWISE, _BINARY, _rating_grammar("rating", 1, 10), _rating_grammar("rating_digit", 0, 9), _LISTWISE, _STEPS)}
"""Template name -> the grammar of its replies (``correction`` and ``aligner`` replies are text, not verdicts)."""


def grammar(template: str, kind: str) -> Grammar:
    """The grammar of ``template``'s replies, which a ``kind`` judge reads; a one-line error for any other."""
    g = GRAMMARS.get(template)
    if g is None or g.kind != kind:
        fits = ", ".join(n for n, x in GRAMMARS.items() if x.kind == kind)
        raise AlignloopError(f"a {kind} judge cannot read replies to template {template!r}; its templates: {fits}")
    return g


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.match(text or ""))


def _clean(line: str) -> str:
    """A line without markdown: bold and code marks, ``\\boxed{``, a heading, quote or bullet mark."""
    s = re.sub(r"\*\*|__|`|\\boxed\{|\\text\{", "", line).strip()
    return re.sub(r"^(?:#+|>|[-*•])\s+", "", s).strip()


def _statement(g: Grammar, line: str) -> str | None:
    """The verdict token a whole line states, or None."""
    s = _clean(line)
    for pat in (rf"^{_W}\s*({g.alone}){_END}", rf"^(?i:{g.labels}){_COLON}{_W}\s*({g.token}){_END}",
                rf"^(?i:{g.labels}){_IS}{_W}\s*({g.token}){_END}", *g.sentences):
        m = re.match(pat, s)
        if m:
            return m.group(1)
    return None


def _opening(g: Grammar, line: str) -> tuple[str, str] | None:
    """(token, the rest of the line) where the reply opens with a verdict before an explanation."""
    m = re.match(rf"^{_W}\s*({g.token}){_W}{g.head}(.*)$", _clean(line))
    return (m.group(1), m.group(2)) if m else None


def read(g: Grammar | str, text: str | None, labels: Sequence[str] = ()) -> Reading:
    """The verdict ``text`` states by grammar ``g`` (or a template's name); ``labels``: a ranking's letters."""
    g = GRAMMARS[g] if isinstance(g, str) else g
    if g.kind == "steps":
        raise AlignloopError("step replies hold one label per step: read them with read_steps")
    if not text or not text.strip():
        return Reading(None, "empty reply")
    lines = text.splitlines()
    found = [(i, tok, "") for i, ln in enumerate(lines) if (tok := _statement(g, ln)) is not None]
    if not found and g.whole and "\n" not in text.strip() and (m := re.match(rf"^{_W}\s*({g.whole}){_END}",
                                                                              _clean(text))):
        found = [(next(i for i, ln in enumerate(lines) if ln.strip()), m.group(1), "")]
    first = next(i for i, ln in enumerate(lines) if ln.strip())
    if (not found or found[0][0] != first) and (opening := _opening(g, lines[first])):
        found.insert(0, (first, *opening))
    if not found:
        return Reading(None, "a refusal" if is_refusal(text) else f"no verdict: the template asks for {g.asks}")
    values = []
    for i, tok, _ in found:
        v, why = g.value(tok, g, labels)
        if why:
            return Reading(None, f"{why} (line {i + 1})")
        if values and v != values[0][1]:
            return Reading(None, f"two verdicts: {_show(values[0][1], labels)} (line {values[0][0] + 1}) and "
                                 f"{_show(v, labels)} (line {i + 1})")
        values.append((i, v))
    last, _, rest = found[-1]
    verdict = values[0][1]
    for m in re.finditer(g.mention, "\n".join([rest, *lines[last + 1:]])):
        v, _ = g.value(m.group(1), g, labels)
        if v is not None and v != verdict:
            return Reading(None, f"{_show(v, labels)} named after the verdict {_show(verdict, labels)}")
    return Reading(verdict)


def _show(v: Any, labels: Sequence[str] = ()) -> str:
    if isinstance(v, bool):
        return "Yes" if v else "No"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return " > ".join(labels[i] for i in v)
    return str(v)


@dataclass(frozen=True, slots=True)
class StepsReading:
    labels: list[int | None]
    """One label in {-1, 0, +1} per step; None where the reply leaves the step out (or is unreadable)."""
    reason: str | None = None
    """Why steps are unlabelled (the whole reply unreadable, or the steps it leaves out); None when all are."""


_STEP_LINE = re.compile(r"^(?i:step)\s*([0-9]+)\s*[:=]\s*" + _W + r"\s*([+\-−]?)\s*([01])(?![0-9]|\.[0-9])" + _W +
                        r"[.,;]?(?:\s.*)?$")


def read_steps(text: str | None, n_steps: int) -> StepsReading:
    """The labels of a ``steps`` reply: lines ``Step N: L`` (other lines are commentary and ignored)."""
    none: list[int | None] = [None] * n_steps
    if not text or not text.strip():
        return StepsReading(none, "empty reply")
    labels = list(none)
    for no, line in enumerate(text.splitlines(), 1):
        s = _clean(line)
        if not re.match(r"^(?i:step)\s*[0-9]", s):
            continue
        m = _STEP_LINE.match(s)
        if m is None or len(re.findall(r"(?i:\bstep)\s*[0-9]", s)) > 1:
            return StepsReading(none, f"line {no} is no 'Step N: L' line: {s[:60]!r}")
        i, v = int(m.group(1)) - 1, int(m.group(3)) * (-1 if m.group(2) in ("-", "−") else 1)
        if not 0 <= i < n_steps:
            return StepsReading(none, f"line {no} labels step {i + 1} of a solution of {n_steps} steps")
        if labels[i] is not None:
            return StepsReading(none, f"step {i + 1} labelled twice (line {no})")
        labels[i] = v
    if all(v is None for v in labels):
        return StepsReading(none, "a refusal" if is_refusal(text) else f"no step labels: the template asks for "
                                                                       f"{_STEPS.asks}")
    left = [str(i + 1) for i, v in enumerate(labels) if v is None]
    return StepsReading(labels, f"step {', '.join(left)} not labelled" if left else None)


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


def logprob_reason(scores: TokenScores, candidates: Sequence[str]) -> str:
    """Why verdict-token log-probabilities gave no verdict."""
    if not scores.available:
        return "no log-probabilities"
    missing = [c for c in candidates if scores.logprobs.get(c) is None]
    return f"no log-probability for {', '.join(missing)}" if missing else f"no finite log-probability for " \
                                                                           f"{', '.join(candidates)}"
