"""Online merging optimizer OnDARE (Lu et al. 2024, "Online Merging Optimizers for Boosting Rewards and Mitigating
Tax in Alignment", Eq. 3-4): every optimizer step is merged with the SFT delta ``tau = theta_ref - theta_base`` (the
reference / initial policy minus the pretrained model it was fine-tuned from):

    theta_t = theta_{t-1} + (1 - alpha) * F(delta_t) + alpha * F(tau)

where ``delta_t`` is AdamW's update and ``F`` keeps each entry with probability ``reserve`` (DARE's random drop;
with ``rescale`` the kept entries are divided by ``reserve``). A larger ``alpha`` pulls training harder towards
the SFT direction, trading reward for less alignment tax; the paper searches ``alpha`` from about 1e-7 and keeps
``reserve`` near 0.01. OnTIES (the paper's top-k and sign-consensus variant) is not implemented.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from warehouse.errors import AlignloopError


def dare(x: Tensor, reserve: float, rescale: bool, generator: torch.Generator | None = None) -> Tensor:
    """Keep each entry with probability ``reserve`` (zero the rest); divide the kept ones by ``reserve`` when
    ``rescale``."""
    if reserve >= 1.0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) < reserve
    out = x * keep
    return out / reserve if rescale else out


def ondare(old: Tensor, delta: Tensor, tau: Tensor, alpha: float, reserve: float, rescale: bool,
           generator: torch.Generator | None = None) -> Tensor:
    """The merged parameter ``old + (1 - alpha) F(delta) + alpha F(tau)`` (independent drops for the two)."""
    return old + (1.0 - alpha) * dare(delta, reserve, rescale, generator) + alpha * dare(tau, reserve, rescale,
                                                                                         generator)


class OnDAREAdamW(torch.optim.AdamW):
    """AdamW whose every step is merged with each parameter's SFT delta by :func:`ondare`. ``deltas`` maps a
    parameter (by ``id``) to its delta; parameters without one (e.g. a new head) take AdamW's step unchanged."""

    def __init__(self, params: Any, *, deltas: dict[int, Tensor], alpha: float, reserve: float, rescale: bool,
                 **kw: Any) -> None:
        super().__init__(params, **kw)
        self.deltas, self.alpha, self.reserve, self.rescale = deltas, alpha, reserve, rescale

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None and id(p) in self.deltas]
        before = [p.detach().clone() for p in params]
        loss = super().step(closure)
        for p, old in zip(params, before):
            p.copy_(ondare(old, p - old, self.deltas[id(p)].to(p), self.alpha, self.reserve, self.rescale))
        return loss


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
