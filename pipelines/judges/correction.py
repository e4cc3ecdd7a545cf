"""Correction judge (Aligner's Q-A-C): rewrite an answer under the principles into a new ``aligner`` response."""

from __future__ import annotations

from dataclasses import dataclass, field

from alignloop.pipelines.backends.base import Backend, Sampling
from alignloop.pipelines.judges import calls
from alignloop.pipelines.judges.config import JudgeConfig, ResponseItem
from alignloop.pipelines.judges.templates import Template, load_template, quoted
from alignloop.pipelines.models import model_name, provenance
from alignloop.warehouse import ids
from alignloop.warehouse.records import Correction, Response

CORRECTION_SAMPLING = Sampling(n=1, temperature=0.0, max_new_tokens=256)


@dataclass(frozen=True)
class CorrectionResult:
    responses: list[Response]
    """New responses (origin 'aligner', parent_id = the original)."""
    corrections: list[Correction]
    invalid: list[tuple[str, str]]
    """(original response id, raw reply) where the judge gave no usable correction (an empty reply)."""


@dataclass(frozen=True)
class CorrectionJudge:
    backend: Backend
    config: JudgeConfig = field(default_factory=JudgeConfig)
    template: Template | None = None
    sampling: Sampling = CORRECTION_SAMPLING

    def __post_init__(self) -> None:
        if self.template is None:
            object.__setattr__(self, "template", load_template(self.config.template or "correction",
                                                               self.config.principles))
        self.config.one_aspect("a correction judge corrects for")  # refused here, before anything is judged

    @property
    def judge(self) -> str:
        return self.template.judge_id(self.backend.name)

    @property
    def aspect(self) -> str:
        """What its corrections are stored as correcting for (``--aspect``; the principles say what it weighs)."""
        return self.config.aspects[0]

    def ids(self, items: list[ResponseItem]) -> list[str]:
        return [Correction.make_id(self.judge, it.id, self.aspect) for it in items]

    def judge_items(self, items: list[ResponseItem], round_id: str) -> CorrectionResult:
        responses, corrections, invalid = [], [], []
        mc = self.config.max_chars
        sampling = self.sampling.identity()
        model, path = model_name(self.backend.name), provenance(self.backend.name)
        for batch in calls.chunks(items, self.config.calls.batch_size):
            convs = [self.template.render(question=quoted(it.question, mc), response=quoted(it.text, mc))
                     for it in batch]
            stats = calls.CallStats()
            done = calls.generate(self.backend, convs, self.config.calls, stats, self.sampling)
            share = stats.share(len(batch))
            for it, comp in zip(batch, done):
                text = comp.text.strip()
                # A refusal may be the right correction of a harmful answer, so only an empty reply is invalid.
                if not text:
                    invalid.append((it.id, comp.text))
                    continue
                meta = {"template": self.template.name, "template_version": self.template.version,
                        "principles": list(self.config.principles), "unchanged": text == it.text.strip(), **path,
                        **share}
                # Identity includes the original: two answers corrected into the same text stay two rows.
                rid = ids.response_id(it.prompt_id, model, {**sampling, "parent_id": it.id}, None, 0, text=text)
                resp = Response(rid, it.prompt_id, model, round_id, text, "aligner", sampling,
                                parent_id=it.id, finish_reason=comp.finish_reason, prompt_tokens=comp.prompt_tokens,
                                completion_tokens=comp.completion_tokens, meta={"judge": self.judge, **path})
                responses.append(resp)
                corrections.append(Correction(Correction.make_id(self.judge, it.id, self.aspect), it.prompt_id, it.id,
                                              resp.id, self.judge, "ai", round_id, meta=meta, aspect=self.aspect))
        return CorrectionResult(responses, corrections, invalid)
