"""Dataset build options: one frozen, validated config per kind plus the options every kind shares.

Options also arrive as ``key=value`` strings (CLI ``-o``, flow parameters); ``parse_options`` turns them into
these configs and names the valid keys when one is unknown.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from alignloop.warehouse.errors import InputError
from alignloop.warehouse.snapshots import KINDS

FEEDBACK_SOURCES = ("human", "ai", "rule", "reward_model")


def _choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}", field=name)


def _literal(cls: type, name: str) -> tuple[Any, ...]:
    return typing.get_args(typing.get_type_hints(cls)[name])


def _check_literals(obj: Any) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if typing.get_origin(hints[f.name]) is Literal:
            _choice(f.name, getattr(obj, f.name), typing.get_args(hints[f.name]))


@dataclass(frozen=True)
class CommonOptions:
    """Options every dataset kind shares: which feedback to use, cross-source policy, decontamination."""

    sources: tuple[str, ...] = FEEDBACK_SOURCES
    """Feedback sources to use: any of human, ai, rule, reward_model."""
    rounds: tuple[str, ...] = ()
    """Only feedback from these rounds; empty means all rounds."""
    judges: tuple[str, ...] = ()
    """Only feedback from these judges or annotators (ids as `alignloop judge report` shows them); empty: all."""
    aspect: str = "overall"
    """What the comparisons, rankings, ratings or corrections read were about (helpfulness, harmlessness, ...); step
    labels carry none."""
    prefer_human: bool = True
    """Where one item was judged by several source tiers keep only the highest (human > rule > ai > reward_model)."""
    decontaminate: bool = True
    """Drop training rows whose prompt overlaps an evaluation prompt (n-gram overlap)."""
    ngram: int = 13
    """Words per n-gram for decontamination (8 and 13 are common)."""
    decontam_threshold: float = 0.0
    """A training prompt is contaminated when it shares any n-gram and at least this fraction of its n-grams."""
    eval_dataset: str | None = None
    """Evaluation prompts come from this dataset snapshot (name or name@vN); default: prompts with split 'test'."""

    def __post_init__(self) -> None:
        for s in self.sources:
            _choice("sources", s, FEEDBACK_SOURCES)
        if not self.sources:
            raise InputError("sources must name at least one feedback source", field="sources")
        if self.ngram < 1:
            raise InputError(f"ngram must be >= 1, got {self.ngram}", field="ngram")
        if not 0.0 <= self.decontam_threshold <= 1.0:
            raise InputError(f"decontam_threshold must be in [0, 1], got {self.decontam_threshold}",
                             field="decontam_threshold")


@dataclass(frozen=True)
class PairwiseConfig:
    """Preference pairs (chosen over rejected) from one kind of feedback."""

    origin: Literal["comparisons", "rankings", "ratings", "corrections", "verifier"] = "comparisons"
    """Feedback table the pairs come from; 'verifier' = rule ratings, correct over wrong."""
    require_consistent: bool = True
    """Drop comparisons whose verdict flipped under position swap."""
    soft_labels: bool = False
    """Keep the judge's probability as the label (prob); otherwise hard labels (1.0, ties 0.5)."""
    min_margin: float = 0.0
    """Keep pairs with |P(chosen better) - 0.5| >= this."""
    ties: Literal["drop", "keep"] = "drop"
    """Ties are dropped or kept with prob 0.5 (kept ties need min_margin = 0)."""
    aggregate: Literal["drop", "majority", "mean"] = "drop"
    """Several verdicts on one pair that disagree: drop them, majority vote, or mean probability."""
    ranking_pairs: Literal["all", "adjacent", "best_vs_rest"] = "all"
    """Pairs taken from a ranking."""
    pairing: Literal["auto", "best_vs_worst", "all", "rso"] = "auto"
    """Ratings/verifier: best_vs_worst = per prompt the best response over the worst; all = every response over
    every lower-scored one (verifier: every correct one, score = scale_max, over every wrong one); rso = statistical
    rejection sampling (Liu et al. 2024, RSO): each response is kept with probability ``exp((score - best score of
    its prompt) / rso_beta)``, so the kept ones follow the policy that sampled them tilted by ``exp(score / beta)``,
    then every kept response over every lower-scored kept one; auto = best_vs_worst for ratings, all for verifier."""
    rso_beta: float = 0.5
    """RSO: the temperature of the acceptance, in score units (small: little beyond the best is kept; large: all)."""
    rso_seed: int = 0
    """RSO: the draws come from a hash of this seed and the response id (same inputs, same rows)."""
    rso_samples: int | None = None
    """RSO: draw until this many responses of a prompt are kept, as the paper's Algorithm 1 does (each pass over
    the responses left keeps one with probability ``exp((score - best score left) / rso_beta)``, the best left
    always); None: one pass, keeping every accepted response."""
    min_score_gap: float = 0.0
    """Ratings/verifier: keep pairs whose score gap is at least this (and above zero)."""
    max_length_ratio: float | None = None
    """Length-bias control: keep pairs whose longer side is at most this many times the shorter (characters)."""
    max_pairs_per_prompt: int | None = None
    """Keep at most this many pairs per prompt, after every other filter, picked by a hash of the two response ids
    (deterministic; iterative DPO: 4 samples, up to 2 pairs). None keeps all."""

    def __post_init__(self) -> None:
        _check_literals(self)
        if self.max_pairs_per_prompt is not None and self.max_pairs_per_prompt < 1:
            raise InputError(f"max_pairs_per_prompt must be >= 1, got {self.max_pairs_per_prompt}",
                             field="max_pairs_per_prompt")
        if not 0.0 <= self.min_margin <= 0.5:
            raise InputError(f"min_margin must be in [0, 0.5], got {self.min_margin}", field="min_margin")
        if self.min_score_gap < 0:
            raise InputError(f"min_score_gap must be >= 0, got {self.min_score_gap}", field="min_score_gap")
        if self.max_length_ratio is not None and self.max_length_ratio < 1:
            raise InputError(f"max_length_ratio must be >= 1, got {self.max_length_ratio}", field="max_length_ratio")
        if self.rso_beta <= 0:
            raise InputError(f"rso_beta must be > 0, got {self.rso_beta}", field="rso_beta")
        if self.rso_samples is not None and self.rso_samples < 2:
            raise InputError(f"rso_samples must be >= 2 (a pair needs two kept responses), got {self.rso_samples}",
                             field="rso_samples")
        if self.pairing == "rso" and self.origin not in ("ratings", "verifier"):
            raise InputError(f"pairing 'rso' samples rated responses: needs origin ratings or verifier, not "
                             f"{self.origin!r}", field="pairing")


@dataclass(frozen=True)
class ListwiseConfig:
    """k responses per prompt, best first, with scores."""

    origin: Literal["rankings", "ratings"] = "rankings"
    """Feedback table the lists come from."""
    k: int = 4
    """Responses per row; prompts (or rankings) with fewer are left out."""

    def __post_init__(self) -> None:
        _check_literals(self)
        if self.k < 2:
            raise InputError(f"k must be >= 2, got {self.k}", field="k")


@dataclass(frozen=True)
class BinaryConfig:
    """Unpaired rows (KTO/BCO): prompt, completion, desirable or not."""

    origin: Literal["thumbs", "ratings", "pairwise"] = "thumbs"
    """thumbs = ratings on a 0..1 scale; ratings = thresholds on graded ratings; pairwise = pairs split in two."""
    desirable_min: float = 1.0
    """Ratings: score at or above this is desirable (thumbs: 1)."""
    undesirable_max: float = 0.0
    """Ratings: score at or below this is undesirable (thumbs: 0); scores in between are left out."""
    pairwise: PairwiseConfig = field(default_factory=PairwiseConfig)
    """How pairs are built when origin is pairwise (options pairwise.KEY=VALUE)."""

    def __post_init__(self) -> None:
        _check_literals(self)
        if self.pairwise.max_pairs_per_prompt is not None:
            raise InputError("pairwise.max_pairs_per_prompt applies to pairwise datasets only",
                             field="pairwise.max_pairs_per_prompt")
        if self.undesirable_max >= self.desirable_min:
            raise InputError(f"undesirable_max ({self.undesirable_max}) must be below desirable_min "
                             f"({self.desirable_min})", field="undesirable_max")


@dataclass(frozen=True)
class StepsConfig:
    """Step-labelled solutions (PRM): labels kept as -1 / 0 / +1."""

    truncate_after_negative: bool = False
    """Cut each solution after its first -1 step (PRM800K phase 2 style)."""
    neutral_label: bool = True
    """Boolean exports map +1 -> True, -1 -> False and 0 -> this value."""
    rollout_threshold: float | None = None
    """Labels from rollouts (`judge steps --rollouts N`): +1 where at least this share of a step's rollouts reached
    the right answer, else -1 (Math-Shepherd's soft estimate cut at a threshold); None keeps the stored hard estimate
    (+1 where any did). Other judges' labels are kept as they are."""

    def __post_init__(self) -> None:
        _check_literals(self)
        if self.rollout_threshold is not None and not 0 < self.rollout_threshold <= 1:
            raise InputError(f"rollout_threshold must be in (0, 1], got {self.rollout_threshold}",
                             field="rollout_threshold")

    def label_rule(self) -> str:
        return f"+1 -> True, 0 -> {self.neutral_label}, -1 -> False"


@dataclass(frozen=True)
class CorrectionConfig:
    """Aligner question / answer / correction rows plus an identity-copy subset."""

    identity_fraction: float = 0.2
    """Fraction of corrections also added as (question, answer, answer) identity rows."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.identity_fraction <= 1.0:
            raise InputError(f"identity_fraction must be in [0, 1], got {self.identity_fraction}",
                             field="identity_fraction")


@dataclass(frozen=True)
class SFTConfig:
    """Best responses for supervised fine-tuning (best-of-N, rejection sampling)."""

    origin: Literal["ratings", "rankings", "verifier"] = "ratings"
    """Where scores come from; verifier = rule ratings."""
    min_score: float = float("-inf")
    """Rejection sampling: keep only responses scoring at least this."""
    per_prompt: int = 1
    """Responses kept per prompt (1 = best-of-N)."""

    def __post_init__(self) -> None:
        _check_literals(self)
        if self.per_prompt < 1:
            raise InputError(f"per_prompt must be >= 1, got {self.per_prompt}", field="per_prompt")


KindConfig = PairwiseConfig | ListwiseConfig | BinaryConfig | StepsConfig | CorrectionConfig | SFTConfig
CONFIGS: dict[str, type] = {"pairwise": PairwiseConfig, "listwise": ListwiseConfig, "binary": BinaryConfig,
                            "steps": StepsConfig, "correction": CorrectionConfig, "sft": SFTConfig}
assert set(CONFIGS) == set(KINDS)


@dataclass(frozen=True)
class DatasetSpec:
    """What to build: the kind, its options and the shared options."""

    kind: str
    """One of pairwise, binary, listwise, steps, correction, sft."""
    config: Any
    """The kind's config (PairwiseConfig, ...)."""
    common: CommonOptions = field(default_factory=CommonOptions)
    """Options every kind shares."""

    def __post_init__(self) -> None:
        check_kind(self.kind)
        if not isinstance(self.config, CONFIGS[self.kind]):
            raise InputError(f"{self.kind} needs a {CONFIGS[self.kind].__name__}, got {type(self.config).__name__}")
        reads = self.reads
        if self.common.aspect != "overall" and reads in _NO_ASPECT:
            raise InputError(f"aspect={self.common.aspect!r}: {reads} carry no aspect (it selects comparisons, "
                             "rankings, ratings and corrections)", field="aspect")

    @property
    def reads(self) -> str:
        """The feedback the build starts from: comparisons, rankings, ratings, corrections or step_labels."""
        config = self.config.pairwise if isinstance(self.config, BinaryConfig) and self.config.origin == "pairwise" \
            else self.config
        origin = getattr(config, "origin", None)
        if self.kind == "steps":
            return "step_labels"
        if self.kind == "correction" or origin == "corrections":
            return "corrections"
        return origin if origin in ("comparisons", "rankings") else "ratings"

    @property
    def builder(self) -> str:
        origin = getattr(self.config, "origin", None)
        return {"steps": "steps.step_labels", "correction": "correction.corrections"}.get(
            self.kind, f"{self.kind}.{origin}")

    def params(self) -> dict[str, Any]:
        """JSON-ready parameters: what, together with the warehouse contents, defines the dataset."""
        common = dataclasses.asdict(self.common)
        if not common["judges"]:  # left out when unset: snapshots built before the option keep their version
            del common["judges"]
        return _jsonable({"kind": self.kind, "builder": self.builder, "config": dataclasses.asdict(self.config),
                          "common": common})


_NO_ASPECT = ("step_labels",)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return str(obj)
    return obj


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"unknown dataset kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return kind


def option_names(kind: str) -> list[str]:
    """Every option key a kind accepts (nested configs as prefix.key)."""
    return sorted(o.name for o in option_help(kind))


@dataclass(frozen=True)
class OptionHelp:
    name: str
    default: str
    """As typed on the command line (lists comma-separated, 'none' for no value)."""
    help: str
    shared: bool
    """True for the options every kind takes (CommonOptions)."""


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the convention this module documents its options with)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for field_node, doc in itertools.pairwise(body):
        if (isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name)
                and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
            docs[field_node.target.id] = " ".join(str(doc.value.value).split())
    return docs


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "-"
    return str(value).lower() if isinstance(value, bool) else str(value)


def option_help(kind: str) -> list[OptionHelp]:
    """Every option a kind accepts with its default and description: the kind's own first, then the shared ones."""
    def walk(cls: type, prefix: str, shared: bool) -> list[OptionHelp]:
        docs, hints, out = _field_docs(cls), typing.get_type_hints(cls), []
        for f in dataclasses.fields(cls):
            nested = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if nested is not None and dataclasses.is_dataclass(nested):
                out += walk(nested, f"{prefix}{f.name}.", shared)  # type: ignore[arg-type]
                continue
            default = f.default if nested is None else nested()
            text = docs.get(f.name, "")
            if typing.get_origin(hints[f.name]) is Literal:
                text += f" One of: {', '.join(typing.get_args(hints[f.name]))}."
            out.append(OptionHelp(prefix + f.name, _shown(default), text.strip(), shared))
        return out

    return walk(CONFIGS[check_kind(kind)], "", False) + walk(CommonOptions, "", True)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(name, value, next(a for a in args if a is not type(None)))
    if not isinstance(value, str):
        return tuple(value) if origin is tuple and isinstance(value, list) else value
    try:
        if hint is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
        if origin is tuple:
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if origin is Literal:
            return value
    except ValueError:
        raise InputError(f"option {name}={value!r} is not a valid {getattr(hint, '__name__', hint)}",
                         field=name) from None
    return value


def _build(cls: type, opts: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        nested = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if nested is not None and dataclasses.is_dataclass(nested):
            sub = {k[len(f.name) + 1:]: v for k, v in opts.items() if k.startswith(f.name + ".")}
            kwargs[f.name] = _build(nested, sub, prefix + f.name + ".")
        elif f.name in opts:
            kwargs[f.name] = _coerce(prefix + f.name, opts[f.name], hints[f.name])
    return cls(**kwargs)


def parse_options(kind: str, options: Mapping[str, Any]) -> DatasetSpec:
    """``{"origin": "rankings", "ties": "keep", ...}`` (strings or typed values) -> a validated DatasetSpec.

    Raises:
        InputError: unknown kind or option (listing the valid ones), or a value out of range.
    """
    valid = option_names(kind)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)} for {kind}; valid options: {', '.join(valid)}")
    common_keys = {f.name for f in dataclasses.fields(CommonOptions)}
    common = _build(CommonOptions, {k: v for k, v in options.items() if k in common_keys})
    config = _build(CONFIGS[kind], {k: v for k, v in options.items() if k not in common_keys})
    return DatasetSpec(kind, config, common)
