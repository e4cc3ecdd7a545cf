"""Small hand-made warehouses for dataset builder tests: prompts, responses and feedback through records + ingest."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from alignloop.warehouse import db
from alignloop.warehouse.records import Comparison, Correction, Prompt, Ranking, Rating, Response, StepLabel

ROUND = "r1"
MODEL = "m-policy"


class Wh:
    """A ":memory:" warehouse plus helpers that add one row at a time and return its id."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        db.ensure_round(con, ROUND)

    def prompt(self, text: str, split: str = "train") -> str:
        p = Prompt.create([{"role": "user", "content": text}], source="test", split=split)
        db.ingest(self.con, "prompts", [p])
        return p.id

    def response(self, prompt_id: str, text: str, steps: list[str] | None = None, index: int = 0) -> str:
        r = Response.given(prompt_id, MODEL, ROUND, text, "import", sample_index=index, steps=steps)
        db.ingest(self.con, "responses", [r])
        return r.id

    def responses(self, prompt_id: str, *texts: str) -> list[str]:
        return [self.response(prompt_id, t) for t in texts]

    def compare(self, prompt_id: str, a: str, b: str, winner: str, source: str = "human", judge: str = "ann1",
                prob_a: float | None = None, consistent: bool | None = None) -> str:
        c = Comparison(Comparison.make_id(judge, a, b), prompt_id, a, b, winner, judge, source, ROUND,
                       prob_a=prob_a, consistent=consistent)
        db.ingest(self.con, "comparisons", [c])
        return c.id

    def rank(self, prompt_id: str, order: list[str], source: str = "human", judge: str = "ann1",
             scores: list[float] | None = None, aspect: str = "overall") -> str:
        r = Ranking(Ranking.make_id(judge, order, aspect), prompt_id, order, judge, source, ROUND, scores=scores,
                    aspect=aspect)
        db.ingest(self.con, "rankings", [r])
        return r.id

    def rate(self, prompt_id: str, response_id: str, score: float, lo: float = 1, hi: float = 10,
             source: str = "human", judge: str = "ann1", aspect: str = "overall") -> str:
        r = Rating(Rating.make_id(judge, response_id, aspect), prompt_id, response_id, score, lo, hi, judge, source,
                   ROUND, aspect=aspect)
        db.ingest(self.con, "ratings", [r])
        return r.id

    def step_labels(self, prompt_id: str, response_id: str, labels: list[int], source: str = "human",
                    judge: str = "ann1") -> list[str]:
        rows = [StepLabel(StepLabel.make_id(judge, response_id, i), prompt_id, response_id, i, lab, judge, source,
                          ROUND) for i, lab in enumerate(labels)]
        db.ingest(self.con, "step_labels", rows)
        return [r.id for r in rows]

    def correct(self, prompt_id: str, original_id: str, corrected_text: str, source: str = "human",
                judge: str = "ann1", aspect: str = "overall") -> tuple[str, str]:
        fixed = Response.given(prompt_id, "aligner", ROUND, corrected_text, "human_edit", parent_id=original_id)
        db.ingest(self.con, "responses", [fixed])
        c = Correction(Correction.make_id(judge, original_id, aspect), prompt_id, original_id, fixed.id, judge, source,
                       ROUND, aspect=aspect)
        db.ingest(self.con, "corrections", [c])
        return c.id, fixed.id


@pytest.fixture
def wh() -> Iterator[Wh]:
    with db.connect(":memory:") as con:
        yield Wh(con)


@pytest.fixture
def db_file(tmp_path) -> str:
    return str(tmp_path / "wh.duckdb")
