"""Warehouse records of a training run (TrainingRun, Metric, Model, Evaluation) and the curves PNG.

The trainer returns these; the flow (the single warehouse writer) ingests them.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from alignloop.warehouse.ids import content_id
from alignloop.warehouse.records import Evaluation, Metric, Model, TrainingRun


def run_id(method: str, config: dict[str, Any], dataset: str, base_model_id: str) -> str:
    """A run is its method, config, dataset content and base model, and the folder it trains in.

    The folder is part of it: the same recipe trained again into another folder is another run, with its own
    record, metrics and model (whose id is its folder's). In its own folder a run resumes, or comes back as it
    finished. The folder is taken as given (normalised), as the model's ``uri`` is.
    """
    train = {k: v for k, v in config["train"].items() if k != "logging_steps"}
    train["output_dir"] = os.path.normpath(str(train["output_dir"]))
    return content_id("training_run", {"method": method, "config": {**config, "train": train}, "dataset": dataset,
                                       "base": base_model_id})


def stored_name(folder: str | Path) -> str:
    """A model folder as the warehouse names it: the embedded model by its name and package version (the same on
    every machine), any other folder as given."""
    from alignloop.pipelines.models import model_uri

    return model_uri(str(folder))


def metric_rows(run: str, logged: list[tuple[int, str, float]]) -> list[Metric]:
    """One row per (step, name); a later value at the same step wins (Trainer logs a summary at the end)."""
    latest: dict[tuple[int, str], float] = {}
    for step, name, value in logged:
        latest[(step, name)] = value
    return [Metric(run, step, name, value) for (step, name), value in sorted(latest.items())]


def model_record(uri: str, role: str, base_model_id: str, run: str, meta: dict[str, Any]) -> Model:
    return Model.create(uri, role, parent_id=base_model_id, training_run_id=run, meta=meta)


def evaluation_rows(target: str, metrics: dict[str, float], round_id: str | None,
                    details: dict[str, Any]) -> list[Evaluation]:
    return [Evaluation.create("heldout", target, name, value, round_id, details, config=details)
            for name, value in sorted(metrics.items())]


def training_run(run: str, method: str, config: dict[str, Any], *, dataset_id: str | None, base_model_id: str,
                 reference_model_id: str | None, output_model_id: str | None, round_id: str | None, status: str,
                 meta: dict[str, Any]) -> TrainingRun:
    return TrainingRun(run, method, config, dataset_id, base_model_id, reference_model_id, output_model_id,
                       round_id, status, meta)


PANELS = (("loss", ("loss",)), ("rewards", ("rewards/chosen", "rewards/rejected", "rewards/margins")),
          ("accuracy", ("rewards/accuracies", "step_accuracy")))


def plot_curves(logged: list[tuple[int, str, float]], target: Path, title: str,
                panels: tuple[tuple[str, tuple[str, ...]], ...] = PANELS) -> Path | None:
    """Loss and reward curves per step, one panel per ``(title, metric names)`` (matplotlib Agg). None when none of
    those metrics was logged."""
    wanted = {n for _, names in panels for n in names}
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for step, name, value in logged:
        if name in wanted:
            series[name].append((step, value))
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(t, [n for n in names if n in series]) for t, names in panels]
    shown = [(t, names) for t, names in shown if names]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.4), squeeze=False)
    for ax, (panel_title, names) in zip(axes[0], shown, strict=True):
        for name in names:
            steps, values = zip(*series[name], strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=name)
        ax.set_title(panel_title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
