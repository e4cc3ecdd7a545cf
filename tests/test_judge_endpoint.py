"""An AI judge served at an OpenAI-compatible endpoint, through the rounds and the trainers: its principles, its
aspect, its key from a Secret block (never stored), the held-out win rate by it, and direct RLAIF rating each sample
through it as an online method trains. The endpoint answers by a rule (tests/fixtures_judge_server.py), so every
verdict and reward can be checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from alignloop.flows.params import validated
from alignloop.flows.round import RoundParams, round_flow
from alignloop.pipelines.judges.templates import quoted
from alignloop.trainers import config as C
from alignloop.trainers.run import train_model
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError, InputError
from tests.fixtures_judge_server import RuleJudge, _verdict, rule_judge, rule_rating, shorter_wins  # noqa: F401
from tests.fixtures_prefect_ops import save_secret
from tests.fixtures_round import PROMPTS, seed_human_round
from tests.fixtures_trainers import make_snapshot, tiny_model_dir  # noqa: F401

PRINCIPLE = "Prefer the answer that says the same in fewer characters."
KEY = "sk-judge-0123456789abcdef"


def round_params(tmp: Path, **kw) -> dict:
    return {"feedback": "ai_judge", "judge_backend": "openai", "judge_model": "rule-judge", "n": 3,
            "temperature": 1.0, "max_new_tokens": 8, "prompts_per_round": PROMPTS, "fresh_prompts": True,
            "heldout_limit": 2, "heldout_max_new_tokens": 6, "epochs": 1, "batch_size": 2, "max_length": 96,
            "runs_dir": str(tmp / "runs"), "db": str(tmp / "w.duckdb"), **kw}


def test_a_round_judged_at_an_endpoint_stores_its_aspect_and_never_its_key(tmp_path, prefect_harness,
                                                                           rule_judge):  # noqa: F811
    policy = seed_human_round(tmp_path)
    secret = save_secret(KEY, "judge-key")
    common = round_params(tmp_path, judge_base_url=rule_judge, judge_api_key_secret=secret, principles=[PRINCIPLE],
                          judge_aspect="concision")
    first = round_flow(RoundParams(round="j1", policy=str(policy), win_rate=False, **common))
    judged = len(RuleJudge.requests)
    assert judged and all(r["_auth"] == f"Bearer {KEY}" for r in RuleJudge.requests)
    assert all(PRINCIPLE in r["messages"][-1]["content"] for r in RuleJudge.requests)
    assert first["feedback"]["judge"].startswith("rule-judge:") and first["feedback"]["aspect"] == "concision"
    with db.connect(tmp_path / "w.duckdb") as con:
        rows = con.execute("""SELECT c.winner, c.consistent, c.aspect, a.text, b.text FROM comparisons c
                              JOIN responses a ON a.id = c.response_a JOIN responses b ON b.id = c.response_b
                              WHERE c.round_id = 'j1'""").fetchall()
    assert len(rows) == 2 * PROMPTS  # max_pairs_per_prompt of the three answers to each prompt
    for winner, consistent, aspect, a, b in rows:  # the endpoint's rule, in both orders
        assert aspect == "concision"
        assert winner == {"A": "a", "B": "b", "tie": "tie"}[shorter_wins(quoted(a), quoted(b))]
        assert consistent is (winner != "tie")
    snapshot = Path(first["dataset"]["path"])
    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert manifest["params"]["common"]["aspect"] == "concision"
    pairs = pq.read_table(snapshot / "train.parquet", columns=["chosen", "rejected"]).to_pylist()
    assert pairs and all(len(p["chosen"]) < len(p["rejected"]) for p in pairs)
    # round 2: the same endpoint also judges the held-out win rate over round 1's policy, and round 1's pairs are
    # replayed beside its own (fresh prompts: none shared)
    second = round_flow(RoundParams(round="j2", policy="previous", parent_round="j1", win_rate=True,
                                    replay_rounds=3, **common))
    assert 0.0 <= second["heldout"]["win_rate"] <= 1.0
    replay = Path(second["dataset"]["path"])
    assert json.loads((replay / "manifest.json").read_text())["params"]["common"]["rounds"] == ["j2", "j1"]
    replayed = pq.read_table(replay / "train.parquet", columns=["prompt_id", "round_id"]).to_pylist()
    first_pairs = pq.read_table(snapshot / "train.parquet", columns=["prompt_id", "round_id"]).to_pylist()
    assert [r for r in replayed if r["round_id"] == "j1"] == first_pairs
    assert {r["round_id"] for r in replayed} == {"j1", "j2"}
    held_out = RuleJudge.requests[judged:]
    assert len(held_out) > 2 * 2 * 2  # round 2's pairs in both orders, then the held-out pairs
    assert all(r["_auth"] == f"Bearer {KEY}" and PRINCIPLE in r["messages"][-1]["content"] for r in held_out)
    # the key reached the endpoint only: not the warehouse, not a run folder
    assert KEY.encode() not in (tmp_path / "w.duckdb").read_bytes()
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


def test_direct_rlaif_rates_each_sample_at_the_endpoint(tmp_path, rule_judge, monkeypatch,  # noqa: F811
                                                        tiny_model_dir):  # noqa: F811
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    snap = make_snapshot(tmp_path / "snap", "sft", n_train=4, n_test=2)
    train = C.TrainConfig(max_steps=2, batch_size=4, lr=1e-3, max_length=64, max_prompt_length=32,
                          output_dir=str(tmp_path / "run"))
    config = C.PPOConfig(train=train, judge_model="rule-judge", judge_base_url=rule_judge, advantage="grpo",
                         samples_per_prompt=2, rollout_prompts=4, max_new_tokens=6, judge_principles=(PRINCIPLE,),
                         judge_aspect="brevity")
    result = train_model("grpo", snap, tiny_model_dir, config, base_model_id="base")
    assert result.run.meta["reward"] == "llm:rule-judge"
    probe, *rated = RuleJudge.requests
    assert probe["logprobs"] is True and probe["max_tokens"] == 1
    assert all(r["_auth"] == f"Bearer {KEY}" for r in RuleJudge.requests)
    contents = [r["messages"][-1]["content"] for r in rated]
    assert all(PRINCIPLE in c and "Rate the answer's brevity from 0 (worst) to 9 (best)" in c for c in contents)
    # iteration 1's 8 answers: the logged reward is the mean of their expected digits mapped to [-1, 1]
    first = contents[:8]
    expected = [sum(int(d) * math.exp(lp) for d, lp in _verdict(c)[1].items()) for c in first]
    rewards = [m.value for m in result.metrics if m.name == "reward"]
    assert len(rewards) == 2
    assert rewards[0] == pytest.approx(sum(2 * e / 9 - 1 for e in expected) / 8, abs=1e-5)
    saved = (tmp_path / "run" / "run.json").read_text()
    assert KEY not in saved and rule_judge in saved
    # an endpoint without log-probabilities would leave every reward 0: refused before training
    RuleJudge.logprobs = False
    with pytest.raises(AlignloopError, match="judge 'rule-judge' at .* returned no log-probabilities"):
        train_model("grpo", snap, tiny_model_dir, C.PPOConfig(
            train=C.TrainConfig(max_steps=1, output_dir=str(tmp_path / "run2")), judge_model="rule-judge",
            judge_base_url=rule_judge, advantage="grpo", samples_per_prompt=2), base_model_id="base")
    assert not (tmp_path / "run2" / "model").exists()


def test_an_online_round_rates_its_samples_at_the_endpoint(tmp_path, prefect_harness, monkeypatch,
                                                           rule_judge):  # noqa: F811
    """The round's judge rates the samples it stores, then the trainer asks the same endpoint, with the key from the
    round's Secret block (none in the environment), which lands in no warehouse byte, run file or model card."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    secret = save_secret(KEY, "online-judge-key")
    policy = seed_human_round(tmp_path)
    out = round_flow(RoundParams(round="o1", policy=str(policy), method="grpo", win_rate=False, **round_params(
        tmp_path, judge_base_url=rule_judge, judge_api_key_secret=secret, principles=[PRINCIPLE],
        judge_aspect="brevity", n=4)))
    with db.connect(tmp_path / "w.duckdb") as con:
        stored = con.execute("""SELECT r.score, r.aspect, r.scale_max, x.text FROM ratings r
                                JOIN responses x ON x.id = r.response_id WHERE r.round_id = 'o1'""").fetchall()
        reward = con.execute("SELECT meta->>'reward' FROM training_runs").fetchone()[0]
    assert len(stored) == 4 * PROMPTS and reward == "llm:rule-judge"
    for score, aspect, top, text in stored:  # the round's feedback: the expected digit the endpoint gave
        assert aspect == "brevity" and top == 9.0
        assert score == pytest.approx(sum(int(d) * math.exp(lp) for d, lp in _verdict(
            f"[[[BEGIN ANSWER]]]\n{quoted(text)}\n[[[END ANSWER]]]")[1].items()), abs=1e-6)
    asked = [r["messages"][-1]["content"] for r in RuleJudge.requests]
    assert len(asked) > 4 * PROMPTS + 1  # the feedback, the trainer's probe, then its samples as it trained
    assert all(PRINCIPLE in c and "Rate the answer's brevity" in c for c in asked if "BEGIN ANSWER" in c)
    assert all(r["_auth"] == f"Bearer {KEY}" for r in RuleJudge.requests) and out["new_policy"]
    kept = [p for p in (tmp_path / "w.duckdb", *(tmp_path / "runs").rglob("*")) if p.is_file()]
    assert len(kept) > 5 and not any(KEY.encode() in p.read_bytes() for p in kept)


def test_a_kto_round_trains_on_its_pairs_split_into_desirable_and_undesirable_answers(tmp_path, prefect_harness,
                                                                                       rule_judge):  # noqa: F811
    policy = seed_human_round(tmp_path)
    out = round_flow(RoundParams(round="k1", policy=str(policy), method="kto", win_rate=False, **round_params(
        tmp_path, judge_base_url=rule_judge)))
    snapshot = Path(out["dataset"]["path"])
    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert (manifest["kind"], manifest["name"]) == ("binary", "k1-unpaired")
    assert manifest["params"]["config"]["origin"] == "pairwise"
    rows = pq.read_table(snapshot / "train.parquet", columns=["prompt_id", "completion", "label"]).to_pylist()
    assert {r["label"] for r in rows} == {True, False}
    for prompt in {r["prompt_id"] for r in rows}:  # the shorter answers desirable, as the judge's rule says
        mine = [r for r in rows if r["prompt_id"] == prompt]
        good = [len(quoted(r["completion"])) for r in mine if r["label"]]
        bad = [len(quoted(r["completion"])) for r in mine if not r["label"]]
        assert not good or not bad or max(good) < min(bad)
    with db.connect(tmp_path / "w.duckdb") as con:
        assert con.execute("SELECT method FROM training_runs").fetchall() == [("kto",)]


def test_a_listwise_round_trains_a_list_loss_on_each_prompts_samples_ranked_at_the_endpoint(tmp_path,
                                                                                             prefect_harness,
                                                                                             rule_judge):  # noqa: F811
    policy = seed_human_round(tmp_path)
    out = round_flow(RoundParams(round="l1", policy=str(policy), method="listwise", win_rate=False, **round_params(
        tmp_path, judge_base_url=rule_judge, n=3, judge_aspect="brevity")))
    snapshot = Path(out["dataset"]["path"])
    manifest = json.loads((snapshot / "manifest.json").read_text())
    assert (manifest["kind"], manifest["name"], manifest["params"]["config"]["k"]) == ("listwise", "l1-lists", 3)
    assert manifest["params"]["common"]["aspect"] == "brevity"  # the rankings are stored, and read, as brevity's
    lists = pq.read_table(snapshot / "train.parquet", columns=["completions"]).to_pylist()
    assert len(lists) == PROMPTS
    for row in lists:  # best first: the judge's rule, shortest first, under every order it was shown
        lengths = [len(quoted(t)) for t in row["completions"]]
        assert lengths == sorted(lengths)
    with db.connect(tmp_path / "w.duckdb") as con:
        run = con.execute("SELECT method, config->>'loss' FROM training_runs").fetchall()
        judged = con.execute("SELECT count(*) FROM rankings WHERE round_id = 'l1' AND aspect = 'brevity'").fetchone()[0]
    assert run == [("listwise", "lipo")] and judged == PROMPTS


def test_kto_reads_a_rounds_pairwise_options_as_a_binary_build_of_those_pairs():
    from alignloop.flows.round import unpaired
    from alignloop.pipelines.datasets.config import parse_options

    pairwise = {"origin": "ratings", "rounds": ["r1"], "sources": ["reward_model"], "judges": ["rm"],
                "aspect": "reward", "pairing": "rso", "rso_beta": 1.0, "max_pairs_per_prompt": 2,
                "require_consistent": False, "soft_labels": True, "ties": "keep"}
    options = unpaired(pairwise)
    assert options == {"origin": "pairwise", "pairwise.origin": "ratings", "rounds": ["r1"], "sources": ["reward_model"],
                       "judges": ["rm"], "aspect": "reward", "pairwise.pairing": "rso", "pairwise.rso_beta": 1.0,
                       "pairwise.require_consistent": False}
    spec = parse_options("binary", options)  # a build the binary kind accepts
    assert spec.kind == "binary" and spec.common.rounds == ("r1",)


def test_a_round_without_the_judge_endpoint_stops_before_it_generates(tmp_path, prefect_harness, monkeypatch):
    for var in ("ALIGNLOOP_OPENAI_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    policy = seed_human_round(tmp_path)
    with pytest.raises(AlignloopError, match="judge_backend 'openai' has no endpoint: set judge_base_url"):
        round_flow(RoundParams(round="e1", policy=str(policy), **round_params(tmp_path)))
    with db.connect(tmp_path / "w.duckdb") as con:
        assert con.execute("SELECT count(*) FROM responses").fetchone()[0] == 0


@pytest.mark.parametrize(("fields", "message"), [
    ({"judge_backend": "openai"}, "judge_backend 'openai' needs judge_model: the served model's name, not 'default'"),
    ({"judge_backend": "openai", "judge_model": "policy"}, "the served model's name, not 'policy'"),
    ({"judge_base_url": "http://127.0.0.1:1/v1"}, "judge_base_url and judge_api_key_secret are an endpoint's"),
    ({"feedback": "verifier", "win_rate": False, "judge_backend": "openai", "judge_model": "m"},
     "this round has no AI judge"),
    ({"feedback": "human", "judge_aspect": "harmlessness"}, "needs feedback 'ai_judge', not 'human'"),
    ({"judge_backend": "vllm"}, "judge_backend: Input should be 'transformers' or 'openai'"),
    ({"method": "grpo", "replay_rounds": 1}, "replay_rounds adds earlier rounds' feedback to an offline method's"),
    ({"method": "kto", "loss": "ipo"}, "loss is dpo's, online_dpo's and listwise's: method 'kto' has its own"),
    ({"method": "listwise", "loss": "ipo"}, r"loss 'ipo' is not listwise \(it takes pairs\); method 'listwise'"),
    ({"method": "dpo", "loss": "lipo"}, r"loss 'lipo' is not pairwise \(it takes lists\); method 'dpo' trains"),
    ({"method": "listwise", "feedback": "verifier"}, "method 'listwise' ranks each prompt's samples: needs feedback"),
    ({"method": "kto", "cost_model": "m"}, "needs method ppo, grpo, rloo or online_dpo, not 'kto'"),
])
def test_round_refuses_a_judge_engine_it_cannot_use(fields, message):
    with pytest.raises(InputError, match=message):
        validated(RoundParams, {"feedback": "ai_judge", **fields})


def test_trainer_refuses_an_endpoint_without_a_model_or_principles_without_a_judge():
    with pytest.raises(ValueError, match="set judge_model to the served model's name"):
        C.PPOConfig(judge_base_url="http://127.0.0.1:1/v1", judge_model="policy")
    with pytest.raises(ValueError, match="judge_principles and judge_aspect tell an LLM judge what to rate"):
        C.PPOConfig(verifier="final_answer", judge_aspect="harmlessness")
    from alignloop.flows.train import TrainParams

    with pytest.raises(AlignloopError, match="judge_api_key_secret is the key of a judge at an endpoint"):
        TrainParams(method="grpo", dataset="d", judge_model="m", judge_api_key_secret="k").config()
    loaded = C.from_dict(C.to_dict(C.PPOConfig(judge_model="m", judge_principles=("be brief",))))
    assert loaded.judge_principles == ("be brief",)


def _warehouse_text(path: Path) -> str:
    """Every row of every table as text (the file's bytes may hold strings compressed)."""
    with db.connect(path) as con:
        return "\n".join(str(con.execute(f"SELECT * FROM {t}").fetchall()) for t in db.TABLES)


def test_credentials_in_a_judge_url_given_on_the_cli_land_nowhere(tmp_path, prefect_harness, monkeypatch, capfd,
                                                                   caplog, rule_judge):  # noqa: F811
    """``judge_base_url`` was stored verbatim: in the round's config (DuckDB), the training run's config (DuckDB,
    run.json, config.json). A URL with ``user:key@`` given to ``alignloop round`` reaches the endpoint (its Basic
    auth) and, redacted, every record; the key is in no warehouse row, run or snapshot file, export or log."""
    from typer.testing import CliRunner

    from alignloop.flows.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    policy = seed_human_round(tmp_path)
    user_key = "alice:judge-pass-0123456789"
    url = rule_judge.replace("http://", f"http://{user_key}@")
    sets = {"judge_backend": "openai", "judge_base_url": url, "method": "grpo", "win_rate": "false", "n": "4",
            **{k: str(v) for k, v in round_params(tmp_path).items()
               if k not in ("feedback", "judge_backend", "judge_model", "n", "db")}}
    args = ["round", "--round", "u1", "--policy", str(policy), "--feedback", "ai_judge", "--judge-model",
            "rule-judge", *(x for k, v in sets.items() for x in ("--set", f"{k}={v}")), "--db", "w.duckdb"]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert RuleJudge.requests and all(q["_auth"].startswith("Basic ") for q in RuleJudge.requests)  # the key went
    r2 = CliRunner().invoke(app, ["dataset", "export", "u1-pairs", "--format", "jsonl", "--out", "exports/u1",
                                  "--db", "w.duckdb"])
    assert r2.exit_code == 0, r2.output
    stored = _warehouse_text(tmp_path / "w.duckdb")
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "policy" not in p.parts]
    assert any(p.name == "run.json" for p in files) and any(p.parent.name == "u1" for p in files)
    logged = capfd.readouterr()
    for secret in ("judge-pass-0123456789", "alice:"):
        assert secret not in stored and secret not in r.output + r2.output
        assert secret not in logged.out + logged.err and secret not in caplog.text
        assert not [p for p in files if secret.encode() in p.read_bytes()]
    assert rule_judge in stored  # the URL is stored (the round's and the run's config), without its credentials
