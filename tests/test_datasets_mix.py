"""Mixing snapshots: each part's fraction of train prompts, test splits whole, and across parts no held-out prompt in
training, no row twice, no pair with opposite verdicts; through the CLI the mixture is a versioned snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from alignloop.flows.cli import app
from alignloop.pipelines.datasets.mix import mix
from alignloop.pipelines.datasets.snapshot import Manifest, Snapshot
from alignloop.warehouse import db
from alignloop.warehouse.errors import InputError
from alignloop.warehouse.snapshots import SCHEMAS
from tests.fixtures_datasets import Wh


def pair(prompt: str, chosen: str, rejected: str, split: str = "train", source: str = "human") -> dict:
    return {"prompt_id": prompt, "split": split, "round_id": "r1", "prompt": "[]", "prompt_text": prompt,
            "chosen": f"text {chosen}", "rejected": f"text {rejected}", "chosen_id": chosen, "rejected_id": rejected,
            "prob": 1.0, "margin": None, "source": source, "feedback_ids": [f"f-{prompt}-{chosen}"]}


def snap(name: str, rows: list[dict], kind: str = "pairwise") -> Snapshot:
    tables = {s: pa.Table.from_pylist([r for r in rows if r["split"] == s], schema=SCHEMAS[kind])
              for s in ("train", "test")}
    return Snapshot(Manifest(f"{name}@v1", name, 1, kind, "test", {}, f"hash-{name}", {}, {}, {}), Path(name), tables)


A = snap("a", [pair(f"pa{i}", f"c{i}", f"r{i}") for i in range(4)] + [
    pair("shared", "x", "y"), pair("contra", "u", "v"), pair("t1", "g", "h"), pair("ta", "ta1", "ta2", "test")])
B = snap("b", [pair("shared", "x", "y", source="ai"), pair("contra", "v", "u", source="ai"),
               pair("pb0", "d0", "e0"), pair("pb1", "d1", "e1"), pair("t1", "t1a", "t1b", "test")])


def items(table: pa.Table) -> list[tuple[str, str, str, str]]:
    return [(r["split"], r["prompt_id"], r["chosen_id"], r["rejected_id"]) for r in table.to_pylist()]


def test_a_mixture_keeps_held_out_prompts_out_of_training_and_each_pair_once_without_contradictions():
    out = mix([(A, 1.0), (B, 1.0)])
    assert sorted(items(out.table)) == sorted(
        [("train", f"pa{i}", f"c{i}", f"r{i}") for i in range(4)]
        + [("train", "shared", "x", "y"), ("train", "pb0", "d0", "e0"), ("train", "pb1", "d1", "e1"),
           ("test", "ta", "ta1", "ta2"), ("test", "t1", "t1a", "t1b")])
    assert [r["split"] for r in out.table.to_pylist()][-2:] == ["test", "test"]  # train rows first
    shared = [r for r in out.table.to_pylist() if r["prompt_id"] == "shared"]
    assert [r["source"] for r in shared] == ["human"]  # the first part's copy
    n = out.notes
    assert (n["duplicates_merged"], n["contradictory_pairs"]) == (1, 2)
    assert n["parts"]["a@v1"] == {"fraction": 1.0, "train_prompts": 7, "train_rows": 6,
                                  "train_rows_on_held_out_prompts": 1, "test_rows": 1}
    assert out.source_counts["by_source"] == {"a@v1": 6, "b@v1": 3}
    assert out.spec.params()["parts"] == [{"id": "a@v1", "content_hash": "hash-a", "fraction": 1.0},
                                          {"id": "b@v1", "content_hash": "hash-b", "fraction": 1.0}]
    assert list(out.stage_counts.values()) == [13, 13, 12, 10, 9]
    assert out.kind == "pairwise" and out.table.schema == SCHEMAS["pairwise"]


def test_step_labels_two_parts_disagree_on_are_dropped_and_agreeing_ones_kept_once():
    def steps(prompt: str, labels: list[int]) -> dict:
        return {"prompt_id": prompt, "split": "train", "round_id": "r1", "prompt": "[]", "prompt_text": prompt,
                "completion_id": f"s-{prompt}", "steps": ["a", "b"], "labels": labels, "source": "human",
                "feedback_ids": []}

    one = snap("one", [steps("x", [1, 1]), steps("y", [1, -1]), steps("z", [1, 0])], "steps")
    two = snap("two", [steps("x", [1, 1]), steps("y", [1, 1])], "steps")
    out = mix([(one, 1.0), (two, 1.0)])
    assert [(r["prompt_id"], r["labels"]) for r in out.table.to_pylist()] == [("x", [1, 1]), ("z", [1, 0])]
    assert (out.notes["duplicates_merged"], out.notes["contradictory_pairs"]) == (1, 2)


def test_a_fraction_keeps_whole_prompts_chosen_by_the_seed():
    big = snap("big", [pair(f"p{i}", f"c{i}-{k}", f"r{i}-{k}") for i in range(20) for k in range(2)]
               + [pair("q", "q1", "q2", "test")])
    other = snap("other", [pair("o", "o1", "o2")])

    def prompts(seed: int) -> set[str]:
        rows = mix([(big, 0.25), (other, 1.0)], seed).table.to_pylist()
        return {r["prompt_id"] for r in rows if r["split"] == "train" and r["prompt_id"] != "o"}

    first = prompts(0)
    assert len(first) == 5 and prompts(0) == first and prompts(1) != first  # 25% of 20, the same for a seed
    rows = mix([(big, 0.25), (other, 1.0)]).table.to_pylist()
    assert all(sum(r["prompt_id"] == p for r in rows) == 2 for p in first)  # both rows of each kept prompt
    assert [r["prompt_id"] for r in rows if r["split"] == "test"] == ["q"]  # the test split whole
    assert mix([(big, 0.25), (other, 1.0)]).table.equals(mix([(big, 0.25), (other, 1.0)]).table)


@pytest.mark.parametrize(("parts", "message"), [
    ([(A, 1.0)], "a mixture needs at least two datasets, got 1"),
    ([(A, 1.0), (A, 0.5)], "dataset a@v1 is given twice"),
    ([(A, 1.0), (B, 0.0)], r"fraction of b@v1 must be in \(0, 1\], got 0.0"),
    ([(A, 1.5), (B, 1.0)], r"fraction of a@v1 must be in \(0, 1\], got 1.5"),
    ([(A, 1.0), (snap("k", [{**pair("k", "k1", "k2"), "completion": "t", "completion_id": "k1", "label": True}],
                      "binary"), 1.0)], "datasets to mix must be of one kind: a@v1 is pairwise, k@v1 is binary"),
    ([(snap("c1", [pair("z", "m", "n")]), 1.0), (snap("c2", [pair("z", "n", "m")]), 1.0)],
     "the mixture of c1@v1, c2@v1 has no train rows left"),
])
def test_what_cannot_be_mixed_is_refused_naming_the_dataset(parts, message):
    with pytest.raises(InputError, match=message):
        mix(parts)


def test_mix_cli_writes_a_versioned_snapshot_of_two_builds(tmp_path):
    """People's verdicts and an AI judge's, built apart, then mixed with half of the AI's prompts."""
    path = tmp_path / "w.duckdb"
    with db.connect(path) as con:
        wh = Wh(con)
        for i in range(6):
            p = wh.prompt(f"question {i}")
            a, b = wh.responses(p, f"short {i}", f"a longer answer {i}")
            if i < 3:
                wh.compare(p, a, b, "a")
            if i >= 2:  # prompt 2: both, agreeing
                wh.compare(p, a, b, "a", source="ai", judge="judge", prob_a=0.9, consistent=True)
    run = CliRunner()
    db_args = ["--db", str(path)]
    for name, source in (("people", "human"), ("judged", "ai")):
        r = run.invoke(app, ["dataset", "build", "pairwise", "--name", name, "-o", f"sources={source}",
                             "-o", "decontaminate=false", *db_args], env={"COLUMNS": "400"})
        assert r.exit_code == 0, r.output
    args = ["dataset", "mix", "--name", "mixed", "--part", "people=1", "--part", "judged@v1=0.5", "--json", *db_args]
    r = run.invoke(app, args, env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    m = out["manifest"]
    assert out["created"] and m["id"] == "mixed@v1" and m["builder"] == "pairwise.mix"
    assert [p["id"] for p in m["params"]["parts"]] == ["people@v1", "judged@v1"]
    assert m["notes"]["parts"]["judged@v1"]["train_prompts"] == 2  # half of its 4 prompts
    train = pa.parquet.read_table(Path(out["path"]) / "train.parquet").to_pylist()
    sources = [r["source"] for r in train]  # people's 3, the judge's 2 less the pair people judged too (kept once)
    assert sources.count("human") == 3 and sources.count("ai") == 2 - m["notes"]["duplicates_merged"]
    with db.connect(path) as con:
        assert con.execute("SELECT count(*) FROM datasets WHERE name = 'mixed'").fetchone()[0] == 1
    again = json.loads(run.invoke(app, args, env={"COLUMNS": "400"}).output)
    assert not again["created"] and again["manifest"]["content_hash"] == m["content_hash"]
    # its export's card names the parts it was mixed from (with their fractions) as its options
    r = run.invoke(app, ["dataset", "export", "mixed", "--format", "jsonl", "--out", str(tmp_path / "x"), *db_args])
    assert r.exit_code == 0, r.output
    card = (tmp_path / "x" / "README.md").read_text()
    assert "built by alignloop with builder `pairwise.mix`" in card and '"fraction": 0.5' in card
    assert m["params"]["parts"][1]["content_hash"] in card
    r = run.invoke(app, ["dataset", "mix", "--name", "mixed", "--part", "people=1", "--part", "judged=2", *db_args],
                   env={"COLUMNS": "400"})
    assert r.exit_code == 2 and r.output == "error: fraction of judged@v1 must be in (0, 1], got 2.0\n", r.output
