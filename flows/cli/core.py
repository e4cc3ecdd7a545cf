"""Core commands: ``alignloop init``, ``alignloop status``, ``alignloop prompts import|demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from alignloop.flows.cli.common import DbOption, JsonOption, console, db_path, emit_json, user_errors
from alignloop.pipelines.demo_prompts import write_demo_prompts
from alignloop.pipelines.intake import ImportOptions, ImportSummary, import_into
from alignloop.pipelines.intake.formats import FieldMap
from alignloop.pipelines.intake.readers import FORMATS
from alignloop.warehouse import db
from alignloop.warehouse.status import status as warehouse_status

prompts_app = typer.Typer(help="Bring prompts (and the responses and feedback that come with them) in.",
                          no_args_is_help=True)


@user_errors
def init(db_: DbOption = None) -> None:
    """Create the warehouse, or migrate one an earlier release made (the only command that migrates)."""
    path = db_path(db_)
    with db.connect(path, migrate=True) as con:
        version = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    console.print(f"warehouse ready: {path} (schema v{version})")


@user_errors
def status(db_: DbOption = None, as_json: JsonOption = False) -> None:
    """Row counts per table, per round and per feedback kind."""
    path = db.existing_path(db_)
    with db.connect(path, read_only=True) as con:
        st = warehouse_status(con)
    if as_json:
        emit_json({"db": path, **st})
        return
    console.print(f"warehouse {path} (schema v{st['schema_version']})", highlight=False, soft_wrap=True)
    t = Table(title="rows per table")
    t.add_column("table")
    t.add_column("rows", justify="right")
    for name, n in st["tables"].items():
        t.add_row(name, f"{n:,}")
    console.print(t)
    if st["rounds"]:
        every = ("responses", "comparisons", "rankings", "ratings", "step_labels", "corrections")
        kinds = [k for k in every if any(info["counts"].get(k) for info in st["rounds"].values())]
        r = Table(title="rows per round", caption="kinds with no rows in any round are left out"
                  if len(kinds) < len(every) else None)
        for col in ["round", "status", *kinds]:
            r.add_column(col, justify="right" if col in kinds else "left")
        for rid, info in st["rounds"].items():
            r.add_row(rid, info["status"], *(f"{info['counts'].get(k, 0):,}" for k in kinds))
        console.print(r)
    for key, title, by in (("feedback", "feedback by kind and source", "source"),
                           ("aspects", "feedback by aspect (-o aspect=)", "aspect")):
        if st[key]:
            console.print(_rows_by_kind(title, by, st[key]))


def _rows_by_kind(title: str, by: str, counts: dict[str, dict[str, int]]) -> Table:
    """A table of row counts per feedback kind and ``by`` (its source, its aspect)."""
    t = Table(title=title)
    for col in ("kind", by, "rows"):
        t.add_column(col, justify="right" if col == "rows" else "left")
    for kind, per in counts.items():
        for value, n in per.items():
            t.add_row(kind, value, f"{n:,}")
    return t


def _print_summary(s: ImportSummary) -> None:
    t = Table(title=f"import {s.file} ({s.format})")
    t.add_column("")
    t.add_column("count", justify="right")
    for label, n in (("read", s.read), ("imported (stored something new)", s.imported),
                     ("already present (every row stored before)", s.already_present),
                     ("near-duplicates", s.near_duplicates), ("skipped (errors)", len(s.skipped))):
        t.add_row(label, f"{n:,}")
    for reason, n in s.rejected.items():
        t.add_row(f"rejected: {reason}", f"{n:,}")
    for reason, n in s.warnings.items():
        t.add_row(f"note: {reason}", f"{n:,}")
    for table, n in s.inserted.items():
        if n or s.present.get(table):
            t.add_row(f"{table}: new / already present", f"{n:,} / {s.present.get(table, 0):,}")
    console.print(t)
    if s.seen_before:
        console.print(f"  {Path(s.file).name} was imported before with these options (the same bytes): nothing new")
    for line, why in s.rejected_lines[:10]:
        console.print(f"  rejected line {line}: {why}")
    for line, why in s.skipped[:20]:
        console.print(f"  skipped: {why}")


@prompts_app.command("import")
@user_errors
def prompts_import(
    path: Annotated[Path, typer.Argument(help="File or HF datasets folder to import.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)} (a container, or a record "
                                                      "format; auto detects both).")] = "auto",
    text_field: Annotated[str | None, typer.Option(help="Field with the prompt text.")] = None,
    messages_field: Annotated[str | None, typer.Option(help="Field with a chat message list.")] = None,
    reference_field: Annotated[str | None, typer.Option(help="Field with a reference answer.")] = None,
    system: Annotated[str | None, typer.Option(help="System message to prepend.")] = None,
    round_: Annotated[str, typer.Option("--round", help="Round for imported responses and feedback.")] = "import",
    source: Annotated[str | None, typer.Option(help="Source name (default: the file name).")] = None,
    feedback_source: Annotated[str | None, typer.Option(help="Who gave the file's labels: human or ai (default: "
                                                             "ai for ultrafeedback and nectar, else human).")] = None,
    aspect: Annotated[str, typer.Option(help="What the file's comparisons, rankings and corrections judged where a "
                                             "record does not say (e.g. helpfulness, harmlessness); builds select it "
                                             "with -o aspect=.")
                      ] = "overall",
    tag: Annotated[list[str] | None, typer.Option(help="Tag added to every prompt (repeatable).")] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of prompts in the test split.")] = 0.1,
    near_dup: Annotated[float | None, typer.Option(help="Drop near-duplicates at this Jaccard similarity.")] = None,
    min_chars: Annotated[int, typer.Option(help="Reject prompts shorter than this.")] = 1,
    max_chars: Annotated[int, typer.Option(help="Reject prompts longer than this.")] = 100_000,
    on_error: Annotated[str, typer.Option(help="fail: write nothing on a bad record; skip: import the rest.")] = "fail",
    limit: Annotated[int | None, typer.Option(help="Read at most this many records.")] = None,
    db_: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import prompts, and the responses and feedback a known format carries (HH-RLHF, PRM800K, Q-A-C, TRL's
    preference and unpaired preference, UltraFeedback, rankings, Nectar, SHP, PKU-SafeRLHF, BeaverTails, HelpSteer)."""
    opts = ImportOptions(format=fmt, fields=FieldMap(text_field, messages_field, system, reference_field),
                         round=round_, source=source, feedback_source=feedback_source, aspect=aspect,
                         tags=tuple(tag or ()),
                         test_fraction=test_fraction,
                         near_dup=near_dup, min_chars=min_chars, max_chars=max_chars, on_error=on_error, limit=limit)
    with console.status(f"importing {path}"):
        summary = import_into(db_path(db_), path, opts)
    if as_json:
        emit_json(summary.as_dict())
    else:
        _print_summary(summary)


@prompts_app.command("demo")
@user_errors
def prompts_demo(
    out: Annotated[Path, typer.Option(help="Where to write the generated JSONL.")] = Path("data/demo_prompts.jsonl"),
    n_train: Annotated[int, typer.Option(help="Training prompts.")] = 80,
    n_test: Annotated[int, typer.Option(help="Held-out prompts (subjects never seen in training).")] = 40,
    max_words: Annotated[int, typer.Option(help="Word limit the prompts ask for.")] = 6,
    db_: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Generate the demo prompt set (short questions about a subject, with a word limit) and import it."""
    write_demo_prompts(out, n_train=n_train, n_test=n_test, max_words=max_words)
    summary = import_into(db_path(db_), out, ImportOptions(source="demo"))
    if as_json:
        emit_json(summary.as_dict())
    else:
        _print_summary(summary)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("status")(status)
    app.add_typer(prompts_app, name="prompts")
