"""The online merging optimizers OnDARE and OnTIES: their update rules by hand, and inside training runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.fixtures_trainers import make_snapshot, save_tiny_model, small_train, tiny_model_dir  # noqa: F401
from trainers import config as C
from trainers.merging import OnlineMergingAdamW, dare, ondare, onties, trim
from trainers.run import train_model
from warehouse.errors import AlignloopError


def test_dare_keeps_a_share_and_ondare_merges_the_step_with_the_delta():
    x = torch.ones(10_000)
    kept = dare(x, 0.1, rescale=False, generator=torch.Generator().manual_seed(0))
    assert set(kept.unique().tolist()) == {0.0, 1.0} and 0.08 < kept.mean() < 0.12
    assert dare(x, 0.1, rescale=True, generator=torch.Generator().manual_seed(0)).max() == pytest.approx(10.0)
    assert torch.equal(dare(x, 1.0, rescale=True), x)
    old, delta, tau = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.5]), torch.tensor([2.0, 4.0])
    assert ondare(old, delta, tau, 0.25, 1.0, False).tolist() == [1.0 + 0.75 * 0.5 + 0.5, 2.0 - 0.75 * 0.5 + 1.0]


def test_ties_trims_to_the_largest_share_and_onties_keeps_the_sides_that_agree_in_sign():
    x = torch.tensor([[0.1, -3.0, 0.5], [2.0, -0.2, 0.0]])
    assert trim(x, 0.3).tolist() == [[0.0, -3.0, 0.0], [2.0, 0.0, 0.0]]  # ceil(0.3 * 6) = 2 kept: -3 and 2
    assert trim(x, 0.5).tolist() == [[0.0, -3.0, 0.5], [2.0, 0.0, 0.0]]
    assert torch.equal(trim(x, 1.0), x)
    old = torch.tensor([1.0, 1.0, 1.0, 1.0])
    delta, tau = torch.tensor([0.4, 0.4, -0.4, 0.0]), torch.tensor([1.0, -0.2, -1.0, 3.0])
    # alpha 0.5: a = 0.2 * delta-side, b = 0.5 * tau; agreeing entries add both, opposed ones keep the larger side
    merged = onties(old, delta, tau, 0.5, 1.0)
    assert torch.allclose(merged, torch.tensor([1.0 + 0.2 + 0.5, 1.0 + 0.2, 1.0 - 0.2 - 0.5, 1.0 + 1.5]))
    merged = onties(old, delta, tau, 0.9, 1.0)  # now the delta's -0.09 outweighs the step's 0.04 on entry 2
    assert torch.allclose(merged, torch.tensor([1.0 + 0.04 + 0.9, 1.0 - 0.18, 1.0 - 0.04 - 0.9, 1.0 + 2.7]))
    with pytest.raises(AlignloopError, match="unknown method 'tie'"):
        OnlineMergingAdamW([torch.nn.Parameter(torch.ones(1))], deltas={}, alpha=0.1, reserve=1.0, rescale=False,
                           method="tie")
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(AlignloopError, match="none of the optimizer's parameters is one the SFT delta was read for"):
        OnlineMergingAdamW([torch.nn.Parameter(w.detach().clone())], deltas={id(w): torch.ones(2)}, alpha=0.1,
                           reserve=1.0, rescale=False)  # a copy (as a sharding wrapper makes) has no delta
    with pytest.raises(ValueError, match="merge_method must be dare or ties"):
        C.TrainConfig(merge_method="tie")
    with pytest.raises(ValueError, match="merge_rescale is OnDARE's"):
        C.TrainConfig(merge_method="ties", merge_rescale=True)


def test_ondare_adamw_is_adamw_at_alpha_zero_and_adds_the_delta_by_alpha():
    def step(alpha: float, reserve: float = 1.0, method: str = "dare"):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        opt = OnlineMergingAdamW([w], lr=0.1, deltas={id(w): torch.tensor([1.0, 1.0, -1.0])}, alpha=alpha,
                                 reserve=reserve, rescale=False, method=method)
        (w ** 2).sum().backward()
        opt.step()
        return w.detach()

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    adam = torch.optim.AdamW([w], lr=0.1)
    (w ** 2).sum().backward()
    adam.step()
    assert torch.allclose(step(0.0), w.detach())
    update = w.detach() - torch.tensor([1.0, -2.0, 3.0])
    assert torch.allclose(step(0.5), torch.tensor([1.0, -2.0, 3.0]) + 0.5 * update + 0.5 * torch.tensor([1.0, 1.0, -1.0]))
    assert torch.allclose(step(0.0, method="ties"), w.detach())
    # OnTIES at alpha 0.5, AdamW's step about -0.1 * sign(grad) against the delta's +-1: entry 0 opposes the delta
    # (which is larger, so it alone is added), entries 1 and 2 agree (both added)
    start, tau = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, 1.0, -1.0])
    assert torch.allclose(step(0.5, method="ties"), start + 0.5 * tau + 0.5 * update * torch.tensor([0.0, 1.0, 1.0]))
    # keeping a third: the step keeps its largest entry (2: weight decay adds 0.3e-2), the delta all three (equal)
    assert torch.allclose(step(0.5, reserve=0.3, method="ties"),
                          start + 0.5 * tau + 0.5 * update * torch.tensor([0.0, 0.0, 1.0]))


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
