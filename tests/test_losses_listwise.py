"""Tests for list losses (RRHF, LiPO-lambda, PRO), reward-model losses (Bradley-Terry, Plackett-Luce), PRM losses."""

from __future__ import annotations

import math

import pytest
import torch

from alignloop.trainers import losses as L


def lsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def t(values, dtype=torch.float64, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=grad)


def pl_nll_by_hand(scores: list[float], targets: list[float]) -> float:
    """Plackett 1975 / Luce 1959, as the K-wise reward-model likelihood of Zhu et al. 2023 ("Principled RLHF from
    pairwise or K-wise comparisons", the K-wise MLE): -sum_k log(exp(s_(k)) / sum_{j >= k} exp(s_(j))), (k) the k-th
    best by the targets; PRO's Eq. 3 (Song et al. 2023) is the same sum on its length-normalised log-probs."""
    order = sorted(range(len(scores)), key=lambda i: -targets[i])
    s = [scores[i] for i in order]
    return -sum(s[k] - math.log(sum(math.exp(x) for x in s[k:])) for k in range(len(s)))


# ------------------------------------------------------------------------------------------------ reward models


def test_bradley_terry_golden_with_margin_and_centring():
    rc, rr = [1.0, -0.5], [0.2, 0.7]
    out = L.bradley_terry_loss(t(rc), t(rr), margin=t([0.5, 0.0]), center_coef=0.01)
    # Touvron et al. 2023, Llama 2, Eq. 2: -log sigma(r(x, y_c) - r(x, y_r) - m(r)); plus Eisenstein et al. 2023's
    # centring term eta (r(x, y_c) + r(x, y_r))^2
    expected = [-lsig(1.0 - 0.2 - 0.5) + 0.01 * 1.2**2, -lsig(-0.5 - 0.7) + 0.01 * 0.2**2]
    assert out.tolist() == pytest.approx(expected)
    plain = L.bradley_terry_loss(t(rc), t(rr))
    assert plain.tolist() == pytest.approx([-lsig(0.8), -lsig(-1.2)])


def test_bradley_terry_with_soft_labels():
    rc, rr, p = [1.0, -0.5, 0.3], [0.2, 0.7, 0.3], [1.0, 0.8, 0.5]
    out = L.bradley_terry_loss(t(rc), t(rr), label=t(p))
    d = [a - b for a, b in zip(rc, rr)]
    assert out.tolist() == pytest.approx([-(p[i] * lsig(d[i]) + (1 - p[i]) * lsig(-d[i])) for i in range(3)])
    assert out[0] == L.bradley_terry_loss(t(rc), t(rr))[0]


def test_plackett_luce_golden_k3():
    scores, targets = [0.3, -1.2, 2.0], [1.0, 3.0, 2.0]
    out = L.plackett_luce_loss(t([scores]), t([targets]))
    assert out.item() == pytest.approx(pl_nll_by_hand(scores, targets))


def test_plackett_luce_k2_equals_bradley_terry():
    r = t([[1.3, -0.4], [0.2, 0.9], [-2.0, 5.0]])
    targets = t([[1.0, 0.0], [0.0, 1.0], [5.0, 2.0]])  # which one is preferred varies
    chosen = torch.where(targets[:, 0] > targets[:, 1], r[:, 0], r[:, 1])
    rejected = torch.where(targets[:, 0] > targets[:, 1], r[:, 1], r[:, 0])
    assert torch.allclose(L.plackett_luce_loss(r, targets), L.bradley_terry_loss(chosen, rejected))


def test_plackett_luce_mask_equals_truncated_list_and_pads_get_no_grad():
    scores = t([[0.3, -1.2, 2.0, 7.0, -9.0]], grad=True)
    targets = t([[1.0, 3.0, 2.0, 10.0, -10.0]])
    mask = torch.tensor([[True, True, True, False, False]])
    out = L.plackett_luce_loss(scores, targets, mask)
    assert out.item() == pytest.approx(pl_nll_by_hand([0.3, -1.2, 2.0], [1.0, 3.0, 2.0]))
    out.sum().backward()
    assert scores.grad[0, 3:].abs().sum() == 0


def test_plackett_luce_ranks_via_negation_and_stability():
    scores = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    ranks = torch.tensor([[1, 2, 3], [1, 2, 3]])  # 1 = best
    out = L.plackett_luce_loss(scores, -ranks)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(scores.grad).all()
    assert out[0].item() < out[1].item()


# ------------------------------------------------------------------------------------------------------ PRO


def test_pro_k2_equals_pairwise_logistic():
    logps, lengths = t([[-2.0, -6.0], [-9.0, -3.0]]), t([[2, 3], [3, 1]])
    targets = t([[0.0, 1.0], [1.0, 0.0]])  # best is item 1, then item 0
    p = logps / lengths
    chosen = torch.where(targets[:, 0] > targets[:, 1], p[:, 0], p[:, 1])
    rejected = torch.where(targets[:, 0] > targets[:, 1], p[:, 1], p[:, 0])
    out = L.pro_loss(logps, targets, lengths=lengths)
    assert torch.allclose(out.losses, -torch.nn.functional.logsigmoid(chosen - rejected))
    assert out.losses.tolist() == pytest.approx([-lsig(-2.0 - -1.0), -lsig(-3.0 - -3.0)])


def test_pro_golden_k3_with_sft():
    # Song et al. 2023, PRO, Eq. 3 (the Plackett-Luce sum on p = log pi / |y|) + the paper's weighted SFT term, the
    # per-token NLL of the best
    logps, lengths, targets = [-2.0, -6.0, -1.0], [2, 3, 4], [0.5, 2.0, 1.0]
    p = [a / b for a, b in zip(logps, lengths, strict=True)]
    out = L.pro_loss(t([logps]), t([targets]), lengths=t([lengths]), sft_weight=0.05)
    assert out.losses.item() == pytest.approx(pl_nll_by_hand(p, targets) - 0.05 * p[1])


# ----------------------------------------------------------------------------------------------------- RRHF


def rrhf_by_hand(logps, lengths, rewards, sft_weight=1.0):
    # Yuan et al. 2023, RRHF, Eq. 2-3: p_i = log P(y_i)/|y_i|, L_rank = sum_{r_i < r_j} max(0, p_i - p_j),
    # L_ft = NLL of the best y (per token here, as in the authors' code; see rrhf_loss), L = L_rank + L_ft
    p = [a / b for a, b in zip(logps, lengths, strict=True)]
    rank = sum(max(0.0, p[i] - p[j]) for i in range(len(p)) for j in range(len(p)) if rewards[i] < rewards[j])
    best = max(range(len(p)), key=lambda i: rewards[i])
    return rank - sft_weight * p[best]


def test_rrhf_golden():
    logps, lengths, rewards = [-2.0, -6.0, -1.0], [2, 3, 4], [0.5, 2.0, 1.0]
    out = L.rrhf_loss(t([logps]), t([rewards]), lengths=t([lengths]))
    assert out.losses.item() == pytest.approx(rrhf_by_hand(logps, lengths, rewards))
    assert out.extras["sft"].item() == pytest.approx(2.0)


def test_rrhf_mask_ties_and_needs_lengths():
    logps = t([[-2.0, -6.0, -1.0, 5.0]])
    lengths = t([[2, 3, 4, 0]])
    rewards = t([[0.5, 2.0, 0.5, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    out = L.rrhf_loss(logps, rewards, mask, lengths=lengths)
    assert out.losses.item() == pytest.approx(rrhf_by_hand([-2.0, -6.0, -1.0], [2, 3, 4], [0.5, 2.0, 0.5]))
    with pytest.raises(ValueError, match="lengths"):
        L.rrhf_loss(logps, rewards, mask)


# ----------------------------------------------------------------------------------------------------- LiPO


def test_lipo_golden_k3():
    # Liu et al. 2024, LiPO-lambda, Eq. 6-8: -sum_{psi_i > psi_j} Delta_ij log sigma(s_i - s_j), s = beta log pi/ref,
    # Delta_ij = |G_i - G_j| |1/D(tau_i) - 1/D(tau_j)|, G = 2^psi - 1, D(tau) = log2(1 + tau), tau the model's rank
    pi, ref, psi = [-1.0, -2.0, -3.0], [-1.5, -1.0, -3.2], [1.0, 2.0, 0.0]
    s = [a - b for a, b in zip(pi, ref, strict=True)]  # beta = 1: [0.5, -1.0, 0.2]
    rank = {0: 1, 2: 2, 1: 3}  # model ranking by s
    gain = [2**x - 1 for x in psi]
    inv_d = {i: 1 / math.log2(1 + rank[i]) for i in range(3)}
    expected = 0.0
    for i in range(3):
        for j in range(3):
            if psi[i] > psi[j]:
                delta = abs(gain[i] - gain[j]) * abs(inv_d[i] - inv_d[j])
                expected -= delta * lsig(s[i] - s[j])
    out = L.lipo_loss(t([pi]), t([psi]), ref_logps=t([ref]), beta=1.0)
    assert out.losses.item() == pytest.approx(expected)


def test_lipo_k2_is_weighted_logistic_and_ref_is_constant():
    pi = t([[-1.0, -2.0]], grad=True)
    ref = t([[-1.2, -1.5]], grad=True)
    out = L.lipo_loss(pi, t([[1.0, 0.0]]), ref_logps=ref, beta=0.5)
    weight = (2**1 - 1) * (1 - 1 / math.log2(3))
    assert out.losses.item() == pytest.approx(-weight * lsig(0.5 * (0.2 - -0.5)))
    out.losses.sum().backward()
    assert ref.grad is None and pi.grad[0, 0] < 0 < pi.grad[0, 1]
    with pytest.raises(ValueError, match="reference"):
        L.lipo_loss(pi, t([[1.0, 0.0]]))


def test_lipo_tied_scores_still_learn():
    # at initialisation policy == reference, so all s are tied; ranks break ties by position so weights are > 0
    pi = t([[-1.0, -2.0, -3.0]], grad=True)
    out = L.lipo_loss(pi, t([[0.0, 1.0, 2.0]]), ref_logps=pi.detach().clone())
    out.losses.sum().backward()
    assert out.losses.item() > 0 and pi.grad.abs().sum() > 0


def test_lipo_mask_equals_truncated_list():
    pi, ref, psi = [-1.0, -2.0, -3.0], [-1.5, -1.0, -3.2], [1.0, 2.0, 0.0]
    full = L.lipo_loss(t([pi]), t([psi]), ref_logps=t([ref])).losses
    padded = L.lipo_loss(
        t([pi + [50.0]]), t([psi + [9.0]]), torch.tensor([[True, True, True, False]]), ref_logps=t([ref + [0.0]])
    ).losses
    assert torch.allclose(full, padded)


# ------------------------------------------------------------------------------------------ generic list props

LIST_NAMES = [name for name, spec in L.LOSSES.items() if spec.data == "lists"]


def call_list(name, pi, targets, mask=None, ref=None, lengths=None, **kw):
    ref = torch.full_like(pi, -2.0) if ref is None else ref
    lengths = torch.tensor([[3, 4, 5]] * pi.shape[0]) if lengths is None else lengths
    return L.get_loss(name).fn(pi, targets, mask, ref_logps=ref, lengths=lengths, **kw)


@pytest.mark.parametrize("name", LIST_NAMES)
def test_list_raising_best_lowers_loss(name):
    pi, targets = t([[-3.0, -2.0, -4.0]]), t([[2.0, 1.0, 0.0]])  # item 0 is best but not the most likely
    base = call_list(name, pi, targets).losses
    # small step that keeps the model's ranking (LiPO's lambda weights are piecewise constant in it)
    better = call_list(name, pi + t([[0.5, 0.0, 0.0]]), targets).losses
    assert better.shape == (1,) and (better < base).all()
    grad_pi = pi.clone().requires_grad_(True)
    call_list(name, grad_pi, targets).losses.sum().backward()
    assert grad_pi.grad[0, 0] < 0


@pytest.mark.parametrize("name", LIST_NAMES)
def test_list_reference_constant_and_extremes_finite(name):
    pi = torch.tensor([[-1e4, -1e-8, -5.0], [-1e-8, -1e4, -1e4]], requires_grad=True)
    ref = torch.tensor([[-1e-8, -1e4, -5.0], [-1e4, -1e-8, -1.0]], requires_grad=True)
    targets = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    out = call_list(name, pi, targets, mask, ref, beta=1.0)
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all() and torch.isfinite(pi.grad).all()
    assert ref.grad is None
    assert pi.grad[1, 2] == 0  # padded entry


# ------------------------------------------------------------------------------------------------------- PRM


def test_map_step_labels():
    raw = torch.tensor([[-1, 0, 1, -100]])
    assert L.map_step_labels(raw, 3).tolist() == [[0, 1, 2, -100]]
    assert L.map_step_labels(raw, 2).tolist() == [[0, 1, 1, -100]]
    assert L.map_step_labels(raw, 1, neutral_label=0).tolist() == [[0, 0, 1, -100]]
    with pytest.raises(ValueError):
        L.map_step_labels(raw, 4)


def test_prm_three_class_golden():
    # Lightman et al. 2023 (PRM800K's -1/0/+1 step ratings) trained as Wang et al. 2024 (Math-Shepherd) train a PRM:
    # the cross-entropy of each labelled step's class, averaged over the labelled steps
    logits = [[[1.0, 2.0, 0.5], [9.0, 9.0, 9.0], [0.0, -1.0, 3.0]]]
    labels = torch.tensor([[0, -100, 2]])

    def ce(row, k):
        return math.log(sum(math.exp(x) for x in row)) - row[k]

    out = L.prm_step_loss(t(logits), labels)
    assert out.item() == pytest.approx((ce(logits[0][0], 0) + ce(logits[0][2], 2)) / 2)


def test_prm_ignored_positions_contribute_nothing():
    labels = torch.tensor([[0, -100, 2, -100], [-100, 1, -100, -100]])
    logits = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    changed = logits.clone()
    changed[labels == -100] = torch.tensor([1e4, float("inf"), -1e4], dtype=torch.float64)
    changed.requires_grad_(True)
    base = L.prm_step_loss(logits, labels)
    out = L.prm_step_loss(changed, labels)
    assert out.item() == pytest.approx(base.item())
    out.backward()
    assert changed.grad[labels == -100].abs().sum() == 0


def test_prm_binary_one_and_two_logit_forms_agree():
    z = t([[0.3, -2.0, 5.0]])
    labels = torch.tensor([[1, 0, -100]])
    one = L.prm_step_loss(z.unsqueeze(-1), labels)
    two = L.prm_step_loss(torch.stack([torch.zeros_like(z), z], dim=-1), labels)
    assert one.item() == pytest.approx(two.item())
    assert one.item() == pytest.approx((-lsig(0.3) - lsig(2.0)) / 2)


def test_prm_no_labels_is_zero_with_graph():
    logits = torch.randn(1, 2, 3, requires_grad=True)
    out = L.prm_step_loss(logits, torch.full((1, 2), -100))
    out.backward()
    assert out.item() == 0.0 and logits.grad.abs().sum() == 0
