"""Listwise building blocks, reward-model losses and process-reward-model (PRM) losses.

Pure functions of scores/rewards/logits: tensors in, tensors out. No I/O, no config, no distributed calls.
Everything here returns plain tensors; the policy-level list losses (RRHF, LiPO, PRO) in :mod:`trainers.losses`
wrap these blocks and are re-exported from there together with everything below.

Conventions for lists:
    * ``scores``/``logps``: (B, K) one score per candidate.
    * ``targets``: (B, K) target scores, **higher is better** (a reward, a grade). If you have ranks where 1 is
      best, pass ``-ranks``. Ties in ``targets`` are broken by position (stable sort), so tied candidates are
      ordered as they appear in the list.
    * ``mask``: (B, K) bool, True for real candidates; ``None`` means all valid. Padded entries contribute nothing
      and receive zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

IGNORE_INDEX = -100


def _valid(mask: Tensor | None, like: Tensor) -> Tensor:
    """Return a bool (B, K) validity mask, all True when ``mask`` is None."""
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    return mask.to(device=like.device, dtype=torch.bool)


def sort_by_targets(targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Permutation that orders each list best-first; invalid entries go last.

    Args:
        targets: (B, K) target scores, higher is better.
        mask: (B, K) bool validity mask or None.

    Returns:
        (B, K) long indices ``order`` such that ``targets.gather(-1, order)`` is descending over valid entries.
    """
    valid = _valid(mask, targets)
    key = targets.detach().float().masked_fill(~valid, float("-inf"))
    return torch.sort(key, dim=-1, descending=True, stable=True).indices


def plackett_luce_nll(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Negative log-likelihood of the target ranking under a Plackett-Luce model of ``scores``.

    ``-sum_k [s_(k) - log sum_{j >= k} exp(s_(j))]`` where ``(k)`` is the k-th best candidate by ``targets``
    (Plackett 1975; Luce 1959). The last term is identically 0. Computed with ``torch.logsumexp`` over a masked
    (B, K, K) matrix, so padded candidates never enter a denominator.

    Args:
        scores: (B, K) model scores (rewards, or length-normalised log-probs for PRO).
        targets: (B, K) target scores, higher is better.
        mask: (B, K) bool validity mask or None.

    Returns:
        (B,) per-list loss.
    """
    valid = _valid(mask, scores)
    order = sort_by_targets(targets, valid)
    s = scores.gather(-1, order)
    v = valid.gather(-1, order)
    s = s.masked_fill(~v, 0.0)
    k = s.shape[-1]
    idx = torch.arange(k, device=s.device)
    upper = idx.view(1, k) >= idx.view(k, 1)  # (K, K): j >= k
    eye = torch.eye(k, dtype=torch.bool, device=s.device)
    # row k sums over valid j >= k; the diagonal is always kept so rows of padded entries stay finite.
    include = (upper.unsqueeze(0) & v.unsqueeze(1)) | eye.unsqueeze(0)  # (B, K, K)
    expanded = s.unsqueeze(1).expand(-1, k, -1).masked_fill(~include, float("-inf"))
    log_denominator = torch.logsumexp(expanded, dim=-1)  # (B, K)
    return -((s - log_denominator) * v).sum(-1)


def dcg_ranks(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """1-based positions of each candidate when sorted by ``scores`` (descending), detached.

    Ties are broken by list position (stable sort) so ranks are always a permutation of ``1..K``; padded entries
    get the last positions.

    Args:
        scores: (B, K) model scores.
        mask: (B, K) bool validity mask or None.

    Returns:
        (B, K) float ranks.
    """
    order = sort_by_targets(scores, mask)
    ranks = torch.empty_like(order)
    positions = torch.arange(1, order.shape[-1] + 1, device=order.device).expand_as(order)
    ranks.scatter_(-1, order, positions)
    return ranks.to(scores.dtype)


def lambda_weights(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """LambdaLoss/LiPO-lambda pair weights ``Delta_ij = |G_i - G_j| * |1/D(tau_i) - 1/D(tau_j)|``.

    Liu et al. 2024, "LiPO: Listwise Preference Optimization through Learning-to-Rank", Eq. 7-8: gain
    ``G_i = 2**psi_i - 1`` and discount ``D(tau) = log2(1 + tau)`` (DCG's base 2; another base only scales the loss
    by a constant), where ``tau_i`` is the rank of candidate i under the *current model scores*
    (:func:`dcg_ranks`). The weights are constants (detached). Pairs involving padded entries get weight 0. Targets
    should be on a small scale (grades or rewards in [0, ~5]) since gains are exponential.

    Args:
        scores: (B, K) model scores ``s_i``.
        targets: (B, K) labels ``psi_i``, higher is better.
        mask: (B, K) bool validity mask or None.

    Returns:
        (B, K, K) non-negative weights.
    """
    valid = _valid(mask, scores)
    psi = targets.detach().to(scores.dtype).masked_fill(~valid, 0.0)
    gain = torch.pow(2.0, psi) - 1.0
    inv_discount = 1.0 / torch.log2(1.0 + dcg_ranks(scores.detach(), valid))
    delta = (gain.unsqueeze(-1) - gain.unsqueeze(-2)).abs() * (
        inv_discount.unsqueeze(-1) - inv_discount.unsqueeze(-2)
    ).abs()
    pair_valid = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    return delta * pair_valid


def lambda_pairwise_logistic(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Lambda-weighted pairwise logistic loss ``-sum_{psi_i > psi_j} Delta_ij log sigma(s_i - s_j)``.

    Liu et al. 2024 (LiPO), Eq. 6 with the weights of Eq. 7-8 (:func:`lambda_weights`). Summed over pairs
    (not averaged), as in the paper.

    Args:
        scores: (B, K) model scores.
        targets: (B, K) labels, higher is better.
        mask: (B, K) bool validity mask or None.

    Returns:
        (B,) per-list loss.
    """
    valid = _valid(mask, scores)
    s = scores.masked_fill(~valid, 0.0)
    psi = targets.detach()
    better = (psi.unsqueeze(-1) > psi.unsqueeze(-2)) & valid.unsqueeze(-1) & valid.unsqueeze(-2)
    weights = lambda_weights(s, psi, valid) * better
    pair_logits = s.unsqueeze(-1) - s.unsqueeze(-2)  # (B, K, K): s_i - s_j
    return -(weights * F.logsigmoid(pair_logits)).sum((-1, -2))


# --------------------------------------------------------------------------------------------- reward models


def bradley_terry_loss(
    r_chosen: Tensor, r_rejected: Tensor, *, margin: float | Tensor = 0.0, center_coef: float = 0.0,
    label: Tensor | None = None,
) -> Tensor:
    """Bradley-Terry reward-model loss with an optional preference margin and reward centring.

    ``-log sigma(r_c - r_r - m(r))`` (Touvron et al. 2023, Llama 2, Eq. 2) ``+ center_coef * (r_c + r_r)**2``
    (the auxiliary centring loss of Eisenstein et al. 2023, "Helping or Herding?"; same form as TRL's
    ``center_rewards_coefficient``).

    Args:
        r_chosen: (B,) scalar rewards of the preferred responses.
        r_rejected: (B,) scalar rewards of the dispreferred responses.
        margin: float or (B,) margin ``m(r)`` (e.g. larger for "significantly better"); 0 gives plain BT.
        center_coef: weight of the centring term; 0 disables it.
        label: (B,) probability that chosen is preferred (soft targets: ``-(p log sigma(d) + (1 - p) log
            sigma(-d))``); None = 1 for every pair.

    Returns:
        (B,) per-pair loss.
    """
    if isinstance(margin, Tensor):
        margin = margin.to(r_chosen.dtype)
    d = r_chosen - r_rejected - margin
    losses = -F.logsigmoid(d) if label is None else -(label.to(d.dtype) * F.logsigmoid(d)
                                                      + (1.0 - label.to(d.dtype)) * F.logsigmoid(-d))
    if center_coef:
        losses = losses + center_coef * (r_chosen + r_rejected) ** 2
    return losses


def plackett_luce_loss(rewards: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Listwise reward-model loss: Plackett-Luce NLL of the annotated ranking given the rewards.

    Generalises Bradley-Terry: with K=2 and no margin it equals :func:`bradley_terry_loss` (as in the
    Plackett-Luce reward model of Zhu et al. 2023, "Principled RLHF from pairwise or K-wise comparisons").

    Args:
        rewards: (B, K) scalar rewards of the candidates.
        targets: (B, K) annotation scores, higher is better (pass ``-ranks`` for 1-is-best ranks).
        mask: (B, K) bool validity mask or None.

    Returns:
        (B,) per-list loss.
    """
    return plackett_luce_nll(rewards, targets, mask)


# ------------------------------------------------------------------------------------ process reward models


def map_step_labels(labels: Tensor, num_classes: int = 3, *, neutral_label: int = 1) -> Tensor:
    """Map raw PRM step ratings {-1, 0, +1} (PRM800K style) to class indices, keeping ``-100`` as ignored.

    * ``num_classes=3``: -1 -> 0 (bad), 0 -> 1 (neutral), +1 -> 2 (good).
    * ``num_classes`` 1 or 2 (binary, "is this step OK"): +1 -> 1, -1 -> 0, 0 -> ``neutral_label`` (default 1:
      a neutral step does not invalidate the solution; pass 0 to count neutral steps as bad).

    Args:
        labels: (B, T) long tensor with values in {-1, 0, 1, -100}.
        num_classes: 3, 2 or 1.
        neutral_label: binary class for neutral (0) ratings; must be 0 or 1.

    Returns:
        (B, T) long tensor of class indices, ``-100`` where ignored.
    """
    if num_classes not in (1, 2, 3):
        raise ValueError(f"num_classes must be 1, 2 or 3, got {num_classes}")
    if neutral_label not in (0, 1):
        raise ValueError(f"neutral_label must be 0 or 1, got {neutral_label}")
    labels = labels.long()
    ignored = labels == IGNORE_INDEX
    if num_classes == 3:
        mapped = labels + 1
    else:
        mapped = torch.where(labels > 0, 1, torch.where(labels < 0, 0, neutral_label))
    return mapped.masked_fill(ignored, IGNORE_INDEX)


def prm_step_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-step classification loss for a process reward model, averaged over labelled steps only.

    Lightman et al. 2023 ("Let's Verify Step by Step") / Wang et al. 2024 (Math-Shepherd): cross-entropy at the
    step-separator positions. Positions with label ``-100`` contribute nothing (no loss, zero gradient).

    * ``C >= 2``: softmax cross-entropy with class-index labels in ``[0, C)`` (3-class: bad/neutral/good via
      :func:`map_step_labels`; ``C=2``: index 1 = good step).
    * ``C == 1``: binary cross-entropy on the single logit, label 1 = good step, 0 = bad step.

    Args:
        logits: (B, T, C) step logits.
        labels: (B, T) long class labels, ``-100`` = ignored.

    Returns:
        Scalar loss: sum over labelled positions / number of labelled positions (0 with a graph if none).
    """
    num_classes = logits.shape[-1]
    labels = labels.long()
    keep = labels != IGNORE_INDEX
    count = keep.sum()
    # ignored positions are replaced by zeros so even inf/nan logits there cannot leak into the loss or grads
    safe_logits = torch.where(keep.unsqueeze(-1), logits, torch.zeros_like(logits))
    if num_classes == 1:
        target = torch.where(keep, labels, 0).to(logits.dtype)
        per_pos = F.binary_cross_entropy_with_logits(safe_logits[..., 0], target, reduction="none")
        total = (per_pos * keep).sum()
    else:
        total = F.cross_entropy(
            safe_logits.reshape(-1, num_classes), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
    return total / count.clamp(min=1).to(total.dtype)
