"""Manage a local Label Studio server (the human-feedback UI) as a child process.

The Label Studio *server* lives in its own virtualenv (``.venv-ls/`` at the repo root, created by
``bash scripts/setup-label-studio``) because it pins packages that conflict with Prefect. Only the
SDK is installed in the project environment.

Typical use::

    template = ensure_template(Path(".cache/label-studio-template"))   # slow once (~30 s), then reused
    with running_server(tmp_dir, token=my_token, template_dir=template) as server:
        client = connect(server.url, my_token)

Security notes: the server is bound to 127.0.0.1 only, public sign-up is disabled, and the API token
is passed to the child through its environment only; it is never logged or written anywhere except
what Label Studio itself stores in its own data directory (its SQLite database).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

BIN_ENV_VAR = "ALIGNLOOP_LABEL_STUDIO_BIN"
SETUP_HINT = "run `bash scripts/setup-label-studio` to create .venv-ls"
DEFAULT_USERNAME = "admin@alignloop.local"
DEFAULT_PASSWORD = "alignloop-local-admin"
LOG_FILE_NAME = "alignloop-label-studio.log"
_TEMPLATE_MARKER = ".alignloop-template-ready"
# Files Label Studio writes into its data dir that must not be shared between copies of a template.
_TEMPLATE_SKIP = {".env", LOG_FILE_NAME, _TEMPLATE_MARKER}
# Plain (unprefixed) variables Label Studio falls back to via get_env(); an inherited HOST, PORT,
# USERNAME, DEBUG ... from the parent shell would silently change its behaviour.
_PLAIN_ENV_TO_DROP = (
    "HOST",
    "PORT",
    "USERNAME",
    "PASSWORD",
    "USER_TOKEN",
    "DEBUG",
    "LOG_LEVEL",
    "DJANGO_DB",
    "DATABASE_NAME",
    "BASE_DATA_DIR",
    "SECRET_KEY",
    "DJANGO_SETTINGS_MODULE",
    "DISABLE_SIGNUP_WITHOUT_LINK",
    "SSRF_PROTECTION_ENABLED",
    "LATEST_VERSION_CHECK",
    "COLLECT_ANALYTICS",
    "JSON_LOG",
)


class LabelStudioError(RuntimeError):
    """Base error for server management problems."""


class LabelStudioNotInstalled(LabelStudioError):
    """The Label Studio server executable could not be found."""


class PortInUseError(LabelStudioError):
    """The requested port is already taken (Label Studio would silently pick another one)."""


class ServerStartTimeout(LabelStudioError):
    """The server did not answer /health in time."""


@dataclasses.dataclass(frozen=True)
class LabelStudioServer:
    """Handle of a running local server. ``process`` is the ``label-studio`` child (own process group)."""

    url: str
    data_dir: Path
    port: int
    process: subprocess.Popen = dataclasses.field(repr=False, compare=False)

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE_NAME

    def is_running(self) -> bool:
        return self.process.poll() is None


# --------------------------------------------------------------------------------------------------
# executable / ports


def _repo_root() -> Path:
    """The repo root (the directory holding pyproject.toml above this file), else the cwd."""
    here = Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return Path.cwd()


def find_label_studio_executable() -> Path | None:
    """Resolve ``label-studio``: env ALIGNLOOP_LABEL_STUDIO_BIN, ``.venv-ls/bin/label-studio`` in the repo
    root or cwd, then PATH. Returns None when none exists."""
    override = os.environ.get(BIN_ENV_VAR)
    if override:
        path = Path(override).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    for root in dict.fromkeys((_repo_root(), Path.cwd())):
        candidate = root / ".venv-ls" / "bin" / "label-studio"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("label-studio")
    return Path(on_path) if on_path else None


def label_studio_executable() -> Path:
    """Like :func:`find_label_studio_executable` but raises :class:`LabelStudioNotInstalled` with a hint."""
    exe = find_label_studio_executable()
    if exe is None:
        override = os.environ.get(BIN_ENV_VAR)
        where = (
            f"{BIN_ENV_VAR}={override} is not an executable file"
            if override
            else ("no .venv-ls/bin/label-studio and no label-studio on PATH")
        )
        raise LabelStudioNotInstalled(f"Label Studio server not installed ({where}); {SETUP_HINT}")
    return exe


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (picked by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    # Label Studio binds 127.0.0.1 here, but check the wildcard too: something on 0.0.0.0:port would
    # make its own bind fail (and LS would then move to another port without telling us).
    for bind_host in (host, "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((bind_host, port))
            except OSError:
                return False
    return True


# --------------------------------------------------------------------------------------------------
# start / stop


def _child_env(
    data_dir: Path,
    port: int,
    username: str | None,
    password: str | None,
    token: str | None,
    extra_env: dict[str, str] | None,
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABEL_STUDIO_", "HEARTEX_")) and k not in _PLAIN_ENV_TO_DROP
    }
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_DJANGO_DB": "sqlite",
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_PORT": str(port),
            "LABEL_STUDIO_HOST": f"http://127.0.0.1:{port}",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            # webhooks to local receivers (tests, local Prefect flows) are blocked otherwise
            "SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if username is not None:
        env["LABEL_STUDIO_USERNAME"] = username
        env["LABEL_STUDIO_PASSWORD"] = password or ""
        if token is not None:
            env["LABEL_STUDIO_USER_TOKEN"] = token
    if extra_env:
        env.update(extra_env)
    return env


def _copy_template(template_dir: Path, data_dir: Path) -> None:
    for entry in template_dir.iterdir():
        if entry.name in _TEMPLATE_SKIP:
            continue
        target = data_dir / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target)


def _is_empty_dir(path: Path) -> bool:
    return not any(path.iterdir())


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def startup_cause(log_text: str) -> str:
    """What killed a server during start-up, from its log: the exception line that ends the last Python
    traceback (``TypeError: Unknown option 'send_default_pii'``), else the last line that is not blank."""
    lines = [line.rstrip() for line in log_text.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        # a traceback's frames are indented; the first line after them that is not is the exception
        for line in lines[starts[-1] + 1 :]:
            if not line[:1].isspace():
                return line
    return lines[-1].strip() if lines else "(the log is empty)"


def start_server(
    data_dir: Path | str,
    port: int | None = None,
    username: str | None = DEFAULT_USERNAME,
    password: str | None = DEFAULT_PASSWORD,
    token: str | None = None,
    template_dir: Path | str | None = None,
    timeout: float = 120.0,
    extra_env: dict[str, str] | None = None,
) -> LabelStudioServer:
    """Start ``label-studio`` on 127.0.0.1 with its data in ``data_dir`` and wait until /health answers.

    * ``port=None`` picks a free port; an explicit busy port raises :class:`PortInUseError`.
    * ``template_dir`` (see :func:`ensure_template`) is copied into ``data_dir`` when ``data_dir`` is
      empty: start-up drops from ~30 s (migrations) to a few seconds.
    * ``username``/``password``/``token`` create the admin user (and its legacy API token, usable as
      ``Authorization: Token <token>``) when the data dir has no such user yet; on an existing data dir
      they are ignored and the user keeps its old token. ``username=None`` creates no user.
      The token must be longer than 5 characters (Label Studio ignores shorter ones and prints them).
    * stdout/stderr of the server go to ``<data_dir>/alignloop-label-studio.log``.
    """
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = label_studio_executable()
    if token is not None and len(token) <= 5:
        raise ValueError("Label Studio ignores API tokens of 5 characters or fewer; use a longer token")
    if username is not None and not password:
        raise ValueError("a password is required when a username is given")

    if port is None:
        port = free_port()
    elif not port_is_free(port):
        raise PortInUseError(f"port {port} on 127.0.0.1 is already in use; choose another port or pass port=None")

    if template_dir is not None:
        template_dir = Path(template_dir)
        if not (template_dir / _TEMPLATE_MARKER).is_file():
            raise LabelStudioError(f"{template_dir} is not a ready template data dir (use ensure_template)")
        if _is_empty_dir(data_dir):
            _copy_template(template_dir, data_dir)

    url = f"http://127.0.0.1:{port}"
    log_path = data_dir / LOG_FILE_NAME
    cmd = [
        str(exe),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--enable-legacy-api-token",
    ]
    env = _child_env(data_dir, port, username, password, token, extra_env)
    logger.info("starting Label Studio at %s (data dir %s, log %s)", url, data_dir, log_path)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=data_dir,
            start_new_session=True,
        )
    server = LabelStudioServer(url=url, data_dir=data_dir, port=port, process=process)
    try:
        _wait_healthy(server, timeout)
    except BaseException:
        stop_server(server)
        raise
    return server


def _wait_healthy(server: LabelStudioServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while True:
            code = server.process.poll()
            if code is not None:
                try:
                    log_text = server.log_file.read_text(errors="replace")
                except OSError:
                    log_text = ""
                raise LabelStudioError(
                    f"Label Studio exited with code {code} during start-up: {startup_cause(log_text)} "
                    f"(log: {server.log_file})\n{_tail(server.log_file)}"
                )
            try:
                if http.get(f"{server.url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServerStartTimeout(
                    f"Label Studio did not answer {server.url}/health within {timeout:.0f} s; see {server.log_file}"
                )
            time.sleep(0.25)


def stop_server(server: LabelStudioServer, grace: float = 10.0) -> None:
    """SIGTERM the server's whole process group, SIGKILL it after ``grace`` seconds. Idempotent."""
    proc = server.process
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None and pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    elif proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # kill what is left of the group (workers may outlive the main process)
    if pgid is not None and pgid != os.getpgid(0):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@contextlib.contextmanager
def running_server(data_dir: Path | str, **kwargs) -> Iterator[LabelStudioServer]:
    """Context manager around :func:`start_server` / :func:`stop_server` (same keyword arguments)."""
    server = start_server(data_dir, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)


# --------------------------------------------------------------------------------------------------
# template


def ensure_template(template_dir: Path | str, timeout: float = 300.0) -> Path:
    """Return a migrated Label Studio data dir to pass as ``template_dir``, building it once.

    The template holds only the migrated database: no user, no organisation, no secret key, so a copy
    creates its own admin user and token on first start. Built in a temporary sibling directory and
    renamed into place, so an interrupted build never leaves a half-made template.
    """
    template_dir = Path(template_dir).absolute()
    if (template_dir / _TEMPLATE_MARKER).is_file():
        return template_dir
    if template_dir.exists() and (not template_dir.is_dir() or any(template_dir.iterdir())):
        raise LabelStudioError(f"refusing to build a Label Studio template in {template_dir}: it holds files and is "
                               "not a template alignloop built; name a new or empty folder")
    template_dir.parent.mkdir(parents=True, exist_ok=True)
    build_dir = template_dir.parent / f".{template_dir.name}.build-{secrets.token_hex(4)}"
    build_dir.mkdir()
    try:
        server = start_server(build_dir, username=None, password=None, timeout=timeout)
        stop_server(server)
        for name in _TEMPLATE_SKIP:
            with contextlib.suppress(FileNotFoundError):
                (build_dir / name).unlink()
        (build_dir / _TEMPLATE_MARKER).write_text("migrated Label Studio data dir built by alignloop\n")
        if (template_dir / _TEMPLATE_MARKER).is_file():  # a concurrent builder won
            shutil.rmtree(build_dir)
            return template_dir
        with contextlib.suppress(FileNotFoundError):
            template_dir.rmdir()  # the empty folder checked above (never one with files: rmdir refuses those)
        try:
            build_dir.rename(template_dir)
        except OSError:
            if not (template_dir / _TEMPLATE_MARKER).is_file():  # not a concurrent builder winning the race
                raise
            shutil.rmtree(build_dir)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    return template_dir
