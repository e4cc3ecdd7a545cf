"""Warehouse: schema, content ids, insert-if-absent round trips for every table, history, lock waits."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest

from alignloop.warehouse import db, ids
from alignloop.warehouse.records import (
    AnnotationTask,
    Comparison,
    Correction,
    DatasetRecord,
    Evaluation,
    Metric,
    Model,
    Prompt,
    Ranking,
    Rating,
    Response,
    Round,
    StepLabel,
    TrainingRun,
)


def _sample_rows() -> dict[str, list]:
    p = Prompt.create([{"role": "user", "content": "What is 2+2?"}], "test", reference="4", tags=["math"])
    m = Model.create("models/tiny", "policy")
    r1 = Response.sampled(p.id, m.id, "r1", "4", {"temperature": 0.0}, 0, 0, steps=["2+2", "=4"])
    r2 = Response.sampled(p.id, m.id, "r1", "5", {"temperature": 0.0}, 0, 1)
    fix = Response.given(p.id, "human", "r1", "4 (corrected)", "human_edit", parent_id=r2.id)
    return {
        "prompts": [p], "models": [m], "rounds": [Round("r1", policy_model_id=m.id, config={"n": 2})],
        "responses": [r1, r2, fix],
        "comparisons": [Comparison(Comparison.make_id("j", r1.id, r2.id), p.id, r1.id, r2.id, "a", "j", "ai", "r1",
                                   prob_a=0.8, verdict_ab="A", verdict_ba="B", consistent=True)],
        "rankings": [Ranking(Ranking.make_id("j", [r1.id, r2.id]), p.id, [r1.id, r2.id], "j", "ai", "r1",
                             scores=[2.0, 0.0], permutations=[[0, 1], [1, 0]])],
        "ratings": [Rating(Rating.make_id("v", r1.id), p.id, r1.id, 1.0, 0, 1, "v", "rule", "r1")],
        "step_labels": [StepLabel(StepLabel.make_id("h", r1.id, 0), p.id, r1.id, 0, 1, "h", "human", "r1")],
        "corrections": [Correction(Correction.make_id("h", r2.id), p.id, r2.id, fix.id, "h", "human", "r1")],
        "annotation_tasks": [AnnotationTask("t1", "pairwise", "r1", [r1.id, r2.id], {"a": "4"}, 1, 10)],
        "datasets": [DatasetRecord("prefs@1", "prefs", 1, "pairwise", {"min_margin": 0}, "h", "snapshots/prefs/v1")],
        "training_runs": [TrainingRun("run1", "dpo", {"beta": 0.1}, dataset_id="prefs@1")],
        "training_metrics": [Metric("run1", 1, "loss", 0.69), Metric("run1", 2, "loss", 0.5)],
        "evaluations": [Evaluation.create("heldout", m.id, "accuracy", 0.5, round_id="r1")],
    }


def test_every_table_round_trips_and_reinsert_adds_nothing():
    rows = _sample_rows()
    with db.connect(":memory:") as con:
        for table, recs in rows.items():
            assert db.ingest(con, table, recs) == len(recs), table
        for table, recs in rows.items():
            assert db.ingest(con, table, recs) == 0, table
        counts = db.counts(con)
        for table, recs in rows.items():
            assert counts[table] == len(recs)
        msgs, tags = con.execute("SELECT messages, tags FROM prompts").fetchone()
        assert json.loads(msgs) == [{"role": "user", "content": "What is 2+2?"}]
        assert tags == ["math"]
        assert con.execute("SELECT steps FROM responses WHERE text = '4'").fetchone()[0] == ["2+2", "=4"]
        perms = con.execute("SELECT permutations FROM rankings").fetchone()[0]
        assert json.loads(perms) == [[0, 1], [1, 0]]


def test_ids_are_content_hashes():
    a = ids.prompt_id([{"role": "user", "content": "hi"}])
    assert a == ids.prompt_id([{"content": "hi", "role": "user"}])
    assert a != ids.prompt_id([{"role": "user", "content": "hi!"}])
    assert ids.response_id("p", "m", {"t": 1}, 0, 0) != ids.response_id("p", "m", {"t": 1}, 0, 1)
    assert len(a) == ids.ID_HEX and int(a, 16) >= 0
    assert Prompt.create([{"role": "user", "content": "Hi  there!"}], "s").norm_hash == \
        Prompt.create([{"role": "user", "content": "hi there"}], "s").norm_hash


def test_duplicates_inside_one_batch_keep_the_first():
    p = Prompt.create([{"role": "user", "content": "x"}], "a")
    q = dataclasses.replace(p, source="b")
    with db.connect(":memory:") as con:
        assert db.ingest(con, "prompts", [p, q]) == 1
        assert con.execute("SELECT source FROM prompts").fetchone() == ("a",)


def test_replace_feedback_keeps_history():
    rows = _sample_rows()
    c = rows["comparisons"][0]
    with db.connect(":memory:") as con:
        assert db.replace_feedback(con, "comparisons", [c]) == (1, 0)
        assert db.replace_feedback(con, "comparisons", [c]) == (0, 0)
        assert db.replace_feedback(con, "comparisons", [dataclasses.replace(c, winner="b")]) == (0, 1)
        assert con.execute("SELECT winner FROM comparisons").fetchall() == [("b",)]
        old = con.execute("SELECT row_json FROM feedback_history").fetchone()[0]
        assert json.loads(old)["winner"] == "a"


def test_transaction_writes_nothing_on_failure():
    p = Prompt.create([{"role": "user", "content": "x"}], "a")
    with db.connect(":memory:") as con:
        with pytest.raises(RuntimeError), db.transaction(con):
            db.ingest(con, "prompts", [p])
            raise RuntimeError("boom")
        assert db.counts(con)["prompts"] == 0


def test_migrations_are_recorded_and_idempotent(tmp_path):
    path = tmp_path / "w.duckdb"
    with db.connect(path) as con:
        first = con.execute("SELECT version FROM schema_version").fetchall()
    with db.connect(path) as con:
        again = con.execute("SELECT version FROM schema_version").fetchall()
    assert first == again == [(v,) for v, _ in db.migrations()]


def test_unknown_table_is_refused():
    with db.connect(":memory:") as con, pytest.raises(ValueError, match="unknown warehouse table"):
        db.ingest(con, "prompts; DROP TABLE prompts", [])


def test_second_writer_waits_then_says_busy(tmp_path):
    path = tmp_path / "busy.duckdb"
    with db.connect(path):
        pass
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(db.WarehouseBusy, match="busy.duckdb"):
            db.open_connection(path, wait_s=0.5)
    finally:
        holder.kill()
        holder.wait()
    with db.connect(path, wait_s=5) as con:  # free again
        assert con.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize(("url", "stored", "secrets"), [
    ("https://alice:sk-123@api.example.com/v1", "https://api.example.com/v1", ["alice:sk-123", "sk-123"]),
    ("https://sk-token-9@gw.example.com:8443/v1", "https://gw.example.com:8443/v1", ["sk-token-9"]),
    ("https://h.example.com/v1?api_key=sk-1%2F2&api-version=2024-06-01",
     "https://h.example.com/v1?api_key=***&api-version=2024-06-01", ["sk-1%2F2", "sk-1/2"]),
    ("https://h.example.com/v1?access_token=t0k&sig=s1g", "https://h.example.com/v1?access_token=***&sig=***",
     ["s1g", "t0k"]),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1", []),  # nothing to take: kept byte for byte
    ("rule-judge", "rule-judge", []),
])
def test_a_url_is_stored_without_the_credentials_it_carries(url, stored, secrets):
    from alignloop.warehouse.redact import redact_url, redact_urls, scrub, url_secrets

    assert redact_url(url) == stored
    assert sorted(url_secrets(url)) == sorted(secrets)
    assert scrub(f"GET {url} failed", *url_secrets(url)).count("***") >= (1 if secrets else 0)
    assert not any(s in scrub(f"GET {url} failed", *url_secrets(url)) for s in secrets)
    assert redact_urls({"judge_base_url": url, "model": url, "n": 2}) == {"judge_base_url": stored, "model": url,
                                                                          "n": 2}


def _old_warehouse(path, version: int) -> None:
    """A warehouse as the release whose last migration was ``version`` left it."""
    import duckdb

    old = duckdb.connect(str(path))
    old.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL DEFAULT "
                "current_timestamp)")
    for v, sql in db.migrations()[:version]:
        old.execute(sql)
        old.execute("INSERT INTO schema_version (version) VALUES (?)", [v])
    old.close()


def _version_of(path) -> int:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    finally:
        con.close()


def test_opening_an_older_warehouse_does_not_migrate_it_unless_asked(tmp_path):
    """Reading (or writing) with this release leaves a v2 file at v2 and says how to migrate; only migrate=True
    (``alignloop init``) brings it up to date."""
    path = tmp_path / "v2.duckdb"
    _old_warehouse(path, 2)
    latest = db.latest_version()
    for read_only in (True, False):
        with pytest.raises(db.SchemaMismatch, match=rf"v2.duckdb has schema v2; this release needs v{latest}: run "
                                                    rf"'alignloop init --db .*v2.duckdb' to migrate it"):
            db.open_connection(path, read_only=read_only)
    assert _version_of(path) == 2
    with db.connect(path, migrate=True) as con:
        assert db.schema_version(con) == latest


def test_a_newer_warehouse_is_refused_naming_both_versions(tmp_path):
    path = tmp_path / "v99.duckdb"
    with db.connect(path) as con:
        con.execute("INSERT INTO schema_version (version) VALUES (99)")
    for kw in ({}, {"read_only": True}, {"migrate": True}):
        with pytest.raises(db.SchemaMismatch, match=rf"schema v99, newer than this release of alignloop knows "
                                                    rf"\(v{db.latest_version()}\)"):
            db.open_connection(path, **kw)
    assert _version_of(path) == 99


@pytest.mark.parametrize("kind,match", [("empty", "is an empty file, not a warehouse"),
                                        ("garbage", r"is not a DuckDB database \(its first bytes"),
                                        ("folder", "is a folder, not a warehouse file")])
def test_a_path_that_is_no_warehouse_is_one_error_naming_it(tmp_path, kind, match):
    path = tmp_path / "z.duckdb"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_bytes(b"" if kind == "empty" else bytes(range(256)) * 20)
    for kw in ({}, {"read_only": True}, {"migrate": True}):
        with pytest.raises(db.WarehouseUnreadable, match=f"z.duckdb {match}"):
            db.open_connection(path, **kw)
    with pytest.raises(db.WarehouseUnreadable, match=f"z.duckdb {match}"):
        db.existing_path(path)
    assert path.is_dir() if kind == "folder" else path.stat().st_size in (0, 5120)


def test_a_duckdb_database_of_something_else_is_not_taken_over(tmp_path):
    import duckdb

    path = tmp_path / "other.duckdb"
    other = duckdb.connect(str(path))
    other.execute("CREATE TABLE sales (n INTEGER)")
    other.close()
    with pytest.raises(db.WarehouseUnreadable, match="other.duckdb is a DuckDB database but not an alignloop "
                                                     "warehouse"):
        db.open_connection(path, migrate=True)


def test_a_connection_to_an_existing_warehouse_takes_arrow_tables_at_once(tmp_path):
    """Opening reads the schema version; a result left open there made DuckDB refuse the first ingest."""
    path = tmp_path / "w.duckdb"
    with db.connect(path):
        pass
    with db.connect(path) as con:
        assert db.ingest(con, "prompts", [Prompt.create([{"role": "user", "content": "x"}], "a")]) == 1
