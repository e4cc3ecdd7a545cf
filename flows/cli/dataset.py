"""``alignloop dataset build|list|show|diff|export|lint``: versioned training sets from feedback, exported for
trainers."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from alignloop.flows.cli.common import DbOption, JsonOption, console, db_path, emit_json, key_values, user_errors
from alignloop.pipelines.datasets.card import note_text, source_line
from alignloop.pipelines.datasets.config import option_help, parse_options
from alignloop.pipelines.datasets.export import FORMATS, export_snapshot
from alignloop.pipelines.datasets.lint import LintOptions, lint
from alignloop.pipelines.datasets.publish import build_and_publish
from alignloop.pipelines.datasets.snapshot import (
    Manifest,
    list_snapshots,
    load_snapshot,
    parse_ref,
    snapshot_root,
    versions,
)
from alignloop.pipelines.datasets.stats import stats_rows
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.snapshots import KINDS

dataset_app = typer.Typer(help="Datasets: feedback -> versioned snapshots -> trainer formats.", no_args_is_help=True)

SnapOption = Annotated[str | None, typer.Option("--snapshots", help="Snapshot root (default: $ALIGNLOOP_SNAPSHOTS "
                                                                    "or snapshots/ next to the warehouse).")]
MaxTokens = Annotated[int, typer.Option(help="Lint: count rows longer than this many tokens.")]
TokOption = Annotated[str | None, typer.Option(help="Lint: local HF tokenizer folder (default: word estimate).")]


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value", overflow="fold")
    for r in rows:
        t.add_row(*r)
    return t


def _show(m: Manifest, path: Path) -> None:
    console.print(_table(f"{m.id} ({m.kind}, {m.builder})", [
        ("path", str(path)), ("rows", ", ".join(f"{k}={v}" for k, v in m.row_counts.items())),
        ("content hash", m.content_hash[:16]), ("created", m.created_at),
        ("source", source_line(m.source_counts)),
        ("rows after each stage", " -> ".join(f"{k} {v}" for k, v in m.stage_counts.items())),
        *[(k, "n/a (nothing to measure)" if v is None else note_text(v)) for k, v in m.notes.items()],
        ("lint", ", ".join(f"{k}={v}" for k, v in m.lint.get("counts", {}).items())),
    ]))
    shown = {*m.notes, "splits"}  # already in the table above
    if m.stats:
        console.print(_table("stats (lengths in characters)",
                             stats_rows({k: v for k, v in m.stats.items() if k not in shown})))


@dataset_app.command("build")
@user_errors
def build_cmd(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name; a new version is added when inputs change.")],
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Builder option KEY=VALUE "
                                                     "(repeatable); `alignloop dataset options KIND` lists them.")
                      ] = None,
    snapshots: SnapOption = None,
    max_tokens: MaxTokens = 2048,
    tokenizer: TokOption = None,
    db_: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build a dataset snapshot from the warehouse's feedback."""
    spec = parse_options(kind, key_values(option))
    path = db.existing_path(db_)
    root = snapshot_root(snapshots, path)
    with console.status(f"building {kind} dataset {name} ..."), db.connect(path) as con:
        pub = build_and_publish(con, spec, name, root, LintOptions(max_tokens, tokenizer))
    _written(pub.outcome.manifest, pub.outcome.path, pub.outcome.created, as_json)


def _written(m: Manifest, path: Path, created: bool, as_json: bool) -> None:
    """What a build or a mix wrote: its manifest as JSON, or a line when nothing changed or a version was added,
    then the manifest's table."""
    if as_json:
        emit_json({"id": m.id, "created": created, "path": str(path), "manifest": asdict(m)})
        return
    if not created:
        console.print(f"unchanged: same inputs and options as {m.id}; nothing written")
    elif m.version > 1:
        console.print(f"{m.name} was already used with different inputs or options: new version v{m.version} "
                      f"(previous v{m.version - 1} kept)")
    _show(m, path)


@dataset_app.command("mix")
@user_errors
def mix_cmd(
    name: Annotated[str, typer.Option("--name", help="The mixture's name; a new version is added when inputs change.")],
    part: Annotated[list[str], typer.Option("--part", help="NAME=FRACTION or NAME@vN=FRACTION (repeatable, two or "
                                                           "more): a snapshot and the fraction of its train prompts "
                                                           "kept, in (0, 1]; test splits are kept whole.")],
    seed: Annotated[int, typer.Option(help="Seed of which prompts each part keeps.")] = 0,
    snapshots: SnapOption = None,
    max_tokens: MaxTokens = 2048,
    tokenizer: TokOption = None,
    db_: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mix snapshots of one kind into a new one: a fraction of each one's train prompts, every test split; a
    held-out prompt never trains, rows in two parts are kept once, and opposite verdicts on a pair are dropped."""
    from alignloop.flows.build_dataset import MixDatasetsParams, mix_datasets
    from alignloop.flows.cli.common import flow_in_process, validated

    params = validated(MixDatasetsParams, {"name": name, "parts": key_values(part), "seed": seed,
                                           "db": db.existing_path(db_), "snapshots": snapshots,
                                           "max_tokens": max_tokens, "tokenizer": tokenizer})
    with flow_in_process(), console.status(f"mixing {len(params.parts)} datasets into {name} ..."):
        out = mix_datasets.fn(params)
    _written(Manifest.read(Path(out["path"])), Path(out["path"]), out["created"], as_json)


@dataset_app.command("options")
@user_errors
def options_cmd(kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(KINDS)}.")],
                as_json: JsonOption = False) -> None:
    """The builder options a kind accepts (-o KEY=VALUE), with defaults: the kind's own, then the shared ones."""
    found = option_help(kind)
    if as_json:
        emit_json([asdict(o) for o in found])
        return
    table = Table(title=f"{kind} dataset options (-o KEY=VALUE); below the line, the options every kind takes")
    table.add_column("option", no_wrap=True)
    table.add_column("default", overflow="fold", max_width=16)
    table.add_column("description")
    for o, after in zip(found, [*found[1:], None]):
        table.add_row(o.name, o.default, o.help)
        if after is not None and after.shared and not o.shared:
            table.add_section()
    console.print(table)


@dataset_app.command("list")
@user_errors
def list_cmd(snapshots: SnapOption = None, db_: DbOption = None, as_json: JsonOption = False) -> None:
    """Every snapshot version under the snapshot root."""
    root = snapshot_root(snapshots, db_path(db_))
    found = list_snapshots(root)
    if as_json:
        emit_json([{"id": m.id, "kind": m.kind, "builder": m.builder, "rows": m.row_counts,
                    "content_hash": m.content_hash, "created_at": m.created_at} for m in found])
        return
    if not found:
        console.print(f"no snapshots under {root} yet: 'alignloop dataset build KIND --name NAME' makes one",
                      highlight=False, soft_wrap=True)
        return
    t = Table(title="datasets")
    for col in ("id", "builder (kind.source)", "train", "test", "hash", "created"):
        t.add_column(col, justify="right" if col in ("train", "test") else "left", overflow="fold")
    for m in found:
        t.add_row(m.id, m.builder, f"{m.row_counts.get('train', 0):,}", f"{m.row_counts.get('test', 0):,}",
                  m.content_hash[:8], m.created_at[:16].replace("T", " "))
    console.print(t)


@dataset_app.command("show")
@user_errors
def show_cmd(name: Annotated[str, typer.Argument(help="NAME or NAME@vN (default: latest version).")],
             snapshots: SnapOption = None, db_: DbOption = None, as_json: JsonOption = False) -> None:
    """A snapshot's manifest: parameters, counts, lint and stats."""
    snap = load_snapshot(name, root=snapshot_root(snapshots, db_path(db_)))
    if as_json:
        emit_json({"path": str(snap.path), **asdict(snap.manifest)})
        return
    _show(snap.manifest, snap.path)


@dataset_app.command("diff")
@user_errors
def diff_cmd(old: Annotated[str, typer.Argument(help="NAME@vN; alone (NAME or NAME@vN), compared with the "
                                                     "version before it.")],
             new: Annotated[str | None, typer.Argument(help="NAME or NAME@vN to compare OLD with.")] = None,
             examples: Annotated[int, typer.Option(help="Row keys shown per kind of change.")] = 3,
             snapshots: SnapOption = None, db_: DbOption = None, as_json: JsonOption = False) -> None:
    """What changed between two snapshot versions: options, and rows added, removed, moved between splits or
    changed (matched by the warehouse ids they came from), with the columns that changed."""
    from alignloop.pipelines.datasets.diff import CHANGES, diff_snapshots

    root = snapshot_root(snapshots, db_path(db_))
    if new is None:  # one version: against the one before it
        name, version = parse_ref(old)
        later = load_snapshot(old, root=root)
        earlier = [v for v in versions(root, name) if v < (version or later.manifest.version)]
        if not earlier:
            raise AlignloopError(f"{later.manifest.id} is the first version of {name}; name two versions "
                                 "(NAME@vN NAME@vM) or two datasets to compare")
        first = load_snapshot(name, earlier[-1], root=root)
    else:
        first, later = load_snapshot(old, root=root), load_snapshot(new, root=root)
    d = diff_snapshots(first, later, examples)
    if as_json:
        emit_json(d.as_dict())
        return
    same = "same rows (equal content hash)" if d.same_content else "rows differ"
    console.print(f"{d.old} -> {d.new} ({d.kind}): {same}", highlight=False, soft_wrap=True)
    if d.params:
        console.print(_table("options that differ", [(k, f"{json.dumps(a)} -> {json.dumps(b)}")
                                                     for k, (a, b) in d.params.items()]))
    t = Table(title="rows (matched by their warehouse ids; moved = in the other split)")
    t.add_column("split")
    for c in CHANGES:
        t.add_column(c, justify="right")
    for split, counts in d.counts.items():
        t.add_row(split, *(f"{counts[c]:,}" for c in CHANGES))
    console.print(t)
    if d.columns:
        console.print("changed columns: " + ", ".join(f"{k} ({v:,})" for k, v in d.columns.items()),
                      highlight=False, soft_wrap=True)
    for change, keys in d.examples.items():
        if keys:
            console.print(f"{change}: {', '.join(keys)}" + (" ..." if d.total(change) > len(keys) else ""),
                          highlight=False, soft_wrap=True)


@dataset_app.command("export")
@user_errors
def export_cmd(
    name: Annotated[str, typer.Argument(help="NAME or NAME@vN.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(FORMATS)}.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (refused if it exists, unless --force and it "
                                                    "is a previous export).")],
    version: Annotated[int | None, typer.Option("--version", help="Version (default: latest).")] = None,
    standard: Annotated[bool, typer.Option("--standard", help="Plain strings instead of chat message lists.")
                        ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a previous export at --out (a folder holding only "
                                                        "what an export writes; never the current folder, one "
                                                        "holding it, or one holding a warehouse).")] = False,
    snapshots: SnapOption = None,
    db_: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Export a snapshot for a trainer (TRL DatasetDict folder, OpenRLHF JSONL, JSONL, Parquet)."""
    warehouse = db_path(db_)
    snap = load_snapshot(name, version, root=snapshot_root(snapshots, warehouse))
    res = export_snapshot(snap, fmt, out, standard=standard, force=force, warehouse=warehouse)
    info: dict[str, Any] = {"dataset": snap.manifest.id, "format": fmt, "path": str(res.path), "rows": res.rows,
                            "label_rule": res.label_rule}
    if as_json:
        emit_json(info)
    else:
        rule = f"; step labels: {res.label_rule}" if res.label_rule else ""
        console.print(f"exported {snap.manifest.id} as {fmt} to {res.path} "
                      f"(train {res.rows['train']}, test {res.rows['test']}){rule}")


@dataset_app.command("lint")
@user_errors
def lint_cmd(name: Annotated[str, typer.Argument(help="NAME or NAME@vN.")], max_tokens: MaxTokens = 2048,
             tokenizer: TokOption = None, snapshots: SnapOption = None, db_: DbOption = None,
             as_json: JsonOption = False) -> None:
    """Count problems in a snapshot (empty completions, chosen == rejected, too long, bad chat, unlabelled steps)."""
    snap = load_snapshot(name, root=snapshot_root(snapshots, db_path(db_)))
    reports = {s: lint(t, snap.manifest.kind, LintOptions(max_tokens, tokenizer)) for s, t in snap.tables.items()}
    if as_json:
        emit_json({s: r.as_dict() for s, r in reports.items()})
        return
    for s, r in reports.items():
        console.print(_table(f"lint {snap.manifest.id} {s} ({r.rows} rows, {r.tokenizer})",
                             [(k, str(v)) for k, v in r.counts.items()]))


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
