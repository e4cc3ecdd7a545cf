"""Prefect operations against a real server: served deployments, UI-style runs, parameter validation, work pools."""

from __future__ import annotations

import os
import time
from pathlib import Path
from uuid import UUID

import pytest

from alignloop.flows.import_prompts import ImportPromptsParams, import_prompts
from alignloop.flows.serving.limits import GPU_LIMIT, ensure_limits
from alignloop.flows.serving.registry import FLOW_MODULES, FlowModule, deployables, flows_in
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_prefect_ops import (
    PrefectServer,
    prefect_server,  # noqa: F401 - fixture
    start_python,
    stop_all,
    wait_for,
    write_prompts,
)

SERVE_CODE = "from alignloop.flows.serving.serve import serve_registered; serve_registered(only=('import-prompts',))"


def _read_run(run_id: UUID):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _finished(run_id: UUID):
    run = _read_run(run_id)
    return run if run.state and run.state.is_final() else None


def _prompt_count(path: Path) -> int:
    with db.connect(str(path)) as con:
        return con.execute("SELECT count(*) FROM prompts").fetchone()[0]


# ---- no server -------------------------------------------------------------------------------------------------

def test_registry_finds_written_flows_and_skips_missing_modules():
    entries = deployables()
    names = [e.flow.name for e in entries]
    assert names[0] == "import-prompts"
    assert entries[0].entrypoint == "flows/import_prompts.py:import_prompts"
    assert entries[0].full_name == "import-prompts/alignloop"
    assert len(names) == len(set(names))
    assert [FlowModule(m.module) for m in FLOW_MODULES if m.module == "alignloop.flows.round"]  # a known module
    missing = deployables(modules=(FlowModule("alignloop.flows.import_prompts"),
                                   FlowModule("alignloop.flows.not_written_yet")))
    assert [e.flow.name for e in missing] == ["import-prompts"]


def test_registry_propagates_other_import_errors(tmp_path, monkeypatch):
    (tmp_path / "broken_flow_mod.py").write_text("import not_a_real_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="not_a_real_dependency_xyz"):
        deployables(modules=(FlowModule("broken_flow_mod"),))


def test_registry_rejects_unknown_names_and_two_round_schedules():
    with pytest.raises(AlignloopError, match="no registered flow named nope"):
        deployables(only=("nope",))
    with pytest.raises(AlignloopError, match="not both"):
        deployables(round_cron="0 3 * * *", round_interval=60)
    no_round = (FlowModule("alignloop.flows.import_prompts"), FlowModule("alignloop.flows.not_written_round"))
    with pytest.raises(AlignloopError, match="has no flow yet"):
        deployables(round_cron="0 3 * * *", modules=no_round)


def test_cli_registers_commands_and_rejects_bad_round_params():
    import typer
    from typer.testing import CliRunner

    from alignloop.flows.cli import serve as cli_serve

    app = typer.Typer()
    cli_serve.register(app)
    runner = CliRunner()
    assert "--round-cron" in runner.invoke(app, ["serve", "--help"]).output
    assert "--count" in runner.invoke(app, ["workers", "start", "--help"]).output
    bad = runner.invoke(app, ["serve", "--round-params", "[1]"])
    assert bad.exit_code == 2 and "--round-params must be a JSON object" in bad.output


def test_flows_in_ignores_imported_flows():
    import types

    from alignloop.flows import import_prompts as mod

    fake = types.ModuleType("fake_round")
    fake.import_prompts = mod.import_prompts  # a round module importing a stage flow must not re-deploy it
    assert flows_in(fake) == []
    assert [a for a, _ in flows_in(mod)] == ["import_prompts"]


def test_params_validate_like_the_ui_form():
    with pytest.raises(ValueError, match="test_fraction"):
        ImportPromptsParams(path="x.jsonl", test_fraction=2)
    with pytest.raises(ValueError, match="on_error"):
        ImportPromptsParams(path="x.jsonl", on_error="maybe")
    schema = ImportPromptsParams.model_json_schema()
    assert all(p.get("description") for p in schema["properties"].values())


def test_round_form_rejects_a_loss_it_cannot_train():
    from alignloop.flows.round import RoundParams

    assert RoundParams(round="r1", loss="rpo").loss == "rpo"
    with pytest.raises(ValueError, match="unknown loss 'dpoo'; valid names: .*simpo"):
        RoundParams(round="r1", loss="dpoo")
    with pytest.raises(ValueError, match="loss 'kto' is not pairwise"):
        RoundParams(round="r1", loss="kto")


def test_import_prompts_fn_writes_and_is_idempotent(tmp_path):
    src = write_prompts(tmp_path / "p.jsonl", ["what is a cat", "name a colour", "count to three"])
    params = ImportPromptsParams(path=str(src), db=str(tmp_path / "w.duckdb"), test_fraction=0.0)
    first = import_prompts.fn(params)
    again = import_prompts.fn(params)
    assert first["inserted"]["prompts"] == 3
    assert again["inserted"]["prompts"] == 0 and again["already_present"] == 3


# ---- real server -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, tmp_path_factory):  # noqa: F811
    """``serve_registered`` for import-prompts in a child process; stopped before the server."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = start_python(SERVE_CODE, prefect_server.env(), log)

    def deployment():
        with get_client(sync_client=True) as client:
            try:
                return client.read_deployment_by_name("import-prompts/alignloop")
            except ObjectNotFound:
                return None

    try:
        yield wait_for(deployment, 60, "served deployment import-prompts/alignloop", [proc], log), log
    finally:
        stop_all([proc])


@pytest.mark.slow
def test_ui_run_of_served_deployment_completes(prefect_server, served, tmp_path):  # noqa: F811
    from prefect.client.orchestration import get_client

    deployment, log = served
    src = write_prompts(tmp_path / "prompts.jsonl", [f"prompt number {i} about sailing" for i in range(5)])
    warehouse = tmp_path / "w.duckdb"
    params = {"params": {"path": str(src), "db": str(warehouse), "round": "ui", "test_fraction": 0.0}}
    start = time.monotonic()
    with get_client(sync_client=True) as client:  # what the UI's Run button does
        run = client.create_flow_run_from_deployment(deployment.id, parameters=params)
    done = wait_for(lambda: _finished(run.id), 60, "the served run to finish", log=log)
    elapsed = time.monotonic() - start
    assert done.state.is_completed(), f"{done.state.type}: {done.state.message}"
    assert _prompt_count(warehouse) == 5
    summary = done.state.result()  # persisted by the serve process's flow run, read back here
    assert summary["inserted"]["prompts"] == 5 and summary["file"] == str(src)
    print(f"trigger -> completed in {elapsed:.1f} s")


@pytest.mark.slow
def test_bad_parameter_is_rejected_at_creation(served):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    deployment, _ = served
    with get_client(sync_client=True) as client:
        for bad, field in (({"test_fraction": 2}, "test_fraction"), ({"on_error": "maybe"}, "on_error")):
            params = {"params": {"path": "x.jsonl", **bad}}
            with pytest.raises(PrefectHTTPStatusError) as info:
                client.create_flow_run_from_deployment(deployment.id, parameters=params)
            text = info.value.response.text
            assert info.value.response.status_code == 409, text
            assert "Validation failed" in text and field in text, text


@pytest.mark.slow
def test_gpu_limit_exists_with_one_slot(prefect_server):  # noqa: F811
    from prefect.client.orchestration import get_client

    assert ensure_limits() == {GPU_LIMIT: 1}
    assert ensure_limits() == {GPU_LIMIT: 1}  # idempotent
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
    assert limit.limit == 1 and limit.active


SHARD_PROMPTS = 5_000


@pytest.mark.slow
def test_two_process_workers_run_two_imports_in_parallel(prefect_server, tmp_path):  # noqa: F811
    from prefect.client.orchestration import get_client

    from alignloop.flows.serving.deploy import deploy_to_pool, start_workers

    pool = "cpu-test"
    ids = deploy_to_pool(pool, only=("import-prompts",))
    assert list(ids) == ["import-prompts/cpu-test"]
    log = tmp_path / "workers.log"
    with open(log, "ab") as out:
        workers = start_workers(pool, 2, limit=1, api=prefect_server.api, stdout=out,
                                extra_env={"PREFECT_HOME": str(prefect_server.home),
                                           "PREFECT_WORKER_QUERY_SECONDS": "1"})
    try:
        warehouse = tmp_path / "w.duckdb"
        # big enough shards (a few seconds of work each) that two workers visibly run them at the same time
        shards = [write_prompts(tmp_path / f"shard{k}.jsonl",
                                [f"shard {k} prompt {i} about rivers" for i in range(SHARD_PROMPTS)]) for k in range(2)]
        with get_client(sync_client=True) as client:
            runs = [client.create_flow_run_from_deployment(
                ids["import-prompts/cpu-test"],
                parameters={"params": {"path": str(s), "db": str(warehouse), "test_fraction": 0.0}}) for s in shards]
        done = [wait_for(lambda r=r: _finished(r.id), 75, "a pool run to finish", workers, log) for r in runs]
    finally:
        stop_all(workers)
    for run in done:
        assert run.state.is_completed(), f"{run.state.type}: {run.state.message}"
    assert _prompt_count(warehouse) == 2 * SHARD_PROMPTS
    worker_names = {run.labels.get("prefect.worker.name") for run in done}
    assert worker_names == {f"{pool}-1", f"{pool}-2"}, worker_names
    a, b = done
    overlap = a.start_time < b.end_time and b.start_time < a.end_time
    print(f"\nrun A {a.start_time}..{a.end_time}, run B {b.start_time}..{b.end_time}, overlapping: {overlap}")
    if os.environ.get("ALIGNLOOP_STRICT_TIMING") == "1":  # timing depends on how busy the machine is
        assert overlap, "the two runs did not overlap"
    assert a.infrastructure_pid != b.infrastructure_pid


@pytest.mark.slow
def test_image_deployment_loads_flows_by_module_path(prefect_server):  # noqa: F811
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from alignloop.flows.serving.deploy import deploy_to_pool

    # the slice of prefect-docker's job template that matters here (the plugin is not installed in tests)
    template = {"job_configuration": {"image": "{{ image }}", "mem_limit": "{{ mem_limit }}"},
                "variables": {"type": "object", "properties": {"image": {"type": "string"},
                                                                "mem_limit": {"type": "string"}}}}
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="docker-test", type="docker", base_job_template=template))
    ids = deploy_to_pool("docker-test", only=("import-prompts",), image="alignloop:test",
                         job_variables={"mem_limit": "8g"})
    with get_client(sync_client=True) as client:
        dep = client.read_deployment(ids["import-prompts/docker-test"])
    assert dep.entrypoint == "alignloop.flows.import_prompts.import_prompts"
    assert dep.work_pool_name == "docker-test"
    assert dep.job_variables == {"image": "alignloop:test", "mem_limit": "8g"}


def test_round_next_resumes_the_last_round_or_goes_on_after_it(tmp_path):
    """round='next' (what a schedule runs): r1 on a new warehouse, the last round again while it has not finished,
    the one after it once it has, nothing once the stopping rule stopped the iteration."""
    from alignloop.flows.round import RoundParams, next_round
    from alignloop.warehouse.records import Round

    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        db.ensure_round(con, "import")  # made by an import: not a round the flow ran
    params = RoundParams(round="next", policy="previous", initial_policy="base-folder", db=path)
    first = next_round(params)
    assert (first.round, first.parent_round, first.policy) == ("r1", None, "base-folder")

    def ran(name: str, status: str, minute: int, **config) -> None:
        with db.connect(path) as con:
            db.ingest(con, "rounds", [Round(id=name, status=status, config={"round": name, **config})])
            con.execute("UPDATE rounds SET status = $s, updated_at = make_timestamp(2026, 1, 1, 0, $m, 0) "
                        "WHERE id = $id", {"s": status, "m": minute, "id": name})

    ran("r1", "done", 1, policy="base-folder")
    second = next_round(params)
    assert (second.round, second.parent_round, second.policy, second.n) == ("r2", "r1", "previous", params.n)
    ran("r2", "running", 2, policy="previous", parent_round="r1", n=8)  # killed, or waiting for labels
    again = next_round(params)
    assert (again.round, again.parent_round, again.n, again.db) == ("r2", "r1", 8, path)  # its recorded form
    ran("r2", "failed", 3)  # stopped on an error: resumed too, once its cause is fixed
    assert next_round(params).round == "r2"
    ran("r2", "done", 4)
    with db.connect(path) as con:
        db.ensure_round(con, "r3")  # the name is taken (e.g. generated into by hand): skipped
    assert next_round(params).round == "r4"
    ran("r09", "stopped", 5)
    stopped = next_round(params)
    assert stopped["status"] == "iteration_stopped" and "after round r09" in stopped["reason"]
    ran("r09", "done", 6)
    assert next_round(params).round == "r10"


def test_a_scheduled_round_deployment_runs_the_next_round_by_default():
    from alignloop.flows.serving.registry import ROUND_MODULE

    def round_params(**kw):
        return next(e for e in deployables(**kw) if e.module == ROUND_MODULE).parameters

    assert round_params() == {}  # on demand: the UI form starts from the model's defaults
    assert round_params(round_cron="0 3 * * *") == {"params": {"round": "next"}}
    assert round_params(round_interval=3600, round_parameters={"n": 8}) == {"params": {"round": "next", "n": 8}}
    assert round_params(round_parameters={"params": {"round": "r7"}}) == {"params": {"round": "r7"}}
    with pytest.raises(AlignloopError, match="round parameters: unknown parameter 'promts_per_round'; known: round, policy,"):
        deployables(round_cron="0 3 * * *", round_parameters={"promts_per_round": 4})


def test_round_policy_auto_continues_the_parent_round_or_starts_from_the_initial_policy(tmp_path):
    from alignloop.flows.round import RoundParams, resolve_policy

    path = str(tmp_path / "w.duckdb")
    with db.connect(path):
        pass
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    first = RoundParams(round="r1", initial_policy=str(base), db=path)
    assert first.policy == "auto" and resolve_policy.fn(first) == (str(base), str(base))
    with pytest.raises(AlignloopError, match="round 'r1' has no trained policy; run it first"):
        resolve_policy.fn(RoundParams(round="r2", parent_round="r1", initial_policy=str(base), db=path))


def test_a_round_that_fails_says_so_and_next_takes_it_up_again(tmp_path):
    """A round stopped by an error is 'failed' in the warehouse (not left 'running'); 'next' resumes it."""
    from alignloop.flows.round import RoundParams, next_round, round_flow
    from tests.fixtures_generate import add_prompts, build_tiny_model

    path = str(tmp_path / "w.duckdb")
    with db.connect(path):
        pass
    params = RoundParams(initial_policy=str(build_tiny_model(tmp_path / "base")), db=path)
    with pytest.raises(AlignloopError, match=r"no held-out prompts \(split 'test'\) in .* to evaluate on"):
        round_flow(params)  # refused before it starts: nothing recorded
    with db.connect(path) as con:
        assert con.execute("SELECT count(*) FROM rounds").fetchall() == [(0,)]
    add_prompts(path, ["Name a fruit."], split="test")
    with pytest.raises(AlignloopError, match="round r1: no training prompts to sample; import prompts first"):
        round_flow(params)
    with db.connect(path) as con:
        assert con.execute("SELECT id, status FROM rounds").fetchall() == [("r1", "failed")]
    assert next_round(params).round == "r1"
