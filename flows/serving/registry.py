"""The flows alignloop deploys: ``python -c "from alignloop.flows.serving.registry import deployables; print(deployables())"``.

Discovery is an explicit list of modules. A module that is not written yet is skipped; any other import error
propagates, so a broken flow module fails ``alignloop serve`` at start instead of vanishing from the UI.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from prefect import Flow

from alignloop.flows.params import validated
from alignloop.warehouse.errors import AlignloopError

DEPLOYMENT_NAME = "alignloop"
"""Deployment name used by ``alignloop serve``; the UI lists each as ``<flow name>/alignloop``."""


@dataclass(frozen=True)
class FlowModule:
    module: str
    """Dotted module path, e.g. ``flows.generate``; every flow defined in it is deployed."""
    cron: str | None = None
    """Default cron schedule of its deployments (None: run on demand only)."""
    interval: float | None = None
    """Default interval schedule in seconds (None: none); exclusive with ``cron``."""

    def __post_init__(self) -> None:
        if self.cron and self.interval:
            raise ValueError(f"{self.module}: give cron or interval, not both")
        if self.interval is not None and self.interval <= 0:
            raise ValueError(f"{self.module}: interval must be > 0 seconds, got {self.interval}")


FLOW_MODULES: tuple[FlowModule, ...] = (
    FlowModule("alignloop.flows.import_prompts"),
    FlowModule("alignloop.flows.generate"),
    FlowModule("alignloop.flows.judge"),
    FlowModule("alignloop.flows.build_dataset"),
    FlowModule("alignloop.flows.train"),
    FlowModule("alignloop.flows.annotate"),
    FlowModule("alignloop.flows.evaluate"),
    FlowModule("alignloop.flows.round"),
    FlowModule("alignloop.flows.weak_to_strong"),
)
"""Known flow modules in loop order; the round's schedule is set by ``alignloop serve --round-cron``."""

ROUND_MODULE = "alignloop.flows.round"


@dataclass(frozen=True)
class Deployable:
    flow: Flow[..., Any]
    module: str
    """Module the flow is defined in."""
    attr: str
    """Name of the flow object in its module."""
    deployment: str = DEPLOYMENT_NAME
    cron: str | None = None
    interval: float | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    """Default parameter values of the deployment (keyed by the flow's argument names)."""

    @property
    def entrypoint(self) -> str:
        """``flows/x.py:flow_fn``, relative to the folder of the ``alignloop`` package (the repository root, or
        ``site-packages/alignloop`` when installed from a wheel), for ``flow.from_source``."""
        return f"{self.module.removeprefix('alignloop.').replace('.', '/')}.py:{self.attr}"

    @property
    def full_name(self) -> str:
        """``<flow name>/<deployment>`` as ``run_deployment`` and ``prefect deployment run`` take it."""
        return f"{self.flow.name}/{self.deployment}"

    def schedule_kwargs(self) -> dict[str, Any]:
        """``cron=``/``interval=`` keyword for ``to_deployment``/``deploy`` (empty when unscheduled)."""
        if self.cron:
            return {"cron": self.cron}
        if self.interval:
            return {"interval": self.interval}
        return {}


def _import_if_written(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:  # not written yet
            return None
        raise


def flows_in(module: ModuleType) -> list[tuple[str, Flow[..., Any]]]:
    """(attribute, flow) for each flow *defined* in ``module`` (not ones it imports), in definition order."""
    return [(attr, obj) for attr, obj in vars(module).items()
            if isinstance(obj, Flow) and getattr(obj.fn, "__module__", None) == module.__name__]


SCHEDULED_ROUND = {"round": "next"}
"""What a scheduled round runs unless told otherwise: the next round, from the last one's policy (policy 'auto')."""


def round_defaults(module: ModuleType, given: dict[str, Any] | None, scheduled: bool) -> dict[str, Any]:
    """The round deployment's default parameters, keyed by the flow's argument (``{"params": {...}}``).

    ``given`` holds round fields, bare or under ``params``; a schedule adds :data:`SCHEDULED_ROUND` under them.
    They are checked against the round's form here, so a typo fails when the deployment is made, not at 3 am.
    """
    fields = dict((given or {}).get("params", given or {}))
    if scheduled:
        fields = {**SCHEDULED_ROUND, **fields}
    if not fields:
        return {}
    try:
        validated(module.RoundParams, fields)
    except AlignloopError as exc:
        raise AlignloopError(f"round parameters: {exc}") from None
    return {"params": fields}


def deployables(only: tuple[str, ...] = (), round_cron: str | None = None, round_interval: float | None = None,
                round_parameters: dict[str, Any] | None = None,
                modules: tuple[FlowModule, ...] = FLOW_MODULES) -> list[Deployable]:
    """Every deployable flow of the modules that exist.

    Args:
        only: keep just these flow names (e.g. ``("import-prompts",)``); empty keeps all.
        round_cron: cron schedule for the round flow(s), replacing the module default.
        round_interval: interval schedule in seconds for the round flow(s).
        round_parameters: default parameters of the round deployment(s).
        modules: the known modules (tests may pass their own).

    Raises:
        AlignloopError: ``only`` names a flow that is not registered, both round schedules are given, or a round
            schedule is given but no round flow exists.
    """
    if round_cron and round_interval:
        raise AlignloopError("give --round-cron or --round-interval, not both")
    found: list[Deployable] = []
    for spec in modules:
        module = _import_if_written(spec.module)
        if module is None:
            continue
        for attr, fl in flows_in(module):
            entry = Deployable(fl, spec.module, attr, cron=spec.cron, interval=spec.interval)
            if spec.module == ROUND_MODULE:
                if round_cron or round_interval:
                    entry = replace(entry, cron=round_cron, interval=round_interval)
                defaults = round_defaults(module, round_parameters, bool(entry.cron or entry.interval))
                if defaults:
                    entry = replace(entry, parameters=defaults)
            found.append(entry)
    if (round_cron or round_interval or round_parameters) and not any(d.module == ROUND_MODULE for d in found):
        raise AlignloopError(f"a round schedule or parameters were given but {ROUND_MODULE} has no flow yet")
    if only:
        missing = sorted(set(only) - {d.flow.name for d in found})
        if missing:
            names = ", ".join(d.flow.name for d in found)
            raise AlignloopError(f"no registered flow named {', '.join(missing)}; registered: {names}")
        found = [d for d in found if d.flow.name in only]
    return found
