"""The online merging optimizers OnDARE and OnTIES: their update rules by hand, and inside training runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignloop.trainers import config as C
from alignloop.trainers import merging
from alignloop.trainers.merging import OnlineMergingAdamW, dare, ondare, onties, trim
from alignloop.trainers.run import train_model
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_trainers import make_snapshot, save_tiny_model, small_train, tiny_model_dir  # noqa: F401


def _adamw_step(w0: torch.Tensor, grad: torch.Tensor, **kw) -> torch.Tensor:
    """torch's own AdamW's first step from ``w0`` with ``grad`` (the outside reference)."""
    w = torch.nn.Parameter(w0.clone())
    opt = torch.optim.AdamW([w], **kw)
    w.grad = grad.clone()
    opt.step()
    return w.detach() - w0


def _merged_step(w0: torch.Tensor, grad: torch.Tensor, tau: torch.Tensor, **kw) -> torch.Tensor:
    w = torch.nn.Parameter(w0.clone())
    opt = OnlineMergingAdamW([w], deltas={id(w): tau}, **kw)
    w.grad = grad.clone()
    opt.step()
    return w.detach() - w0


def test_dare_drops_and_rescales_and_ondare_merges_the_step_with_the_delta():
    x = torch.ones(10_000)
    kept = dare(x, 0.1, generator=torch.Generator().manual_seed(0))  # Drop And REscale: kept entries / 0.1
    assert set(kept.unique().tolist()) == {0.0, 10.0} and 0.08 < (kept > 0).float().mean() < 0.12
    ablation = dare(x, 0.1, rescale=False, generator=torch.Generator().manual_seed(0))
    assert set(ablation.unique().tolist()) == {0.0, 1.0} and torch.equal(ablation * 10, kept)
    assert torch.equal(dare(x, 1.0), x)
    step, tau = torch.tensor([0.5, -0.5]), torch.tensor([2.0, 4.0])
    assert ondare(step, tau, 0.25, 1.0).tolist() == [0.75 * 0.5 + 0.5, -0.75 * 0.5 + 1.0]


def test_ondare_at_alpha_zero_is_adamw_in_expectation(monkeypatch):
    """OnDARE at merge weight 0 is gradient dropout with rescaling (ChildTuning-F; Lu et al. 2024, Sec. 5): the mean
    of its merged step over many draws is AdamW's step. Each entry's draw is ``a / p`` with probability ``p`` and 0
    otherwise (``a`` Adam's step without the weight decay, which is not dropped): variance ``a^2 (1/p - 1)``, so the
    mean of K draws is off by ``|a| sqrt((1/p - 1) / K)`` (one standard error); every entry must lie within 4.5 of
    them (all 64 inside: probability 0.9996 if the expectation is right). Seeded."""
    torch.manual_seed(0)
    n, draws, reserve, kw = 64, 2000, 0.1, {"lr": 0.1, "weight_decay": 0.05}
    w0, grad, tau = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64), torch.randn(n)
    adamw = _adamw_step(w0, grad, **kw)
    adam_alone = adamw + kw["lr"] * kw["weight_decay"] * w0  # AdamW's step less its decoupled weight decay
    stderr = adam_alone.abs() * math.sqrt((1 / reserve - 1) / draws)

    def mean_step(**extra) -> torch.Tensor:
        return torch.stack([_merged_step(w0, grad, tau.double(), alpha=0.0, reserve=reserve, **kw, **extra)
                            for _ in range(draws)]).mean(0)

    assert ((mean_step() - adamw) / stderr).abs().max() < 4.5  # the default rescales
    # the ablation (merge_no_rescale) keeps only ~10% of AdamW's step: the test can tell
    assert ((mean_step(rescale=False) - adamw) / stderr).abs().min() > 10
    monkeypatch.setattr(merging, "sft_deltas", lambda *a: {})
    settings = merging.optimizer_kwargs(C.TrainConfig(merge_base="pretrained", seed=7), None, "reference")
    assert settings["rescale"] is True and settings["seed"] == 7  # the defaults rescale; the run's seed draws
    ablation = merging.optimizer_kwargs(C.TrainConfig(merge_base="pretrained", merge_no_rescale=True), None, "ref")
    assert ablation["rescale"] is False


def test_the_weight_decay_is_applied_whole_and_the_deltas_drop_is_drawn_once_from_the_seed():
    w0, tau = torch.ones(1000), torch.linspace(-1, 1, 1000)
    # no gradient signal (Adam's step 0): the step is AdamW's decoupled weight decay alone, on every entry
    assert torch.allclose(_merged_step(w0, torch.zeros(1000), tau, alpha=0.0, reserve=0.01, lr=0.1,
                                       weight_decay=0.5), torch.full((1000,), -0.05))
    # alpha 1: every step adds the same dropped and rescaled delta (drawn once, like the reference code's)
    w = torch.nn.Parameter(w0.clone())
    opt = OnlineMergingAdamW([w], deltas={id(w): tau}, alpha=1.0, reserve=0.1, lr=0.1, weight_decay=0.0, seed=3)
    steps = []
    for _ in range(3):
        before = w.detach().clone()
        w.grad = torch.randn(1000)
        opt.step()
        steps.append(w.detach() - before)
    assert torch.allclose(steps[0], steps[1]) and torch.allclose(steps[1], steps[2])
    kept = steps[0] != 0
    assert 0.07 < kept.float().mean() < 0.13 and torch.allclose(steps[0][kept], tau[kept] / 0.1)
    kw = {"alpha": 1.0, "reserve": 0.1, "lr": 0.1, "weight_decay": 0.0}
    again = _merged_step(w0, torch.randn(1000), tau, seed=3, **kw)
    assert torch.equal(again, steps[0])  # a resumed run draws the same
    assert not torch.equal(_merged_step(w0, torch.randn(1000), tau, seed=4, **kw), again)


def test_ties_trims_to_the_largest_share_and_onties_elects_the_sign_from_the_unweighted_candidates():
    x = torch.tensor([[0.1, -3.0, 0.5], [2.0, -0.2, 0.0]])
    assert trim(x, 0.3).tolist() == [[0.0, -3.0, 0.0], [2.0, 0.0, 0.0]]  # ceil(0.3 * 6) = 2 kept: -3 and 2
    assert trim(x, 0.5).tolist() == [[0.0, -3.0, 0.5], [2.0, 0.0, 0.0]]
    assert torch.equal(trim(x, 1.0), x)
    step, tau = torch.tensor([0.4, 0.4, -0.4, 0.0, 0.4]), torch.tensor([1.0, -0.2, -1.0, 3.0, -1.0])
    # TIES (Yadav et al. 2023) elects sign(step + tau): + + - + -, whatever alpha; each side is added, weighted, where
    # it agrees: entry 1 keeps the step alone (it is larger), entry 4 the delta alone (it is larger)
    for alpha in (0.5, 1e-6):
        a, b = 1 - alpha, alpha
        expected = [a * 0.4 + b * 1.0, a * 0.4, -a * 0.4 - b * 1.0, b * 3.0, -b * 1.0]
        assert torch.allclose(onties(step, tau, alpha, 1.0), torch.tensor(expected), rtol=1e-6, atol=0)
    # at alpha 1e-6 a sign elected from the weighted sum would let the step's 0.4 outvote the delta's 1e-6 on entry 4
    # (OnTIES would be trimmed AdamW); the elected one drops it
    assert onties(step, tau, 1e-6, 1.0)[4] == pytest.approx(-1e-6)
    with pytest.raises(AlignloopError, match="unknown method 'tie'"):
        OnlineMergingAdamW([torch.nn.Parameter(torch.ones(1))], deltas={}, alpha=0.1, reserve=1.0, method="tie")
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(AlignloopError, match="none of the optimizer's parameters is one the SFT delta was read for"):
        OnlineMergingAdamW([torch.nn.Parameter(w.detach().clone())], deltas={id(w): torch.ones(2)}, alpha=0.1,
                           reserve=1.0)  # a copy (as a sharding wrapper makes) has no delta
    with pytest.raises(ValueError, match="merge_method must be dare or ties"):
        C.TrainConfig(merge_method="tie")
    with pytest.raises(ValueError, match="merge_no_rescale is an ablation of OnDARE's rescale"):
        C.TrainConfig(merge_method="ties", merge_no_rescale=True)


def test_online_merging_adamw_merges_adamws_step_with_the_delta():
    start, grad, tau = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, -4.0, 6.0]), torch.tensor([1.0, 1.0, -1.0])
    update = _adamw_step(start, grad, lr=0.1, weight_decay=0.0)  # about -0.1 * sign(grad)
    assert torch.allclose(_merged_step(start, grad, tau, alpha=0.5, reserve=1.0, lr=0.1, weight_decay=0.0),
                          0.5 * update + 0.5 * tau)
    # OnTIES: the delta pulls against the step on entry 0 (+1 against -0.1), so the elected sign is the delta's and
    # the step's entry is dropped, at alpha 0.5 and even at alpha 0; entries 1 and 2 agree (both added)
    assert torch.allclose(_merged_step(start, grad, tau, alpha=0.5, reserve=1.0, lr=0.1, weight_decay=0.0,
                                       method="ties"), 0.5 * tau + 0.5 * update * torch.tensor([0.0, 1.0, 1.0]))
    assert torch.allclose(_merged_step(start, grad, tau, alpha=0.0, reserve=1.0, lr=0.1, weight_decay=0.0,
                                       method="ties"), update * torch.tensor([0.0, 1.0, 1.0]))
    assert torch.allclose(_merged_step(start, grad, tau, alpha=0.0, reserve=1.0, lr=0.1, weight_decay=0.0), update)


@pytest.mark.parametrize("method, reserve", [("dare", 1.0), ("ties", 0.25)])
def test_a_dpo_run_with_online_merging_moves_along_the_sft_delta(tmp_path, tiny_model_dir, method,  # noqa: F811
                                                                 reserve):
    pretrained = save_tiny_model(tmp_path / "pretrained", seed=1)  # what the starting (reference) model came from
    snap = make_snapshot(tmp_path / "snap", "pairwise")
    # alpha 1, nothing dropped by OnDARE: each step is exactly the delta, whatever the gradient; OnTIES adds the
    # delta trimmed to its largest quarter of each tensor
    train = small_train(tmp_path, merge_base=str(pretrained), merge_alpha=1.0, merge_reserve=reserve,
                        merge_method=method)
    result = train_model("dpo", snap, tiny_model_dir, C.PreferenceConfig(train=train), base_model_id="base")
    start, pre, after = (load_file(Path(d) / "model.safetensors") for d in (tiny_model_dir, pretrained,
                                                                              result.model_dir))
    for name in ("model.layers.0.mlp.up_proj.weight", "model.norm.weight"):  # (norms start at 1 in both: delta 0)
        tau = trim(start[name] - pre[name], reserve)
        assert torch.allclose(after[name], start[name] + 2 * tau, atol=1e-5)
    tau = trim(start["model.layers.0.mlp.up_proj.weight"] - pre["model.layers.0.mlp.up_proj.weight"], reserve)
    assert float((tau != 0).float().mean()) == pytest.approx(reserve, abs=0.01)
    with pytest.raises(ValueError, match="not with lora"):
        C.TrainConfig(merge_base="x", lora=C.LoraConfig())
    with pytest.raises(AlignloopError, match="not a model folder"):
        train_model("dpo", snap, tiny_model_dir, C.PreferenceConfig(train=small_train(tmp_path / "b",
                                                                                   merge_base=str(tmp_path))),
                    base_model_id="base")


def test_ppo_takes_the_online_merging_optimizer_too(tmp_path, tiny_model_dir):  # noqa: F811
    from tests.test_trainers_ppo import ppo_config, tiny_reward_model

    pretrained = save_tiny_model(tmp_path / "pretrained", seed=1)
    config = ppo_config(tmp_path / "run", tiny_reward_model(tiny_model_dir, tmp_path / "rm"),
                        train={"max_steps": 1, "merge_base": str(pretrained), "merge_alpha": 1.0,
                               "merge_reserve": 1.0})
    result = train_model("ppo", make_snapshot(tmp_path / "snap", "pairwise"), tiny_model_dir, config,
                         base_model_id="base")
    assert result.run.meta["optimizer_steps"] == 2
    start, pre, after = (load_file(Path(d) / "model.safetensors") for d in (tiny_model_dir, pretrained,
                                                                              result.model_dir))
    name = "model.layers.1.self_attn.q_proj.weight"
    assert torch.allclose(after[name], start[name] + 2 * (start[name] - pre[name]), atol=1e-5)
