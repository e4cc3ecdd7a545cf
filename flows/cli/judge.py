"""``alignloop judge KIND``: AI / rule / reward-model feedback on a round; ``alignloop judge report``: judge biases."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from alignloop.flows.cli.common import DbOption, JsonOption, console, emit_json, user_errors, validated
from alignloop.pipelines.judges import report as quality
from alignloop.pipelines.judges import run
from alignloop.pipelines.judges.best_of_n import plot_curves
from alignloop.warehouse import db

if TYPE_CHECKING:
    from rich.table import Table

    from alignloop.flows.judge import JudgeParams

RoundOpt = Annotated[str, typer.Option("--round", help="Round whose responses are judged.")]
JudgeOpt = Annotated[str, typer.Option("--judge", help="Judge model ('default', a folder, an API model name), "
                                                       "'verifier:NAME' or 'rm:FOLDER' (a reward model; a process "
                                                       "reward model also labels steps: `judge steps`).")]
BackendOpt = Annotated[Literal["transformers", "vllm", "openai"], typer.Option(help="Judge engine.")]
LimitOpt = Annotated[int | None, typer.Option(help="Judge at most this many new items.")]


def _run(params: JudgeParams, json_out: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from alignloop.flows.judge import prepare  # Prefect: imported by the commands that run, not by --help

    path, judge_obj, items, cached = prepare(params, loading=lambda: console.status(f"loading judge {params.judge}"))
    cols = (TextColumn(f"judging ({params.kind})"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, console=console, disable=json_out or not items) as progress:
        bar = progress.add_task("items", total=len(items))
        stored = run.judge_and_store(path, judge_obj, params.kind, items, params.round, params.chunk(),
                                     on_chunk=lambda n: progress.advance(bar, n))
    totals = {"judge": judge_obj.judge, "kind": params.kind, "selected": len(items), "cached": cached, **stored}
    if json_out:
        emit_json(totals)
    else:
        rows = ", ".join(f"{n:,} {table}" for table, n in totals["inserted"].items()) or "no new rows"
        console.print(f"{totals['judge']}: judged {len(items):,} new, {cached:,} cached, {totals['invalid']:,} "
                      f"invalid; wrote {rows}", highlight=False)


def _command(kind: str):
    @user_errors
    def command(
        round_name: RoundOpt,
        judge: JudgeOpt = "default",
        backend: BackendOpt = "transformers",
        base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (key: $OPENAI_API_KEY).")] = None,
        limit: LimitOpt = None,
        principle: Annotated[list[str] | None, typer.Option(help="Principle (repeatable); default helpful, "
                                                                 "harmless, honest.")] = None,
        mode: Annotated[Literal["auto", "logprobs", "text"], typer.Option(help="Verdict source.")] = "auto",
        tie_band: Annotated[float, typer.Option(help="Pairwise: tie band around 0.5.")] = 0.05,
        disagreement: Annotated[Literal["tie", "drop", "first"], typer.Option(help="Text verdicts that disagree "
                                                                                   "across orders.")] = "tie",
        pairs: Annotated[Literal["all", "consecutive"], typer.Option(help="Pairwise: which pairs.")] = "all",
        max_pairs_per_prompt: Annotated[int, typer.Option(help="Pairwise: cap per prompt.")] = 6,
        group_size: Annotated[int, typer.Option(help="Listwise: responses ranked together.")] = 4,
        permutations: Annotated[int, typer.Option(help="Listwise: orders shown.")] = 3,
        aspect: Annotated[list[str] | None, typer.Option(
            help="Rating aspect (repeatable); pairwise, listwise, correction: the one aspect its comparisons, "
                 "rankings or corrections are stored under.")] = None,
        max_chars: Annotated[int, typer.Option(help="Clip texts to this many characters.")] = 4000,
        batch_size: Annotated[int, typer.Option(help="Conversations per backend call.")] = 16,
        prm_aggregate: Annotated[Literal["product", "min"] | None, typer.Option(
            help="A process reward model (rm:FOLDER from `train prm`): step scores as their product (default) or "
                 "minimum.")] = None,
        rollouts: Annotated[int | None, typer.Option(
            help="Steps: label each step from this many completions of the solution up to it (Math-Shepherd): +1 "
                 "where one reaches the right answer, else -1; the --judge model completes.")] = None,
        rollout_verifier: Annotated[str, typer.Option(help="Steps with --rollouts: the verifier of each completion "
                                                           "(final_answer needs a reference).")] = "final_answer",
        rollout_temperature: Annotated[float, typer.Option(help="Steps with --rollouts: temperature.")] = 0.7,
        rollout_max_new_tokens: Annotated[int, typer.Option(help="Steps with --rollouts: longest completion.")] = 256,
        rollout_search: Annotated[Literal["all", "binary"], typer.Option(
            help="Steps with --rollouts: from every step, or a binary search for the first error (OmegaPRM; the "
                 "steps after it taken as -1).")] = "all",
        db_file: DbOption = None,
        json_out: JsonOption = False,
    ) -> None:
        from alignloop.flows.judge import JudgeParams

        params = validated(JudgeParams, {
            "kind": kind, "round": round_name, "judge": judge, "backend": backend, "base_url": base_url,
            "limit": limit, "principles": principle or ["helpful", "harmless", "honest"], "mode": mode,
            "tie_band": tie_band, "disagreement": disagreement, "pairs": pairs,
            "max_pairs_per_prompt": max_pairs_per_prompt, "group_size": group_size, "permutations": permutations,
            "aspects": aspect or ["overall"], "max_chars": max_chars, "batch_size": batch_size,
            "prm_aggregate": prm_aggregate, "rollouts": rollouts, "rollout_verifier": rollout_verifier,
            "rollout_temperature": rollout_temperature, "rollout_max_new_tokens": rollout_max_new_tokens,
            "rollout_search": rollout_search,
            "db": db.existing_path(db_file)})
        _run(params, json_out)

    command.__doc__ = f"Judge a round's responses ({kind}); judgments already stored are not recomputed."
    return command


@user_errors
def report(
    round_name: Annotated[str | None, typer.Option("--round", help="Only this round (default: all).")] = None,
    png: Annotated[str | None, typer.Option(help="Also draw the report as a PNG here.")] = "judge_quality.png",
    db_file: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Per judge and template: swap consistency, position and length bias, invalid verdicts, human agreement, cost.

    Listwise judges the same over the orders they were shown (the first-shown answer ranked first, against chance:
    1/k), and against people's rankings (same best, Kendall tau) and pairwise verdicts of the same answers. Rating
    judges (AI, reward model, rule) are measured on the pairs people compared: how often the human's winner scored
    higher, how often the scores tie, and how often the higher score goes to the longer answer. Step judges (AI,
    process reward model) on the steps people labelled: label agreement, kappa, the same first error. Every scorer of
    two or more samples per problem with a reference answer (PRM, reward model as ORM, AI, rule) by its best of N
    against majority vote, a random pick and the oracle, at N = 1, 2, 4, ... (a second PNG). Every AI judge, of any
    kind, by its replies: how many its template's grammar could read, and the commonest reasons for the others.
    """
    with db.connect(db.existing_path(db_file)) as con:
        found = quality.full_report(con, round_name)
        every = [q for kind in found.values() for q in kind]
        quality.store(con, every, round_name)
    rows, listed, rated, stepped = found["pairwise"], found["listwise"], found["ratings"], found["steps"]
    best, read = found["best_of_n"], found["verdicts"]
    curves = Path(png).with_name(Path(png).stem + "_best_of_n.png") if png and best else None
    plotted = rows + listed + rated + stepped  # best of N has its curves; the verdicts' rates are in these bars
    if png and plotted:
        quality.plot(plotted, png)
    if curves:
        plot_curves(best, curves)
    if json_out:
        emit_json({**{kind: [asdict(q) for q in qs] for kind, qs in found.items()}, "tie_rule": quality.TIE_RULE})
        return
    if not every:
        where = f" in round {round_name}" if round_name else ""
        console.print(f"no AI pairwise judgments{where} to report on yet; 'alignloop judge pairwise --round R "
                      "--judge MODEL' judges a round's pairs in both orders; rating judges (AI, reward model, rule) "
                      "are measured once people have compared responses they scored (and, by their best of N, on "
                      "samples of prompts with a reference answer), step judges once people have labelled the same "
                      "steps", highlight=False)
        return

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    ties = ("against people, on the pairs they decided: acc over the pairs the judge decided too (ties left out), "
            "ties: the share it tied, half: ties count half")

    if rows:
        names = ("n", "consistent", "P(first)", "P(longer)", "invalid", "human n", "human acc", "human ties",
                 "half", "kappa", "calls", "tokens", "seconds")
        values = [(r.target, [str(r.comparisons), f(r.consistency), f(r.first_position), f(r.longer),
                             f(r.invalid_rate), str(r.human_pairs), f(r.human_accuracy), f(r.human_ties),
                             f(r.human_accuracy_half), f(r.human_kappa), f"{r.calls:.0f}", f"{r.tokens:.0f}",
                             f"{r.seconds:.1f}"]) for r in rows]
        console.print(_by_judge("judge quality", names, values, wide=160, caption=ties))
    if listed:
        names = ("rankings", "same best", "P(first)", "chance", "P(longer)", "invalid", "people lists",
                 "people same best", "tau", "people pairs", "pair acc", "pair ties", "half")
        values = [(r.target, [str(r.rankings), f(r.consistency), f(r.first_position), f(r.chance), f(r.longer),
                              f(r.invalid_rate), str(r.human_lists), f(r.human_top_agreement), f(r.human_tau),
                              str(r.human_pairs), f(r.human_accuracy), f(r.human_ties), f(r.human_accuracy_half)])
                  for r in listed]
        console.print(_by_judge("listwise judges", names, values, wide=170,
                                caption="same best: rankings whose orders shown all put the same answer first; "
                                        "P(first) and P(longer) against chance (1/k); tau: Kendall's, with people's "
                                        "rankings; pair acc: people's pairwise winners it ranks higher (a tie: "
                                        f"equal Borda points); {ties}"))
    if rated:
        names = ("human pairs", "human acc", "half", "held-out pairs", "held-out acc", "held-out half", "score ties",
                 "P(longer)")
        values = [(r.target, [str(r.human_pairs), f(r.human_accuracy), f(r.human_accuracy_half), str(r.heldout_pairs),
                              f(r.heldout_accuracy), f(r.heldout_accuracy_half), f(r.score_ties), f(r.longer)])
                  for r in rated]
        console.print(_by_judge("rating judges on pairs people compared", names, values, wide=120,
                                caption="acc: share of pairs where people's winner scored higher; a tie: equal "
                                        f"scores; held-out: on test-split prompts; {ties}"))
    if stepped:
        names = ("steps", "acc", "kappa", "solutions", "same first error", "P(-1)", "people P(-1)")
        values = [(r.judge, [str(r.steps), f(r.step_accuracy), f(r.step_kappa), str(r.solutions),
                             f(r.first_error_agreement), f(r.negative_rate), f(r.human_negative_rate)]) for r in stepped]
        console.print(_by_judge("step judges on steps people labelled", names, values, wide=110,
                                caption="acc: share of steps labelled alike (-1 / 0 / +1); same first error: "
                                        "solutions whose first -1 both put on the same step (or neither)"))
    if best:
        names = ("problems", "N", "best of N", "majority vote", "random pick", "oracle", "best of N at N =")
        values = [(f"{q.judge} [{q.aspect}]", [str(q.problems), str(q.samples), f(q.best_of_n), f(q.majority),
                                                f(q.mean_correct), f(q.oracle),
                                                ", ".join(f"{n}: {f(v['best_of_n'])}" for n, v in q.curve.items())])
                  for q in best]
        console.print(_by_judge("best of N samples by each scorer, on problems with a reference answer", names,
                                values, wide=130, caption="share of problems whose pick is right (final answer "
                                                          "against the reference); random pick: the share of right "
                                                          "samples; oracle: any of the N right"))
    if read:
        names = ("kind", "verdicts", "invalid", "invalid rate", "commonest reasons")
        values = [(q.target, [q.kind, str(q.verdicts), str(q.invalid), f(q.invalid_rate),
                              "; ".join(f"{n}x {why}" for why, n in q.reasons.items()) or "-"]) for q in read]
        console.print(_by_judge("replies each AI judge gave, read by its template's grammar", names, values,
                                wide=120, caption="verdicts: one per order shown (pairwise, listwise), per rating, "
                                                  "per step label; invalid: no verdict in the form the template "
                                                  "asks for, two different ones, or out of range"))
    if png and plotted:
        console.print(f"plot: {png}")
    if curves:
        console.print(f"best-of-N plot: {curves}")


def _by_judge(title: str, names: tuple[str, ...], values: list[tuple[str, list[str]]], wide: int,
              caption: str | None = None) -> Table:
    """A row per judge on a wide terminal; on a narrow one a column per judge, its id folded, so no figure is cut."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, caption=caption)
    values = [(escape(judge), vals) for judge, vals in values]  # an id may hold [...]: text, not markup
    if console.width >= wide:
        table.add_column("judge", overflow="fold")
        for name in names:
            table.add_column(name, justify="right")
        for judge, vals in values:
            table.add_row(judge, *vals)
    else:
        table.add_column("metric")
        for judge, _ in values:
            table.add_column(judge, justify="right", overflow="fold")
        for i, name in enumerate(names):
            table.add_row(name, *[vals[i] for _, vals in values])
    return table


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="AI, rule and reward-model feedback on a round; judge bias report.", no_args_is_help=True)
    for kind in ("pairwise", "listwise", "rating", "binary", "steps", "correction"):
        sub.command(kind)(_command(kind))
    sub.command("report")(report)
    app.add_typer(sub, name="judge")
