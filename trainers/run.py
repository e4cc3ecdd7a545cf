"""Train one method on one dataset snapshot and return the warehouse records (the flow writes them).

    from alignloop.trainers.run import train_model
    result = train_model("dpo", "snapshots/prefs@1", "models/base", PreferenceConfig(), base_model_id="...")
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignloop.trainers import config as cfgmod
from alignloop.trainers.card import model_card
from alignloop.trainers.core import AlignTrainer, MetricsRecorder, ProgressPrinter
from alignloop.trainers.evaluate import evaluate_split
from alignloop.trainers.loading import (
    check_freeze_layers,
    check_model_dir,
    load_model,
    load_tokenizer,
    save_model,
    use_bf16,
)
from alignloop.trainers.methods import Layout, MethodSpec, get_method, needs_reference, row_ids
from alignloop.trainers.records import (
    evaluation_rows,
    metric_rows,
    model_record,
    plot_curves,
    run_id,
    stored_name,
    training_run,
)
from alignloop.trainers.reference import cached_reference, compute_logps, is_cached, reference_inputs
from alignloop.trainers.snapshot import Snapshot, load_snapshot_dir
from alignloop.trainers.tokenize import Encoder
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.ids import hash_parts
from alignloop.warehouse.records import Artifact, Evaluation, Metric, Model, TrainingRun

Progress = Callable[[str, int, int, dict[str, float]], None]
"""``(phase, done, total, logs)``: phase ``reference`` (rows whose reference log-probs are computed, over the splits
not cached; absent when both are), ``train`` (optimizer steps, at every log step, with the logged metrics), ``eval``
(held-out rows)."""
PHASES = {"reference": ("reference log-probs", "rows"), "train": ("training", "steps"),
          "eval": ("held-out evaluation", "rows")}
"""Each :data:`Progress` phase's name and what it counts."""
PROGRESS_METRICS = ("loss", "rewards/accuracies", "step_accuracy", "reward")
"""The logged metrics that progress reports show."""


@dataclass(frozen=True)
class TrainResult:
    """Everything a run produced; the flow ingests the records."""

    run: TrainingRun
    metrics: list[Metric]
    model: Model
    evaluations: list[Evaluation]
    artifacts: list[Artifact]
    model_dir: Path
    plot: Path | None
    truncation: dict[str, dict[str, int]] = field(default_factory=dict)
    reused: bool = False
    """The run folder held this run finished: its stored records, nothing trained."""


@dataclass
class _Reference:
    """Loads the reference model only on a cache miss, once for all splits."""

    path: Path
    bf16: bool
    batch_size: int
    model: Any = None

    def logps(self, features: list[Any], collate: Any, on_rows: Callable[[int], None] | None = None) -> np.ndarray:
        if self.model is None:
            self.model = load_model(self.path, "causal")
        return compute_logps(self.model, features, collate, self.batch_size, self.bf16, on_rows)


@dataclass
class _LazyReference:
    """Reference log-probs looked up by row like the precomputed array (``ref[rows]``), each row computed the
    first time a batch asks for it."""

    ref: _Reference
    features: list[Any]
    collate: Any
    rows: dict[int, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, rows: list[int]) -> np.ndarray:
        missing = [r for r in dict.fromkeys(rows) if r not in self.rows]
        if missing:
            self.rows.update(zip(missing, self.ref.logps([self.features[r] for r in missing], self.collate)))
        width = max(len(self.rows[r]) for r in rows)  # lists computed in different batches: pad as one array does
        return np.stack([np.pad(self.rows[r], (0, width - len(self.rows[r])), constant_values=np.nan) for r in rows])


@dataclass
class _Counter:
    """Rows done in one phase, passed on to a :data:`Progress` (nothing without one)."""

    progress: Progress | None
    phase: str
    total: int
    done: int = 0

    def __call__(self, rows: int) -> None:
        self.done += rows
        if self.progress:
            self.progress(self.phase, self.done, self.total, {})


def per_batch_reference(t: cfgmod.TrainConfig, train_rows: int) -> bool:
    """Whether a run computes the train rows' reference log-probs as its batches first need them (the reference
    model stays loaded; nothing is cached) instead of in a pass over every row before training: a short run
    (``max_steps``) whose batches cover at most half the split."""
    seen = (t.max_steps * t.grad_accum + 1) * t.batch_size  # the data loader reads one batch ahead
    return 0 < t.max_steps and seen <= train_rows / 2


def _reference_logps(ref: _Reference, inputs: dict[str, dict[str, Any]], features: dict[str, list[Any]],
                     collate: Any, t: cfgmod.TrainConfig, cache_dir: Path | None, progress: Progress | None
                     ) -> tuple[dict[str, np.ndarray | _LazyReference], list[Artifact], _LazyReference | None]:
    """Each split's reference log-probs (cached artifact, or computed and stored), the artifacts, and the train
    split's per-batch lookup where :func:`per_batch_reference` says so (then no train artifact)."""
    cached = {split: is_cached(split_inputs, cache_dir) for split, split_inputs in inputs.items()}
    refs: dict[str, np.ndarray | _LazyReference] = {}
    lazy = None
    if "train" in inputs and not cached["train"] and per_batch_reference(t, len(features["train"])):
        refs["train"] = lazy = _LazyReference(ref, features["train"], collate)
    # the bar counts the rows to compute: a split whose log-probs are cached is read, not counted
    counter = _Counter(progress, "reference", sum(len(features[s]) for s in inputs if s not in refs and not cached[s]))
    artifacts = []
    for split, split_inputs in inputs.items():
        if split not in refs:
            refs[split], art = cached_reference(
                split_inputs, lambda f=features[split]: ref.logps(f, collate, counter), cache_dir)
            artifacts.append(art)
    return refs, artifacts, lazy


def _clarity(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """sDPO's easy-first order: per prompt, minus the mean ``|prob - 0.5|`` of its pairs, then minus their mean
    margin (missing: 0), so that sorting puts the clearest preferences first."""
    by: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        prob = 1.0 if r["prob"] is None else r["prob"]
        by.setdefault(r["prompt_id"], []).append((abs(prob - 0.5), r["margin"] or 0.0))
    return {p: (-sum(c for c, _ in v) / len(v), -sum(m for _, m in v) / len(v)) for p, v in by.items()}


def _people_last(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The ``ai_first`` order: per prompt, the share of its pairs that people labelled (``source`` human), so that
    sorting puts the prompts with AI labels only first and those with people's only last."""
    by: dict[str, list[int]] = {}
    for r in rows:
        by.setdefault(r["prompt_id"], []).append(r.get("source") == "human")
    return {p: sum(v) / len(v) for p, v in by.items()}


_STAGE_RANKS = {"easy_first": _clarity, "ai_first": _people_last}


def _stage_rows(rows: list[dict[str, Any]], snapshot: Snapshot, config: Any) -> list[dict[str, Any]]:
    """The train rows of the config's sDPO stage (all rows without stages)."""
    stages = getattr(config, "stages", 1)
    if stages == 1:
        return rows
    rank = _STAGE_RANKS.get(config.stage_order)
    stage_of = hash_parts((r["prompt_id"] for r in rows), stages, rank(rows) if rank else None)
    kept = [r for r in rows if stage_of[r["prompt_id"]] == config.stage]
    if not kept:
        raise AlignloopError(f"sDPO stage {config.stage + 1} of {stages} has no train rows: dataset "
                             f"{snapshot.name!r} has {len(stage_of)} train prompt(s); use fewer stages")
    return kept


def _encode(spec: MethodSpec, layout: Layout, snapshot: Snapshot, tokenizer: Any,
            config: cfgmod.MethodConfig) -> tuple[dict[str, list[Any]], dict[str, dict[str, int]], list[str]]:
    t = config.train
    features, counts = {}, {}
    for split in ("train", "test"):
        rows = snapshot.split(split).to_pylist()
        if split == "train":
            rows = _stage_rows(rows, snapshot, config)
        enc = Encoder(tokenizer, t.max_length, t.max_prompt_length)
        features[split] = layout.encode(enc, rows, config)
        counts[split] = enc.counts.as_dict()
        if split == "train":
            ids = row_ids(snapshot.kind, rows)
    if not features["train"]:
        raise AlignloopError(f"dataset {snapshot.name!r} has no usable train rows for method {spec.name}")
    return features, counts, ids


def train_model(method: str, snapshot: Snapshot | str | Path, base_model: str | Path,
                config: cfgmod.MethodConfig | None = None, *, base_model_id: str,
                reference_model: str | Path | None = None, reference_model_id: str | None = None,
                round_id: str | None = None, cache_dir: Path | None = None,
                progress: Progress | None = None,
                prompt_checks: Mapping[str, Mapping[str, Any]] | None = None,
                ptx: Snapshot | str | Path | None = None, judge_api_key: str | None = None) -> TrainResult:
    """Train ``method`` on a snapshot starting from ``base_model`` (a model folder).

    Args:
        method: a key of :data:`trainers.methods.METHODS`.
        snapshot: a loaded :class:`Snapshot` or a snapshot folder.
        base_model: model folder to start from.
        config: the method's config (default: the method's defaults).
        base_model_id: warehouse id of the base model (parent of the trained model).
        reference_model, reference_model_id: reference for losses that need one (default: the base model).
        round_id: round this run belongs to.
        cache_dir: reference log-prob artifacts folder (default ``$ALIGNLOOP_CACHE/reference``).
        progress: told what the run is doing (:data:`Progress`): reference rows, training steps, held-out rows.
        prompt_checks: online methods scored by a verifier: what it reads of each prompt (reference, tags, topic),
            by prompt id (:func:`pipelines.judges.run.prompt_checks`).
        ptx: online methods: PPO-ptx's sft snapshot (with the config's ``ptx_coef``).
        judge_api_key: online methods, direct RLAIF at an endpoint: the judge's key (default ``$OPENAI_API_KEY``);
            not part of the config, so it is in no run record or file.

    Raises:
        AlignloopError: wrong dataset kind, empty dataset, missing base model, resumed config mismatch, NaN loss.
    """
    from transformers import PrinterCallback, TrainingArguments, set_seed

    spec = get_method(method)
    snap = snapshot if isinstance(snapshot, Snapshot) else load_snapshot_dir(snapshot)
    layout = spec.layout(snap.kind, snap.name)
    config = config or spec.config_type()
    if not isinstance(config, spec.config_type):
        raise AlignloopError(f"method {method} takes a {spec.config_type.__name__}, got {type(config).__name__}")
    if snap.train.num_rows == 0:
        raise AlignloopError(f"dataset {snap.name!r} is empty (train split has 0 rows)")
    base = check_model_dir(base_model)
    if spec.loop is not None:
        if getattr(config, "method", method) != method:  # the online methods share a config: its advantage decides
            raise AlignloopError(f"method {method} got a config for method {config.method} (advantage "
                                 f"{config.advantage!r}); run `train {config.method}` or change the advantage")
        return spec.loop(snap, base, config, base_model_id=base_model_id, reference_model=reference_model,
                         reference_model_id=reference_model_id, round_id=round_id, progress=progress,
                         finished=_finished, record=_record_finished, prompt_checks=prompt_checks, ptx=ptx,
                         judge_api_key=judge_api_key)
    if judge_api_key is not None:
        raise AlignloopError(f"a judge's key is for the online methods' judge at an endpoint, not method {method}")
    if ptx is not None:
        raise AlignloopError(f"a ptx dataset (PPO-ptx) mixes into the online methods' updates, not method {method}'s")
    t = config.train
    if t.freeze_layers:  # the model's depth is in its config: refuse before encoding and reference passes
        from transformers import AutoConfig

        check_freeze_layers(t.freeze_layers, AutoConfig.from_pretrained(str(base)).num_hidden_layers)
    out_dir = Path(t.output_dir)
    cfg_dict = cfgmod.recorded(config)
    rid = run_id(method, cfg_dict, snap.content_hash, base_model_id)
    resumed = cfgmod.check_resume(out_dir, config, {"method": method, "dataset": snap.content_hash,
                                                    "base_model": base_model_id})
    if resumed and (done := _finished(out_dir, rid)) is not None:
        return done
    tokenizer = load_tokenizer(base)
    features, truncation, ids = _encode(spec, layout, snap, tokenizer, config)
    bf16 = use_bf16(t)

    refs: dict[str, np.ndarray | _LazyReference] = {}
    artifacts: list[Artifact] = []
    ref_id, lazy = None, None
    if needs_reference(config):
        ref_id = reference_model_id or base_model_id
        ref = _Reference(Path(reference_model or base), bf16, max(t.batch_size, 1))
        layouts = {"train": f"{method}:{snap.kind}", "test": f"{method}:{snap.kind}"}
        if getattr(config, "stages", 1) > 1:  # sDPO: a stage's train rows are its part's, cached apart
            layouts["train"] += f":stage {config.stage + 1}/{config.stages}" + (
                f" {config.stage_order}" if config.stage_order != "hash" else "")
        inputs = {split: reference_inputs(content_hash=snap.content_hash, split=split, reference_model_id=ref_id,
                                          tokenizer_id=base_model_id, layout=layouts[split],
                                          max_length=t.max_length, max_prompt_length=t.max_prompt_length,
                                          dtype="bf16" if bf16 else "fp32",
                                          max_candidates=getattr(config, "max_candidates", None))
                  for split, feats in features.items() if feats}
        refs, artifacts, lazy = _reference_logps(ref, inputs, features, layout.collator(tokenizer.pad_token_id), t,
                                                 cache_dir, progress)
        if lazy is None:
            ref.model = None  # free the reference before the policy trains

    def collator(split: str) -> Any:
        kw = {"ref": refs[split]} if split in refs else {}
        return layout.collator(tokenizer.pad_token_id, **kw)

    set_seed(t.seed)
    num_labels = getattr(config, "num_classes", 1)
    model = load_model(base, spec.head, num_labels=num_labels, pad_token_id=tokenizer.pad_token_id, lora=t.lora,
                       gradient_checkpointing=t.gradient_checkpointing, freeze_layers=t.freeze_layers)
    objective = layout.objective(config)
    soft = _soft_labels(features["train"], objective)
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"), per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, num_train_epochs=t.epochs,
        max_steps=t.max_steps, seed=t.seed, bf16=bf16, use_cpu=not torch.cuda.is_available(), logging_steps=t.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=1, report_to="none",
        remove_unused_columns=False, warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay,
        disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(), lr_scheduler_type="linear",
    )
    recorder = MetricsRecorder()
    callbacks = [recorder] + ([ProgressPrinter(progress)] if progress else [])
    trainer = AlignTrainer(model=model, args=args, train_dataset=features["train"], data_collator=collator("train"),
                           callbacks=callbacks, objective=objective, row_ids=ids,
                           optimizer_cls_and_kwargs=_online_merging(t, model, args, Path(reference_model or base)))
    trainer.remove_callback(PrinterCallback)  # progress goes through ``progress``; no raw dict prints
    has_checkpoint = resumed and any((out_dir / "checkpoints").glob("checkpoint-*"))
    started = time.time()
    trainer.train(resume_from_checkpoint=True if has_checkpoint else None)
    seconds = time.time() - started
    if lazy is not None:
        ref.model = None

    # how inputs were cut, saved with the model: a reward-model judge reads its responses the same way
    trainer.model.config.alignloop_input = {"max_length": t.max_length, "max_prompt_length": t.max_prompt_length,
                                            **({"step_separator": config.step_separator}
                                               if isinstance(config, cfgmod.PRMConfig) else {}),
                                            **({"template": "aligner"} if layout.role == "aligner" else {})}
    model_dir = save_model(trainer.model, tokenizer, out_dir / "model")
    evals: dict[str, float] = {}
    if t.eval and features["test"]:
        evals = evaluate_split(trainer.model, objective, features["test"], collator("test"), t.batch_size, bf16,
                               _Counter(progress, "eval", len(features["test"])))
    meta = {"base_model": stored_name(base), "truncation": truncation, "train_seconds": round(seconds, 2),
            "steps": trainer.state.global_step,
            "bf16": bf16, "resumed": bool(has_checkpoint), "reference_artifacts": [a.id for a in artifacts],
            "eval": evals, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **soft,
            **({"reference_rows_per_batch": len(lazy.rows)} if lazy is not None else {})}
    model_rec = model_record(str(model_dir), layout.role, base_model_id, rid,
                             {"method": method, "dataset": snap.dataset_id or snap.name})
    run = training_run(rid, method, cfg_dict, dataset_id=snap.dataset_id, base_model_id=base_model_id,
                       reference_model_id=ref_id, output_model_id=model_rec.id, round_id=round_id,
                       status="finished", meta=meta)
    plot = plot_curves(recorder.rows, out_dir / "curves.png", f"{method} on {snap.name} ({rid[:8]})")
    result = TrainResult(run, metric_rows(rid, recorder.rows), model_rec,
                         evaluation_rows(model_rec.id, evals, round_id, {"run": rid, "dataset": snap.content_hash}),
                         artifacts, model_dir, plot, truncation)
    _record_finished(out_dir, rid, meta, result)
    return result


def _online_merging(t: cfgmod.TrainConfig, model: Any, args: Any, reference: Path) -> tuple[type, dict] | None:
    """An online merging optimizer in place of AdamW where ``t.merge_base`` names the pretrained model
    (:mod:`trainers.merging`)."""
    if not t.merge_base:
        return None
    from alignloop.trainers.merging import OnlineMergingAdamW, optimizer_kwargs

    return OnlineMergingAdamW, {"lr": t.lr, "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon,
                                **optimizer_kwargs(t, model, reference)}


def _soft_labels(features: list[Any], objective: Any) -> dict[str, Any]:
    """``{"soft_labels": {"pairs": n, "used": bool}}`` where train pairs carry a soft label (``prob`` < 1): whether the
    objective trains on them or treats them as hard preferences; empty without such pairs."""
    n = sum(1 for f in features if getattr(f, "prob", 1.0) < 1.0)
    if not n:
        return {}
    loss = getattr(objective, "loss", None)
    used = bool(getattr(objective, "soft_labels", False)) and (loss is None or loss.takes_labels)
    return {"soft_labels": {"pairs": n, "used": used}}


_RECORDS = {"run": TrainingRun, "metrics": Metric, "model": Model, "evaluations": Evaluation, "artifacts": Artifact}


def _record_finished(out_dir: Path, rid: str, meta: dict[str, Any], result: TrainResult) -> None:
    """Write the model's card (``model/README.md``) and ``run.json`` (the run's summary and every record it
    produced), then drop the Trainer checkpoints.

    Once the model is saved and ``run.json`` is in place the run folder says everything about the run, so the final
    checkpoint (model again plus optimizer state: 1.6 GB for a 135M model in float32) is removed; running the same
    run again returns the stored records (:func:`_finished`). A crash before ``run.json`` is written leaves the
    checkpoint, and the run resumes from it.
    """
    records = {"run": asdict(result.run), "metrics": [asdict(m) for m in result.metrics],
               "model": asdict(result.model), "evaluations": [asdict(e) for e in result.evaluations],
               "artifacts": [asdict(a) for a in result.artifacts],
               "plot": result.plot.name if result.plot else None, "truncation": result.truncation}
    card = model_card(records["run"], records["model"], meta)
    (result.model_dir / "README.md").write_text(card, encoding="utf-8")
    path = out_dir / "run.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"run_id": rid, **meta, "records": records}, indent=2, default=str))
    os.replace(tmp, path)  # whole or absent: a half-written run.json never passes for a finished run
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)


def _finished(out_dir: Path, rid: str) -> TrainResult | None:
    """The stored result of run ``rid`` if ``out_dir`` holds it finished (``run.json`` and the saved model)."""
    path, model_dir = out_dir / "run.json", out_dir / "model"
    if not path.is_file() or not (model_dir / "config.json").is_file():
        return None
    saved = json.loads(path.read_text())
    rec = saved.get("records")
    if saved.get("run_id") != rid or not rec:
        return None
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # a crash may have come between the two steps
    one = {k: _RECORDS[k](**rec[k]) for k in ("run", "model")}
    many = {k: [_RECORDS[k](**r) for r in rec[k]] for k in ("metrics", "evaluations", "artifacts")}
    plot = out_dir / rec["plot"] if rec.get("plot") else None
    return TrainResult(one["run"], many["metrics"], one["model"], many["evaluations"], many["artifacts"], model_dir,
                       plot if plot and plot.is_file() else None, rec.get("truncation") or {}, reused=True)
