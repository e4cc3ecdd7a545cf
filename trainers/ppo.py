"""RLHF with PPO (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022).

Each iteration the policy samples one answer to each of ``rollout_prompts`` prompts of the dataset's train split, a
reward model (or a rule verifier: 1 pass, 0 fail; or an LLM judge's rating: direct RLAIF) scores the answers, and
every answer token is rewarded
``-kl_coef * (log pi - log pi_ref)`` with the score added at its last token. Advantages come from a value head on
the policy's last hidden state by GAE (Schulman et al. 2016), whitened over the rollout; ``ppo_epochs`` passes of
clipped PPO updates (Schulman et al. 2017) with a clipped value loss follow. Details as in Huang et al. 2024 ("The
N+ implementation details of RLHF with PPO"): no dropout, logits divided by the sampling temperature, the value of a
token read at the position that predicts it, an optional penalty for answers cut off without an end-of-turn token,
and Ziegler's adaptive KL controller when ``target_kl`` is set.

Two critic-free variants share the loop (``advantage``; methods ``grpo`` and ``rloo``), each sampling
``samples_per_prompt`` answers per prompt and comparing them with each other instead of with a value head:

- **GRPO** (Shao et al. 2024, DeepSeekMath, Eq. 3): an answer's advantage is its score minus its group's mean over
  the group's standard deviation, for each of its tokens; the KL to the reference is a loss term, ``kl_coef`` times
  the k3 estimate ``exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1`` per token (Schulman's unbiased,
  positive estimator), not a reward penalty. Token means over the minibatch (every token weighs the same, as DAPO);
  ``loss_aggregation="sequence"`` averages each answer first, as the paper's Eq. 3.
- **RLOO** (Ahmadian et al. 2024, "Back to Basics", Eq. 5; Kool et al. 2019): an answer's reward is its score minus
  ``kl_coef`` times its summed KL to the reference, and its advantage that reward minus the mean reward of the
  other answers to the same prompt.

Both take the clipped surrogate for their updates (one ``ppo_epochs`` pass is on-policy REINFORCE with that
baseline). A group whose answers all score the same teaches nothing; its share is logged (``zero_std_groups``).
Refinements from DAPO (Yu et al. 2025) and Dr. GRPO (Liu et al. 2025), each off by default:
``dynamic_sampling`` leaves such groups out of the update and samples further prompts until ``rollout_prompts``
groups with signal are in hand (at most ``max_rollouts`` rollouts); ``clip_range_high`` clips the ratio higher above
1 than below; ``loss_aggregation="constant"`` divides the token sum by a constant (answers x ``max_new_tokens``);
``overlong_buffer`` punishes answers that run into the last tokens before ``max_new_tokens`` (any method).
PPO-ptx (Ouyang et al. 2022; ``ptx_coef`` with a ``ptx`` snapshot, any method) adds to each update the likelihood of
a batch of completions to keep (:class:`PtxBatches`).

Online DPO (Guo et al. 2024; ``OnlineDPOConfig``, method ``online_dpo``) shares the loop: each group's best and
worst answer, where they differ, are a preference pair for any pairwise loss of the registry, with log-probabilities
at temperature 1 against the reference's.

The pure functions (:func:`penalised_rewards`, :func:`gae`, :func:`whiten`, :func:`ppo_loss`,
:func:`group_advantages`, :func:`k3_kl`) carry the methods; :func:`train_ppo` runs them and returns the same records
as every other trainer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from alignloop.trainers import config as cfgmod
from alignloop.trainers.loading import check_model_dir, load_model, load_tokenizer, save_model, use_bf16
from alignloop.trainers.records import (
    evaluation_rows,
    metric_rows,
    model_record,
    plot_curves,
    run_id,
    stored_name,
    training_run,
)
from alignloop.trainers.snapshot import Snapshot
from alignloop.trainers.tokenize import Encoder
from alignloop.warehouse.errors import AlignloopError

SAFETY_PANEL = ("safety (Safe RLHF)", ("cost", "cost_limit", "lambda"))
PANELS = (("reward", ("reward", "reward_penalised")), ("KL to reference", ("kl",)),
          ("losses", ("policy_loss", "value_loss", "kl_loss")), ("policy updates", ("clipfrac", "approx_kl")),
          ("groups without signal", ("zero_std_groups",)), SAFETY_PANEL)
"""The curves PNG of a PPO (GRPO, RLOO) run; each draws the curves it logs (PPO has no groups)."""
PAIR_PANELS = (("reward", ("reward",)), ("KL to reference", ("kl",)), ("pairwise loss", ("loss",)),
               ("pairs", ("rewards/margins", "rewards/accuracies", "score_margin")),
               ("groups without signal", ("zero_std_groups",)), SAFETY_PANEL)
"""The curves PNG of an online DPO run."""


# ---- the method, as pure functions of tensors ------------------------------------------------------------------

def penalised_rewards(scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
                      kl_coef: float) -> tuple[Tensor, Tensor]:
    """Per-token rewards ``-kl_coef * (log pi - log pi_ref)``, the score added at each answer's last token, and the
    per-token KL estimate; (B, T) each, zero where ``mask`` is 0. Answers must hold at least one token."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(scores)), last] += scores
    return rewards, kl


def lagrangian_scores(rewards: Tensor, costs: Tensor, lam: float) -> Tensor:
    """Safe RLHF's objective per answer, ``(reward - lambda * cost) / (1 + lambda)``: the Lagrangian of maximising
    reward under a cost bound, scaled so its size does not grow with lambda."""
    return (rewards - lam * costs) / (1 + lam)


def update_lambda(lam: float, mean_cost: float, limit: float, lr: float) -> float:
    """The multiplier after an iteration: projected gradient ascent on the Lagrangian, ``max(0, lambda + lr *
    (mean cost - limit))``."""
    return max(0.0, lam + lr * (mean_cost - limit))


def safe_gae(rewards: Tensor, costs: Tensor, logprobs: Tensor, ref_logprobs: Tensor, values: Tensor, mask: Tensor,
             kl_coef: float, multiplier: float, gamma: float, lam: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Safe RLHF's advantages with two critics (``values[..., 0]`` the reward's, ``[..., 1]`` the cost's): GAE of
    the reward with the KL penalty and GAE of the cost with the KL counted as a cost, combined as
    ``(A_r - multiplier * A_c) / (1 + multiplier)``, so the KL weighs ``kl_coef`` whatever the multiplier. Returns
    the advantages (B, T), both critics' returns (B, T, 2), each answer's combined penalised score (B,) and the
    per-token KL (B, T)."""
    r, kl = penalised_rewards(rewards, logprobs, ref_logprobs, mask, kl_coef)
    c, _ = penalised_rewards(costs, logprobs, ref_logprobs, mask, -kl_coef)
    a_r, ret_r = gae(r, values[..., 0], mask, gamma, lam)
    a_c, ret_c = gae(c, values[..., 1], mask, gamma, lam)
    return (lagrangian_scores(a_r, a_c, multiplier), torch.stack([ret_r, ret_c], -1),
            lagrangian_scores(r.sum(1), c.sum(1), multiplier), kl)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates and returns, (B, T): ``delta_t = r_t + gamma V_{t+1} - V_t``,
    ``A_t = delta_t + gamma lam A_{t+1}``, with V past an answer's end taken as 0; returns ``A + V``."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def sequence_mean(x: Tensor, mask: Tensor) -> Tensor:
    """The mean over each row's unmasked entries, then over rows: every answer weighs the same, whatever its length
    (GRPO's Eq. 3), where :func:`masked_mean` weighs every token the same."""
    return ((x * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def constant_mean(x: Tensor, mask: Tensor) -> Tensor:
    """The sum over the unmasked entries divided by the mask's size (rows x ``max_new_tokens``), a constant: each
    token weighs the same whatever the lengths in its minibatch (Dr. GRPO, Liu et al. 2025)."""
    return (x * mask).sum() / mask.numel()


AGGREGATIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"token": masked_mean, "sequence": sequence_mean,
                                                               "constant": constant_mean}
"""How a per-token loss becomes a minibatch's (``loss_aggregation``)."""


def whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / std`` over the unmasked entries (zero elsewhere)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def clipped_surrogate(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                      clip_range: float, aggregation: str = "token",
                      clip_high: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate ``max(-A r, -A clip(r, 1 - eps, 1 + eps_high))`` with ``r = exp(log pi - log pi_old)``
    (``eps_high`` is ``clip_high``, else ``clip_range``: DAPO's clip-higher when larger), reduced over ``mask`` by
    ``aggregation`` (:data:`AGGREGATIONS`); with detached statistics (the loss, clip fraction, approximate KL to the
    rollout policy)."""
    high = clip_range if clip_high is None else clip_high
    ratio = torch.exp(logprobs - old_logprobs)
    pg = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + high))
    policy_loss = AGGREGATIONS[aggregation](pg, mask)
    clipped = (ratio < 1 - clip_range) | (ratio > 1 + high)
    stats = {"policy_loss": policy_loss, "clipfrac": masked_mean(clipped.float(), mask),
             "approx_kl": masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask)}
    return policy_loss, {k: v.detach() for k, v in stats.items()}


def ppo_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, values: Tensor, old_values: Tensor,
             returns: Tensor, mask: Tensor, clip_range: float, value_clip: float,
             vf_coef: float, aggregation: str = "token",
             clip_high: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`clipped_surrogate` plus ``vf_coef`` times the clipped value loss
    ``0.5 max((V - R)^2, (V_old + clip(V - V_old) - R)^2)`` (token mean over ``mask``; with two critics, (B, T, 2)
    values and returns, the sum of theirs). Returns the loss and detached statistics (policy and value loss, clip
    fraction, approximate KL to the rollout policy)."""
    policy_loss, stats = clipped_surrogate(logprobs, old_logprobs, advantages, mask, clip_range, aggregation,
                                           clip_high)
    clipped_values = old_values + (values - old_values).clamp(-value_clip, value_clip)
    vf = 0.5 * torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)
    value_loss = masked_mean(vf.sum(-1) if vf.dim() == 3 else vf, mask)
    return policy_loss + vf_coef * value_loss, {**stats, "value_loss": value_loss.detach()}


def group_advantages(rewards: Tensor, k: int, kind: str, eps: float = 1e-4, scale: bool = True) -> Tensor:
    """One advantage per answer, (B,), for rows grouped by prompt in consecutive blocks of ``k``: ``grpo``
    ``(r - mean) / (std + eps)`` over the group (std with Bessel's correction, as DeepSeekMath's code; without
    ``scale`` only ``r - mean``, as Dr. GRPO, Liu et al. 2025, which finds the division weights too-easy and too-hard
    prompts up), ``rloo`` ``r_i - mean_{j != i} r_j``."""
    g = rewards.view(-1, k)
    if kind == "grpo":
        centred = g - g.mean(1, keepdim=True)
        return (centred / (g.std(1, keepdim=True) + eps) if scale else centred).flatten()
    if kind == "rloo":
        return (g - (g.sum(1, keepdim=True) - g) / (k - 1)).flatten()
    raise ValueError(f"group advantages are grpo or rloo, not {kind!r}")


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token ``exp(d) - d - 1`` with ``d = log pi_ref - log pi``: an unbiased, never negative estimate of
    KL(pi || pi_ref) under samples of pi (GRPO's KL term)."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1


def overlong_punishment(lengths: Tensor, max_len: int, buffer: int, penalty: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, Eq. 13), scaled by ``penalty``: 0 up to ``max_len - buffer``
    tokens, then ``-penalty * (length - (max_len - buffer)) / buffer``, reaching ``-penalty`` at ``max_len`` (the
    longest answer the sampler returns)."""
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float)
    over = (lengths.float() - (max_len - buffer)).clamp(min=0)
    return -penalty * (over / buffer).clamp(max=1.0)


def adapt_kl_coef(kl_coef: float, kl: float, target: float, n: int, horizon: int = 10_000) -> float:
    """Ziegler et al.'s proportional controller: ``kl_coef * (1 + clip(kl / target - 1, -0.2, 0.2) * n / horizon)``
    after ``n`` samples whose mean KL was ``kl``."""
    return kl_coef * (1 + max(-0.2, min(0.2, kl / target - 1)) * n / horizon)


# ---- rollouts ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """The learning rate of each optimizer step: linear warm-up over ``warmup`` steps, then linear decay to 0 at
    ``total``, by the step's place in the plan (``per_iteration`` steps an iteration). An iteration that takes fewer
    steps than planned (dynamic sampling's groups without signal, online DPO's flat groups) still moves the decay a
    whole iteration on, so every run ends its decay where its plan does."""

    lr: float
    per_iteration: int
    total: int
    warmup: int

    def __call__(self, iteration: int, step: int) -> float:
        s = iteration * self.per_iteration + step
        return (self.lr * min((s + 1) / max(self.warmup, 1), 1.0)
                * max(0.0, 1 - max(0, s - self.warmup) / max(1, self.total - self.warmup)))


@dataclass(frozen=True)
class PtxBatches:
    """PPO-ptx's data: the encoded completions of an sft snapshot's train rows, ``size`` a batch, in a seeded order
    of the rows that is drawn again for each pass over them. The batch of the run's ``position``-th update step
    depends on nothing else, so a resumed run takes the same batches."""

    features: list[Any]
    size: int
    seed: int
    pad_id: int

    def rows(self, position: int) -> list[int]:
        n = len(self.features)
        orders: dict[int, np.ndarray] = {}  # each pass's order, drawn once
        out = []
        for i in range(position * self.size, (position + 1) * self.size):
            cycle, k = divmod(i, n)
            if cycle not in orders:
                orders[cycle] = np.random.default_rng([self.seed, cycle]).permutation(n)
            out.append(int(orders[cycle][k]))
        return out

    def loss(self, model: Any, position: int, device: torch.device) -> Tensor:
        """The token-mean negative log-likelihood of the completions of update ``position``'s batch."""
        from alignloop.trainers.collators import SeqCollator
        from alignloop.trainers.objectives import SFTObjective

        batch = SeqCollator(self.pad_id)([self.features[r] for r in self.rows(position)])
        nll, _ = SFTObjective()(model, {k: v.to(device) for k, v in batch.items()})
        return nll


def check_ptx_kind(name: str, kind: str) -> None:
    """Refuse a ptx dataset of another kind than sft, in one line."""
    if kind != "sft":
        raise AlignloopError(f"ptx dataset {name!r} is a {kind} snapshot; PPO-ptx trains on the completions of an sft "
                             "one (prompt -> completion)")


def load_ptx(ptx: Snapshot | str | Path, tokenizer: Any, config: cfgmod.PPOConfig) -> tuple[PtxBatches, Encoder,
                                                                                            Snapshot]:
    """PPO-ptx's batches of an sft snapshot (its train split), encoded as SFT encodes them; refuses another kind
    or an empty one."""
    from alignloop.trainers.snapshot import load_snapshot_dir
    from alignloop.trainers.tokenize import encode_sft

    snap = ptx if isinstance(ptx, Snapshot) else load_snapshot_dir(ptx)
    check_ptx_kind(snap.name, snap.kind)
    if snap.train.num_rows == 0:
        raise AlignloopError(f"ptx dataset {snap.name!r} is empty (train split has 0 rows)")
    enc = Encoder(tokenizer, config.train.max_length, config.train.max_prompt_length)
    features = encode_sft(enc, snap.train.to_pylist())
    size = config.ptx_batch_size or config.train.batch_size
    return PtxBatches(features, size, config.train.seed, tokenizer.pad_token_id), enc, snap


@dataclass
class Rollout:
    """Sampled answers and what PPO needs of them, (B, ·) tensors; ``tokens`` is prompt (left-padded) + answer."""

    tokens: Tensor
    attention: Tensor
    prompt_len: int
    mask: Tensor
    """(B, T): 1 on answer tokens up to and including the end-of-turn token."""
    logprobs: Tensor | None
    """The sampling policy's; None for online DPO, whose loss reads the policy's from its update's own pass."""
    values: Tensor
    ref_logprobs: Tensor
    scores: Tensor
    ended: Tensor
    """(B,): whether the answer has its end-of-turn token (not cut at ``max_new_tokens``)."""
    rewards: Tensor | None = None
    """Safe RLHF: the reward alone (``scores`` combines it with the cost)."""
    costs: Tensor | None = None


@dataclass
class Samples:
    """Sampled answers and their scores before any log-probs: (B, ·) tensors; ``tokens`` is prompt (left-padded to
    ``prompt_len``) + answer (``max_new_tokens`` wide)."""

    tokens: Tensor
    attention: Tensor
    prompt_len: int
    scores: Tensor
    """What the update learns from: the reward, or with a cost model (Safe RLHF) reward and cost combined."""
    ended: Tensor
    rewards: Tensor | None = None
    """With a cost model: the reward alone."""
    costs: Tensor | None = None
    """With a cost model: each answer's cost (its negated score)."""

    def select(self, rows: Tensor) -> Samples:
        return Samples(self.tokens[rows], self.attention[rows], self.prompt_len, self.scores[rows], self.ended[rows],
                       *(None if x is None else x[rows] for x in (self.rewards, self.costs)))

    @staticmethod
    def concat(parts: list[Samples], pad_id: int) -> Samples:
        """Rows of several rollouts in one, prompts left-padded to the widest (positions follow the attention)."""
        width = max(p.prompt_len for p in parts)

        def pad(p: Samples, x: Tensor, value: int) -> Tensor:
            return F.pad(x, (width - p.prompt_len, 0), value=value)

        def cat(name: str) -> Tensor | None:
            got = [getattr(p, name) for p in parts]
            return None if any(x is None for x in got) else torch.cat(got)

        return Samples(torch.cat([pad(p, p.tokens, pad_id) for p in parts]),
                       torch.cat([pad(p, p.attention, 0) for p in parts]), width,
                       cat("scores"), cat("ended"), cat("rewards"), cat("costs"))


def signal_groups(scores: Tensor, k: int) -> Tensor:
    """(G,) whether each group of ``k`` consecutive answers holds differing scores (a group that scored alike gives
    GRPO and RLOO no signal)."""
    g = scores.view(-1, k)
    return (g != g[:, :1]).any(1)


def best_worst_pairs(scores: Tensor, k: int) -> Tensor:
    """Row indices ``[best, worst, best, worst, ...]``, one pair per group of ``k`` consecutive answers whose scores
    differ: its highest- and its lowest-scored answer (the first of equals). Online DPO's pairs."""
    g = scores.view(-1, k)
    keep = signal_groups(scores, k).nonzero().squeeze(1)
    return torch.stack([g.argmax(1)[keep] + keep * k, g.argmin(1)[keep] + keep * k], 1).flatten()


def _left_pad(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    att = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, att


def answer_mask(answers: Tensor, eos_id: int) -> tuple[Tensor, Tensor]:
    """(mask, ended): 1 up to and including each row's first ``eos_id``; whether the row has one."""
    is_eos = answers == eos_id
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()  # eos tokens strictly before t
    return (before == 0).long(), is_eos.any(dim=1)


def _positions(attention: Tensor) -> Tensor:
    return (attention.cumsum(-1) - 1).clamp(min=0)


class ValueHead(torch.nn.Module):
    """The critic on the policy's last hidden states: (B, T) values, or with ``heads=2`` (Safe RLHF: a reward and a
    cost critic) (B, T, 2)."""

    def __init__(self, hidden: int, heads: int = 1) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden, heads)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        out = self.linear(hidden.float())
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def forward_answers(model: Any, tokens: Tensor, attention: Tensor, prompt_len: int, temperature: float,
                    value_head: ValueHead | None = None,
                    entropy: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Log-probabilities of the answer tokens (logits over ``temperature``), their values (the value head on the
    hidden state that predicts each token) and, with ``entropy``, the entropy per answer token; (B, T) each. Only
    the answer positions' logits are computed (a vocabulary-wide row per token is most of the memory)."""
    out = model(input_ids=tokens, attention_mask=attention, position_ids=_positions(attention),
                output_hidden_states=value_head is not None, logits_to_keep=tokens.shape[1] - prompt_len + 1)
    logits = out.logits[:, :-1].float() / temperature
    logp_all = F.log_softmax(logits, dim=-1)
    logprobs = logp_all.gather(-1, tokens[:, prompt_len:, None]).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1) if entropy else None
    values = value_head(out.hidden_states[-1][:, prompt_len - 1:-1]) if value_head is not None else None
    return logprobs, values, ent


def score_rollout(model: Any, tokens: Tensor, attention: Tensor, prompt_len: int, temperature: float,
                  value_head: ValueHead | None, chunk: int) -> tuple[Tensor, Tensor | None]:
    """:func:`forward_answers` without gradients or entropy over ``chunk`` rows at a time: a rollout's log-probs
    (and values) in the memory of one update minibatch rather than of the whole rollout."""
    logprobs, values = [], []
    with torch.no_grad():
        for i in range(0, len(tokens), chunk):
            lp, v, _ = forward_answers(model, tokens[i:i + chunk], attention[i:i + chunk], prompt_len, temperature,
                                       value_head, entropy=False)
            logprobs.append(lp.float())
            values.append(v)
    return torch.cat(logprobs), (torch.cat(values).float() if value_head is not None else None)


def _reward(rating: Any) -> float:
    """A rating as a reward: a reward model's score or a verifier's 1 / 0 as it is, an LLM judge's (d-RLAIF)
    mapped from its scale to [-1, 1]; 0 where there is none."""
    if rating.score is None:
        return 0.0
    if rating.source != "ai":
        return float(rating.score)
    return 2 * (rating.score - rating.scale_min) / (rating.scale_max - rating.scale_min) - 1


# ---- the run -------------------------------------------------------------------------------------------------------

def _prompts(snap: Snapshot, split: str) -> list[dict[str, Any]]:
    """One row per prompt of the split (first occurrence), in snapshot order."""
    seen: dict[str, dict[str, Any]] = {}
    for r in snap.split(split).select(["prompt_id", "prompt", "prompt_text"]).to_pylist():
        seen.setdefault(r["prompt_id"], r)
    return list(seen.values())


@dataclass
class _Models:
    policy: Any
    value_head: ValueHead
    reference: Any
    judge: Any
    tokenizer: Any
    device: torch.device
    bf16: bool
    prompt_checks: Mapping[str, Mapping[str, Any]]
    """What a verifier reads of each prompt (reference, tags, topic), by prompt id."""
    pair_loss: Any = None
    """Online DPO's pairwise loss (:class:`trainers.objectives.PolicyLoss`)."""
    ptx: PtxBatches | None = None
    """PPO-ptx's batches."""
    cost_judge: Any = None
    """Safe RLHF's cost model (a reward model of harmlessness; the cost is its negated score)."""
    lam: float = 0.0
    """Safe RLHF's Lagrange multiplier of the moment."""

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def answer(self, prompts: list[dict[str, Any]], enc: Encoder, config: cfgmod.PPOConfig, greedy: bool = False,
               model: Any = None) -> tuple[Tensor, Tensor, int, list[str], Tensor]:
        """Sample (or greedily decode) one answer per prompt: tokens, attention, prompt width, answer texts and
        whether each answer ended (has its end-of-turn token)."""
        tok = self.tokenizer
        ids, att = _left_pad([enc.prompt_ids(p["prompt"], p["prompt_text"]) for p in prompts], tok.pad_token_id,
                             self.device)
        sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": config.temperature,
                                                         "top_k": 0, "top_p": 1.0}
        with torch.no_grad(), self.autocast():
            seqs = (model or self.policy).generate(input_ids=ids, attention_mask=att,
                                                    max_new_tokens=config.max_new_tokens, pad_token_id=tok.pad_token_id,
                                                    eos_token_id=tok.eos_token_id, **sampling)
        answers = seqs[:, ids.shape[1]:]
        if answers.shape[1] < config.max_new_tokens:  # every row ended early: pad to a fixed width
            answers = F.pad(answers, (0, config.max_new_tokens - answers.shape[1]), value=tok.pad_token_id)
        mask, ended = answer_mask(answers, tok.eos_token_id)
        answers = torch.where(mask.bool(), answers, torch.full_like(answers, tok.pad_token_id))
        texts = tok.batch_decode(answers, skip_special_tokens=True)
        return torch.cat([ids, answers], 1), torch.cat([att, mask], 1), ids.shape[1], texts, ended

    def score(self, prompts: list[dict[str, Any]], texts: list[str], judge: Any = None) -> Tensor:
        """The reward model's score of each answer (0 where it gives none: a PRM that fits no step), the
        verifier's 1 / 0, or the LLM judge's rating in [-1, 1] (:func:`_reward`); by ``judge`` if given (the cost
        model)."""
        from alignloop.pipelines.judges.config import ResponseItem

        items = [ResponseItem(f"a{i}", p["prompt_id"], p["prompt_text"], t, messages=p["prompt"],
                              **self.prompt_checks.get(p["prompt_id"], {}))
                 for i, (p, t) in enumerate(zip(prompts, texts))]
        return torch.tensor([_reward(r) for r in (judge or self.judge).judge_items(items, "ppo")], device=self.device)

    def cost(self, prompts: list[dict[str, Any]], texts: list[str]) -> Tensor:
        """Safe RLHF: each answer's cost, the cost model's score negated (it scores the safer answer higher)."""
        return -self.score(prompts, texts, self.cost_judge)

    def sample(self, prompts: list[dict[str, Any]], enc: Encoder, config: cfgmod.PPOConfig) -> Samples:
        """One answer to each prompt, scored (less ``missing_eos_penalty`` for answers cut off and the overlong
        punishment)."""
        tokens, attention, width, texts, ended = self.answer(prompts, enc, config)
        scores = self.score(prompts, texts)
        if config.missing_eos_penalty is not None:
            scores = scores - config.missing_eos_penalty * (~ended).float()
        if config.overlong_buffer:
            scores = scores + overlong_punishment(attention[:, width:].sum(1), config.max_new_tokens,
                                                  config.overlong_buffer, config.overlong_penalty)
        if self.cost_judge is None:
            return Samples(tokens, attention, width, scores, ended)
        costs = self.cost(prompts, texts)
        return Samples(tokens, attention, width, lagrangian_scores(scores, costs, self.lam), ended, scores, costs)

    def rollout(self, s: Samples, config: cfgmod.PPOConfig) -> Rollout:
        """The samples' log-probs under the reference and (but for online DPO) the policy, and the critic's values
        for PPO."""
        critic = self.value_head if config.advantage == "gae" else None
        chunk = config.train.batch_size  # the updates' minibatch: no more rows through the model at once
        temperature = config.logprob_temperature
        logprobs, values = None, None
        with self.autocast():
            if not config.pairwise_updates:  # the clipped ratio's denominator
                logprobs, values = score_rollout(self.policy, s.tokens, s.attention, s.prompt_len, temperature,
                                                 critic, chunk)
            ref_logprobs, _ = score_rollout(self.reference, s.tokens, s.attention, s.prompt_len, temperature, None,
                                            chunk)
        values = torch.zeros_like(ref_logprobs) if values is None else values
        return Rollout(s.tokens, s.attention, s.prompt_len, s.attention[:, s.prompt_len:].float(), logprobs, values,
                       ref_logprobs, s.scores, s.ended, s.rewards, s.costs)


def _dynamic_sampling(models: _Models, first: Samples, chosen: list[int], train_prompts: list[dict[str, Any]],
                      enc: Encoder, config: cfgmod.PPOConfig, iteration: int) -> tuple[Samples, Samples, int]:
    """DAPO's dynamic sampling: the groups of ``first`` whose answers scored differently, then of further rollouts of
    ``rollout_prompts`` other train prompts (a seeded draw per iteration, so a resumed run draws the same) until
    ``rollout_prompts`` such groups are in hand or ``max_rollouts`` rollouts ran. Returns the groups kept (at most
    ``rollout_prompts``), every answer sampled (for the iteration's reward figures) and the rollouts run."""
    k, want = config.samples_per_prompt, config.rollout_prompts
    pad_id = models.tokenizer.pad_token_id
    rng = np.random.default_rng([config.train.seed, iteration])
    taken = set(chosen)
    others = [i for i in rng.permutation(len(train_prompts)).tolist() if i not in taken]
    parts, kept, rollouts, s = [first], [], 1, first
    while True:
        rows = signal_groups(s.scores, k).repeat_interleave(k).nonzero().squeeze(1)
        kept.append(s.select(rows))
        have = sum(len(p.scores) for p in kept) // k
        if have >= want or rollouts >= config.max_rollouts:
            break
        if len(others) < want:  # fewer untried prompts than a rollout: draw again from all of them
            others += rng.permutation(len(train_prompts)).tolist()
        batch, others = others[:want], others[want:]
        s = models.sample([train_prompts[i] for i in batch for _ in range(k)], enc, config)
        parts.append(s)
        rollouts += 1
    use = Samples.concat(kept, pad_id)
    return use.select(torch.arange(min(len(use.scores), want * k))), Samples.concat(parts, pad_id), rollouts


def _reward_judge(config: cfgmod.PPOConfig, method: str, prompts: list[dict[str, Any]],
                  checks: Mapping[str, Mapping[str, Any]], judge_api_key: str | None = None) -> Callable[..., Any]:
    """What scores the answers, checked before any model loads (a verifier by name, a reward model from its
    config, an LLM judge's folder); called with the reference's folder and model, the live policy and its tokenizer,
    it returns the judge (loading the reward model, or the LLM judge unless it is the reference: then the reference
    model judges, no second copy; or the policy itself, ``judge_model='policy'``)."""
    cfgmod.check_one_reward(method, config.reward_model, config.verifier, config.judge_model)
    if config.judge_model == cfgmod.LIVE_JUDGE:
        return partial(_live_judge, config)
    if config.judge_base_url:
        return partial(_endpoint_judge, config, judge_api_key)
    if config.judge_model:
        return partial(_llm_judge, config, _judge_folder(config.judge_model))
    if config.verifier:
        from alignloop.pipelines.judges.run import VerifierJudge
        from alignloop.pipelines.verifiers import get_verifier

        verifier = get_verifier(config.verifier)
        if verifier.needs_reference and not any((checks.get(p["prompt_id"]) or {}).get("reference")
                                                for p in prompts):
            raise AlignloopError(f"verifier {config.verifier} compares answers with the prompts' reference answers; "
                                 f"none of the {len(prompts)} train prompts has one in the warehouse")
        return lambda *_: VerifierJudge(verifier)
    from alignloop.pipelines.judges.reward_model import RewardModelJudge, check_reward_model

    check_reward_model(config.reward_model)  # from its config
    return lambda *_: RewardModelJudge.load(str(config.reward_model))


def _judge_folder(spec: str) -> Path:
    """The LLM judge's model folder: ``default`` (the embedded model) or a folder, refused in one line if absent."""
    if spec == "default":
        from alignloop.pipelines.models import resolve_model

        return resolve_model(spec)
    return check_model_dir(spec)


def _rating_judge(config: cfgmod.PPOConfig, backend: Any) -> Any:
    """Direct RLAIF's judge on a backend: the rating judge on the expected digit of its next-token probabilities,
    rating the config's aspect by its principles."""
    from alignloop.pipelines.judges.config import JudgeConfig
    from alignloop.pipelines.judges.pointwise import RatingJudge

    principles = {"principles": config.judge_principles} if config.judge_principles else {}
    return RatingJudge(backend, JudgeConfig(mode="logprobs", aspects=(config.judge_aspect,), **principles))


def _live_judge(config: cfgmod.PPOConfig, reference_path: Path, reference: Any, policy: Any, tokenizer: Any) -> Any:
    """Online self-rewarding: the policy being trained rates its own answers (with its weights of the moment, under
    no gradient), so the judge changes as the policy learns; no model is loaded for it."""
    from alignloop.pipelines.backends.transformers_backend import TransformersBackend

    return _rating_judge(config, TransformersBackend(policy, tokenizer, cfgmod.LIVE_JUDGE))


def _endpoint_judge(config: cfgmod.PPOConfig, api_key: str | None, *_: Any) -> Any:
    """An LLM judge served at an OpenAI-compatible endpoint (its key ``api_key``, else ``$OPENAI_API_KEY``), asked
    once before training whether it returns the log-probabilities direct RLAIF's reward is made of (an endpoint
    without them would leave every reward 0)."""
    import warnings

    from alignloop.pipelines.backends import make_backend
    from alignloop.pipelines.judges.pointwise import DIGITS

    model = config.judge_model
    backend = make_backend("openai", model, base_url=config.judge_base_url, api_key=api_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = backend.next_token_logprobs([[{"role": "user", "content": "Reply with one digit from 0 to 9."}]],
                                            list(DIGITS))
    if not probe[0].available:
        raise AlignloopError(f"judge {model!r} at {backend.shown_url} returned no log-probabilities; direct RLAIF's "
                             "reward is the expected digit under them: serve the judge with an engine that returns "
                             "them (vLLM's or llama.cpp's server)")
    return _rating_judge(config, backend)


def _llm_judge(config: cfgmod.PPOConfig, folder: Path, reference_path: Path, reference: Any, *_: Any) -> Any:
    """An LLM judge from its folder. A judge that is the reference's folder (d-RLAIF's usual set-up: the model the
    policy started from) judges with the loaded reference model (frozen, like a judge), not a copy of it."""
    from alignloop.pipelines.backends import make_backend
    from alignloop.pipelines.backends.transformers_backend import TransformersBackend

    if folder.resolve() == reference_path.resolve():
        return _rating_judge(config, TransformersBackend(reference, load_tokenizer(folder), str(folder)))
    return _rating_judge(config, make_backend("transformers", str(folder)))


def _iterations(config: cfgmod.PPOConfig, n_prompts: int) -> int:
    t = config.train
    return t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.epochs * n_prompts / config.rollout_prompts))


def _batches(n_prompts: int, size: int, iterations: int, seed: int) -> list[list[int]]:
    """Prompt indices of each iteration: passes over a seeded shuffle, without repeating a prompt in a rollout
    unless the split is smaller than one."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    out = []
    for _ in range(iterations):
        while len(order) < size:
            order += rng.permutation(n_prompts).tolist()
        out.append(order[:size])
        order = order[size:]
    return out


def _checkpoint(out_dir: Path) -> Path:
    return out_dir / "checkpoints" / "ppo-state.pt"


def train_ppo(snap: Snapshot, base: Path, config: cfgmod.PPOConfig, *, base_model_id: str,
              reference_model: str | Path | None, reference_model_id: str | None, round_id: str | None,
              progress: Callable[[str, int, int, dict[str, float]], None] | None,
              finished: Callable[[Path, str], Any], record: Callable[..., Any],
              prompt_checks: Mapping[str, Mapping[str, Any]] | None = None,
              ptx: Snapshot | str | Path | None = None, judge_api_key: str | None = None) -> Any:
    """Run PPO (GRPO, RLOO, online DPO) from ``base`` on the snapshot's train prompts; held-out: the reward of greedy
    answers to its test prompts, the trained policy's against the reference's. ``finished``/``record`` are the
    trainer's run-folder helpers (a finished run comes back as stored; a killed one resumes from its last
    checkpoint); ``prompt_checks`` what a verifier reads of each prompt (reference, tags, topic), by prompt id;
    ``ptx`` PPO-ptx's sft snapshot (with ``ptx_coef``)."""
    from transformers import set_seed

    from alignloop.trainers.run import TrainResult

    t = config.train
    method = config.method
    train_prompts, test_prompts = _prompts(snap, "train"), _prompts(snap, "test")
    prompt_checks = prompt_checks or {}
    # checked before any model loads
    load_judge = _reward_judge(config, method, train_prompts, prompt_checks, judge_api_key)
    if config.cost_model:
        from alignloop.pipelines.judges.reward_model import check_reward_model

        check_reward_model(config.cost_model)
    if bool(config.ptx_coef) != (ptx is not None):
        raise AlignloopError(f"ptx_coef {config.ptx_coef} needs a ptx dataset (--ptx-dataset NAME: an sft snapshot)"
                             if config.ptx_coef else "a ptx dataset was given but ptx_coef is 0: set ptx_coef "
                             "(--ptx-coef) to mix its likelihood into the updates")
    out_dir = Path(t.output_dir)
    cfg_dict = cfgmod.recorded(config)
    identity = {"method": method, "dataset": snap.content_hash, "base_model": base_model_id}
    inputs = snap.content_hash
    if config.verifier:  # what it reads of the prompts (reference answers, ...) is an input: changed, another run
        from alignloop.warehouse.ids import content_id

        identity["prompt_checks"] = content_id("prompt_checks", {
            p["prompt_id"]: prompt_checks[p["prompt_id"]] for p in train_prompts + test_prompts
            if p["prompt_id"] in prompt_checks})
        inputs += ":" + identity["prompt_checks"]
    tokenizer = load_tokenizer(base)
    ptx_batches, ptx_enc, ptx_meta = None, None, {}
    if ptx is not None:  # its rows are an input: another snapshot, another run
        ptx_batches, ptx_enc, ptx_snap = load_ptx(ptx, tokenizer, config)
        identity["ptx"] = ptx_snap.content_hash
        inputs += ":ptx:" + ptx_snap.content_hash
        ptx_meta = {"ptx": {"dataset": ptx_snap.name, "dataset_id": ptx_snap.dataset_id,
                            "content_hash": ptx_snap.content_hash, "rows": len(ptx_batches.features)}}
    rid = run_id(method, cfg_dict, inputs, base_model_id)
    resumed = cfgmod.check_resume(out_dir, config, identity)
    if resumed and (done := finished(out_dir, rid)) is not None:
        return done
    set_seed(t.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    policy = load_model(base, "causal", pad_token_id=tokenizer.pad_token_id, lora=t.lora,
                        gradient_checkpointing=t.gradient_checkpointing, freeze_layers=t.freeze_layers).to(device)
    ref_path = check_model_dir(reference_model) if reference_model else base
    reference = load_model(ref_path, "causal").to(device).eval().requires_grad_(False)
    critics = 2 if config.cost_model and config.advantage == "gae" else 1  # Safe RLHF: a reward and a cost critic
    models = _Models(policy.eval(), ValueHead(policy.config.hidden_size, critics).to(device), reference,
                     load_judge(ref_path, reference, policy, tokenizer), tokenizer, device, use_bf16(t), prompt_checks,
                     ptx=ptx_batches)
    if config.pairwise_updates:
        from alignloop.trainers.losses import get_loss
        from alignloop.trainers.objectives import PolicyLoss

        models.pair_loss = PolicyLoss(get_loss(config.loss), config.beta, dict(config.loss_params))
    if config.cost_model:  # Safe RLHF
        from alignloop.pipelines.judges.reward_model import RewardModelJudge

        models.cost_judge, models.lam = RewardModelJudge.load(str(config.cost_model)), config.lambda_init
    for judge in (models.judge, models.cost_judge):
        if hasattr(judge, "scorer"):  # a reward model scores on the policy's device
            judge.scorer.model.to(device)
    critic = config.advantage == "gae"  # GRPO and RLOO compare answers to one prompt instead
    params = [p for p in policy.parameters() if p.requires_grad] + (list(models.value_head.parameters()) if critic
                                                                    else [])
    if t.merge_base:  # online merging: each step merged with the SFT delta (the value head has none)
        from alignloop.trainers.merging import OnlineMergingAdamW, optimizer_kwargs

        optimizer: torch.optim.Optimizer = OnlineMergingAdamW(params, lr=t.lr, weight_decay=t.weight_decay, eps=1e-5,
                                                              **optimizer_kwargs(t, policy, ref_path))
    else:
        optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, eps=1e-5)
    iterations = _iterations(config, len(train_prompts))
    # answers, or pairs, an iteration
    units = config.rollout_prompts * (1 if config.pairwise_updates else config.samples_per_prompt)
    steps_per_iteration = config.ppo_epochs * math.ceil(units / _minibatch(config))
    total_steps = iterations * steps_per_iteration
    schedule = Schedule(t.lr, steps_per_iteration, total_steps, int(t.warmup_ratio * total_steps))
    plan = _batches(len(train_prompts), config.rollout_prompts, iterations, t.seed)
    kl_coef, start, logged, cost_limit = config.kl_coef, 0, [], config.cost_limit
    ckpt = _checkpoint(out_dir)
    if resumed and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        policy.load_state_dict(state["policy"])
        models.value_head.load_state_dict(state["value_head"])
        optimizer.load_state_dict(state["optimizer"])
        if models.pair_loss is not None:  # its running state (beta-DPO's m0, ...)
            models.pair_loss.load_state_dict(state.get("pair_loss", {}))
        kl_coef, start, logged = state["kl_coef"], state["iteration"], state["logged"]
        models.lam, cost_limit = state.get("lambda", models.lam), state.get("cost_limit", cost_limit)
        torch.set_rng_state(state["rng"])
    enc = Encoder(tokenizer, t.max_length, t.max_prompt_length)
    started = time.time()
    for it in range(start, iterations):
        torch.manual_seed(t.seed * 100_003 + it)  # each iteration's samples depend on the seed and its number only
        use, logs = _draw(models, plan[it], train_prompts, enc, config, it)
        if models.cost_judge is not None:  # Safe RLHF: the bound (by default the start's cost), then the multiplier
            cost_limit = logs["cost"] if cost_limit is None else cost_limit
            logs["cost_limit"] = cost_limit
            models.lam = update_lambda(models.lam, logs["cost"], cost_limit, config.lambda_lr)
        if not config.pairwise_updates:  # online DPO's KL strength is its loss's beta
            logs["kl_coef"] = kl_coef
        if len(use.scores):  # dynamic sampling may find no group with signal: nothing to learn from then
            logs |= _learn(models, models.rollout(use, config), config, optimizer, schedule, params, it, kl_coef)
            if config.target_kl is not None:
                kl_coef = adapt_kl_coef(kl_coef, logs["kl"], config.target_kl, len(use.scores))
        logged += [(it + 1, name, v) for name, v in logs.items()]
        if progress:
            progress("train", it + 1, iterations, {name: logs[name] for name in ("loss", "reward") if name in logs})
        if (it + 1) % t.save_steps == 0 and it + 1 < iterations:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"policy": policy.state_dict(), "value_head": models.value_head.state_dict(),
                        "optimizer": optimizer.state_dict(), "kl_coef": kl_coef, "iteration": it + 1,
                        "pair_loss": models.pair_loss.state_dict() if models.pair_loss is not None else {},
                        "lambda": models.lam, "cost_limit": cost_limit,
                        "logged": logged, "rng": torch.get_rng_state()}, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
    seconds = time.time() - started
    policy.config.alignloop_input = {"max_length": t.max_length, "max_prompt_length": t.max_prompt_length}
    model_dir = save_model(policy, tokenizer, out_dir / "model")
    evals = _heldout(models, test_prompts, enc, config, progress) if t.eval and test_prompts else {}
    meta = {"base_model": stored_name(base), "train_seconds": round(seconds, 2), "steps": iterations,
            "optimizer_steps": int(sum(v for _, name, v in logged if name == "updates")),
            "resumed": start > 0, "bf16": models.bf16, "eval": evals, "reward": config.reward,
            "truncation": {"train": enc.counts.as_dict(), **({"ptx": ptx_enc.counts.as_dict()} if ptx_enc else {})},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **ptx_meta,
            **({"safe_rlhf": {"cost_model": config.cost_model, "cost_limit": cost_limit, "lambda": models.lam}}
               if models.cost_judge is not None else {})}
    model_rec = model_record(str(model_dir), "policy", base_model_id, rid,
                             {"method": method, "dataset": snap.dataset_id or snap.name})
    run = training_run(rid, method, cfg_dict, dataset_id=snap.dataset_id, base_model_id=base_model_id,
                       reference_model_id=reference_model_id or base_model_id, output_model_id=model_rec.id,
                       round_id=round_id, status="finished", meta=meta)
    plot = plot_curves(logged, out_dir / "curves.png", f"{method} on {snap.name} ({rid[:8]})",
                       PAIR_PANELS if config.pairwise_updates else PANELS)
    result = TrainResult(run, metric_rows(rid, logged), model_rec,
                         evaluation_rows(model_rec.id, evals, round_id, {"run": rid, "dataset": snap.content_hash}),
                         [], model_dir, plot, meta["truncation"])
    record(out_dir, rid, meta, result)
    return result


def _draw(models: _Models, chosen: list[int], train_prompts: list[dict[str, Any]], enc: Encoder,
          config: cfgmod.PPOConfig, iteration: int) -> tuple[Samples, dict[str, float]]:
    """An iteration's samples, ``samples_per_prompt`` answers to each chosen prompt, scored; with dynamic sampling
    only groups that differ (more rollouts as needed); for online DPO each group's best and worst answer. Returns
    what the update learns from and the figures of everything sampled."""
    k = config.samples_per_prompt
    sampled = models.sample([train_prompts[i] for i in chosen for _ in range(k)], enc, config)  # k side by side
    use, rollouts = sampled, 1
    if config.dynamic_sampling:
        use, sampled, rollouts = _dynamic_sampling(models, sampled, chosen, train_prompts, enc, config, iteration)
    rewards = sampled.scores if sampled.rewards is None else sampled.rewards
    logs = {"reward": float(rewards.mean()),
            "response_length": float(sampled.attention[:, sampled.prompt_len:].sum(1).float().mean()),
            "no_eos": float((~sampled.ended).float().mean())}
    if k > 1:
        logs["zero_std_groups"] = float((~signal_groups(sampled.scores, k)).float().mean())
    if config.dynamic_sampling:
        logs |= {"rollouts": rollouts, "groups_used": len(use.scores) // k}
    if sampled.costs is not None:  # Safe RLHF: the cost, and the multiplier these answers were scored with
        logs |= {"cost": float(sampled.costs.mean()), "lambda": models.lam}
    if config.pairwise_updates:  # online DPO: each group's best and worst answer, where they differ
        use = use.select(best_worst_pairs(use.scores, k))
        logs["pairs"] = len(use.scores) // 2
    return use, logs


def _learn(models: _Models, ro: Rollout, config: cfgmod.PPOConfig, optimizer: Any, schedule: Schedule,
           params: list[Tensor], iteration: int, kl_coef: float) -> dict[str, float]:
    """One iteration's learning: PPO's GAE on KL-penalised token rewards, GRPO's or RLOO's group comparison, or
    online DPO's pairs (rows ``2i`` chosen, ``2i + 1`` rejected), then :func:`_update`; its figures."""
    args = (models, config, optimizer, schedule, params, iteration)
    if config.pairwise_updates:
        stats = _update(*args, len(ro.scores) // 2, partial(_pair_minibatch, models, ro, config))
        return {"score_margin": float((ro.scores[0::2] - ro.scores[1::2]).mean()), **stats}
    kl = (ro.logprobs - ro.ref_logprobs) * ro.mask
    if config.advantage == "gae" and ro.costs is not None:  # Safe RLHF: a critic for the reward, one for the cost
        advantages, returns, penalised, kl = safe_gae(ro.rewards, ro.costs, ro.logprobs, ro.ref_logprobs, ro.values,
                                                      ro.mask, kl_coef, models.lam, config.gamma, config.lam)
        advantages = whiten(advantages, ro.mask)
    elif config.advantage == "gae":
        rewards, kl = penalised_rewards(ro.scores, ro.logprobs, ro.ref_logprobs, ro.mask, kl_coef)
        advantages, returns = gae(rewards, ro.values, ro.mask, config.gamma, config.lam)
        advantages = whiten(advantages, ro.mask)
        penalised = rewards.sum(1)
    else:
        penalised = ro.scores - kl_coef * kl.sum(1)  # RLOO's reward; for GRPO what its loss trades off
        per_answer = group_advantages(penalised if config.advantage == "rloo" else ro.scores,
                                      config.samples_per_prompt, config.advantage, scale=config.scale_rewards)
        advantages, returns = per_answer[:, None] * ro.mask, None
    stats = _update(*args, len(ro.scores), partial(_ppo_minibatch, models, ro, advantages, returns, config, kl_coef))
    return {"reward_penalised": float(penalised.mean()), "kl": float(kl.sum(1).mean()), **stats}


def _update(models: _Models, config: cfgmod.PPOConfig, optimizer: Any, schedule: Schedule, params: list[Tensor],
            iteration: int, units: int, minibatch: Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]]
            ) -> dict[str, float]:
    """``ppo_epochs`` passes over ``units`` (answers, or pairs) in shuffled minibatches, an optimizer step on each
    ``minibatch(indices)`` loss (plus PPO-ptx's term) at the schedule's rate; the mean of each statistic, the last
    rate (``lr``) and the number of steps (``updates``)."""
    gen = torch.Generator().manual_seed(config.train.seed * 7_919 + iteration)
    sums: dict[str, float] = {}
    count = 0
    for _ in range(config.ppo_epochs):
        for idx in torch.randperm(units, generator=gen).split(_minibatch(config)):
            loss, stats = minibatch(idx.to(models.device))
            if models.ptx is not None:
                with models.autocast():
                    nll = models.ptx.loss(models.policy, iteration * schedule.per_iteration + count, models.device)
                loss = loss + config.ptx_coef * nll.float()
                stats = {**stats, "ptx_loss": nll.detach()}
            if not torch.isfinite(loss):
                raise AlignloopError(f"{config.method} loss is {float(loss)} at iteration {iteration + 1}; lower lr"
                                     + (" or beta" if config.pairwise_updates else " or kl_coef"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            lr = schedule(iteration, count)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            for k, v in {**stats, "loss": loss.detach()}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            count += 1
    return {**{k: v / count for k, v in sums.items()}, "lr": lr, "updates": count}


def _minibatch(config: cfgmod.PPOConfig) -> int:
    """Units per update: ``train.batch_size`` answers, or half as many pairs (the same rows through the model)."""
    return max(1, config.train.batch_size // 2) if config.pairwise_updates else config.train.batch_size


def _ppo_minibatch(models: _Models, ro: Rollout, advantages: Tensor, returns: Tensor | None,
                   config: cfgmod.PPOConfig, kl_coef: float, idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate of the answers ``idx`` (PPO: plus the value loss; GRPO: plus ``kl_coef`` times the k3
    KL to the reference) and its statistics."""
    with models.autocast():
        logprobs, values, entropy = forward_answers(models.policy, ro.tokens[idx], ro.attention[idx], ro.prompt_len,
                                                    config.logprob_temperature,
                                                    models.value_head if returns is not None else None)
    mask, agg = ro.mask[idx], config.loss_aggregation
    if returns is not None:
        loss, stats = ppo_loss(logprobs.float(), ro.logprobs[idx], advantages[idx], values.float(), ro.values[idx],
                               returns[idx], mask, config.clip_range, config.value_clip, config.vf_coef, agg,
                               config.clip_range_high)
    else:
        loss, stats = clipped_surrogate(logprobs.float(), ro.logprobs[idx], advantages[idx], mask, config.clip_range,
                                        agg, config.clip_range_high)
        if config.advantage == "grpo":
            kl_loss = AGGREGATIONS[agg](k3_kl(logprobs.float(), ro.ref_logprobs[idx]), mask)
            loss = loss + kl_coef * kl_loss
            stats["kl_loss"] = kl_loss.detach()
    return loss, {**stats, "entropy": masked_mean(entropy.detach(), mask)}


def _pair_minibatch(models: _Models, ro: Rollout, config: cfgmod.PPOConfig, idx: Tensor
                    ) -> tuple[Tensor, dict[str, Tensor]]:
    """Online DPO: the pairwise loss of the pairs ``idx`` (rows ``2i`` chosen, ``2i + 1`` rejected), summed
    answer log-probs at temperature 1 against the reference's, and its metrics, with the KL to the reference of the
    pairs' answers measured in this pass (before its step; as TRL's online DPO measures it)."""
    from alignloop.trainers.objectives import pairwise_loss

    rows = torch.stack([2 * idx, 2 * idx + 1], 1).flatten()
    with models.autocast():
        logprobs, _, _ = forward_answers(models.policy, ro.tokens[rows], ro.attention[rows], ro.prompt_len,
                                         config.logprob_temperature, entropy=False)
    mask = ro.mask[rows]
    seq, ref, lengths = (logprobs.float() * mask).sum(1), (ro.ref_logprobs[rows] * mask).sum(1), mask.sum(1)
    loss, metrics = pairwise_loss(models.pair_loss, seq[0::2], seq[1::2], ref[0::2], ref[1::2], lengths[0::2],
                                  lengths[1::2])
    return loss, {**metrics, "kl": (seq - ref).detach().mean()}


def _heldout(models: _Models, prompts: list[dict[str, Any]], enc: Encoder, config: cfgmod.PPOConfig,
             progress: Callable[[str, int, int, dict[str, float]], None] | None) -> dict[str, float]:
    """Greedy answers to the test prompts by the trained policy and by the reference, scored by the reward model:
    their mean rewards and how often the policy's answer scores higher (a tie counts half)."""
    if progress:
        progress("eval", 0, len(prompts), {})
    mine, theirs, costs = [], [], {"cost": [], "reference_cost": []}
    enc = Encoder(enc.tokenizer, enc.max_length, enc.max_prompt_length)  # the train split's counts stay its own
    size = config.rollout_prompts
    for i in range(0, len(prompts), size):
        batch = prompts[i:i + size]
        for model, out, cost in ((models.policy, mine, "cost"), (models.reference, theirs, "reference_cost")):
            texts = models.answer(batch, enc, config, greedy=True, model=model)[3]
            out += models.score(batch, texts).tolist()
            if models.cost_judge is not None:
                costs[cost] += models.cost(batch, texts).tolist()
        if progress:
            progress("eval", min(i + size, len(prompts)), len(prompts), {})
    from alignloop.pipelines.evaluation import win_rate

    safety = {name: float(np.mean(v)) for name, v in costs.items()} if models.cost_judge is not None else {}
    return {"reward": float(np.mean(mine)), "reference_reward": float(np.mean(theirs)),
            "win_rate_vs_reference": win_rate(mine, theirs), **safety}
