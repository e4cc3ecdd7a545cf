"""PPO, GRPO and RLOO: the methods' pure functions against hand computations, and runs on a tiny random policy and
reward model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from alignloop.pipelines.judges.config import ResponseItem
from alignloop.trainers import config as C
from alignloop.trainers import ppo
from alignloop.trainers.run import train_model
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_trainers import make_snapshot, tiny_model_dir  # noqa: F401


def close(actual: torch.Tensor, expected: list) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=1e-5, atol=1e-6)


def test_penalised_rewards_put_the_score_on_the_last_answer_token():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -9.0, -9.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.0, -1.0]])
    rewards, kl = ppo.penalised_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    assert kl.tolist() == [[0.5, 0.0, -1.0], [1.0, 0.0, 0.0]]
    close(rewards, [[-0.05, 0.0, 0.1 + 2.0], [-0.1 - 1.0, 0.0, 0.0]])


def test_gae_is_monte_carlo_at_lambda_one_and_td_at_lambda_zero():
    r = torch.tensor([[0.0, 1.0, 2.0, 9.0]])
    v = torch.tensor([[0.5, 0.25, 1.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last position is past the answer: its reward and value unused
    adv, ret = ppo.gae(r * mask, v, mask, gamma=1.0, lam=1.0)
    close(adv, [[3.0 - 0.5, 3.0 - 0.25, 2.0 - 1.0, 0.0]])  # return-to-go minus value
    close(ret, [[3.0, 3.0, 2.0, 0.0]])
    td, _ = ppo.gae(r * mask, v, mask, gamma=0.9, lam=0.0)
    close(td, [[0.0 + 0.9 * 0.25 - 0.5, 1.0 + 0.9 * 1.0 - 0.25, 2.0 - 1.0, 0.0]])
    half, _ = ppo.gae(r * mask, v, mask, gamma=1.0, lam=0.5)
    d = [0.0 + 0.25 - 0.5, 1.0 + 1.0 - 0.25, 2.0 - 1.0]
    assert half[0, :3].tolist() == pytest.approx([d[0] + 0.5 * (d[1] + 0.5 * d[2]), d[1] + 0.5 * d[2], d[2]])


def test_whiten_over_the_mask_only():
    x = torch.tensor([[1.0, 3.0, 100.0], [5.0, 7.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    w = ppo.whiten(x, mask)
    kept = torch.tensor([1.0, 3.0, 5.0, 7.0])
    assert w[:, :2].flatten().tolist() == pytest.approx(((kept - 4) / kept.var(unbiased=False).sqrt()).tolist(),
                                                        rel=1e-5)
    assert w[:, 2].tolist() == [0.0, 0.0]


def test_ppo_loss_clips_the_ratio_and_the_value_change():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1]])).requires_grad_()  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    values = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    old_values, returns = torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.ones(1, 3)
    loss, stats = ppo.ppo_loss(new, old, adv, values, old_values, returns, mask, 0.2, 0.5, vf_coef=0.1)
    # max(-A r, -A clip(r)): -1.2 (clipped, no gain past 1 + eps), -0.5 (unclipped: a worse ratio is not capped),
    # 2.2 (negative advantage, ratio above 1: unclipped)
    assert float(stats["policy_loss"]) == pytest.approx((-1.2 - 0.5 + 2.2) / 3)
    # value 1.0 moved from 0.0 beyond the 0.5 clip: max((1 - 2)^2, (0.5 - 2)^2) = 2.25; others (0 - 1)^2 and 0
    assert float(stats["value_loss"]) == pytest.approx(0.5 * (2.25 + 1.0 + 0.0) / 3)
    assert float(stats["clipfrac"]) == pytest.approx(2 / 3)
    assert float(loss.detach()) == pytest.approx(float(stats["policy_loss"]) + 0.1 * float(stats["value_loss"]))
    loss.backward()
    assert new.grad[0, 0] == 0 and new.grad[0, 1] != 0  # the clipped ratio passes no gradient
    assert values.grad[0, 0] == 0 and values.grad[0, 1] != 0  # nor the clipped value


def test_the_overlong_punishment_grows_across_the_buffer_only():
    lengths = torch.tensor([3, 6, 7, 8, 10])
    close(ppo.overlong_punishment(lengths, max_len=10, buffer=4), [0.0, 0.0, -0.25, -0.5, -1.0])
    close(ppo.overlong_punishment(lengths, max_len=10, buffer=4, penalty=0.5), [0.0, 0.0, -0.125, -0.25, -0.5])
    close(ppo.overlong_punishment(lengths, max_len=10, buffer=0), [0.0] * 5)
    with pytest.raises(ValueError, match=r"overlong_buffer must be in \[0, max_new_tokens=6\), got 6"):
        C.PPOConfig(max_new_tokens=6, overlong_buffer=6)


def test_adaptive_kl_and_answer_mask():
    assert ppo.adapt_kl_coef(0.1, kl=12.0, target=6.0, n=1000) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert ppo.adapt_kl_coef(0.1, kl=5.4, target=6.0, n=1000) == pytest.approx(0.1 * (1 - 0.1 * 0.1))
    mask, ended = ppo.answer_mask(torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]]), eos_id=2)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]] and ended.tolist() == [True, False]


# ---- runs ----------------------------------------------------------------------------------------------------------

def tiny_reward_model(policy: Path, folder: Path, seed: int = 1) -> Path:
    """A random one-score reward model on the policy's config and tokenizer (as `train reward` would save)."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(policy)
    config.num_labels = 1
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(policy).save_pretrained(folder)
    return folder


def ppo_config(out: Path, rm: Path, cls: type = C.PPOConfig, **kw) -> C.PPOConfig:
    train = {"max_steps": 3, "batch_size": 4, "lr": 1e-3, "max_length": 64, "max_prompt_length": 32,
             "output_dir": str(out), **kw.pop("train", {})}
    return cls(train=C.TrainConfig(**train), reward_model=str(rm), **{"rollout_prompts": 4, "max_new_tokens": 6,
                                                                       **kw})


def test_a_ppo_run_trains_the_policy_and_records_reward_and_kl(tmp_path, tiny_model_dir):  # noqa: F811
    from safetensors.torch import load_file

    snap = make_snapshot(tmp_path / "snap", "pairwise", n_train=6, n_test=3)
    rm = tiny_reward_model(tiny_model_dir, tmp_path / "rm")
    result = train_model("ppo", snap, tiny_model_dir, ppo_config(tmp_path / "run", rm), base_model_id="base")
    assert result.run.method == "ppo" and result.run.meta["steps"] == 3 and result.run.meta["optimizer_steps"] == 6
    by_name: dict[str, dict[int, float]] = {}
    for m in result.metrics:
        by_name.setdefault(m.name, {})[m.step] = m.value
    assert set(by_name["reward"]) == set(by_name["kl"]) == set(by_name["policy_loss"]) == {1, 2, 3}
    assert by_name["kl"][1] == pytest.approx(0.0, abs=1e-6)  # the first rollout's policy is the reference
    assert abs(by_name["kl"][3]) > 1e-4  # after two iterations of updates it no longer is
    assert all(math.isfinite(v) for series in by_name.values() for v in series.values())
    before, after = load_file(Path(tiny_model_dir) / "model.safetensors"), load_file(result.model_dir /
                                                                                     "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    evals = {e.metric: e.value for e in result.evaluations}
    assert set(evals) == {"reward", "reference_reward", "win_rate_vs_reference"} and 0 <= evals["win_rate_vs_reference"] <= 1
    assert result.plot is not None and result.plot.is_file()
    again = train_model("ppo", snap, tiny_model_dir, ppo_config(tmp_path / "run", rm), base_model_id="base")
    assert again.reused and again.run.id == result.run.id


@pytest.mark.parametrize("method", ["ppo", "online_dpo"])
def test_a_killed_ppo_run_resumes_where_its_checkpoint_left_it(tmp_path, tiny_model_dir, monkeypatch,  # noqa: F811
                                                               method):
    """Online DPO with beta-DPO's loss: its running m0 is in the checkpoint too."""
    snap = make_snapshot(tmp_path / "snap", "sft", n_train=8, n_test=0)
    rm = tiny_reward_model(tiny_model_dir, tmp_path / "rm")
    kw = {} if method == "ppo" else {"cls": C.OnlineDPOConfig, "loss": "beta_dpo", "beta": 1.0,
                                     "samples_per_prompt": 2}
    whole = train_model(method, snap, tiny_model_dir, ppo_config(tmp_path / "whole", rm, train={"save_steps": 1},
                                                                 **kw), base_model_id="base")
    real_update, calls = ppo._update, []

    def dies_at_the_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_update(*args, **kw)

    monkeypatch.setattr(ppo, "_update", dies_at_the_third)
    config = ppo_config(tmp_path / "killed", rm, train={"save_steps": 1}, **kw)
    with pytest.raises(KeyboardInterrupt):
        train_model(method, snap, tiny_model_dir, config, base_model_id="base")
    monkeypatch.setattr(ppo, "_update", real_update)
    resumed = train_model(method, snap, tiny_model_dir, config, base_model_id="base")
    assert resumed.run.meta["resumed"] and not whole.run.meta["resumed"]
    assert [(m.step, m.name) for m in resumed.metrics] == [(m.step, m.name) for m in whole.metrics]
    assert [m.value for m in resumed.metrics] == pytest.approx([m.value for m in whole.metrics], rel=1e-4, abs=1e-6)
    assert not (tmp_path / "killed" / "checkpoints").exists()  # dropped once the run finished


def _completion_nll(model_dir: Path, demos: Path, config: C.PPOConfig) -> float:
    """The token-mean NLL of every completion of an sft snapshot under a model folder's weights."""
    from dataclasses import replace

    from alignloop.trainers.loading import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    batches, _, _ = ppo.load_ptx(demos, tokenizer, config)
    every = replace(batches, size=len(batches.features))  # one batch: each row once
    model = load_model(model_dir, "causal", pad_token_id=tokenizer.pad_token_id).eval()
    with torch.no_grad():
        return float(every.loss(model, 0, torch.device("cpu")))


def test_ppo_ptx_keeps_the_likelihood_of_its_sft_completions(tmp_path, tiny_model_dir):  # noqa: F811
    """PPO-ptx: each update adds ptx_coef x the NLL of a batch of an sft snapshot's completions, batches in a seeded
    order that covers every row once a pass; the policy ends likelier on them than PPO alone leaves it."""
    from dataclasses import replace

    from alignloop.trainers.loading import load_tokenizer

    batches = ppo.PtxBatches(list("abcdef"), 4, 0, 0)
    drawn = [r for position in range(3) for r in batches.rows(position)]
    assert sorted(drawn[:6]) == sorted(drawn[6:12]) == list(range(6)) and drawn[:6] != drawn[6:12]
    assert ppo.PtxBatches(list("abcdef"), 4, 0, 0).rows(2) == batches.rows(2)  # by position alone: resumable
    snap = make_snapshot(tmp_path / "snap", "sft", n_train=4, n_test=0)
    demos = make_snapshot(tmp_path / "demos", "sft", n_train=6, n_test=0, name="demos")
    rm = tiny_reward_model(tiny_model_dir, tmp_path / "rm")
    train = {"lr": 1e-2, "max_steps": 3, "eval": False}
    plain = train_model("ppo", snap, tiny_model_dir, ppo_config(tmp_path / "plain", rm, train=train),
                        base_model_id="base")
    config = ppo_config(tmp_path / "mixed", rm, ptx_coef=1.0, train=train)
    mixed = train_model("ppo", snap, tiny_model_dir, config, base_model_id="base", ptx=demos)
    ptx_loss = {m.step: m.value for m in mixed.metrics if m.name == "ptx_loss"}
    assert sorted(ptx_loss) == [1, 2, 3] and ptx_loss[3] < ptx_loss[1]
    assert mixed.run.meta["ptx"]["dataset"] == "demos" and mixed.run.meta["ptx"]["rows"] == 6
    assert mixed.run.meta["truncation"]["ptx"]["rows"] == 6 and mixed.run.id != plain.run.id
    tokenizer = load_tokenizer(tiny_model_dir)
    assert ppo.load_ptx(demos, tokenizer, config)[0].size == config.train.batch_size  # by default
    assert ppo.load_ptx(demos, tokenizer, replace(config, ptx_batch_size=5))[0].size == 5
    with pytest.raises(ValueError, match="ptx_batch_size must be >= 1, got 0"):
        replace(config, ptx_batch_size=0)
    base_nll = _completion_nll(Path(tiny_model_dir), demos, config)
    assert _completion_nll(mixed.model_dir, demos, config) < min(base_nll, _completion_nll(plain.model_dir, demos,
                                                                                            config))
    # the ptx rows are an input of the run: another snapshot in its folder is another run
    other = make_snapshot(tmp_path / "other", "sft", n_train=3, n_test=0, name="other")
    with pytest.raises(AlignloopError, match=r"cannot resume .*saved config differs in run.ptx"):
        train_model("ppo", snap, tiny_model_dir, config, base_model_id="base", ptx=other)
    with pytest.raises(AlignloopError, match=r"ptx_coef 1.0 needs a ptx dataset \(--ptx-dataset NAME"):
        train_model("ppo", snap, tiny_model_dir, config, base_model_id="base")
    with pytest.raises(AlignloopError, match="a ptx dataset was given but ptx_coef is 0"):
        train_model("ppo", snap, tiny_model_dir, ppo_config(tmp_path / "p", rm), base_model_id="base", ptx=demos)
    prefs = make_snapshot(tmp_path / "prefs", "pairwise", n_train=2, n_test=0, name="prefs")
    with pytest.raises(AlignloopError, match="ptx dataset 'prefs' is a pairwise snapshot; PPO-ptx trains on the "):
        train_model("ppo", snap, tiny_model_dir, ppo_config(tmp_path / "q", rm, ptx_coef=1.0), base_model_id="base",
                    ptx=prefs)
    with pytest.raises(AlignloopError, match="mixes into the online methods' updates, not method sft's"):
        train_model("sft", snap, tiny_model_dir, C.SFTConfig(train=C.TrainConfig(output_dir=str(tmp_path / "s"))),
                    base_model_id="base", ptx=demos)


def test_grpo_rewarded_by_an_llm_judge_is_direct_rlaif(tmp_path, tiny_model_dir, monkeypatch):  # noqa: F811
    """d-RLAIF: an LLM judge's expected 0-9 rating of each answer, mapped to [-1, 1], is its reward (a reward
    model's score and a verifier's 1 / 0 stay as they are). A judge that is the reference's folder judges with the
    loaded reference; another folder is loaded as a model of its own; ``policy``: the policy being trained judges."""
    import shutil
    from dataclasses import replace

    from alignloop.pipelines.backends.transformers_backend import TransformersBackend
    from alignloop.warehouse.records import Rating

    loads = []
    real_load = TransformersBackend.load.__func__
    monkeypatch.setattr(TransformersBackend, "load",
                        classmethod(lambda cls, model, **kw: loads.append(model) or real_load(cls, model, **kw)))

    def rating(score, source, lo=0.0, hi=9.0):
        return Rating("id", "p", "r", score, lo, hi, "j", source, "ppo")

    assert [ppo._reward(rating(s, "ai")) for s in (0.0, 4.5, 9.0, 6.75)] == [-1.0, 0.0, 1.0, 0.5]
    assert [ppo._reward(rating(2.5, "reward_model")), ppo._reward(rating(1.0, "rule", 0, 1)),
            ppo._reward(rating(None, "ai"))] == [2.5, 1.0, 0.0]
    snap = make_snapshot(tmp_path / "snap", "sft", n_train=4, n_test=2)
    train = C.TrainConfig(max_steps=2, batch_size=4, lr=1e-3, max_length=64, max_prompt_length=32,
                          output_dir=str(tmp_path / "run"))
    config = C.PPOConfig(train=train, judge_model=str(tiny_model_dir), advantage="grpo", samples_per_prompt=2,
                         rollout_prompts=4, max_new_tokens=6)
    result = train_model("grpo", snap, tiny_model_dir, config, base_model_id="base")
    rewards = [m.value for m in result.metrics if m.name == "reward"]
    assert len(rewards) == 2 and all(-1 < r < 1 for r in rewards) and len(set(rewards)) == 2  # real ratings
    assert result.run.meta["reward"] == f"llm:{tiny_model_dir}"
    evals = {e.metric: e.value for e in result.evaluations}
    assert -1 < evals["reward"] < 1 and -1 < evals["reference_reward"] < 1
    assert loads == []  # the judge is the reference (the base): no second copy
    judge = shutil.copytree(tiny_model_dir, tmp_path / "judge")
    other = train_model("grpo", snap, tiny_model_dir, replace(config, judge_model=str(judge), train=replace(
        train, output_dir=str(tmp_path / "run2"))), base_model_id="base")
    assert loads == [str(judge)]
    assert [m.value for m in other.metrics if m.name == "reward"] == pytest.approx(rewards)  # the same weights
    # the live policy as its own judge: no model loaded; iteration 1 (policy = base) rates as the base judged, and
    # after one update (the same as the base-judged run's, from the same ratings) it rates the same samples anew
    live = train_model("grpo", snap, tiny_model_dir, replace(config, judge_model="policy", train=replace(
        train, output_dir=str(tmp_path / "run3"))), base_model_id="base")
    live_rewards = [m.value for m in live.metrics if m.name == "reward"]
    assert loads == [str(judge)] and live.run.meta["reward"] == "llm:policy"
    assert live_rewards[0] == pytest.approx(rewards[0]) and live_rewards[1] != pytest.approx(rewards[1], abs=1e-4)
    assert ppo._reward_judge(replace(config, judge_model="policy"), "grpo", [], {}).func is ppo._live_judge
    with pytest.raises(AlignloopError, match="nope"):
        train_model("grpo", snap, tiny_model_dir, C.PPOConfig(train=train, judge_model=str(tmp_path / "nope"),
                                                              advantage="grpo", samples_per_prompt=2),
                    base_model_id="base")


def test_ppo_refuses_a_missing_or_wrong_reward_model(tmp_path, tiny_model_dir):  # noqa: F811
    snap = make_snapshot(tmp_path / "snap", "pairwise", n_train=2, n_test=0)
    with pytest.raises(AlignloopError, match="method ppo needs one reward: a reward model .*, a rule verifier "
                                             r"\(verifier, --verifier NAME\) or an LLM judge \(judge_model, "
                                             r"--judge-model MODEL\)$"):
        train_model("ppo", snap, tiny_model_dir, C.PPOConfig(), base_model_id="base")
    with pytest.raises(AlignloopError, match=r"\(judge_model, --judge-model MODEL\), not several"):
        train_model("ppo", snap, tiny_model_dir, C.PPOConfig(reward_model="x", verifier="final_answer"),
                    base_model_id="base")
    with pytest.raises(AlignloopError, match="unknown verifier 'exact'"):
        train_model("ppo", snap, tiny_model_dir, C.PPOConfig(verifier="exact"), base_model_id="base")
    with pytest.raises(AlignloopError, match="verifier final_answer compares answers with the prompts' reference "
                                             "answers; none of the 2 train prompts has one in the warehouse"):
        train_model("ppo", snap, tiny_model_dir, C.PPOConfig(verifier="final_answer"), base_model_id="base",
                    prompt_checks={"p-train-0": {"reference": None, "tags": (), "topic": ()}})
    with pytest.raises(AlignloopError, match="LlamaForCausalLM, not a reward model"):
        train_model("ppo", snap, tiny_model_dir, ppo_config(tmp_path / "run", tiny_model_dir), base_model_id="base")
    with pytest.raises(ValueError, match="clip_range must be in"):
        C.PPOConfig(clip_range=1.5)
    assert json.loads(json.dumps(C.to_dict(ppo_config(tmp_path, tiny_model_dir))))["type"] == "PPOConfig"


@pytest.fixture(scope="module")
def good_reward_model(tmp_path_factory, tiny_model_dir) -> Path:  # noqa: F811
    """A reward model trained to prefer answers starting with 'good' over 'bad'."""
    tmp = tmp_path_factory.mktemp("good-rm")
    return _learnt_reward_model(make_snapshot(tmp / "prefs", "pairwise", n_train=32, n_test=8), tiny_model_dir,
                                tmp / "rm")


def _learnt_reward_model(snap: Path, base: Path, out: Path, steps: int = 30) -> Path:
    """``train reward`` on a snapshot the tiny model learns whole: every held-out row right."""
    rm = train_model("reward", snap, base, C.RewardConfig(train=C.TrainConfig(
        lr=3e-3, max_steps=steps, batch_size=8, max_length=64, max_prompt_length=32, output_dir=str(out))),
        base_model_id=str(base))
    assert rm.run.meta["eval"]["eval/rewards/accuracies"] == 1.0
    card = (rm.model_dir / "README.md").read_text()  # a reward model's card says how to load and read it
    assert "pipeline_tag: text-classification" in card and "AutoModelForSequenceClassification" in card
    return rm.model_dir


@pytest.mark.parametrize("method, iterations, samples", [("ppo", 12, 1), ("grpo", 8, 4), ("rloo", 12, 4),
                                                       ("online_dpo", 12, 2)])
def test_each_online_method_moves_the_policy_towards_what_its_reward_model_prefers(
        tmp_path, tiny_model_dir, good_reward_model, method, iterations, samples):  # noqa: F811
    """A few iterations against the 'good' reward model: the policy's greedy answers to held-out prompts score above
    the reference's (a sign error in the advantages, or chosen and rejected swapped, would push them below)."""
    online_dpo = method == "online_dpo"
    config = ppo_config(tmp_path / method, good_reward_model, cls=C.OnlineDPOConfig if online_dpo else C.PPOConfig,
                        train={"max_steps": iterations, "lr": 2e-3, "batch_size": 8},
                        rollout_prompts=16 // samples, samples_per_prompt=samples,
                        **({"beta": 0.5, "ppo_epochs": 2} if online_dpo
                           else {"advantage": {"ppo": "gae"}.get(method, method), "kl_coef": 0.02}))
    result = train_model(method, make_snapshot(tmp_path / "prompts", "pairwise", n_train=16, n_test=8),
                         tiny_model_dir, config, base_model_id="base")
    assert result.run.method == method
    evals = {e.metric: e.value for e in result.evaluations}
    assert evals["reward"] > evals["reference_reward"] + 0.5 and evals["win_rate_vs_reference"] >= 0.75


def test_the_policy_loss_weighs_tokens_whole_answers_or_a_constant():
    old = torch.zeros(2, 4)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])  # a 4-token and a 1-token answer
    adv = torch.tensor([[1.0] * 4, [-2.0] * 4])
    token, _ = ppo.clipped_surrogate(old, old, adv, mask, 0.2)
    sequence, _ = ppo.clipped_surrogate(old, old, adv, mask, 0.2, "sequence")
    constant, _ = ppo.clipped_surrogate(old, old, adv, mask, 0.2, "constant")
    assert float(token) == pytest.approx((-1.0 * 4 + 2.0) / 5)  # ratio 1: the loss is -A per token
    assert float(sequence) == pytest.approx((-1.0 + 2.0) / 2)
    assert float(constant) == pytest.approx((-1.0 * 4 + 2.0) / (2 * 4))  # 2 answers x 4 tokens, whatever they hold
    with pytest.raises(ValueError, match="loss_aggregation must be one of token, sequence, constant, got 'answer'"):
        C.PPOConfig(loss_aggregation="answer")


def test_clip_higher_lets_the_ratio_grow_further_than_it_may_shrink():
    old = torch.zeros(1, 3)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.7]])).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    loss, stats = ppo.clipped_surrogate(new, old, adv, torch.ones(1, 3), 0.2, clip_high=0.6)
    # 1.5 is inside [0.8, 1.6]: unclipped (-1.5); 0.5 with A < 0: max(0.5, 0.8) = 0.8; 1.7 clipped at 1.6
    assert float(loss.detach()) == pytest.approx((-1.5 + 0.8 - 1.6) / 3)
    assert float(stats["clipfrac"]) == pytest.approx(2 / 3)
    loss.backward()
    assert new.grad[0, 0] != 0 and new.grad[0, 1] == 0 and new.grad[0, 2] == 0
    symmetric, _ = ppo.clipped_surrogate(new.detach(), old, adv, torch.ones(1, 3), 0.2)
    assert float(symmetric) == pytest.approx((-1.2 + 0.8 - 1.2) / 3)
    with pytest.raises(ValueError, match="clip_range_high must be > 0, got 0.0"):
        C.PPOConfig(clip_range_high=0.0)


def test_groups_with_signal_and_samples_of_two_rollouts_in_one():
    assert ppo.signal_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5]), 2).tolist() == [False, True, False]
    a = ppo.Samples(torch.tensor([[7, 8, 1, 2]]), torch.tensor([[1, 1, 1, 1]]), 2, torch.tensor([1.0]),
                    torch.tensor([True]))
    b = ppo.Samples(torch.tensor([[6, 7, 8, 3, 4], [0, 7, 8, 5, 0]]), torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 0]]),
                    3, torch.tensor([0.0, 2.0]), torch.tensor([True, False]))
    both = ppo.Samples.concat([a, b.select(torch.tensor([1]))], pad_id=0)
    # the narrower prompt is left-padded to the wider one; answers stay aligned after it
    assert both.prompt_len == 3 and both.tokens.tolist() == [[0, 7, 8, 1, 2], [0, 7, 8, 5, 0]]
    assert both.attention.tolist() == [[0, 1, 1, 1, 1], [0, 1, 1, 1, 0]]
    assert both.scores.tolist() == [1.0, 2.0] and both.ended.tolist() == [True, False]


def test_group_advantages_and_the_k3_kl_by_hand():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    sd = math.sqrt((4 * 0.25) / 3)  # Bessel-corrected std of 1, 0, 0, 1
    close(ppo.group_advantages(scores, 4, "grpo"), [x / (sd + 1e-4) for x in (0.5, -0.5, -0.5, 0.5)] + [0.0] * 4)
    close(ppo.group_advantages(scores, 4, "grpo", scale=False), [0.5, -0.5, -0.5, 0.5] + [0.0] * 4)  # Dr. GRPO
    close(ppo.group_advantages(scores, 4, "rloo"), [1 - 1 / 3, -2 / 3, -2 / 3, 1 - 1 / 3] + [0.0] * 4)
    close(ppo.group_advantages(torch.tensor([3.0, 1.0]), 2, "rloo"), [2.0, -2.0])
    with pytest.raises(ValueError, match="not 'gae'"):
        ppo.group_advantages(scores, 4, "gae")
    logp, ref = torch.tensor([-1.0, -1.0, -2.0]), torch.tensor([-1.0, -2.0, -1.0])
    close(ppo.k3_kl(logp, ref), [0.0, math.exp(-1), math.e - 2])


def test_grpo_and_rloo_runs_compare_answers_to_one_prompt_without_a_critic(tmp_path, tiny_model_dir,  # noqa: F811
                                                                          monkeypatch):
    snap = make_snapshot(tmp_path / "snap", "pairwise", n_train=6, n_test=2)
    rm = tiny_reward_model(tiny_model_dir, tmp_path / "rm")
    for method in ("grpo", "rloo"):
        from alignloop.trainers.methods import default_config

        preset = default_config(method)
        assert preset.advantage == method and preset.samples_per_prompt == 4 and preset.method == method
        config = ppo_config(tmp_path / method, rm, advantage=method, samples_per_prompt=3)
        result = train_model(method, snap, tiny_model_dir, config, base_model_id="base")
        # 4 prompts x 3 answers per iteration, minibatches of 4, two epochs: 6 updates per iteration
        assert result.run.method == method and result.run.meta["optimizer_steps"] == 3 * 6
        names = {m.name for m in result.metrics}
        assert {"reward", "kl", "policy_loss", "zero_std_groups"} <= names and "value_loss" not in names
        assert ("kl_loss" in names) == (method == "grpo")
        assert result.model.meta["method"] == method and result.plot is not None
        card = (result.model_dir / "README.md").read_text()  # the model card: a policy, its run and reward model
        assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
        assert f"# {method} on {result.model.meta['dataset']}" in card and f"`{result.run.id}`" in card
        assert f'"reward_model": "{rm}"' in card
    seen = []
    real = ppo.group_advantages
    monkeypatch.setattr(ppo, "group_advantages", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    train_model("grpo", snap, tiny_model_dir, ppo_config(tmp_path / "dr", rm, advantage="grpo", samples_per_prompt=2,
                                                         scale_rewards=False, train={"max_steps": 1}),
                base_model_id="base")
    assert seen == [{"scale": False}]
    used: list[str] = []
    for agg in ("token", "sequence", "constant"):
        used.clear()
        for name, fn in ppo.AGGREGATIONS.items():
            monkeypatch.setitem(ppo.AGGREGATIONS, name, lambda *a, name=name, fn=fn: used.append(name) or fn(*a))
        train_model("grpo", snap, tiny_model_dir, ppo_config(tmp_path / agg, rm, advantage="grpo",
                                                             samples_per_prompt=2, loss_aggregation=agg,
                                                             train={"max_steps": 1}), base_model_id="base")
        # two epochs of two minibatches, each the policy loss and the KL term
        assert used == [agg] * 8
        monkeypatch.undo()
    with pytest.raises(AlignloopError, match="method ppo got a config for method grpo"):
        train_model("ppo", snap, tiny_model_dir, ppo_config(tmp_path / "x", rm, advantage="grpo",
                                                            samples_per_prompt=2), base_model_id="base")
    with pytest.raises(ValueError, match="needs samples_per_prompt >= 2, got 1"):
        C.PPOConfig(reward_model="x", advantage="rloo")
    with pytest.raises(ValueError, match="advantage must be one of gae, grpo, rloo"):
        C.PPOConfig(reward_model="x", advantage="reinforce")


def test_a_verifier_scores_answers_with_what_it_reads_of_their_prompts():
    from alignloop.pipelines.judges.run import VerifierJudge
    from alignloop.pipelines.verifiers import get_verifier

    checks = {"p1": {"reference": "42", "tags": (), "topic": ()}, "p2": {"reference": "7", "tags": (), "topic": ()}}
    models = ppo._Models(None, None, None, VerifierJudge(get_verifier("final_answer")), None, torch.device("cpu"),
                         False, checks)
    prompts = [{"prompt_id": pid, "prompt_text": "q", "prompt": "[]"} for pid in ("p1", "p1", "p2", "p3")]
    scores = models.score(prompts, ["so it is 42", "it is 41", "#### 7", "it is 7"])  # p3: no reference known
    assert scores.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_a_sample_s_score_is_the_verifier_s_less_the_length_penalties(monkeypatch):
    from alignloop.pipelines.judges.run import VerifierJudge
    from alignloop.pipelines.verifiers import get_verifier

    checks = {"p1": {"reference": "42", "tags": (), "topic": ()}}
    models = ppo._Models(None, None, None, VerifierJudge(get_verifier("final_answer")), None, torch.device("cpu"),
                         False, checks)
    attention = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    texts, ended = ["42", "it is 41", "it is 42 and on"], torch.tensor([True, True, False])
    monkeypatch.setattr(ppo._Models, "answer", lambda self, *a: (attention * 5, attention, 2, texts, ended))
    config = C.PPOConfig(verifier="final_answer", max_new_tokens=6, overlong_buffer=2, overlong_penalty=0.5,
                         missing_eos_penalty=1.0)
    prompts = [{"prompt_id": "p1", "prompt_text": "q", "prompt": "[]"}] * 3
    s = models.sample(prompts, None, config)
    # answers of 2, 5 and 6 tokens: 5 is half-way into the 2-token buffer, 6 at its end; the last never ended
    assert s.scores.tolist() == [1.0, -0.25, 1.0 - 1.0 - 0.5] and s.ended.tolist() == [True, True, False]


def test_groups_that_all_fail_their_verifier_teach_grpo_nothing(tmp_path, tiny_model_dir):  # noqa: F811
    """A verifier no sampled answer passes: every group's scores are equal, so every advantage is 0 and (without a
    KL term) the policy ends exactly where it started."""
    from safetensors.torch import load_file

    snap = make_snapshot(tmp_path / "snap", "sft", n_train=4, n_test=2)
    checks = {f"p-{s}-{i}": {"reference": "123456789", "tags": (), "topic": ()} for s in ("train", "test")
              for i in range(4)}
    config = C.PPOConfig(train=C.TrainConfig(max_steps=2, batch_size=4, lr=1e-2, max_length=64, max_prompt_length=32,
                                             output_dir=str(tmp_path / "run")),
                         verifier="final_answer", advantage="grpo", samples_per_prompt=2, rollout_prompts=4,
                         max_new_tokens=6, kl_coef=0.0)
    result = train_model("grpo", snap, tiny_model_dir, config, base_model_id="base", prompt_checks=checks)
    by_name = {(m.name, m.step): m.value for m in result.metrics}
    assert by_name[("reward", 1)] == by_name[("reward", 2)] == 0.0
    assert by_name[("zero_std_groups", 1)] == by_name[("zero_std_groups", 2)] == 1.0
    assert result.run.meta["reward"] == "verifier:final_answer"
    before, after = load_file(Path(tiny_model_dir) / "model.safetensors"), load_file(result.model_dir /
                                                                                     "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the references it read are an input of the run: the same return it as it finished; others in its folder are
    # refused (another run), as a changed config is
    again = train_model("grpo", snap, tiny_model_dir, config, base_model_id="base", prompt_checks=checks)
    assert again.run.id == result.run.id and again.run.meta["finished_at"] == result.run.meta["finished_at"]
    changed = {**checks, "p-train-0": {**checks["p-train-0"], "reference": "7"}}
    with pytest.raises(AlignloopError, match=r"cannot resume .*saved config differs in run.prompt_checks"):
        train_model("grpo", snap, tiny_model_dir, config, base_model_id="base", prompt_checks=changed)


def test_online_dpo_pairs_each_group_s_best_and_worst_for_any_pairwise_loss(tmp_path, tiny_model_dir,  # noqa: F811
                                                                           monkeypatch):
    assert ppo.best_worst_pairs(torch.tensor([0.0, 1.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0, 3.0, 1.0, 2.0, 5.0]),
                                4).tolist() == [1, 0, 11, 9]  # the first of equals; the flat group makes no pair
    snap = make_snapshot(tmp_path / "snap", "sft", n_train=8, n_test=2)
    rm = tiny_reward_model(tiny_model_dir, tmp_path / "rm")
    calls = _scored_by_prompt(monkeypatch, {"p-train-0", "p-train-2", "p-train-5"})
    seen = []
    from alignloop.trainers import objectives

    real = objectives.pairwise_loss
    monkeypatch.setattr(objectives, "pairwise_loss", lambda fn, *a: seen.append((fn.spec.name, fn.beta)) or real(
        fn, *a))
    config = ppo_config(tmp_path / "run", rm, cls=C.OnlineDPOConfig, samples_per_prompt=2, loss="ipo", beta=0.5,
                        train={"max_steps": 2, "eval": False})
    drawn = []
    real_plot = ppo.plot_curves
    monkeypatch.setattr(ppo, "plot_curves", lambda logged, target, title, panels: drawn.append(
        {name for _, names in panels for name in names} & {name for _, name, _ in logged})
        or real_plot(logged, target, title, panels))
    result = train_model("online_dpo", snap, tiny_model_dir, config, base_model_id="base")
    # the curves draw the pairwise loss and the pairs' margins (no PPO panels)
    assert result.plot is not None and {"loss", "rewards/margins", "score_margin"} <= drawn[0]
    by_name = {(m.name, m.step): m.value for m in result.metrics}
    good_per_iteration = [len({p for p in call if p in {"p-train-0", "p-train-2", "p-train-5"}}) for call in calls]
    assert [by_name[("pairs", it)] for it in (1, 2)] == good_per_iteration
    # the good prompts' pairs: chosen scored 1, rejected 0
    assert all(by_name[("score_margin", it)] == 1.0 for it in (1, 2) if good_per_iteration[it - 1])
    # 2 pairs a minibatch (batch_size 4 answers), one pass (ppo_epochs 1)
    steps = [math.ceil(n / 2) for n in good_per_iteration]
    assert result.run.meta["optimizer_steps"] == sum(steps) and sum(steps) < 4
    # the linear decay plans 2 iterations x 2 steps (4 pairs an iteration): an iteration with fewer pairs still
    # moves it a whole iteration on; each logs the rate of its last step
    assert [by_name[("lr", it + 1)] for it in (0, 1) if steps[it]] == pytest.approx(
        [1e-3 * (1 - (2 * it + steps[it] - 1) / 4) for it in (0, 1) if steps[it]])
    assert seen and set(seen) == {("ipo", 0.5)} and result.run.method == "online_dpo"
    assert {"rewards/accuracies", "rewards/margins", "kl"} <= {name for name, _ in by_name}
    with pytest.raises(ValueError, match="loss 'kto' is not pairwise"):
        C.OnlineDPOConfig(loss="kto")
    with pytest.raises(ValueError, match="advantage must be one of pairs, got 'grpo'"):
        C.OnlineDPOConfig(advantage="grpo")
    with pytest.raises(ValueError, match=r"online_dpo does not use kl_coef, vf_coef \(PPO's clipping, critic and KL "
                                         r"penalty\): its loss's beta"):
        C.OnlineDPOConfig(kl_coef=0.2, vf_coef=0.5)
    with pytest.raises(ValueError, match="advantage must be one of gae, grpo, rloo, got 'pairs'"):
        C.PPOConfig(advantage="pairs")
    with pytest.raises(AlignloopError, match="method grpo got a config for method online_dpo"):
        train_model("grpo", snap, tiny_model_dir, config, base_model_id="base")
    assert C.from_dict(json.loads(json.dumps(C.to_dict(config)))) == config


def _scored_by_prompt(monkeypatch, good: set[str]) -> list[list[str]]:
    """Scores answers by their prompt alone: a group of a prompt in ``good`` scores 1, 0, 1, 0, ..., any other prompt's
    all 0. Returns the prompt ids of each scoring call."""
    calls: list[list[str]] = []

    def score(self, prompts, texts):
        calls.append([p["prompt_id"] for p in prompts])
        return torch.tensor([float(p["prompt_id"] in good and i % 2 == 0) for i, p in enumerate(prompts)])

    monkeypatch.setattr(ppo._Models, "score", score)
    return calls


def test_dynamic_sampling_updates_on_groups_with_signal_only(tmp_path, tiny_model_dir, monkeypatch):  # noqa: F811
    from safetensors.torch import load_file

    snap = make_snapshot(tmp_path / "snap", "sft", n_train=8, n_test=0)
    rm = tiny_reward_model(tiny_model_dir, tmp_path / "rm")
    good = {"p-train-1", "p-train-4", "p-train-6"}
    calls = _scored_by_prompt(monkeypatch, good)
    used = []
    real_rollout = ppo._Models.rollout
    monkeypatch.setattr(ppo._Models, "rollout", lambda self, s, c: used.append(s.scores.tolist()) or real_rollout(
        self, s, c))
    config = ppo_config(tmp_path / "run", rm, advantage="grpo", samples_per_prompt=2, dynamic_sampling=True,
                        max_rollouts=3, rollout_prompts=2, train={"max_steps": 3})
    result = train_model("grpo", snap, tiny_model_dir, config, base_model_id="base")
    by_name = {(m.name, m.step): m.value for m in result.metrics}
    at = 0
    for it in (1, 2, 3):
        # rollouts of 2 prompts x 2 answers until 2 good prompts are in hand, 3 at most
        found, rollouts = 0, 0
        while found < 2 and rollouts < 3:
            found += len({pid for pid in calls[at] if pid in good})
            at, rollouts = at + 1, rollouts + 1
        assert by_name[("rollouts", it)] == rollouts and by_name[("groups_used", it)] == min(found, 2)
        assert len({pid for call in calls[at - rollouts:at] for pid in call}) == 2 * rollouts  # no prompt twice
        sampled = calls[at - rollouts:at]
        assert by_name[("zero_std_groups", it)] == pytest.approx(
            1 - sum(pid in good for call in sampled for pid in call[::2]) / (2 * rollouts))
    assert at == len(calls)
    # only groups that differ reach the update: 1, 0 per good prompt
    assert used and all(u == [1.0, 0.0] * (len(u) // 2) for u in used)
    assert [len(u) // 2 for u in used] == [by_name[("groups_used", it)] for it in (1, 2, 3)
                                           if by_name[("groups_used", it)]]

    # no group with signal anywhere: every iteration samples max_rollouts times and never updates
    calls = _scored_by_prompt(monkeypatch, set())
    config = ppo_config(tmp_path / "none", rm, advantage="grpo", samples_per_prompt=2, dynamic_sampling=True,
                        max_rollouts=2, rollout_prompts=2, train={"max_steps": 2})
    result = train_model("grpo", snap, tiny_model_dir, config, base_model_id="base")
    assert len(calls) == 4 and result.run.meta["optimizer_steps"] == 0
    assert {m.name for m in result.metrics} >= {"rollouts", "groups_used", "reward"}
    assert "kl" not in {m.name for m in result.metrics}
    before, after = load_file(Path(tiny_model_dir) / "model.safetensors"), load_file(result.model_dir /
                                                                                     "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="dynamic_sampling .* needs method grpo, rloo, online_dpo"):
        C.PPOConfig(dynamic_sampling=True)


def test_rollout_scores_in_chunks_from_the_answer_logits_alone_match_the_whole_batch(tiny_model_dir):  # noqa: F811
    """Log-probs from the answer positions' logits, a few rows at a time, equal those of the full logits of the
    whole batch (what the memory saving must not change)."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    torch.manual_seed(0)
    tokens = torch.randint(3, model.config.vocab_size, (5, 9))
    attention = torch.ones_like(tokens)
    attention[0, :2] = 0  # a left-padded prompt
    width, temperature = 4, 0.7
    with torch.no_grad():
        full = model(input_ids=tokens, attention_mask=attention, position_ids=ppo._positions(attention)).logits
        logp = F.log_softmax(full[:, width - 1:-1] / temperature, -1)
        expected = logp.gather(-1, tokens[:, width:, None]).squeeze(-1)
        head = ppo.ValueHead(model.config.hidden_size)
        torch.nn.init.normal_(head.linear.weight)
        _, values, entropy = ppo.forward_answers(model, tokens, attention, width, temperature, head)
        chunked, chunked_values = ppo.score_rollout(model, tokens, attention, width, temperature, head, chunk=2)
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked_values, values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, -(logp.exp() * logp).sum(-1), rtol=1e-5, atol=1e-5)


def test_safe_rlhf_scores_are_the_lagrangian_and_the_multiplier_moves_with_the_cost(monkeypatch):
    """Safe RLHF by hand: (reward - lambda * cost) / (1 + lambda) per answer, the cost the cost model's negated score;
    lambda rises while the mean cost is over the limit, falls while under, never below 0."""
    from alignloop.pipelines.judges.run import VerifierJudge
    from alignloop.pipelines.verifiers import get_verifier

    close(ppo.lagrangian_scores(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, -1.0, 0.0]), 3.0),
          [(1 - 1.5) / 4, (0 + 3) / 4, 2 / 4])
    assert ppo.update_lambda(1.0, 0.8, 0.5, 0.1) == pytest.approx(1.03)
    assert ppo.update_lambda(1.0, 0.2, 0.5, 0.1) == pytest.approx(0.97)
    assert ppo.update_lambda(0.01, -5.0, 0.5, 0.1) == 0.0
    checks = {"p1": {"reference": "42", "tags": (), "topic": ()}}
    verifier = VerifierJudge(get_verifier("final_answer"))
    models = ppo._Models(None, None, None, verifier, None, torch.device("cpu"), False, checks,
                         cost_judge=VerifierJudge(get_verifier("json_valid")), lam=0.5)
    attention = torch.ones(3, 8, dtype=torch.long)
    texts, ended = ["42", "it is 41", "so it is 42"], torch.tensor([True, True, True])
    monkeypatch.setattr(ppo._Models, "answer", lambda self, *a: (attention, attention, 2, texts, ended))
    s = models.sample([{"prompt_id": "p1", "prompt_text": "q", "prompt": "[]"}] * 3, None,
                      C.PPOConfig(verifier="final_answer", max_new_tokens=6))
    # reward: 42 is right; cost: minus the JSON check (only "42" parses)
    assert s.rewards.tolist() == [1.0, 0.0, 1.0] and s.costs.tolist() == [-1.0, -0.0, -0.0]
    close(s.scores, [(1 + 0.5) / 1.5, 0.0, 1 / 1.5])
    assert s.select(torch.tensor([2])).costs.tolist() == [-0.0]
    assert ppo.Samples.concat([s, s.select(torch.tensor([0]))], 0).rewards.tolist() == [1.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="are Safe RLHF's: they need a cost_model"):
        C.PPOConfig(verifier="final_answer", cost_limit=0.0)


def test_safe_rlhf_advantages_combine_a_reward_critic_and_a_cost_critic():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, 0.0], [-1.0, -2.0, -1.0]])  # KL per token: [0.5, 0, 0], [0, 1, 0]
    rewards, costs = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])
    adv, returns, penalised, kl = ppo.safe_gae(rewards, costs, logp, ref, torch.zeros(2, 3, 2), mask, kl_coef=0.1,
                                               multiplier=3.0, gamma=1.0, lam=1.0)
    # zero values, gamma = lambda = 1: each advantage is its stream's sum to go. Reward stream -0.1 KL + reward at
    # the last token: [-0.05, 2, 0], [0, -0.1, -1]; cost stream +0.1 KL + cost: [0.05, 0.5, 0], [0, 0.1, 1]
    close(returns[..., 0], [[1.95, 2.0, 0.0], [-1.1, -1.1, -1.0]])
    close(returns[..., 1], [[0.55, 0.5, 0.0], [1.1, 1.1, 1.0]])
    close(adv, [[(1.95 - 3 * 0.55) / 4, (2.0 - 3 * 0.5) / 4, 0.0], [-1.1, -1.1, -1.0]])
    close(penalised, [(1.95 - 3 * 0.55) / 4, (-1.1 - 3 * 1.1) / 4])
    close(kl, [[0.5, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # the KL weighs kl_coef whatever the multiplier: with no reward and no cost the advantages are the KL's alone
    zero = torch.zeros(2)
    alone = [ppo.safe_gae(zero, zero, logp, ref, torch.zeros(2, 3, 2), mask, 0.1, m, 1.0, 1.0)[0] for m in (0.0, 10.0)]
    close(alone[0], [[-0.05, 0.0, 0.0], [-0.1, -0.1, 0.0]])
    close(alone[1], alone[0].tolist())
    # both critics' value losses add up: 0.5 (V - R)^2 per critic, V = 0 and R = 1 on every answer token
    _, stats = ppo.ppo_loss(logp, logp, adv, torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), torch.ones(2, 3, 2), mask,
                            0.2, 0.2, 1.0)
    assert float(stats["value_loss"]) == pytest.approx(1.0)
    assert ppo.ValueHead(4, 2)(torch.ones(2, 3, 4)).shape == (2, 3, 2) and ppo.ValueHead(4)(
        torch.ones(2, 3, 4)).shape == (2, 3)


@pytest.fixture(scope="module")
def bad_reward_model(tmp_path_factory, tiny_model_dir) -> Path:  # noqa: F811
    """A reward model trained the other way round: 'bad' answers over 'good' ones (a harmlessness model at odds
    with the 'good' reward model)."""
    from alignloop.trainers.snapshot import write_snapshot_dir
    from alignloop.warehouse.snapshots import SCHEMAS
    from tests.fixtures_trainers import rows_for

    tmp = tmp_path_factory.mktemp("bad-rm")
    tables = {}
    for split, n in (("train", 32), ("test", 8)):
        rows = [{**r, "chosen": r["rejected"], "rejected": r["chosen"], "chosen_id": r["rejected_id"],
                 "rejected_id": r["chosen_id"]} for r in rows_for("pairwise", n, split)]
        tables[split] = pa.Table.from_pylist(rows, schema=SCHEMAS["pairwise"])
    snap = write_snapshot_dir(tmp / "prefs", "pairwise", tables["train"], tables["test"], name="safer")
    return _learnt_reward_model(snap, tiny_model_dir, tmp / "rm")


def test_safe_rlhf_weighs_the_cost_against_the_reward_and_bounds_it(tmp_path, tiny_model_dir,  # noqa: F811
                                                                     good_reward_model, bad_reward_model):
    """The reward prefers 'good' answers, the cost model (harmlessness) 'bad' ones. With the multiplier held at 0 the
    policy follows the reward and the held-out cost rises with it; held at 10 the cost dominates and stays. With the
    cost bounded at the start's, the multiplier follows the update rule from the logged costs, and the run is
    recorded with its figures."""
    snap = make_snapshot(tmp_path / "prompts", "pairwise", n_train=16, n_test=8)
    kw = {"train": {"max_steps": 12, "lr": 2e-3, "batch_size": 8}, "rollout_prompts": 16, "kl_coef": 0.02,
          "cost_model": str(bad_reward_model)}
    held = {lam: train_model("ppo", snap, tiny_model_dir,
                             ppo_config(tmp_path / f"lambda-{lam}", good_reward_model, lambda_init=lam, lambda_lr=1e-9,
                                        cost_limit=0.0, **kw), base_model_id="base")
            for lam in (0.0, 10.0)}
    reward_only, cost_first = ({e.metric: e.value for e in held[lam].evaluations} for lam in (0.0, 10.0))
    assert reward_only["reward"] > reward_only["reference_reward"] + 0.5
    assert reward_only["cost"] > reward_only["reference_cost"] + 0.5  # at odds: more reward, more cost
    # held at 10, the cost weighs ten times the reward: the policy stays as cheap as it started, far below
    assert cost_first["cost"] < reward_only["cost"] - 0.5 and cost_first["reward"] < reward_only["reward"] - 0.5
    assert cost_first["cost"] < cost_first["reference_cost"] + 0.1
    bounded = train_model("ppo", snap, tiny_model_dir,
                          ppo_config(tmp_path / "bounded", good_reward_model, lambda_lr=2.0,
                                     **{**kw, "train": {**kw["train"], "max_steps": 5}}), base_model_id="base")
    by_name: dict[str, dict[int, float]] = {}
    for m in bounded.metrics:
        by_name.setdefault(m.name, {})[m.step] = m.value
    costs, lams, limit = by_name["cost"], by_name["lambda"], by_name["cost_limit"]
    assert set(limit.values()) == {costs[1]}  # bounded at the starting policy's cost
    lam = 1.0
    for step in range(1, 6):
        assert lams[step] == pytest.approx(lam, abs=1e-6)
        lam = max(0.0, lam + 2.0 * (costs[step] - costs[1]))
    assert len(set(lams.values())) > 1
    assert bounded.run.meta["safe_rlhf"] == {"cost_model": str(bad_reward_model), "cost_limit": costs[1],
                                             "lambda": pytest.approx(lam, abs=1e-6)}
    assert {"cost", "reference_cost"} <= {e.metric for e in bounded.evaluations}


def test_the_train_form_carries_the_cost_model_and_limit_to_online_methods_only(tmp_path):
    from alignloop.flows.train import TrainParams

    config = TrainParams(method="grpo", dataset="x", reward_model="rm", cost_model="safe-rm", cost_limit=-0.5).config()
    assert (config.cost_model, config.cost_limit, config.lambda_init) == ("safe-rm", -0.5, 1.0)
    with pytest.raises(AlignloopError, match="method dpo has no cost_model option"):
        TrainParams(method="dpo", dataset="x", cost_model="safe-rm").config()


def test_a_reward_model_on_binary_rows_learns_the_label_s_sign(tmp_path, bad_reward_model):
    """Safe RLHF's cost model in two stages: the harmlessness pairs' model (bad_reward_model: 'bad' answers are the
    safer here), then the per-answer safety labels, so its zero is the boundary (safe above, unsafe below) and a
    cost limit of 0 means what the paper's does. The loss is -log sigmoid(s * r) by hand."""
    from types import SimpleNamespace

    from alignloop.pipelines.judges.reward_model import RewardModelJudge
    from alignloop.trainers import objectives as O
    from alignloop.trainers.snapshot import write_snapshot_dir
    from alignloop.warehouse.snapshots import SCHEMAS
    from tests.fixtures_trainers import rows_for

    scores = torch.tensor([[1.5], [-0.5], [0.2]])
    stub = lambda **kw: SimpleNamespace(logits=scores)
    batch = {"input_ids": torch.zeros(3, 2, dtype=torch.long), "attention_mask": torch.ones(3, 2, dtype=torch.long),
             "labels": torch.tensor([[1, 1], [0, 0], [0, 0]])}
    loss, metrics = O.RewardBinaryObjective()(stub, batch)
    expected = -(torch.log(torch.sigmoid(torch.tensor(1.5))) + torch.log(torch.sigmoid(torch.tensor(0.5)))
                 + torch.log(torch.sigmoid(torch.tensor(-0.2)))) / 3
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(metrics["rewards/accuracies"]) == pytest.approx(2 / 3)

    tables = {}
    for split, n in (("train", 32), ("test", 8)):
        rows = [{**r, "completion": ("bad " if i % 2 else "good ") + r["completion"], "label": bool(i % 2)}
                for i, r in enumerate(rows_for("binary", n, split))]
        tables[split] = pa.Table.from_pylist(rows, schema=SCHEMAS["binary"])
    snap = write_snapshot_dir(tmp_path / "safety", "binary", tables["train"], tables["test"], name="safety")
    cost = _learnt_reward_model(snap, bad_reward_model, tmp_path / "cost", steps=60)
    judge = RewardModelJudge.load(str(cost))  # as Safe RLHF's cost model reads answers
    test = tables["test"].to_pylist()
    items = [ResponseItem(f"r{i}", r["prompt_id"], r["prompt_text"], r["completion"], messages=r["prompt"])
             for i, r in enumerate(test)]
    signs = [(r.score > 0, row["label"]) for r, row in zip(judge.judge_items(items, "r1"), test)]
    assert all(positive == safe for positive, safe in signs)  # cost (the negated score) < 0 exactly for safe answers
