"""Waiting for people: count finished tasks (polling) or receive Label Studio webhooks.

    with WebhookReceiver(secret, on_event=lambda project, counts: ...) as hook:
        client.add_webhook(project_id, hook.url, headers=hook.headers())

Label Studio only delivers webhooks to local addresses when its server runs with
``SSRF_PROTECTION_ENABLED=false``; ``annotation.server`` sets that for the servers it starts.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from alignloop.annotation.client import LabelStudioClient

logger = logging.getLogger(__name__)

SECRET_HEADER = "X-Alignloop-Secret"
COUNTED_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


@dataclass(frozen=True)
class Progress:
    project_id: int
    done: int
    """Tasks with at least one annotation."""
    total: int


def count_done(client: LabelStudioClient, project_id: int) -> Progress:
    """Poll Label Studio: how many of a project's tasks have the annotations they want (one, or the project's
    overlap: as many annotators as it asks for)."""
    want = client.project(project_id).overlap
    tasks = client.list_tasks(project_id)
    return Progress(project_id, sum(t.total_annotations >= want for t in tasks), len(tasks))


def quota_met(done: int, quota: int) -> bool:
    """True when ``done`` reaches ``quota`` (a quota of 0 or less is met at once)."""
    return done >= quota


def poll_until_quota(client: LabelStudioClient, project_id: int, quota: int, timeout_s: float, interval_s: float,
                     done: int = 0) -> int:
    """Poll the project every ``interval_s`` until ``quota`` tasks are annotated or ``timeout_s`` has passed;
    the last count (below ``quota`` on timeout). ``done`` is the count already known (no first poll)."""
    deadline = time.monotonic() + timeout_s
    while not quota_met(done, quota) and time.monotonic() < deadline:
        time.sleep(min(interval_s, max(deadline - time.monotonic(), 0)))
        done = count_done(client, project_id).done
    return done


def _project_of(body: dict[str, Any]) -> int | None:
    project = body.get("project")
    if isinstance(project, dict) and project.get("id") is not None:
        return int(project["id"])
    task = body.get("task")
    if isinstance(task, dict) and task.get("project") is not None:
        return int(task["project"])
    return None


class WebhookReceiver:
    """A tiny HTTP receiver on 127.0.0.1 that counts ANNOTATION_CREATED/UPDATED events per project.

    Requests without the shared secret in ``X-Alignloop-Secret`` get 401 and are not counted.
    ``on_event(project_id, counts)`` runs in the receiver's thread after each counted event; ``counts`` maps
    action -> number of events seen for that project.
    """

    def __init__(self, secret: str, on_event: Callable[[int, dict[str, int]], None] | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        if len(secret) < 16:
            raise ValueError("use a webhook secret of at least 16 characters")
        self._secret = secret
        self._on_event = on_event
        self._lock = threading.Lock()
        self.counts: dict[int, Counter[str]] = {}
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                given = self.headers.get(SECRET_HEADER, "")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not hmac.compare_digest(given.encode(), receiver._secret.encode()):
                    with receiver._lock:
                        receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                try:
                    receiver._handle(json.loads(body or b"{}"))
                except (ValueError, TypeError) as exc:
                    logger.warning("ignored a malformed webhook body: %s", type(exc).__name__)

            def log_message(self, *args: Any) -> None:  # keep request lines out of the logs
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="alignloop-webhooks", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/label-studio"

    def headers(self) -> dict[str, str]:
        """Headers Label Studio must send (pass to ``client.add_webhook(headers=...)``)."""
        return {SECRET_HEADER: self._secret}

    def count(self, project_id: int) -> int:
        """Counted events (created + updated) for a project."""
        with self._lock:
            return sum(self.counts.get(project_id, Counter()).values())

    def _handle(self, body: dict[str, Any]) -> None:
        action = body.get("action")
        project = _project_of(body)
        if action not in COUNTED_ACTIONS or project is None:
            return
        with self._lock:
            counts = self.counts.setdefault(project, Counter())
            counts[action] += 1
            snapshot = dict(counts)
        if self._on_event is not None:
            self._on_event(project, snapshot)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
