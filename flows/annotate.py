"""Prefect flows for human feedback in Label Studio: push tasks, pull annotations, wait for a quota.

    python -c "from alignloop.flows.annotate import *; annotate_push(AnnotatePushParams(kind='pairwise', round='r1'))"

Label Studio is reached at ``label_studio_url`` (default env LABEL_STUDIO_URL) with the token from env
LABEL_STUDIO_API_KEY, or from the Prefect Secret block named by ``token_secret``. The token is resolved
inside the flow and is never a parameter, a result, a log line or a warehouse value.

``wait_for_annotations`` suspends (deployments: the process exits and the run is rescheduled on resume) or
pauses (``mode='pause'``: the process keeps waiting; for local runs) until someone calls
``resume_flow_run(flow_run_id, run_input={"done": n})``: the webhook handler from ``quota_resumer``, or the
``check-annotation-quota`` flow run on a schedule.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from prefect.states import Completed
from pydantic import Field, model_validator

from alignloop.annotation import agreement, push, waiting
from alignloop.annotation import pull as pulling
from alignloop.annotation.client import LabelStudioClient, connect
from alignloop.flows.params import FlowParams
from alignloop.warehouse import db


class LabelStudioParams(FlowParams):
    """Where Label Studio is; the token itself is never a parameter."""

    label_studio_url: str | None = Field(None, description="Label Studio URL; default env LABEL_STUDIO_URL.")
    token_secret: str | None = Field(None, description="Name of a Prefect Secret block holding the API token; "
                                                       "default env LABEL_STUDIO_API_KEY.")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")

    def db_path(self) -> str:
        return db.existing_path(self.db)


class AnnotatePushParams(LabelStudioParams):
    kind: Literal["pairwise", "ranking", "binary", "step", "correction"] = Field(..., description="Feedback kind.")
    round: str = Field(..., min_length=1, description="Round whose responses are sent.")
    sample: int | None = Field(None, ge=1, description="Send at most this many new tasks.")
    strategy: Literal["inconsistent", "disagreement", "random"] = Field(
        "inconsistent", description="Pairwise order: AI-inconsistent pairs first, judge disagreements first, random.")
    seed: int = Field(0, description="Seed of the random audit sample.")
    audit: float = Field(0.1, ge=0, le=1, description="Share of the sample kept for random unflagged items.")
    questions: list[str] | None = Field(None, description="Pairwise: the optional aspect questions the project asks "
                                                          "besides the overall one, e.g. harmlessness, honesty "
                                                          "(empty: an existing project's; a new one asks "
                                                          "harmlessness).")

    overlap: int | None = Field(None, ge=1, description="Annotators each task wants before it counts as done "
                                                        "(agreement needs 2 or more; empty: the project's, 1 for a "
                                                        "new one).")
    instructions: str | None = Field(None, description="What annotators read before they label (HTML or text; "
                                                       "empty: the project's).")

    @model_validator(mode="after")
    def _questions_fit(self) -> AnnotatePushParams:
        self.request()  # the request's own checks, as one line in the form
        return self

    def request(self) -> push.PushRequest:
        return push.PushRequest(self.kind, self.round, self.sample, self.strategy, self.seed, self.audit,
                                questions=None if self.questions is None else tuple(self.questions),
                                overlap=self.overlap, instructions=self.instructions)


class AnnotatePullParams(LabelStudioParams):
    round: str | None = Field(None, description="Only this round's projects (default: all).")
    report: bool = Field(True, description="Recompute annotator agreement into `evaluations` after pulling.")


class WaitParams(LabelStudioParams):
    round: str = Field(..., min_length=1, description="Round of the project to watch.")
    kind: Literal["pairwise", "ranking", "binary", "step", "correction"] = Field(..., description="Feedback kind.")
    quota: int = Field(..., ge=1, description="Wait until this many tasks have an annotation.")
    timeout_s: int = Field(86400, ge=1, description="Give up waiting after this many seconds.")
    mode: Literal["suspend", "pause"] = Field("suspend", description="suspend: exit and resume later (needs a "
                                                                     "deployment); pause: keep the process.")
    poll_interval_s: int = Field(10, ge=1, description="pause mode: how often the paused run checks for resume.")


class QuotaReached(RunInput):
    """What a resumer sends: the finished-task count it saw."""

    done: int
    project_id: int | None = None


def label_studio(params: LabelStudioParams) -> LabelStudioClient:
    """Connect, taking the token from the named Secret block or the environment."""
    token = None
    if params.token_secret:
        from prefect.blocks.system import Secret

        token = Secret.load(params.token_secret).get()
    return connect(params.label_studio_url, token)


@task(name="label-studio-send", cache_policy=NO_CACHE, persist_result=False)
def send_tasks(client: LabelStudioClient, request: push.PushRequest, tasks: list) -> tuple[int, list, int]:
    return push.send(client, request.kind, request.round, tasks, request.questions, request.overlap,
                     request.instructions)


@task(name="label-studio-export", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=5)
def export_projects(client: LabelStudioClient, project_ids: list[int]) -> tuple[dict, dict, dict]:
    """Each project's annotations, live task ids and labeling config."""
    return pulling.fetch(client, project_ids)


@task(name="label-studio-count-done", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=5)
def count_done(client: LabelStudioClient, project_id: int) -> waiting.Progress:
    return waiting.count_done(client, project_id)


@flow(name="annotate-push", persist_result=True)
def annotate_push(params: AnnotatePushParams) -> dict[str, Any]:
    """Select items (read), send them in one bulk import, record the tasks (one short write)."""
    path = params.db_path()  # a missing warehouse fails before Label Studio is asked anything
    client = label_studio(params)
    req = params.request()
    with db.connect(path) as con:
        tasks = push.plan_push(con, req.kind, req.round, req.sample, req.strategy, req.seed, req.audit, req.origins)
    title = push.project_title(req.round, req.kind)
    if not tasks:
        return asdict(push.PushResult(push.configure_only(client, req), title, 0, 0, 0, 0))
    project_id, placed, recovered = send_tasks(client, req, tasks)
    with db.connect(path) as con:
        added = push.record(con, placed)
    get_run_logger().info("pushed %d tasks to project %s (%r)", len(placed), project_id, title)
    return asdict(push.PushResult(project_id, title, len(tasks), len(tasks) - recovered, recovered, added))


@flow(name="annotate-pull", persist_result=True)
def annotate_pull(params: AnnotatePullParams) -> dict[str, Any]:
    """Export annotations, validate and map them, write them in one transaction, then the agreement report."""
    path = params.db_path()
    client = label_studio(params)
    with db.connect(path) as con:
        sent = pulling.load_sent(con, params.round)
        item_ids = sorted({i for t in sent for i in t.item_ids})
        known = {r[0] for r in con.execute(db.query("annotation_known_responses"), {"ids": item_ids}).fetchall()}
    projects = sorted({t.project_id for t in sent})
    exported, live, label_configs = export_projects(client, projects)
    plan = pulling.collect(sent, exported, live, known, label_configs)
    with db.connect(path) as con:
        written = pulling.store(con, plan)
        if params.report:
            agreement.store(con, agreement.report(*agreement.collect(con, params.round)), params.round)
    summary = pulling.PullSummary.of(projects, plan, written)
    for s in plan.skipped:
        get_run_logger().warning("skipped annotation %s on task %s: %s", s.annotation_id, s.task_id, s.reason)
    return summary.as_dict()


def round_project_id(client: LabelStudioClient, round_id: str, kind: str) -> int:
    """The Label Studio project of a round and feedback kind (created on first use; its questions kept)."""
    return push.project_for(client, round_id, kind).id


@flow(name="wait-for-annotations", persist_result=True)
def wait_for_annotations(params: WaitParams) -> Any:
    """Return at once when the quota is met; otherwise suspend (or pause) until resumed with ``QuotaReached``.

    On timeout (pause mode) the run ends Completed with a message saying the quota was not met; rerun it to
    keep waiting. A suspended run has no process left to do that: once its timeout has passed the Prefect server
    marks it Failed ("The flow was paused and never resumed.") and refuses to resume it; rerun it too.
    """
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    client = label_studio(params)
    project_id = round_project_id(client, params.round, params.kind)
    progress = count_done(client, project_id)
    if waiting.quota_met(progress.done, params.quota):
        return {"status": "quota_met", "project_id": project_id, "done": progress.done, "total": progress.total}
    get_run_logger().info("waiting for %d annotated tasks in project %d (%d done)", params.quota, project_id,
                          progress.done)
    try:
        if params.mode == "suspend":
            got = suspend_flow_run(wait_for_input=QuotaReached, timeout=params.timeout_s, key="annotation-quota")
        else:
            got = pause_flow_run(wait_for_input=QuotaReached, timeout=params.timeout_s,
                                 poll_interval=params.poll_interval_s, key="annotation-quota")
    except FlowPauseTimeout:
        _leave_expired_pause()
        result = {"status": "timeout", "project_id": project_id, "done": progress.done, "quota": params.quota}
        return Completed(message=f"quota of {params.quota} not met within {params.timeout_s} s "
                                 f"({progress.done} done); rerun to keep waiting", data=result)
    progress = count_done(client, project_id)
    return {"status": "resumed", "project_id": project_id, "reported_done": got.done, "done": progress.done,
            "total": progress.total}


def _leave_expired_pause() -> None:
    """Force the current run from its expired Paused state back to Running, so it can finish Completed with a
    message instead of the server failing it ("completed and never resumed")."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.states import Running

    context = FlowRunContext.get()
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(message="stopped waiting: pause timed out"), force=True)


def resume_waiting_run(flow_run_id: UUID, done: int, project_id: int) -> bool:
    """Resume a waiting run with ``QuotaReached`` input. A run that is no longer paused (resumed already,
    finished, or failed after its timeout) is logged and False is returned, so a resumer never fails on it."""
    from prefect.exceptions import FlowPauseTimeout, MissingContextError, NotPausedError
    from prefect.flow_runs import resume_flow_run

    try:
        resume_flow_run(flow_run_id, run_input={"done": done, "project_id": project_id})
    except (NotPausedError, FlowPauseTimeout) as exc:
        try:  # in the checking flow's run log when there is one (the webhook thread has none)
            log = get_run_logger()
        except MissingContextError:
            log = logging.getLogger(__name__)
        log.warning("flow run %s is not waiting any more: %s", flow_run_id, exc)
        return False
    return True


def quota_resumer(flow_run_id: UUID, quota: int, project_id: int | None = None):
    """A ``WebhookReceiver`` ``on_event`` callback that resumes the waiting run once the quota is reached."""
    fired = threading.Event()

    def on_event(project: int, counts: dict[str, int]) -> None:
        done = counts.get("ANNOTATION_CREATED", 0)
        if (project_id is None or project == project_id) and waiting.quota_met(done, quota) and not fired.is_set():
            fired.set()
            resume_waiting_run(flow_run_id, done, project)

    return on_event


class CheckQuotaParams(LabelStudioParams):
    flow_run_id: UUID = Field(..., description="The waiting wait-for-annotations run.")
    round: str = Field(..., min_length=1)
    kind: Literal["pairwise", "ranking", "binary", "step", "correction"] = Field(...)
    quota: int = Field(..., ge=1)


@flow(name="check-annotation-quota", persist_result=True)
def check_annotation_quota(params: CheckQuotaParams) -> dict[str, Any]:
    """Polling resumer (schedule it): resume the waiting run when the project's quota is met.

    A waiting run that is no longer paused gives ``resumed`` False (and a warning), not a failed check.
    """
    client = label_studio(params)
    project_id = round_project_id(client, params.round, params.kind)
    progress = count_done(client, project_id)
    resumed = (waiting.quota_met(progress.done, params.quota)
               and resume_waiting_run(params.flow_run_id, progress.done, project_id))
    return {"project_id": project_id, "done": progress.done, "quota": params.quota, "resumed": resumed}
