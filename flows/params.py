"""The base of every flow's parameter model (the form the Prefect UI shows)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FlowParams(BaseModel):
    """Unknown fields are refused (a typo in ``--set``, a deployment's JSON or the API fails at once, naming the
    field) instead of being dropped while the run goes on with the default."""

    model_config = ConfigDict(extra="forbid")
