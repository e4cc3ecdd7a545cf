"""Pairwise AI judge with position-swap debiasing: every pair is judged in both orders, in the same batch.

With verdict-token log-probabilities (RLAIF, Lee et al. 2023, "position bias" mitigation):

    p_AB = P("A") / (P("A") + P("B"))   with a shown first
    p_BA = the same with b shown first  ("A" there means b)
    prob_a = 1/2 * (p_AB + 1 - p_BA)

Without log-probabilities both verdicts are parsed; a disagreement is inconsistent and resolved by policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from alignloop.pipelines.backends.base import Backend, Conversation
from alignloop.pipelines.judges import calls
from alignloop.pipelines.judges.config import JudgeConfig, PairItem
from alignloop.pipelines.judges.parsing import grammar, logprob_reason, mass, read, two_way_prob
from alignloop.pipelines.judges.templates import Template, load_template, quoted
from alignloop.pipelines.models import provenance
from alignloop.warehouse.records import Comparison, to_arrow

CANDIDATES = ("A", "B")


def debiased_prob(p_ab: float, p_ba: float) -> float:
    """P(a better) averaged over both orders: ½·(p_AB + 1 − p_BA)."""
    return 0.5 * (p_ab + 1.0 - p_ba)


def winner_from_prob(prob_a: float, tie_band: float) -> str:
    if prob_a > 0.5 + tie_band:
        return "a"
    if prob_a < 0.5 - tie_band:
        return "b"
    return "tie"


def to_response(pos: str | None, a_first: bool) -> str | None:
    """A verdict as shown ("A"/"B"/"tie") -> the response it picks ("a"/"b"/"tie"), given the order shown."""
    if pos is None:
        return None
    if pos == "tie":
        return "tie"
    first = pos == "A"
    return "a" if first == a_first else "b"


def resolve(v_ab: str | None, v_ba: str | None, disagreement: str) -> tuple[str, bool | None]:
    """(winner, consistent) from the two orders' verdicts mapped to responses; any invalid order -> invalid."""
    if v_ab is None or v_ba is None:
        return "invalid", None
    if v_ab == v_ba:
        return v_ab, True
    if disagreement == "tie":
        return "tie", False
    if disagreement == "first":
        return v_ab, False
    return "invalid", False  # drop: stored (so it is not judged again) but never used as a label


@dataclass(frozen=True)
class PairwiseJudge:
    """Judge pairs with one backend and one template. ``judge`` is the id written to the warehouse."""

    backend: Backend
    config: JudgeConfig = field(default_factory=JudgeConfig)
    template: Template | None = None

    def __post_init__(self) -> None:
        if self.template is None:
            object.__setattr__(self, "template", load_template(self.config.template or "pairwise",
                                                               self.config.principles))
        self.config.one_aspect("a pairwise judge compares on")  # refused here, before anything is judged
        grammar(self.template.name, "pairwise")

    @property
    def judge(self) -> str:
        return self.template.judge_id(self.backend.name)

    @property
    def aspect(self) -> str:
        """What its verdicts are stored as judging (``--aspect``; the principles say what it weighs)."""
        return self.config.aspects[0]

    def ids(self, pairs: list[PairItem]) -> list[str]:
        return [Comparison.make_id(self.judge, p.a_id, p.b_id, self.aspect) for p in pairs]

    def conversations(self, pair: PairItem) -> tuple[Conversation, Conversation]:
        """(a shown first, b shown first)."""
        mc = self.config.max_chars
        q, a, b = quoted(pair.question, mc), quoted(pair.a_text, mc), quoted(pair.b_text, mc)
        return (self.template.render(question=q, response_a=a, response_b=b),
                self.template.render(question=q, response_a=b, response_b=a))

    def judge_pairs(self, pairs: list[PairItem], round_id: str) -> list[Comparison]:
        """Judge every pair in both orders; batches hold whole pairs (both orders together)."""
        out: list[Comparison] = []
        per_batch = max(self.config.calls.batch_size // 2, 1)
        for batch in calls.chunks(pairs, per_batch):
            out += self._judge_batch(batch, round_id)
        return out

    def _judge_batch(self, batch: list[PairItem], round_id: str) -> list[Comparison]:
        convs = [c for p in batch for c in self.conversations(p)]  # [ab_0, ba_0, ab_1, ba_1, ...]
        stats = calls.CallStats()
        scores = None
        if self.config.mode != "text":
            scores = calls.logprobs(self.backend, convs, list(CANDIDATES), self.config.calls, stats)
            if self.config.mode == "auto" and not all(s.available for s in scores):
                scores = None
        texts = None
        if scores is None:
            texts = [c.text for c in calls.generate(self.backend, convs, self.config.calls, stats)]
        share = stats.share(len(batch))
        rows = []
        for i, pair in enumerate(batch):
            if scores is not None:
                rows.append(self._from_scores(pair, scores[2 * i], scores[2 * i + 1], round_id, share))
            else:
                rows.append(self._from_texts(pair, texts[2 * i], texts[2 * i + 1], round_id, share))
        return rows

    def _meta(self, mode: str, share: dict, **extra: object) -> dict:
        return {"mode": mode, "template": self.template.name, "template_version": self.template.version,
                "principles": list(self.config.principles), **provenance(self.backend.name), **share, **extra}

    def _from_scores(self, pair: PairItem, s_ab, s_ba, round_id: str, share: dict) -> Comparison:
        p_ab, p_ba = two_way_prob(s_ab, *CANDIDATES), two_way_prob(s_ba, *CANDIDATES)
        cid = Comparison.make_id(self.judge, pair.a_id, pair.b_id, self.aspect)
        pos_ab = None if p_ab is None else ("A" if p_ab > 0.5 else "B" if p_ab < 0.5 else "tie")
        pos_ba = None if p_ba is None else ("A" if p_ba > 0.5 else "B" if p_ba < 0.5 else "tie")
        meta = self._meta("logprobs", share, p_ab=p_ab, p_ba=p_ba, pos_ab=pos_ab, pos_ba=pos_ba,
                          reason_ab=None if p_ab is not None else logprob_reason(s_ab, CANDIDATES),
                          reason_ba=None if p_ba is not None else logprob_reason(s_ba, CANDIDATES),
                          tie_band=self.config.tie_band, mass_ab=mass(s_ab, CANDIDATES),
                          mass_ba=mass(s_ba, CANDIDATES))
        if p_ab is None or p_ba is None:
            meta["invalid_reason"] = invalid_reason(meta["reason_ab"], meta["reason_ba"])
            return Comparison(cid, pair.prompt_id, pair.a_id, pair.b_id, "invalid", self.judge, "ai", round_id,
                              None, _fmt(s_ab), _fmt(s_ba), None, meta=meta, aspect=self.aspect)
        prob_a = debiased_prob(p_ab, p_ba)
        v_ab, v_ba = to_response(pos_ab, True), to_response(pos_ba, False)
        consistent = v_ab == v_ba and v_ab != "tie"
        return Comparison(cid, pair.prompt_id, pair.a_id, pair.b_id, winner_from_prob(prob_a, self.config.tie_band),
                          self.judge, "ai", round_id, prob_a, _fmt(s_ab), _fmt(s_ba), consistent, meta=meta,
                          aspect=self.aspect)

    def _from_texts(self, pair: PairItem, t_ab: str, t_ba: str, round_id: str, share: dict) -> Comparison:
        g = grammar(self.template.name, "pairwise")
        r_ab, r_ba = read(g, t_ab), read(g, t_ba)
        winner, consistent = resolve(to_response(r_ab.verdict, True), to_response(r_ba.verdict, False),
                                     self.config.disagreement)
        prob_a = {"a": 1.0, "b": 0.0, "tie": 0.5}.get(winner)
        meta = self._meta("text", share, pos_ab=r_ab.verdict, pos_ba=r_ba.verdict, reason_ab=r_ab.reason,
                          reason_ba=r_ba.reason, disagreement=self.config.disagreement)
        if winner == "invalid":
            meta["invalid_reason"] = invalid_reason(r_ab.reason, r_ba.reason)
        return Comparison(Comparison.make_id(self.judge, pair.a_id, pair.b_id, self.aspect), pair.prompt_id, pair.a_id,
                          pair.b_id, winner, self.judge, "ai", round_id, prob_a, t_ab, t_ba, consistent, meta=meta,
                          aspect=self.aspect)


def invalid_reason(reason_ab: str | None, reason_ba: str | None) -> str:
    """Why a comparison is invalid: each unreadable order's reason, else the two orders' disagreement (dropped)."""
    unread = [f"{order}: {why}" for order, why in (("a shown first", reason_ab), ("b shown first", reason_ba)) if why]
    return "; ".join(unread) or "the two orders disagree (disagreement policy: drop)"


def _fmt(scores) -> str:
    """The raw verdict of one order in log-prob mode: each candidate's log-probability."""
    if not scores.available:
        return "logprobs unavailable"
    return " ".join(f"{k}={v:.4f}" if v is not None else f"{k}=None" for k, v in scores.logprobs.items())


def comparisons_table(rows: list[Comparison]) -> pa.Table | None:
    return to_arrow(rows) if rows else None
