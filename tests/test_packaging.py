"""The installed distribution: one top-level package, ``alignloop``, that works from a wheel outside the repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fixtures_prefect_ops import (
    prefect_server,  # noqa: F401 - fixture
    stop_all,
    wait_for,
    write_prompts,
)

LAYERS = ("warehouse", "pipelines", "annotation", "trainers", "flows")


def test_every_package_folder_is_a_listed_subpackage_of_alignloop():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"alignloop." + ".".join(init.parent.relative_to(REPO).parts)
               for layer in LAYERS for init in (REPO / layer).rglob("__init__.py")}
    assert listed == folders | {"alignloop"}


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and unpacked into a folder of its own (its dependencies come from this venv)."""
    uv = REPO / ".venv-tools" / "bin" / "uv"
    if not uv.exists():
        pytest.skip(".venv-tools/bin/uv is not on this machine (bash scripts/setup installs it)")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([str(uv), "build", "--wheel", "--no-build-isolation", "--python", sys.executable, "-o", str(out),
                    "-q", str(REPO)], check=True, timeout=300, cwd=REPO)
    site = out / "site"
    wheel = next(out.glob("alignloop-*.whl"))
    subprocess.run([str(uv), "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   timeout=300)
    return site


def _run_from(site: Path, cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that finds alignloop in ``site`` first, run outside the repository."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_the_wheel_installs_alignloop_and_nothing_generic(wheel_site, tmp_path):
    importable = [p.name for p in wheel_site.iterdir() if (p / "__init__.py").is_file() or p.suffix == ".py"]
    assert importable == ["alignloop"]
    names = "', '".join(LAYERS)
    code = f"""
import importlib, sys
for name in ('{names}'):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        pass
    else:
        sys.exit(f'{{name}} is importable as a top-level package')
import alignloop
assert alignloop.__file__.startswith({str(wheel_site)!r}), alignloop.__file__
from alignloop.warehouse import db                       # SQL files are package data
with db.connect(':memory:') as con:
    assert con.execute(db.query('round_names')).fetchall() == []
from alignloop.annotation import configs                 # Label Studio configs are package data
configs.validate_config(configs.config_for('pairwise'))
from alignloop.pipelines.judges import templates         # judge templates are package data
assert templates.load_template('pairwise')
print('ok')
"""
    result = _run_from(wheel_site, tmp_path, code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
    cli = _run_from(wheel_site, tmp_path, "import sys; sys.argv = ['alignloop', '--help']; "
                                          "from alignloop.flows.cli import app; app()")
    assert cli.returncode == 0 and "Usage: alignloop" in cli.stdout, cli.stderr[-2000:]


@pytest.mark.slow
def test_a_deployment_served_from_the_wheel_runs(wheel_site, prefect_server, tmp_path):  # noqa: F811
    """``alignloop serve`` from a wheel install (no repository on the path): the UI's Run completes the flow."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    log = tmp_path / "serve.log"
    env = prefect_server.env(PYTHONPATH=str(wheel_site))
    code = "from alignloop.flows.serving.serve import serve_registered; serve_registered(only=('import-prompts',))"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def deployment():
        with get_client(sync_client=True) as client:
            try:
                return client.read_deployment_by_name("import-prompts/alignloop")
            except ObjectNotFound:
                return None

    try:
        served = wait_for(deployment, 120, "the deployment served from the wheel", [proc], log)
        assert "site/alignloop/flows/import_prompts.py:" in served.entrypoint  # loaded from the wheel
        src = write_prompts(tmp_path / "prompts.jsonl", [f"question {i} about knots" for i in range(3)])
        warehouse = tmp_path / "w.duckdb"
        params = {"params": {"path": str(src), "db": str(warehouse), "round": "wheel", "test_fraction": 0.0}}
        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(served.id, parameters=params)

        def finished():
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run.id).state
            return state if state and state.is_final() else None

        state = wait_for(finished, 120, "the run of the deployment served from the wheel", [proc], log)
        assert state.is_completed(), f"{state.type}: {state.message}\n{log.read_text()[-3000:]}"
        from alignloop.warehouse import db

        with db.connect(str(warehouse), read_only=True) as con:
            assert con.execute("SELECT count(*) FROM prompts").fetchone()[0] == 3
    finally:
        stop_all([proc])
        time.sleep(0.5)
        shutil.rmtree(tmp_path / "build", ignore_errors=True)
