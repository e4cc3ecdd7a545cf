"""``alignloop generate``: sample responses for a round's prompts (resumable; each shard is written as it ends)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import typer

from alignloop.flows.cli.common import DbOption, JsonOption, console, emit_json, user_errors
from alignloop.pipelines import generate as gen
from alignloop.pipelines.backends import Sampling, make_backend
from alignloop.warehouse import db


@user_errors
def generate(
    round_name: Annotated[str, typer.Option("--round", help="Round name; created on first use.")],
    model: Annotated[str, typer.Option(help="'default', a model folder, or the served name (openai).")] = "default",
    n: Annotated[int, typer.Option(help="Samples per prompt.")] = 4,
    limit: Annotated[int | None, typer.Option(help="At most this many prompts.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest completion in tokens.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 means greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
    split: Annotated[str, typer.Option(help="Prompt split ('all' for every split).")] = "train",
    tag: Annotated[list[str] | None, typer.Option(help="Only prompts with this tag (repeatable).")] = None,
    shard_size: Annotated[int, typer.Option(help="Prompts per shard (written when done).")] = 32,
    max_batch_size: Annotated[int, typer.Option(help="Rows decoded together (transformers).")] = 64,
    steps_separator: Annotated[str | None, typer.Option(help="Split responses into steps on this ('\\n' ok).")] = None,
    backend: Annotated[Literal["transformers", "vllm", "openai"], typer.Option(help="Engine.")] = "transformers",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (key: $OPENAI_API_KEY).")] = None,
    db_file: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Generate N responses per prompt of a round; rerunning the same command resumes where it stopped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    sampling = Sampling(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    sep = steps_separator.encode().decode("unicode_escape") if steps_separator else None
    opts: dict[str, object] = {"max_batch_size": max_batch_size} if backend == "transformers" else {}
    if backend == "openai":
        opts["base_url"] = base_url
    args = {"round": round_name, "sampling": sampling, "split": None if split == "all" else split,
            "tags": tuple(tag or ()), "limit": limit, "shard_size": shard_size, "steps_separator": sep}
    gen.GenerateConfig(model_id="", **args)  # a bad option fails before the model loads
    path = db.existing_path(db_file)
    with console.status(f"loading {model} ({backend})"):
        engine = make_backend(backend, model, **opts)
    cfg, work = gen.open_run(path, engine, args)
    start = time.perf_counter()
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
               TextColumn("{task.fields[tps]:.1f} tok/s"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=json_out) as progress:
        bar = progress.add_task("prompts", total=len(work.todo), tps=0.0)

        def advance(result: gen.ShardResult, totals: dict[str, int]) -> None:
            tps = totals["completion_tokens"] / max(time.perf_counter() - start, 1e-9)
            progress.update(bar, advance=result.prompts, tps=tps)

        totals = gen.run_and_write(path, work, cfg, lambda shard: gen.generate_shard(engine, shard, cfg), advance)
    seconds = round(time.perf_counter() - start, 2)
    if json_out:
        emit_json({**totals, "seconds": seconds})
    else:
        console.print(f"round {round_name}: {totals['inserted']} responses written for {work.selected} prompts "
                      f"({totals['already_done']} already there, {totals['skipped']} skipped, "
                      f"{totals['truncated']} prompts truncated); {totals['completion_tokens']} tokens in "
                      f"{seconds} s", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
