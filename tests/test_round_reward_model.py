"""A round whose feedback is a reward model: the round's samples scored, per prompt the best over the worst."""

from __future__ import annotations

import hashlib
import math

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from alignloop.flows.round import RoundParams, round_flow
from alignloop.pipelines.models import model_name
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_round import PROMPTS, scalar, seed_human_round
from tests.fixtures_trainers import make_snapshot


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

    with pytest.raises(ValidationError, match="stages .sDPO. cut an offline DPO's pairs into parts: needs method"):
        RoundParams(round="x", method="grpo", feedback="verifier", verifier="final_answer", stages=2)
    out = round_flow(RoundParams(**{**_params(tmp_path, policy, "rm1", rm).model_dump(), "stages": 2}))  # sDPO
    # the reward model's folder named by its content, however the round was given it
    assert out["feedback"]["judge"] == f"{model_name(str(rm))}:orm@v2" and out["feedback"]["aspect"] == "reward"
    with db.connect(str(db_file)) as con:
        stages = con.execute("SELECT id, config->>'$.stage', base_model_id, output_model_id FROM training_runs "
                             "WHERE round_id = 'rm1' ORDER BY config->>'$.stage'").fetchall()
    assert [s[1] for s in stages] == ["0", "1"] and stages[1][2] == stages[0][3]  # stage 2 from stage 1's model
    assert [s["run_id"] for s in out["train"]["stages"]] == [s[0] for s in stages]
    assert out["train"]["run_id"] == stages[1][0] and out["train"]["stages"][0]["model_dir"].endswith("stage-1/model")
    assert out["new_policy"].endswith("stage-2/model")
    assert scalar(db_file, "SELECT count(*) FROM ratings WHERE source = 'reward_model' AND round_id = 'rm1'") == \
        PROMPTS * 3
    pairs = pq.read_table(f"{out['dataset']['path']}/train.parquet").to_pylist()
    assert out["dataset"]["rows"]["train"] == len(pairs) == PROMPTS  # one pair per prompt
    with db.connect(str(db_file)) as con:
        best = {p: (hi, lo) for p, hi, lo in con.execute(
            "SELECT prompt_id, arg_max(response_id, score), arg_min(response_id, score) FROM ratings "
            "WHERE round_id = 'rm1' GROUP BY prompt_id").fetchall()}
    assert {r["prompt_id"]: (r["chosen_id"], r["rejected_id"]) for r in pairs} == best  # its best over its worst
    assert out["train"]["steps"] >= 1 and out["heldout"]


def _scores(db_file, judge, round_id):
    """Per held-out prompt, the reward model's score of the answer stored under ``round_id``'s held-out round."""
    from alignloop.pipelines.judges.run import load_responses

    with db.connect(str(db_file)) as con:
        items = load_responses(con, f"{round_id}/heldout")
    return {it.prompt_id: r.score for it, r in zip(items, judge.judge_items(items, "x"))}


def test_reward_model_rounds_are_evaluated_and_stopped_on_their_reward(tmp_path, prefect_harness):
    from alignloop.pipelines.judges.reward_model import RewardModelJudge

    policy = seed_human_round(tmp_path)
    rm = _reward_model(policy, tmp_path / "rm")
    db_file = tmp_path / "w.duckdb"
    first = round_flow(_params(tmp_path, policy, "rm1", rm))
    with pytest.raises(ValidationError, match="rso_beta samples pairs from a reward model's scores for DPO: needs "
                                              "feedback 'reward_model' and method 'dpo', not 'verifier' and 'dpo'"):
        RoundParams(round="x", rso_beta=0.5)
    second = round_flow(_params(tmp_path, policy, "rm2", rm).model_copy(update={  # its pairs by RSO
        "parent_round": "rm1", "policy": "previous", "win_rate": True, "judge_model": str(policy), "rso_beta": 20.0}))
    pairs = pq.read_table(f"{second['dataset']['path']}/train.parquet").to_pylist()
    with db.connect(str(db_file)) as con:
        rated = con.execute("SELECT prompt_id, response_id, score FROM ratings WHERE round_id = 'rm2'").fetchall()
    score, best = {r: s for _, r, s in rated}, {}
    for p, _, s in rated:
        best[p] = max(best.get(p, s), s)
    kept = {r for p, r, s in rated  # the round's seed draws: md5(seed:response id), kept below exp((s - best) / beta)
            if int(hashlib.md5(f"0:{r}".encode()).hexdigest()[:8], 16) / 2**32 < math.exp((s - best[p]) / 20.0)}
    assert second["dataset"]["stage_counts"]["rso_accepted"] == len(kept)
    assert pairs and all(score[r["chosen_id"]] > score[r["rejected_id"]] and {r["chosen_id"], r["rejected_id"]} <= kept
                         for r in pairs)
    assert max(sum(r["prompt_id"] == p for r in pairs) for p in best) <= 2  # max_pairs_per_prompt
    judge = RewardModelJudge.load(str(rm))
    mine, theirs = _scores(db_file, judge, "rm2"), _scores(db_file, judge, "rm1")
    assert first["heldout"]["heldout_reward"] == pytest.approx(sum(theirs.values()) / len(theirs), abs=1e-5)
    assert second["heldout"]["heldout_reward"] == pytest.approx(sum(mine.values()) / len(mine), abs=1e-5)
    wins = [1.0 if mine[p] > theirs[p] else 0.5 if mine[p] == theirs[p] else 0.0 for p in mine]
    assert len(wins) == 2 and second["heldout"]["rm_win_rate"] == pytest.approx(sum(wins) / 2)
    assert "win_rate" in second["heldout"]  # the AI judge's, beside the reward model's
    # the stopping rule watches the mean reward (the verifier's pass rate is no target of these rounds)
    gain = second["heldout"]["heldout_reward"] - first["heldout"]["heldout_reward"]
    assert second["reason"].startswith("heldout_reward ") and f"{gain:+.3f}" in second["reason"]
    with db.connect(str(db_file)) as con:
        scored_by = con.execute("SELECT DISTINCT details->>'$.reward_model' FROM evaluations "
                                "WHERE metric IN ('heldout_reward', 'rm_win_rate')").fetchall()
    assert scored_by == [(str(rm),)]


def test_a_ppo_round_optimises_its_reward_model_on_the_round_s_prompts(tmp_path, prefect_harness):
    policy = seed_human_round(tmp_path)
    rm = _reward_model(policy, tmp_path / "rm")
    for method in ("ppo", "grpo", "rloo"):
        with pytest.raises(ValidationError, match=f"method '{method}' trains on scores a program gives as it "
                                                  "samples: set feedback 'reward_model' .* 'verifier' or 'ai_judge' "
                                                  r"\(direct RLAIF: the judge rates each sample\), not 'human'"):
            RoundParams(round="x", method=method, feedback="human")
    with pytest.raises(ValueError, match="dynamic_sampling .* needs method grpo, rloo or online_dpo, not 'dpo'"):
        RoundParams(round="x", dynamic_sampling=True)
    with pytest.raises(ValueError, match=r"ptx_dataset and ptx_coef \(PPO-ptx\) mix into an online method's "):
        RoundParams(round="x", ptx_dataset="demos", ptx_coef=0.5)
    with pytest.raises(ValueError, match="PPO-ptx needs both ptx_dataset .* and ptx_coef > 0"):
        RoundParams(round="x", method="grpo", feedback="verifier", verifier="final_answer", ptx_dataset="demos")
    with pytest.raises(ValueError, match=r"cost_model and cost_limit \(Safe RLHF\) weigh an online method's "):
        RoundParams(round="x", cost_model="safe-rm")
    with pytest.raises(ValueError, match="cost_limit bounds the cost a cost_model gives"):
        RoundParams(round="x", method="grpo", feedback="verifier", verifier="final_answer", cost_limit=0.0)
    cost = _reward_model(policy, tmp_path / "cost")  # Safe RLHF: a second reward model as the cost model
    params = _params(tmp_path, policy, "ppo1", rm).model_copy(update={"method": "ppo", "cost_model": str(cost),
                                                                       "cost_limit": -0.25})
    out = round_flow(params)
    db_file = tmp_path / "w.duckdb"
    with db.connect(str(db_file)) as con:
        runs = con.execute("SELECT method, config->>'$.reward_model', meta->>'$.steps', config->>'$.cost_model', "
                           "meta->>'$.safe_rlhf.cost_limit' FROM training_runs WHERE round_id = 'ppo1'").fetchall()
    # one iteration: the round's prompts once (epochs=1, 16 a rollout)
    assert runs == [("ppo", str(rm), "1", str(cost), "-0.25")]
    assert out["new_policy"] == str(tmp_path / "runs" / "ppo1" / "model")
    # the reward model it optimised scores its held-out answers; the verifier's pass rate is reported beside
    assert {"heldout_reward", "heldout_accuracy"} <= set(out["heldout"])
    with pytest.raises(AlignloopError, match="LlamaForCausalLM, not a reward model"):  # before anything is generated
        round_flow(_params(tmp_path, policy, "ppo2", policy).model_copy(update={"method": "ppo"}))


@pytest.mark.parametrize("method", ["grpo", "online_dpo"])
def test_an_online_round_learns_from_its_verifier_as_it_samples(tmp_path, prefect_harness, method):
    """RL from verifiable rewards: the round's verifier scores each group of answers during training; the round's
    dataset is the verifier's pass/fail outcomes (every sampled prompt, even one whose samples all failed)."""
    policy = seed_human_round(tmp_path)
    demos = make_snapshot(tmp_path / "demos", "sft", n_test=0, name="demos")  # grpo: with PPO-ptx on them
    ptx = {"ptx_dataset": str(demos), "ptx_coef": 0.5} if method == "grpo" else {}
    params = _params(tmp_path, policy, "rlvr1", policy).model_copy(update={
        "method": method, "feedback": "verifier", "reward_model": None, "verifier": "short_on_topic:6",
        "dynamic_sampling": True, "beta": 0.3, **ptx, **({"loss": "ipo"} if method == "online_dpo" else {})})
    out = round_flow(params)
    db_file = tmp_path / "w.duckdb"
    with db.connect(str(db_file)) as con:
        runs = con.execute("SELECT method, config->>'$.verifier', meta->>'$.reward', meta->>'$.steps', "
                           "config->>'$.samples_per_prompt', config->>'$.max_new_tokens', "
                           "config->>'$.dynamic_sampling', config->>'$.loss', config->>'$.beta', "
                           "config->>'$.ptx_coef', meta->>'$.ptx.dataset' "
                           "FROM training_runs WHERE round_id = 'rlvr1'").fetchall()
        kinds = con.execute("SELECT kind FROM datasets WHERE name = 'rlvr1-outcomes'").fetchall()
    rated = scalar(db_file, "SELECT count(DISTINCT prompt_id) FROM ratings WHERE round_id = 'rlvr1'")
    # it samples as the round does: n=3 answers per prompt of at most 8 tokens; online DPO with the round's loss
    loss = ("ipo", "0.3") if method == "online_dpo" else (None, None)
    ptx_run = ("0.5", "demos") if method == "grpo" else ("0.0", None)
    assert runs == [(method, "short_on_topic:6", "verifier:short_on_topic:6", "1", "3", "8", "true", *loss, *ptx_run)]
    assert kinds == [("binary",)] and rated == PROMPTS
    # every sampled response is a row, pass or fail (n=3 samples of each training prompt)
    assert sum(out["dataset"]["rows"].values()) == PROMPTS * 3
    assert "heldout_accuracy" in out["heldout"] and "heldout_reward" not in out["heldout"]


def test_an_online_round_with_an_ai_judge_is_direct_rlaif(tmp_path, prefect_harness):
    """feedback=ai_judge with an online method: the judge rates each of the round's samples (its expected 0-9 digit,
    stored as its ratings), and training is rewarded by the same judge as it samples; self-rewarding here (the
    policy the round starts from judges)."""
    policy = seed_human_round(tmp_path)
    params = _params(tmp_path, policy, "rlaif1", policy).model_copy(update={
        "method": "grpo", "feedback": "ai_judge", "reward_model": None, "judge_model": "policy"})
    out = round_flow(params)
    db_file = tmp_path / "w.duckdb"
    with db.connect(str(db_file)) as con:
        runs = con.execute("SELECT method, config->>'$.judge_model', meta->>'$.reward' FROM training_runs "
                           "WHERE round_id = 'rlaif1'").fetchall()
        ratings = con.execute("SELECT count(*), min(score) >= 0 AND max(score) <= 9, min(scale_max), "
                              "bool_and(judge LIKE '%:rating_digit@%') FROM ratings WHERE round_id = 'rlaif1' "
                              "AND source = 'ai'").fetchone()
        kinds = con.execute("SELECT kind FROM datasets WHERE name = 'rlaif1-pairs'").fetchall()
    assert runs == [("grpo", str(policy), f"llm:{policy}")]
    assert ratings == (PROMPTS * 3, True, 9.0, True) and kinds == [("pairwise",)]
    assert ":rating_digit@" in out["feedback"]["judge"]


def test_a_listwise_round_ranks_each_prompts_samples_by_the_reward_model(tmp_path, prefect_harness):
    policy = seed_human_round(tmp_path)
    rm = _reward_model(policy, tmp_path / "rm")
    out = round_flow(RoundParams(**{**_params(tmp_path, policy, "lw1", rm).model_dump(), "method": "listwise",
                                    "loss": "rrhf"}))
    lists = pq.read_table(f"{out['dataset']['path']}/train.parquet").to_pylist()
    with db.connect(str(tmp_path / "w.duckdb")) as con:
        scores = dict(con.execute("SELECT response_id, score FROM ratings WHERE round_id = 'lw1'").fetchall())
        run = con.execute("SELECT method, config->>'loss' FROM training_runs").fetchall()
    assert len(lists) == PROMPTS and run == [("listwise", "rrhf")]
    for row in lists:  # the prompt's three samples, best scored first
        assert row["scores"] == sorted(row["scores"], reverse=True) and len(row["completion_ids"]) == 3
        assert [scores[i] for i in row["completion_ids"]] == pytest.approx(row["scores"])
