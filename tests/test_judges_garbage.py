"""A judge endpoint answering garbage over HTTP (tests/fixtures_judge_server.py): every kind stores its verdicts as
invalid with the reason, never as ties, sides or scores, and `judge report` shows each judge's invalid rate."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from alignloop.warehouse import db
from tests.fixtures_judge_server import garbage_judge  # noqa: F401
from tests.fixtures_judges import seed_round

KINDS = ("pairwise", "listwise", "rating", "binary", "steps")


def test_a_garbage_answering_judge_is_invalid_in_every_kind_and_in_the_report(tmp_path, garbage_judge):  # noqa: F811
    from alignloop.flows.cli import app

    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        seed_round(con)
    runner = CliRunner()
    for kind in KINDS:
        res = runner.invoke(app, ["judge", kind, "--round", "r1", "--judge", "garbage", "--backend", "openai",
                                  "--base-url", garbage_judge, "--group-size", "3", "--db", path, "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["selected"] > 0 and out["invalid"] > 0, out
    with db.connect(path) as con:
        winners = con.execute("SELECT winner, meta->>'invalid_reason', meta->>'reason_ab' FROM comparisons").fetchall()
        ratings = con.execute("SELECT score, meta->>'template', meta->>'invalid_reason' FROM ratings").fetchall()
        labels = con.execute("SELECT label, meta->>'invalid_reason' FROM step_labels").fetchall()
        rankings = con.execute("SELECT meta->>'invalid', meta->>'invalid_reason' FROM rankings").fetchall()
    assert len(winners) == 9 and all(w == "invalid" and why and ab for w, why, ab in winners)  # no tie, no side
    assert {t for _, t, _ in ratings} == {"rating", "binary"}
    assert all(score is None and why for score, _, why in ratings)
    assert labels and all(label is None and why for label, why in labels)
    assert len(rankings) == 3 and all(inv == "true" and why.startswith("no reply could be read") for inv, why in rankings)
    res = runner.invoke(app, ["judge", "report", "--db", path, "--json", "--png", ""])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    read = {r["kind"]: r for r in report["verdicts"]}
    assert set(read) == set(KINDS)
    for kind, r in read.items():
        assert r["judge"].startswith("garbage:") and r["invalid_rate"] == 1.0 and r["invalid"] == r["verdicts"] > 0
        assert r["reasons"] and sum(r["reasons"].values()) <= r["invalid"], r
    assert read["pairwise"]["verdicts"] == 18  # both orders of 9 pairs
    (pairwise,) = report["pairwise"]
    assert pairwise["invalid_rate"] == 1.0 and pairwise["consistency"] is None and pairwise["first_position"] is None
    with db.connect(path) as con:
        stored = con.execute("SELECT target, value FROM evaluations WHERE metric = 'invalid_rate'").fetchall()
    assert len(stored) == len(KINDS) and all(v == 1.0 for _, v in stored)
    table = runner.invoke(app, ["judge", "report", "--db", path, "--png", ""], env={"COLUMNS": "200"})
    assert "replies each AI judge gave" in table.output and "1.00" in table.output, table.output
