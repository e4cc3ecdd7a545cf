"""Prefect flow ``weak-to-strong``: Burns et al. (2023)'s experiment with reward models on a pairwise dataset whose
labels are the ground truth (people's), and its bootstrapping through models of growing size.

    python -c "from alignloop.flows.weak_to_strong import weak_to_strong, WeakToStrongParams as P; \
weak_to_strong(P(dataset='hh', models=['models/smol-8l', 'default']))"

The dataset's train prompts are cut in two halves by a hash. The weakest model is trained as a reward model on the
first half's true labels (the weak supervisor). Then, for each larger model in turn: the model before it (the weak
supervisor, then the last model trained on labels) scores the second half's responses, its scores become ratings in
the warehouse and a relabelled snapshot, and the model is trained on that snapshot (``confidence_weight``: the
auxiliary confidence loss) and, as its ceiling, on the second half's true labels. Every model is measured on the
dataset's test split; performance gap recovered = (weak-to-strong - weak) / (ceiling - weak). With three models or
more, ``direct`` also trains the largest on the weak supervisor's labels, the baseline bootstrapping is measured
against. Each run, rating and snapshot is stored like any other; a rerun reuses what is done.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from pydantic import Field, field_validator

from alignloop.flows.params import FlowParams, name_check
from alignloop.flows.train import TrainParams, resolve_dataset, train
from alignloop.pipelines.datasets import derived, publish
from alignloop.pipelines.datasets.build import BuildResult
from alignloop.pipelines.datasets.snapshot import (
    Snapshot,
    check_name,
    read_snapshot,
    recorded_versions,
    register,
    snapshot_root,
)
from alignloop.trainers.config import check_run_folder
from alignloop.trainers.evaluate import performance_gap_recovered
from alignloop.trainers.run import Progress
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.records import Evaluation, Rating, to_arrow

ACCURACY = "eval/rewards/accuracies"
"""The held-out figure compared: a reward model's accuracy on the test split's true labels."""


class WeakToStrongParams(FlowParams):
    """What to run: the form the Prefect UI shows."""

    dataset: str = Field(..., min_length=1, description="Pairwise dataset with true labels (name, NAME@vN or a "
                                                        "snapshot folder); its test split measures every model.")
    models: list[str] = Field(..., min_length=2, description="Base models, weakest first ('default' or folders; "
                                                             "`alignloop models shrink` makes smaller ones). "
                                                             "More than two: bootstrapping.")
    confidence_weight: float = Field(0.0, ge=0, lt=1, description="Auxiliary confidence loss weight of the runs "
                                                                  "trained on labels (0: off).")
    soft_labels: bool = Field(True, description="Train on the supervisor's probability sigmoid(score gap); off: "
                                                "its hard preference.")
    direct: bool = Field(True, description="With 3+ models, also train the largest on the weakest's labels.")
    epochs: float | None = Field(None, gt=0, description="Passes over the train half (every run).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps per run (empty: from epochs).")
    batch_size: int | None = Field(None, ge=1, description="Pairs per step.")
    lr: float | None = Field(None, gt=0, description="Learning rate.")
    max_length: int | None = Field(None, ge=8, description="Longest prompt + response in tokens.")
    config_file: str | None = Field(None, description="JSON reward config (trainers.config) for every run (its "
                                                      "confidence_weight is replaced by the field above).")
    name: Annotated[str | None, name_check("dataset name prefix")] = Field(
        None, description="Prefix of the datasets it writes (default DATASET-w2s).")
    output_dir: str | None = Field(None, description="Folder of its runs and summary (default runs/w2s-DATASET).")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")

    @field_validator("models")
    @classmethod
    def _named(cls, value: list[str]) -> list[str]:
        if any(not m.strip() for m in value):
            raise ValueError("a model is empty")
        return value


@task(cache_policy=NO_CACHE)
def score_task(labeler: str, snapshot: str) -> list[Rating]:
    """The labeler's ratings of the snapshot's train responses (one per response)."""
    from alignloop.pipelines.judges.config import ResponseItem
    from alignloop.pipelines.judges.reward_model import RewardModelJudge

    judge = RewardModelJudge.load(labeler)
    by_round: dict[str, list[ResponseItem]] = {}
    for r in derived.responses(read_snapshot(Path(snapshot))):
        by_round.setdefault(r["round_id"], []).append(ResponseItem(
            r["id"], r["prompt_id"], r["prompt_text"], r["text"], messages=r["prompt"]))
    return [rating for rnd, items in by_round.items() for rating in judge.judge_items(items, rnd)]


def _publish(path: str, result: BuildResult, name: str, root: Path) -> Snapshot:
    with db.connect(path) as con:
        known = recorded_versions(con, name)
    outcome, _ = publish.write(result, name, root, known_versions=known)
    with db.connect(path) as con:
        register(con, outcome.manifest, outcome.path)
    return read_snapshot(outcome.path)


def _stored_scores(path: str, labeler: str, half: Snapshot) -> dict[str, tuple[float, str]] | None:
    """The labeler's ratings of every train response of the half, when the warehouse holds them all (a rerun)."""
    from alignloop.pipelines.judges.reward_model import orm_rating_id

    wanted = {orm_rating_id(labeler, r["id"]): r["id"] for r in derived.responses(half)}
    with db.connect(path, read_only=True) as con:
        rows = con.execute("SELECT id, score FROM ratings WHERE list_contains(?, id)", [list(wanted)]).fetchall()
    return {wanted[rid]: (score, rid) for rid, score in rows} if len(rows) == len(wanted) else None


def _relabelled(path: str, labeler: str, half: Snapshot, soft: bool, name: str, root: Path) -> Snapshot:
    """The half's pairs as ``labeler`` (a reward model folder) orders them; its ratings stored first (or read back,
    when a run before stored them all)."""
    from alignloop.pipelines.judges.reward_model import orm_judge_id

    scores = _stored_scores(path, labeler, half)
    if scores is None:
        ratings = score_task(labeler, str(half.path))
        with db.connect(path) as con, db.transaction(con):
            for rnd in {r.round_id for r in ratings}:
                db.ensure_round(con, rnd)
            db.ingest(con, "ratings", to_arrow(ratings))
        scores = {r.response_id: (r.score, r.id) for r in ratings}
    return _publish(path, derived.relabel(half, scores, orm_judge_id(labeler), soft), name, root)


@flow(name="weak-to-strong", persist_result=True)
def weak_to_strong(params: WeakToStrongParams, progress: Progress | None = None,
                   on_run: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Weak supervisor -> (labels -> larger model, and its ceiling) per model -> PGR; returns a summary.

    Args:
        progress: each run's phases (the CLI's bars); without it the runs log theirs.
        on_run: ``(label, k, runs)`` before the k-th run (1-based) starts.
    """
    path = db.existing_path(params.db)
    folder, _ = resolve_dataset(params.dataset, path)
    truth = read_snapshot(folder)
    if truth.manifest.kind != "pairwise":
        raise AlignloopError(f"weak-to-strong trains reward models on pairs; dataset {params.dataset!r} is "
                             f"{truth.manifest.kind}")
    if not truth.test.num_rows:
        raise AlignloopError(f"weak-to-strong measures every model on the test split; dataset {params.dataset!r} "
                             "has no test rows")
    prefix = params.name or f"{truth.manifest.name}-w2s"
    out = Path(params.output_dir or f"runs/w2s-{truth.manifest.name}")
    n = len(params.models)
    runs = ["weak", *(f"{k}-{i}" for i in range(1, n) for k in ("w2s", "ceiling"))]
    runs += ["direct"] if params.direct and n > 2 else []
    for label in runs:  # every run folder and dataset name it will use, before the first is written
        check_run_folder(out / label)
    for suffix in ("half1", "half2", *(f"labels-{i}" for i in range(1, n))):
        check_name(f"{prefix}-{suffix}")
    root = snapshot_root(None, path)
    halves = [_publish(path, derived.train_part(truth, k, 2), f"{prefix}-half{k + 1}", root) for k in (0, 1)]
    common = {k: getattr(params, k) for k in ("epochs", "max_steps", "batch_size", "lr", "max_length")}
    total = len(runs)
    started: list[str] = []

    def run(label: str, model: str, data: Snapshot, **extra: Any) -> dict[str, Any]:
        started.append(label)
        if on_run:
            on_run(label, len(started), total)
        tp = TrainParams(method="reward", dataset=data.manifest.id, base=model, config_file=params.config_file,
                         output_dir=str(out / label), db=path, **common, **extra)
        summary = train.fn(tp, progress=progress) if progress else train(tp)
        return {"run": label, "base": model, "dataset": data.manifest.id, "accuracy": summary["eval"].get(ACCURACY),
                "run_id": summary["run_id"], "model_id": summary["model_id"], "model_dir": summary["model_dir"],
                "steps": summary["steps"], "train_seconds": summary["train_seconds"], "reused": summary["reused"]}

    # the confidence loss is the students' alone (on labels), whatever a config file says
    weak = run("weak", params.models[0], halves[0], confidence_weight=0.0)
    confidence = {"confidence_weight": params.confidence_weight}
    labeler, steps, first_labels = weak["model_dir"], [], None
    for i, model in enumerate(params.models[1:], start=1):
        labels = _relabelled(path, labeler, halves[1], params.soft_labels, f"{prefix}-labels-{i}", root)
        first_labels = first_labels or labels
        student = run(f"w2s-{i}", model, labels, **confidence)
        ceiling = run(f"ceiling-{i}", model, halves[1], confidence_weight=0.0)
        steps.append(_step(weak, student, ceiling, labels))
        labeler = student["model_dir"]
    direct = None
    if params.direct and n > 2 and first_labels is not None:
        student = run("direct", params.models[-1], first_labels, **confidence)
        direct = _step(weak, student, ceiling, first_labels)
    summary = {"dataset": truth.manifest.id, "halves": [h.manifest.id for h in halves], "weak": weak,
               "steps": steps, "direct": direct, "confidence_weight": params.confidence_weight,
               "soft_labels": params.soft_labels}
    summary["evaluations"] = _record(path, summary)
    summary["plot"] = _plot(summary, out / "weak_to_strong.png")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    summary["summary_file"] = str(out / "summary.json")
    if FlowRunContext.get():  # under Prefect (the UI, a deployment): the log and a table on the run's page
        from prefect.artifacts import create_markdown_artifact

        get_run_logger().info("%s", result_lines(summary))
        key = "weak-to-strong-" + "".join(c if c.isalnum() else "-" for c in truth.manifest.name.lower())
        create_markdown_artifact(key=key, markdown=_markdown(summary), description="alignloop weak-to-strong")
    return summary


def _step(weak: dict[str, Any], student: dict[str, Any], ceiling: dict[str, Any], labels: Snapshot
          ) -> dict[str, Any]:
    acc = (weak["accuracy"], student["accuracy"], ceiling["accuracy"])
    pgr = None if None in acc else performance_gap_recovered(*acc)
    return {"student": student, "ceiling": ceiling, "labels": labels.manifest.id,
            "label_agreement": labels.manifest.notes.get("agreement_with_parent"), "pgr": pgr}


def _named(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Each run trained on labels with its label: ``step K`` for the chain, ``direct`` for the baseline."""
    named = [(f"step {i}", s) for i, s in enumerate(summary["steps"], start=1)]
    return named + ([("direct", summary["direct"])] if summary["direct"] else [])


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _record(path: str, summary: dict[str, Any]) -> int:
    """Each trained-on-labels run's PGR as an evaluation of its model (the three accuracies in the details)."""
    rows = []
    for _, step in _named(summary):
        details = {"weak": summary["weak"]["accuracy"], "weak_to_strong": step["student"]["accuracy"],
                   "ceiling": step["ceiling"]["accuracy"], "labels": step["labels"], "dataset": summary["dataset"],
                   "runs": [summary["weak"]["run_id"], step["student"]["run_id"], step["ceiling"]["run_id"]]}
        rows.append(Evaluation.create("weak_to_strong", step["student"]["model_id"], "pgr", step["pgr"],
                                      details=details, config={"dataset": summary["dataset"]}))
    with db.connect(path) as con, db.transaction(con):
        return db.ingest(con, "evaluations", to_arrow(rows))


def result_lines(summary: dict[str, Any]) -> str:
    """The results as lines of text (the CLI and the flow's log)."""
    w = summary["weak"]
    out = [f"weak supervisor {w['base']}: held-out accuracy {_fmt(w['accuracy'])}"]
    for label, s in _named(summary):
        pgr = "n/a (the ceiling does not beat the weak model)" if s["pgr"] is None else f"{s['pgr']:.2f}"
        out.append(f"{label} {s['student']['base']}: on labels {s['labels']} (agree with truth "
                   f"{_fmt(s['label_agreement'])}): {_fmt(s['student']['accuracy'])}; ceiling "
                   f"{_fmt(s['ceiling']['accuracy'])}; PGR {pgr}")
    return "\n".join(out)


def _markdown(summary: dict[str, Any]) -> str:
    """The held-out accuracies and PGR per step as a markdown table."""
    w = summary["weak"]
    rows = [f"| supervisor | {w['base']} | truth (half 1) | {_fmt(w['accuracy'])} | | |"]
    rows += [f"| {label} | {s['student']['base']} | {s['labels']} | {_fmt(s['student']['accuracy'])} | "
             f"{_fmt(s['ceiling']['accuracy'])} | {_fmt(s['pgr'])} |" for label, s in _named(summary)]
    return (f"### weak-to-strong on {summary['dataset']}\n\n| run | model | trained on | held-out accuracy | "
            "ceiling | PGR |\n| --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n")


def _plot(summary: dict[str, Any], path: Path) -> str:
    """Held-out accuracy per model: trained on labels beside its ceiling, the weak supervisor as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = [(f"{label}\n{Path(s['student']['base']).name}", s) for label, s in _named(summary)]

    def acc(run: dict[str, Any]) -> float:
        return float("nan") if run["accuracy"] is None else run["accuracy"]  # not measured: no bar

    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(named), 3.4))
    xs = range(len(named))
    ax.bar([x - 0.2 for x in xs], [acc(s["student"]) for _, s in named], 0.4, label="on weak labels")
    ax.bar([x + 0.2 for x in xs], [acc(s["ceiling"]) for _, s in named], 0.4, label="ceiling (truth)")
    for x, (_, s) in zip(xs, named):
        if s["pgr"] is not None:
            ax.annotate(f"PGR {s['pgr']:.2f}", (x, 1.01), ha="center", fontsize=8)
    ax.axhline(acc(summary["weak"]), ls="--", c="grey", lw=1, label="weak supervisor")
    ax.axhline(0.5, ls=":", c="black", lw=0.8, label="chance")
    ax.set_xticks(list(xs), [n for n, _ in named], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"weak-to-strong on {summary['dataset']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
