"""Waiting for annotators as a real deployment: ``wait-for-annotations`` served against a real ``prefect server``
and a real Label Studio. The run suspends (its process exits), annotators submit, the polling resumer
``check-annotation-quota`` resumes it at the quota, and the rescheduled run completes; a run nobody resumes
stops at its timeout."""

from __future__ import annotations

import time

import pytest

from alignloop.annotation import configs, push
from alignloop.annotation.client import connect
from alignloop.flows.annotate import CheckQuotaParams, check_annotation_quota
from tests.fixtures_annotation import pref
from tests.fixtures_prefect_ops import (
    PrefectServer,
    prefect_server,  # noqa: F401 - fixture
    read_run,
    save_secret,
    served,
    state_names,
    wait_for_state,
)

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


@pytest.fixture(scope="module")
def served_wait(prefect_server: PrefectServer, request, tmp_path_factory):  # noqa: F811
    """The wait-for-annotations deployment served by a child process; the token sits in a Secret block."""
    log = tmp_path_factory.mktemp("serve-wait") / "serve.log"
    # Label Studio starts while the child imports and registers its deployment
    with served(prefect_server, ("wait-for-annotations",), log, lambda: request.getfixturevalue("label_studio")
                ) as (deployments, label_studio):
        yield deployments["wait-for-annotations"], save_secret(label_studio.token), log


def test_suspended_deployment_run_resumes_at_the_quota_and_times_out_cleanly(served_wait, label_studio, tmp_path):
    from prefect.client.orchestration import get_client

    deployment, block, log = served_wait
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
    paused = wait_for_state(waiting.id, lambda st: st.is_paused(), 60, "the run to suspend", log)
    assert paused.state.state_details.pause_reschedule and paused.state.state_details.pause_key == "annotation-quota"
    check = CheckQuotaParams(flow_run_id=waiting.id, round="dpl1", kind="pairwise", quota=2, **common)
    admin.create_annotation(task_ids[0], pref("A"))
    assert check_annotation_quota(check)["resumed"] is False  # one of two: it keeps waiting
    assert read_run(waiting.id).state.is_paused()
    admin.create_annotation(task_ids[1], pref("B"))
    assert check_annotation_quota(check) == {"project_id": project.id, "done": 2, "quota": 2, "resumed": True}

    done = wait_for_state(waiting.id, lambda st: st.is_final(), 60, "the resumed run to finish", log)
    assert done.state.is_completed(), f"{done.state.type}: {done.state.message}"
    states = state_names(waiting.id)  # its process exited at the suspension; a new one finished it
    assert states[states.index("Suspended"):] == ["Suspended", "Resuming", "Pending", "Submitting", "Running",
                                                  "Completed"]
    assert done.state.result() == {"status": "quota_met", "project_id": project.id, "done": 2, "total": 3}

    # the server fails a suspended run nobody resumed once its timeout has passed; a late resume is refused
    over = wait_for_state(lonely.id, lambda st: st.is_final(), 30, "the lonely run to time out", log)
    assert over.state.is_failed() and over.state.message == "The flow was paused and never resumed."
    elapsed = time.monotonic() - start
    for finished in (lonely.id, waiting.id):  # the poller reports a run that no longer waits instead of failing
        assert check_annotation_quota(check.model_copy(update={"flow_run_id": finished}))["resumed"] is False
    assert read_run(lonely.id).state.is_failed() and read_run(waiting.id).state.is_completed()
    print(f"\ntrigger -> resumed run completed and timed-out run stopped in {elapsed:.1f} s")
