"""Preference-optimisation losses as pure functions of log-probabilities.

Conventions (all tensors on the same device/dtype):
    * ``pi_chosen``, ``pi_rejected``: (B,) policy log-probs of the completions, **summed** over tokens.
    * ``ref_chosen``, ``ref_rejected``: (B,) summed reference log-probs, or None for reference-free losses
      (reference-free losses accept and ignore them, so every pairwise loss has the same signature).
    * ``len_chosen``, ``len_rejected``: (B,) completion token counts, needed only where stated.
    * ``r = pi - ref`` is a completion's log-ratio; ``m = r_chosen - r_rejected`` is the DPO margin ``h``.
    * Reference log-probs are constants: every loss calls ``.detach()`` on them, so no gradient reaches the
      reference model even if its outputs require grad.

Every pairwise/unpaired/list loss takes ``beta`` and further hyperparameters as keyword floats and returns a
:class:`LossOutput` whose ``losses`` has shape (B,) (the caller reduces), with detached implicit rewards for logging.
Use :data:`LOSSES` / :func:`get_loss` to look a loss up by name. Reward-model and PRM losses (plain tensors) live in
:mod:`trainers.losses_listwise` and are re-exported here.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from alignloop.trainers.losses_listwise import (
    IGNORE_INDEX,
    bradley_terry_loss,
    dcg_ranks,
    lambda_pairwise_logistic,
    lambda_weights,
    map_step_labels,
    plackett_luce_loss,
    plackett_luce_nll,
    prm_step_loss,
    sort_by_targets,
)

Tensor = torch.Tensor
OptTensor = Tensor | None

__all__ = [
    "IGNORE_INDEX", "LOSSES", "LossOutput", "LossSpec", "apo_down_loss", "apo_zero_loss", "bco_pair_loss",
    "beta_dpo_loss", "bradley_terry_loss", "cdpo_loss", "cpo_loss", "dcg_ranks", "dpo_loss", "dpop_loss",
    "exo_pair_loss", "get_loss", "hinge_loss", "implicit_rewards", "ipo_loss", "kto_kl_estimate", "kto_loss",
    "lambda_pairwise_logistic", "lambda_weights", "lipo_loss", "log1mexp", "map_step_labels", "nca_pair_loss",
    "nll_loss", "orpo_loss", "plackett_luce_loss", "plackett_luce_nll", "prm_step_loss", "pro_loss", "rdpo_loss",
    "robust_dpo_loss", "rpo_loss", "rrhf_loss", "running_mean_update", "simpo_loss", "sort_by_targets",
    "sppo_hard_loss",
]


@dataclass(frozen=True)
class LossOutput:
    """Result of a preference loss.

    Attributes:
        losses: (B,) per-example loss; the caller reduces (mean, weighted mean, ...).
        chosen_rewards: detached implicit rewards of chosen/desirable completions, for logging, or None.
        rejected_rewards: detached implicit rewards of rejected/undesirable completions, for logging, or None.
        extras: detached extra statistics (e.g. ``beta`` for beta-DPO, ``nll`` for ORPO/CPO/RPO).
    """

    losses: Tensor
    chosen_rewards: Tensor | None = None
    rejected_rewards: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- helpers


def nll_loss(logps: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Negative log-likelihood of a completion (the SFT term).

    Args:
        logps: (B,) summed token log-probs.
        lengths: (B,) token counts; if given the NLL is per token (length-normalised), else summed.

    Returns:
        (B,) ``-logps`` or ``-logps / lengths``.
    """
    if lengths is None:
        return -logps
    return -logps / lengths.to(logps.dtype).clamp(min=1)


def log1mexp(x: Tensor) -> Tensor:
    """Numerically stable ``log(1 - exp(x))`` for ``x < 0`` (Maechler 2012, "Accurately computing log(1-exp(-|a|))").

    Uses ``log(-expm1(x))`` for ``x > -log 2`` and ``log1p(-exp(x))`` otherwise. ``x`` is clamped to ``<= -1e-6``
    so that a completion with probability ~1 gives a large finite value instead of ``-inf``.

    Args:
        x: tensor of log-probabilities (any shape).

    Returns:
        Tensor of the same shape.
    """
    x = x.clamp(max=-1e-6)
    near_zero = x > -math.log(2.0)
    return torch.where(
        near_zero,
        torch.log(-torch.expm1(torch.where(near_zero, x, -1.0))),
        torch.log1p(-torch.exp(torch.where(near_zero, -1.0, x))),
    )


def running_mean_update(running: float | Tensor, value: float | Tensor, momentum: float = 0.9) -> Tensor:
    """Exponential moving average ``momentum * running + (1 - momentum) * value``, detached.

    Pure helper for the stateful running means of BCO (``delta``) and beta-DPO (``M0``); the caller keeps the state
    (and all-reduces ``value`` across ranks first if training is distributed).
    """
    running_t = torch.as_tensor(running).detach()
    if not running_t.is_floating_point():
        running_t = running_t.float()
    value_t = torch.as_tensor(value).detach().to(running_t.device, running_t.dtype)
    return momentum * running_t + (1.0 - momentum) * value_t


def implicit_rewards(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: Tensor | None, ref_rejected: Tensor | None, beta: float
) -> tuple[Tensor, Tensor]:
    """Detached implicit rewards ``beta * (pi - ref)`` for logging (``beta * pi`` when refs are None).

    Args:
        pi_chosen, pi_rejected: (B,) policy log-probs.
        ref_chosen, ref_rejected: (B,) reference log-probs or None.
        beta: reward scale.

    Returns:
        ``(chosen_rewards, rejected_rewards)``, each (B,), detached.
    """
    chosen = pi_chosen.detach() if ref_chosen is None else pi_chosen.detach() - ref_chosen.detach()
    rejected = pi_rejected.detach() if ref_rejected is None else pi_rejected.detach() - ref_rejected.detach()
    return beta * chosen, beta * rejected


def _log_ratios(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: Tensor | None, ref_rejected: Tensor | None, name: str
) -> tuple[Tensor, Tensor]:
    """Return ``(r_chosen, r_rejected) = (pi - ref.detach())``; raise if a reference-based loss got no refs."""
    if ref_chosen is None or ref_rejected is None:
        raise ValueError(f"loss {name!r} needs reference log-probs (ref_chosen, ref_rejected)")
    return pi_chosen - ref_chosen.detach(), pi_rejected - ref_rejected.detach()


def _need_lengths(len_chosen: Tensor | None, len_rejected: Tensor | None, name: str) -> tuple[Tensor, Tensor]:
    if len_chosen is None or len_rejected is None:
        raise ValueError(f"loss {name!r} needs completion lengths (len_chosen, len_rejected)")
    return len_chosen, len_rejected


def _div(x: OptTensor, lengths: Tensor) -> OptTensor:
    return None if x is None else x / lengths


def _out(losses: Tensor, r_chosen: Tensor, r_rejected: Tensor, beta: float, **extras: Tensor) -> LossOutput:
    return LossOutput(
        losses, beta * r_chosen.detach(), beta * r_rejected.detach(), {k: v.detach() for k, v in extras.items()}
    )


# ---------------------------------------------------------------------------------------- pairwise, reference


def soft_bce(z: Tensor, label: OptTensor) -> Tensor:
    """``-(p log sigma(z) + (1 - p) log sigma(-z))`` per row: the binary cross-entropy of "chosen is preferred" with
    target ``p = label`` (None: 1, the hard ``-log sigma(z)``)."""
    if label is None:
        return -F.logsigmoid(z)
    label = label.to(z.dtype)
    return -(label * F.logsigmoid(z) + (1.0 - label) * F.logsigmoid(-z))


def confidence_target(label: OptTensor, margin: Tensor, alpha: float) -> Tensor:
    """Weak-to-strong auxiliary confidence loss as a target (Burns et al. 2023, "Weak-to-Strong Generalization",
    Eq. 1): the cross-entropy ``(1 - alpha) CE(f, weak) + alpha CE(f, hard(f))`` is linear in the target, so it is the
    cross-entropy with ``(1 - alpha) * label + alpha * hard``, cut from the graph. ``label`` None: the weak label is 1.

    ``hard`` is 1 where the model's own margin is positive, 0 where negative and 1/2 at a tie. Burns et al. harden
    with a threshold chosen per batch so that the share of each class matches the weak labels' (their code: the
    quantile of P(class 0) at the weak labels' mean for class 1); these are the same here. A pair is one example in
    either order, and pairs are stored with the weak label's winner first, so "the first answer wins" has prior 1 (or
    above 1/2 with soft labels) by how they are stored, not by the data: taken literally on the stored batch the
    threshold would be the lowest prediction and ``hard`` always 1, turning the loss off. On the batch that holds each
    pair in both orders (what the data says), the weak labels' mean is exactly 1/2 and the predictions ``p`` and
    ``1 - p`` are symmetric about 1/2, so the quantile is exactly 1/2, a zero margin: both copies of a pair get the
    sign of its margin, and a tie gets the same class in both copies, "chosen" in one and "rejected" in the other,
    which on the stored pair is ``hard = 1/2``. With the loss's symmetry (``CE(z, t) = CE(-z, 1 - t)``) the mean
    over both orders is the mean over the stored pairs: Burns' loss exactly, for hard and soft labels
    (tests/test_losses.py writes it out).

    Args:
        label: (B,) weak probability that chosen is preferred, or None.
        margin: (B,) the model's logit for "chosen is preferred" (its reward margin).
        alpha: weight of the hardened prediction.

    Returns:
        (B,) detached target probabilities.
    """
    hard = (torch.sign(margin.detach()) + 1.0) / 2.0
    weak = torch.ones_like(hard) if label is None else label.to(margin.dtype)
    return (1.0 - alpha) * weak + alpha * hard


def dpo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, label: OptTensor = None,
) -> LossOutput:
    """DPO, sigmoid loss: ``-log sigma(beta * m)`` (Rafailov et al. 2023, Eq. 7); with soft labels ``p`` the
    cross-entropy ``-(p log sigma(beta m) + (1 - p) log sigma(-beta m))`` (the label-smoothed form of cDPO with a
    per-pair ``eps = 1 - p``; a tie, ``p = 0.5``, pulls the margin to 0).

    Args:
        pi_chosen, pi_rejected, ref_chosen, ref_rejected: (B,) summed log-probs (see module docstring).
        len_chosen, len_rejected: unused.
        beta: KL-regularisation strength.
        label: (B,) probability that chosen is preferred; None = 1 for every pair.

    Returns:
        LossOutput with (B,) losses and rewards ``beta * r``.
    """
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "dpo")
    return _out(soft_bce(beta * (r_c - r_r), label), r_c, r_r, beta)


def ipo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, length_normalize: bool = False,
) -> LossOutput:
    """IPO: ``(h - 1/(2 beta))**2`` with ``h = m`` the log-ratio margin (Azar et al. 2023, Eq. 17; ``beta = tau``).

    The paper uses sequence (summed) log-probs, which is the default. ``length_normalize=True`` divides policy and
    reference log-probs by the completion lengths first, as TRL's ``loss_type="ipo"`` does.

    Args:
        pi_chosen, pi_rejected, ref_chosen, ref_rejected: (B,) summed log-probs.
        len_chosen, len_rejected: (B,) token counts, required only when ``length_normalize``.
        beta: the paper's regularisation ``tau``; target margin is ``1 / (2 beta)``.
        length_normalize: average log-probs over tokens before forming the margin.

    Returns:
        LossOutput with (B,) losses.
    """
    if length_normalize:
        l_c, l_r = _need_lengths(len_chosen, len_rejected, "ipo")
        l_c, l_r = l_c.to(pi_chosen.dtype).clamp(min=1), l_r.to(pi_rejected.dtype).clamp(min=1)
        ref_c, ref_r = _div(ref_chosen, l_c), _div(ref_rejected, l_r)
        r_c, r_r = _log_ratios(pi_chosen / l_c, pi_rejected / l_r, ref_c, ref_r, "ipo")
    else:
        r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "ipo")
    return _out((r_c - r_r - 1.0 / (2.0 * beta)) ** 2, r_c, r_r, beta)


def cdpo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, eps: float = 0.1,
    label: OptTensor = None,
) -> LossOutput:
    """Conservative DPO / label smoothing: ``(1-eps) * -log sigma(beta m) + eps * -log sigma(-beta m)``.

    Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO" (the label-smoothed BCE, where
    ``eps`` is the assumed probability that a label is flipped). A soft label ``p`` is flipped the same way: the
    target is ``p (1 - eps) + (1 - p) eps``.
    """
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "cdpo")
    z = beta * (r_c - r_r)
    p = torch.ones_like(z) if label is None else label.to(z.dtype)
    return _out(soft_bce(z, p * (1.0 - eps) + (1.0 - p) * eps), r_c, r_r, beta)


def robust_dpo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, eps: float = 0.1,
) -> LossOutput:
    """Robust DPO: ``((1-eps) * -log sigma(beta m) - eps * -log sigma(-beta m)) / (1 - 2 eps)``.

    Chowdhury et al. 2024, "Provably Robust DPO", Eq. 6: an unbiased estimate of the clean-label DPO loss under
    label-flip rate ``eps`` (must be < 0.5). Unlike cDPO it can be negative per example.
    """
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"robust DPO needs 0 <= eps < 0.5, got {eps}")
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "robust")
    z = beta * (r_c - r_r)
    losses = ((1.0 - eps) * -F.logsigmoid(z) - eps * -F.logsigmoid(-z)) / (1.0 - 2.0 * eps)
    return _out(losses, r_c, r_r, beta)


def hinge_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1,
) -> LossOutput:
    """Hinge / SLiC calibration loss ``relu(1 - beta m)`` (Zhao et al. 2023, SLiC-HF; TRL's ``"hinge"``).

    SLiC's ``max(0, delta - log p(y+) + log p(y-))`` uses raw log-probs; this is the DPO-style variant on the
    log-ratio margin with ``beta = 1 / delta`` (scaled by ``1/delta``). Zero reference log-probs recover SLiC.
    """
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "hinge")
    return _out(torch.relu(1.0 - beta * (r_c - r_r)), r_c, r_r, beta)


def rdpo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, alpha: float = 0.01,
) -> LossOutput:
    """R-DPO, length-regularised DPO: ``-log sigma(beta m + alpha (|y_c| - |y_r|))`` (Park et al. 2024, "Disentangling
    Length from Quality in Direct Preference Optimization"; the R-DPO row of Meng et al. 2024, SimPO, Table 3).

    The regulariser subtracts ``alpha |y|`` from the reward, so the implicit reward is ``beta r + alpha |y|`` and the
    logit gains ``+alpha (|y_c| - |y_r|)``: a longer chosen answer needs a smaller margin, which removes the incentive
    to grow longer. Lengths are token counts.
    """
    l_c, l_r = _need_lengths(len_chosen, len_rejected, "rdpo")
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "rdpo")
    length_gap = (l_c - l_r).to(r_c.dtype)
    return _out(-F.logsigmoid(beta * (r_c - r_r) + alpha * length_gap), r_c, r_r, beta)


def dpop_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, lam: float = 50.0,
) -> LossOutput:
    """DPO-Positive: ``-log sigma(beta (m - lam * max(0, ref_c - pi_c)))`` (Pal et al. 2024, Smaug, Eq. 3).

    The penalty fires when the policy's chosen log-prob drops below the reference's.
    """
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "dpop")
    penalty = torch.relu(-r_c)  # = max(0, ref_chosen - pi_chosen)
    return _out(-F.logsigmoid(beta * (r_c - r_r - lam * penalty)), r_c, r_r, beta)


def exo_pair_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, eps: float = 1e-3,
) -> LossOutput:
    """EXO, pairwise: reverse KL ``KL(p_theta || p_label)`` (Ji et al. 2024, "Towards Efficient Exact Optimization",
    Eq. 16, EXO-pref with K = 2).

    ``p_theta = (sigma(beta m), sigma(-beta m))`` is the policy's pairwise distribution and ``p_label = (1-eps, eps)``
    the (smoothed) label distribution; the minimum (0) is at ``beta m = log((1-eps)/eps)``. Same as TRL's
    ``"exo_pair"``.
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"EXO needs 0 < eps < 1, got {eps}")
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "exo_pair")
    z = beta * (r_c - r_r)
    losses = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - math.log(eps)
    )
    return _out(losses, r_c, r_r, beta)


def rpo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, alpha: float = 1.0,
) -> LossOutput:
    """RPO / iterative RPO: DPO + ``alpha * (-pi_c / |y_c|)`` (Pang et al. 2024, "Iterative Reasoning Preference
    Optimization", arXiv v3's L_DPO + alpha L_NLL: the length-normalised NLL of the chosen completion)."""
    l_c, _ = _need_lengths(len_chosen, len_rejected, "rpo")
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "rpo")
    nll = nll_loss(pi_chosen, l_c)
    return _out(-F.logsigmoid(beta * (r_c - r_r)) + alpha * nll, r_c, r_r, beta, nll=nll)


def beta_dpo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, alpha: float = 0.5,
    m0: float | Tensor = 0.0, beta_min: float = 1e-3,
) -> LossOutput:
    """beta-DPO: DPO with a batch-adaptive beta (Wu et al. 2024, "beta-DPO: DPO with Dynamic beta").

    ``beta_batch = beta * (1 + alpha * (mean_i M_i - M0))`` with ``M_i = beta * m_i`` the implicit reward margin
    (detached) and ``M0`` a running mean of it passed in by the caller (update it with
    ``running_mean_update(m0, extras["mean_margin"])``). ``beta_batch`` is clamped to ``>= beta_min``, which the paper
    does not do: a batch whose margins fall far below ``M0`` would otherwise get a negative beta and train towards the
    rejected answers. The paper's Gaussian data-filtering step is not applied here (weight ``losses`` in the caller to
    use it).

    Returns:
        LossOutput with (B,) losses; ``extras["beta"]`` is the 0-d beta used and ``extras["mean_margin"]`` the
        batch mean of ``M_i`` (both detached).
    """
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "beta_dpo")
    margin = r_c - r_r
    mean_margin = (beta * margin).detach().mean()
    m0_t = torch.as_tensor(m0, dtype=margin.dtype, device=margin.device).detach()
    beta_used = (beta * (1.0 + alpha * (mean_margin - m0_t))).clamp(min=beta_min).detach()
    losses = -F.logsigmoid(beta_used * margin)
    return LossOutput(losses, beta_used * r_c.detach(), beta_used * r_r.detach(),
                      {"beta": beta_used, "mean_margin": mean_margin})


def bco_pair_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, delta: float | Tensor = 0.0,
) -> LossOutput:
    """BCO, paired: ``-log sigma(beta r_c - delta) - log sigma(-(beta r_r - delta))`` (Jung et al. 2024, "Binary
    Classifier Optimization", with the reward shift ``delta``; TRL's ``"bco_pair"``).

    ``delta`` is the running mean of the implicit rewards ``beta * r`` over chosen and rejected (caller state; update
    with ``running_mean_update(delta, extras["mean_reward"])``); it is detached here.
    """
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "bco_pair")
    d = torch.as_tensor(delta, dtype=r_c.dtype, device=r_c.device).detach()
    losses = -F.logsigmoid(beta * r_c - d) - F.logsigmoid(-(beta * r_r - d))
    return _out(losses, r_c, r_r, beta, mean_reward=beta * torch.cat([r_c, r_r]).mean())


def nca_pair_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1,
) -> LossOutput:
    """NCA, pairwise: ``-log sigma(beta r_c) - 0.5 log sigma(-beta r_c) - 0.5 log sigma(-beta r_r)``.

    Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards", Eq. 10 (K=2).
    Optimises absolute rewards: the chosen reward rises only up to ``beta r_c = log 2``.
    """
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "nca_pair")
    z_c, z_r = beta * r_c, beta * r_r
    return _out(-F.logsigmoid(z_c) - 0.5 * F.logsigmoid(-z_c) - 0.5 * F.logsigmoid(-z_r), r_c, r_r, beta)


def sppo_hard_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1,
) -> LossOutput:
    """SPPO with hard labels: ``(r_c - 1/(2 beta))**2 + (r_r + 1/(2 beta))**2`` (Wu et al. 2024, "Self-Play
    Preference Optimization", Eq. 4.7 of Algorithm 1 with ``P(y_w > pi_t) = 1``, ``P(y_l > pi_t) = 0``).

    The paper's ``(r - eta (P - 1/2))**2`` with ``eta = 1 / beta``, i.e. TRL's ``"sppo_hard"`` form. This equals
    ``((beta r_c - 1/2)**2 + (beta r_r + 1/2)**2) / beta**2``: same minimiser, gradients larger by ``1/beta**2``.
    The reference is the previous iterate ``pi_t``.
    """
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "sppo_hard")
    target = 0.5 / beta
    return _out((r_c - target) ** 2 + (r_r + target) ** 2, r_c, r_r, beta)


def apo_zero_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1,
) -> LossOutput:
    """APO-zero: ``(1 - sigma(beta r_c)) + sigma(beta r_r)`` (D'Oosterlinck et al. 2024, "Anchored Preference
    Optimization", Eq. 7, plus the constant 1): push chosen likelihood up and rejected down. ``1 - sigma(x)`` is
    computed as ``sigma(-x)``."""
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "apo_zero")
    return _out(torch.sigmoid(-beta * r_c) + torch.sigmoid(beta * r_r), r_c, r_r, beta)


def apo_down_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1,
) -> LossOutput:
    """APO-down: ``sigma(beta r_c) + (1 - sigma(beta (r_c - r_r)))`` (D'Oosterlinck et al. 2024, Eq. 8, plus the
    constant 1): push both likelihoods down while increasing the margin. Not monotone in ``pi_chosen`` alone, by
    design."""
    r_c, r_r = _log_ratios(pi_chosen, pi_rejected, ref_chosen, ref_rejected, "apo_down")
    return _out(torch.sigmoid(beta * r_c) + torch.sigmoid(-beta * (r_c - r_r)), r_c, r_r, beta)


# -------------------------------------------------------------------------------------- pairwise, reference-free


def simpo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 2.0, gamma: float = 1.0,
) -> LossOutput:
    """SimPO: ``-log sigma(beta pi_c/|y_c| - beta pi_r/|y_r| - gamma)`` (Meng et al. 2024, Eq. 6). Reference-free;
    ``ref_*`` are ignored. Rewards are ``beta * average log-prob``."""
    l_c, l_r = _need_lengths(len_chosen, len_rejected, "simpo")
    avg_c, avg_r = -nll_loss(pi_chosen, l_c), -nll_loss(pi_rejected, l_r)
    return _out(-F.logsigmoid(beta * (avg_c - avg_r) - gamma), avg_c, avg_r, beta)


def cpo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1, alpha: float = 1.0,
) -> LossOutput:
    """CPO: ``-log sigma(beta (pi_c - pi_r)) + alpha * NLL(y_c)`` (Xu et al. 2024, "Contrastive Preference
    Optimization": L_prefer, Eq. 3, + L_NLL). Reference-free; ``ref_*`` are ignored.

    The paper's L_NLL is the summed ``-log pi(y_c)`` (what this returns without ``len_chosen``); with ``len_chosen``
    (how the trainers call it) it is per token, ``-pi_c / |y_c|``, as in the authors' and TRL's code (a token-mean
    cross-entropy), so that ``alpha`` does not grow with the answer's length.
    """
    nll = nll_loss(pi_chosen, len_chosen)
    losses = -F.logsigmoid(beta * (pi_chosen - pi_rejected)) + alpha * nll
    return _out(losses, pi_chosen, pi_rejected, beta, nll=nll)


def orpo_loss(
    pi_chosen: Tensor, pi_rejected: Tensor, ref_chosen: OptTensor = None, ref_rejected: OptTensor = None, *,
    len_chosen: OptTensor = None, len_rejected: OptTensor = None, beta: float = 0.1,
) -> LossOutput:
    """ORPO: ``NLL(y_c) + beta * -log sigma(log odds(y_c) - log odds(y_r))`` (Hong et al. 2024, Eq. 6-7).

    ``beta`` is the paper's ``lambda`` (TRL convention). As in the paper's implementation, ``P(y|x)`` is the
    per-token average probability: with ``a = pi / |y|``, ``log odds(y) = a - log(1 - exp(a))`` (stable
    :func:`log1mexp`), and the NLL is ``-a_c``. Reference-free; ``ref_*`` are ignored.

    Returns:
        LossOutput with (B,) losses, rewards ``beta * a`` and ``extras`` ``nll`` and ``log_odds`` (B,).
    """
    l_c, l_r = _need_lengths(len_chosen, len_rejected, "orpo")
    avg_c, avg_r = -nll_loss(pi_chosen, l_c), -nll_loss(pi_rejected, l_r)
    log_odds = (avg_c - log1mexp(avg_c)) - (avg_r - log1mexp(avg_r))
    nll = -avg_c
    return _out(nll - beta * F.logsigmoid(log_odds), avg_c, avg_r, beta, nll=nll, log_odds=log_odds)


# ------------------------------------------------------------------------------------------------- unpaired


def kto_kl_estimate(pi_kl_logps: Tensor, ref_kl_logps: Tensor) -> Tensor:
    """KTO reference point ``z0 = max(0, mean(pi_kl - ref_kl))``, detached (Ethayarajh et al. 2024).

    Args:
        pi_kl_logps, ref_kl_logps: (B,) log-probs of *mismatched* pairs (prompt i with completion j != i).

    Returns:
        0-d detached tensor. All-reduce the mean across ranks in the caller if training is distributed.
    """
    return (pi_kl_logps.detach() - ref_kl_logps.detach()).mean().clamp(min=0)


def kto_loss(
    pi_logps: Tensor, ref_logps: Tensor, desirable: Tensor, z0: float | Tensor = 0.0, *,
    beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
) -> LossOutput:
    """KTO: ``lambda_y - v(x, y)`` (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic
    Optimization", Eq. 7).

    With ``r = pi - ref``: desirable ``lambda_D * (1 - sigma(beta (r - z0)))``, undesirable
    ``lambda_U * (1 - sigma(beta (z0 - r)))``; ``1 - sigma(x)`` is computed as ``sigma(-x)``.

    Args:
        pi_logps, ref_logps: (B,) summed log-probs of the completions.
        desirable: (B,) bool labels.
        z0: reference point (see :func:`kto_kl_estimate`); clamped to ``>= 0`` and detached.
        beta: reward scale.
        desirable_weight, undesirable_weight: ``lambda_D`` and ``lambda_U``.

    Returns:
        LossOutput with (B,) losses; ``chosen_rewards``/``rejected_rewards`` are ``beta * r`` of the desirable /
        undesirable subsets (variable length); ``extras["z0"]``.
    """
    r = pi_logps - ref_logps.detach()
    z = torch.as_tensor(z0, dtype=r.dtype, device=r.device).detach().clamp(min=0)
    desirable = desirable.to(device=r.device, dtype=torch.bool)
    losses = torch.where(
        desirable,
        desirable_weight * torch.sigmoid(-beta * (r - z)),
        undesirable_weight * torch.sigmoid(-beta * (z - r)),
    )
    rewards = beta * r.detach()
    return LossOutput(losses, rewards[desirable], rewards[~desirable], {"z0": z})


def bco_loss(
    pi_logps: Tensor, ref_logps: Tensor, desirable: Tensor, z0: float | Tensor = 0.0, *,
    beta: float = 0.1, delta: float | None = None,
) -> LossOutput:
    """BCO on unpaired rows: a binary classifier on the implicit reward (Jung et al. 2024, "Binary Classifier
    Optimization for Large Language Model Alignment", Eq. 8 with the reward shift of Sec. 4.2).

    With ``r = beta (pi - ref)``: desirable ``-log sigma(r - delta)``, undesirable ``-log sigma(-(r - delta))``.
    ``delta`` is the reward shift, the running mean of rewards (caller state, updated with ``extras["mean_reward"]``);
    when the caller keeps none (``delta=None``) the batch mean of ``r`` is used, detached. ``z0`` is accepted for the
    unpaired call signature and unused.

    Args:
        pi_logps, ref_logps: (B,) summed log-probs of the completions.
        desirable: (B,) bool labels.
        beta: reward scale.
        delta: reward shift (detached); None = batch mean.

    Returns:
        LossOutput with (B,) losses; rewards of the desirable / undesirable subsets; ``extras["delta"]`` (the shift
        used) and ``extras["mean_reward"]`` (the batch mean of ``r``).
    """
    r = beta * (pi_logps - ref_logps.detach())
    rewards = r.detach()
    shift = rewards.mean() if delta is None else torch.as_tensor(delta, dtype=r.dtype, device=r.device).detach()
    desirable = desirable.to(device=r.device, dtype=torch.bool)
    losses = torch.where(desirable, -F.logsigmoid(r - shift), -F.logsigmoid(-(r - shift)))
    return LossOutput(losses, rewards[desirable], rewards[~desirable], {"delta": shift, "mean_reward": rewards.mean()})


# ---------------------------------------------------------------------------------------------------- lists


def _avg(logps: Tensor, lengths: Tensor | None) -> Tensor:
    return logps if lengths is None else logps / lengths.to(logps.dtype).clamp(min=1)


def rrhf_loss(
    pi_logps: Tensor, targets: Tensor, mask: OptTensor = None, *,
    ref_logps: OptTensor = None, lengths: OptTensor = None, beta: float = 1.0, sft_weight: float = 1.0,
) -> LossOutput:
    """RRHF: ``sum_{r_i < r_j} max(0, p_i - p_j) + sft_weight * (-p_best)`` (Yuan et al. 2023, Eq. 2-3).

    ``p_i`` is the length-normalised log-prob of candidate i (``pi / lengths``); the SFT term is the per-token NLL
    of the candidate with the highest target (the paper's ``L_ft`` as in its code). Reference-free: ``ref_logps``
    ignored.

    Args:
        pi_logps: (B, K) summed log-probs; lengths: (B, K) token counts (required).
        targets: (B, K) rewards ``r_i``, higher is better. mask: (B, K) bool validity or None.
        beta: scale on ``p`` in the ranking term (1 in the paper). sft_weight: weight of ``L_ft``.

    Returns:
        LossOutput with (B,) losses.
    """
    if lengths is None:
        raise ValueError("loss 'rrhf' needs lengths")
    valid = torch.ones_like(pi_logps, dtype=torch.bool) if mask is None else mask.bool()
    p = _avg(pi_logps, lengths).masked_fill(~valid, 0.0)
    t = targets.detach()
    worse = (t.unsqueeze(-1) < t.unsqueeze(-2)) & valid.unsqueeze(-1) & valid.unsqueeze(-2)  # [i, j]: r_i < r_j
    rank = (torch.relu(beta * (p.unsqueeze(-1) - p.unsqueeze(-2))) * worse).sum((-1, -2))
    best = sort_by_targets(t, valid)[..., :1]
    sft = -p.gather(-1, best).squeeze(-1)
    return LossOutput(rank + sft_weight * sft, extras={"sft": sft.detach()})


def lipo_loss(
    pi_logps: Tensor, targets: Tensor, mask: OptTensor = None, *,
    ref_logps: OptTensor = None, lengths: OptTensor = None, beta: float = 0.1,
) -> LossOutput:
    """LiPO-lambda (Liu et al. 2024, Eq. 6-8): lambda-weighted pairwise logistic on ``s_i = beta (pi_i - ref_i)``.

    See :func:`lambda_pairwise_logistic` (gain ``2**psi - 1``, discount ``log2(1 + rank)`` of the model's current
    ranking, ties broken by position). Summed over pairs.

    Args:
        pi_logps, ref_logps: (B, K) summed log-probs. targets: (B, K) labels ``psi``, higher is better.
        mask: (B, K) bool validity or None. lengths: unused.

    Returns:
        LossOutput with (B,) losses.
    """
    if ref_logps is None:
        raise ValueError("loss 'lipo' needs reference log-probs (ref_logps)")
    s = beta * (pi_logps - ref_logps.detach())
    return LossOutput(lambda_pairwise_logistic(s, targets, mask))


def pro_loss(
    pi_logps: Tensor, targets: Tensor, mask: OptTensor = None, *,
    ref_logps: OptTensor = None, lengths: OptTensor = None, beta: float = 1.0, sft_weight: float = 0.0,
) -> LossOutput:
    """PRO: ``sum_k -log(exp(p_k) / sum_{j >= k} exp(p_j))`` over the ranked list (Song et al. 2023, "Preference
    Ranking Optimization", Eq. 3), a Plackett-Luce NLL of the target ranking.

    ``p = beta * pi / lengths`` (length-normalised, as in the paper; summed if ``lengths`` is None). The paper's
    total loss adds ``sft_weight * NLL(best)`` (a small weight); the default 0 gives Eq. 3 alone.
    No dynamic temperature. Reference-free: ``ref_logps`` ignored.

    Args:
        pi_logps: (B, K) summed log-probs. targets: (B, K) scores, higher is better.
        mask: (B, K) bool validity or None. lengths: (B, K) token counts or None.

    Returns:
        LossOutput with (B,) losses.
    """
    p = _avg(pi_logps, lengths)
    losses = plackett_luce_nll(beta * p, targets, mask)
    if sft_weight:
        best = sort_by_targets(targets, mask)[..., :1]
        losses = losses - sft_weight * p.gather(-1, best).squeeze(-1)
    return LossOutput(losses)


# ------------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class LossSpec:
    """Registry entry describing how to feed a loss.

    Attributes:
        name: registry key.
        fn: the loss function (pairs: ``fn(pi_c, pi_r, ref_c, ref_r, *, len_chosen, len_rejected, beta, ...)``;
            unpaired: ``kto_loss``; lists: ``fn(pi_logps, targets, mask, *, ref_logps, lengths, beta, ...)``).
        needs_reference: whether reference log-probs must be computed.
        data: "pairs", "unpaired" or "lists".
        needs_lengths: whether completion token counts are required.
        paper: citation.
        running: ``(parameter, extra)`` for a loss with running state: the parameter is the running mean
            (:func:`running_mean_update`) of the extra it returns, kept by the caller across steps
            (:class:`trainers.objectives.PolicyLoss`) unless the user fixes the parameter.
    """

    name: str
    fn: Callable[..., LossOutput]
    needs_reference: bool
    data: Literal["pairs", "unpaired", "lists"]
    needs_lengths: bool
    paper: str
    running: tuple[str, str] | None = None

    @property
    def takes_labels(self) -> bool:
        """Whether the loss has a soft-label form (a ``label`` argument: P(chosen preferred) per pair)."""
        return "label" in inspect.signature(self.fn).parameters


_SPECS = [
    LossSpec("dpo", dpo_loss, True, "pairs", False, "Rafailov et al. 2023, DPO, Eq. 7"),
    LossSpec("ipo", ipo_loss, True, "pairs", False, "Azar et al. 2023, A General Theoretical Paradigm..., Eq. 17"),
    LossSpec("cdpo", cdpo_loss, True, "pairs", False, "Mitchell 2023, A note on DPO with noisy preferences"),
    LossSpec("robust", robust_dpo_loss, True, "pairs", False, "Chowdhury et al. 2024, Provably Robust DPO, Eq. 6"),
    LossSpec("hinge", hinge_loss, True, "pairs", False, "Zhao et al. 2023, SLiC-HF"),
    LossSpec("rdpo", rdpo_loss, True, "pairs", True, "Park et al. 2024, Disentangling Length from Quality"),
    LossSpec("simpo", simpo_loss, False, "pairs", True, "Meng et al. 2024, SimPO, Eq. 6"),
    LossSpec("orpo", orpo_loss, False, "pairs", True, "Hong et al. 2024, ORPO, Eq. 6-7"),
    LossSpec("cpo", cpo_loss, False, "pairs", False, "Xu et al. 2024, Contrastive Preference Optimization, Eq. 3"),
    LossSpec("kto", kto_loss, True, "unpaired", False, "Ethayarajh et al. 2024, KTO, Eq. 7"),
    LossSpec("bco", bco_loss, True, "unpaired", False, "Jung et al. 2024, Binary Classifier Optimization, Eq. 8",
             running=("delta", "mean_reward")),
    LossSpec("bco_pair", bco_pair_loss, True, "pairs", False, "Jung et al. 2024, Binary Classifier Optimization",
             running=("delta", "mean_reward")),
    LossSpec("nca_pair", nca_pair_loss, True, "pairs", False, "Chen et al. 2024, Noise Contrastive Alignment, Eq. 10"),
    LossSpec("sppo_hard", sppo_hard_loss, True, "pairs", False, "Wu et al. 2024, Self-Play Pref. Opt., Eq. 4.7"),
    LossSpec("apo_zero", apo_zero_loss, True, "pairs", False, "D'Oosterlinck et al. 2024, Anchored Pref. Opt., Eq. 7"),
    LossSpec("apo_down", apo_down_loss, True, "pairs", False, "D'Oosterlinck et al. 2024, Anchored Pref. Opt., Eq. 8"),
    LossSpec("dpop", dpop_loss, True, "pairs", False, "Pal et al. 2024, Smaug / DPO-Positive, Eq. 3"),
    LossSpec("exo_pair", exo_pair_loss, True, "pairs", False, "Ji et al. 2024, Efficient Exact Optimization, Eq. 16"),
    LossSpec("rpo", rpo_loss, True, "pairs", True, "Pang et al. 2024, Iterative Reasoning Preference Optimization"),
    LossSpec("beta_dpo", beta_dpo_loss, True, "pairs", False, "Wu et al. 2024, beta-DPO: DPO with Dynamic beta",
             running=("m0", "mean_margin")),
    LossSpec("rrhf", rrhf_loss, False, "lists", True, "Yuan et al. 2023, RRHF, Eq. 2-3"),
    LossSpec("lipo", lipo_loss, True, "lists", False, "Liu et al. 2024, LiPO, Eq. 6-8"),
    LossSpec("pro", pro_loss, False, "lists", True, "Song et al. 2023, Preference Ranking Optimization, Eq. 3"),
]

LOSSES: dict[str, LossSpec] = {spec.name: spec for spec in _SPECS}


def get_loss(name: str) -> LossSpec:
    """Look up a loss by name; raise ValueError listing the valid names if unknown."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}") from None
