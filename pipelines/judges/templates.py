"""Judge templates: package-data text files, principles inserted, versioned by a short hash, items fenced.

The judge id stored in the warehouse is ``f"{model}:{template_name}@{template_hash}"`` (the model as
:func:`pipelines.models.model_name` names it: a local folder by its content); it is part of every judgment id, so a
changed template or changed principles make new judgments instead of overwriting old ones.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from importlib.resources import files

from alignloop.pipelines.backends.base import Conversation
from alignloop.pipelines.models import model_name
from alignloop.warehouse.errors import AlignloopError

PRINCIPLES: dict[str, str] = {
    "helpful": "Helpful: the answer addresses what was asked, correctly and usefully, without padding.",
    "harmless": "Harmless: the answer does not help anyone cause harm and declines harmful requests politely.",
    "honest": "Honest: the answer is truthful, does not invent facts and says when it is unsure.",
}
DEFAULT_PRINCIPLES = ("helpful", "harmless", "honest")
TEMPLATE_NAMES = ("pairwise", "listwise", "rating", "rating_digit", "binary", "steps", "correction", "aligner")
"""``aligner``: the prompt an Aligner model is trained on (``trainers.tokenize.ALIGNER_TEMPLATE``), for corrections by
one (``alignloop train sft`` on a correction dataset)."""
HASH_CHARS = 8
_FENCE_OPEN, _FENCE_CLOSE = "[[[", "]]]"


@dataclass(frozen=True)
class Template:
    """A judge template with its principles filled in; ``version`` is the short hash of that text."""

    name: str
    """Template file name without ``.txt`` (e.g. "pairwise")."""
    text: str
    """Template text with ``${principles}`` already substituted; other ``${...}`` fields are filled per item."""
    version: str
    """First HASH_CHARS hex digits of sha256(text)."""

    def judge_id(self, model: str) -> str:
        """The judge as stored in the warehouse: ``model:template@hash`` (model as :func:`model_name` names it)."""
        return f"{model_name(model)}:{self.name}@{self.version}"

    def render(self, **fields: str) -> Conversation:
        """One user message with ``fields`` substituted once (text inside a field is never re-expanded)."""
        try:
            content = string.Template(self.text).substitute(fields)
        except KeyError as exc:
            raise AlignloopError(f"template {self.name!r} needs field {exc.args[0]!r}") from None
        return [{"role": "user", "content": content}]


def principles_text(principles: tuple[str, ...] | list[str]) -> str:
    """Bullet list of principles; names from PRINCIPLES or free text of your own (anything with a space)."""
    if not principles:
        raise AlignloopError("at least one principle is needed")
    lines = []
    for p in principles:
        if p in PRINCIPLES:
            lines.append(f"- {PRINCIPLES[p]}")
        elif " " in p.strip():
            lines.append(f"- {p.strip()}")
        else:
            raise AlignloopError(f"unknown principle {p!r}; known: {', '.join(PRINCIPLES)} (or write a sentence)")
    return "\n".join(lines)


def load_template(name: str, principles: tuple[str, ...] | list[str] = DEFAULT_PRINCIPLES,
                  text: str | None = None) -> Template:
    """Load ``pipelines/templates/NAME.txt`` (or use ``text``) and insert the principles.

    Args:
        name: template name; also the name used in the judge id.
        principles: principle names (see PRINCIPLES) or sentences.
        text: template text to use instead of the packaged file (custom templates).
    """
    if text is None:
        path = files("alignloop.pipelines") / "templates" / f"{name}.txt"
        if not path.is_file():
            raise AlignloopError(f"unknown judge template {name!r}; known: {', '.join(TEMPLATE_NAMES)}")
        text = path.read_text(encoding="utf-8")
    # "$" in a principle is doubled so render() turns it back into "$" instead of reading a field.
    filled = text.replace("${principles}", principles_text(principles).replace("$", "$$"))
    version = hashlib.sha256(filled.encode("utf-8")).hexdigest()[:HASH_CHARS]
    return Template(name, filled, version)


def escape(text: str) -> str:
    """Break up fence markers inside ``text`` so it cannot close (or open) a fence: ``[[[`` -> ``[ [ [``."""
    while _FENCE_OPEN in text or _FENCE_CLOSE in text:
        text = text.replace(_FENCE_OPEN, "[ [ [").replace(_FENCE_CLOSE, "] ] ]")
    return text


def clip(text: str, max_chars: int | None) -> str:
    """Keep the first ``max_chars`` characters (judging long transcripts on a small CPU model)."""
    if max_chars is None or len(text) <= max_chars:
        return text
    return text[:max_chars].rstrip() + " ..."


def fenced(label: str, text: str, max_chars: int | None = None) -> str:
    """``text`` between fixed BEGIN/END markers, escaped so it cannot end the fence early."""
    return f"{_FENCE_OPEN}BEGIN {label}{_FENCE_CLOSE}\n{escape(clip(text, max_chars))}\n{_FENCE_OPEN}END {label}{_FENCE_CLOSE}"


def quoted(text: str, max_chars: int | None = None) -> str:
    """A value for a field the template itself fences: clipped and escaped."""
    return escape(clip(text, max_chars))


def letters(k: int) -> list[str]:
    """Position labels A, B, C, ... for k items (at most 26)."""
    if not 1 <= k <= 26:
        raise AlignloopError(f"can show 1 to 26 answers at once, got {k}")
    return [chr(ord("A") + i) for i in range(k)]
