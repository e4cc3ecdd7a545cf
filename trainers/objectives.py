"""Training objectives: (model, batch) -> (scalar loss, detached metrics), dispatching to the loss registry.

One class per data layout, never per loss: a pairwise objective runs ANY pairwise loss of
:data:`trainers.losses.LOSSES` with the same code. Metrics use TRL's names (``rewards/chosen`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alignloop.trainers.logprobs import forward_logprobs
from alignloop.trainers.losses import (
    LossOutput,
    LossSpec,
    bradley_terry_loss,
    confidence_target,
    implicit_rewards,
    kto_kl_estimate,
    map_step_labels,
    plackett_luce_loss,
    prm_step_loss,
    running_mean_update,
)
from alignloop.trainers.packing import batch_logprobs

Tensor = torch.Tensor
Metrics = dict[str, Tensor]


def _mean(x: Tensor | None) -> Tensor | None:
    return None if x is None or x.numel() == 0 else x.float().mean()


def _pair_metrics(loss: Tensor, r_c: Tensor, r_r: Tensor) -> Metrics:
    return {"loss": loss.detach(), "rewards/chosen": r_c.mean(), "rewards/rejected": r_r.mean(),
            "rewards/margins": (r_c - r_r).mean(), "rewards/accuracies": (r_c > r_r).float().mean()}


def _top1(scores: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Fraction of lists whose highest-scored valid candidate is the best one by target."""
    neg = torch.finfo(torch.float32).min
    best = targets.float().masked_fill(~mask, neg).argmax(-1)
    return (scores.detach().float().masked_fill(~mask, neg).argmax(-1) == best).float().mean()


@dataclass
class PolicyLoss:
    """A registry loss with its hyperparameters, and the running state some losses keep across steps (beta-DPO's
    ``m0``, BCO's ``delta``: see :attr:`~trainers.losses.LossSpec.running`).

    The state moves on training calls only (gradients enabled): evaluation reads it without moving it. Under
    distributed training each rank's batch statistic is averaged over the ranks first, so every rank keeps the same
    state. It is part of a run's checkpoint (:meth:`state_dict`), so a resumed run continues with it.
    """

    spec: LossSpec
    beta: float
    params: dict[str, float] = field(default_factory=dict)
    state: dict[str, Tensor] = field(default_factory=dict)

    @property
    def takes_labels(self) -> bool:
        """Whether the loss trains on soft labels (has a ``label`` argument)."""
        return self.spec.takes_labels

    def __call__(self, *args: Tensor | None, **kw: Tensor | None) -> LossOutput:
        out = self.spec.fn(*args, beta=self.beta, **kw, **self.params, **self.state)
        running = self.spec.running
        if running is not None and running[0] not in self.params and torch.is_grad_enabled():
            name, extra = running
            value = _rank_mean(out.extras[extra])
            self.state[name] = running_mean_update(self.state.get(name, value), value).detach()
        return out

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.cpu() for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.state = dict(state)


def _rank_mean(x: Tensor) -> Tensor:
    """``x`` averaged over the ranks of a distributed run (itself otherwise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / dist.get_world_size()


@dataclass
class Confidence:
    """The weak-to-strong auxiliary confidence weight, warmed up linearly from 0 over the first ``warmup`` share of
    training (Burns et al. 2023); :class:`~trainers.core.AlignTrainer` sets ``progress`` (0..1) before each step."""

    weight: float
    warmup: float = 0.2
    progress: float = 0.0

    @property
    def alpha(self) -> float:
        return self.weight * (min(1.0, self.progress / self.warmup) if self.warmup > 0 else 1.0)

    def target(self, label: Tensor | None, margin: Tensor) -> Tensor:
        return confidence_target(label, margin, self.alpha)


@dataclass
class PairwiseObjective:
    """Any pairwise loss; chosen and rejected in one forward pass of 2B sequences (packed with their shared prompt
    by :class:`trainers.collators.PackedPairCollator`, or padded rows from :class:`~trainers.collators.PairCollator`)."""

    loss: PolicyLoss
    soft_labels: bool = False
    """Pass each pair's ``prob`` to a loss that takes soft labels."""
    confidence: Confidence | None = None
    """Weak-to-strong: mix the model's own hardened preference into the target (losses that take labels)."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        b = batch["rows"].shape[0]
        logps, lengths = batch_logprobs(model, batch)
        ref = batch.get("ref")
        ref_c, ref_r = (None, None) if ref is None else (ref[:, 0].to(logps), ref[:, 1].to(logps))
        label = batch["prob"].to(logps) if self.soft_labels and self.loss.takes_labels else None
        if self.confidence is not None:
            r_c, r_r = implicit_rewards(logps[:b], logps[b:], ref_c, ref_r, self.loss.beta)
            label = self.confidence.target(label, r_c - r_r)
        return pairwise_loss(self.loss, logps[:b], logps[b:], ref_c, ref_r, lengths[:b], lengths[b:], label)


def pairwise_loss(loss_fn: PolicyLoss, pi_c: Tensor, pi_r: Tensor, ref_c: Tensor | None, ref_r: Tensor | None,
                  len_c: Tensor, len_r: Tensor, label: Tensor | None = None) -> tuple[Tensor, Metrics]:
    """A pairwise loss over (B,) sequence log-probs and its metrics (implicit rewards, margins, accuracy, log-probs,
    the loss's extras); offline pairs (:class:`PairwiseObjective`) and online ones (:mod:`trainers.ppo`) alike."""
    labels = {} if label is None else {"label": label}
    out = loss_fn(pi_c, pi_r, ref_c, ref_r, len_chosen=len_c, len_rejected=len_r, **labels)
    loss = out.losses.mean()
    r_c, r_r = out.chosen_rewards, out.rejected_rewards
    if r_c is None or r_r is None:
        r_c, r_r = implicit_rewards(pi_c, pi_r, ref_c, ref_r, loss_fn.beta)
    metrics = _pair_metrics(loss, r_c, r_r)
    metrics |= {"logps/chosen": pi_c.detach().mean(), "logps/rejected": pi_r.detach().mean()}
    metrics |= {f"extras/{k}": v.float().mean() for k, v in out.extras.items()}
    return loss, metrics


@dataclass
class UnpairedObjective:
    """KTO-style unpaired loss; z0 is estimated from the batch's mismatched (prompt i, completion i+1) sequences
    in a no-grad forward pass (z0 is detached in the loss anyway)."""

    loss: PolicyLoss

    def __call__(self, model: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        b = batch["rows"].shape[0]
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        logps, _ = forward_logprobs(model, ids[:b], mask[:b], labels[:b])
        with torch.no_grad():
            kl_logps, _ = forward_logprobs(model, ids[b:], mask[b:], labels[b:])
        ref = batch["ref"].to(logps)
        z0 = kto_kl_estimate(kl_logps, ref[:, 1])
        out = self.loss(logps, ref[:, 0], batch["desirable"], z0)
        loss = out.losses.mean()
        metrics: Metrics = {"loss": loss.detach(), "kl": z0.detach()}
        rewards = self.loss.beta * (logps.detach() - ref[:, 0])
        desirable = batch["desirable"].bool()
        metrics["rewards/accuracies"] = ((rewards > 0) == desirable).float().mean()
        for name, value in (("rewards/chosen", _mean(out.chosen_rewards)),
                            ("rewards/rejected", _mean(out.rejected_rewards))):
            if value is not None:
                metrics[name] = value
        return loss, metrics


@dataclass
class ListwiseObjective:
    """RRHF / LiPO / PRO over K candidates per prompt, all B*K sequences in one forward pass."""

    loss: PolicyLoss

    def __call__(self, model: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        scores, mask = batch["scores"], batch["list_mask"].bool()
        b, k = scores.shape
        logps, lengths = forward_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        logps, lengths = logps.view(b, k), lengths.view(b, k)
        ref = batch.get("ref")
        ref = None if ref is None else torch.nan_to_num(ref.to(logps))
        out = self.loss(logps, scores, mask, ref_logps=ref, lengths=lengths)
        loss = out.losses.mean()
        implicit = (logps.detach() - ref) if ref is not None else logps.detach() / lengths.clamp(min=1)
        implicit = self.loss.beta * implicit
        best = torch.nn.functional.one_hot(scores.masked_fill(~mask, float("-inf")).argmax(-1), k).bool()
        others = mask & ~best
        metrics: Metrics = {"loss": loss.detach(), "rewards/accuracies": _top1(implicit, scores, mask),
                            "rewards/chosen": implicit[best].mean(),
                            "rewards/rejected": implicit[others].mean() if others.any() else implicit[best].mean()}
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        return loss, metrics


def reward_scores(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(N,) scalar rewards from a sequence-classification model with one label (read at the last real token)."""
    return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.squeeze(-1).float()


@dataclass
class RewardPairObjective:
    """Bradley-Terry reward model on pairs (optional margin and centring)."""

    use_margin: bool = False
    center_coef: float = 0.0
    soft_labels: bool = False
    confidence: Confidence | None = None
    """Weak-to-strong: mix the model's own hardened preference into the target."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        b = batch["rows"].shape[0]
        r = reward_scores(model, batch["input_ids"], batch["attention_mask"])
        margin = batch["margin"].to(r) if self.use_margin else 0.0
        label = batch["prob"].to(r) if self.soft_labels else None
        if self.confidence is not None:
            label = self.confidence.target(label, r[:b] - r[b:] - margin)
        loss = bradley_terry_loss(r[:b], r[b:], margin=margin, center_coef=self.center_coef, label=label).mean()
        return loss, _pair_metrics(loss, r[:b].detach(), r[b:].detach())


@dataclass
class RewardBinaryObjective:
    """A reward model on unpaired labels: the score's sign is the label, ``-log sigmoid(s * r)`` with ``s`` +1 for a
    desirable completion and -1 otherwise (Safe RLHF's cost-model sign term; a safety or pass/fail classifier whose
    zero is the boundary)."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        r = reward_scores(model, batch["input_ids"], batch["attention_mask"])
        desirable = batch["labels"][:, 0].bool()
        loss = torch.nn.functional.softplus(-torch.where(desirable, r, -r)).mean()
        good, bad = r.detach()[desirable], r.detach()[~desirable]
        metrics: Metrics = {"loss": loss.detach(), "rewards/accuracies": ((r.detach() > 0) == desirable).float().mean()}
        if len(good):
            metrics["rewards/chosen"] = good.mean()
        if len(bad):
            metrics["rewards/rejected"] = bad.mean()
        return loss, metrics


@dataclass
class RewardListObjective:
    """Plackett-Luce reward model on ranked lists."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        scores, mask = batch["scores"], batch["list_mask"].bool()
        r = reward_scores(model, batch["input_ids"], batch["attention_mask"]).view(scores.shape)
        loss = plackett_luce_loss(r, scores, mask).mean()
        return loss, {"loss": loss.detach(), "rewards/accuracies": _top1(r, scores, mask)}


@dataclass
class PRMObjective:
    """Token-classification PRM: cross-entropy at step ends only (labels -100 elsewhere)."""

    num_classes: int = 3
    neutral_label: int = 1

    def __call__(self, model: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, C)
        labels = map_step_labels(batch["labels"], self.num_classes, neutral_label=self.neutral_label)
        loss = prm_step_loss(logits.float(), labels)
        keep = labels != -100
        correct = (logits.detach().argmax(-1) == labels) & keep
        acc = correct.sum().float() / keep.sum().clamp(min=1)
        return loss, {"loss": loss.detach(), "step_accuracy": acc, "steps": keep.sum().float()}


@dataclass
class SFTObjective:
    """Token-mean negative log-likelihood of the completion (prompt masked)."""

    def __call__(self, model: torch.nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        logps, lengths = forward_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss = -logps.sum() / lengths.sum().clamp(min=1)
        return loss, {"loss": loss.detach(), "tokens": lengths.sum().float()}
