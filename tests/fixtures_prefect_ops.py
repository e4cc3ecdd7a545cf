"""Real Prefect server fixtures: a ``prefect server`` on a free loopback port with a fresh PREFECT_HOME."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from alignloop.flows.serving.registry import DEPLOYMENT_NAME
from alignloop.flows.serving.serve import prefect_env, running_server, stop_process

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PrefectServer:
    api: str
    home: Path
    """PREFECT_HOME of the server and of every process the tests start (results land in home/storage)."""

    def env(self, **extra: str) -> dict[str, str]:
        return prefect_env(api=self.api, home=self.home, extra=extra)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real server; this test process's client points at it while the module runs."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    with (running_server(home=home, timeout=90, log=home / "server.log") as api,
          temporary_settings(updates={PREFECT_API_URL: api, PREFECT_HOME: home})):
        yield PrefectServer(api, home)


def write_prompts(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    return path


def start_python(code: str, env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
    """Run ``python -c code`` from the repository root with its output in ``log``."""
    out = open(log, "ab")  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(predicate, timeout: float, what: str, procs: list[subprocess.Popen[Any]] = (), log: Path | None = None):
    """Poll ``predicate()`` until it returns a truthy value; fail naming ``what`` (and a child that died)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                tail = log.read_text()[-3000:] if log and log.exists() else ""
                pytest.fail(f"{what}: child exited with {p.returncode}\n{tail}")
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def stop_all(procs: list[subprocess.Popen[Any]]) -> None:
    for p in procs:
        stop_process(p, timeout=15)


def read_run(run_id: UUID):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def state_names(run_id: UUID) -> list[str]:
    """The run's states in the order they were set."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [st.name for st in sorted(client.read_flow_run_states(run_id), key=lambda st: st.timestamp)]


def wait_for_state(run_id: UUID, reached: Callable[[Any], bool], timeout: float, what: str, log: Path | None = None):
    """Poll the run until ``reached(state)``; returns the run."""
    return wait_for(lambda: (r := read_run(run_id)).state and reached(r.state) and r, timeout, what, log=log)


def read_deployment(name: str):
    """``<flow>/<deployment>``, or None while it is not registered."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def save_secret(value: str, prefix: str = "ls-token") -> str:
    """A Prefect Secret block holding ``value``; returns its (random) name."""
    from prefect.blocks.system import Secret

    name = f"{prefix}-{secrets.token_hex(3)}"
    Secret(value=value).save(name)
    return name


@contextmanager
def served(server: PrefectServer, flow_names: tuple[str, ...], log: Path, meanwhile: Callable[[], Any] = lambda: None
           ) -> Iterator[tuple[dict[str, Any], Any]]:
    """``serve_registered(only=flow_names)`` in a child process; yields ({flow name: deployment}, ``meanwhile()``).

    ``meanwhile`` runs while the child imports and registers (start another server there). On exit the child
    stops, then this process's Prefect workers are drained while the server still runs."""
    proc = start_python(f"from alignloop.flows.serving.serve import serve_registered; serve_registered(only={flow_names!r})",
                        server.env(), log)
    try:
        extra = meanwhile()
        deployments = {name: wait_for(lambda name=name: read_deployment(f"{name}/{DEPLOYMENT_NAME}"), 60,
                                      f"served deployment {name}/{DEPLOYMENT_NAME}", [proc], log)
                       for name in flow_names}
        yield deployments, extra
    finally:
        stop_all([proc])
        drain_prefect_workers()


def drain_prefect_workers() -> None:
    """Send this process's queued logs and events to the real server while it still runs, and stop the workers.

    Flows run in-process against the real server (``check-annotation-quota``) start Prefect's log and event
    workers bound to it; left running they would later hang the session's test harness trying to reach it."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
