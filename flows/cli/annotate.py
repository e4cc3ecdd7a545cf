"""``alignloop annotate ...``: a local Label Studio, push tasks, pull annotations, agreement report, progress."""

from __future__ import annotations

import functools
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from alignloop.flows.cli.common import DbOption, JsonOption, console, emit_json, user_errors
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.outputs import write_private

TOKEN_FILE = "alignloop-api-token"
URL_FILE = "alignloop-url"
"""Written by ``annotate server`` while it runs, next to the token: the other commands run from the same folder
find the server without LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY."""
DATA_DIR = Path("label-studio-data")
DEFAULT_PORT = 8080
"""Label Studio's own default; ``annotate server`` takes a free port instead when it is in use."""
RETRIES = 4
"""Connection attempts before a Label Studio that does not answer is reported (backoff doubles from BACKOFF)."""
BACKOFF = 0.5
KindArg = Annotated[Literal["pairwise", "ranking", "binary", "step", "correction"],
                    typer.Argument(help="Feedback kind.")]
RoundOpt = Annotated[str | None, typer.Option("--round", help="Only this round (default: all).")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Label Studio URL (default: $LABEL_STUDIO_URL, else the "
                                                         "server 'alignloop annotate server' runs from this folder).")]


def label_studio_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Label Studio and server errors become one-line user errors (the message names the URL, not the token)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from alignloop.annotation.client import LabelStudioClientError
        from alignloop.annotation.server import LabelStudioError

        try:
            return fn(*args, **kwargs)
        except (LabelStudioClientError, LabelStudioError) as exc:
            raise AlignloopError(str(exc).splitlines()[0]) from None

    return wrapper


def local_server(data_dir: Path = DATA_DIR) -> tuple[str | None, str | None]:
    """URL and token of the server ``annotate server`` runs from ``data_dir`` (None where it left no file)."""
    found = [(data_dir / name).read_text().strip() if (data_dir / name).is_file() else None
             for name in (URL_FILE, TOKEN_FILE)]
    return found[0], found[1]


def _client(url: str | None):
    """Label Studio at ``url`` or $LABEL_STUDIO_URL (token: $LABEL_STUDIO_API_KEY); where neither is set, the
    local server started from this folder."""
    from alignloop.annotation.client import API_KEY_ENV, URL_ENV, LabelStudioClientError, connect

    if url or os.environ.get(URL_ENV):
        return connect(url, retries=RETRIES, backoff=BACKOFF)
    url, key = local_server()
    if url is None:
        raise AlignloopError(f"no Label Studio to talk to: set {URL_ENV} and {API_KEY_ENV} (or pass --url), or "
                             "start one with 'alignloop annotate server' from this folder")
    try:
        return connect(url, os.environ.get(API_KEY_ENV) or key, retries=RETRIES, backoff=BACKOFF)
    except LabelStudioClientError as exc:
        raise AlignloopError(f"{str(exc).splitlines()[0]} (the local server's address, from {DATA_DIR / URL_FILE}: "
                             "is 'alignloop annotate server' still running?)") from None


def server(
    port: Annotated[int | None, typer.Option(help=f"Port on 127.0.0.1 (default: {DEFAULT_PORT}, or a free one "
                                                  "where that is taken).", min=1, max=65535)] = None,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Label Studio data folder.")] = DATA_DIR,
) -> None:
    """Start a local Label Studio, print its URL and where the API token is; stop it with Ctrl-C.

    From the folder it was started in, the other annotate commands find it without any setting."""
    from alignloop.annotation.server import port_is_free, start_server, stop_server

    data_dir = data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    token_file = data_dir / TOKEN_FILE
    if not token_file.exists():  # the admin and its token are created on the first start only
        write_private(token_file, os.environ.get("LABEL_STUDIO_API_KEY") or secrets.token_hex(20))
    def interrupt(signum: int, frame: object) -> None:  # SIGTERM stops the server like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if port is None and port_is_free(DEFAULT_PORT):
        port = DEFAULT_PORT
    elif port is None:
        console.print(f"port {DEFAULT_PORT} is in use: taking a free one", highlight=False)
    with console.status("starting Label Studio (the first start migrates its database, ~30 s)"):
        srv = start_server(data_dir, port=port, token=token_file.read_text().strip())
    url_file = data_dir / URL_FILE
    url_file.write_text(srv.url)
    local = data_dir == DATA_DIR.absolute()
    say = functools.partial(console.print, highlight=False, soft_wrap=True)
    say(f"Label Studio at {srv.url}  (log: {srv.log_file})")
    say("the annotate commands run from this folder use it as they are; elsewhere (or for the Prefect flows):"
        if local else "for the annotate commands and the Prefect flows:")
    say(f"  export LABEL_STUDIO_URL={srv.url}")
    say(f"  export LABEL_STUDIO_API_KEY=$(cat {token_file})")
    say("Press Ctrl-C to stop.")
    try:
        while srv.is_running():
            time.sleep(1)
        raise AlignloopError(f"Label Studio exited; see {srv.log_file}")
    except KeyboardInterrupt:
        console.print("stopping Label Studio")
    finally:
        url_file.unlink(missing_ok=True)
        stop_server(srv)


def push_cmd(
    kind: KindArg,
    round_name: Annotated[str, typer.Option("--round", help="Round whose responses are sent.")],
    sample: Annotated[int | None, typer.Option(help="Send at most this many new tasks.")] = None,
    strategy: Annotated[Literal["inconsistent", "disagreement", "random"], typer.Option(
        help="Order: flagged first (pairwise: AI-inconsistent, then judge disagreements; steps: convincing wrong "
             "answers, then step judges that disagree), disagreements first, or random.")] = "inconsistent",
    seed: Annotated[int, typer.Option(help="Seed of the random audit sample.")] = 0,
    audit: Annotated[float, typer.Option(help="Share of the sample for random unflagged items.")] = 0.1,
    question: Annotated[list[str] | None, typer.Option(help="Pairwise: an optional aspect question the project asks "
                                                            "besides the overall one (repeatable, e.g. honesty; "
                                                            "default: an existing project's, else harmlessness).")
                        ] = None,
    overlap: Annotated[int | None, typer.Option(help="Annotators each task wants before it counts as done (2 or "
                                                     "more for agreement; default: the project's, 1 for a new "
                                                     "one).")] = None,
    instructions: Annotated[Path | None, typer.Option(help="A file (HTML or text) annotators read before they "
                                                           "label, shown in Label Studio.")] = None,
    url: UrlOpt = None,
    db_file: DbOption = None,
    json_out: JsonOption = False,
) -> None:
    """Send a round's items to Label Studio (one project per round and kind; items already sent are skipped)."""
    from alignloop.annotation import push

    if instructions is not None and not instructions.is_file():
        raise AlignloopError(f"--instructions {instructions}: no such file")
    try:
        request = push.PushRequest(kind, round_name, sample, strategy, seed, audit,
                                   questions=tuple(question) if question else None, overlap=overlap,
                                   instructions=instructions.read_text(encoding="utf-8") if instructions else None)
    except ValueError as exc:
        raise AlignloopError(str(exc)) from None
    path = db.existing_path(db_file)
    client = _client(url)
    with console.status(f"pushing {kind} tasks of round {round_name}"):
        result = push.push(path, client, request)
    if json_out:
        emit_json(asdict(result))
    elif result.planned == 0:
        console.print(f"nothing new to send for {kind} in round {round_name}" + (
            f"; project {result.project_id} asks what was given" if result.project_id is not None else ""))
    else:
        console.print(f"{result.title!r} (project {result.project_id}): {result.imported} tasks imported, "
                      f"{result.recovered} recovered, {result.recorded} recorded")


def pull_cmd(round_name: RoundOpt = None, url: UrlOpt = None, db_file: DbOption = None,
             json_out: JsonOption = False) -> None:
    """Bring annotations back into the warehouse (edited ones replace the old verdict; history is kept)."""
    from alignloop.annotation import agreement, pull

    path = db.existing_path(db_file)
    client = _client(url)
    with console.status("pulling annotations"):
        summary = pull.pull(path, client, round_name)
        with db.connect(path) as con:
            agreement.store(con, agreement.report(*agreement.collect(con, round_name)), round_name)
    if json_out:
        emit_json(summary.as_dict())
        return
    console.print(f"{summary.annotations} annotations from {len(summary.projects)} projects: inserted "
                  f"{summary.inserted or 0}, replaced {summary.replaced or 0}, removed {summary.removed or 0}, "
                  f"{summary.annotated} tasks annotated, {summary.deleted} deleted, {len(summary.skipped)} skipped")
    for s in summary.skipped:
        console.print(f"  skipped annotation {s.annotation_id} (project {s.project_id}, task {s.task_id}): {s.reason}",
                      highlight=False)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def report_cmd(round_name: RoundOpt = None, db_file: DbOption = None, json_out: JsonOption = False) -> None:
    """Inter-annotator agreement, human vs AI judges, throughput and gold accuracy (stored in `evaluations`)."""
    from rich.table import Table

    from alignloop.annotation import agreement

    with db.connect(db.existing_path(db_file)) as con:
        rep = agreement.report(*agreement.collect(con, round_name))
        agreement.store(con, rep, round_name)
    if json_out:
        emit_json(rep.as_dict())
        return
    if not (rep.projects or rep.human_vs_ai or rep.throughput):
        console.print(f"no annotations pulled yet{f' for round {round_name}' if round_name else ''}: 'alignloop "
                      "annotate pull' brings them in from Label Studio", highlight=False)
        return
    t = Table(title="Inter-annotator agreement")
    for col in ("project", "kind", "annotators", "items", "method", "kappa", "alpha", "agreement"):
        t.add_column(col)
    for p in rep.projects:
        kind = p.kind if p.aspect == "overall" else f"{p.kind} [{p.aspect}]"
        t.add_row(str(p.project_id), kind, str(p.annotators), str(p.items), p.method or "-", _fmt(p.kappa),
                  _fmt(p.alpha), _fmt(p.percent_agreement))
    if rep.projects:
        console.print(t)
    t = Table(title="Human majority vs AI judges")
    for col in ("judge", "items", "accuracy", "kappa"):
        t.add_column(col)
    for h in rep.human_vs_ai:
        t.add_row(h.judge, str(h.items), _fmt(h.accuracy), _fmt(h.kappa))
    if rep.human_vs_ai:
        console.print(t)
    t = Table(title="Annotators")
    for col in ("annotator", "tasks", "median lead time (s)", "gold tasks", "gold accuracy"):
        t.add_column(col)
    gold = {g.annotator: g for g in rep.gold}
    for a in rep.throughput:
        g = gold.get(a.annotator)
        t.add_row(a.annotator, str(a.tasks), _fmt(a.median_lead_time), str(g.gold_tasks) if g else "-",
                  _fmt(g.accuracy) if g else "-")
    if rep.throughput:
        console.print(t)


def status_cmd(round_name: RoundOpt = None, url: UrlOpt = None, db_file: DbOption = None,
               json_out: JsonOption = False) -> None:
    """Done/total tasks per Label Studio project recorded in the warehouse."""
    from alignloop.annotation import pull, waiting

    with db.connect(db.existing_path(db_file)) as con:
        sent = pull.load_sent(con, round_name)
    projects = sorted({(t.project_id, t.round_id, t.kind) for t in sent})
    client = _client(url) if projects else None
    rows = []
    for pid, rnd, kind in projects:
        p = waiting.count_done(client, pid)
        rows.append({"project_id": pid, "round": rnd, "kind": kind, "done": p.done, "total": p.total})
    if json_out:
        emit_json(rows)
        return
    if not rows:
        console.print("no annotation tasks pushed yet")
    for r in rows:
        console.print(f"project {r['project_id']} ({r['round']} {r['kind']}): {r['done']}/{r['total']} done")


def register(app: typer.Typer) -> None:
    annotate = typer.Typer(help="Human feedback in Label Studio: server, push, pull, report, status.",
                           no_args_is_help=True)
    annotate.command("server")(user_errors(label_studio_errors(server)))
    annotate.command("push")(user_errors(label_studio_errors(push_cmd)))
    annotate.command("pull")(user_errors(label_studio_errors(pull_cmd)))
    annotate.command("report")(user_errors(label_studio_errors(report_cmd)))
    annotate.command("status")(user_errors(label_studio_errors(status_cmd)))
    app.add_typer(annotate, name="annotate")
