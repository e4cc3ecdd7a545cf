"""``alignloop models``: the embedded default model and the models registry."""

from __future__ import annotations

from typing import Annotated

import typer

from alignloop.flows.cli.common import DbOption, JsonOption, console, emit_json, user_errors
from alignloop.pipelines import models
from alignloop.warehouse import db

models_app = typer.Typer(help="Models: the embedded default and the registry.", no_args_is_help=True)


@models_app.command("default")
@user_errors
def default(
    db_file: DbOption = None,
    dtype: Annotated[str | None, typer.Option(help="bfloat16 or float32 (default: bf16 where the CPU has it).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Print the embedded model's folder (converting from GGUF on first use) and register it as a policy in the
    warehouse, where there is one (--db or $ALIGNLOOP_DB must name an existing one)."""
    warehouse = db.optional_path(db_file)  # before the conversion: a --db typo fails at once
    with console.status("preparing the embedded model (first use converts the GGUF, ~20 s)"):
        path = models.default_model_path(dtype)
    model_id = None
    if warehouse is not None:
        with db.connect(warehouse) as con:
            model_id = models.register_model(con, str(path), "policy")
    if json_out:
        emit_json({"path": str(path), "model_id": model_id})
    else:
        print(path)


@models_app.command("list")
@user_errors
def list_models(db_file: DbOption = None, json_out: JsonOption = False) -> None:
    """List registered models."""
    with db.connect(db.existing_path(db_file)) as con:
        rows = db.fetch_dicts(con, db.query("list_models"))
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print("no models registered yet: 'alignloop models default' registers the embedded model "
                      "(generate, train and rounds register theirs)", highlight=False, soft_wrap=True)
        return
    from rich.table import Table

    table = Table("id", "role", "uri", "parent")
    for r in rows:
        table.add_row(r["id"][:12], r["role"], r["uri"], (r["parent_id"] or "")[:12])
    console.print(table)


@models_app.command("shrink")
@user_errors
def shrink(
    layers: Annotated[int, typer.Option(help="Decoder layers to keep (the first ones).")],
    out: Annotated[str, typer.Option(help="Folder of the smaller model (never overwritten).")],
    base: Annotated[str, typer.Option(help="'default' (embedded SmolLM2) or a model folder.")] = "default",
    db_file: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """A smaller model from BASE: its first LAYERS decoder layers (embeddings, final norm and head kept), registered
    with BASE as its parent where there is a warehouse. One checkpoint gives the models of several sizes a
    weak-to-strong chain needs."""
    from pathlib import Path

    path = db.optional_path(db_file)
    source = models.resolve_model(base)
    with console.status(f"keeping {layers} decoder layers of {base}"):
        target = models.shrink_layers(source, layers, Path(out))
    parent = model_id = None
    if path is not None:
        with db.connect(path) as con:
            parent = models.register_model(con, str(source), "policy")
            model_id = models.register_model(con, str(target), "policy", parent=parent, meta={"layers": layers})
    if json_out:
        emit_json({"path": str(target), "model_id": model_id, "parent_id": parent, "layers": layers})
    else:
        registered = f"model {model_id[:12]}" if model_id else "a model (no warehouse here: not registered)"
        console.print(f"{registered} at {target}: the first {layers} decoder layers of {base}", highlight=False,
                      soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
