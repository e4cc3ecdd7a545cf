"""Pointwise AI judges: a 1-10 rating per aspect, and a binary acceptable / not acceptable verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from alignloop.pipelines.backends.base import Backend, TokenScores
from alignloop.pipelines.judges import calls
from alignloop.pipelines.judges.config import JudgeConfig, ResponseItem
from alignloop.pipelines.judges.parsing import grammar, logprob_reason, mass, read, two_way_prob
from alignloop.pipelines.judges.templates import Template, load_template, quoted
from alignloop.pipelines.models import provenance
from alignloop.warehouse.records import Rating

BINARY_CANDIDATES = ("Yes", "No")


@dataclass(frozen=True)
class _Pointwise:
    backend: Backend
    config: JudgeConfig = field(default_factory=JudgeConfig)
    template: Template | None = None
    default_template = ""
    kind = ""

    def __post_init__(self) -> None:
        if self.template is None:
            object.__setattr__(self, "template", load_template(self.config.template or self.default_template,
                                                               self.config.principles))
        grammar(self.template.name, self.kind)  # refused here, before anything is judged

    @property
    def judge(self) -> str:
        return self.template.judge_id(self.backend.name)

    def _meta(self, share: dict, **extra: object) -> dict:
        return {"template": self.template.name, "template_version": self.template.version,
                "principles": list(self.config.principles), **provenance(self.backend.name), **share, **extra}


@dataclass(frozen=True)
class RatingJudge(_Pointwise):
    """1-10 per aspect; an unparseable reply is a rating with score NULL and the reply as rationale.

    With ``mode="logprobs"`` (direct RLAIF's scoring, Lee et al. 2023) no text is generated: the ``rating_digit``
    template asks for a digit 0-9 (one token each, where "10" would share its first token with "1") and the score is
    the expected digit under the judge's next-token probabilities, renormalised over the ten digits; scale 0..9.
    """

    default_template = "rating"
    kind = "rating"

    def __post_init__(self) -> None:
        if self.template is None and self.config.mode == "logprobs" and not self.config.template:
            object.__setattr__(self, "template", load_template("rating_digit", self.config.principles))
        super().__post_init__()

    def ids(self, items: list[ResponseItem]) -> list[str]:
        return [Rating.make_id(self.judge, it.id, a) for it in items for a in self.config.aspects]

    def judge_items(self, items: list[ResponseItem], round_id: str) -> list[Rating]:
        todo = [(it, a) for it in items for a in self.config.aspects]
        out = []
        mc = self.config.max_chars
        for batch in calls.chunks(todo, self.config.calls.batch_size):
            convs = [self.template.render(question=quoted(it.question, mc), response=quoted(it.text, mc), aspect=a)
                     for it, a in batch]
            stats = calls.CallStats()
            if self.config.mode == "logprobs":  # (score, rationale, meta) per conversation; scale 0..9
                scores = calls.logprobs(self.backend, convs, list(DIGITS), self.config.calls, stats)
                digits = [expected_digit(s) for s in scores]
                found = [(d, None, {"mode": "logprobs", "mass": mass(s, DIGITS)},
                          None if d is not None else logprob_reason(s, DIGITS)) for d, s in zip(digits, scores)]
                scale = (0.0, 9.0)
            else:  # the template's scale: 1..10 (rating), 0..9 (rating_digit)
                g = grammar(self.template.name, "rating")
                texts = [c.text for c in calls.generate(self.backend, convs, self.config.calls, stats)]
                readings = [read(g, text) for text in texts]
                found = [(r.verdict, text, {}, r.reason) for text, r in zip(texts, readings)]
                scale = (float(g.scale[0]), float(g.scale[1]))
            share = stats.share(len(batch))
            for (it, a), (score, rationale, extra, why) in zip(batch, found):
                out.append(Rating(Rating.make_id(self.judge, it.id, a), it.prompt_id, it.id, score, *scale,
                                  self.judge, "ai", round_id, aspect=a, rationale=rationale,
                                  meta=self._meta(share, **extra, invalid=score is None, invalid_reason=why)))
        return out


DIGITS = tuple(str(d) for d in range(10))


def expected_digit(scores: TokenScores) -> float | None:
    """The expected digit under the next-token log-probabilities of "0".."9", renormalised over them; None
    without log-probabilities. A digit an endpoint leaves out of its top log-probabilities weighs nothing."""
    if not scores.available:
        return None
    logps = {d: v for d in DIGITS if (v := scores.logprobs.get(d)) is not None and not math.isnan(v)}
    top = max(logps.values(), default=-math.inf)
    if math.isinf(top):
        return None
    weights = {d: math.exp(v - top) for d, v in logps.items()}
    return sum(int(d) * w for d, w in weights.items()) / sum(weights.values())


@dataclass(frozen=True)
class BinaryJudge(_Pointwise):
    """Acceptable (1) or not (0) on a 0..1 scale; P(Yes) / (P(Yes) + P(No)) kept in meta when log-probs exist."""

    default_template = "binary"
    kind = "binary"

    def ids(self, items: list[ResponseItem]) -> list[str]:
        return [Rating.make_id(self.judge, it.id, "acceptable", kind="binary") for it in items]

    def judge_items(self, items: list[ResponseItem], round_id: str) -> list[Rating]:
        out = []
        mc = self.config.max_chars
        for batch in calls.chunks(items, self.config.calls.batch_size):
            convs = [self.template.render(question=quoted(it.question, mc), response=quoted(it.text, mc))
                     for it in batch]
            stats = calls.CallStats()
            probs: list[float | None] | None = None
            masses: list[float | None] = [None] * len(batch)
            if self.config.mode != "text":
                scores = calls.logprobs(self.backend, convs, list(BINARY_CANDIDATES), self.config.calls, stats)
                if self.config.mode == "logprobs" or all(s.available for s in scores):
                    probs = [two_way_prob(s, *BINARY_CANDIDATES) for s in scores]
                    masses = [mass(s, BINARY_CANDIDATES) for s in scores]
            texts: list[str | None] = [None] * len(batch)
            if probs is None:
                texts = [c.text for c in calls.generate(self.backend, convs, self.config.calls, stats)]
            share = stats.share(len(batch))
            for i, it in enumerate(batch):
                if probs is not None:
                    p = probs[i]
                    score = None if p is None else float(p >= 0.5)
                    meta = self._meta(share, mode="logprobs", p_yes=p, mass=masses[i], invalid=score is None,
                                      invalid_reason=None if p is not None else
                                      logprob_reason(scores[i], BINARY_CANDIDATES))
                else:
                    r = read("binary", texts[i])
                    score = None if r.verdict is None else float(r.verdict)
                    meta = self._meta(share, mode="text", invalid=score is None, invalid_reason=r.reason)
                out.append(Rating(Rating.make_id(self.judge, it.id, "acceptable", kind="binary"), it.prompt_id,
                                  it.id, score, 0.0, 1.0, self.judge, "ai", round_id, aspect="acceptable",
                                  rationale=texts[i], meta=meta))
        return out
