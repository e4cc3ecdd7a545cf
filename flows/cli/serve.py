"""``alignloop server``, ``alignloop serve`` and ``alignloop workers``: run the loop from the Prefect UI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from alignloop.flows.cli.common import DbOption, console, user_errors
from alignloop.flows.serving.serve import (
    DEFAULT_PORT,
    run_server,
    serve_registered,
    sigterm_as_interrupt,
    stop_process,
)
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError

workers_app = typer.Typer(help="Process work pools: deploy the flows to a pool and start workers for it.",
                          no_args_is_help=True)

OnlyOption = Annotated[list[str] | None, typer.Option("--only", help="Just this flow (repeatable), e.g. generate.")]


def _use_db(db_: str | None) -> None:
    """Flow runs are child processes: hand them the warehouse through the environment."""
    if db_:
        os.environ["ALIGNLOOP_DB"] = str(Path(db_).resolve())


@user_errors
def server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)] = DEFAULT_PORT,
    home: Annotated[Path | None, typer.Option(help="PREFECT_HOME (its sqlite database); default: Prefect's.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to answer.")] = 60.0,
) -> None:
    """Start a local Prefect server (UI and API) on 127.0.0.1 until Ctrl-C."""
    raise typer.Exit(run_server(port, home, timeout, say=lambda m: console.print(m, highlight=False)))


@user_errors
def serve(
    round_cron: Annotated[str | None, typer.Option(help='Schedule rounds by cron, e.g. "0 3 * * *".')] = None,
    round_interval: Annotated[float | None, typer.Option(help="Schedule rounds every this many seconds.")] = None,
    round_params: Annotated[str | None, typer.Option(help='Round fields as JSON, e.g. \'{"n": 8}\'; a scheduled '
                                                          "round runs round 'next' (from the last round's policy) "
                                                          "unless they say otherwise.")] = None,
    only: OnlyOption = None,
    limit: Annotated[int | None, typer.Option(help="Most flow runs at the same time.")] = None,
    db_: DbOption = None,
) -> None:
    """Serve a deployment of every flow in one process; start runs from the UI (needs PREFECT_API_URL)."""
    params = _json_option("--round-params", round_params)
    _use_db(db_)
    warehouse = Path(db.default_path()).resolve()
    console.print(f"serving alignloop flows against {_api()} (runner polls every "
                  f"{os.environ.get('PREFECT_RUNNER_POLL_FREQUENCY', '2')} s); Ctrl-C stops", highlight=False)
    console.print(f"warehouse: {warehouse}" + ("" if warehouse.exists() else " (not there yet: the import-prompts "
                  "flow or 'alignloop init' creates it; other flows refuse to run until then)"), highlight=False)
    try:
        serve_registered(tuple(only or ()), round_cron, round_interval, params, limit)
    except KeyboardInterrupt:
        console.print("stopped serving")


@workers_app.command("deploy")
@user_errors
def workers_deploy(
    pool: Annotated[str, typer.Option(help="Work pool; a process pool is created if missing.")] = "alignloop",
    only: OnlyOption = None,
    image: Annotated[str | None, typer.Option(help="Image with alignloop installed (Docker/Kubernetes pools; "
                                                   "the pool must exist).")] = None,
    job_variables: Annotated[str | None, typer.Option(help="Job variables as JSON, e.g. "
                                                           '\'{"env": {"ALIGNLOOP_DB": "/data/w.duckdb"}}\'.')] = None,
    round_cron: Annotated[str | None, typer.Option(help="Cron schedule of the round deployment.")] = None,
    round_interval: Annotated[float | None, typer.Option(help="Interval schedule of the round, seconds.")] = None,
) -> None:
    """Deploy every registered flow to a work pool (process pools load code from this checkout)."""
    from alignloop.flows.serving.deploy import deploy_to_pool

    ids = deploy_to_pool(pool, tuple(only or ()), image=image,
                         job_variables=_json_option("--job-variables", job_variables),
                         round_cron=round_cron, round_interval=round_interval)
    for name in ids:
        console.print(f"deployed {name}", highlight=False)
    console.print(f"start workers with: alignloop workers start --pool {pool} --count 2", highlight=False)


@workers_app.command("start")
@user_errors
def workers_start(
    pool: Annotated[str, typer.Option(help="Work pool to pull runs from.")] = "alignloop",
    count: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
    limit: Annotated[int, typer.Option(min=1, help="Runs each worker executes at once.")] = 1,
    db_: DbOption = None,
) -> None:
    """Start COUNT process workers on POOL (each runs flows as subprocesses) until Ctrl-C."""
    from alignloop.flows.serving.deploy import ensure_process_pool, start_workers

    _use_db(db_)
    if ensure_process_pool(pool):
        console.print(f"created process work pool {pool}", highlight=False)
    procs = start_workers(pool, count, limit)
    console.print(f"{count} workers on {pool} (pids {', '.join(str(p.pid) for p in procs)}); Ctrl-C stops them",
                  highlight=False)
    try:
        with sigterm_as_interrupt():
            while all(p.poll() is None for p in procs):
                time.sleep(1)
        dead = [p for p in procs if p.poll() is not None]
        raise AlignloopError(f"worker pid {dead[0].pid} exited with code {dead[0].returncode}")
    except KeyboardInterrupt:
        console.print("stopping workers")
    finally:
        for p in procs:
            stop_process(p)  # `prefect worker start` passes SIGTERM on to its worker as SIGINT


def _json_option(flag: str, text: str | None) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AlignloopError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise AlignloopError(f"{flag} must be a JSON object, got {text!r}")
    return value


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        raise AlignloopError("PREFECT_API_URL is not set; start 'alignloop server' and export the URL it prints")
    return api


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.command("serve")(serve)
    app.add_typer(workers_app, name="workers")
