"""Weak-to-strong (Burns et al. 2023): derived snapshots (a hash half of the train prompts, pairs relabelled by a
judge's scores), smaller models cut from one checkpoint, and the flow that chains them with its PGR."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from alignloop.flows.cli import app
from alignloop.pipelines.datasets import derived, publish
from alignloop.pipelines.datasets.build import BuildResult
from alignloop.pipelines.datasets.snapshot import read_snapshot, register, snapshot_root
from alignloop.pipelines.models import model_name
from alignloop.warehouse import db
from alignloop.warehouse.errors import InputError
from alignloop.warehouse.ids import hash_parts
from alignloop.warehouse.snapshots import SCHEMAS
from tests.fixtures_trainers import new_warehouse, rows_for, save_tiny_model, tiny_model_dir  # noqa: F401

ENV = {"COLUMNS": "400"}


def _truth(db_path: str, name: str = "truth", n_train: int = 16, n_test: int = 8, kind: str = "pairwise"):
    """A snapshot published and registered as `dataset build` would, from hand-made rows ("good ..." over "bad ...":
    learnable)."""
    rows = rows_for(kind, n_train, "train") + rows_for(kind, n_test, "test")
    spec = derived.DerivedSpec(kind, f"{kind}.hand_made", {"rows": len(rows)})
    result = BuildResult(spec, pa.Table.from_pylist(rows, schema=SCHEMAS[kind]), {"rows": len(rows)},
                         {"table": "comparisons", "rows": len(rows), "by_source": {"human": len(rows)}})
    outcome, _ = publish.write(result, name, snapshot_root(None, db_path))
    with db.connect(db_path) as con:
        register(con, outcome.manifest, outcome.path)
    return read_snapshot(outcome.path)


def test_train_part_cuts_the_prompts_by_hash_and_keeps_the_test_split(tmp_path):
    truth = _truth(new_warehouse(tmp_path))
    halves = [derived.train_part(truth, k, 2) for k in (0, 1)]
    part_of = hash_parts(truth.train["prompt_id"].to_pylist(), 2)
    for k, half in enumerate(halves):
        train = half.table.filter(pa.compute.equal(half.table["split"], "train"))
        assert sorted(train["prompt_id"].to_pylist()) == sorted(p for p, v in part_of.items() if v == k)
        assert half.table.filter(pa.compute.equal(half.table["split"], "test")).equals(truth.test)
        assert half.spec.params()["parent"] == {"id": "truth@v1", "content_hash": truth.manifest.content_hash}
        assert half.stage_counts == {"parent_train": 16, "prompt_part": 8}
    with pytest.raises(InputError, match="part must be in 0..1"):
        derived.train_part(truth, 2, 2)
    with pytest.raises(InputError, match="has 16 train prompt"):
        derived.train_part(truth, 0, 17)


def test_relabel_orders_pairs_by_the_judge_with_its_probability(tmp_path):
    truth = _truth(new_warehouse(tmp_path), n_train=4, n_test=2)
    # the judge agrees on pairs 0 and 2, disagrees on 1, ties on 3
    gaps = [2.0, -1.0, 0.5, 0.0]
    scores = {}
    for i, g in enumerate(gaps):
        scores[f"c-train-{i}"] = (g, f"rating-c{i}")
        scores[f"r-train-{i}"] = (0.0, f"rating-r{i}")
    result = derived.relabel(truth, scores, "rm:weak")
    rows = {r["prompt_id"]: r for r in result.table.to_pylist() if r["split"] == "train"}
    truth_rows = {r["prompt_id"]: r for r in truth.train.to_pylist()}
    for i, g in enumerate(gaps):
        row, orig = rows[f"p-train-{i}"], truth_rows[f"p-train-{i}"]
        swapped = g < 0
        assert row["chosen"] == (orig["rejected"] if swapped else orig["chosen"])
        assert row["chosen_id"] == (f"r-train-{i}" if swapped else f"c-train-{i}")
        assert row["feedback_ids"] == ([f"rating-r{i}", f"rating-c{i}"] if swapped else
                                       [f"rating-c{i}", f"rating-r{i}"])
        assert row["prob"] == pytest.approx(1 / (1 + math.exp(-abs(g))))
        assert row["margin"] == abs(g) and row["source"] == "reward_model"
    assert result.notes["agreement_with_parent"] == 0.5 and result.notes["ties"] == 1
    assert result.table.filter(pa.compute.equal(result.table["split"], "test")).equals(truth.test)
    assert result.spec.params()["labeler"] == "rm:weak"
    hard = {r["prompt_id"]: r["prob"] for r in derived.relabel(truth, scores, "rm:weak", False).table.to_pylist()
            if r["split"] == "train"}
    assert hard == {"p-train-0": 1.0, "p-train-1": 1.0, "p-train-2": 1.0, "p-train-3": 0.5}
    del scores["r-train-2"]
    with pytest.raises(InputError, match="response r-train-2 of prompt p-train-2 has no score from rm:weak"):
        derived.relabel(truth, scores, "rm:weak")


def test_shrink_keeps_the_first_layers_and_never_overwrites(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    src = save_tiny_model(tmp_path / "src", layers=3)
    path = new_warehouse(tmp_path)
    out = CliRunner().invoke(app, ["models", "shrink", "--base", str(src), "--layers", "1", "--out",
                                   str(tmp_path / "small"), "--db", path, "--json"], env=ENV)
    assert out.exit_code == 0, out.output
    made = json.loads(out.output)
    big, small = (AutoModelForCausalLM.from_pretrained(p) for p in (src, tmp_path / "small"))
    assert small.config.num_hidden_layers == 1 and len(small.model.layers) == 1
    assert torch.equal(small.model.layers[0].self_attn.q_proj.weight, big.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(small.model.embed_tokens.weight, big.model.embed_tokens.weight)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in big.parameters())
    with db.connect(path) as con:
        parent = con.execute("SELECT parent_id FROM models WHERE id = ?", [made["model_id"]]).fetchone()[0]
    assert parent == made["parent_id"]
    again = CliRunner().invoke(app, ["models", "shrink", "--base", str(src), "--layers", "1", "--out",
                                     str(tmp_path / "small"), "--db", path], env=ENV)
    assert again.exit_code == 0, again.output  # the same cut: reused
    other = CliRunner().invoke(app, ["models", "shrink", "--base", str(src), "--layers", "2", "--out",
                                     str(tmp_path / "small"), "--db", path], env=ENV)
    assert other.exit_code == 2 and "already holds a model" in other.output and "never overwritten" in other.output
    bad = CliRunner().invoke(app, ["models", "shrink", "--base", str(src), "--layers", "3", "--out",
                                   str(tmp_path / "x"), "--db", path], env=ENV)
    assert bad.exit_code == 2 and "--layers must be in 1..2" in bad.output and not (tmp_path / "x").exists()


def _flow_args(tmp_path: Path, path: str, models: list[Path], *extra: str) -> list[str]:
    args = ["weak-to-strong", "--dataset", "truth", "--max-steps", "3", "--batch-size", "4", "--lr", "5e-3",
            "--output-dir", str(tmp_path / "w2s"), "--db", path, "--json", *extra]
    for m in models:
        args += ["--model", str(m)]
    return args


def test_weak_to_strong_bootstraps_through_three_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLOOP_CACHE", str(tmp_path / "cache"))
    path = new_warehouse(tmp_path)
    truth = _truth(path)
    models = [save_tiny_model(tmp_path / f"m{k}", seed=k, layers=k) for k in (1, 2, 3)]
    (tmp_path / "rm.json").write_text(json.dumps({"confidence_weight": 0.3}))  # the flow's own weight wins
    args = _flow_args(tmp_path, path, models, "--confidence-weight", "0.5", "--config", str(tmp_path / "rm.json"))
    out = CliRunner().invoke(app, args, env=ENV)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert [s["student"]["run"] for s in summary["steps"]] == ["w2s-1", "w2s-2"]
    assert summary["weak"]["dataset"] == "truth-w2s-half1@v1" and summary["weak"]["base"] == str(models[0])
    assert [s["ceiling"]["dataset"] for s in summary["steps"]] == ["truth-w2s-half2@v1"] * 2
    assert [s["labels"] for s in summary["steps"]] == ["truth-w2s-labels-1@v1", "truth-w2s-labels-2@v1"]
    assert summary["direct"]["student"]["base"] == str(models[2])
    assert summary["direct"]["labels"] == "truth-w2s-labels-1@v1"
    root = snapshot_root(None, path)
    half2 = read_snapshot(root / "truth-w2s-half2" / "v1")
    with db.connect(path) as con:
        runs = dict(con.execute("SELECT id, config FROM training_runs").fetchall())
        ratings = con.execute("SELECT id, judge, response_id, score FROM ratings").fetchall()
        pgr = con.execute("SELECT target, value, details FROM evaluations WHERE kind = 'weak_to_strong'").fetchall()
    assert len(runs) == 6  # weak, two students, two ceilings, direct
    assert json.loads(runs[summary["weak"]["run_id"]])["confidence_weight"] == 0.0
    assert json.loads(runs[summary["direct"]["student"]["run_id"]])["confidence_weight"] == 0.5
    for step in summary["steps"]:
        assert json.loads(runs[step["student"]["run_id"]])["confidence_weight"] == 0.5
        assert json.loads(runs[step["ceiling"]["run_id"]])["confidence_weight"] == 0.0
    # each labeler scored every response of the second half once: the weak model, then step 1's student
    responses = {r["id"] for r in derived.responses(half2)}
    judges = {}
    for rid, judge, response, _ in ratings:
        judges.setdefault(judge, set()).add(response)
    assert sorted(judges) == sorted(f"{model_name(d)}:orm@v2" for d in (summary["weak"]["model_dir"],
                                                                          summary["steps"][0]["student"]["model_dir"]))
    assert all(found == responses for found in judges.values())
    labels2 = read_snapshot(root / "truth-w2s-labels-2" / "v1")
    score = {rid: s for rid, _, _, s in ratings}
    for row in labels2.train.to_pylist():  # chosen is the side step 1's student scored higher, its ratings named
        c, r = row["feedback_ids"]
        assert score[c] >= score[r] and row["prob"] == pytest.approx(1 / (1 + math.exp(score[r] - score[c])))
    assert labels2.manifest.params["labeler"] == f"{model_name(summary['steps'][0]['student']['model_dir'])}:orm@v2"
    assert labels2.test.equals(truth.test)
    for step in summary["steps"] + [summary["direct"]]:
        w, s, c = summary["weak"]["accuracy"], step["student"]["accuracy"], step["ceiling"]["accuracy"]
        assert all(0 <= a <= 1 for a in (w, s, c))
        assert step["pgr"] == (None if c <= w else pytest.approx((s - w) / (c - w)))
    assert sorted(t for t, _, _ in pgr) == sorted(s["student"]["model_id"] for s in summary["steps"] +
                                                  [summary["direct"]])
    assert Path(summary["plot"]).stat().st_size > 0 and Path(summary["summary_file"]).is_file()

    from alignloop.pipelines.judges.reward_model import RewardModelJudge

    def no_scoring(*a, **k):
        raise AssertionError("a rerun scored the responses again")

    monkeypatch.setattr(RewardModelJudge, "load", no_scoring)
    again = CliRunner().invoke(app, args, env=ENV)  # everything done: runs reused, ratings read, nothing written twice
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.output)
    assert rerun["weak"]["reused"] and all(s["student"]["reused"] and s["ceiling"]["reused"] for s in rerun["steps"])
    assert rerun["steps"][1]["labels"] == "truth-w2s-labels-2@v1"
    with db.connect(path) as con:
        assert con.execute("SELECT count(*) FROM ratings").fetchone()[0] == len(ratings)
        assert con.execute("SELECT count(*) FROM training_runs").fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM datasets").fetchone()[0] == 5


def test_weak_to_strong_refuses_what_it_cannot_measure(tmp_path, tiny_model_dir):  # noqa: F811
    path = new_warehouse(tmp_path)
    _truth(path, "prefs", n_test=0)
    _truth(path, "thumbs", kind="binary")
    runner = CliRunner()
    no_test = runner.invoke(app, ["weak-to-strong", "--dataset", "prefs", "--model", str(tiny_model_dir),
                                  "--model", str(tiny_model_dir), "--db", path], env=ENV)
    assert no_test.exit_code == 2 and "dataset 'prefs' has no test rows" in no_test.output
    binary = runner.invoke(app, ["weak-to-strong", "--dataset", "thumbs", "--model", str(tiny_model_dir),
                                 "--model", str(tiny_model_dir), "--db", path], env=ENV)
    assert binary.exit_code == 2 and "dataset 'thumbs' is binary" in binary.output
    one = runner.invoke(app, ["weak-to-strong", "--dataset", "prefs", "--model", str(tiny_model_dir), "--db", path],
                        env=ENV)
    assert one.exit_code == 2 and "models" in one.output and "at least 2" in one.output
    with db.connect(path) as con:
        assert con.execute("SELECT count(*) FROM datasets").fetchone()[0] == 2  # nothing derived


def test_weak_to_strong_runs_as_a_prefect_flow(tmp_path, monkeypatch, prefect_harness):
    """As the UI starts it: each run a train subflow, the scoring a task, two models (no bootstrapping)."""
    from alignloop.flows.weak_to_strong import WeakToStrongParams, weak_to_strong

    monkeypatch.setenv("ALIGNLOOP_CACHE", str(tmp_path / "cache"))
    path = new_warehouse(tmp_path)
    _truth(path)
    models = [str(save_tiny_model(tmp_path / f"m{k}", seed=k, layers=k)) for k in (1, 2)]
    summary = weak_to_strong(WeakToStrongParams(dataset="truth", models=models, max_steps=2, batch_size=4,
                                                soft_labels=False, output_dir=str(tmp_path / "w2s"), db=path))
    assert len(summary["steps"]) == 1 and summary["direct"] is None
    labels = read_snapshot(snapshot_root(None, path) / "truth-w2s-labels-1" / "v1")
    assert set(labels.train["prob"].to_pylist()) <= {0.5, 1.0} and labels.manifest.params["soft_labels"] is False
    with db.connect(path) as con:
        assert con.execute("SELECT count(*) FROM training_runs").fetchone()[0] == 3
        assert con.execute("SELECT count(*) FROM evaluations WHERE kind = 'weak_to_strong'").fetchone()[0] == 1
    from prefect.artifacts import Artifact

    table = Artifact.get("weak-to-strong-truth")
    assert table is not None and "| step 1 |" in table.data and "truth-w2s-labels-1@v1" in table.data


def test_weak_to_strong_names_a_folder_that_is_not_a_built_snapshot(tmp_path, tiny_model_dir):  # noqa: F811
    from tests.fixtures_trainers import make_snapshot

    snap = make_snapshot(tmp_path / "folder", "pairwise")  # a trainer's test folder: a manifest without the build's
    out = CliRunner().invoke(app, ["weak-to-strong", "--dataset", str(snap), "--model", str(tiny_model_dir),
                                   "--model", str(tiny_model_dir), "--db", new_warehouse(tmp_path)], env=ENV)
    assert out.exit_code == 2 and "is not a dataset snapshot's manifest (no version, builder, params" in out.output
