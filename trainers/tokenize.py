"""Chat-template tokenisation of snapshot rows into typed features, with truncation counted (never silent).

A prompt is rendered with the tokenizer's chat template (``add_generation_prompt=True``) and left-truncated to
``max_prompt_length`` (the end of the conversation is kept). A completion is its text plus the end-of-turn token,
right-truncated to what ``max_length`` leaves. Labels are the token ids on the completion and ``-100`` on the
prompt. PRM rows put a label only on the last token of each step (the last token of ``step + separator``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

IGNORE_INDEX = -100

ALIGNER_TEMPLATE = (
    "Edit the following Question-Answer pair to make it more helpful and harmless.\n\n"
    "Question: {question}\n\nAnswer: {answer}"
)
"""The Aligner (Ji et al. 2024) correction prompt: the model reads question + answer and writes the correction."""


@dataclass
class TruncationCounts:
    """How many rows the length limits touched; reported with the run, never silent."""

    rows: int = 0
    prompts_truncated: int = 0
    completions_truncated: int = 0
    steps_dropped: int = 0
    rows_dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenised prompt + completion; ``labels`` is ``-100`` on the prompt (same length as ``input_ids``)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def completion_tokens(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass(frozen=True, slots=True)
class PairFeature:
    row: int
    chosen: Encoded
    rejected: Encoded
    margin: float = 0.0
    prob: float = 1.0
    """The pair's soft label: the probability that ``chosen`` is preferred (1.0: a hard preference)."""


@dataclass(frozen=True, slots=True)
class UnpairedFeature:
    row: int
    completion: Encoded
    mismatched: Encoded
    """This prompt with another row's completion: the KTO reference point z0 is estimated from these."""
    desirable: bool


@dataclass(frozen=True, slots=True)
class ListFeature:
    row: int
    candidates: list[Encoded]
    scores: list[float]


@dataclass(frozen=True, slots=True)
class SeqFeature:
    """SFT row, or a PRM row whose ``labels`` are raw step labels (-1/0/+1) at step ends and -100 elsewhere."""

    row: int
    encoded: Encoded


@dataclass
class Encoder:
    """Tokenises rows for one run and counts truncation in ``counts``."""

    tokenizer: Any
    max_length: int
    max_prompt_length: int
    counts: TruncationCounts = field(default_factory=TruncationCounts)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render_prompt(self, prompt_json: str | None, prompt_text: str) -> str:
        """The prompt as the model sees it (chat template with the assistant turn opened)."""
        messages = json.loads(prompt_json) if prompt_json else [{"role": "user", "content": prompt_text}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return prompt_text + "\n"

    def prompt_ids(self, prompt_json: str | None, prompt_text: str) -> list[int]:
        """Prompt token ids, left-truncated to ``max_prompt_length`` (counted)."""
        ids = self._ids(self.render_prompt(prompt_json, prompt_text))
        self.counts.rows += 1
        if len(ids) > self.max_prompt_length:
            self.counts.prompts_truncated += 1
            ids = ids[-self.max_prompt_length:]
        return ids

    def completion(self, prompt: list[int], text: str) -> Encoded:
        """Prompt + completion (+ end-of-turn token), right-truncated to ``max_length`` (counted)."""
        ids = self._ids(text + (self.tokenizer.eos_token or ""))
        budget = self.max_length - len(prompt)
        if len(ids) > budget:
            self.counts.completions_truncated += 1
            ids = ids[:budget]
        return Encoded(prompt + ids, [IGNORE_INDEX] * len(prompt) + ids)

    def steps(self, prompt: list[int], steps: list[str], labels: list[int | None], separator: str) -> Encoded:
        """Prompt + steps, each followed by ``separator``; the raw label sits on each step's last token.

        Steps are tokenised one by one so label positions are exact; a step that does not fit in ``max_length`` is
        dropped with all later ones (counted in ``steps_dropped``). A step without a label gets ``-100``.
        """
        ids, out_labels = list(prompt), [IGNORE_INDEX] * len(prompt)
        for i, (step, label) in enumerate(zip(steps, labels, strict=True)):
            piece = self._ids(step + separator)
            if not piece or len(ids) + len(piece) > self.max_length:
                self.counts.steps_dropped += len(steps) - i
                break
            ids += piece
            out_labels += [IGNORE_INDEX] * (len(piece) - 1) + [IGNORE_INDEX if label is None else int(label)]
        return Encoded(ids, out_labels)


def encode_pairs(enc: Encoder, rows: list[dict[str, Any]]) -> list[PairFeature]:
    """Pairwise snapshot rows -> features (prompt tokenised once, shared by chosen and rejected)."""
    out = []
    for i, r in enumerate(rows):
        prompt = enc.prompt_ids(r["prompt"], r["prompt_text"])
        prob = r.get("prob")
        out.append(PairFeature(i, enc.completion(prompt, r["chosen"]), enc.completion(prompt, r["rejected"]),
                               float(r.get("margin") or 0.0), 1.0 if prob is None else min(max(float(prob), 0.0), 1.0)))
    return out


def encode_unpaired(enc: Encoder, rows: list[dict[str, Any]]) -> list[UnpairedFeature]:
    """Binary rows -> features; row i's mismatched completion is row (i+1)'s (fixed, so references can be cached)."""
    prompts = [enc.prompt_ids(r["prompt"], r["prompt_text"]) for r in rows]
    n = len(rows)
    return [
        UnpairedFeature(i, enc.completion(prompts[i], r["completion"]),
                        enc.completion(prompts[i], rows[(i + 1) % n]["completion"]), bool(r["label"]))
        for i, r in enumerate(rows)
    ]


def encode_labelled(enc: Encoder, rows: list[dict[str, Any]]) -> list[SeqFeature]:
    """Binary rows -> one feature each, prompt + completion, for a reward model that learns the label's sign (its
    ``labels`` hold the label, 1 desirable or 0 not, in every position)."""
    out = []
    for i, r in enumerate(rows):
        seq = enc.completion(enc.prompt_ids(r["prompt"], r["prompt_text"]), r["completion"])
        out.append(SeqFeature(i, Encoded(seq.input_ids, [int(bool(r["label"]))] * len(seq.input_ids))))
    return out


def encode_lists(enc: Encoder, rows: list[dict[str, Any]], max_candidates: int) -> list[ListFeature]:
    """Listwise rows (best first) -> features; missing scores become descending ranks (K-1, ..., 0)."""
    out = []
    for i, r in enumerate(rows):
        completions = list(r["completions"])[:max_candidates]
        if len(completions) < 2:
            enc.counts.rows_dropped += 1
            continue
        scores = r.get("scores")
        if not scores or any(s is None for s in scores[: len(completions)]):
            scores = [float(len(completions) - k - 1) for k in range(len(completions))]
        prompt = enc.prompt_ids(r["prompt"], r["prompt_text"])
        out.append(ListFeature(i, [enc.completion(prompt, c) for c in completions],
                               [float(s) for s in scores[: len(completions)]]))
    return out


def encode_steps(enc: Encoder, rows: list[dict[str, Any]], separator: str) -> list[SeqFeature]:
    out = []
    for i, r in enumerate(rows):
        prompt = enc.prompt_ids(r["prompt"], r["prompt_text"])
        out.append(SeqFeature(i, enc.steps(prompt, list(r["steps"]), list(r["labels"]), separator)))
    return out


def encode_sft(enc: Encoder, rows: list[dict[str, Any]]) -> list[SeqFeature]:
    """SFT rows (prompt -> completion) or correction rows (Aligner template over question + answer -> correction)."""
    out = []
    for i, r in enumerate(rows):
        if "correction" in r:
            content = ALIGNER_TEMPLATE.format(question=r["prompt_text"], answer=r["answer"])
            prompt = enc.prompt_ids(json.dumps([{"role": "user", "content": content}]), content)
            target = r["correction"]
        else:
            prompt = enc.prompt_ids(r["prompt"], r["prompt_text"])
            target = r["completion"]
        out.append(SeqFeature(i, enc.completion(prompt, target)))
    return out
