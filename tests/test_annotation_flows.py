"""Annotation flows and CLI against a real Label Studio and the Prefect test harness: push/pull flows with the
token in a Secret block, waiting on a quota (paused run resumed by a webhook; timeout ends cleanly)."""

from __future__ import annotations

import secrets
import socket
import threading
import time

import pytest
from typer.testing import CliRunner

from alignloop.annotation import configs, waiting
from alignloop.annotation.client import connect
from alignloop.flows.annotate import (
    AnnotatePullParams,
    AnnotatePushParams,
    WaitParams,
    annotate_pull,
    annotate_push,
    quota_resumer,
    wait_for_annotations,
)
from alignloop.flows.cli import app
from alignloop.warehouse import db
from tests.fixtures_annotation import choice, pref, seed_round

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


@pytest.fixture
def warehouse(tmp_path):
    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        seed_round(con, "flr1")
    return path


@pytest.fixture
def token_block(label_studio, prefect_harness):
    from prefect.blocks.system import Secret

    name = f"ls-token-{secrets.token_hex(3)}"
    Secret(value=label_studio.token).save(name)
    return name


def test_push_and_pull_flows_take_the_token_from_a_secret_block(label_studio, warehouse, token_block, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    common = {"label_studio_url": label_studio.url, "token_secret": token_block, "db": warehouse}
    pushed = annotate_push(AnnotatePushParams(kind="binary", round="flr1", sample=2, **common))
    assert pushed["imported"] == 2 and pushed["recorded"] == 2
    admin = connect(label_studio.url, label_studio.token)
    for task in admin.list_tasks(pushed["project_id"]):
        admin.create_annotation(task.id, [choice("thumbs", "response", "good")])
    pulled = annotate_pull(AnnotatePullParams(round="flr1", **common))
    assert pulled["inserted"] == {"ratings": 2} and pulled["skipped"] == []
    assert label_studio.token not in repr(pulled) + repr(pushed)
    with db.connect(warehouse) as con:
        n = con.execute("SELECT count(*) FROM evaluations WHERE kind = 'annotation_agreement'").fetchone()[0]
    assert n > 0


def _paused_run_id(timeout: float = 30):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    flt = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=flt)
            if runs:
                return runs[0].id
            time.sleep(0.3)
    pytest.fail("no paused flow run appeared")


def test_wait_for_annotations_is_resumed_by_the_webhook_at_the_quota(label_studio, warehouse, token_block):
    admin = connect(label_studio.url, label_studio.token)
    project = admin.get_or_create_project("alignloop flq1 pairwise", configs.config_for("pairwise"))
    task_ids = admin.import_tasks(project.id, [configs.pairwise_task("p", "a", f"b{i}") for i in range(3)])
    params = WaitParams(round="flq1", kind="pairwise", quota=2, timeout_s=60, mode="pause", poll_interval_s=1,
                        label_studio_url=label_studio.url, token_secret=token_block, db=warehouse)
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", wait_for_annotations(params)), daemon=True)
    thread.start()
    run_id = _paused_run_id()
    with waiting.WebhookReceiver(secrets.token_hex(16), on_event=quota_resumer(run_id, 2, project.id)) as hook:
        admin.add_webhook(project.id, hook.url, headers=hook.headers())
        admin.create_annotation(task_ids[0], pref("A"))
        assert thread.is_alive()  # one of two: still waiting
        admin.create_annotation(task_ids[1], pref("B"))
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert out["result"] == {"status": "resumed", "project_id": project.id, "reported_done": 2, "done": 2, "total": 3}
    # met already: a rerun returns at once without waiting
    again = wait_for_annotations(params.model_copy(update={"mode": "suspend"}))
    assert again["status"] == "quota_met"


def test_wait_for_annotations_times_out_cleanly(label_studio, warehouse, token_block):
    params = WaitParams(round="flq2", kind="binary", quota=5, timeout_s=2, mode="pause", poll_interval_s=1,
                        label_studio_url=label_studio.url, token_secret=token_block, db=warehouse)
    state = wait_for_annotations(params, return_state=True)
    assert state.is_completed() and "not met" in state.message
    assert state.result()["status"] == "timeout"


def test_cli_push_status_and_server_down(label_studio, warehouse, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    runner = CliRunner()
    res = runner.invoke(app, ["annotate", "push", "pairwise", "--round", "flr1", "--sample", "2", "--db", warehouse])
    assert res.exit_code == 0, res.output
    assert "2 tasks imported" in res.output
    res = runner.invoke(app, ["annotate", "status", "--db", warehouse, "--json"])
    assert res.exit_code == 0 and '"done": 0' in res.output and '"total": 2' in res.output
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        monkeypatch.setattr("alignloop.flows.cli.annotate.RETRIES", 1)
        monkeypatch.setattr("alignloop.flows.cli.annotate.BACKOFF", 0.01)
        res = runner.invoke(app, ["annotate", "pull", "--url", dead, "--db", warehouse])
    assert res.exit_code == 2 and dead in res.output and label_studio.token not in res.output


def test_cli_finds_the_server_started_from_the_same_folder(label_studio, tmp_path, monkeypatch):
    """Without LABEL_STUDIO_URL / _API_KEY the commands use the address and token 'annotate server' leaves in
    ./label-studio-data; with neither, one line says what to set or start."""
    from alignloop.flows.cli.annotate import DATA_DIR, TOKEN_FILE, URL_FILE

    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    warehouse = str(tmp_path / "w.duckdb")
    with db.connect(warehouse) as con:
        seed_round(con, "cwd1")  # a round no other test sends: the project is new
    runner = CliRunner()
    res = runner.invoke(app, ["annotate", "push", "pairwise", "--round", "cwd1", "--sample", "1", "--db", warehouse])
    assert res.exit_code == 2 and "LABEL_STUDIO_URL" in res.output and "alignloop annotate server" in res.output
    DATA_DIR.mkdir()
    (DATA_DIR / URL_FILE).write_text(label_studio.url)
    (DATA_DIR / TOKEN_FILE).write_text(label_studio.token)
    res = runner.invoke(app, ["annotate", "push", "pairwise", "--round", "cwd1", "--sample", "1", "--db", warehouse])
    assert res.exit_code == 0 and "1 tasks imported" in res.output, res.output
    res = runner.invoke(app, ["annotate", "status", "--db", warehouse, "--json"])
    assert res.exit_code == 0 and '"total": 1' in res.output, res.output
    with socket.socket() as sock:  # the server stopped without removing its address file
        sock.bind(("127.0.0.1", 0))
        (DATA_DIR / URL_FILE).write_text(f"http://127.0.0.1:{sock.getsockname()[1]}")
        monkeypatch.setattr("alignloop.flows.cli.annotate.RETRIES", 1)
        monkeypatch.setattr("alignloop.flows.cli.annotate.BACKOFF", 0.01)
        res = runner.invoke(app, ["annotate", "pull", "--db", warehouse])
    assert res.exit_code == 2 and "still running?" in res.output and label_studio.token not in res.output


def test_annotate_server_serves_the_commands_of_its_folder_and_cleans_up(label_studio_template, tmp_path):
    """`alignloop annotate server` takes port 8080 where it is free, leaves its address for the commands run from
    the same folder (no settings needed) and removes it when stopped."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from alignloop.annotation.server import _copy_template
    from alignloop.flows.cli.annotate import DATA_DIR, DEFAULT_PORT, URL_FILE

    (tmp_path / DATA_DIR).mkdir()
    _copy_template(label_studio_template, tmp_path / DATA_DIR)  # a migrated database: starts in seconds
    with db.connect(tmp_path / "w.duckdb") as con:
        seed_round(con, "srv1")
    cli = str(Path(sys.executable).with_name("alignloop"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    with socket.socket() as probe:
        port_8080_free = probe.connect_ex(("127.0.0.1", DEFAULT_PORT)) != 0
    server = subprocess.Popen([cli, "annotate", "server"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url_file = tmp_path / DATA_DIR / URL_FILE
    try:
        deadline = time.monotonic() + 120
        while not url_file.exists() and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert url_file.exists(), server.stdout.read() if server.poll() is not None else "no address after 120 s"
        assert not port_8080_free or url_file.read_text() == f"http://127.0.0.1:{DEFAULT_PORT}"
        pushed = subprocess.run([cli, "annotate", "push", "pairwise", "--round", "srv1", "--sample", "1", "--db",
                                 "w.duckdb"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                                check=False)
        assert pushed.returncode == 0 and "1 tasks imported" in pushed.stdout, pushed.stdout + pushed.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    assert "stopping Label Studio" in out and not url_file.exists(), out
