"""Self-rewarding rounds (Yuan et al. 2024): the policy a round starts from is its own AI judge, so the judge
improves with the policy from round to round."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from alignloop.flows.round import RoundParams, round_flow
from alignloop.pipelines.models import model_name
from tests.fixtures_round import PROMPTS, scalar, seed_human_round


def test_each_self_rewarding_round_is_judged_by_the_policy_it_starts_from(tmp_path, prefect_harness):
    policy = seed_human_round(tmp_path)
    # a tiny random judge prefers one position whatever the answers: its verdicts train as soft labels
    common = {"feedback": "ai_judge", "judge_model": "policy", "require_consistent": False, "n": 2,
              "temperature": 1.0, "max_new_tokens": 6, "prompts_per_round": PROMPTS, "fresh_prompts": True,
              "heldout_limit": 2, "heldout_max_new_tokens": 6, "win_rate": False, "epochs": 1, "batch_size": 2,
              "max_length": 96, "runs_dir": str(tmp_path / "runs"), "db": str(tmp_path / "w.duckdb")}
    first = round_flow(RoundParams(round="s1", policy=str(policy), **common))
    second = round_flow(RoundParams(round="s2", policy="previous", parent_round="s1", **common))
    # round 1's judge is the policy it started from, round 2's the policy round 1 trained (folders by content)
    assert first["feedback"]["judge"].startswith(f"{model_name(str(policy))}:") and first["new_policy"] != str(policy)
    assert second["feedback"]["judge"].startswith(f"{model_name(first['new_policy'])}:")
    assert first["feedback"]["judge"] != second["feedback"]["judge"]
    db_file = tmp_path / "w.duckdb"
    for round_id, out in (("s1", first), ("s2", second)):
        judges = scalar(db_file, "SELECT list(DISTINCT judge) FROM comparisons WHERE round_id = ?", round_id)
        assert judges == [out["feedback"]["judge"]], judges
    # every verdict kept, as the judge's swap-averaged probability
    params = json.loads((Path(first["dataset"]["path"]) / "manifest.json").read_text())["params"]["config"]
    assert (params["require_consistent"], params["soft_labels"], params["ties"]) == (False, True, "keep")
    probs = pq.read_table(Path(first["dataset"]["path"]) / "train.parquet", columns=["prob"]).column(0).to_pylist()
    assert probs and all(0.0 <= p <= 1.0 for p in probs)
