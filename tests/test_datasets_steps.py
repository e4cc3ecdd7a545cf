"""Step datasets: labels of a shared prefix carried from the parent response (PRM800K alternative completions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignloop.pipelines.datasets.build import build
from alignloop.pipelines.datasets.config import parse_options
from alignloop.pipelines.datasets.lint import lint
from alignloop.warehouse import db
from alignloop.warehouse.records import Response, StepLabel
from tests.fixtures_datasets import *
from tests.fixtures_datasets import MODEL, ROUND, Wh


def steps_rows(con, **opts) -> list[tuple[list[str], list[int | None], int]]:
    r = build(con, parse_options("steps", {"decontaminate": False, **opts}))
    t = r.table
    return sorted(zip(t["steps"].to_pylist(), t["labels"].to_pylist(), map(len, t["feedback_ids"].to_pylist())))


def child(wh: Wh, prompt_id: str, parent_id: str, steps: list[str], index: int) -> str:
    r = Response.given(prompt_id, MODEL, ROUND, "\n".join(steps), "import", sample_index=index, steps=steps,
                       parent_id=parent_id)
    db.ingest(wh.con, "responses", [r])
    return r.id


def test_child_inherits_parent_labels_on_shared_prefix_only(wh: Wh):
    p = wh.prompt("Solve x+1=2")
    main = wh.response(p, "sol", steps=["s1", "s2", "s3"])
    wh.step_labels(p, main, [1, 1, -1])
    alt = child(wh, p, main, ["s1", "s2", "alt3"], 1)           # alternative third step: inherits 1, 1
    other = child(wh, p, main, ["s1", "x2", "alt3b"], 2)        # second step differs: inherits step 1 only
    other_judge = child(wh, p, main, ["s1", "s2", "alt3c"], 3)  # labelled by another judge: inherits nothing
    rows = [StepLabel(StepLabel.make_id(j, rid, 2), p, rid, 2, lab, j, "human", ROUND)
            for rid, lab, j in [(alt, 1, "ann1"), (other, -1, "ann1"), (other_judge, 0, "ann2")]]
    db.ingest(wh.con, "step_labels", rows)
    assert steps_rows(wh.con) == [
        (["s1", "s2", "alt3"], [1, 1, 1], 3),
        (["s1", "s2", "alt3c"], [None, None, 0], 1),
        (["s1", "s2", "s3"], [1, 1, -1], 3),
        (["s1", "x2", "alt3b"], [1, None, -1], 2),
    ]


def test_prm800k_alternatives_have_no_missing_labels(prm_path: Path):
    intake = pytest.importorskip("alignloop.pipelines.intake", reason="the intake importer is not there")
    with db.connect(":memory:") as con:
        intake.import_file(con, prm_path, intake.ImportOptions(format="prm800k"))
        n_alts = con.execute("SELECT count(*) FROM responses WHERE parent_id IS NOT NULL").fetchone()[0]
        r = build(con, parse_options("steps", {"decontaminate": False}))
    t = r.table
    assert n_alts == 4 and t.num_rows == 5
    assert sorted(t["labels"].to_pylist()) == [[0, 0, -1], [0, 0, -1], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert all(len(ids) == 3 for ids in t["feedback_ids"].to_pylist())   # own label + the two carried ones
    assert lint(t, "steps").counts["steps_without_labels"] == 0
