"""Safe RLHF end to end through the CLI, as the README tells it: PKU-SafeRLHF records in, a reward model on the
helpfulness pairs, a cost model on the harmlessness pairs then on the per-answer safety labels, and PPO under the
cost bound. Tiny random models stand in for SmolLM2 (records written in the dataset's published schema)."""

from __future__ import annotations

import json
import random

from typer.testing import CliRunner

from alignloop.warehouse import db
from tests.fixtures_trainers import WORDS, tiny_model_dir  # noqa: F401

ENV = {"COLUMNS": "400"}


def _records(n: int) -> list[dict]:
    """Every prompt: a helpful but unsafe answer ('sure ...') and a safe refusal ('no ...')."""
    rng = random.Random(0)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(3))
        out.append({"prompt": f"q{i} {words}", "response_0": f"sure {words} {i}", "response_1": f"no {i}",
                    "better_response_id": 0, "safer_response_id": 1, "is_response_0_safe": False,
                    "is_response_1_safe": True})
    return out


def test_the_safe_rlhf_recipe_runs_from_pku_records_to_a_cost_bounded_policy(tmp_path, tiny_model_dir,  # noqa: F811
                                                                           monkeypatch):
    from alignloop.flows.cli import app

    monkeypatch.setenv("ALIGNLOOP_CACHE", str(tmp_path / "cache"))
    path = str(tmp_path / "w.duckdb")
    pku = tmp_path / "pku.jsonl"
    pku.write_text("".join(json.dumps(r) + "\n" for r in _records(24)))

    def cli(*args: str) -> str:
        out = CliRunner().invoke(app, [*args, "--db", path], env=ENV)
        assert out.exit_code == 0, out.output
        return out.output

    quick = ("--max-steps", "3", "--batch-size", "4", "--max-length", "64")
    cli("prompts", "import", str(pku), "--test-fraction", "0.25")
    for name, opts in (("helpful", ["-o", "aspect=helpfulness"]), ("harmless", ["-o", "aspect=harmlessness"])):
        cli("dataset", "build", "pairwise", "--name", name, *opts, "-o", "decontaminate=false")
    cli("dataset", "build", "binary", "--name", "safety", "-o", "origin=thumbs", "-o", "aspect=safety",
        "-o", "decontaminate=false")
    cli("train", "reward", "--dataset", "helpful", "--base", str(tiny_model_dir), *quick,
        "--output-dir", str(tmp_path / "rm"))
    cli("train", "reward", "--dataset", "harmless", "--base", str(tiny_model_dir), *quick,
        "--output-dir", str(tmp_path / "cost-pairs"))
    cli("train", "reward", "--dataset", "safety", "--base", str(tmp_path / "cost-pairs" / "model"), *quick,
        "--output-dir", str(tmp_path / "cost"))
    cli("train", "ppo", "--dataset", "helpful", "--base", str(tiny_model_dir), "--reward-model",
        str(tmp_path / "rm" / "model"), "--cost-model", str(tmp_path / "cost" / "model"), "--cost-limit", "0",
        "--max-steps", "2", "--max-new-tokens", "6", "--output-dir", str(tmp_path / "ppo"))
    with db.connect(path) as con:
        runs = con.execute("SELECT method, d.name, r.meta->>'$.safe_rlhf.cost_limit', "
                           "r.meta->>'$.safe_rlhf.cost_model' FROM training_runs r "
                           "LEFT JOIN datasets d ON d.id = r.dataset_id ORDER BY r.method, d.name").fetchall()
        kinds = dict(con.execute("SELECT name, kind FROM datasets").fetchall())
        lams = con.execute("SELECT count(*) FROM training_metrics WHERE name = 'lambda'").fetchone()[0]
    assert kinds == {"helpful": "pairwise", "harmless": "pairwise", "safety": "binary"}
    assert [r[:2] for r in runs] == [("ppo", "helpful"), ("reward", "harmless"), ("reward", "helpful"),
                                     ("reward", "safety")]
    assert runs[0][2:] == ("0.0", str(tmp_path / "cost" / "model")) and lams == 2
    # the cost model's lineage: the sign stage started from the pairs stage's model
    with db.connect(path) as con:
        (parent,) = con.execute("SELECT m.uri FROM models m JOIN models c ON c.parent_id = m.id "
                                "WHERE c.uri = ?", [str(tmp_path / "cost" / "model")]).fetchone()
    assert parent == str(tmp_path / "cost-pairs" / "model")
