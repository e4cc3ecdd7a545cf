"""``alignloop train METHOD``: train on a dataset snapshot and record the run (``alignloop train --help``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Self

import typer

from alignloop.flows.cli.common import (
    DbOption,
    JsonOption,
    console,
    emit_json,
    flow_in_process,
    user_errors,
    validated,
)
from alignloop.trainers.catalog import CATALOG  # not trainers.methods: listing the methods loads no torch
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError

if TYPE_CHECKING:
    from rich.progress import TaskID


def _methods_help() -> str:
    lines = [f"  {name:9s} {info.help} (data: {', '.join(info.kinds)})" for name, info in CATALOG.items()]
    return "Train a model on a dataset snapshot.\n\nMETHOD is one of:\n\n" + "\n\n".join(lines)


class PhaseBars:
    """A training run's progress callback (:data:`trainers.run.Progress`) drawn as one rich bar per phase, each
    added when its phase starts (the one before stops its clock). A phase that starts over (the next run of a
    command that trains several) replaces the last run's bars."""

    def __init__(self, label: str, disabled: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[info]}"), TimeElapsedColumn())
        self.label = label
        self.bar = Progress(*columns, console=console, disable=disabled)
        self.tasks: dict[str, TaskID] = {}
        self.done: dict[str, int] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.bar.stop()

    def __call__(self, phase: str, done: int, total: int, logs: dict[str, float]) -> None:
        from alignloop.trainers.run import PHASES, PROGRESS_METRICS

        if not self.tasks:
            self.bar.start()
        if phase in self.tasks and done < self.done[phase]:  # the next run
            for task in self.tasks.values():
                self.bar.remove_task(task)
            self.tasks.clear()
        if phase not in self.tasks:
            for earlier in self.tasks.values():
                self.bar.stop_task(earlier)
            name, unit = PHASES[phase]
            self.tasks[phase] = self.bar.add_task(f"{name} {self.label}" if phase == "train" else name,
                                                  total=total or None, unit=unit, info="")
        self.done[phase] = done
        info = " ".join(f"{k.split('/')[-1]}={v:.3g}" for k, v in logs.items() if k in PROGRESS_METRICS)
        self.bar.update(self.tasks[phase], completed=done, total=total or None, **({"info": info} if info else {}))


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
    judge_model: Annotated[str | None, typer.Option(help="online methods, direct RLAIF: an LLM judge (a model folder, "
                                                        "'default', or 'policy': the policy being trained judges "
                                                        "its own answers) whose 0-9 rating of each answer is its "
                                                        "reward.")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="online methods: --judge-model is served at this "
                                                            "OpenAI-compatible endpoint (key: "
                                                            "--judge-api-key-secret, else $OPENAI_API_KEY), which "
                                                            "must return log-probabilities.")] = None,
    judge_api_key_secret: Annotated[str | None, typer.Option(help="online methods, --judge-base-url: a Prefect "
                                                                  "Secret block holding the endpoint's key.")] = None,
    judge_principle: Annotated[list[str] | None, typer.Option(help="online methods, --judge-model: what it weighs "
                                                                  "(repeatable; principle names or sentences; "
                                                                  "default helpful, harmless, honest).")] = None,
    judge_aspect: Annotated[str | None, typer.Option(help="online methods, --judge-model: what it rates each answer "
                                                          "for (default overall).")] = None,
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
    stage_order: Annotated[str | None, typer.Option(help="dpo with --stages: hash (default), easy_first (the "
                                                         "prompts with the clearest preferences first) or ai_first "
                                                         "(AI-labelled pairs first, people's last).")] = None,
    stage_dataset: Annotated[list[str] | None, typer.Option(help="dpo: sDPO with a dataset per stage: after "
                                                                 "--dataset, train on each of these in turn "
                                                                 "(repeatable), each stage from and against the "
                                                                 "model of the stage before.")] = None,
    confidence_weight: Annotated[float | None, typer.Option(help="reward, dpo (dpo/cdpo loss): weak-to-strong "
                                                                "auxiliary confidence loss weight (Burns et al. "
                                                                "2023).")] = None,
    cost_model: Annotated[str | None, typer.Option(help="online methods, Safe RLHF (PPO-Lagrangian): a reward model "
                                                        "trained on harmlessness pairs (-o aspect=harmlessness); its "
                                                        "negated score is an answer's cost, kept under --cost-limit "
                                                        "by a Lagrange multiplier.")] = None,
    cost_limit: Annotated[float | None, typer.Option(help="online methods, Safe RLHF: the bound on the answers' mean "
                                                          "cost (default: the starting policy's).")] = None,
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

    from alignloop.flows.train import TrainParams
    from alignloop.flows.train import train as train_flow

    params = validated(TrainParams, {
        "method": method, "dataset": dataset, "base": base, "loss": loss, "beta": beta, "max_steps": max_steps,
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "max_length": max_length, "lora": lora,
        "freeze_layers": freeze_layers, "config_file": config, "output_dir": output_dir, "reference": reference,
        "reward_model": reward_model, "verifier": verifier, "judge_model": judge_model,
        "judge_base_url": judge_base_url, "judge_api_key_secret": judge_api_key_secret,
        "judge_principles": judge_principle or None, "judge_aspect": judge_aspect,
        "samples_per_prompt": samples_per_prompt,
        "max_new_tokens": max_new_tokens, "temperature": temperature,
        "dynamic_sampling": dynamic_sampling or None, "stages": stages, "stage_order": stage_order,
        "stage_datasets": stage_dataset or [], "confidence_weight": confidence_weight,
        "cost_model": cost_model, "cost_limit": cost_limit, "ptx_dataset": ptx_dataset, "ptx_coef": ptx_coef,
        "round": round_name, "db": path})
    # the bars start with the first phase: an error before it (a bad config, the wrong kind of dataset) is the
    # only line printed
    with PhaseBars(method, disabled=json_out) as report, flow_in_process():
        summary = train_flow.fn(params, progress=report)  # the flow's body runs here: its callback is no parameter
    if json_out:
        emit_json(summary)
        return
    runs = summary.get("stages", [summary])
    for i, one in enumerate(runs):
        ev = ", ".join(f"{k.removeprefix('eval/')}={v:.0f}" if k.endswith("examples") else
                       f"{k.removeprefix('eval/')}={v:.3f}" for k, v in one["eval"].items())
        trunc = one["truncation"].get("train", {})
        done = " (already finished in this folder: stored records, nothing trained)" if one["reused"] else ""
        on = f" ({one['dataset']})" if params.stage_datasets else ""
        stage = f"sDPO stage {i + 1}/{len(runs)}{on}: " if len(runs) > 1 else ""
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


@user_errors
def weak_to_strong(
    dataset: Annotated[str, typer.Option(help="Pairwise dataset with true labels; its test split measures every "
                                              "model.")],
    model: Annotated[list[str], typer.Option("--model", help="Base model, weakest first ('default' or a folder; "
                                                             "repeat: two or more; three or more bootstrap). "
                                                             "`alignloop models shrink` makes smaller ones.")],
    confidence_weight: Annotated[float, typer.Option(help="Auxiliary confidence loss weight of the runs trained on "
                                                          "labels (0: off).")] = 0.0,
    soft_labels: Annotated[bool, typer.Option("--soft-labels/--hard-labels", help="Train on the supervisor's "
                                                                                   "probabilities or its "
                                                                                   "preferences.")] = True,
    direct: Annotated[bool, typer.Option("--direct/--no-direct", help="With 3+ models, also train the largest on "
                                                                      "the weakest's labels.")] = True,
    epochs: Annotated[float | None, typer.Option(help="Passes over the train half (every run).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps per run (default: from epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Longest prompt + response in tokens.")] = None,
    config: Annotated[str | None, typer.Option("--config", help="JSON reward config for every run (its "
                                                                "confidence_weight replaced by the option "
                                                                "above).")] = None,
    name: Annotated[str | None, typer.Option(help="Prefix of the datasets it writes (default DATASET-w2s).")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Folder of its runs and summary (default "
                                                        "runs/w2s-DATASET).")] = None,
    db_file: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Weak-to-strong (Burns et al. 2023) with reward models: the weakest model learns the first train half's true
    labels; each larger model learns the second half as the model before it labels it (and, as its ceiling, the
    true labels); every model is measured on the test split and each step's performance gap recovered reported."""
    path = db.existing_path(db_file)
    from alignloop.flows.weak_to_strong import WeakToStrongParams, result_lines
    from alignloop.flows.weak_to_strong import weak_to_strong as w2s_flow

    params = validated(WeakToStrongParams, {
        "dataset": dataset, "models": model, "confidence_weight": confidence_weight, "soft_labels": soft_labels,
        "direct": direct, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr,
        "max_length": max_length, "config_file": config, "name": name, "output_dir": output_dir, "db": path})
    with PhaseBars("reward", disabled=json_out) as bars, flow_in_process():
        def on_run(label: str, k: int, runs: int) -> None:
            bars.label = f"reward ({label}, run {k}/{runs})"

        summary = w2s_flow.fn(params, progress=bars, on_run=on_run)
    if json_out:
        emit_json(summary)
        return
    console.print(result_lines(summary), highlight=False, soft_wrap=True)
    console.print(f"plot {summary['plot']}; summary {summary['summary_file']}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("train", help=_methods_help())(train)
    app.command("weak-to-strong")(weak_to_strong)
