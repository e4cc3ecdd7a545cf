"""A round whose feedback is a reward model: the round's samples scored, per prompt the best over the worst."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.round import RoundParams, round_flow
from tests.fixtures_round import PROMPTS, scalar, seed_human_round
from warehouse import db
from warehouse.errors import AlignloopError


def _reward_model(policy, folder):
    """A random one-score reward model on the policy's backbone and tokenizer (as `train reward` starts from)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(policy)
    config.num_labels = 1
    torch.manual_seed(1)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(policy).save_pretrained(folder)
    return folder


def _params(tmp, policy, round_id, reward_model):
    return RoundParams(round=round_id, policy=str(policy), feedback="reward_model", reward_model=str(reward_model),
                       n=3, temperature=1.0, max_new_tokens=8, prompts_per_round=PROMPTS, fresh_prompts=True,
                       heldout_limit=2, heldout_max_new_tokens=8, win_rate=False, epochs=1, batch_size=2,
                       max_length=96, runs_dir=str(tmp / "runs"), db=str(tmp / "w.duckdb"))


def test_a_round_trains_on_its_reward_model_s_best_over_worst(tmp_path, prefect_harness):
    policy = seed_human_round(tmp_path)
    rm = _reward_model(policy, tmp_path / "rm")
    with pytest.raises(ValidationError, match="feedback 'reward_model' needs reward_model"):
        RoundParams(round="x", feedback="reward_model")
    with pytest.raises(AlignloopError, match=r"policy is a LlamaForCausalLM, not a reward model"):
        round_flow(_params(tmp_path, policy, "bad", policy))  # refused before anything is generated
    db_file = tmp_path / "w.duckdb"
    assert scalar(db_file, "SELECT count(*) FROM responses") == 0

    out = round_flow(_params(tmp_path, policy, "rm1", rm))
    assert out["feedback"]["judge"] == f"{rm}:orm@v2" and out["feedback"]["aspect"] == "reward"
    assert scalar(db_file, "SELECT count(*) FROM ratings WHERE source = 'reward_model' AND round_id = 'rm1'") == \
        PROMPTS * 3
    import pyarrow.parquet as pq

    pairs = pq.read_table(f"{out['dataset']['path']}/train.parquet").to_pylist()
    assert out["dataset"]["rows"]["train"] == len(pairs) == PROMPTS  # one pair per prompt
    with db.connect(str(db_file)) as con:
        best = {p: (hi, lo) for p, hi, lo in con.execute(
            "SELECT prompt_id, arg_max(response_id, score), arg_min(response_id, score) FROM ratings "
            "WHERE round_id = 'rm1' GROUP BY prompt_id").fetchall()}
    assert {r["prompt_id"]: (r["chosen_id"], r["rejected_id"]) for r in pairs} == best  # its best over its worst
    assert out["train"]["steps"] >= 1 and out["heldout"]
