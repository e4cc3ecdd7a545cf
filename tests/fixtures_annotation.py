"""Warehouse seeds for the annotation tests: two prompts x three responses per round, plus AI comparisons.

    from tests.fixtures_annotation import seed_round
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from alignloop.annotation.client import Annotator, ExportedAnnotation
from alignloop.warehouse import db
from alignloop.warehouse.records import Comparison, Prompt, Response

JUDGE_X = "judge:x@v1"
JUDGE_Y = "judge:y@v1"


@dataclass(frozen=True)
class Seeded:
    round_id: str
    prompts: list[str]
    responses: list[list[str]]
    """responses[p][k]: prompt p's k-th sample."""

    def pair(self, p: int, i: int, j: int) -> tuple[str, str]:
        return self.responses[p][i], self.responses[p][j]

    def pair_keys(self) -> dict[tuple[str, str], str]:
        """(a, b) -> 'p<prompt>_<i><j>' for the six pairs."""
        return {self.pair(p, i, j): f"p{p}_{i}{j}" for p in range(2) for i, j in ((0, 1), (0, 2), (1, 2))}


def seed_round(con: duckdb.DuckDBPyConnection, round_id: str, *, with_ai: bool = True) -> Seeded:
    """Two prompts, three policy responses each (with steps); AI verdicts on three pairs:

    * p0 (0,1): judge x inconsistent under swap (winner tie);
    * p0 (0,2): judge x says a, judge y (stored in swapped order) says the second response -> disagreement;
    * p1 (0,1): judge x says a, consistent.
    """
    prompts = [Prompt.create([{"role": "user", "content": f"{round_id} question {p}"}], source="test")
               for p in range(2)]
    responses = [[Response.sampled(pr.id, "model:policy", round_id, f"{round_id} answer {p}{k}", {"temperature": 1.0},
                                   0, k, steps=[f"step one of {p}{k}", f"step two of {p}{k}", "so done"])
                  for k in range(3)] for p, pr in enumerate(prompts)]
    db.ensure_round(con, round_id)
    db.ingest(con, "prompts", prompts)
    db.ingest(con, "responses", [r for rs in responses for r in rs])
    seeded = Seeded(round_id, [p.id for p in prompts], [[r.id for r in rs] for rs in responses])
    if with_ai:
        a0, a1 = seeded.pair(0, 0, 1)
        b0, b2 = seeded.pair(0, 0, 2)
        c0, c1 = seeded.pair(1, 0, 1)
        rows = [
            Comparison(Comparison.make_id(JUDGE_X, a0, a1), prompts[0].id, a0, a1, "tie", JUDGE_X, "ai", round_id,
                       0.5, "a", "a", False),
            Comparison(Comparison.make_id(JUDGE_X, b0, b2), prompts[0].id, b0, b2, "a", JUDGE_X, "ai", round_id,
                       0.9, "a", "b", True),
            Comparison(Comparison.make_id(JUDGE_Y, b2, b0), prompts[0].id, b2, b0, "a", JUDGE_Y, "ai", round_id,
                       0.8, "a", "b", True),  # b2 shown first and preferred: the second response of the pair
            Comparison(Comparison.make_id(JUDGE_X, c0, c1), prompts[1].id, c0, c1, "a", JUDGE_X, "ai", round_id,
                       0.7, "a", "b", True),
        ]
        db.ingest(con, "comparisons", rows)
    return seeded


def choice(name: str, to: str, value: str) -> dict:
    return {"from_name": name, "to_name": to, "type": "choices", "value": {"choices": [value]}}


def pref(value: str) -> list[dict]:
    return [choice("preference", "prompt", value)]


def exported(task_id: int, annotation_id: int, user: int, result: list[dict], *, email: str | None = None,
             cancelled: bool = False, data: dict | None = None, lead_time: float | None = None) -> ExportedAnnotation:
    return ExportedAnnotation(task_id, annotation_id, Annotator(user, email), result, "2026-01-01T00:00:00Z",
                              cancelled, data or {}, lead_time)
