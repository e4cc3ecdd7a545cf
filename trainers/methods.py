"""The method registry: which dataset kinds a method reads, which head it trains and how each kind is fed.

Adding a method is one entry here; trainers never branch on a loss name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from alignloop.trainers import collators, objectives
from alignloop.trainers import tokenize as tk
from alignloop.trainers.catalog import CATALOG
from alignloop.trainers.config import (
    ListwiseConfig,
    MethodConfig,
    OnlineDPOConfig,
    PPOConfig,
    PreferenceConfig,
    PRMConfig,
    RewardConfig,
    SFTConfig,
    UnpairedConfig,
)
from alignloop.trainers.losses import LossSpec, get_loss
from alignloop.warehouse.errors import AlignloopError

Head = Literal["causal", "reward", "prm"]
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Layout:
    """How one dataset kind feeds one method."""

    encode: Callable[[tk.Encoder, Rows, Any], list[Any]]
    """Snapshot rows -> typed features (gets the method config for its knobs)."""
    collator: type
    """Collator class; takes ``pad_id`` (and ``ref`` for policy layouts)."""
    objective: Callable[[Any], Any]
    """Method config -> objective callable."""
    role: str
    """Role of the trained model in the ``models`` table."""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_type: type
    head: Head
    layouts: dict[str, Layout]
    loop: Callable[..., Any] | None = None
    """A method with its own training loop (PPO samples as it trains) instead of the Trainer core; its layouts
    only say which dataset kinds it reads."""

    @property
    def help(self) -> str:
        return CATALOG[self.name].help

    def layout(self, kind: str, dataset: str) -> Layout:
        if kind not in self.layouts:
            wants = " or ".join(self.layouts)
            raise AlignloopError(f"method {self.name} needs a {wants} dataset; {dataset!r} is {kind}")
        return self.layouts[kind]


def loss_spec(config: MethodConfig) -> LossSpec | None:
    """The registry loss a config names, or None for methods with a fixed objective (reward, PRM, SFT)."""
    name = getattr(config, "loss", None)
    return None if name is None else get_loss(name)


def needs_reference(config: MethodConfig) -> bool:
    spec = loss_spec(config)
    return bool(spec and spec.needs_reference)


def _loss(cfg: Any) -> objectives.PolicyLoss:
    return objectives.PolicyLoss(get_loss(cfg.loss), cfg.beta, dict(cfg.loss_params))


def _confidence(cfg: Any) -> objectives.Confidence | None:
    return objectives.Confidence(cfg.confidence_weight, cfg.confidence_warmup) if cfg.confidence_weight else None


def _policy(cls: type) -> Callable[[Any], Any]:
    return lambda cfg: cls(_loss(cfg))


_PAIRS = Layout(lambda e, rows, cfg: tk.encode_pairs(e, rows), collators.PackedPairCollator,
                lambda cfg: objectives.PairwiseObjective(_loss(cfg), cfg.soft_labels, _confidence(cfg)), "policy")
_UNPAIRED = Layout(lambda e, rows, cfg: tk.encode_unpaired(e, rows), collators.UnpairedCollator,
                   _policy(objectives.UnpairedObjective), "policy")
_LISTS = Layout(lambda e, rows, cfg: tk.encode_lists(e, rows, cfg.max_candidates), collators.ListCollator,
                _policy(objectives.ListwiseObjective), "policy")
_SFT = Layout(lambda e, rows, cfg: tk.encode_sft(e, [r for r in rows if cfg.min_score is None
                                                       or (r.get("score") or 0) >= cfg.min_score]),
              collators.SeqCollator, lambda cfg: objectives.SFTObjective(), "policy")
_ALIGNER = Layout(lambda e, rows, cfg: tk.encode_sft(e, [r for r in rows if cfg.include_identity
                                                           or not r.get("identity")]),
                  collators.SeqCollator, lambda cfg: objectives.SFTObjective(), "aligner")

def _ppo(*args: Any, **kw: Any) -> Any:
    from alignloop.trainers.ppo import train_ppo  # torch-heavy: loaded when a PPO run starts

    return train_ppo(*args, **kw)


_PROMPTS = Layout(lambda e, rows, cfg: rows, collators.SeqCollator, lambda cfg: None, "policy")
"""PPO reads only the prompts of a snapshot, of any kind."""

METHODS: dict[str, MethodSpec] = {
    "dpo": MethodSpec("dpo", PreferenceConfig, "causal", {"pairwise": _PAIRS}),
    "kto": MethodSpec("kto", UnpairedConfig, "causal", {"binary": _UNPAIRED}),
    "bco": MethodSpec("bco", UnpairedConfig, "causal", {"binary": _UNPAIRED}),
    "listwise": MethodSpec("listwise", ListwiseConfig, "causal", {"listwise": _LISTS}),
    "reward": MethodSpec("reward", RewardConfig, "reward", {
        "pairwise": Layout(lambda e, rows, cfg: tk.encode_pairs(e, rows), collators.PairCollator,
                           lambda cfg: objectives.RewardPairObjective(cfg.use_margin, cfg.center_coef,
                                                                      cfg.soft_labels, _confidence(cfg)), "reward"),
        "listwise": Layout(lambda e, rows, cfg: tk.encode_lists(e, rows, cfg.max_candidates),
                           collators.ListCollator, lambda cfg: objectives.RewardListObjective(), "reward"),
        "binary": Layout(lambda e, rows, cfg: tk.encode_labelled(e, rows), collators.SeqCollator,
                         lambda cfg: objectives.RewardBinaryObjective(), "reward"),
    }),
    "prm": MethodSpec("prm", PRMConfig, "prm", {
        "steps": Layout(lambda e, rows, cfg: tk.encode_steps(e, rows, cfg.step_separator), collators.SeqCollator,
                        lambda cfg: objectives.PRMObjective(cfg.num_classes, cfg.neutral_label), "prm"),
    }),
    "sft": MethodSpec("sft", SFTConfig, "causal", {"sft": _SFT, "correction": _ALIGNER}),
    **{name: MethodSpec(name, PPOConfig, "causal", dict.fromkeys(CATALOG[name].kinds, _PROMPTS), loop=_ppo)
       for name in ("ppo", "grpo", "rloo")},
    "online_dpo": MethodSpec("online_dpo", OnlineDPOConfig, "causal", dict.fromkeys(CATALOG["online_dpo"].kinds,
                                                                                  _PROMPTS), loop=_ppo),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise AlignloopError(f"unknown training method {name!r}; known: {', '.join(METHODS)}")
    return METHODS[name]


def default_config(method: str, **overrides: Any) -> MethodConfig:
    """The method's config with its default loss (``bco`` -> loss "bco"); grpo and rloo: their advantage and 4
    samples per prompt."""
    spec = get_method(method)
    if spec.config_type is UnpairedConfig:
        overrides.setdefault("loss", method)
    if spec.config_type is PPOConfig and method != "ppo":
        overrides.setdefault("advantage", method)
        overrides.setdefault("samples_per_prompt", 4)
    try:
        return spec.config_type(**overrides)
    except ValueError as exc:
        raise AlignloopError(f"method {method}: {exc}") from None


def row_ids(kind: str, rows: Rows) -> list[str]:
    """A readable id per snapshot row for error messages (the warehouse ids it came from)."""
    cols = {"pairwise": ("chosen_id", "rejected_id"), "binary": ("completion_id",), "steps": ("completion_id",),
            "sft": ("completion_id",), "correction": ("correction_id",), "listwise": ("prompt_id",)}[kind]
    return ["/".join(str(r.get(c)) for c in cols) for r in rows]
