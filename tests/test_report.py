"""The platform report (``alignloop report``) and the status tables: rounds, runs, datasets, loss curves."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from alignloop.flows.cli import app
from alignloop.pipelines.report import datasets_summary, runs_summary, write_report
from alignloop.warehouse import db


def _seed(con) -> None:
    con.execute("INSERT INTO datasets (id, name, version, kind, params, row_counts, content_hash, path) "
                "VALUES ($id, 'p<q', 1, 'pairwise', '{}', $rows, $hash, 'snap')",
                {"id": "p<q@v1", "rows": json.dumps({"train": 10, "test": 2}), "hash": "ab" * 32})
    meta = {"steps": 4, "train_seconds": 1.5, "eval": {"eval/loss": 0.61, "eval/rewards/accuracies": 0.75,
                                                        "eval/examples": 2.0}}
    con.execute("INSERT INTO training_runs (id, method, config, dataset_id, status, meta) "
                "VALUES ('run0123456789abcdef', 'dpo', '{}', 'p<q@v1', 'finished', $meta)", {"meta": json.dumps(meta)})
    for step, loss in ((1, 0.69), (2, 0.65), (4, 0.6)):
        con.execute("INSERT INTO training_metrics VALUES ('run0123456789abcdef', $s, 'loss', $v)",
                    {"s": step, "v": loss})


def test_report_lists_runs_and_datasets_outside_rounds(tmp_path):
    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        empty = write_report(con, tmp_path / "empty").read_text()
        assert "No evaluated rounds yet" in empty and "No training runs yet" in empty and "No datasets yet" in empty
        _seed(con)
        runs, datasets = runs_summary(con), datasets_summary(con)
        page = write_report(con, tmp_path / "rep").read_text()
    assert runs == [{"run": "run0123456789abcdef", "method": "dpo", "dataset": "p<q@v1", "round": None,
                     "status": "finished", "started_at": runs[0]["started_at"], "steps": 4, "train_seconds": 1.5,
                     "eval": {"loss": 0.61, "rewards/accuracies": 0.75, "examples": 2.0}}]
    assert datasets[0]["rows"] == {"train": 10, "test": 2} and datasets[0]["kind"] == "pairwise"
    assert "<td>run012345678</td><td>dpo</td><td>p&lt;q@v1</td>" in page  # names are escaped
    assert "<th>rewards/accuracies</th>" in page and "<td>0.750</td>" in page and "examples" not in page
    assert "<td>train 10, test 2</td><td>abababababab</td>" in page
    assert (tmp_path / "rep" / "losses.png").stat().st_size > 1000
    res = CliRunner().invoke(app, ["report", "--db", path, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["run"] for r in out["runs"]] == ["run0123456789abcdef"] and out["datasets"][0]["dataset"] == "p<q@v1"


def test_status_table_leaves_out_feedback_kinds_no_round_has(tmp_path):
    from tests.fixtures_datasets import Wh

    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        wh = Wh(con)
        p = wh.prompt("How do I fix a bike chain?")
        a, b = wh.responses(p, "Shift to the smallest cog first.", "No idea.")
        wh.compare(p, a, b, "a")
    res = CliRunner().invoke(app, ["status", "--db", path], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    header = next(line for line in res.output.splitlines() if "┃ round" in line)
    assert "responses" in header and "comparisons" in header and "…" not in res.output
    assert "rankings" not in header and "corrections" not in header
    assert "kinds with no rows in any round are left out" in res.output



def test_report_replaces_an_earlier_report_but_never_a_folder_s_own_index(tmp_path):
    """``alignloop report --out .`` in a project with its own index.html wrote over it; refused, nothing written."""
    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        _seed(con)
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html>my project page</html>")
    res = CliRunner().invoke(app, ["report", "--out", str(site), "--db", path], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "refusing to replace" in res.output and "index.html" in res.output, res.output
    assert [p.name for p in site.iterdir()] == ["index.html"]
    assert (site / "index.html").read_text() == "<html>my project page</html>"
    for _ in range(2):  # an earlier report's files are replaced
        res = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "reports"), "--db", path])
        assert res.exit_code == 0, res.output
    assert "alignloop report" in (tmp_path / "reports" / "index.html").read_text()
