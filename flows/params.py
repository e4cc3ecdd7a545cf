"""The base of every flow's parameter model (the form the Prefect UI shows)."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from alignloop.pipelines.judges.templates import DEFAULT_PRINCIPLES
from alignloop.warehouse.errors import InputError
from alignloop.warehouse.names import check_name

T = TypeVar("T")

JudgeBaseUrl = Annotated[str | None, Field(description="The judge's OpenAI-compatible endpoint (openai engine); "
                                                       "default $ALIGNLOOP_OPENAI_BASE_URL.")]
"""A form's field for an AI judge's endpoint (the judge, round and evaluate flows)."""
JudgeKeySecret = Annotated[str | None, Field(description="Name of a Prefect Secret block holding the judge "
                                                         "endpoint's key (openai engine); default $OPENAI_API_KEY.")]
"""A form's field for the Secret block of an AI judge's key: its name travels, never the key."""
Principles = Annotated[list[str], Field(default_factory=lambda: list(DEFAULT_PRINCIPLES), description=(
    "What the AI judge weighs: principle names (helpful, harmless, honest) or sentences (a constitution)."))]
"""A form's field for what an AI judge weighs."""


def name_check(what: str) -> AfterValidator:
    """A form field's check that its value is a valid name (:func:`warehouse.names.check_name`), as a ValueError the
    form shows; None (the field left empty) passes."""
    def check(value: str | None) -> str | None:
        try:
            return None if value is None else check_name(value, what)
        except InputError as exc:
            raise ValueError(str(exc)) from None

    return AfterValidator(check)


DatasetName = Annotated[str, name_check("dataset name")]
"""A form's field for a dataset name a flow writes (a folder under the snapshot root)."""
RoundName = Annotated[str | None, name_check("round name")]
"""A form's field for a round a flow records its work in (its id; a round derives dataset and folder names)."""


class FlowParams(BaseModel):
    """Unknown fields are refused (a typo in ``--set``, a deployment's JSON or the API fails at once, naming the
    field) instead of being dropped while the run goes on with the default."""

    model_config = ConfigDict(extra="forbid")


def validated(model: type[T], fields: dict[str, Any]) -> T:
    """``model(**fields)`` for a pydantic parameter model, its first validation error as one line."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or model.__name__
        if first.get("type") == "extra_forbidden":
            raise InputError(f"unknown parameter {where!r}; known: {', '.join(model.model_fields)}") from None
        msg = str(first.get("msg")).removeprefix("Value error, ")
        if not first.get("loc"):  # a check across fields: its message names them (the input is the whole form)
            raise InputError(msg) from None
        raise InputError(f"{where}: {msg} (got {first.get('input')!r})") from None


def secret_value(name: str | None) -> str | None:
    """The value of the Prefect Secret block ``name`` (None without one): API keys reach a backend in memory, never
    a parameter, the warehouse or a log."""
    if not name:
        return None
    from prefect.blocks.system import Secret

    return Secret.load(name).get()
