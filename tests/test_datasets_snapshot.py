"""Snapshots (versions, content hash, idempotency), exports (round trip), lints, CLI and the Prefect flow's steps."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from alignloop.flows.build_dataset import BuildDatasetParams, build_rows, write_snapshot
from alignloop.flows.cli import app
from alignloop.pipelines.datasets.config import parse_options
from alignloop.pipelines.datasets.export import export_snapshot, read_export
from alignloop.pipelines.datasets.lint import LintOptions, lint
from alignloop.pipelines.datasets.publish import build_and_publish
from alignloop.pipelines.datasets.snapshot import load_snapshot, register
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_datasets import *
from tests.fixtures_datasets import Wh


def seed(wh: Wh, n: int = 6) -> None:
    for i in range(n):
        p = wh.prompt(f"Question number {i}: how should I {['cook', 'fix', 'learn'][i % 3]} this?",
                      split="test" if i == 0 else "train")
        a, b, c = wh.responses(p, f"A careful answer {i}", f"bad {i}", f"ok answer {i}")
        wh.compare(p, a, b, "a")
        wh.compare(p, c, b, "a", source="ai", judge="j", prob_a=0.8, consistent=True)
        wh.rate(p, a, 1, lo=0, hi=1)
        wh.rate(p, b, 0, lo=0, hi=1)


def spec(kind: str = "pairwise", **opts):
    return parse_options(kind, opts)


def test_hash_determinism_versions_and_idempotency(wh: Wh, tmp_path):
    seed(wh)
    first = build_and_publish(wh.con, spec(), "prefs", tmp_path)
    again = build_and_publish(wh.con, spec(), "prefs", tmp_path)
    assert first.outcome.created and not again.outcome.created and not again.registered
    assert again.outcome.manifest.content_hash == first.outcome.manifest.content_hash
    assert again.outcome.manifest.version == 1
    changed = build_and_publish(wh.con, spec(ties="keep"), "prefs", tmp_path)  # new params, same rows
    assert changed.outcome.created and changed.outcome.manifest.version == 2
    assert changed.outcome.previous_version == 1
    soft = build_and_publish(wh.con, spec(soft_labels=True), "prefs", tmp_path)
    assert soft.outcome.manifest.content_hash != first.outcome.manifest.content_hash
    assert soft.outcome.manifest.version == 3
    assert (tmp_path / "prefs" / "v1" / "train.parquet").exists()
    assert (tmp_path / "prefs" / "v1" / "stats.png").stat().st_size > 1000
    rows = wh.con.execute("SELECT id, version, row_counts FROM datasets ORDER BY version").fetchall()
    assert [r[0] for r in rows] == ["prefs@v1", "prefs@v2", "prefs@v3"]
    assert json.loads(rows[0][2]) == {"train": 10, "test": 2}
    m = load_snapshot("prefs@v1", root=tmp_path).manifest
    stages = list(m.stage_counts)  # read back in the order the stages ran, not sorted
    assert stages[:2] == ["comparisons", "require_consistent"] and stages != sorted(stages)
    assert m.stage_counts["comparisons"] == 12 and m.stats["chosen_length"]["mean"] > m.stats["rejected_length"]["mean"]
    assert m.created_at and "created_at" not in m.params


def test_same_hash_after_rebuild_in_new_warehouse(tmp_path):
    hashes = []
    for _ in range(2):
        with db.connect(":memory:") as con:
            w = Wh(con)
            seed(w)
            hashes.append(build_and_publish(con, spec(), "p", tmp_path / f"r{len(hashes)}").outcome.manifest)
    assert hashes[0].content_hash == hashes[1].content_hash


def test_load_snapshot_splits_never_share_prompts(wh: Wh, tmp_path):
    seed(wh)
    build_and_publish(wh.con, spec(), "prefs", tmp_path)
    snap = load_snapshot("prefs", root=tmp_path)
    assert snap.train.num_rows == 10 and snap.test.num_rows == 2
    assert not set(snap.train["prompt_id"].to_pylist()) & set(snap.test["prompt_id"].to_pylist())
    with pytest.raises(AlignloopError, match="no version 9"):
        load_snapshot("prefs", 9, root=tmp_path)


def test_trl_export_round_trip_conversational_and_standard(wh: Wh, tmp_path):
    seed(wh)
    build_and_publish(wh.con, spec(), "prefs", tmp_path / "snaps")
    snap = load_snapshot("prefs", root=tmp_path / "snaps")
    export_snapshot(snap, "trl", tmp_path / "trl")
    back = read_export(tmp_path / "trl")
    t = back["train"]
    assert t.column_names[:3] == ["prompt", "chosen", "rejected"]
    assert {"prompt_id", "chosen_id", "rejected_id", "feedback_ids", "prob"} <= set(t.column_names)
    row = t.slice(0, 1).to_pylist()[0]
    assert row["chosen"] == [{"role": "assistant", "content": snap.train["chosen"][0].as_py()}]
    assert row["prompt"] == json.loads(snap.train["prompt"][0].as_py())
    assert t["chosen_id"].to_pylist() == snap.train["chosen_id"].to_pylist()
    with pytest.raises(AlignloopError, match="exists; pass --force"):
        export_snapshot(snap, "trl", tmp_path / "trl")
    export_snapshot(snap, "trl", tmp_path / "trl", standard=True, force=True)
    std = read_export(tmp_path / "trl")["test"]
    assert std["prompt"].to_pylist() == snap.test["prompt_text"].to_pylist()
    assert std["chosen"].to_pylist() == snap.test["chosen"].to_pylist()


def test_jsonl_parquet_and_openrlhf_exports(wh: Wh, tmp_path):
    seed(wh)
    build_and_publish(wh.con, spec("binary"), "kto", tmp_path / "s")
    snap = load_snapshot("kto", root=tmp_path / "s")
    for fmt in ("jsonl", "parquet"):
        export_snapshot(snap, fmt, tmp_path / fmt)
        back = read_export(tmp_path / fmt)
        assert back["train"].equals(snap.train) and back["test"].equals(snap.test)
    export_snapshot(snap, "openrlhf", tmp_path / "orl", standard=True)
    rows = [json.loads(x) for x in (tmp_path / "orl" / "train.jsonl").read_text().splitlines()]
    assert {"prompt", "response", "label", "completion_id"} <= set(rows[0]) and len(rows) == snap.train.num_rows


def test_exports_carry_a_dataset_card_that_hf_datasets_loads_by(wh: Wh, tmp_path, monkeypatch):
    """Each export's README.md is a dataset card: its YAML header names each split's file, so
    ``datasets.load_dataset(folder)`` reads the splits (and not the export's own JSON); the body carries the
    content hash, the stage counts and the columns; the same snapshot gives the same card."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    seed(wh)
    build_and_publish(wh.con, spec(), "prefs", tmp_path / "s")
    snap = load_snapshot("prefs", root=tmp_path / "s")
    m = snap.manifest
    for fmt in ("jsonl", "parquet", "openrlhf", "trl"):
        export_snapshot(snap, fmt, tmp_path / fmt)
        card = (tmp_path / fmt / "README.md").read_text()
        assert card.startswith("---\npretty_name: \"prefs@v1\"\n") and m.content_hash in card
        assert "require_consistent 12 -> merge_duplicates 12" in card and "- `ties` = `\"drop\"`" in card
        if fmt == "trl":  # a save_to_disk folder: no data files to name, still read by load_from_disk
            assert "configs:" not in card and "load_from_disk" in card
            assert datasets.load_from_disk(str(tmp_path / fmt))["train"].num_rows == snap.train.num_rows
            continue
        loaded = datasets.load_dataset(str(tmp_path / fmt), cache_dir=str(tmp_path / "hf" / fmt))
        assert set(loaded) == {"train", "test"}
        back = read_export(tmp_path / fmt)
        for split in ("train", "test"):
            assert loaded[split]["chosen_id"] == back[split]["chosen_id"].to_pylist()
        assert f"`{back['train'].column_names[0]}`, `{back['train'].column_names[1]}`" in card
    export_snapshot(snap, "jsonl", tmp_path / "again")
    assert (tmp_path / "again" / "README.md").read_bytes() == (tmp_path / "jsonl" / "README.md").read_bytes()


def test_steps_export_maps_labels_by_recorded_rule(wh: Wh, tmp_path):
    p = wh.prompt("Solve it")
    r = wh.response(p, "sol", steps=["a", "b", "c"])
    wh.step_labels(p, r, [1, 0, -1])
    for neutral, expect in (("true", [True, True, False]), ("false", [True, False, False])):
        build_and_publish(wh.con, spec("steps", neutral_label=neutral), "prm", tmp_path / "s")
        snap = load_snapshot("prm", root=tmp_path / "s")
        res = export_snapshot(snap, "trl", tmp_path / "trl", force=True)
        assert res.label_rule == f"+1 -> {True}, 0 -> {neutral.title()}, -1 -> False"
        t = read_export(tmp_path / "trl")["train"]
        assert t["labels"].to_pylist() == [expect] and t["completions"].to_pylist() == [["a", "b", "c"]]
        assert t["raw_labels"].to_pylist() == [[1, 0, -1]]
        assert f"Label rule (the warehouse keeps -1 / 0 / +1): {res.label_rule}." in (
            tmp_path / "trl" / "README.md").read_text()
    with pytest.raises(AlignloopError, match="openrlhf export supports"):
        export_snapshot(snap, "openrlhf", tmp_path / "x")


def test_lints_count_problems():
    from alignloop.warehouse.snapshots import SCHEMAS

    good = json.dumps([{"role": "user", "content": "hi"}])
    rows = {"prompt_id": ["p1", "p2", "p3"], "split": ["train"] * 3, "round_id": ["r"] * 3,
            "prompt": [good, "not json", json.dumps([{"role": "bot", "content": "x"}])],
            "prompt_text": ["user: hi"] * 3, "chosen": ["same", " ", "word " * 50], "rejected": ["same", "b", "c"],
            "chosen_id": ["a"] * 3, "rejected_id": ["b"] * 3, "prob": [1.0] * 3, "margin": [None] * 3,
            "source": ["human"] * 3, "feedback_ids": [["f"]] * 3}
    report = lint(pa.table(rows, schema=SCHEMAS["pairwise"]), "pairwise", LintOptions(max_tokens=20))
    assert report.counts == {"empty_completion": 1, "chosen_equals_rejected": 1, "over_20_tokens": 1,
                             "bad_chat_prompt": 2, "consecutive_same_role": 0}


def test_length_lint_counts_a_tokenizer_s_tokens_and_refuses_what_is_not_one(tmp_path):
    from alignloop.warehouse.snapshots import SCHEMAS
    from tests.fixtures_trainers import tiny_tokenizer

    tiny_tokenizer().save_pretrained(tmp_path / "tok")  # one token per byte
    chat = json.dumps([{"role": "user", "content": "hi"}])
    rows = {"prompt_id": ["p1", "p2"], "split": ["train"] * 2, "round_id": ["r"] * 2, "prompt": [chat] * 2,
            "prompt_text": ["hi"] * 2, "chosen": ["abcdefghijklmnopqrstuvwxyz", "short"], "rejected": ["no"] * 2,
            "chosen_id": ["a"] * 2, "rejected_id": ["b"] * 2, "prob": [1.0] * 2, "margin": [None] * 2,
            "source": ["human"] * 2, "feedback_ids": [["f"]] * 2}
    table = pa.table(rows, schema=SCHEMAS["pairwise"])
    assert lint(table, "pairwise", LintOptions(max_tokens=20)).counts["over_20_tokens"] == 0  # 2 words at most
    by_tokens = lint(table, "pairwise", LintOptions(max_tokens=20, tokenizer=str(tmp_path / "tok")))
    assert by_tokens.counts["over_20_tokens"] == 1 and by_tokens.tokenizer == str(tmp_path / "tok")
    (tmp_path / "empty").mkdir()
    for name, match in ((str(tmp_path / "missing"), "not a local folder; pass 'default'"),
                        (str(tmp_path / "empty"), "cannot load it from")):
        with pytest.raises(AlignloopError, match=f"tokenizer '{name}': {match}"):
            lint(table, "pairwise", LintOptions(max_tokens=20, tokenizer=name))


def test_flow_steps_and_cli(db_file, tmp_path, monkeypatch):
    with db.connect(db_file) as con:
        seed(Wh(con))
    params = BuildDatasetParams(kind="pairwise", name="prefs", options={"ties": "keep"}, db=db_file,
                                snapshots=str(tmp_path / "snaps"))
    result, known = build_rows.fn(params.db_path(), params.spec(), params.root(), params.name)
    outcome, report = write_snapshot.fn(result, "prefs", params.root(), LintOptions(), known)
    with db.connect(db_file) as con:
        assert register(con, outcome.manifest, outcome.path) == 1
    assert report.counts["empty_completion"] == 0
    runner = CliRunner()
    base = ["--db", db_file, "--snapshots", str(tmp_path / "snaps")]
    res = runner.invoke(app, ["dataset", "build", "pairwise", "--name", "prefs", "-o", "ties=keep", *base])
    assert res.exit_code == 0 and "unchanged" in res.output
    res = runner.invoke(app, ["dataset", "build", "pairwise", "--name", "prefs", "-o", "ties=drop", *base, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["id"] == "prefs@v2"
    res = runner.invoke(app, ["dataset", "build", "pairwise", "--name", "x", "-o", "tie=keep", *base])
    assert res.exit_code == 2 and "valid options:" in res.output
    res = runner.invoke(app, ["dataset", "build", "pairwise", "--name", "x", "-o", "sources=rule", *base])
    assert res.exit_code == 2 and "'comparisons' found no rows" in res.output
    res = runner.invoke(app, ["dataset", "build", "pairs", "--name", "x", *base])
    assert res.exit_code == 2 and "valid kinds" in res.output
    res = runner.invoke(app, ["dataset", "list", *base, "--json"])
    assert [d["id"] for d in json.loads(res.stdout)] == ["prefs@v1", "prefs@v2"]
    res = runner.invoke(app, ["dataset", "export", "prefs", "--version", "1", "--format", "trl", "--out",
                              str(tmp_path / "out"), *base])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["dataset", "export", "prefs", "--format", "trl", "--out", str(tmp_path / "out"), *base])
    assert res.exit_code == 2 and "--force" in res.output
    res = runner.invoke(app, ["dataset", "lint", "prefs", *base, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["train"]["counts"]["chosen_equals_rejected"] == 0
    res = runner.invoke(app, ["dataset", "show", "prefs@v1", *base], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "prefs@v1" in res.output and "comparisons: 12 rows (ai 6, human 6)" in res.output
    assert "comparisons 12 -> require_consistent" in res.output  # stages in the order they ran
    assert res.output.count("contradictory_pairs") == 1 and res.output.count("train=") == 1  # each shown once
    res = runner.invoke(app, ["dataset", "export", "pref", "--format", "trl", "--out", str(tmp_path / "o2"), *base])
    assert res.exit_code == 2 and "no snapshots named 'pref' under" in res.output
    assert "; datasets there: prefs" in res.output


def _project(tmp_path, monkeypatch) -> tuple[Path, list[str]]:
    """A project folder (warehouse, its snapshots, a file of the user's) that is the current folder; the export
    command's options for it."""
    project = tmp_path / "project"
    project.mkdir()
    with db.connect(str(project / "alignloop.duckdb")) as con:
        seed(Wh(con))
        build_and_publish(con, spec(), "prefs", project / "snapshots")
    (project / "notes.txt").write_text("mine")
    monkeypatch.chdir(project)
    return project, ["dataset", "export", "prefs", "--format", "jsonl", "--db", str(project / "alignloop.duckdb")]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("out", [".", "..", "PROJECT", "snapshots", "snapshots/prefs/v1", "notes.txt"])
def test_export_force_refuses_what_no_export_wrote(tmp_path, monkeypatch, out):
    """--force replaced whatever --out named: the current folder (then failed, the export lost too), the warehouse's
    folder (exit 0, the .duckdb gone), snapshots, a user's file. Each is refused in one line; nothing changes."""
    project, cmd = _project(tmp_path, monkeypatch)
    out = str(project) if out == "PROJECT" else out
    before = _tree(tmp_path)
    res = CliRunner().invoke(app, [*cmd, "--out", out, "--force"], env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith("error: refusing to replace") and "\n" not in line and out in line, line
    assert _tree(tmp_path) == before  # nothing removed, nothing left behind
    assert sorted(p.name for p in project.iterdir()) == ["alignloop.duckdb", "notes.txt", "snapshots"]


def test_export_force_refuses_a_folder_holding_a_warehouse_or_more_than_an_export(tmp_path, monkeypatch):
    project, cmd = _project(tmp_path, monkeypatch)
    res = CliRunner().invoke(app, [*cmd, "--out", "exports/prefs"])
    assert res.exit_code == 0, res.output
    (project / "exports" / "prefs" / "train").mkdir()  # a name a trl export uses, holding a warehouse
    (project / "exports" / "prefs" / "train" / "old.duckdb").write_bytes(b"x")
    res = CliRunner().invoke(app, [*cmd, "--out", "exports/prefs", "--force"], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "holds a warehouse" in res.output, res.output
    assert (project / "exports" / "prefs" / "train" / "old.duckdb").exists()
    (project / "exports" / "prefs" / "train" / "old.duckdb").unlink()
    (project / "exports" / "prefs" / "train").rmdir()
    (project / "exports" / "prefs" / "my-notes.md").write_text("mine")  # the user's, inside an export
    res = CliRunner().invoke(app, [*cmd, "--out", "exports/prefs", "--force"], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "'my-notes.md'" in res.output, res.output
    assert (project / "exports" / "prefs" / "my-notes.md").read_text() == "mine"
    res = CliRunner().invoke(app, [*cmd, "--out", "notes.txt"], env={"COLUMNS": "300"})  # without --force: why
    assert res.exit_code == 2 and "it is a file" in res.output and "--force" not in res.output


def test_export_force_replaces_a_previous_export_and_a_failed_one_leaves_it_whole(tmp_path, monkeypatch):
    project, cmd = _project(tmp_path, monkeypatch)
    res = CliRunner().invoke(app, [*cmd, "--out", "exports/prefs"])
    assert res.exit_code == 0, res.output
    first = _tree(project / "exports")
    import os

    import alignloop.pipelines.datasets.export as export_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    rename = os.rename

    def no_swap(src, dst):  # the last step: the new export renamed into place
        if ".tmp-" in str(src):
            raise OSError("rename failed")
        rename(src, dst)

    snap = load_snapshot("prefs", root=project / "snapshots")
    for target, fake, message in ((export_module, "dataset_card", "disk full"), (os, "rename", "rename failed")):
        with monkeypatch.context() as m:
            m.setattr(target, fake, broken if fake == "dataset_card" else no_swap)
            with pytest.raises(OSError, match=message):
                export_snapshot(snap, "parquet", "exports/prefs", force=True)
        assert _tree(project / "exports") == first  # the previous export whole
        assert [p.name for p in (project / "exports").iterdir()] == ["prefs"]  # nothing left beside it
    res = CliRunner().invoke(app, [*cmd[:4], "parquet", *cmd[5:], "--out", "exports/prefs", "--force"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (project / "exports").iterdir()) == ["prefs"]
    assert json.loads((project / "exports" / "prefs" / "alignloop_export.json").read_text())["format"] == "parquet"
    assert not (project / "exports" / "prefs" / "train.jsonl").exists()


def test_dataset_options_lists_each_option_with_its_default_choices_and_help():
    res = CliRunner().invoke(app, ["dataset", "options", "binary", "--json"])
    assert res.exit_code == 0, res.output
    found = {o["name"]: o for o in json.loads(res.stdout)}
    assert found["origin"] == {"name": "origin", "default": "thumbs", "shared": False, "help":
                               "thumbs = ratings on a 0..1 scale; ratings = thresholds on graded ratings; pairwise = "
                               "pairs split in two. One of: thumbs, ratings, pairwise."}
    assert found["pairwise.require_consistent"]["default"] == "true"
    assert found["pairwise.max_length_ratio"]["default"] == "none"
    assert (found["sources"]["default"], found["sources"]["shared"]) == ("human,ai,rule,reward_model", True)
    assert found["rounds"]["default"] == "-" and "all rounds" in found["rounds"]["help"]
    assert all(o["help"] for o in found.values())  # every option documented
    names = list(found)
    assert names.index("undesirable_max") < names.index("sources")  # the kind's own options first
    res = CliRunner().invoke(app, ["dataset", "options", "sft"])
    assert res.exit_code == 0 and "per_prompt" in res.output and "Responses kept per prompt" in res.output


def test_stats_are_rounded_and_a_note_with_nothing_to_measure_says_so(db_file, tmp_path):
    from alignloop.pipelines.datasets.stats import compute_stats, length_histograms

    rows = {"prompt_id": [f"p{i}" for i in range(7)], "split": ["train"] * 7, "source": ["human"] * 7,
            "prompt_text": ["q"] * 7, "chosen": ["c" * 3 * k for k in range(1, 8)], "rejected": ["r"] * 7,
            "prob": [1.0] * 7}
    stats = compute_stats(pa.table(rows), "pairwise")
    # lengths 3, 6, ..., 21: Arrow's interpolated p90 is 19.200000000000003
    assert stats["chosen_length"] == {"mean": 12.0, "median": 12.0, "p90": 19.2, "max": 21}
    edges, counts = length_histograms(pa.table(rows), "pairwise", bins=4)  # one set of bins for both sides
    assert edges.tolist() == [1.0, 6.0, 11.0, 16.0, 21.0]
    assert counts["chosen"].tolist() == [1, 2, 2, 2] and counts["rejected"].tolist() == [7, 0, 0, 0]
    with db.connect(db_file) as con:
        seed(Wh(con))
    base = ["--db", db_file, "--snapshots", str(tmp_path / "snaps")]
    res = CliRunner().invoke(app, ["dataset", "build", "pairwise", "--name", "h", "-o", "sources=human", *base])
    assert res.exit_code == 0, res.output
    assert "ai_swap_consistency" in res.output and "n/a (nothing to measure)" in res.output and "None" not in res.output


def test_diff_names_the_options_and_rows_that_changed_between_versions(wh: Wh, tmp_path):
    from dataclasses import replace

    from alignloop.pipelines.datasets.diff import diff_snapshots
    from alignloop.pipelines.datasets.snapshot import Snapshot

    seed(wh)  # 6 prompts (one held out), each a human pair and an AI pair: 12 rows
    for opts in ({}, {"ties": "keep"}, {"soft_labels": True}, {"sources": ["human"]}):
        build_and_publish(wh.con, spec(**opts), "prefs", tmp_path)
    v = {n: load_snapshot(f"prefs@v{n}", root=tmp_path) for n in (1, 2, 3, 4)}
    same = diff_snapshots(v[1], v[2])
    assert same.same_content and same.params == {"ties": ["drop", "keep"]}
    assert same.counts == {"test": {"added": 0, "removed": 0, "moved": 0, "changed": 0, "same": 2},
                           "train": {"added": 0, "removed": 0, "moved": 0, "changed": 0, "same": 10}}
    soft = diff_snapshots(v[1], v[3])  # the AI pairs now carry the judge's 0.8
    assert not soft.same_content and soft.columns == {"prob": 6}
    assert soft.total("changed") == 6 and soft.total("same") == 6
    fewer = diff_snapshots(v[1], v[4])  # human pairs only: the AI pairs are gone
    assert fewer.total("removed") == 6 and fewer.counts["test"]["removed"] == 1 and fewer.total("same") == 6
    assert len(fewer.examples["removed"]) == 3 and fewer.examples["added"] == []
    assert fewer.params == {"sources": [["human", "ai", "rule", "reward_model"], ["human"]]}
    # a row moved to the other split and one relabelled, by hand
    train, test = v[1].train, v[1].test
    moved = train.slice(0, 1).set_column(train.schema.get_field_index("split"), "split", pa.array(["test"]))
    relabelled = train.slice(1, 1).set_column(train.schema.get_field_index("prob"), "prob", pa.array([0.6]))
    edited = Snapshot(replace(v[1].manifest, id="prefs@edited", content_hash="x"), v[1].path,
                      {"train": pa.concat_tables([relabelled, train.slice(2)]), "test": pa.concat_tables([test, moved])})
    d = diff_snapshots(v[1], edited)
    assert d.counts["test"]["moved"] == 1 and d.total("changed") == 1 and d.total("same") == 10
    assert d.columns == {"prob": 1, "split": 1}
    assert d.examples["moved"] == ["/".join(train.slice(0, 1).select(["chosen_id", "rejected_id"]).to_pylist()[0]
                                            .values())]
    build_and_publish(wh.con, spec("binary"), "flags", tmp_path)
    with pytest.raises(AlignloopError, match="prefs@v1 is a pairwise dataset and flags@v1 a binary one"):
        diff_snapshots(v[1], load_snapshot("flags", root=tmp_path))


def test_dataset_diff_cli_compares_a_version_with_the_one_before(wh: Wh, tmp_path):
    seed(wh)
    for opts in ({}, {"soft_labels": True}):
        build_and_publish(wh.con, spec(**opts), "prefs", tmp_path)
    wide = {"COLUMNS": "200"}
    out = CliRunner().invoke(app, ["dataset", "diff", "prefs", "--snapshots", str(tmp_path)], env=wide)
    assert out.exit_code == 0, out.output
    assert "prefs@v1 -> prefs@v2 (pairwise): rows differ" in out.output
    assert "soft_labels" in out.output and "changed columns: prob (6)" in out.output
    js = CliRunner().invoke(app, ["dataset", "diff", "prefs@v1", "prefs@v2", "--snapshots", str(tmp_path), "--json"])
    assert js.exit_code == 0 and json.loads(js.output)["columns"] == {"prob": 6}
    first = CliRunner().invoke(app, ["dataset", "diff", "prefs@v1", "--snapshots", str(tmp_path)], env=wide)
    assert first.exit_code == 2 and "prefs@v1 is the first version of prefs" in first.output
