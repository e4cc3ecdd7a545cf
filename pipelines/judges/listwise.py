"""Listwise AI judge: rank k answers under several permutations and aggregate by Borda count."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from alignloop.pipelines.backends.base import Backend
from alignloop.pipelines.judges import calls
from alignloop.pipelines.judges.config import GroupItem, JudgeConfig
from alignloop.pipelines.judges.parsing import grammar, read
from alignloop.pipelines.judges.templates import Template, fenced, letters, load_template, quoted
from alignloop.pipelines.models import provenance
from alignloop.warehouse.ids import content_id
from alignloop.warehouse.records import Ranking


def permutations(k: int, n_perms: int, kind: str = "cyclic", seed: int = 0) -> list[list[int]]:
    """``n_perms`` orders of ``range(k)``; perm[j] is the item shown at position j.

    cyclic: rotations by j * max(1, k // n_perms), so each item visits different positions;
    random: seeded shuffles (the identity first, so one order is always the stored one).
    """
    base = list(range(k))
    if kind == "cyclic":
        step = max(1, k // n_perms)
        perms = [base[(j * step) % k:] + base[:(j * step) % k] for j in range(n_perms)]
    else:
        rng = random.Random(seed)
        perms = [base]
        for _ in range(n_perms - 1):
            p = base[:]
            rng.shuffle(p)
            perms.append(p)
    return perms


def borda(rankings: list[list[int]], k: int) -> tuple[list[int], list[float]]:
    """Borda count: in each ranking (item indices best first) position r earns k - 1 - r points.

    Returns:
        (item indices best first, their total points); ties keep the lower index first.
    """
    points = [0.0] * k
    for ranking in rankings:
        for r, item in enumerate(ranking):
            points[item] += k - 1 - r
    order = sorted(range(k), key=lambda i: (-points[i], i))
    return order, [points[i] for i in order]


@dataclass(frozen=True)
class ListwiseJudge:
    backend: Backend
    config: JudgeConfig = field(default_factory=JudgeConfig)
    template: Template | None = None

    def __post_init__(self) -> None:
        if self.template is None:
            object.__setattr__(self, "template", load_template(self.config.template or "listwise",
                                                               self.config.principles))
        self.config.one_aspect("a listwise judge ranks by")  # refused here, before anything is judged
        grammar(self.template.name, "listwise")

    @property
    def judge(self) -> str:
        return self.template.judge_id(self.backend.name)

    @property
    def aspect(self) -> str:
        """What its rankings are stored as ranking by (``--aspect``; the principles say what it weighs)."""
        return self.config.aspects[0]

    def ids(self, groups: list[GroupItem]) -> list[str]:
        return [Ranking.make_id(self.judge, list(g.ids), self.aspect) for g in groups]

    def _perms(self, group: GroupItem) -> list[list[int]]:
        seed = int(content_id("perm", [self.config.seed, list(group.ids)])[:8], 16)
        return permutations(len(group.ids), self.config.permutations, self.config.permutation_kind, seed)

    def render(self, group: GroupItem, perm: list[int]):
        labels = letters(len(perm))
        mc = self.config.max_chars
        body = "\n\n".join(fenced(f"ANSWER {lab}", group.texts[i], mc) for lab, i in zip(labels, perm))
        return self.template.render(question=quoted(group.question, mc), responses=body, count=str(len(perm)),
                                    example=" > ".join(reversed(labels)))

    def judge_groups(self, groups: list[GroupItem], round_id: str) -> list[Ranking]:
        out: list[Ranking] = []
        per_batch = max(1, self.config.calls.batch_size // self.config.permutations)
        for batch in calls.chunks(groups, per_batch):
            perms = [self._perms(g) for g in batch]
            convs = [self.render(g, p) for g, ps in zip(batch, perms) for p in ps]
            stats = calls.CallStats()
            texts = [c.text for c in calls.generate(self.backend, convs, self.config.calls, stats)]
            share = stats.share(len(batch))
            pos = 0
            for g, ps in zip(batch, perms):
                raw = texts[pos:pos + len(ps)]
                pos += len(ps)
                out.append(self._ranking(g, ps, raw, round_id, share))
        return out

    def _ranking(self, g: GroupItem, perms: list[list[int]], raw: list[str], round_id: str, share: dict) -> Ranking:
        labels = letters(len(g.ids))
        readings = [read(grammar(self.template.name, "listwise"), text, labels) for text in raw]
        # positions best first -> item indices best first
        valid = [[perm[p] for p in r.verdict] for perm, r in zip(perms, readings) if r.verdict is not None]
        meta = {"template": self.template.name, "template_version": self.template.version, "raw": raw,
                "valid_permutations": len(valid), "invalid_reasons": [r.reason for r in readings],
                "principles": list(self.config.principles), **provenance(self.backend.name), **share}
        rid = Ranking.make_id(self.judge, list(g.ids), self.aspect)
        if not valid:
            meta["invalid"] = True
            meta["invalid_reason"] = f"no reply could be read: {readings[0].reason}"
            return Ranking(rid, g.prompt_id, list(g.ids), self.judge, "ai", round_id, None, perms, meta, self.aspect)
        order, points = borda(valid, len(g.ids))
        return Ranking(rid, g.prompt_id, [g.ids[i] for i in order], self.judge, "ai", round_id, points, perms, meta,
                       self.aspect)
