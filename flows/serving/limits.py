"""Prefect global concurrency limits alignloop relies on:
``python -c "from alignloop.flows.serving.limits import ensure_limits; ensure_limits()"``.

The training flow takes the GPU slot with ``with concurrency(GPU_LIMIT, occupy=1, strict=True)``; ``strict=True``
matters because Prefect silently ignores a limit that does not exist.
"""

from __future__ import annotations

GPU_LIMIT = "gpu"
"""Name of the global concurrency limit that serialises GPU work (training, GPU generation)."""

LIMITS: dict[str, int] = {GPU_LIMIT: 1}
"""Every limit alignloop creates, with its default number of slots."""


def ensure_limits(limits: dict[str, int] | None = None) -> dict[str, int]:
    """Create each global concurrency limit that is missing; leave existing ones (and their slot counts) alone.

    Args:
        limits: name -> slots; default :data:`LIMITS`.

    Returns:
        name -> the limit now stored on the Prefect server (an operator's changed value is kept).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    stored: dict[str, int] = {}
    with get_client(sync_client=True) as client:
        for name, slots in (limits or LIMITS).items():
            try:
                stored[name] = client.read_global_concurrency_limit_by_name(name).limit
                continue
            except ObjectNotFound:
                pass
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
            except ObjectAlreadyExists:  # created by another process between our read and write
                pass
            stored[name] = client.read_global_concurrency_limit_by_name(name).limit
    return stored
