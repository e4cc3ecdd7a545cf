"""A round end to end with the embedded model, killed in the middle and run again: no duplicates, no gaps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from alignloop.pipelines.demo_prompts import write_demo_prompts
from alignloop.pipelines.evaluation import StoppingRule, text_stats
from alignloop.pipelines.intake import ImportOptions, import_file
from alignloop.warehouse import db

PROMPTS, SAMPLES, HELDOUT = 16, 4, 4


def _round_cmd(tmp: Path) -> list[str]:
    code = (
        "from alignloop.flows.round import RoundParams, round_flow; import json; "
        f"out = round_flow(RoundParams(round='next', prompts_per_round={PROMPTS}, n={SAMPLES}, "
        f"heldout_limit={HELDOUT}, heldout_max_new_tokens=16, epochs=1, batch_size=2, "
        f"runs_dir='{tmp / 'runs'}', db='{tmp / 'w.duckdb'}')); "
        "print('RESULT ' + json.dumps({k: out[k] for k in ('round', 'heldout', 'stop', 'reason', 'timings')}))"
    )
    return [sys.executable, "-c", code]


def _counts(path: Path) -> dict[str, int] | None:
    """Row counts of the tables the kill checks, read in one connection; None while the round holds the lock."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:  # the round holds the write lock right now
        return None
    try:
        return {table: con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                for table in ("responses", "ratings", "datasets")}
    except duckdb.Error:  # tables not created yet
        return None
    finally:
        con.close()


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("round")
    with db.connect(tmp / "w.duckdb") as con:
        import_file(con, write_demo_prompts(tmp / "p.jsonl"), ImportOptions(source="demo"))
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ALIGNLOOP_LOCK_WAIT": "120"}
    proc = subprocess.Popen(_round_cmd(tmp), cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 900
    before: dict[str, int] = {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:  # kill once the dataset is built (training)
            counts = _counts(tmp / "w.duckdb")
            if counts and counts["datasets"]:
                before = counts  # one snapshot: a second connection could meet the round's lock
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(1)
    finally:
        proc.wait(timeout=60)
    rerun = subprocess.run(_round_cmd(tmp), cwd=tmp, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    result = json.loads(next(line for line in rerun.stdout.splitlines() if line.startswith("RESULT "))[7:])
    return tmp, before, result


@pytest.mark.slow
def test_round_killed_during_training_resumes_without_duplicates(killed_and_resumed):
    """Run as round 'next' (as a schedule runs it): r1 on the new warehouse, and the killed r1 again on rerun."""
    tmp, before, result = killed_and_resumed
    assert before, "the round finished before it could be killed"
    assert result["round"] == "r1"
    with db.connect(tmp / "w.duckdb") as con:
        train_samples = con.execute("SELECT count(*) FROM responses WHERE round_id = 'r1'").fetchone()[0]
        distinct = con.execute("SELECT count(DISTINCT (prompt_id, sample_index)) FROM responses "
                               "WHERE round_id = 'r1'").fetchone()[0]
        assert train_samples == distinct == PROMPTS * SAMPLES  # no gaps, no duplicates
        assert train_samples == before["responses"]
        assert con.execute("SELECT count(*) FROM datasets").fetchone()[0] == before["datasets"] == 1
        runs = con.execute("SELECT count(*), min(status) FROM training_runs WHERE round_id = 'r1'").fetchone()
        assert runs[0] == 1
        status = con.execute("SELECT status, policy_model_id FROM rounds WHERE id = 'r1'").fetchone()
        assert status[0] in ("done", "stopped") and status[1]
        heldout = con.execute("SELECT count(*) FROM responses WHERE round_id = 'r1/heldout'").fetchone()[0]
        assert heldout == HELDOUT
        metrics = dict(con.execute("SELECT metric, value FROM evaluations WHERE kind = 'heldout' "
                                   "AND round_id = 'r1'").fetchall())
    assert {"heldout_accuracy", "kl_to_reference", "distinct_2", "mean_words"} <= metrics.keys()
    assert 0.0 <= metrics["heldout_accuracy"] <= 1.0
    assert result["heldout"]["heldout_accuracy"] == pytest.approx(metrics["heldout_accuracy"])
    assert (tmp / "runs" / "r1").exists()


@pytest.mark.slow
def test_report_json_lists_the_round(killed_and_resumed):
    tmp, _, _ = killed_and_resumed
    out = subprocess.run([str(Path(sys.executable).with_name("alignloop")), "report", "--json", "--db",
                          str(tmp / "w.duckdb")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    rounds = json.loads(out.stdout)["rounds"]
    assert [r["round"] for r in rounds] == ["r1"] and "heldout_accuracy" in rounds[0]
    page = subprocess.run([str(Path(sys.executable).with_name("alignloop")), "report", "--out",
                           str(tmp / "report"), "--db", str(tmp / "w.duckdb")], capture_output=True, text=True, check=False)
    assert page.returncode == 0 and (tmp / "report" / "index.html").exists()
    assert (tmp / "report" / "rounds.png").exists()


@pytest.mark.slow
def test_the_next_round_after_a_finished_one_continues_from_its_policy(killed_and_resumed):
    """What a schedule does each night: round 'next' after r1 is r2, from the policy r1 trained (policy 'auto')."""
    tmp, _, _ = killed_and_resumed  # after the report test, which expects r1 alone
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    run = subprocess.run(_round_cmd(tmp), cwd=tmp, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["round"] == "r2"
    with db.connect(tmp / "w.duckdb") as con:
        r1_model = con.execute(db.query("round_output_model"), {"round_id": "r1"}).fetchone()[1]
        parent, policy = con.execute("SELECT parent_round_id, policy_model_id FROM rounds WHERE id = 'r2'").fetchone()
        assert (parent, policy) == ("r1", r1_model)
        assert con.execute("SELECT count(*) FROM responses WHERE round_id = 'r2'").fetchone()[0] == PROMPTS * SAMPLES


def test_stopping_rule_stops_on_stall_and_on_degeneration():
    rule = StoppingRule(min_improvement=0.02)
    assert rule.decide([{"heldout_accuracy": 0.1}])[0] is False
    go, why = rule.decide([{"heldout_accuracy": 0.1}, {"heldout_accuracy": 0.3}])
    assert go is False and "+0.200" in why
    stop, why = rule.decide([{"heldout_accuracy": 0.1}, {"heldout_accuracy": 0.3}, {"heldout_accuracy": 0.29}])
    assert stop and "-0.010" in why
    stop, why = rule.decide([{"heldout_accuracy": 0.1, "repetition": 0.0}, {"heldout_accuracy": 0.9,
                                                                            "repetition": 0.5}])
    assert stop and why.startswith("degeneration")
    stop, why = rule.decide([{"heldout_accuracy": 0.1, "distinct_2": 0.8}, {"heldout_accuracy": 0.9,
                                                                            "distinct_2": 0.3}])
    assert stop and "distinct-2" in why


def test_text_stats_expose_repetition():
    s = text_stats(["cats cats cats cats", "a fine answer here"])
    assert s["repetition"] == 0.5 and s["mean_words"] == 4.0
    assert text_stats(["a b", "a b"])["unique_answers"] == 0.5
