"""Waiting for annotators as a real deployment: ``wait-for-annotations`` served against a real ``prefect server``
and a real Label Studio. The run suspends (its process exits), annotators submit, the polling resumer
``check-annotation-quota`` resumes it at the quota, and the rescheduled run completes; a run nobody resumes
stops at its timeout."""

from __future__ import annotations

import secrets
import time
from uuid import UUID

import pytest

from annotation import configs, push
from annotation.client import connect
from flows.annotate import CheckQuotaParams, check_annotation_quota
from tests.fixtures_annotation import pref
from tests.fixtures_prefect_ops import (
    PrefectServer,
    prefect_server,  # noqa: F401 - fixture
    start_python,
    stop_all,
    wait_for,
)

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]
SERVE_CODE = "from flows.serve import serve_registered; serve_registered(only=('wait-for-annotations',))"


def _run(run_id: UUID):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, request, tmp_path_factory):  # noqa: F811
    """The wait-for-annotations deployment served by a child process; the token sits in a Secret block."""
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    log = tmp_path_factory.mktemp("serve-wait") / "serve.log"
    proc = start_python(SERVE_CODE, prefect_server.env(), log)
    try:  # Label Studio starts while the child imports and registers its deployment
        label_studio = request.getfixturevalue("label_studio")
    except BaseException:
        stop_all([proc])
        raise
    block = f"ls-token-{secrets.token_hex(3)}"
    Secret(value=label_studio.token).save(block)

    def deployment():
        with get_client(sync_client=True) as client:
            try:
                return client.read_deployment_by_name("wait-for-annotations/alignloop")
            except ObjectNotFound:
                return None

    try:
        yield wait_for(deployment, 60, "served deployment wait-for-annotations/alignloop", [proc], log), block, log
    finally:
        stop_all([proc])
        _drain_prefect_workers()


def _drain_prefect_workers() -> None:
    """Send this process's queued logs and events to the real server while it still runs, and stop the workers.

    The flows this module runs in-process (``check-annotation-quota``) start Prefect's log and event workers bound
    to this server; left running they would later hang the session's test harness trying to reach it."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def test_suspended_deployment_run_resumes_at_the_quota_and_times_out_cleanly(served, label_studio, tmp_path):
    from prefect.client.orchestration import get_client

    deployment, block, log = served
    admin = connect(label_studio.url, label_studio.token)
    common = {"label_studio_url": label_studio.url, "token_secret": block, "db": str(tmp_path / "w.duckdb")}
    project = admin.get_or_create_project(push.project_title("dpl1", "pairwise"), configs.config_for("pairwise"))
    task_ids = admin.import_tasks(project.id, [configs.pairwise_task("p", "a", f"b{i}") for i in range(3)])
    start = time.monotonic()
    with get_client(sync_client=True) as client:  # what the UI's Run button does
        waiting = client.create_flow_run_from_deployment(deployment.id, parameters={"params": {
            "round": "dpl1", "kind": "pairwise", "quota": 2, "timeout_s": 120, **common}})
        # nobody annotates this one: it stops when its 3 s are up
        lonely = client.create_flow_run_from_deployment(deployment.id, parameters={"params": {
            "round": "dpl2", "kind": "binary", "quota": 1, "timeout_s": 3, **common}})

    # suspended: Paused with a reschedule (the run's process has exited and holds nothing)
    paused = wait_for(lambda: (r := _run(waiting.id)).state.is_paused() and r, 60, "the run to suspend", log=log)
    assert paused.state.state_details.pause_reschedule and paused.state.state_details.pause_key == "annotation-quota"
    check = CheckQuotaParams(flow_run_id=waiting.id, round="dpl1", kind="pairwise", quota=2, **common)
    admin.create_annotation(task_ids[0], pref("A"))
    assert check_annotation_quota(check)["resumed"] is False  # one of two: it keeps waiting
    assert _run(waiting.id).state.is_paused()
    admin.create_annotation(task_ids[1], pref("B"))
    assert check_annotation_quota(check) == {"project_id": project.id, "done": 2, "quota": 2, "resumed": True}

    done = wait_for(lambda: (r := _run(waiting.id)).state.is_final() and r, 60, "the resumed run to finish", log=log)
    assert done.state.is_completed(), f"{done.state.type}: {done.state.message}"
    with get_client(sync_client=True) as client:  # its process exited at the suspension; a new one finished it
        states = [st.name for st in sorted(client.read_flow_run_states(waiting.id), key=lambda st: st.timestamp)]
    assert states[states.index("Suspended"):] == ["Suspended", "Resuming", "Pending", "Submitting", "Running",
                                                  "Completed"]
    assert done.state.result() == {"status": "quota_met", "project_id": project.id, "done": 2, "total": 3}

    # the server fails a suspended run nobody resumed once its timeout has passed; a late resume is refused
    over = wait_for(lambda: (r := _run(lonely.id)).state.is_final() and r, 30, "the lonely run to time out", log=log)
    assert over.state.is_failed() and over.state.message == "The flow was paused and never resumed."
    elapsed = time.monotonic() - start
    for finished in (lonely.id, waiting.id):  # the poller reports a run that no longer waits instead of failing
        assert check_annotation_quota(check.model_copy(update={"flow_run_id": finished}))["resumed"] is False
    assert _run(lonely.id).state.is_failed() and _run(waiting.id).state.is_completed()
    print(f"\ntrigger -> resumed run completed and timed-out run stopped in {elapsed:.1f} s")
