"""Make ``tests/data/warehouse_v3.duckdb.gz``: a warehouse as release 8742308 (schema v3) left it.

It was run once, at commit 8742308 (before schema v4 re-keyed imported rows), from the repository root:

    ALIGNLOOP_SHARED_DATA=../shared/data .venv/bin/python tests/data/make_warehouse_v3.py

and is kept for what it documents; run at a later commit it would make a warehouse of that commit's schema. It
imports every file under ``tests/data/warehouse_v3/`` (a format each: prompts, preference pairs, rankings,
ratings, step labels, corrections), HH-RLHF twice (plain and gzipped, which that release stored twice), and adds the
rows later stages make from imported responses, the way their code made them at that commit: an AI judge's
comparisons, ranking, verifier rating and step labels, an Aligner correction, a Label Studio task with its
annotation (edited once, so feedback_history holds a row) and a human edit.
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from alignloop.annotation.push import task_id
from alignloop.pipelines.intake import ImportOptions, import_file
from alignloop.warehouse import db, ids
from alignloop.warehouse.records import (
    AnnotationTask,
    Comparison,
    Correction,
    Ranking,
    Rating,
    Response,
    StepLabel,
    to_arrow,
)

FILES = REPO / "tests" / "data" / "warehouse_v3"
OUT = REPO / "tests" / "data" / "warehouse_v3.duckdb"
IMPORTS = [  # (file, options): the order they were imported in
    ("hh30.jsonl", {}),
    ("hh30.jsonl.gz", {}),  # the same lines: stored a second time by that release
    ("hh30.jsonl", {"aspect": "harmlessness", "round": "import-harmless"}),
    ("prm800k.jsonl", {}),
    ("qac.jsonl", {}),
    ("preference.jsonl", {}),
    ("unpaired.jsonl", {}),
    ("ultrafeedback.jsonl", {}),
    ("ranking.jsonl", {}),
    ("pku.jsonl", {}),
    ("helpsteer.jsonl", {}),
    ("prompts.csv", {"source": "handmade"}),
]


def _copy_hh() -> None:
    shared = Path(os.environ.get("ALIGNLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
    with gzip.open(shared / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as fh:
        lines = [next(fh) for _ in range(30)]
    (FILES / "hh30.jsonl").write_text("".join(lines))
    with gzip.GzipFile(FILES / "hh30.jsonl.gz", "wb", mtime=0) as gz:
        gz.write("".join(lines).encode())
    shutil.copy(shared / "prm800k-readme-example.jsonl", FILES / "prm800k.jsonl")


def _later_stages(con) -> None:
    """Rows the judges, Aligner and Label Studio make from imported responses (their id formulas at 8742308)."""
    pairs = con.execute("""SELECT c.prompt_id, c.response_a, c.response_b FROM comparisons c
                           JOIN responses r ON r.id = c.response_a WHERE c.aspect = 'overall'
                           ORDER BY r.created_at, c.id LIMIT 4""").fetchall()
    judge = "transformers:tiny-judge:pairwise@v1"
    comps = [Comparison(Comparison.make_id(judge, a, b), p, a, b, "b", judge, "ai", "r1", prob_a=0.25,
                        verdict_ab="B", verdict_ba="A", consistent=True) for p, a, b in pairs]
    p0, a0, b0 = pairs[0]
    ranking = Ranking(Ranking.make_id("transformers:tiny-judge:listwise@v1", [b0, a0]), p0, [b0, a0],
                      "transformers:tiny-judge:listwise@v1", "ai", "r1", scores=[1.0, 0.0])
    verifier = "verifier:short_on_topic:6@abcd1234"
    rating = Rating(Rating.make_id(verifier, a0, "short_on_topic", kind="verifier"), p0, a0, 1.0, 0.0, 1.0, verifier,
                    "rule", "r1", aspect="short_on_topic")
    prm_resp, prm_prompt = con.execute("SELECT id, prompt_id FROM responses WHERE steps IS NOT NULL "
                                       "AND parent_id IS NULL").fetchone()
    prm_judge = "transformers:tiny-prm:steps@v1"
    steps = [StepLabel(StepLabel.make_id(prm_judge, prm_resp, i), prm_prompt, prm_resp, i, 1, prm_judge, "ai", "r1")
             for i in range(2)]
    aligner, sampling = "transformers:tiny-aligner", {"temperature": 0.0, "max_new_tokens": 64}
    fixed = "A better answer, corrected by the aligner."
    rid = ids.response_id(p0, aligner, {**sampling, "parent_id": b0}, None, 0, text=fixed)
    corrected = Response(rid, p0, aligner, "r1", fixed, "aligner", sampling, parent_id=b0)
    aligner_judge = "transformers:tiny-aligner:correction@v1"
    correction = Correction(Correction.make_id(aligner_judge, b0), p0, b0, rid, aligner_judge, "ai", "r1")
    annotator = "annotator:ann@example.org"
    task = AnnotationTask(task_id("pairwise", "r1", [a0, b0]), "pairwise", "r1", [a0, b0],
                          {"prompt": "...", "a": a0, "b": b0}, project_id=1, task_id=7, status="annotated")
    human = [Comparison(Comparison.make_id(annotator, a0, b0), p0, a0, b0, w, annotator, "human", "r1",
                        prob_a={"a": 1.0, "b": 0.0}[w]) for w in ("a", "b")]  # edited once: a, then b
    edited = Response.given(p0, annotator, "r1", "The annotator's edit.", "human_edit", parent_id=a0)
    edit = Correction(Correction.make_id(annotator, a0), p0, a0, edited.id, annotator, "human", "r1")
    with db.transaction(con):
        db.ensure_round(con, "r1")
        db.ingest(con, "responses", [corrected, edited])
        db.ingest(con, "comparisons", comps)
        db.ingest(con, "rankings", [ranking])
        db.ingest(con, "ratings", [rating])
        db.ingest(con, "step_labels", steps)
        db.ingest(con, "corrections", [correction, edit])
        db.ingest(con, "annotation_tasks", [task])
    for row in human:
        db.replace_feedback(con, "comparisons", to_arrow([row]))


def main() -> None:
    _copy_hh()
    OUT.unlink(missing_ok=True)
    with db.connect(OUT) as con:
        for name, opts in IMPORTS:
            s = import_file(con, FILES / name, ImportOptions(**opts))
            print(name, opts, {k: v for k, v in s.inserted.items() if v})
        _later_stages(con)
        print(db.counts(con))
        con.execute("CHECKPOINT")
    with open(OUT, "rb") as src, gzip.GzipFile(f"{OUT}.gz", "wb", mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    OUT.unlink()


if __name__ == "__main__":
    main()
