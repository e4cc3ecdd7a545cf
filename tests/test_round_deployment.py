"""A human-feedback round as a real deployment: ``round`` served against a real ``prefect server`` and a real Label
Studio. The run pushes its pairs and suspends (its process exits, the warehouse says 'waiting'); annotators label
every task, ``check-annotation-quota`` resumes it, and the rescheduled run goes again from the top: every stage
finds its work stored, the labels are pulled, and the round trains on them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from alignloop.annotation.client import connect
from alignloop.flows.annotate import CheckQuotaParams, check_annotation_quota
from tests.fixtures_prefect_ops import (
    PrefectServer,
    prefect_server,  # noqa: F401 - fixture
    save_secret,
    served,
    state_names,
    wait_for_state,
)
from tests.fixtures_round import PROMPTS, annotate_all, human_round_params, round_project, scalar, seed_human_round

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


def stage_runs(run_id) -> list[str]:
    """Flow names of the run's subflow runs, one per run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
        return [client.read_flow(r.flow_id).name for r in runs]


def task_states(run_id, prefix: str) -> dict[str, str]:
    """Latest state name of each task run of the flow run whose name starts with ``prefix``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return {r.name: r.state.name for r in runs if r.name.startswith(prefix)}


@pytest.fixture(scope="module")
def served_round(prefect_server: PrefectServer, request, tmp_path_factory):  # noqa: F811
    """The round deployment served by a child process, a warehouse of demo prompts and a tiny policy."""
    tmp = tmp_path_factory.mktemp("round-deployment")

    def meanwhile():  # while the child imports and registers the deployment
        return request.getfixturevalue("label_studio"), seed_human_round(tmp)

    with served(prefect_server, ("round",), tmp / "serve.log", meanwhile) as (deployments, (label_studio, policy)):
        yield deployments["round"], label_studio, tmp, policy


def test_suspended_round_resumes_from_the_top_and_trains_on_human_labels(served_round):
    from prefect.client.orchestration import get_client

    deployment, ls, tmp, policy = served_round
    log, w = tmp / "serve.log", tmp / "w.duckdb"
    block = save_secret(ls.token)
    params = human_round_params(tmp, policy, "d1", human_wait="auto", human_timeout_s=300,
                                label_studio_url=ls.url, label_studio_token_secret=block)
    start = time.monotonic()
    with get_client(sync_client=True) as client:  # what the UI's Run button does
        run = client.create_flow_run_from_deployment(deployment.id, parameters={"params": params.model_dump(
            mode="json")})

    # auto under a deployment: suspended (Paused with a reschedule; the run's process has exited)
    paused = wait_for_state(run.id, lambda st: st.is_paused() or st.is_final(), 120, "the round to suspend", log)
    assert paused.state.is_paused(), f"{paused.state.type}: {paused.state.message}"
    assert paused.state.state_details.pause_reschedule and paused.state.state_details.pause_key == "annotation-quota"
    suspended_after = time.monotonic() - start
    assert scalar(w, "SELECT status FROM rounds WHERE id = ?", "d1") == "waiting"
    admin = connect(ls.url, ls.token)
    assert len(admin.list_tasks(round_project(admin, "d1").id)) == PROMPTS
    assert scalar(w, "SELECT count(*) FROM datasets") == 0  # nothing built or trained before the labels

    assert annotate_all(admin, "d1", "A") == PROMPTS
    check = CheckQuotaParams(flow_run_id=run.id, round="d1", kind="pairwise", quota=PROMPTS,
                             label_studio_url=ls.url, token_secret=block, db=str(w))
    assert check_annotation_quota(check)["resumed"] is True

    done = wait_for_state(run.id, lambda st: st.is_final(), 120, "the resumed round to finish", log)
    elapsed = time.monotonic() - start
    assert done.state.is_completed(), f"{done.state.type}: {done.state.message}"
    states = state_names(run.id)  # the suspended process exited; a new one ran the round again and finished it
    assert states[states.index("Suspended"):] == ["Suspended", "Resuming", "Pending", "Submitting", "Running",
                                                  "Completed"]
    # the round's status was written again on resume ('running', then 'done'), not served from the task cache
    assert set(task_states(run.id, "round-status").values()) == {"Completed"}, task_states(run.id, "round-status")
    summary = done.state.result()  # persisted by the served run, read back here
    human = summary["feedback"]["human"]
    assert human["status"] == "labelled" and human["done"] == human["tasks"] == PROMPTS
    # the re-run from the top got the first pass's stage runs back from Prefect (the push included) and ran
    # only what the suspension had not reached: each stage ran once
    assert human["pushed"] == PROMPTS
    assert sorted(stage_runs(run.id)) == ["annotate-pull", "annotate-push", "build-dataset", "evaluate", "generate",
                                          "train"]
    assert human["pulled"]["inserted"].get("comparisons") == PROMPTS
    assert sum(summary["dataset"]["rows"].values()) == PROMPTS
    assert Path(summary["new_policy"]).is_dir()

    # the warehouse: human comparisons for every task, one snapshot and one trained policy, nothing twice
    assert scalar(w, "SELECT count(*) FROM comparisons WHERE source = 'human' AND round_id = ?", "d1") == PROMPTS
    assert scalar(w, "SELECT count(*) FROM datasets WHERE name = ?", "d1-pairs") == 1
    assert scalar(w, "SELECT count(*) FROM training_runs WHERE round_id = ?", "d1") == 1
    assert scalar(w, "SELECT m.uri FROM training_runs t JOIN models m ON m.id = t.output_model_id "
                     "WHERE t.round_id = ?", "d1") == summary["new_policy"]
    assert scalar(w, "SELECT count(*) FROM responses WHERE round_id = ?", "d1") == PROMPTS * params.n
    assert scalar(w, "SELECT count(*) FROM annotation_tasks WHERE round_id = ?", "d1") == PROMPTS
    assert len(admin.list_tasks(round_project(admin, "d1").id)) == PROMPTS
    assert scalar(w, "SELECT status FROM rounds WHERE id = ?", "d1") in ("done", "stopped")
    print(f"\ntrigger -> suspended in {suspended_after:.1f} s; -> resumed round completed in {elapsed:.1f} s")
