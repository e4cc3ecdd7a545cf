"""Commands for the loop: ``alignloop round``, ``alignloop evaluate``, ``alignloop report``, ``alignloop demo``."""

from __future__ import annotations

import functools
import types
import typing
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from alignloop.flows.cli.common import (
    DbOption,
    JsonOption,
    console,
    db_path,
    emit_json,
    flow_in_process,
    key_values,
    user_errors,
    validated,
)
from alignloop.warehouse import db
from alignloop.warehouse.errors import InputError


@user_errors
def round_cmd(
    name: Annotated[str, typer.Option("--round", help="This round's name, or 'next': resume the round run last if "
                                                      "it did not finish, else the one after it (r1 at first).")
                    ] = "next",
    policy: Annotated[str, typer.Option(help="'auto' (the parent round's policy where there is a parent round, "
                                             "else the initial one), 'previous', 'default' or a model folder.")
                      ] = "auto",
    parent_round: Annotated[str | None, typer.Option(help="Round this one continues.")] = None,
    feedback: Annotated[str, typer.Option(help="verifier, ai_judge, human, ai_judge+human or reward_model.")
                        ] = "verifier",
    verifier: Annotated[str, typer.Option(help="Verifier for feedback and held-out accuracy.")] = "short_on_topic:6",
    reward_model: Annotated[str | None, typer.Option(help="Reward model folder (feedback reward_model; with --set "
                                                          "method=ppo, grpo, rloo or online_dpo also its reward), from "
                                                          "'alignloop train reward'.")] = None,
    n: Annotated[int, typer.Option(help="Samples per prompt.")] = 4,
    judge_model: Annotated[str | None, typer.Option(help="The AI judge (feedback ai_judge, the win rate): 'default', "
                                                         "a folder, 'policy' (self-rewarding), or with --set "
                                                         "judge_backend=openai the served model's name.")] = None,
    principle: Annotated[list[str] | None, typer.Option(help="What the AI judge weighs (repeatable): helpful, "
                                                             "harmless, honest or a sentence of a constitution; "
                                                             "default the three.")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Any other round parameter as KEY=VALUE (e.g. fresh_prompts=true, prompts_per_round=40, "
                      "human_wait=poll, reference=initial, judge_backend=openai, judge_aspect=harmlessness; a "
                      "list's items one --set each); see the round deployment's form.")] = None,
    db_: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run one round: generate, feedback (verifier, AI judge, people or a reward model), dataset, train, evaluate,
    stopping rule.

    With human feedback the round sends pairs to Label Studio and waits for the quota; a round that stops
    waiting ends 'waiting' and the same command resumes it.
    """
    from alignloop.flows.round import RoundParams, round_flow

    lists = [k for k, f in RoundParams.model_fields.items() if _is_list(f.annotation)]
    fields = {"round": name, "policy": policy, "parent_round": parent_round, "feedback": feedback,
              "verifier": verifier, "n": n, **({"reward_model": reward_model} if reward_model else {}),
              **({"judge_model": judge_model} if judge_model else {}),
              **({"principles": principle} if principle else {}),
              **key_values(settings, lists), "db": db.existing_path(db_)}
    out = round_flow(validated(RoundParams, fields))
    if as_json:
        emit_json(out)
    elif out.get("status") == "iteration_stopped":
        console.print(out["reason"], highlight=False)
    elif out.get("status") == "waiting_for_labels":
        console.print(f"round {out['round']} is waiting for labels: {out['reason']}", highlight=False)
    else:
        say = functools.partial(console.print, highlight=False, soft_wrap=True)
        say(f"round {out['round']} (policy {out['new_policy']}); held-out: {_figures(out['heldout'])}")
        say(f"stopping rule: {'stop' if out['stop'] else 'go on'} ({out['reason']})")


def _is_list(hint: object) -> bool:
    """A list field (``list[str]``, or optional: ``list[str] | None``), whose items are one ``--set`` each."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return any(typing.get_origin(o) is list for o in options)


def _figures(figures: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())


@user_errors
def evaluate_cmd(
    round_name: Annotated[str, typer.Option("--round", help="Round the figures are stored under (created on first "
                                                            "use); 'alignloop report' shows them per round.")],
    model: Annotated[str, typer.Option(help="Policy: 'default' (the embedded model) or a model folder, e.g. a "
                                            "training run's model/.")] = "default",
    reference: Annotated[str | None, typer.Option(help="Reference model for the KL figure ('default' or a "
                                                       "folder); none: no KL.")] = None,
    verifier: Annotated[str, typer.Option(help="Rule judge for the held-out pass rate.")] = "short_on_topic:6",
    split: Annotated[str, typer.Option(help="Held-out prompts: this split.")] = "test",
    limit: Annotated[int, typer.Option(help="At most this many held-out prompts.")] = 40,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 32,
    previous_round: Annotated[str | None, typer.Option(help="Also the AI judge's win rate over this round's "
                                                            "held-out answers (both orders).")] = None,
    reward_model: Annotated[str | None, typer.Option(help="Reward model folder: mean score of the held-out answers "
                                                          "(heldout_reward); with --previous-round, how often "
                                                          "they score above that round's (rm_win_rate).")] = None,
    judge_model: Annotated[str, typer.Option(help="The win rate's AI judge: 'default', a folder, or with "
                                                  "--judge-backend openai the served model's name.")] = "default",
    judge_backend: Annotated[str, typer.Option(help="The judge's engine: transformers or openai (any endpoint, "
                                                    "e.g. vllm serve).")] = "transformers",
    judge_base_url: Annotated[str | None, typer.Option(help="The judge's endpoint (openai; key: "
                                                            "$OPENAI_API_KEY).")] = None,
    principle: Annotated[list[str] | None, typer.Option(help="What the judge weighs (repeatable; default helpful, "
                                                             "harmless, honest).")] = None,
    db_: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """A policy on held-out prompts: verifier pass rate, reward, length, distinct-2, repetition, KL, win rates;
    stored."""
    from alignloop.flows.evaluate import EvaluateParams, evaluate

    params = validated(EvaluateParams, {
        "round": round_name, "model": model, "reference": reference, "verifier": verifier, "split": split,
        "limit": limit, "max_new_tokens": max_new_tokens, "previous_round": previous_round,
        "reward_model": reward_model, "judge_model": judge_model, "judge_backend": judge_backend,
        "judge_base_url": judge_base_url, **({"principles": principle} if principle else {}),
        "db": db.existing_path(db_)})
    with flow_in_process(), (
            nullcontext() if as_json else console.status(f"answering up to {limit} held-out prompts with {model}")):
        out = evaluate.fn(params)
    if as_json:
        emit_json(out)
        return
    console.print(f"round {out['round']} (model {out['model_dir']}); held-out: {_figures(out['figures'])}",
                  highlight=False, soft_wrap=True)


@user_errors
def report_cmd(
    out: Annotated[Path, typer.Option(help="Folder for index.html and plots.")] = Path("reports"),
    db_: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per-round held-out figures, training runs, datasets, judge bias and loss curves: a static HTML report (or JSON)."""
    from alignloop.pipelines.report import datasets_summary, judge_summary, rounds_summary, runs_summary, write_report

    path = db.existing_path(db_)
    with db.connect(path) as con:
        if as_json:
            emit_json({"rounds": rounds_summary(con), "runs": runs_summary(con), "datasets": datasets_summary(con),
                       "judges": judge_summary(con)})
            return
        page = write_report(con, out)
    console.print(f"report written: {page}")


@user_errors
def demo_cmd(
    rounds: Annotated[int, typer.Option(help="Rounds to run at least.")] = 3,
    max_rounds: Annotated[int, typer.Option(help="Rounds to run at most (the stopping rule decides between).")] = 3,
    n_train: Annotated[int, typer.Option(help="Training prompts.")] = 80,
    n_test: Annotated[int, typer.Option(help="Held-out prompts.")] = 40,
    samples: Annotated[int | None, typer.Option(help="Samples per training prompt and round (default: the "
                                                     "demo recipe's).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate of each round (default: the demo recipe's).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Passes over each round's pairs (default: the demo recipe's).")]
    = None,
    loss: Annotated[str | None, typer.Option(help="DPO-family loss: dpo, rpo, ipo, ... (default: the demo recipe's).")]
    = None,
    win_rate: Annotated[bool | None, typer.Option(help="Judge each round against the previous one with the AI "
                                                       "judge, both orders (about a minute per round on 2 CPU "
                                                       "cores) (default: the demo recipe's).")] = None,
    db_: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Iterative RPO (DPO plus NLL) on the embedded model with an un-gameable verifier; prints rounds, writes a report."""
    from alignloop.flows.demo import DemoConfig, run_demo
    from alignloop.flows.round import RoundParams

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False, soft_wrap=True)

    recipe = {k: v for k, v in {"samples": samples, "lr": lr, "epochs": epochs, "loss": loss,
                                "win_rate": win_rate}.items() if v is not None}
    try:
        cfg = DemoConfig(rounds=rounds, max_rounds=max(rounds, max_rounds), n_train=n_train, n_test=n_test,
                         db=db_path(db_), **recipe)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    validated(RoundParams, cfg.round_fields(1))  # a bad recipe value stops here, before anything is written
    result = run_demo(cfg, say=say)
    if as_json:
        emit_json(result)


def register(app: typer.Typer) -> None:
    app.command("round")(round_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("report")(report_cmd)
    app.command("demo")(demo_cmd)
