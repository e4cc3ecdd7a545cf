"""``alignloop train METHOD``: train on a dataset snapshot and record the run (``alignloop train --help``)."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli_common import (
    DbOption,
    JsonOption,
    console,
    emit_json,
    flow_in_process,
    user_errors,
    validated,
)
from trainers.catalog import CATALOG  # not trainers.methods: listing the methods loads no torch
from warehouse import db
from warehouse.errors import AlignloopError


def _methods_help() -> str:
    lines = [f"  {name:9s} {info.help} (data: {', '.join(info.kinds)})" for name, info in CATALOG.items()]
    return "Train a model on a dataset snapshot.\n\nMETHOD is one of:\n\n" + "\n\n".join(lines)


@user_errors
def train(
    method: Annotated[str, typer.Argument(help="Training method: " + ", ".join(CATALOG) + " (online methods: ppo, "
                                               "grpo, rloo, online_dpo).")],
    dataset: Annotated[str, typer.Option(help="Dataset name (latest version), NAME@vN, or a snapshot folder.")],
    base: Annotated[str, typer.Option(help="'default' (embedded SmolLM2) or a model folder.")] = "default",
    loss: Annotated[str | None, typer.Option(help="Loss (dpo and online_dpo: dpo, ipo, cdpo, robust, hinge, rdpo, "
                                                  "simpo, orpo, cpo, bco_pair, nca_pair, sppo_hard, apo_zero, "
                                                  "apo_down, dpop, exo_pair, rpo, beta_dpo; listwise: rrhf, lipo, "
                                                  "pro).")] = None,
    beta: Annotated[float | None, typer.Option(help="Loss beta.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: from epochs).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over the train split.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Longest prompt + completion in tokens.")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (merged when saved).")] = False,
    freeze_layers: Annotated[int | None, typer.Option(help="Freeze the embeddings and the first N decoder layers "
                                                           "(cheaper steps; the rest and the head train).")] = None,
    config: Annotated[str | None, typer.Option("--config", help="JSON config file; options above override it.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Run folder (default runs/METHOD-DATASET).")] = None,
    reference: Annotated[str | None, typer.Option(help="Reference model folder (default: the base).")] = None,
    reward_model: Annotated[str | None, typer.Option(help="online methods: reward model folder that scores the "
                                                          "answers (from `train reward`).")] = None,
    verifier: Annotated[str | None, typer.Option(help="online methods: a rule verifier that scores the answers "
                                                      "instead, 1 pass / 0 fail (final_answer, short_on_topic:N, "
                                                      "json_valid, no_repetition).")] = None,
    judge_model: Annotated[str | None, typer.Option(help="online methods, direct RLAIF: an LLM judge (a model folder "
                                                        "or 'default') whose 0-9 rating of each answer is its "
                                                        "reward.")] = None,
    samples_per_prompt: Annotated[int | None, typer.Option(help="online methods: answers sampled per prompt per "
                                                                "iteration (grpo, rloo: default 4).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="online methods: longest sampled answer (default "
                                                            "48).")] = None,
    temperature: Annotated[float | None, typer.Option(help="online methods: sampling temperature.")] = None,
    dynamic_sampling: Annotated[bool, typer.Option("--dynamic-sampling", help=(
        "grpo, rloo, online_dpo: update only on prompts whose answers scored differently, sampling more prompts to "
        "fill the batch (DAPO; max_rollouts in --config)."))] = False,
    stages: Annotated[int | None, typer.Option(help="dpo: sDPO, train on the prompts in this many parts in turn, "
                                                    "each stage from and against the model of the stage before "
                                                    "(runs in OUTPUT_DIR/stage-K).")] = None,
    ptx_dataset: Annotated[str | None, typer.Option(help="online methods, PPO-ptx: an sft dataset whose completions' "
                                                         "likelihood each update keeps (with --ptx-coef).")] = None,
    ptx_coef: Annotated[float | None, typer.Option(help="online methods, PPO-ptx: weight of that likelihood "
                                                        "term.")] = None,
    round_name: Annotated[str | None, typer.Option("--round", help="Round the run belongs to.")] = None,
    db_file: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    # one line for an unknown method or a missing warehouse before torch and Prefect load
    if method not in CATALOG:
        raise AlignloopError(f"unknown training method {method!r}; known: {', '.join(CATALOG)}")
    path = db.existing_path(db_file)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from flows.train import TrainParams
    from flows.train import train as train_flow
    from trainers.run import PHASES, PROGRESS_METRICS

    params = validated(TrainParams, {
        "method": method, "dataset": dataset, "base": base, "loss": loss, "beta": beta, "max_steps": max_steps,
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "max_length": max_length, "lora": lora,
        "freeze_layers": freeze_layers, "config_file": config, "output_dir": output_dir, "reference": reference,
        "reward_model": reward_model, "verifier": verifier, "judge_model": judge_model,
        "samples_per_prompt": samples_per_prompt,
        "max_new_tokens": max_new_tokens, "temperature": temperature,
        "dynamic_sampling": dynamic_sampling or None, "stages": stages, "ptx_dataset": ptx_dataset,
        "ptx_coef": ptx_coef,
        "round": round_name, "db": path})
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    # the bars start with the first phase: an error before it (a bad config, the wrong kind of dataset) is the
    # only line printed
    bar = Progress(*columns, console=console, disable=json_out)
    try:
        tasks: dict[str, TaskID] = {}  # one bar per phase, added when the phase starts; the one before stops its clock

        def report(phase: str, done: int, total: int, logs: dict[str, float]) -> None:
            if not tasks:
                bar.start()
            if phase not in tasks:
                for earlier in tasks.values():
                    bar.stop_task(earlier)
                name, unit = PHASES[phase]
                tasks[phase] = bar.add_task(f"{name} {method}" if phase == "train" else name, total=total or None,
                                            unit=unit, info="")
            info = " ".join(f"{k.split('/')[-1]}={v:.3g}" for k, v in logs.items() if k in PROGRESS_METRICS)
            bar.update(tasks[phase], completed=done, total=total or None, **({"info": info} if info else {}))

        # the flow's body runs here: its progress callback is not a flow parameter
        with flow_in_process():
            summary = train_flow.fn(params, progress=report)
    finally:
        if tasks:
            bar.stop()
    if json_out:
        emit_json(summary)
        return
    runs = summary.get("stages", [summary])
    for i, one in enumerate(runs):
        ev = ", ".join(f"{k.removeprefix('eval/')}={v:.0f}" if k.endswith("examples") else
                       f"{k.removeprefix('eval/')}={v:.3f}" for k, v in one["eval"].items())
        trunc = one["truncation"].get("train", {})
        done = " (already finished in this folder: stored records, nothing trained)" if one["reused"] else ""
        stage = f"sDPO stage {i + 1}/{len(runs)}: " if len(runs) > 1 else ""
        console.print(f"{stage}run {one['run_id']}{done}: {one['steps']} step{'' if one['steps'] == 1 else 's'} in "
                      f"{one['train_seconds']} s; model {one['model_id']} at {one['model_dir']}; held-out: "
                      f"{ev or 'n/a'}; truncated prompts {trunc.get('prompts_truncated', 0)}, completions "
                      f"{trunc.get('completions_truncated', 0)}; curves {one['plot']}", highlight=False,
                      soft_wrap=True)
    soft = summary.get("soft_labels")
    if soft and not soft["used"]:
        console.print(f"note: {soft['pairs']:,} train pairs carry a soft label (an AI judge's probability, or 0.5 for "
                      f"a kept tie) that {method}{'' if method != 'dpo' else ' with this loss'} trains as a hard "
                      "preference; the dpo and cdpo losses and reward models train on it", highlight=False,
                      soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("train", help=_methods_help())(train)
