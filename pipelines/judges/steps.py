"""Step-level AI judge (PRM800K-style): each step of a solution labelled +1 / 0 / -1."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from alignloop.pipelines.backends.base import Backend
from alignloop.pipelines.judges import calls
from alignloop.pipelines.judges.config import JudgeConfig, ResponseItem
from alignloop.pipelines.judges.parsing import grammar, read_steps
from alignloop.pipelines.judges.templates import Template, fenced, load_template, quoted
from alignloop.pipelines.models import provenance
from alignloop.warehouse.records import StepLabel


def split_steps(item: ResponseItem) -> list[str]:
    """The response's stored steps, else its non-empty lines (or sentences for a one-line answer)."""
    if item.steps:
        return list(item.steps)
    lines = [ln.strip() for ln in item.text.splitlines() if ln.strip()]
    if len(lines) > 1:
        return lines
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", item.text) if s.strip()] or [item.text]


def finish_reason(labels: list[int | None]) -> str:
    """PRM800K's finish reasons: ``found_error`` at the first -1, ``solution`` when every step is labelled and
    none is wrong, ``invalid`` when the judge left steps unlabelled."""
    if -1 in labels:
        return "found_error"
    return "solution" if None not in labels else "invalid"


@dataclass(frozen=True)
class StepJudge:
    backend: Backend
    config: JudgeConfig = field(default_factory=JudgeConfig)
    template: Template | None = None

    def __post_init__(self) -> None:
        if self.template is None:
            object.__setattr__(self, "template", load_template(self.config.template or "steps",
                                                               self.config.principles))
        grammar(self.template.name, "steps")  # refused here, before anything is judged

    @property
    def judge(self) -> str:
        return self.template.judge_id(self.backend.name)

    def ids(self, items: list[ResponseItem]) -> list[str]:
        return [StepLabel.make_id(self.judge, it.id, i) for it in items for i in range(len(split_steps(it)))]

    def judge_items(self, items: list[ResponseItem], round_id: str) -> list[StepLabel]:
        out: list[StepLabel] = []
        mc = self.config.max_chars
        for batch in calls.chunks(items, self.config.calls.batch_size):
            steps = [split_steps(it) for it in batch]
            convs = [self.template.render(question=quoted(it.question, mc),
                                          steps="\n".join(fenced(f"STEP {i + 1}", s, mc) for i, s in enumerate(st)))
                     for it, st in zip(batch, steps)]
            stats = calls.CallStats()
            texts = [c.text for c in calls.generate(self.backend, convs, self.config.calls, stats)]
            share = stats.share(len(batch))
            for it, st, text in zip(batch, steps, texts):
                reading = read_steps(text, len(st))
                labels = reading.labels
                reason = finish_reason(labels)
                meta = {"template": self.template.name, "template_version": self.template.version, "raw": text,
                        "steps": len(st), "invalid_reason": reading.reason, **provenance(self.backend.name), **share}
                out += [StepLabel(StepLabel.make_id(self.judge, it.id, i), it.prompt_id, it.id, i, lab, self.judge,
                                  "ai", round_id, flagged=lab is None, finish_reason=reason, meta=meta)
                        for i, lab in enumerate(labels)]
        return out
