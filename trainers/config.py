"""Typed, frozen training configs (TRL style: one docstring per field, validation in ``__post_init__``).

A method config nests the common :class:`TrainConfig` (combined, not inherited) and adds its own knobs. Configs
are saved as JSON with the run (``config.json`` in the output folder); resuming a run whose config differs is
refused with one line naming the differing fields (:func:`check_resume`).
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.redact import redact_urls

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (peft ``LoraConfig``); the base weights stay frozen."""

    r: int = 8
    """Adapter rank."""
    alpha: int = 16
    """LoRA scaling numerator (``alpha / r`` scales the update)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names that receive adapters (Llama attention projections by default)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if self.alpha < 1:
            raise ValueError(f"lora.alpha must be >= 1, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("lora.targets must name at least one module")
        object.__setattr__(self, "targets", tuple(self.targets))


@dataclass(frozen=True)
class TrainConfig:
    """Options every method shares."""

    lr: float = 5e-6
    """Peak learning rate (AdamW, linear decay)."""
    epochs: float = 1.0
    """Passes over the train split (ignored when ``max_steps`` > 0)."""
    max_steps: int = -1
    """Optimizer steps to run; -1 = derive from ``epochs``."""
    batch_size: int = 4
    """Examples per device per micro-batch (a pair counts once: chosen and rejected share one forward pass)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_length: int = 512
    """Longest prompt + completion in tokens; longer rows are truncated and counted, never silently."""
    max_prompt_length: int = 256
    """Longest prompt in tokens (left-truncated: the end of the conversation is kept)."""
    seed: int = 0
    """Seed for initialisation, shuffling and dropout."""
    bf16: bool | None = None
    """bf16 autocast; None = auto (CUDA with bf16, or a CPU with native bf16 math)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% slower)."""
    lora: LoraConfig | None = None
    """Train LoRA adapters instead of all weights; merged into the saved model."""
    freeze_layers: int = 0
    """Freeze the input embeddings and the first N decoder layers and train the rest (and any head): the backward
    pass stops at layer N, so a step costs less compute and memory. With tied embeddings (SmolLM2) the output
    layer of a causal LM stays frozen too. 0 trains every weight."""
    output_dir: str = "runs/train"
    """Run folder: config.json, the final model, run.json (summary and records) and the curves PNG; checkpoints
    only while training (a finished run drops them; running it again returns its records)."""
    logging_steps: int = 1
    """Log metrics every N optimizer steps."""
    save_steps: int = 500
    """Write a resumable checkpoint every N optimizer steps."""
    eval: bool = True
    """Evaluate on the test split after training."""
    warmup_ratio: float = 0.0
    """Fraction of steps with a linear learning-rate warm-up."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    merge_base: str | None = None
    """Online merging optimizers (Lu et al. 2024; :mod:`trainers.merging`): the pretrained model folder the
    reference (or, without one, the starting model) was fine-tuned from. Every AdamW step is then merged with the SFT
    delta, reference minus this model, to keep the abilities fine-tuning gave it. None: plain AdamW."""
    merge_method: str = "dare"
    """``dare`` (OnDARE: random drops) or ``ties`` (OnTIES: top-magnitude trim and sign consensus)."""
    merge_alpha: float = 1e-6
    """Weight of the SFT delta (larger: stronger pull towards it); the paper searches from about 1e-7."""
    merge_reserve: float = 0.01
    """Share of the step's and the delta's entries kept: OnDARE keeps each with this probability, OnTIES this share
    of the largest in magnitude."""
    merge_no_rescale: bool = False
    """Ablation of OnDARE: keep the dropped entries' survivors as they are instead of dividing them by
    ``merge_reserve`` (DARE's rescale, which keeps each merged step AdamW's in expectation; without it every step is
    about ``merge_reserve`` of AdamW's)."""

    def __post_init__(self) -> None:
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.max_steps == -1 or self.max_steps > 0, f"max_steps must be -1 or > 0, got {self.max_steps}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (self.max_length >= 8, f"max_length must be >= 8, got {self.max_length}"),
            (0 < self.max_prompt_length < self.max_length,
             f"max_prompt_length must be in (0, max_length={self.max_length}), got {self.max_prompt_length}"),
            (self.logging_steps >= 1, f"logging_steps must be >= 1, got {self.logging_steps}"),
            (self.save_steps >= 1, f"save_steps must be >= 1, got {self.save_steps}"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.freeze_layers >= 0, f"freeze_layers must be >= 0, got {self.freeze_layers}"),
            (not (self.freeze_layers and self.lora), "freeze_layers and lora both choose what trains; use one"),
            (0 <= self.merge_alpha <= 1, f"merge_alpha must be in [0, 1], got {self.merge_alpha}"),
            (0 < self.merge_reserve <= 1, f"merge_reserve must be in (0, 1], got {self.merge_reserve}"),
            (self.merge_method in ("dare", "ties"), f"merge_method must be dare or ties, got {self.merge_method!r}"),
            (not (self.merge_no_rescale and self.merge_method == "ties"),
             "merge_no_rescale is an ablation of OnDARE's rescale; OnTIES does not rescale"),
            (not (self.merge_base and self.lora), "merge_base (online merging) merges full weights; not with lora"),
        ]
        _require(checks)
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", LoraConfig(**self.lora))


def _require(checks: list[tuple[bool, str]]) -> None:
    """Raise ``ValueError`` with the message of the first check that fails."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


LIVE_JUDGE = "policy"
"""``judge_model`` naming the policy being trained as its own judge."""


def check_one_reward(method: str, reward_model: str | None, verifier: str | None, judge_model: str | None) -> None:
    """An online method's reward: exactly one of a reward model, a rule verifier or an LLM judge (the same message
    wherever it is checked: the train form before a task starts, the trainer for direct calls)."""
    given = sum(bool(x) for x in (reward_model, verifier, judge_model))
    if given != 1:
        raise AlignloopError(f"method {method} needs one reward: a reward model (reward_model, --reward-model FOLDER "
                             "from `alignloop train reward`), a rule verifier (verifier, --verifier NAME) or an LLM "
                             "judge (judge_model, --judge-model MODEL)" + (", not several" if given else ""))


def _check_confidence(config: Any) -> None:
    if not 0 <= config.confidence_weight < 1:
        raise ValueError(f"confidence_weight must be in [0, 1), got {config.confidence_weight}")
    if not 0 <= config.confidence_warmup < 1:
        raise ValueError(f"confidence_warmup must be in [0, 1), got {config.confidence_warmup}")


def _check_params(params: dict[str, float], fn: Any, what: str) -> dict[str, float]:
    """Loss hyperparameters must be keyword arguments of the loss function (a typo fails before training)."""
    allowed = {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
    allowed -= {"beta", "len_chosen", "len_rejected", "ref_logps", "lengths", "label"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"{what} has no parameter {', '.join(unknown)}; it takes: {', '.join(sorted(allowed))}")
    return dict(params)


@dataclass(frozen=True)
class PreferenceConfig:
    """Pairwise preference optimisation with any pairwise loss of :data:`trainers.losses.LOSSES`."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """Common options."""
    loss: str = "dpo"
    """Registry name of the loss (dpo, ipo, cdpo, robust, hinge, rdpo, simpo, orpo, cpo, ...)."""
    beta: float = 0.1
    """Inverse temperature / KL strength of the loss."""
    loss_params: dict[str, float] = field(default_factory=dict)
    """Further keyword hyperparameters of the loss (e.g. ``{"gamma": 1.0}`` for SimPO, ``{"eps": 0.1}`` for cDPO)."""
    soft_labels: bool = True
    """Train on each pair's soft label (the snapshot's ``prob``: a swap-debiased AI judge's probability, 0.5 for a
    kept tie) with the losses that take one (dpo, cdpo); other losses train every pair as a hard preference and the
    run counts the soft labels they ignore. False: every pair is hard."""
    confidence_weight: float = 0.0
    """Weak-to-strong auxiliary confidence loss (Burns et al. 2023): the target becomes ``(1 - a) * label + a *
    hard``, ``hard`` the model's own preference hardened by its margin's sign (1/2 at a tie: Burns' per-batch
    threshold, for pairs; :func:`trainers.losses.confidence_target`), so a strong model trained on a weak judge's
    labels may overrule the ones it confidently disagrees with; ``a`` rises linearly to this weight over
    ``confidence_warmup`` of training. 0: off."""
    confidence_warmup: float = 0.2
    """Share of training over which the confidence weight warms up from 0."""
    stages: int = 1
    """sDPO (Kim et al. 2024, stepwise DPO): the train split's prompts are cut into this many parts (by a hash of
    the prompt id; a prompt's pairs all in one part), trained on in turn, each stage starting from the model the stage
    before trained and using it as the reference. ``train.max_steps`` / ``train.epochs`` count per stage; each stage
    is a run of its own (``output_dir/stage-K``). 1: plain DPO."""
    stage: int = 0
    """The stage (0-based) a run trains, set by the train flow for each of ``stages``."""
    stage_order: str = "hash"
    """sDPO: how the prompts are cut into stages. ``hash``: by a hash of the prompt id (parts alike); ``easy_first``:
    a curriculum, easy to hard as sDPO orders its data, the prompts ordered by how clear their preference is (the mean
    ``|prob - 0.5|`` of their pairs, a judge's confidence, then their mean ``margin``, a score gap), the clearest in
    stage 1, ties by the hash; ``ai_first``: from AI feedback to people's, the prompts ordered by the share of their
    pairs that people labelled (AI-only prompts in stage 1, people-only ones last), ties by the hash."""
    STAGE_ORDERS: ClassVar[tuple[str, ...]] = ("hash", "easy_first", "ai_first")

    def __post_init__(self) -> None:
        from alignloop.trainers.losses import get_loss

        spec = get_loss(self.loss)
        if spec.data != "pairs":
            raise ValueError(f"loss {self.loss!r} is not pairwise (it takes {spec.data}); use its own method")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.stages < 1 or not 0 <= self.stage < self.stages:
            raise ValueError(f"stages must be >= 1 and stage in [0, stages), got stages={self.stages}, "
                             f"stage={self.stage}")
        if self.stage_order not in self.STAGE_ORDERS:
            raise ValueError(f"stage_order must be one of {', '.join(self.STAGE_ORDERS)}, got {self.stage_order!r}")
        _check_confidence(self)
        if self.confidence_weight and not spec.takes_labels:
            raise ValueError(f"confidence_weight needs a loss with a soft form (dpo, cdpo), not {self.loss!r}")
        object.__setattr__(self, "loss_params", _check_params(self.loss_params, spec.fn, f"loss {self.loss!r}"))


@dataclass(frozen=True)
class UnpairedConfig:
    """Unpaired (binary desirable / undesirable) optimisation: KTO, or an unpaired BCO when the registry has one."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """Common options."""
    loss: str = "kto"
    """Registry name of an unpaired loss."""
    beta: float = 0.1
    """Reward scale."""
    loss_params: dict[str, float] = field(default_factory=dict)
    """Further keyword hyperparameters (KTO: desirable_weight, undesirable_weight)."""

    def __post_init__(self) -> None:
        from alignloop.trainers.losses import get_loss

        spec = get_loss(self.loss)
        if spec.data != "unpaired":
            raise ValueError(f"loss {self.loss!r} is not unpaired (it takes {spec.data})")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        object.__setattr__(self, "loss_params", _check_params(self.loss_params, spec.fn, f"loss {self.loss!r}"))


@dataclass(frozen=True)
class ListwiseConfig:
    """Listwise policy optimisation over K ranked completions (RRHF, LiPO, PRO)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """Common options."""
    loss: str = "lipo"
    """Registry name of a list loss."""
    beta: float = 0.1
    """Score scale."""
    loss_params: dict[str, float] = field(default_factory=dict)
    """Further keyword hyperparameters (RRHF/PRO: sft_weight)."""
    max_candidates: int = 4
    """Keep at most this many completions per list (the best ones)."""

    def __post_init__(self) -> None:
        from alignloop.trainers.losses import get_loss

        spec = get_loss(self.loss)
        if spec.data != "lists":
            raise ValueError(f"loss {self.loss!r} is not listwise (it takes {spec.data})")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.max_candidates < 2:
            raise ValueError(f"max_candidates must be >= 2, got {self.max_candidates}")
        object.__setattr__(self, "loss_params", _check_params(self.loss_params, spec.fn, f"loss {self.loss!r}"))


@dataclass(frozen=True)
class RewardConfig:
    """Scalar reward model (sequence-classification head, one output): Bradley-Terry on pairs, Plackett-Luce on lists."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-5))
    """Common options."""
    use_margin: bool = False
    """Subtract the dataset's ``margin`` column inside the sigmoid (Llama 2 Eq. 2); missing margins count as 0."""
    center_coef: float = 0.0
    """Weight of the reward-centring term ``(r_c + r_r)^2`` (Eisenstein et al. 2023); 0 disables it."""
    max_candidates: int = 4
    """Listwise data: keep at most this many completions per list."""
    soft_labels: bool = True
    """Pairs: Bradley-Terry with each pair's soft label (the snapshot's ``prob``) as the target probability that
    chosen is preferred; False: every pair is hard."""
    confidence_weight: float = 0.0
    """Weak-to-strong auxiliary confidence loss (Burns et al. 2023): the target becomes ``(1 - a) * label + a *
    hard``, ``hard`` the model's own preference hardened by its margin's sign (1/2 at a tie: Burns' per-batch
    threshold, for pairs; :func:`trainers.losses.confidence_target`), so a strong model trained on a weak judge's
    labels may overrule the ones it confidently disagrees with; ``a`` rises linearly to this weight over
    ``confidence_warmup`` of training. 0: off."""
    confidence_warmup: float = 0.2
    """Share of training over which the confidence weight warms up from 0."""

    def __post_init__(self) -> None:
        _check_confidence(self)
        if self.center_coef < 0:
            raise ValueError(f"center_coef must be >= 0, got {self.center_coef}")
        if self.max_candidates < 2:
            raise ValueError(f"max_candidates must be >= 2, got {self.max_candidates}")


@dataclass(frozen=True)
class PRMConfig:
    """Process reward model: a token-classification head read at the last token of each step."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-5))
    """Common options."""
    num_classes: Literal[2, 3] = 3
    """3: bad / neutral / good (PRM800K -1/0/+1); 2: step OK or not."""
    neutral_label: Literal[0, 1] = 1
    """Binary only: the class of a neutral (0) step; 1 counts it as OK (PRM800K convention)."""
    step_separator: str = "\n\n"
    """Text appended after every step; its last token carries the step's label."""

    def __post_init__(self) -> None:
        if self.num_classes not in (2, 3):
            raise ValueError(f"num_classes must be 2 or 3, got {self.num_classes}")
        if self.neutral_label not in (0, 1):
            raise ValueError(f"neutral_label must be 0 or 1, got {self.neutral_label}")
        if not self.step_separator:
            raise ValueError("step_separator must not be empty (its last token carries the label)")


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning on chosen completions (best-of-N, rejection sampling) or Aligner corrections."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=1e-5))
    """Common options."""
    include_identity: bool = True
    """Correction data: keep the identity-copy warm-up rows (correction == answer)."""
    min_score: float | None = None
    """SFT data: drop rows whose ``score`` is below this (None keeps all)."""


@dataclass(frozen=True)
class PPOConfig:
    """RLHF with PPO: the policy answers the dataset's prompts, a reward model scores the answers, a per-token KL
    penalty keeps the policy near the reference (:mod:`trainers.ppo`); with ``advantage`` grpo or rloo the critic-free
    GRPO and RLOO instead (methods ``grpo`` and ``rloo``). ``train.max_steps`` counts iterations (a rollout and its
    updates); from ``train.epochs``, enough iterations to sample each train prompt that often.
    ``train.batch_size`` is the minibatch of the updates, in answers, and ``train.save_steps`` counts iterations too;
    ``train.max_prompt_length`` cuts prompts (answers are ``max_new_tokens`` long at most); ``train.grad_accum``
    and ``train.logging_steps`` are not used (every iteration is logged)."""

    ADVANTAGES: ClassVar[tuple[str, ...]] = ("gae", "grpo", "rloo")

    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-6, max_length=512))
    """Common options."""
    reward_model: str = ""
    """Folder of the reward model that scores answers (`alignloop train reward`; a PRM scores by the product of
    its step scores). This or ``verifier``."""
    verifier: str = ""
    """A rule verifier that scores answers instead (1 pass, 0 fail: RL from verifiable rewards), e.g.
    ``final_answer`` against the prompts' reference answers, ``short_on_topic:N``; it reads the prompts' references
    and topics from the warehouse."""
    judge_model: str = ""
    """Direct RLAIF (Lee et al. 2023, d-RLAIF): an LLM judge rates each answer instead, its reward the expected
    digit 0-9 under the judge's next-token probabilities (``rating_digit`` template) mapped to [-1, 1]; a model
    folder, ``default`` (the embedded model) or ``policy``: the policy being trained judges its own answers with its
    weights of the moment (online self-rewarding). This, ``reward_model`` or ``verifier``."""
    judge_base_url: str = ""
    """``judge_model`` served at this OpenAI-compatible endpoint (vLLM's or llama.cpp's server, an API): the judge is
    then the served model's name and its key ``train_model``'s ``judge_api_key`` or ``$OPENAI_API_KEY`` (never a
    config field); the endpoint must return log-probabilities, which is checked before training. Empty: a local
    judge."""
    judge_principles: tuple[str, ...] = ()
    """What the LLM judge weighs (principle names or sentences, as ``alignloop judge --principle``); empty: helpful,
    harmless, honest."""
    judge_aspect: str = "overall"
    """What the LLM judge rates each answer for (its template's aspect, e.g. harmlessness)."""
    kl_coef: float = 0.05
    """Weight of the per-token KL penalty to the reference model (its start value with ``target_kl``)."""
    target_kl: float | None = None
    """Adapt ``kl_coef`` towards this KL per answer (Ziegler et al.'s controller); None keeps it fixed."""
    advantage: str = "gae"
    """``gae``: PPO's value head and GAE on KL-penalised token rewards; ``grpo``: an answer's score against its
    group's mean and std, KL as a loss term; ``rloo``: its KL-penalised score minus the other answers' mean. The
    method is named after it (ppo, grpo, rloo)."""
    rollout_prompts: int = 16
    """Prompts answered per iteration."""
    samples_per_prompt: int = 1
    """Answers sampled per prompt per iteration (grpo and rloo compare them: at least 2)."""
    scale_rewards: bool = True
    """grpo: divide each answer's centred score by its group's std; false: centre only (Dr. GRPO)."""
    loss_aggregation: str = "token"
    """The policy loss over a minibatch: ``token`` (every answer token weighs the same), ``sequence`` (each
    answer's mean first, then their mean: GRPO's Eq. 3; long answers weigh less per token) or ``constant`` (the
    token sum over answers x ``max_new_tokens``, the same divisor whatever the lengths: Dr. GRPO)."""
    dynamic_sampling: bool = False
    """grpo, rloo, online_dpo: leave out of the update every group whose answers all scored the same (it teaches
    nothing) and sample more prompts, up to ``max_rollouts`` rollouts an iteration, until ``rollout_prompts`` groups
    that differ are in hand (DAPO, Yu et al. 2025). Costs sampling; a sparse verifier's iterations then still learn."""
    max_rollouts: int = 3
    """With ``dynamic_sampling``: rollouts an iteration at most (the first included); an iteration that found fewer
    groups with signal updates on those it has (on none: no update)."""
    max_new_tokens: int = 48
    """Longest answer, in tokens."""
    temperature: float = 1.0
    """Sampling temperature (log-probabilities are computed at the same temperature)."""
    ppo_epochs: int = 2
    """Passes of minibatch updates over each rollout."""
    clip_range: float = 0.2
    """PPO's policy-ratio clip: the ratio is kept in ``[1 - clip_range, 1 + clip_range_high]``."""
    clip_range_high: float | None = None
    """The upper clip; None: ``clip_range``. DAPO's clip-higher (0.28 with ``clip_range`` 0.2) lets unlikely tokens
    that did well grow faster, against entropy collapse."""
    value_clip: float = 0.2
    """Clip of the value change per update."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    gamma: float = 1.0
    """Discount."""
    lam: float = 0.95
    """GAE lambda."""
    missing_eos_penalty: float | None = None
    """Subtract this from the score of an answer cut off before its end-of-turn token (None: no penalty)."""
    overlong_buffer: int = 0
    """DAPO's soft overlong punishment: an answer longer than ``max_new_tokens - overlong_buffer`` tokens loses up to
    ``overlong_penalty``, in proportion to how far into the buffer it reaches (0: off)."""
    overlong_penalty: float = 1.0
    """The most the overlong punishment subtracts (at ``max_new_tokens``)."""
    ptx_coef: float = 0.0
    """PPO-ptx (Ouyang et al. 2022, InstructGPT): each update adds ``ptx_coef`` times the token-mean negative
    log-likelihood of ``ptx_batch_size`` completions of an sft snapshot (``--ptx-dataset``: demonstrations or other
    text to keep), against the alignment tax; 0: off."""
    ptx_batch_size: int | None = None
    """PPO-ptx: completions in each update's likelihood term (InstructGPT mixed in more pretraining rows than PPO
    rows); None: ``train.batch_size``."""
    cost_model: str = ""
    """Safe RLHF (Dai et al. 2024, PPO-Lagrangian): the folder of a reward model trained on harmlessness pairs
    (chosen the safer, e.g. PKU-SafeRLHF's ``-o aspect=harmlessness``); an answer's cost is its negated score, and
    the policy maximises its reward subject to mean cost <= ``cost_limit`` through a Lagrange multiplier: each
    answer is scored ``(reward - lambda * cost) / (1 + lambda)``. Empty: off."""
    cost_limit: float | None = None
    """Safe RLHF: the bound on the mean cost of the answers; None: the mean cost of the first iteration's answers
    (the starting policy's), so training may not make the answers less safe than they were."""
    lambda_init: float = 1.0
    """Safe RLHF: the Lagrange multiplier's start value."""
    lambda_lr: float = 0.1
    """Safe RLHF: after each iteration ``lambda <- max(0, lambda + lambda_lr * (mean cost - cost_limit))``: it
    grows while the answers cost more than the limit (safety weighs more) and shrinks back to 0 while they cost less
    (the reward alone)."""

    def __post_init__(self) -> None:
        checks = [
            (bool(self.cost_model) or (self.cost_limit, self.lambda_init, self.lambda_lr)
             == (None, type(self).lambda_init, type(self).lambda_lr),
             "cost_limit, lambda_init and lambda_lr are Safe RLHF's: they need a cost_model (--cost-model FOLDER, a "
             + "reward model trained on harmlessness pairs)"),
            (not self.judge_base_url or self.judge_model not in ("", LIVE_JUDGE),
             "judge_base_url serves an LLM judge: set judge_model to the served model's name (not 'policy', which "
             + "is the model being trained)"),
            (bool(self.judge_model) or (self.judge_principles, self.judge_aspect) == ((), type(self).judge_aspect),
             "judge_principles and judge_aspect tell an LLM judge what to rate: set judge_model"),
            (bool(self.judge_aspect.strip()), "judge_aspect must not be empty"),
            (self.lambda_init >= 0, f"lambda_init must be >= 0, got {self.lambda_init}"),
            (self.lambda_lr > 0, f"lambda_lr must be > 0, got {self.lambda_lr}"),
            (self.kl_coef >= 0, f"kl_coef must be >= 0, got {self.kl_coef}"),
            (self.target_kl is None or self.target_kl > 0, f"target_kl must be > 0, got {self.target_kl}"),
            (self.rollout_prompts >= 1, f"rollout_prompts must be >= 1, got {self.rollout_prompts}"),
            (self.advantage in self.ADVANTAGES,
             f"advantage must be one of {', '.join(self.ADVANTAGES)}, got {self.advantage!r}"),
            (self.samples_per_prompt >= 1, f"samples_per_prompt must be >= 1, got {self.samples_per_prompt}"),
            (self.loss_aggregation in LOSS_AGGREGATIONS,
             f"loss_aggregation must be one of {', '.join(LOSS_AGGREGATIONS)}, got {self.loss_aggregation!r}"),
            (not self.dynamic_sampling or self.advantage != "gae",
             "dynamic_sampling drops groups of answers to one prompt that scored alike: needs method grpo, rloo, "
             + "online_dpo"),
            (self.max_rollouts >= 1, f"max_rollouts must be >= 1, got {self.max_rollouts}"),
            (0 <= self.overlong_buffer < self.max_new_tokens,
             f"overlong_buffer must be in [0, max_new_tokens={self.max_new_tokens}), got {self.overlong_buffer}"),
            (self.overlong_penalty >= 0, f"overlong_penalty must be >= 0, got {self.overlong_penalty}"),
            (self.ptx_coef >= 0, f"ptx_coef must be >= 0, got {self.ptx_coef}"),
            (self.ptx_batch_size is None or self.ptx_batch_size >= 1,
             f"ptx_batch_size must be >= 1, got {self.ptx_batch_size}"),
            (self.clip_range_high is None or self.clip_range_high > 0,
             f"clip_range_high must be > 0, got {self.clip_range_high}"),
            (self.advantage == "gae" or self.samples_per_prompt >= 2,
             f"advantage {self.advantage!r} compares answers to one prompt: needs samples_per_prompt >= 2, got "
             + str(self.samples_per_prompt)),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (self.ppo_epochs >= 1, f"ppo_epochs must be >= 1, got {self.ppo_epochs}"),
            (0 < self.clip_range < 1, f"clip_range must be in (0, 1), got {self.clip_range}"),
            (self.value_clip > 0, f"value_clip must be > 0, got {self.value_clip}"),
            (self.vf_coef >= 0, f"vf_coef must be >= 0, got {self.vf_coef}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (0 <= self.lam <= 1, f"lam must be in [0, 1], got {self.lam}"),
        ]
        _require(checks)

    @property
    def reward(self) -> str:
        """What scores the answers, as ``--judge`` names it: ``rm:FOLDER``, ``verifier:NAME`` or ``llm:MODEL``."""
        if self.judge_model:
            return f"llm:{self.judge_model}"
        return f"verifier:{self.verifier}" if self.verifier else f"rm:{self.reward_model}"

    @property
    def method(self) -> str:
        """The method this config runs: ppo, grpo, rloo (or online_dpo)."""
        return ADVANTAGE_METHODS[self.advantage]

    @property
    def pairwise_updates(self) -> bool:
        """Online DPO: the updates train each group's best-over-worst pair with a pairwise loss (no clipped ratio,
        critic or KL penalty: the loss's beta holds the policy near the reference)."""
        return self.advantage == "pairs"

    @property
    def logprob_temperature(self) -> float:
        """The temperature of the log-probabilities the updates use: the sampling temperature (the policy that
        sampled, as PPO's ratio needs)."""
        return self.temperature


@dataclass(frozen=True)
class OnlineDPOConfig(PPOConfig):
    """Online DPO (Guo et al. 2024, online AI feedback; TRL's ``OnlineDPOTrainer``) in the PPO loop: each iteration
    the policy samples ``samples_per_prompt`` answers to each of ``rollout_prompts`` prompts, the reward model or
    verifier scores them, and each group's best and worst answer (unless all scored the same) are a preference pair
    for any pairwise ``loss`` against the reference; ``ppo_epochs`` passes over the pairs. Log-probabilities are the
    model's own (temperature 1), as DPO's; the PPO fields of clipping, values and KL (``kl_coef``: ``beta`` instead)
    are not used."""

    ADVANTAGES: ClassVar[tuple[str, ...]] = ("pairs",)
    UNUSED: ClassVar[tuple[str, ...]] = ("kl_coef", "target_kl", "clip_range", "clip_range_high", "value_clip",
                                         "vf_coef", "gamma", "lam")
    """PPO's fields online DPO has no use for (no ratio, critic or KL penalty): set to anything but their default,
    they are refused rather than silently ignored."""

    advantage: str = "pairs"
    """Always ``pairs``: no advantages, preference pairs."""
    samples_per_prompt: int = 2
    """Answers sampled per prompt per iteration; the best and the worst make the pair (at least 2)."""
    ppo_epochs: int = 1
    """Passes of minibatch updates over each iteration's pairs (1: on-policy, as the paper)."""
    loss: str = "dpo"
    """Registry name of the pairwise loss (dpo, ipo, simpo, ...)."""
    beta: float = 0.1
    """Inverse temperature / KL strength of the loss."""
    loss_params: dict[str, float] = field(default_factory=dict)
    """Further keyword hyperparameters of the loss (as ``PreferenceConfig.loss_params``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        from alignloop.trainers.losses import get_loss

        spec = get_loss(self.loss)
        _require([(spec.data == "pairs", f"loss {self.loss!r} is not pairwise (it takes {spec.data})"),
                  (self.beta > 0, f"beta must be > 0, got {self.beta}")])
        defaults = {f.name: f.default for f in fields(PPOConfig)}
        if set_ := [name for name in self.UNUSED if getattr(self, name) != defaults[name]]:
            raise ValueError(f"online_dpo does not use {', '.join(set_)} (PPO's clipping, critic and KL penalty): "
                             "its loss's beta holds the policy near the reference; leave them out")

    @property
    def logprob_temperature(self) -> float:
        """1: DPO's implicit reward is the model's own log-likelihood, whatever temperature sampled the answers."""
        return 1.0


ADVANTAGE_METHODS = {"gae": "ppo", "grpo": "grpo", "rloo": "rloo", "pairs": "online_dpo"}
LOSS_AGGREGATIONS = ("token", "sequence", "constant")

MethodConfig = (PreferenceConfig | UnpairedConfig | ListwiseConfig | RewardConfig | PRMConfig | SFTConfig | PPOConfig
                | OnlineDPOConfig)
CONFIG_TYPES: dict[str, type] = {c.__name__: c for c in (PreferenceConfig, UnpairedConfig, ListwiseConfig,
                                                          RewardConfig, PRMConfig, SFTConfig, PPOConfig,
                                                          OnlineDPOConfig)}


def to_dict(config: MethodConfig) -> dict[str, Any]:
    """JSON-ready dict with the config's type name under ``"type"``."""
    data = asdict(config)
    data["type"] = type(config).__name__
    if data["train"].get("lora"):
        data["train"]["lora"]["targets"] = list(data["train"]["lora"]["targets"])
    if "judge_principles" in data:  # a list, as JSON reads it back
        data["judge_principles"] = list(data["judge_principles"])
    return data


def to_dict_lora(lora: LoraConfig) -> dict[str, Any]:
    return {**asdict(lora), "targets": list(lora.targets)}


def from_dict(data: dict[str, Any]) -> MethodConfig:
    """Inverse of :func:`to_dict`; unknown fields fail with their names."""
    data = dict(data)
    cls = CONFIG_TYPES.get(data.pop("type", ""))
    if cls is None:
        raise ValueError(f"config has no known 'type'; expected one of {', '.join(CONFIG_TYPES)}")
    train = dict(data.pop("train", {}))
    if train.get("lora"):
        train["lora"] = LoraConfig(**{**train["lora"], "targets": tuple(train["lora"]["targets"])})
    if "judge_principles" in data:  # a list in JSON
        data["judge_principles"] = tuple(data["judge_principles"])
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names) + sorted(set(train) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"unknown config fields: {', '.join(unknown)}")
    return cls(train=TrainConfig(**train), **data)


_SIMPLE = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _wrong_type(value: Any, hint: Any) -> str | None:
    """What ``value`` should be by the field's type hint (bool, int, float, str, or one of them or None), where
    it is not that; None: it fits, or the hint is not one of those simple types."""
    options = set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
    if value is None and type(None) in options:
        return None
    simple = [t for t in options if t in _SIMPLE]
    if not simple or len(options - {type(None)}) > 1:
        return None
    want = simple[0]
    fits = (isinstance(value, bool) if want is bool else
            isinstance(value, want) and not isinstance(value, bool) if want in (int, str) else
            isinstance(value, (int, float)) and not isinstance(value, bool))
    return None if fits else _SIMPLE[want] + (" (or null)" if type(None) in options else "")


def load_over(path: str | Path, base: MethodConfig) -> MethodConfig:
    """A config file over ``base`` (the method's defaults): the fields it names replace base's, ``train`` and
    ``train.lora`` field by field, so a hand-written file holds only what it changes. ``type`` may be left out;
    where given it must be base's. A run's saved ``config.json`` names every field and reads back as it was."""

    def bad(reason: str) -> AlignloopError:
        return AlignloopError(f"{path}: bad training config: {reason}")

    try:
        given = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AlignloopError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(str(exc)) from None
    if not isinstance(given, dict) or not isinstance(given.get("train", {}), dict):
        raise bad("expected a JSON object (with 'train' an object too)")
    data = to_dict(base)
    kind = given.pop("type", data["type"])
    if kind != data["type"]:
        raise bad(f"it is a {kind}; this method takes a {data['type']} (leave 'type' out)")
    train = given.pop("train", {})
    for where, values, cls in (("", given, type(base)), ("train.", train, TrainConfig)):
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            wrong = _wrong_type(value, hints.get(key))
            if wrong:
                raise bad(f"{where}{key} must be {wrong}, got {value!r}")
    if isinstance(train.get("lora"), dict):
        train["lora"] = {**to_dict_lora(LoraConfig()), **train["lora"]}
    data.update(given)
    data["train"].update(train)
    try:
        return from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise bad(str(exc)) from None


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): data}


def differing_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted names of the fields whose values differ, e.g. ``["beta", "train.lr"]``."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# Fields that may change between a run and its resumption without changing what is trained.
RESUME_FREE = frozenset({"train.output_dir", "train.logging_steps", "train.save_steps", "train.eval"})


def recorded(config: MethodConfig) -> dict[str, Any]:
    """``to_dict(config)`` as a run stores it (its id, its records, config.json, its card): an endpoint's URL
    without the credentials it may carry (the trainer connects with the config itself)."""
    return redact_urls(to_dict(config))


def check_resume(output_dir: str | Path, config: MethodConfig, identity: dict[str, Any]) -> bool:
    """Refuse to reuse a run folder whose saved config or inputs differ; write them for a new run.

    Args:
        output_dir: the run folder.
        config: this run's config.
        identity: what else defines the run (method, dataset hash, base model), saved beside the config.

    Returns:
        True if the folder already held this run (resume), False if it was new.

    Raises:
        AlignloopError: one line naming the differing fields.
    """
    path = Path(output_dir) / CONFIG_FILE
    current = {"config": recorded(config), "run": identity}
    saved = _run_config(path)
    if saved is not None:
        diff = [d for d in differing_fields(saved, current) if d.removeprefix("config.") not in RESUME_FREE]
        if diff:
            names = ", ".join(d.removeprefix("config.") for d in diff)
            raise AlignloopError(
                f"cannot resume {output_dir}: its saved config differs in {names}; use another output folder"
            )
        return True
    _check_new_run_folder(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2, sort_keys=True))
    return False


def _run_config(path: Path) -> dict[str, Any] | None:
    """A run folder's saved config and identity, or None where ``path`` is not one (absent, or another program's
    config.json, such as a model folder's)."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        return None
    return saved if isinstance(saved, dict) and {"config", "run"} <= saved.keys() else None


def check_run_folder(output_dir: str | Path) -> None:
    """Refuse, before any work, a run folder no run can use: a file, or a folder of files that are not a run's."""
    if _run_config(Path(output_dir) / CONFIG_FILE) is None:
        _check_new_run_folder(Path(output_dir))


def _check_new_run_folder(folder: Path) -> None:
    """A new run goes in a new or empty folder: it writes model/ there and removes its checkpoints/ when done, so a
    folder of other files (the current one, a model's, a user's) is refused rather than mixed into or pruned."""
    if folder.exists() and not folder.is_dir():
        raise AlignloopError(f"run folder {folder} is a file; use a new or empty folder (output_dir)")
    held = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if held:
        more = f" and {len(held) - 1} more" if len(held) > 1 else ""
        raise AlignloopError(f"run folder {folder} holds {held[0]!r}{more} but no run's {CONFIG_FILE}: a run writes "
                             f"its model there and removes its checkpoints/ when done; use a new or empty folder "
                             "(output_dir)")
