"""Deploy the registered flows to a work pool, and start the workers that pull from it.

    python -c "from alignloop.flows.serving.deploy import deploy_to_pool; deploy_to_pool('local')"   # needs PREFECT_API_URL
    prefect worker start --pool local

Served deployments (``alignloop serve``) run flows as children of one process. A work pool instead lets any
number of workers (processes here; Docker containers or Kubernetes jobs with the plugins, see docs/scaling.md)
pick up runs, so two generation runs can proceed on two machines at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from alignloop.flows.serving.registry import deployables
from alignloop.flows.serving.serve import prefect_env

REPO_ROOT = Path(__file__).resolve().parents[2]
"""Source directory the deployments point to; workers on this machine load flows from here."""


def ensure_process_pool(name: str, concurrency: int | None = None) -> bool:
    """Create a ``process`` work pool with Prefect's default job template unless one of that name exists.

    Args:
        concurrency: most runs the whole pool executes at once (None: unlimited).

    Returns:
        True if the pool was created now.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        pool = WorkPoolCreate(name=name, type=ProcessWorker.type, concurrency_limit=concurrency,
                              base_job_template=ProcessWorker.get_default_base_job_template())
        try:
            client.create_work_pool(pool)
        except ObjectAlreadyExists:
            return False
    return True


def deploy_to_pool(pool: str, only: tuple[str, ...] = (), source: Path = REPO_ROOT, image: str | None = None,
                   job_variables: dict[str, Any] | None = None, **registry_kwargs: Any) -> dict[str, UUID]:
    """Create or update a deployment of each registered flow on the work pool ``pool``.

    Without ``image`` the pool is a process pool (created if missing) and workers load the code from ``source``.
    With ``image`` (a Docker or Kubernetes pool, created beforehand with ``prefect work-pool create``) the flows
    are loaded by module path (``flows.generate.generate``) from the alignloop installed in that image; nothing
    is built or pushed. Each deployment is named after the pool (``generate/<pool>``) so it can sit beside the
    served ``generate/alignloop``.

    Args:
        only: deploy just these flow names.
        source: directory holding ``flows/`` as process workers will see it.
        image: container image with alignloop installed, e.g. ``registry.example/alignloop:0.1``.
        job_variables: per-deployment overrides of the pool's job template (process: ``env``, ``working_dir``;
            Docker: ``volumes``, ``mem_limit``, ``container_create_kwargs``; Kubernetes: ``namespace``, ``env``).
        registry_kwargs: passed to :func:`flows.registry.deployables` (round schedule and parameters).

    Returns:
        ``<flow>/<deployment>`` -> deployment id.
    """
    from prefect import Flow
    from prefect.deployments.runner import EntrypointType

    if image is None:
        ensure_process_pool(pool)
    ids: dict[str, UUID] = {}
    for entry in deployables(only, **registry_kwargs):
        common: dict[str, Any] = {"name": pool, "work_pool_name": pool, "parameters": entry.parameters,
                                  "job_variables": job_variables or {}, "print_next_steps": False,
                                  "ignore_warnings": True, **entry.schedule_kwargs()}
        if image is None:
            remote = Flow.from_source(source=str(source), entrypoint=entry.entrypoint)
            ids[f"{entry.flow.name}/{pool}"] = remote.deploy(**common)
        else:
            ids[f"{entry.flow.name}/{pool}"] = entry.flow.deploy(
                image=image, build=False, push=False, entrypoint_type=EntrypointType.MODULE_PATH, **common)
    return ids


def worker_command(pool: str, name: str, limit: int | None = None) -> list[str]:
    """``prefect worker start`` for a process worker on ``pool`` (``limit``: its concurrent runs)."""
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--name", name]
    return [*cmd, "--limit", str(limit)] if limit else cmd


def start_workers(pool: str, count: int, limit: int | None = 1, api: str | None = None,
                  extra_env: dict[str, str] | None = None, stdout: IO[Any] | int | None = None
                  ) -> list[subprocess.Popen[Any]]:
    """Start ``count`` process workers named ``<pool>-1..N`` (not waiting); stop them with ``serve.stop_process``.

    Args:
        limit: runs each worker executes at once; 1 spreads a burst of runs across the workers.
        api: PREFECT_API_URL for the workers (default: inherited).
        extra_env: more environment for the workers and the flow runs they start.
        stdout: where the workers' output goes (stderr joins it); default: inherited.
    """
    env = prefect_env(api=api, extra=extra_env)
    return [subprocess.Popen(worker_command(pool, f"{pool}-{i}", limit), env=env, cwd=REPO_ROOT,
                             stdout=stdout, stderr=subprocess.STDOUT if stdout is not None else None,
                             start_new_session=True) for i in range(1, count + 1)]
