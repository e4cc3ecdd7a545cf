"""Prefect flow ``train``: train a model on a dataset snapshot and record the run, its metrics and the new model.

    python -c "from alignloop.flows.train import train, TrainParams; train(TrainParams(method='dpo', dataset='prefs'))"
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from alignloop.flows.params import FlowParams, JudgeKeySecret, RoundName, secret_value
from alignloop.trainers import config as cfgmod
from alignloop.trainers.methods import METHODS, default_config, get_method
from alignloop.trainers.run import PHASES, PROGRESS_METRICS, Progress, TrainResult, train_model
from alignloop.trainers.snapshot import prompt_ids, snapshot_kind
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.records import to_arrow

Method = Literal["dpo", "kto", "bco", "listwise", "reward", "prm", "sft", "ppo", "grpo", "rloo", "online_dpo"]
assert set(Method.__args__) == set(METHODS)  # the form lists exactly the registry's methods


class TrainParams(FlowParams):
    """What to train: the form the Prefect UI shows."""

    method: Method = Field(..., description="dpo (any pairwise loss via 'loss'), kto, bco, listwise, reward, prm, "
                                            "sft, ppo, grpo, rloo, online_dpo (online: need "
                                            "reward_model or verifier).")
    dataset: str = Field(..., min_length=1, description="Dataset name (latest version), NAME@vN, or a snapshot "
                                                        "folder.")
    base: str = Field("default", description="'default' (embedded SmolLM2) or a model folder.")
    loss: str | None = Field(None, description="Loss from the registry (dpo and online_dpo: dpo, ipo, simpo, orpo, "
                                               "...; listwise: rrhf, lipo, pro).")
    beta: float | None = Field(None, gt=0, description="Loss beta (empty: the method's default).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps (empty: from epochs).")
    epochs: float | None = Field(None, gt=0, description="Passes over the train split.")
    batch_size: int | None = Field(None, ge=1, description="Examples per step per device.")
    lr: float | None = Field(None, gt=0, description="Learning rate.")
    max_length: int | None = Field(None, ge=8, description="Longest prompt + completion in tokens.")
    lora: bool = Field(False, description="Train LoRA adapters (merged into the saved model).")
    freeze_layers: int | None = Field(None, ge=0, description="Freeze the embeddings and the first N decoder "
                                                              "layers; train the rest (cheaper steps).")
    config_file: str | None = Field(None, description="JSON config (trainers.config); the fields above override it.")
    output_dir: str | None = Field(None, description="Run folder (default runs/<method>-<dataset>).")
    reference: str | None = Field(None, description="Reference model folder (default: the base model).")
    reward_model: str | None = Field(None, description="online methods: the reward model folder that scores the "
                                                       "answers (from `train reward`).")
    verifier: str | None = Field(None, description="online methods: a rule verifier that scores the answers "
                                                   "instead, 1 pass / 0 fail (final_answer, short_on_topic:N, ...).")
    judge_model: str | None = Field(None, description="online methods, direct RLAIF: an LLM judge (a model folder, "
                                                      "'default', or 'policy': the policy being trained judges its own "
                                                      "answers) whose 0-9 rating of each answer is its reward.")
    judge_base_url: str | None = Field(None, description="online methods, direct RLAIF: judge_model is served at "
                                                         "this OpenAI-compatible endpoint (key: "
                                                         "judge_api_key_secret, else $OPENAI_API_KEY), "
                                                         "which must return log-probabilities.")
    judge_api_key_secret: JudgeKeySecret = None
    judge_principles: list[str] | None = Field(None, description="online methods, direct RLAIF: what the judge "
                                                                 "weighs (principle names or sentences; empty: "
                                                                 "helpful, harmless, honest).")
    judge_aspect: str | None = Field(None, min_length=1, description="online methods, direct RLAIF: what the judge "
                                                                     "rates each answer for (default overall).")
    samples_per_prompt: int | None = Field(None, ge=1, description="online methods: answers sampled per prompt "
                                                                   "per iteration (grpo, rloo: at least 2).")
    max_new_tokens: int | None = Field(None, ge=1, description="online methods: longest sampled answer, in "
                                                               "tokens.")
    temperature: float | None = Field(None, gt=0, description="online methods: sampling temperature.")
    dynamic_sampling: bool | None = Field(None, description=(
        "grpo, rloo, online_dpo: update only on prompts whose answers scored differently, sampling more prompts to "
        "fill the batch (DAPO)."))
    stages: int | None = Field(None, ge=1, description="dpo: sDPO, train on the prompts in this many parts in turn, "
                                                       "each stage from and against the model of the stage before.")
    stage_order: Literal["hash", "easy_first", "ai_first"] | None = Field(None, description=(
        "dpo with stages: cut the prompts by a hash, easy_first (the clearest preferences in stage 1) or ai_first "
        "(AI-labelled pairs first, people's last)."))
    stage_datasets: list[str] = Field(default_factory=list, description=(
        "dpo: sDPO with a dataset per stage (Kim et al. 2024 train on OpenOrca's pairs, then UltraFeedback's): after "
        "dataset, each of these in turn, each stage from and against the model of the stage before."))
    confidence_weight: float | None = Field(None, ge=0, lt=1, description=(
        "reward, dpo (dpo/cdpo loss): weak-to-strong auxiliary confidence loss, the weight of the model's own "
        "hardened prediction in the target (Burns et al. 2023)."))
    cost_model: str | None = Field(None, description="online methods, Safe RLHF: a reward model trained on "
                                                     "harmlessness pairs; its negated score is each answer's cost, "
                                                     "kept under cost_limit by a Lagrange multiplier.")
    cost_limit: float | None = Field(None, description="online methods, Safe RLHF: the bound on the answers' mean "
                                                       "cost (empty: the starting policy's).")
    ptx_dataset: str | None = Field(None, description="online methods, PPO-ptx: an sft dataset whose completions' "
                                                      "likelihood each update keeps (with ptx_coef).")
    ptx_coef: float | None = Field(None, ge=0, description="online methods, PPO-ptx: weight of that likelihood "
                                                           "term.")
    round: RoundName = Field(None, description="Round the run belongs to.")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")

    def config(self) -> cfgmod.MethodConfig:
        """The method config: file (or defaults), then the form's non-empty fields."""
        base = default_config(self.method)
        if self.config_file:
            base = cfgmod.load_over(self.config_file, base)
        data = cfgmod.to_dict(base)
        train = data["train"]
        for key in ("max_steps", "epochs", "batch_size", "lr", "max_length", "freeze_layers"):
            if getattr(self, key) is not None:
                train[key] = getattr(self, key)
        if self.max_length is not None and train["max_prompt_length"] >= self.max_length:
            train["max_prompt_length"] = self.max_length // 2
        if self.lora and not train.get("lora"):
            train["lora"] = cfgmod.to_dict_lora(cfgmod.LoraConfig())
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.dataset)
        train["output_dir"] = self.output_dir or train["output_dir"].replace("runs/train", f"runs/{self.method}-{safe}")
        for key in ("loss", "beta", "reward_model", "verifier", "judge_model", "judge_base_url", "judge_principles",
                    "judge_aspect", "samples_per_prompt", "max_new_tokens", "temperature", "dynamic_sampling",
                    "ptx_coef", "stages", "stage_order", "confidence_weight", "cost_model", "cost_limit"):
            if getattr(self, key) is not None:
                if key not in data:
                    raise AlignloopError(f"method {self.method} has no {key} option")
                data[key] = getattr(self, key)
        if self.judge_api_key_secret and not self.judge_base_url:
            raise AlignloopError("judge_api_key_secret is the key of a judge at an endpoint: set judge_base_url too")
        if self.stage_datasets:
            if "stages" not in data:
                raise AlignloopError(f"method {self.method} has no stages: stage_datasets is sDPO's (method dpo)")
            if data["stages"] > 1 or data["stage_order"] != "hash":
                raise AlignloopError("stage_datasets makes each dataset a stage; stages and stage_order cut one "
                                     "dataset into stages: use one or the other")
        if "reward_model" in data:  # an online method
            cfgmod.check_one_reward(self.method, data["reward_model"], data["verifier"], data["judge_model"])
        if data.get("verifier"):
            from alignloop.pipelines.verifiers import get_verifier

            get_verifier(data["verifier"])  # an unknown name fails here, in the form
        try:
            return cfgmod.from_dict(data)
        except ValueError as exc:
            raise AlignloopError(f"method {self.method}: {exc}") from None


def resolve_dataset(dataset: str, db_path: str) -> tuple[Path, str | None]:
    """A snapshot folder and dataset id: an existing folder as is, else NAME[@vN] through the ``datasets`` table."""
    if Path(dataset).is_dir():
        return Path(dataset), None
    from alignloop.pipelines.datasets.snapshot import parse_ref

    name, version = parse_ref(dataset)
    with db.connect(db_path) as con:
        found = con.execute(db.query("latest_dataset"), {"name": name, "version": version}).fetchall()
        held = con.execute(db.query("dataset_versions")).fetchall() if not found else []
    if not found:
        known = "; ".join(f"{n} ({kind}, {', '.join(f'v{v}' for v in vs)})" for n, kind, vs in held)
        raise AlignloopError(f"dataset {dataset!r} is not in the warehouse {db_path}; "
                             + (f"datasets there: {known}" if known else "none built yet ('alignloop dataset build')"))
    return Path(found[0][4]), found[0][0]


def resolve_base(base: str, db_path: str) -> tuple[Path, str]:
    """Model folder and warehouse id ('default' = the embedded model, registered as a policy)."""
    from alignloop.pipelines.models import register_model, resolve_model

    path = resolve_model(base)
    with db.connect(db_path) as con:
        return path, register_model(con, str(path), "policy")


def logged_progress(logger: logging.Logger | logging.LoggerAdapter, parts: int = 10) -> Progress:
    """A :data:`~trainers.run.Progress` that logs each phase's first report, about every ``1/parts`` of it and its
    end: a run started from the Prefect UI (or a round) shows in its logs where it is, the loss included."""
    last: dict[str, int] = {}

    def report(phase: str, done: int, total: int, logs: dict[str, float]) -> None:
        step = max(total // parts, 1)
        if phase in last and (done == last[phase] or (done < last[phase] + step and done != total)):
            return
        last[phase] = done
        name, unit = PHASES[phase]
        label = f"{name} {unit}" if phase == "train" else f"{name} ({unit})"  # "training steps 3/10"
        shown = " ".join(f"{k}={v:.4g}" for k, v in logs.items() if k in PROGRESS_METRICS)
        logger.info("%s %d/%d%s", label, done, total, f" ({shown})" if shown else "")

    return report


# No Prefect cache key: the progress callback cannot be hashed, and a run's idempotence lives in its run folder
# (a finished run returns its stored records).
@task(cache_policy=NO_CACHE)
def train_task(method: str, snapshot: str, base: str, config: dict[str, Any], base_model_id: str,
               reference: str | None, round_id: str | None, progress: Progress | None = None,
               prompt_checks: dict[str, dict[str, Any]] | None = None, ptx: str | None = None,
               judge_key_secret: str | None = None) -> TrainResult:
    """Train in a task; without a caller's ``progress`` (the UI, a round) the phases go to the run's log. The
    judge's key is read from its Secret block here: the block's name is the task's parameter, never the key."""
    return train_model(method, snapshot, base, cfgmod.from_dict(config), base_model_id=base_model_id,
                       reference_model=reference, round_id=round_id,
                       progress=progress or logged_progress(get_run_logger()), prompt_checks=prompt_checks, ptx=ptx,
                       judge_api_key=secret_value(judge_key_secret))


def verifier_prompt_checks(db_path: str, snapshot: Path) -> dict[str, dict[str, Any]]:
    """What a verifier reads of the snapshot's prompts (reference, tags, topic), from the warehouse."""
    from alignloop.pipelines.judges.run import prompt_checks

    with db.connect(db_path, read_only=True) as con:
        return prompt_checks(con, prompt_ids(snapshot))


def record_result(db_path: str, result: TrainResult) -> dict[str, int]:
    """Write the run, its metrics, the new model, evaluations and artifacts in one transaction."""
    tables: list[tuple[str, list[Any]]] = [
        ("training_runs", [result.run]), ("training_metrics", result.metrics), ("models", [result.model]),
        ("evaluations", result.evaluations), ("artifacts", result.artifacts),
    ]
    written = {}
    with db.connect(db_path) as con, db.transaction(con):
        if result.run.round_id:
            db.ensure_round(con, result.run.round_id)
        for table, rows in tables:
            written[table] = db.ingest(con, table, to_arrow(rows)) if rows else 0
    return written


@flow(name="train", persist_result=True)
def train(params: TrainParams, progress: Progress | None = None) -> dict[str, Any]:
    """Resolve inputs, train (in a task), record everything; returns a summary."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    db_path = db.existing_path(params.db)
    config = params.config()
    snapshot, dataset_id = resolve_dataset(params.dataset, db_path)
    name, kind = snapshot_kind(snapshot)
    get_method(params.method).layout(kind, name)  # a wrong kind fails the flow here, before a task or model load
    base, base_id = resolve_base(params.base, db_path)
    checks = verifier_prompt_checks(db_path, snapshot) if getattr(config, "verifier", "") else None
    ptx = None
    if params.ptx_dataset:
        from alignloop.trainers.ppo import check_ptx_kind

        ptx, _ = resolve_dataset(params.ptx_dataset, db_path)
        check_ptx_kind(params.ptx_dataset, snapshot_kind(ptx)[1])  # before a task or model load
    stages = getattr(config, "stages", 1)
    if stages > 1 and stages > (n := len(prompt_ids(snapshot, ("train",)))):  # before any stage trains
        raise AlignloopError(f"sDPO with {stages} stages needs at least as many train prompts; dataset "
                             f"{params.dataset!r} has {n}")
    datasets = [(snapshot, dataset_id, params.dataset)] * stages  # each run's snapshot, dataset id and name
    for ref in params.stage_datasets:  # sDPO, a dataset a stage: each found and of the first's kind before any trains
        stage_snapshot, stage_id = resolve_dataset(ref, db_path)
        if (stage_kind := snapshot_kind(stage_snapshot)[1]) != kind:
            raise AlignloopError(f"stage dataset {ref!r} is {stage_kind}, dataset {params.dataset!r} {kind}: sDPO's "
                                 "stages train one kind")
        datasets.append((stage_snapshot, stage_id, ref))
    reference, summaries = params.reference, []
    # one run; sDPO: one a stage, each from and against the last
    for (stage_snapshot, stage_id, stage_name), stage_config in zip(datasets, _stage_configs(config, len(datasets))):
        result = train_task(params.method, str(stage_snapshot), str(base), cfgmod.to_dict(stage_config), base_id,
                            reference, params.round, progress, checks, str(ptx) if ptx else None,
                            params.judge_api_key_secret)
        if stage_id and not result.run.dataset_id:
            result = _with_dataset(result, stage_id)
        summaries.append({**_summary(result, record_result(db_path, result)), "dataset": stage_name})
        base, base_id, reference = result.model_dir, result.model.id, str(result.model_dir)
    return summaries[-1] if len(summaries) == 1 else {**summaries[-1], "stages": summaries}


def _stage_configs(config: cfgmod.MethodConfig, runs: int) -> list[cfgmod.MethodConfig]:
    """The config of each of ``runs`` runs: itself, or for sDPO's stages each stage's (of one dataset cut in parts:
    its part), in a folder of its own."""
    from dataclasses import replace

    if runs == 1:
        return [config]
    out, cut = config.train.output_dir, getattr(config, "stages", 1) > 1
    return [replace(config, stage=k if cut else 0, train=replace(config.train, output_dir=f"{out}/stage-{k + 1}"))
            for k in range(runs)]


def _summary(result: TrainResult, written: dict[str, int]) -> dict[str, Any]:
    return {"run_id": result.run.id, "model_id": result.model.id, "model_dir": str(result.model_dir),
            "plot": str(result.plot) if result.plot else None, "written": written,
            "eval": result.run.meta.get("eval", {}), "truncation": result.truncation,
            "steps": result.run.meta.get("steps"), "train_seconds": result.run.meta.get("train_seconds"),
            "soft_labels": result.run.meta.get("soft_labels"),
            "reused": result.reused}


def _with_dataset(result: TrainResult, dataset_id: str) -> TrainResult:
    from dataclasses import replace

    return replace(result, run=replace(result.run, dataset_id=dataset_id))
