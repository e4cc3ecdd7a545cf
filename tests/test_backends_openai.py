"""The OpenAI-compatible backend: retries and fallbacks against a scripted local HTTP server, failures against a
closed port, and generation against a real ``transformers serve`` on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import warnings
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from alignloop.pipelines.backends import Sampling, make_backend
from alignloop.pipelines.backends.openai_backend import OpenAIBackend
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_generate import *
from tests.fixtures_generate import user
from tests.fixtures_judge_server import completion, send_json, serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scripted(BaseHTTPRequestHandler):
    """Fails the first ``failures`` requests with 500/429, then answers one choice whatever ``n`` asked for."""

    failures = 0
    requests: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if type(self).failures > 0:
            type(self).failures -= 1
            send_json(self, {"error": {"message": "busy"}}, 500 if type(self).failures % 2 else 429)
            return
        send_json(self, completion(body["model"], [f"answer seed={body.get('seed')}"]))

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    Scripted.failures, Scripted.requests = 0, []
    with serving(Scripted) as url:
        yield url


def test_retries_then_succeeds_and_falls_back_when_n_is_ignored(scripted):
    Scripted.failures = 3
    backend = OpenAIBackend("m", base_url=scripted, api_key="sk-secret", backoff_s=0.01, concurrency=2)
    out = backend.generate([user("hi"), user("yo")], Sampling(n=3, temperature=1.0, max_new_tokens=8))
    assert [len(row) for row in out] == [3, 3] and [c.sample_index for c in out[0]] == [0, 1, 2]
    assert len({c.text for c in out[0]}) == 3  # three distinct requests, three seeds
    assert out[0][0].completion_tokens == 3 and out[0][0].finish_reason == "stop"
    assert len(Scripted.requests) == 3 + 2 + 2 * 2  # 3 failures, 2 first calls with n=3, 4 top-up calls


def test_greedy_asks_once_and_copies(scripted):
    backend = OpenAIBackend("m", base_url=scripted)
    out = backend.generate([user("hi")], Sampling(n=4, max_new_tokens=8))
    assert len(Scripted.requests) == 1 and len({c.text for c in out[0]}) == 1 and len(out[0]) == 4


def test_an_assistant_message_last_is_continued_with_vllms_request_fields(scripted):
    backend = OpenAIBackend("m", base_url=scripted)
    partial = [*user("what is 2 + 3?"), {"role": "assistant", "content": "2 + 3 = 5\n"}]
    backend.generate([user("hi"), partial], Sampling(max_new_tokens=8))
    sent = {json.dumps(r["messages"]): r for r in Scripted.requests}
    fresh, continued = sent[json.dumps(user("hi"))], sent[json.dumps(partial)]
    assert "continue_final_message" not in fresh and "add_generation_prompt" not in fresh
    assert (continued["continue_final_message"], continued["add_generation_prompt"]) == (True, False)


def test_gives_up_with_url_and_cause_but_never_the_key(scripted):
    Scripted.failures = 100
    backend = OpenAIBackend("m", base_url=scripted, api_key="sk-secret-123", max_retries=2, backoff_s=0.01)
    with pytest.raises(AlignloopError) as err:
        backend.generate([user("hi")], Sampling())
    msg = str(err.value)
    assert scripted in msg and "after 3 attempt(s)" in msg and "sk-secret-123" not in msg
    assert "\n" not in msg and "sk-secret-123" not in repr(backend)


def test_connection_refused_is_one_clear_line():
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = make_backend("openai", "m", base_url=url, max_retries=1, backoff_s=0.01)
    with pytest.raises(AlignloopError, match="Connection") as err:
        backend.generate([user("hi")], Sampling())
    assert url in str(err.value)


class Refusing(BaseHTTPRequestHandler):
    """Answers 401 quoting the credentials it was sent (Basic auth, from the URL's user info), as a gateway's error
    body may."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        sent = self.headers.get("Authorization", "").removeprefix("Basic ")
        send_json(self, {"error": {"message": f"bad credentials {base64.b64decode(sent).decode()}"}}, 401)

    def log_message(self, *args):
        pass


def test_credentials_in_the_url_reach_the_endpoint_but_no_message_or_repr():
    """A base URL carrying ``user:key@`` was quoted whole in the give-up message and the repr (then in logs)."""
    url = f"http://alice:s3cr3t-pass@127.0.0.1:{free_port()}/v1"
    backend = make_backend("openai", "m", base_url=url, max_retries=0, backoff_s=0.01)
    with pytest.raises(AlignloopError, match="Connection") as err:
        backend.generate([user("hi")], Sampling())
    shown = url.replace("alice:s3cr3t-pass@", "")
    assert shown in str(err.value) and "s3cr3t" not in str(err.value) and "alice" not in str(err.value)
    assert "s3cr3t" not in repr(backend) and shown in repr(backend)
    with serving(Refusing) as served:
        backend = OpenAIBackend("m", base_url=served.replace("http://", "http://alice:s3cr3t-pass@"), max_retries=0)
        with pytest.raises(AlignloopError) as err:
            backend.generate([user("hi")], Sampling())
    assert "401" in str(err.value) and "bad credentials ***" in str(err.value), str(err.value)


def test_base_url_from_env_or_error(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ALIGNLOOP_OPENAI_BASE_URL", raising=False)
    with pytest.raises(AlignloopError, match="base URL"):
        OpenAIBackend("m")
    monkeypatch.setenv("ALIGNLOOP_OPENAI_BASE_URL", "http://h:1/v1/")
    assert OpenAIBackend("m").base_url == "http://h:1/v1"


def test_no_logprobs_gives_unavailable_scores_and_one_warning(scripted):
    backend = OpenAIBackend("m", base_url=scripted)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        scores = backend.next_token_logprobs([user("a"), user("b")], ["A", "B"])
        backend.next_token_logprobs([user("c")], ["A"])
    assert [str(w.message) for w in record if "no logprobs" in str(w.message)] == [
        f"{scripted} returned no logprobs; verdict-token scores are unavailable"]
    assert all(not s.available and s.logprobs == {"A": None, "B": None} for s in scores)
    assert Scripted.requests[0]["logprobs"] is True and Scripted.requests[0]["max_tokens"] == 1


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory):
    """A real ``transformers serve`` of the tiny model on 127.0.0.1 (CPU, offline)."""
    port = free_port()
    hub = tmp_path_factory.mktemp("hf-hub")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "HF_HOME": str(hub)}
    exe = Path(sys.executable).with_name("transformers")
    proc = subprocess.Popen([str(exe), "serve", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-800:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("transformers serve did not start within 90 s")
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_real_transformers_serve(served, tiny_model_dir):
    backend = OpenAIBackend(str(tiny_model_dir), base_url=served, concurrency=2)
    out = backend.generate([user("hello there"), user("what is two plus two")],
                           Sampling(n=2, temperature=1.0, max_new_tokens=5))
    assert [len(r) for r in out] == [2, 2]
    assert all(c.finish_reason in ("stop", "length") and isinstance(c.text, str) for r in out for c in r)
    assert backend.stats.prompts == 2
    with pytest.warns(UserWarning, match="no logprobs"):
        scores = backend.next_token_logprobs([user("hi")], ["A"])
    assert scores[0].available is False
