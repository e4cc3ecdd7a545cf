"""Real Prefect server fixtures: a ``prefect server`` on a free loopback port with a fresh PREFECT_HOME."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flows.serve import prefect_env, running_server, stop_process

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
