"""A local Prefect server and one process serving every registered flow: ``alignloop server`` / ``alignloop serve``.

    python -c "from alignloop.flows.serving.serve import serve_registered; serve_registered()"   # needs PREFECT_API_URL
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from alignloop.warehouse.errors import AlignloopError

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 4200
DEFAULT_POLL_SECONDS = 2
"""Runner poll period for ``alignloop serve`` (Prefect's default of 10 s makes a UI click feel dead)."""


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def api_url(port: int, host: str = LOOPBACK) -> str:
    return f"http://{host}:{port}/api"


def prefect_env(api: str | None = None, home: Path | None = None, extra: Mapping[str, str] | None = None
                ) -> dict[str, str]:
    """This process's environment plus what a Prefect child process needs (no telemetry, our API, our home)."""
    env = dict(os.environ)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if api is not None:
        env["PREFECT_API_URL"] = api
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    env.update(extra or {})
    return env


def wait_healthy(api: str, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None) -> float:
    """Poll ``{api}/health`` until it answers 200; returns the seconds waited.

    Raises:
        AlignloopError: the server process exited, or ``timeout`` passed.
    """
    start = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise AlignloopError(f"prefect server exited with code {proc.returncode} before {api} answered")
        try:
            if httpx.get(f"{api}/health", timeout=2.0).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        if time.monotonic() - start > timeout:
            raise AlignloopError(f"prefect server at {api} did not answer /health within {timeout:.0f} s")
        time.sleep(0.25)


def start_server(port: int = DEFAULT_PORT, home: Path | None = None, stdout: IO[Any] | int | None = None
                 ) -> subprocess.Popen[Any]:
    """Start ``prefect server start --host 127.0.0.1 --port PORT`` (does not wait; see :func:`wait_healthy`).

    Args:
        home: PREFECT_HOME for the server (its sqlite database lives there); default: the user's.
        stdout: where the server's output goes (stderr joins it); default: inherited.
    """
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(port)]
    return subprocess.Popen(cmd, env=prefect_env(home=home), stdout=stdout, stderr=subprocess.STDOUT,
                            start_new_session=True)  # Ctrl-C in the terminal reaches us, and we stop it in order


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20.0) -> int:
    """SIGTERM, wait, then SIGKILL (its process group if it leads one); returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if os.getpgid(proc.pid) == proc.pid:  # started with start_new_session: the group is its own
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait(5)
    return proc.returncode


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C inside the block, so ``kill PID`` also stops the children we started."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def running_server(port: int | None = None, home: Path | None = None, timeout: float = 60.0,
                   log: Path | None = None) -> Iterator[str]:
    """A real Prefect server for the duration of the block; yields its API URL.

    Stop every process that talks to it (``serve``, workers) before the block ends: a serve process whose
    server is gone hangs on SIGTERM.
    """
    port = port or free_port()
    with open(log, "ab") if log else open(os.devnull, "wb") as out:
        proc = start_server(port, home, stdout=out)
        try:
            wait_healthy(api_url(port), timeout, proc)
            yield api_url(port)
        finally:
            stop_process(proc)


def run_server(port: int = DEFAULT_PORT, home: Path | None = None, timeout: float = 60.0,
               say: Callable[[str], None] = print) -> int:
    """Foreground server for ``alignloop server``: tell the UI address, stop the server on Ctrl-C or SIGTERM.

    Returns:
        0 after Ctrl-C, else the server's own exit code.
    """
    proc = start_server(port, home, stdout=subprocess.DEVNULL)
    try:
        with sigterm_as_interrupt():
            waited = wait_healthy(api_url(port), timeout, proc)
            say(f"Prefect server ready in {waited:.1f} s\n  UI:  http://{LOOPBACK}:{port}\n  API: {api_url(port)}"
                f"  (export PREFECT_API_URL={api_url(port)})\nCtrl-C stops it.")
            return proc.wait()
    except KeyboardInterrupt:
        say("stopping the Prefect server")
        return 0
    finally:
        stop_process(proc)


def serve_registered(only: tuple[str, ...] = (), round_cron: str | None = None, round_interval: float | None = None,
                     round_parameters: dict[str, Any] | None = None, limit: int | None = None) -> None:
    """Serve a deployment for each registered flow in this process until interrupted.

    Creates the global concurrency limits first. Flow runs start as subprocesses of this one; the runner polls
    every PREFECT_RUNNER_POLL_FREQUENCY seconds (default here: 2).

    Args:
        only: serve just these flow names.
        round_cron: cron schedule of the round flow.
        round_interval: interval schedule of the round flow, in seconds.
        round_parameters: default parameters of the round deployment.
        limit: most flow runs at the same time (None: no limit).
    """
    from prefect import serve
    from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY, temporary_settings

    from alignloop.flows.serving.limits import ensure_limits
    from alignloop.flows.serving.registry import deployables

    entries = deployables(only, round_cron, round_interval, round_parameters)
    if not entries:
        raise AlignloopError("no flow modules found to serve")
    ensure_limits()
    deployments = [e.flow.to_deployment(name=e.deployment, parameters=e.parameters, **e.schedule_kwargs())
                   for e in entries]
    # Prefect reads settings once at import, so a default set in os.environ now would be ignored.
    poll = {} if "PREFECT_RUNNER_POLL_FREQUENCY" in os.environ else {PREFECT_RUNNER_POLL_FREQUENCY: DEFAULT_POLL_SECONDS}
    with temporary_settings(updates=poll):
        serve(*deployments, limit=limit)
