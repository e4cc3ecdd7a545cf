"""Tests for the pairwise/unpaired preference losses and the loss registry in trainers.losses.

Golden values are recomputed independently from each paper's formula with plain ``math`` on small numbers.
"""

from __future__ import annotations

import math

import pytest
import torch

from alignloop.trainers import losses as L

# three pairs: (pi_chosen, pi_rejected, ref_chosen, ref_rejected, len_chosen, len_rejected)
PC = [-1.0, -3.0, -2.5]
PR = [-2.0, -1.5, -2.5]
RC = [-1.5, -2.0, -2.0]
RR = [-1.8, -2.2, -3.0]
LC = [4, 10, 7]
LR = [6, 3, 7]

PAIR_NAMES = [name for name, spec in L.LOSSES.items() if spec.data == "pairs"]


def lsig(x: float) -> float:
    """log sigmoid(x), written independently of torch."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def margin(i: int) -> float:
    return (PC[i] - RC[i]) - (PR[i] - RR[i])


def t(values, dtype=torch.float64, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=grad)


def call_pair(name: str, pc, pr, rc, rr, lc=None, lr=None, **kw) -> L.LossOutput:
    lc = t(LC) if lc is None else lc
    lr = t(LR) if lr is None else lr
    return L.get_loss(name).fn(pc, pr, rc, rr, len_chosen=lc, len_rejected=lr, **kw)


# ----------------------------------------------------------------------------------------------- golden values
# Each expected value is the paper's equation written out with ``math`` on the numbers above, the paper and equation
# cited beside it; where the code deliberately differs from the paper, the comment says how (and the loss's docstring
# why). Notation: r_w = log pi(y_w)/ref(y_w), r_l likewise, h = r_w - r_l (margin(i)), |y| a completion's tokens.


def r_w(i: int) -> float:
    return PC[i] - RC[i]


def r_l(i: int) -> float:
    return PR[i] - RR[i]


def _orpo(i: int, lam: float) -> float:
    # Hong et al. 2024, ORPO, Eq. 6-7: L_SFT + lambda * -log sigma(log(odds(y_w) / odds(y_l))), odds = P / (1 - P),
    # P(y|x) = exp(mean token log-prob) (Eq. 2-4), L_SFT the mean token NLL of y_w
    p_w, p_l = math.exp(PC[i] / LC[i]), math.exp(PR[i] / LR[i])
    log_odds_ratio = math.log((p_w / (1 - p_w)) / (p_l / (1 - p_l)))
    return -math.log(p_w) - lam * lsig(log_odds_ratio)


def _exo(i: int, beta: float, eps: float) -> float:
    # Ji et al. 2024, EXO, Eq. 16 (EXO-pref, K = 2): KL(p_theta || p_label), p_theta = softmax(beta r) over (y_w, y_l)
    # = (sigma(beta h), sigma(-beta h)), p_label = (1 - eps, eps)
    p = math.exp(beta * r_w(i)) / (math.exp(beta * r_w(i)) + math.exp(beta * r_l(i)))
    return p * math.log(p / (1 - eps)) + (1 - p) * math.log((1 - p) / eps)


GOLDEN = {
    # Rafailov et al. 2023, DPO, Eq. 7: -log sigma(beta r_w - beta r_l)
    "dpo": ({"beta": 0.5}, lambda i: -lsig(0.5 * r_w(i) - 0.5 * r_l(i))),
    # Azar et al. 2023, IPO, Eq. 17: (h - 1/(2 tau))^2, tau = beta = 0.5
    "ipo": ({"beta": 0.5}, lambda i: (margin(i) - 1 / (2 * 0.5)) ** 2),
    # Mitchell 2023, "A note on DPO with noisy preferences" (conservative DPO, the label-smoothed loss):
    # (1 - eps) * L_DPO(y_w, y_l) + eps * L_DPO(y_l, y_w)
    "cdpo": ({"beta": 0.5, "eps": 0.2}, lambda i: 0.8 * -lsig(0.5 * margin(i)) + 0.2 * -lsig(0.5 * -margin(i))),
    # Chowdhury et al. 2024, Provably Robust DPO, Eq. 6: ((1 - eps) l(y_w, y_l) - eps l(y_l, y_w)) / (1 - 2 eps)
    "robust": (
        {"beta": 0.5, "eps": 0.2},
        lambda i: (0.8 * -lsig(0.5 * margin(i)) - 0.2 * -lsig(0.5 * -margin(i))) / (1 - 2 * 0.2),
    ),
    # Zhao et al. 2023, SLiC-HF, the calibration loss max(0, delta - log pi(y_w) + log pi(y_l)) (SimPO Table 3,
    # SLiC-HF row), on the log-ratios and scaled by 1/delta, beta = 1/delta (see hinge_loss): max(0, 1 - beta h)
    "hinge": ({"beta": 0.5}, lambda i: 0.5 * max(0.0, 1 / 0.5 - margin(i))),
    # Park et al. 2024, length-regularised DPO (as written in the R-DPO row of Meng et al. 2024, SimPO, Table 3):
    # -log sigma(beta log pi(y_w)/ref(y_w) - beta log pi(y_l)/ref(y_l) + (alpha |y_w| - alpha |y_l|))
    "rdpo": ({"beta": 0.5, "alpha": 0.1}, lambda i: -lsig(0.5 * margin(i) + (0.1 * LC[i] - 0.1 * LR[i]))),
    # Meng et al. 2024, SimPO, Eq. 6: -log sigma(beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma)
    "simpo": ({"beta": 2.0, "gamma": 0.3}, lambda i: -lsig(2.0 / LC[i] * PC[i] - 2.0 / LR[i] * PR[i] - 0.3)),
    "orpo": ({"beta": 0.2}, lambda i: _orpo(i, 0.2)),
    # Xu et al. 2024, CPO, Eq. 3 (L_prefer: -log sigma(beta log pi(y_w) - beta log pi(y_l))) + alpha L_NLL; the NLL is
    # per token here when lengths are given (cpo_loss; the summed form of the paper: test_cpo_without_lengths_...)
    "cpo": ({"beta": 0.5, "alpha": 0.7}, lambda i: -lsig(0.5 * PC[i] - 0.5 * PR[i]) + 0.7 * (-PC[i] / LC[i])),
    # Jung et al. 2024, BCO, on a pair (TRL's bco_pair): -log sigma(beta r_w - delta) - log sigma(-(beta r_l - delta))
    "bco_pair": (
        {"beta": 0.5, "delta": 0.1},
        lambda i: -lsig(0.5 * r_w(i) - 0.1) - lsig(-(0.5 * r_l(i) - 0.1)),
    ),
    # Chen et al. 2024, NCA, Eq. 10 (K = 2): -log sigma(beta r_w) - 1/2 sum_{y in (y_w, y_l)} log sigma(-beta r_y)
    "nca_pair": (
        {"beta": 0.5},
        lambda i: -lsig(0.5 * r_w(i)) - 0.5 * (lsig(-0.5 * r_w(i)) + lsig(-0.5 * r_l(i))),
    ),
    # Wu et al. 2024, SPPO, Eq. 4.7 (Algorithm 1) with hard probabilities P(y_w > pi_t) = 1, P(y_l > pi_t) = 0:
    # (r_y - eta (P - 1/2))^2 summed over the pair, eta = 1/beta = 2
    "sppo_hard": ({"beta": 0.5}, lambda i: (r_w(i) - 2.0 * (1 - 0.5)) ** 2 + (r_l(i) - 2.0 * (0 - 0.5)) ** 2),
    # D'Oosterlinck et al. 2024, APO, Eq. 7 (APO-zero): -sigma(beta r_w) + sigma(beta r_l), plus the constant 1
    "apo_zero": ({"beta": 0.5}, lambda i: 1 - sig(0.5 * r_w(i)) + sig(0.5 * r_l(i))),
    # D'Oosterlinck et al. 2024, APO, Eq. 8 (APO-down): sigma(beta r_w) - sigma(beta r_w - beta r_l), plus 1
    "apo_down": ({"beta": 0.5}, lambda i: 1 + sig(0.5 * r_w(i)) - sig(0.5 * r_w(i) - 0.5 * r_l(i))),
    # Pal et al. 2024, Smaug / DPO-Positive, Eq. 3: -log sigma(beta (h - lambda max(0, log ref(y_w)/pi(y_w))))
    "dpop": ({"beta": 0.5, "lam": 5.0}, lambda i: -lsig(0.5 * (margin(i) - 5.0 * max(0.0, RC[i] - PC[i])))),
    "exo_pair": ({"beta": 0.5, "eps": 1e-3}, lambda i: _exo(i, 0.5, 1e-3)),
    # Pang et al. 2024, Iterative RPO (arXiv v3), the DPO+NLL loss: L_DPO + alpha L_NLL, L_NLL = -log pi(y_w)/|y_w|
    "rpo": ({"beta": 0.5, "alpha": 0.7}, lambda i: -lsig(0.5 * margin(i)) + 0.7 * (-PC[i] / LC[i])),
}


def test_golden_covers_every_pair_loss_but_beta_dpo():
    assert set(GOLDEN) == set(PAIR_NAMES) - {"beta_dpo"}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_value(name):
    kwargs, formula = GOLDEN[name]
    out = call_pair(name, t(PC), t(PR), t(RC), t(RR), **kwargs)
    assert out.losses.shape == (3,)
    assert out.losses.tolist() == pytest.approx([formula(i) for i in range(3)], rel=1e-9, abs=1e-12)


def test_rdpo_issue_example_a_longer_chosen_answer_needs_a_smaller_margin():
    """Park et al. 2024's R-DPO, the example of the issue that found the sign: beta 0.1, alpha 0.05, log-ratio margin
    2, chosen 120 tokens, rejected 80: -log sigma(0.1 * 2 + 0.05 * (120 - 80)) = log(1 + e^-2.2) = 0.105."""
    out = L.rdpo_loss(t([2.0]), t([0.0]), t([0.0]), t([0.0]), len_chosen=t([120]), len_rejected=t([80]), beta=0.1,
                      alpha=0.05)
    assert out.losses.item() == pytest.approx(math.log1p(math.exp(-2.2)))
    assert out.losses.item() == pytest.approx(0.105, abs=5e-4)
    # the regulariser removes the length incentive: the same margin on a longer chosen answer costs less
    shorter = L.rdpo_loss(t([2.0]), t([0.0]), t([0.0]), t([0.0]), len_chosen=t([80]), len_rejected=t([120]),
                          beta=0.1, alpha=0.05)
    assert out.losses.item() < shorter.losses.item()


def test_golden_beta_dpo():
    # Wu et al. 2024, beta-DPO, the batch-level calibration: beta_batch = [1 + alpha (E_batch[M_i] - M_0)] beta_0 with
    # M_i = beta_0 r_w - beta_0 r_l the implicit reward discrepancy, then DPO's Eq. 7 with beta_batch
    beta, alpha, m0 = 0.5, 0.6, 0.1
    mean_margin = sum(beta * r_w(i) - beta * r_l(i) for i in range(3)) / 3
    beta_used = (1 + alpha * (mean_margin - m0)) * beta
    out = L.beta_dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta, alpha=alpha, m0=m0)
    assert out.losses.tolist() == pytest.approx([-lsig(beta_used * margin(i)) for i in range(3)])
    assert out.extras["beta"].item() == pytest.approx(beta_used)
    assert out.extras["mean_margin"].item() == pytest.approx(mean_margin)
    assert not out.extras["beta"].requires_grad


def test_beta_dpo_clamps_beta_and_alpha_zero_is_dpo():
    out = L.beta_dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=0.5, alpha=100.0, m0=10.0, beta_min=1e-3)
    assert out.extras["beta"].item() == pytest.approx(1e-3)
    dpo = L.dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=0.5).losses
    assert torch.allclose(L.beta_dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=0.5, alpha=0.0).losses, dpo)


def test_ipo_length_normalised_golden():
    # Azar et al. 2023, Eq. 17 on per-token log-ratios (TRL's loss_type="ipo"; see ipo_loss)
    out = L.ipo_loss(t(PC), t(PR), t(RC), t(RR), len_chosen=t(LC), len_rejected=t(LR), beta=0.5,
                     length_normalize=True)
    expected = [((PC[i] - RC[i]) / LC[i] - (PR[i] - RR[i]) / LR[i] - 1.0) ** 2 for i in range(3)]
    assert out.losses.tolist() == pytest.approx(expected)


def test_cdpo_and_robust_reduce_to_dpo_at_eps_zero():
    dpo = L.dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=0.3).losses
    for fn in (L.cdpo_loss, L.robust_dpo_loss):
        assert torch.allclose(fn(t(PC), t(PR), t(RC), t(RR), beta=0.3, eps=0.0).losses, dpo)
    with pytest.raises(ValueError):
        L.robust_dpo_loss(t(PC), t(PR), t(RC), t(RR), eps=0.5)


def test_dpo_and_cdpo_train_on_soft_labels():
    # the binary cross-entropy of "y_w is preferred" with target p (DPO, Rafailov et al. 2023, Eq. 7 is p = 1); cDPO
    # (Mitchell 2023) flips a label with probability eps: target p (1 - eps) + (1 - p) eps
    beta, p = 0.3, [1.0, 0.7, 0.5]
    z = [beta * ((PC[i] - RC[i]) - (PR[i] - RR[i])) for i in range(3)]
    soft = L.dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta, label=t(p)).losses
    assert soft.tolist() == pytest.approx([-(p[i] * lsig(z[i]) + (1 - p[i]) * lsig(-z[i])) for i in range(3)])
    assert soft[0] == L.dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta).losses[0]  # a hard label is plain DPO
    eps = 0.1
    target = [q * (1 - eps) + (1 - q) * eps for q in p]  # a soft label flipped with probability eps
    c = L.cdpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta, eps=eps, label=t(p)).losses
    assert c.tolist() == pytest.approx([-(target[i] * lsig(z[i]) + (1 - target[i]) * lsig(-z[i])) for i in range(3)])
    # a tie (p = 0.5) pulls the margin to zero: no gradient there, a push back towards 0 either side of it
    for margin, sign in ((0.0, 0), (1.0, 1), (-1.0, -1)):
        pi_c = torch.tensor([margin], requires_grad=True)
        L.dpo_loss(pi_c, torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=1.0, label=torch.tensor([0.5])
                   ).losses.sum().backward()
        assert (pi_c.grad.sign().item() == sign) and (sign != 0 or pi_c.grad.item() == 0)


def test_cpo_without_lengths_is_the_papers_summed_nll():
    # Xu et al. 2024, CPO: L_prefer (Eq. 3) + L_NLL with L_NLL = -log pi(y_w|x), the sequence's summed log-prob
    out = L.cpo_loss(t(PC), t(PR), beta=0.5, alpha=1.0)
    assert out.losses.tolist() == pytest.approx([-lsig(0.5 * PC[i] - 0.5 * PR[i]) - PC[i] for i in range(3)])


def test_sppo_matches_beta_scaled_form():
    # Wu et al. 2024, SPPO, Eq. 4.7 with eta = 1/beta, multiplied out: ((beta r - 1/2)^2 + ...) / beta^2
    beta = 0.25
    out = L.sppo_hard_loss(t(PC), t(PR), t(RC), t(RR), beta=beta).losses
    expected = [
        ((beta * (PC[i] - RC[i]) - 0.5) ** 2 + (beta * (PR[i] - RR[i]) + 0.5) ** 2) / beta**2 for i in range(3)
    ]
    assert out.tolist() == pytest.approx(expected)


def test_implicit_rewards_and_outputs_are_detached():
    pc, pr = t(PC, grad=True), t(PR, grad=True)
    c, r = L.implicit_rewards(pc, pr, t(RC), t(RR), beta=0.5)
    assert c.tolist() == pytest.approx([0.5 * (PC[i] - RC[i]) for i in range(3)])
    assert r.tolist() == pytest.approx([0.5 * (PR[i] - RR[i]) for i in range(3)])
    assert not c.requires_grad and not r.requires_grad
    out = L.dpo_loss(pc, pr, t(RC), t(RR), beta=0.5)
    assert torch.allclose(out.chosen_rewards, c) and torch.allclose(out.rejected_rewards, r)
    assert not out.chosen_rewards.requires_grad
    c0, _ = L.implicit_rewards(pc, pr, None, None, beta=2.0)
    assert c0.tolist() == pytest.approx([2.0 * x for x in PC])


def test_log1mexp_matches_math_and_is_finite_at_zero():
    xs = [-1e-5, -0.1, -0.69, -0.7, -1.0, -10.0, -50.0]
    got = L.log1mexp(t(xs)).tolist()
    assert got == pytest.approx([math.log(-math.expm1(x)) for x in xs], rel=1e-9)
    x = torch.tensor([0.0, -1e-12], requires_grad=True)
    y = L.log1mexp(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


def test_nll_and_running_mean():
    assert L.nll_loss(t([-4.0, -6.0])).tolist() == [4.0, 6.0]
    assert L.nll_loss(t([-4.0, -6.0]), t([2, 3])).tolist() == [2.0, 2.0]
    assert L.running_mean_update(1.0, 3.0, momentum=0.75).item() == pytest.approx(1.5)


# ----------------------------------------------------------------------------------- generic pairwise properties


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_lowering_rejected_lowers_loss(name):
    base = call_pair(name, t(PC), t(PR), t(RC), t(RR)).losses
    better = call_pair(name, t(PC), t(PR) - 0.5, t(RC), t(RR)).losses
    assert (better < base).all(), (name, base, better)


@pytest.mark.parametrize("name", [n for n in PAIR_NAMES if n != "apo_down"])  # apo_down pushes chosen down too
def test_raising_chosen_lowers_loss(name):
    base = call_pair(name, t(PC), t(PR), t(RC), t(RR)).losses
    better = call_pair(name, t(PC) + 0.5, t(PR), t(RC), t(RR)).losses
    assert (better < base).all(), (name, base, better)


def test_apo_down_rewards_margin_not_chosen_likelihood():
    base = L.apo_down_loss(t(PC), t(PR), t(RC), t(RR)).losses
    shifted = L.apo_down_loss(t(PC) + 0.5, t(PR) + 0.5, t(RC), t(RR)).losses  # same margin, higher likelihoods
    assert (shifted > base).all()


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_reference_is_constant(name):
    pc, pr = t(PC, grad=True), t(PR, grad=True)
    rc, rr = t(RC, grad=True), t(RR, grad=True)
    out = call_pair(name, pc, pr, rc, rr)
    out.losses.sum().backward()
    assert rc.grad is None and rr.grad is None
    assert pc.grad is not None and torch.isfinite(pc.grad).all() and pc.grad.abs().sum() > 0
    for rewards in (out.chosen_rewards, out.rejected_rewards):
        assert rewards is None or not rewards.requires_grad


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_extreme_inputs_are_finite(name):
    # margins of about -2e4, +2e4 and 0; log-probs of -1e4 and of ~0 (probability ~1)
    pc = torch.tensor([-1e4, -1.0, -1e-8], requires_grad=True)
    pr = torch.tensor([-1.0, -1e4, -1e-8], requires_grad=True)
    rc = torch.tensor([-1.0, -1e4, -5.0])
    rr = torch.tensor([-1e4, -1.0, -5.0])
    lc, lr = torch.tensor([1, 1, 3]), torch.tensor([1, 1, 3])
    out = call_pair(name, pc, pr, rc, rr, lc, lr, beta=1.0)
    assert torch.isfinite(out.losses).all(), out.losses
    out.losses.sum().backward()
    assert torch.isfinite(pc.grad).all() and torch.isfinite(pr.grad).all()


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_reference_and_length_contract(name):
    spec = L.get_loss(name)
    if spec.needs_reference:
        with pytest.raises(ValueError, match="reference"):
            call_pair(name, t(PC), t(PR), None, None)
    else:
        out = call_pair(name, t(PC), t(PR), None, None)
        assert torch.allclose(out.losses, call_pair(name, t(PC), t(PR), t(RC), t(RR)).losses)
    if spec.needs_lengths:
        with pytest.raises(ValueError, match="length"):
            spec.fn(t(PC), t(PR), t(RC), t(RR))
    else:
        assert spec.fn(t(PC), t(PR), t(RC), t(RR)).losses.shape == (3,)


# ------------------------------------------------------------------------------------------------------- KTO

K_PI = [-1.0, -3.0, -2.0, -4.0]
K_REF = [-1.5, -2.5, -2.0, -3.0]
K_DES = [True, True, False, False]


def test_kto_golden():
    # Ethayarajh et al. 2024, KTO, Eq. 7: lambda_y - v(x, y), v = lambda_D sigma(beta (r - z0)) for a desirable y,
    # lambda_U sigma(beta (z0 - r)) for an undesirable one
    beta, z0, wd, wu = 0.5, 0.2, 1.5, 0.7
    out = L.kto_loss(t(K_PI), t(K_REF), torch.tensor(K_DES), z0, beta=beta, desirable_weight=wd,
                     undesirable_weight=wu)
    expected = []
    for p, r, d in zip(K_PI, K_REF, K_DES, strict=True):
        expected.append(wd * (1 - sig(beta * (p - r - z0))) if d else wu * (1 - sig(beta * (z0 - (p - r)))))
    assert out.losses.tolist() == pytest.approx(expected)
    assert out.chosen_rewards.tolist() == pytest.approx([beta * 0.5, beta * -0.5])
    assert out.rejected_rewards.tolist() == pytest.approx([0.0, beta * -1.0])


def test_kto_negative_z0_is_clamped():
    a = L.kto_loss(t(K_PI), t(K_REF), torch.tensor(K_DES), -3.0).losses
    b = L.kto_loss(t(K_PI), t(K_REF), torch.tensor(K_DES), 0.0).losses
    assert torch.allclose(a, b)


def test_kto_kl_estimate():
    z0 = L.kto_kl_estimate(t([-1.0, -2.0], grad=True), t([-1.5, -1.0]))
    assert z0.item() == 0.0 and not z0.requires_grad  # mean(0.5, -1) < 0 -> clamped
    z1 = L.kto_kl_estimate(t([-1.0, -2.0], grad=True), t([-2.0, -2.0]))
    assert z1.item() == pytest.approx(0.5) and not z1.requires_grad


def test_kto_preference_gradients_and_reference_constant():
    pi, ref = t(K_PI, grad=True), t(K_REF, grad=True)
    z0 = t(0.1, grad=True)
    out = L.kto_loss(pi, ref, torch.tensor(K_DES), z0)
    out.losses.sum().backward()
    assert ref.grad is None and z0.grad is None
    # desirable: raising pi lowers loss (negative grad); undesirable: lowering pi lowers loss (positive grad)
    assert (pi.grad[:2] < 0).all() and (pi.grad[2:] > 0).all()


def test_kto_extreme_inputs_are_finite():
    pi = torch.tensor([-1e4, -1e-8, -1e4, -1e-8], requires_grad=True)
    ref = torch.tensor([-1e-8, -1e4, -1e-8, -1e4])
    out = L.kto_loss(pi, ref, torch.tensor(K_DES), 1e4, beta=1.0)
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all() and torch.isfinite(pi.grad).all()


# -------------------------------------------------------------------------------------------------- registry

EXPECTED_NAMES = {
    "dpo", "ipo", "cdpo", "robust", "hinge", "rdpo", "simpo", "orpo", "cpo", "kto", "bco", "bco_pair", "nca_pair",
    "sppo_hard", "apo_zero", "apo_down", "dpop", "exo_pair", "rpo", "beta_dpo", "rrhf", "lipo", "pro",
}


def test_registry_names_resolve():
    assert set(L.LOSSES) == EXPECTED_NAMES
    for name in EXPECTED_NAMES:
        spec = L.get_loss(name)
        assert spec.name == name and callable(spec.fn) and spec.paper
        assert spec.data in ("pairs", "unpaired", "lists")


def test_registry_flags():
    reference_free = {name for name, spec in L.LOSSES.items() if not spec.needs_reference}
    assert reference_free == {"simpo", "orpo", "cpo", "rrhf", "pro"}
    assert L.LOSSES["kto"].data == "unpaired"
    assert {n for n, s in L.LOSSES.items() if s.data == "lists"} == {"rrhf", "lipo", "pro"}
    assert {n for n, s in L.LOSSES.items() if s.needs_lengths} == {"rdpo", "simpo", "orpo", "rpo", "rrhf", "pro"}


def test_registry_is_frozen():
    with pytest.raises(AttributeError):
        L.LOSSES["dpo"].needs_reference = False  # type: ignore[misc]


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as excinfo:
        L.get_loss("dpo2")
    message = str(excinfo.value)
    assert "dpo2" in message
    for name in EXPECTED_NAMES:
        assert name in message


def test_bco_unpaired_matches_formula_and_prefers_desirable():
    from alignloop.trainers.losses import bco_loss, get_loss

    pi = torch.tensor([-1.0, -2.0, -3.0])
    ref = torch.tensor([-1.5, -1.0, -3.5])
    lab = torch.tensor([True, False, True])
    out = bco_loss(pi, ref, lab, beta=0.5, delta=0.1)
    # Jung et al. 2024, BCO: -log sigma(r - delta) for a desirable y, -log sigma(-(r - delta)) otherwise, r = beta log
    # pi/ref and delta the reward shift
    r = [0.5 * (a - b) for a, b in zip(pi.tolist(), ref.tolist())]
    sig = lambda x: 1 / (1 + math.exp(-x))
    expected = [-math.log(sig(r[0] - 0.1)), -math.log(sig(-(r[1] - 0.1))), -math.log(sig(r[2] - 0.1))]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-5)
    up = bco_loss(pi + torch.tensor([1.0, 0.0, 0.0]), ref, lab, beta=0.5, delta=0.1)
    assert up.losses[0] < out.losses[0]  # raising a desirable completion lowers its loss
    assert get_loss("bco").data == "unpaired" and get_loss("bco").needs_reference


def burns_logconf(logits: torch.Tensor, labels: torch.Tensor, coef: float) -> torch.Tensor:
    """Burns et al. 2023, "Weak-to-Strong Generalization", Eq. 1, the auxiliary confidence loss
    (1 - a) CE(f(x), f_w(x)) + a CE(f(x), hard(f(x))), with hard() thresholded per batch so that the share of each
    class matches the weak labels' (their released code, weak_to_strong/loss.py logconf_loss_fn: the threshold is the
    quantile of P(class 0) at the weak labels' mean for class 1). Two classes; logits (N, 2), soft labels (N, 2)."""
    preds = torch.softmax(logits, dim=-1)
    threshold = torch.quantile(preds[:, 0].detach(), labels.mean(0)[1])
    hard = torch.stack([preds[:, 0] >= threshold, preds[:, 0] < threshold], dim=1).to(logits.dtype).detach()
    target = labels * (1 - coef) + hard * coef
    return -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


@pytest.mark.parametrize("label", [None, [1.0, 0.7, 0.55, 1.0, 0.9]])
def test_weak_to_strong_confidence_loss_is_burns_loss_on_both_orders_of_each_pair(label):
    """A pair is one example whichever answer is listed first; pairs are stored with the weak label's winner first, so
    the class "first listed wins" has prior 1 (or above 1/2) by construction, not by the data. Burns' loss on the
    batch holding each pair in both orders (class 0 = first wins: logits (z, 0) and (0, z), labels (l, 1 - l) and
    (1 - l, l)) is the reference: loss and gradient equal ours on the stored batch. The tie (z = 0, the first step of
    DPO, where policy = reference) is where a threshold of 'margin > 0' differs."""
    alpha = 0.3
    z = t([2.0, -1.0, 0.0, 0.5, -0.25], grad=True)
    weak = torch.ones(5, dtype=torch.float64) if label is None else t(label)
    zeros = torch.zeros_like(z)
    first, second = torch.stack([z, zeros], 1), torch.stack([zeros, z], 1)  # the stored order, then swapped
    logits = torch.cat([first, second])
    labels = torch.cat([torch.stack([weak, 1 - weak], 1), torch.stack([1 - weak, weak], 1)])
    reference = burns_logconf(logits, labels, alpha)
    (grad_reference,) = torch.autograd.grad(reference, z)

    target = L.confidence_target(None if label is None else t(label), z, alpha)
    ours = L.dpo_loss(z, zeros, zeros, zeros, beta=1.0, label=target).losses.mean()
    (grad_ours,) = torch.autograd.grad(ours, z)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12)
    assert grad_ours.tolist() == pytest.approx(grad_reference.tolist(), rel=1e-9, abs=1e-12)


def test_weak_to_strong_confidence_target():
    label, margin = torch.tensor([1.0, 1.0, 0.7, 1.0]), torch.tensor([2.0, -1.0, 0.5, 0.0], requires_grad=True)
    target = L.confidence_target(label, margin, alpha=0.25)
    # (1 - a) * weak label + a * hard, hard 1 / 0 by the margin's sign and 1/2 at a tie; no gradient through it
    assert target.tolist() == pytest.approx([1.0, 0.75, 0.7 * 0.75 + 0.25, 0.75 + 0.125]) and not target.requires_grad
    assert L.confidence_target(None, margin, 0.5).tolist() == [1.0, 0.5, 1.0, 0.75]  # a hard weak label is 1


def test_performance_gap_recovered():
    from alignloop.trainers.evaluate import performance_gap_recovered as pgr

    assert pgr(0.6, 0.7, 0.8) == pytest.approx(0.5) and pgr(0.6, 0.55, 0.8) == pytest.approx(-0.25)
    assert pgr(0.8, 0.9, 0.8) is None


def test_running_state_is_a_mean_of_training_batches_only_and_a_fixed_parameter_stays():
    """BCO's reward shift and beta-DPO's m0 are running means the caller keeps: each training call uses the state
    of the calls before it and moves it (momentum 0.9); a call without gradients (evaluation) reads it only."""
    from alignloop.trainers.objectives import PolicyLoss

    loss = PolicyLoss(L.get_loss("bco_pair"), 0.5)
    first, second = (t(PC), t(PR), t(RC), t(RR)), (t(PR), t(PC), t(RR), t(RC))

    def mean_reward(batch) -> float:  # beta (pi - ref) over the chosen and the rejected answers
        pc, pr, rc, rr = (x.tolist() for x in batch)
        return 0.5 * sum(pc[i] - rc[i] + pr[i] - rr[i] for i in range(3)) / 6

    out = loss(*first)  # no state yet: the loss's default shift (0), then the state is this batch's mean
    assert out.losses.tolist() == pytest.approx(call_pair("bco_pair", *first, beta=0.5).losses.tolist())
    assert loss.state["delta"].item() == pytest.approx(mean_reward(first))
    with torch.no_grad():
        evaluated = loss(*second)
    assert loss.state["delta"].item() == pytest.approx(mean_reward(first))  # evaluation did not move it
    out = loss(*second)
    assert out.losses.tolist() == pytest.approx(evaluated.losses.tolist())
    assert out.losses.tolist() == pytest.approx(call_pair("bco_pair", *second, beta=0.5,
                                                          delta=mean_reward(first)).losses.tolist())
    assert loss.state["delta"].item() == pytest.approx(0.9 * mean_reward(first) + 0.1 * mean_reward(second))
    resumed = PolicyLoss(L.get_loss("bco_pair"), 0.5)
    resumed.load_state_dict(loss.state_dict())
    assert resumed(*first).losses.tolist() == pytest.approx(loss(*first).losses.tolist())

    fixed = PolicyLoss(L.get_loss("bco_pair"), 0.5, {"delta": 0.1})  # set by the user: not a running mean
    fixed(*first)
    assert fixed.state == {} and fixed(*second).losses.tolist() == pytest.approx(
        call_pair("bco_pair", *second, beta=0.5, delta=0.1).losses.tolist())

    beta = PolicyLoss(L.get_loss("beta_dpo"), 0.5)
    beta(*first)
    used = beta(*second).extras["beta"].item()
    m0 = sum(0.5 * margin(i) for i in range(3)) / 3  # the first batch's mean margin
    assert used == pytest.approx(0.5 * (1 + 0.5 * (-m0 - m0)))  # the swapped batch's margin is -m0; alpha 0.5
    unpaired = PolicyLoss(L.get_loss("bco"), 0.5)
    pi, ref, lab = t([-1.0, -2.0]), t([-1.5, -1.0]), torch.tensor([True, False])
    unpaired(pi, ref, lab)
    assert unpaired.state["delta"].item() == pytest.approx(0.5 * (0.5 - 1.0) / 2)
    dpo = PolicyLoss(L.get_loss("dpo"), 0.5)
    dpo(*first)
    assert L.get_loss("dpo").running is None and dpo.state == {}  # a loss without running state keeps none


def _rank_running_mean(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    from alignloop.trainers.objectives import PolicyLoss

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        loss = PolicyLoss(L.get_loss("bco_pair"), 1.0)
        shift = float(rank + 1)  # rank r's implicit rewards are all r + 1
        loss(t([shift] * 2), t([shift] * 2), t([0.0] * 2), t([0.0] * 2))
        out.put((rank, loss.state["delta"].item()))
    finally:
        dist.destroy_process_group()


def test_running_state_is_the_same_on_every_rank_of_a_distributed_run():
    """Two CPU processes (gloo), batches with different rewards: both keep the mean over the ranks."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank_running_mean, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(out.get(timeout=120) for _ in procs)  # read before joining: a child exits once its put is read
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert got == [(0, pytest.approx(1.5)), (1, pytest.approx(1.5))]
