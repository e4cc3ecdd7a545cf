"""The online merging optimizer OnDARE: its update rule by hand, and inside a training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.fixtures_trainers import make_snapshot, save_tiny_model, small_train, tiny_model_dir  # noqa: F401
from trainers import config as C
from trainers.merging import OnDAREAdamW, dare, ondare
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


def test_ondare_adamw_is_adamw_at_alpha_zero_and_adds_the_delta_by_alpha():
    def step(alpha: float, reserve: float = 1.0):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        opt = OnDAREAdamW([w], lr=0.1, deltas={id(w): torch.tensor([1.0, 1.0, -1.0])}, alpha=alpha,
                          reserve=reserve, rescale=False)
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


def test_a_dpo_run_with_online_merging_moves_along_the_sft_delta(tmp_path, tiny_model_dir):  # noqa: F811
    pretrained = save_tiny_model(tmp_path / "pretrained", seed=1)  # what the starting (reference) model came from
    snap = make_snapshot(tmp_path / "snap", "pairwise")
    # alpha 1, nothing dropped: each step is exactly the delta, whatever the gradient
    train = small_train(tmp_path, merge_base=str(pretrained), merge_alpha=1.0, merge_reserve=1.0)
    result = train_model("dpo", snap, tiny_model_dir, C.PreferenceConfig(train=train), base_model_id="base")
    start, pre, after = (load_file(Path(d) / "model.safetensors") for d in (tiny_model_dir, pretrained,
                                                                              result.model_dir))
    for name in ("model.layers.0.mlp.up_proj.weight", "model.norm.weight"):
        assert torch.allclose(after[name], start[name] + 2 * (start[name] - pre[name]), atol=1e-5)
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
