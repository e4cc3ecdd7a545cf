"""Online merging optimizers (Lu et al. 2024, "Online Merging Optimizers for Boosting Rewards and Mitigating Tax in
Alignment"; reference implementation github.com/QwenLM/online_merging_optimizers): every optimizer step is merged with
the SFT delta ``tau = theta_ref - theta_base`` (the reference / initial policy minus the pretrained model it was
fine-tuned from), with ``delta_t`` AdamW's step (Eq. 2: ``theta_t = theta_{t-1} + F(delta_t) (+) F(tau)``):

- **OnDARE** (``method="dare"``, Eq. 3-4): ``theta_t = theta_{t-1} + (1 - alpha) F(delta_t) + alpha F(tau)``, ``F``
  DARE's drop and rescale (Yu et al. 2024): each entry kept with probability ``reserve`` and divided by it, so
  ``E[F(x)] = x``. At ``alpha = 0`` this is gradient dropout with rescaling (ChildTuning-F), as the paper says; its
  merged step is AdamW's in expectation. ``rescale=False`` is the ablation (``merge_no_rescale``): then every step is
  ``reserve`` of AdamW's on average, AdamW at a ``1/reserve`` times smaller learning rate.
- **OnTIES** (``method="ties"``, Eq. 5-7): TIES merging (Yadav et al. 2023) of the two: each trimmed to its
  ``reserve`` share of largest-magnitude entries (per tensor), the sign of each entry elected from the sum of the
  trimmed candidates, ``F(tau) + F(delta_t)`` (TIES' election, and the reference code's), then each side weighted
  ``alpha`` and ``1 - alpha`` and added only where it agrees with the elected sign.

As in the reference code, the drop (OnDARE) or trim (OnTIES) of ``tau`` is drawn once, when the optimizer is built,
and the step's every step; the drop of ``tau`` comes from a generator seeded with the run's seed, so a resumed run
draws the same. AdamW's decoupled weight decay is applied whole, not dropped or trimmed (the reference code applies it
after the merge); the rest is the merged Adam step.

Where this differs from the reference code, and why:

- The paper's Eq. 4 and Eq. 6 write ``F`` without rescaling and its text says rescaling "harms the numeric
  stabilities"; its code's ``F.dropout`` rescales (by ``1/reserve``) all the same, and what it leaves off by default is
  a further L1-norm rescale with a clamp at 1. This follows the code (and the paper's claims that OnDARE is unbiased
  and reduces to ChildTuning at ``alpha = 0``): a drop without rescaling would make every step about ``reserve`` of
  AdamW's. The code's clamp of the rescaled ``tau`` to ``[-1, 1]`` is not applied: it biases ``F(tau)`` wherever
  ``|tau| > reserve`` and the paper does not mention it.
- TIES' trim keeps ``ceil(reserve * n)`` entries of a tensor (at least one; ties at the cut kept) where the reference
  code keeps ``floor(reserve * n)`` and skips the trim of a tensor with fewer than ``1/reserve`` entries.

OnTIES' trim of each step is an exact top-k per tensor. The merge alone, on SmolLM2-135M's tensor shapes on this
project's 2-core CPU with other jobs running (best of 2): OnTIES 15.7 s a step, OnDARE 5.6 s (one random mask a step
now that ``tau``'s is drawn once; 10.6 s with a fresh one for ``tau`` too).

A larger ``alpha`` pulls training harder towards the SFT direction, trading reward for less alignment tax; the
paper searches ``alpha`` from about 1e-7 and keeps ``reserve`` near 0.01.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignloop.warehouse.errors import AlignloopError

METHODS = ("dare", "ties")


def dare(x: Tensor, reserve: float, rescale: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """DARE's drop and rescale: keep each entry with probability ``reserve`` (zero the rest) and divide the kept ones
    by ``reserve``, so the expectation is ``x``; ``rescale=False`` (an ablation) only drops."""
    if reserve >= 1.0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) < reserve
    out = x * keep
    return out / reserve if rescale else out


def ondare(step: Tensor, tau_dropped: Tensor, alpha: float, reserve: float, rescale: bool = True,
           generator: torch.Generator | None = None) -> Tensor:
    """OnDARE's merged step ``(1 - alpha) F(step) + alpha F(tau)``: the step's drop drawn now, ``tau``'s already
    drawn (:func:`dare`, once per run)."""
    return (1.0 - alpha) * dare(step, reserve, rescale, generator) + alpha * tau_dropped


def trim(x: Tensor, reserve: float) -> Tensor:
    """TIES' trim: keep the ``ceil(reserve * n)`` entries of largest magnitude (ties at the cut kept too), zero
    the rest."""
    if reserve >= 1.0:
        return x
    mag = x.abs().flatten().float()
    k = max(1, math.ceil(reserve * mag.numel()))
    cut = torch.topk(mag, k, sorted=False).values.min()
    return x * (x.abs() >= cut.to(x.dtype))


def elect(*candidates: Tensor) -> Tensor:
    """TIES' sign election: per entry the sign (+1 or -1; +1 on an exact tie) of the candidates' sum, so the one of
    larger magnitude wins where they disagree."""
    return torch.where(sum(candidates) >= 0, 1.0, -1.0).to(candidates[0].dtype)


def onties(step: Tensor, tau_trimmed: Tensor, alpha: float, reserve: float) -> Tensor:
    """OnTIES' merged step: the step trimmed now, ``tau`` already trimmed (once per run); the sign elected from the
    unweighted trimmed candidates; ``1 - alpha`` of the step and ``alpha`` of ``tau`` added where they agree with it.

    The election is not weighted by ``alpha``: with ``alpha`` ~1e-6 a weighted sum lets the step win every entry, and
    OnTIES would be trimmed AdamW. Unweighted, the SFT delta (much larger than one step) vetoes the step's entries
    that oppose it, which is how it steers training (TIES; the reference code's ``majority_sign``). Measured on the
    tests' tiny Llama (28,896 entries; ``tau`` from 200 steps of SFT at lr 1e-4; then 30 steps at lr 5e-6, alpha
    1e-6, reserve 0.01): 239 of the step's 13,756 kept entries were in ``tau``'s kept 1% too, 28 of them with the
    opposite sign; the SFT delta won all 28 (0.2% of the step's entries) here, none of them with an alpha-weighted
    election.
    """
    step = trim(step, reserve)
    sign = elect(step, tau_trimmed)
    return (1.0 - alpha) * step * (torch.sign(step) == sign) + alpha * tau_trimmed * (torch.sign(tau_trimmed) == sign)


class OnlineMergingAdamW(torch.optim.AdamW):
    """AdamW whose every step is merged with each parameter's SFT delta by :func:`ondare` or :func:`onties`.
    ``deltas`` maps a parameter (by ``id``) to its delta; parameters without one (e.g. a new head) take AdamW's step
    unchanged. ``rescale`` (OnDARE): divide kept entries by ``reserve`` (False only as an ablation). ``seed``: the drop
    of the deltas (OnDARE), drawn once here."""

    def __init__(self, params: Any, *, deltas: dict[int, Tensor], alpha: float, reserve: float, rescale: bool = True,
                 method: str = "dare", seed: int = 0, **kw: Any) -> None:
        if method not in METHODS:
            raise AlignloopError(f"online merging: unknown method {method!r}; expected one of {', '.join(METHODS)}")
        super().__init__(params, **kw)
        if deltas and not any(id(p) in deltas for g in self.param_groups for p in g["params"]):
            # e.g. FSDP's flattened or DeepSpeed ZeRO-3's partitioned parameters: merging would silently do nothing
            raise AlignloopError("online merging: none of the optimizer's parameters is one the SFT delta was read "
                                 "for (a sharded or wrapped model: FSDP or DeepSpeed ZeRO-3 are not supported; use "
                                 "DDP or one process)")
        self.alpha, self.reserve, self.rescale, self.method = alpha, reserve, rescale, method
        generator = torch.Generator().manual_seed(seed)
        # the deltas' drop (OnDARE) or trim (OnTIES), drawn once in the parameters' order, kept on their devices
        self.deltas = {id(p): (trim(deltas[id(p)], reserve) if method == "ties"
                               else dare(deltas[id(p)].cpu(), reserve, rescale, generator)).to(p)
                       for g in self.param_groups for p in g["params"] if id(p) in deltas}

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        merged = [(p, g["lr"] * g["weight_decay"]) for g in self.param_groups for p in g["params"]
                  if p.grad is not None and id(p) in self.deltas]
        before = [p.detach().clone() for p, _ in merged]
        loss = super().step(closure)
        for (p, decay), old in zip(merged, before):
            shrunk = old * (1.0 - decay)  # AdamW's decoupled weight decay, whole; the rest of its update is Adam's
            tau = self.deltas[id(p)]
            step = (onties(p - shrunk, tau, self.alpha, self.reserve) if self.method == "ties"
                    else ondare(p - shrunk, tau, self.alpha, self.reserve, self.rescale))
            p.copy_(shrunk + step)
        return loss


def optimizer_kwargs(t: Any, model: torch.nn.Module, reference: str | Path) -> dict[str, Any]:
    """:class:`OnlineMergingAdamW`'s merging arguments from a ``TrainConfig`` with ``merge_base`` set."""
    return {"deltas": sft_deltas(model, reference, t.merge_base), "alpha": t.merge_alpha,
            "reserve": t.merge_reserve, "rescale": not t.merge_no_rescale, "method": t.merge_method, "seed": t.seed}


def sft_deltas(model: torch.nn.Module, reference: str | Path, base: str | Path) -> dict[int, Tensor]:
    """``theta_ref - theta_base`` for each trainable parameter of ``model``, by parameter ``id``, read from the two
    model folders' weights (same architecture). A parameter missing from either (a new head) gets none."""
    from transformers import AutoModelForCausalLM

    def weights(path: str | Path) -> dict[str, Tensor]:
        if not (Path(path) / "config.json").is_file():
            raise AlignloopError(f"online merging: {path} is not a model folder (no config.json)")
        return {n: p.detach() for n, p in AutoModelForCausalLM.from_pretrained(str(path)).named_parameters()}

    ref, pre = weights(reference), weights(base)
    out: dict[int, Tensor] = {}
    for name, p in model.named_parameters():
        key = name if name in ref else name.removeprefix("model.") if name.removeprefix("model.") in ref else None
        if not p.requires_grad or key is None or key not in pre:
            continue
        if ref[key].shape != p.shape or pre[key].shape != p.shape:
            raise AlignloopError(f"online merging: {name} has shape {tuple(p.shape)} in the policy, "
                                 f"{tuple(ref[key].shape)} in {reference} and {tuple(pre[key].shape)} in {base}")
        out[id(p)] = (ref[key] - pre[key]).to(p.dtype)
    if not out:
        raise AlignloopError(f"online merging: no parameter of the policy is in both {reference} and {base}")
    return out
