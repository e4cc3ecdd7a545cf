"""Real Label Studio server: start/stop, configs upload, bulk import, annotations, export, validation."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import httpx
import pytest

from alignloop.annotation import configs
from alignloop.annotation.client import Annotator, LabelStudioClientError, connect
from alignloop.annotation.server import (
    LabelStudioError,
    LabelStudioNotInstalled,
    PortInUseError,
    start_server,
    startup_cause,
)

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


def choice(name: str, to: str, value: str) -> dict:
    return {"from_name": name, "to_name": to, "type": "choices", "value": {"choices": [value]}}


# ------------------------------------------------------------------------------------------ no server needed


def test_missing_executable_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNLOOP_LABEL_STUDIO_BIN", str(tmp_path / "nope" / "label-studio"))
    with pytest.raises(LabelStudioNotInstalled, match="scripts/setup-label-studio"):
        start_server(tmp_path / "data")


SENTRY_3_LOG = """\
Traceback (most recent call last):
  File "/venv/bin/label-studio", line 8, in <module>
    sys.exit(main())
  File "/venv/lib/python3.11/site-packages/sentry_sdk/client.py", line 102, in _get_options
    raise TypeError("Unknown option %r" % (key,))
TypeError: Unknown option 'send_default_pii'
"""


def test_startup_failure_names_its_cause_from_the_log(monkeypatch, tmp_path):
    """A server that dies while starting (sentry-sdk 3 in its venv did) is reported by the log's last
    exception line, on the error's first line, not only as 'did not come up'."""
    fake = tmp_path / "label-studio"
    fake.write_text(f"#!/bin/sh\necho 'Starting Label Studio'\ncat <<'EOF' >&2\n{SENTRY_3_LOG}EOF\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("ALIGNLOOP_LABEL_STUDIO_BIN", str(fake))
    with pytest.raises(LabelStudioError) as err:
        start_server(tmp_path / "data", timeout=30)
    first = str(err.value).splitlines()[0]
    assert "exited with code 1 during start-up" in first
    assert "TypeError: Unknown option 'send_default_pii'" in first


def test_startup_cause_reads_the_last_exception_else_the_last_line():
    assert startup_cause(SENTRY_3_LOG) == "TypeError: Unknown option 'send_default_pii'"
    chained = (
        "Traceback (most recent call last):\n  File x\nValueError: first\n\nDuring handling...\n"
        "Traceback (most recent call last):\n  File y\n    raise ImproperlyConfigured(...)\n"
        "django.core.exceptions.ImproperlyConfigured: no DB\nshutting down\n"
    )
    assert startup_cause(chained) == "django.core.exceptions.ImproperlyConfigured: no DB"
    assert startup_cause("Starting\nport 8080 is busy, giving up\n\n") == "port 8080 is busy, giving up"
    assert startup_cause("") == "(the log is empty)"


def test_connect_without_settings_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(LabelStudioClientError, match="LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"):
        connect()


def test_connect_to_dead_url_names_url_not_token():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        with pytest.raises(LabelStudioClientError) as err:
            connect(f"http://127.0.0.1:{port}", "secret-token-value", retries=1, backoff=0.01)
    assert f"127.0.0.1:{port}" in str(err.value) and "secret-token-value" not in str(err.value)


def test_all_configs_validate_locally():
    for kind in configs.KINDS:
        configs.validate_config(configs.config_for(kind))
    with pytest.raises(configs.ConfigError):
        configs.validate_config("<View><Text name='t' value='$t'/><Choices name='c' toName='missing'/></View>")


def test_validate_result_rules():
    pair = configs.config_for("pairwise")
    assert configs.validate_result("pairwise", pair, [choice("preference", "prompt", "A")]) == []
    assert configs.validate_result("pairwise", pair, [choice("preference", "prompt", "Z")])  # not in config
    assert configs.validate_result("pairwise", pair, []) == ["required control 'preference' is missing"]
    bad_rating = {"from_name": "honesty_b", "to_name": "b", "type": "rating", "value": {"rating": 0}}
    assert configs.validate_result("pairwise", pair, [choice("preference", "prompt", "tie"), bad_rating])

    step = configs.config_for("step")
    data = configs.step_task("2+2*2?", ["2*2=4", "2+4=8", "so 8"])
    first_error = {"from_name": "first_error", "to_name": "question", "type": "number", "value": {"number": 2}}
    good = [choice("step_label_0", "step_0", "positive"), choice("step_label_1", "step_1", "negative"), first_error]
    assert configs.validate_result("step", step, good, data) == []
    missing_step = [choice("step_label_0", "step_0", "positive"), choice("step_label_5", "step_5", "positive")]
    problems = configs.validate_result("step", step, missing_step, data)
    assert any("step index 5" in p for p in problems)
    after_error = good + [choice("step_label_2", "step_2", "positive")]
    assert any("after the first error" in p for p in configs.validate_result("step", step, after_error, data))

    rank = configs.config_for("ranking")
    data = configs.ranking_task("p", [("r1", "x"), ("r2", "y"), ("r3", "z")])
    ranked = {
        "from_name": "ranker",
        "to_name": "items",
        "type": "ranker",
        "value": {"ranker": {"ranker": ["r3", "r1", "r2"]}},
    }
    assert configs.validate_result("ranking", rank, [ranked], data) == []
    ranked["value"]["ranker"]["ranker"] = ["r3", "r1"]
    assert configs.validate_result("ranking", rank, [ranked], data)

    corr = configs.config_for("correction")
    text = {"from_name": "correction", "to_name": "answer", "type": "textarea", "value": {"text": ["  "]}}
    assert configs.validate_result("correction", corr, [text]) == ["correction text is empty"]


# ------------------------------------------------------------------------------------------ real server


def test_health_and_loopback_only(label_studio):
    response = httpx.get(f"{label_studio.url}/health", timeout=5)
    assert response.status_code == 200
    assert label_studio.url.startswith("http://127.0.0.1:")
    assert label_studio.server.is_running()


def test_token_not_in_log(label_studio):
    connect(label_studio.url, label_studio.token)
    assert label_studio.token not in label_studio.server.log_file.read_text(errors="replace")


def test_refuses_busy_port(label_studio, tmp_path):
    with pytest.raises(PortInUseError, match=str(label_studio.server.port)):
        start_server(tmp_path / "other", port=label_studio.server.port)
    assert not any((tmp_path / "other").iterdir())  # refused before anything was started or copied


def test_wrong_token_is_a_one_line_error(label_studio):
    with pytest.raises(LabelStudioClientError, match="HTTP 401") as err:
        connect(label_studio.url, "0" * 40)
    assert "\n" not in str(err.value) and "0" * 40 not in str(err.value)


def test_every_config_uploads_and_project_is_idempotent(label_studio):
    client = connect(label_studio.url, label_studio.token)
    for kind in configs.KINDS:
        project = client.get_or_create_project(f"alignloop test {kind}", configs.config_for(kind))
        again = client.get_or_create_project(f"alignloop test {kind}", configs.config_for(kind))
        assert again.id == project.id


SAMPLE_TASKS = {
    "pairwise": [
        configs.pairwise_task(f"prompt {i}", f"answer A{i}", f"answer B{i}", pair_id=f"p{i}") for i in range(3)
    ],
    "ranking": [configs.ranking_task("rank these", [("r1", "one"), ("r2", "two"), ("r3", "three")], request_id="k1")],
    "binary": [configs.binary_task("hi", "hello!", response_id="b1")],
    "step": [configs.step_task("2+2*2?", ["2*2=4", "2+4=6", "answer 6"], solution_id="s1")],
    "correction": [configs.correction_task("capital of France?", "Lyon", qa_id="c1")],
}


def test_bulk_import_returns_ids_in_order_in_one_request(label_studio):
    client = connect(label_studio.url, label_studio.token)
    project = client.get_or_create_project("alignloop bulk import", configs.config_for("pairwise"))
    tasks = [configs.pairwise_task(f"prompt {i}", "a", "b", pair_id=f"bulk-{i}") for i in range(25)]
    seen: list[str] = []
    hooks = client._http().event_hooks["request"]

    def hook(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.path}")

    hooks.append(hook)
    try:
        ids = client.import_tasks(project.id, tasks)
    finally:
        hooks.remove(hook)
    assert seen == [f"POST /api/projects/{project.id}/import"]
    assert len(ids) == 25 and len(set(ids)) == 25
    by_id = {t.id: t.data for t in client.list_tasks(project.id)}
    assert [by_id[i]["pair_id"] for i in ids] == [f"bulk-{i}" for i in range(25)]


def test_annotators_annotate_and_export(label_studio):
    admin = connect(label_studio.url, label_studio.token)
    # second annotator with its own login and API token (invite-link sign-up)
    alice = admin.create_user("alice@alignloop.local", password="alice-Passw0rd-123")
    assert alice.token and alice.token != label_studio.token
    as_alice = connect(label_studio.url, alice.token)
    assert as_alice.current_user().id == alice.id
    # third annotator without a login: admin attributes annotations to it
    bob = admin.create_user("bob@alignloop.local")

    results = {
        "pairwise": [
            choice("preference", "prompt", "B"),
            {"from_name": "helpfulness_b", "to_name": "b", "type": "rating", "value": {"rating": 5}},
            {"from_name": "rationale", "to_name": "prompt", "type": "textarea", "value": {"text": ["B is right"]}},
        ],
        "ranking": [
            {
                "from_name": "ranker",
                "to_name": "items",
                "type": "ranker",
                "value": {"ranker": {"ranker": ["r2", "r1", "r3"]}},
            }
        ],
        "binary": [choice("thumbs", "response", "good")],
        "step": [
            choice("step_label_0", "step_0", "positive"),
            choice("step_label_1", "step_1", "negative"),
            {"from_name": "first_error", "to_name": "question", "type": "number", "value": {"number": 2}},
        ],
        "correction": [
            {"from_name": "correction", "to_name": "answer", "type": "textarea", "value": {"text": ["Paris"]}}
        ],
    }
    for kind in configs.KINDS:
        config = configs.config_for(kind)
        project = admin.get_or_create_project(f"alignloop annotate {kind}", config)
        ids = admin.import_tasks(project.id, SAMPLE_TASKS[kind])
        assert configs.validate_result(kind, config, results[kind], SAMPLE_TASKS[kind][0]) == []
        alice_ann = as_alice.create_annotation(ids[0], results[kind])
        bob_ann = admin.create_annotation(ids[0], results[kind], completed_by=bob.id)

        exported = admin.export_annotations(project.id)
        by_annotation = {record.annotation_id: record for record in exported}
        assert set(by_annotation) == {alice_ann, bob_ann}
        assert by_annotation[alice_ann].annotator == Annotator(alice.id, "alice@alignloop.local")
        assert by_annotation[bob_ann].annotator == Annotator(bob.id, "bob@alignloop.local")
        for record in exported:
            assert record.task_id == ids[0]
            assert record.task_data == SAMPLE_TASKS[kind][0]
            assert not record.was_cancelled and record.updated_at
            assert configs.validate_result(kind, config, record.result, record.task_data) == []

    # the server stores values the config does not allow; validate_result catches them
    project = admin.get_or_create_project("alignloop annotate pairwise", configs.config_for("pairwise"))
    [task_id] = admin.import_tasks(project.id, [configs.pairwise_task("p", "a", "b", pair_id="invalid")])
    bad = admin.create_annotation(task_id, [choice("preference", "prompt", "Z")])
    record = next(r for r in admin.export_annotations(project.id) if r.annotation_id == bad)
    problems = configs.validate_result("pairwise", configs.config_for("pairwise"), record.result)
    assert problems and "'Z'" in problems[0]


def test_webhook_reaches_local_receiver(label_studio):
    received: list[dict] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"headers": dict(self.headers), "body": json.loads(body or b"{}")})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        admin = connect(label_studio.url, label_studio.token)
        project = admin.get_or_create_project("alignloop webhook", configs.config_for("binary"))
        url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        hook_id = admin.add_webhook(project.id, url, headers={"X-Alignloop": "yes"})
        assert admin.add_webhook(project.id, url, headers={"X-Alignloop": "yes"}) == hook_id
        [task_id] = admin.import_tasks(project.id, [configs.binary_task("hi", "hello", response_id="w1")])
        admin.create_annotation(task_id, [choice("thumbs", "response", "bad")])
        deadline = time.monotonic() + 15
        while (
            not any(r["body"].get("action") == "ANNOTATION_CREATED" for r in received) and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        created = [r for r in received if r["body"].get("action") == "ANNOTATION_CREATED"]
        assert created, f"no ANNOTATION_CREATED webhook; got {[r['body'].get('action') for r in received]}"
        assert created[0]["headers"].get("X-Alignloop") == "yes"
        assert created[0]["body"]["task"]["id"] == task_id
    finally:
        httpd.shutdown()
        httpd.server_close()
