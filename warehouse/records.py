"""Typed records: the rows that cross layer boundaries, one frozen dataclass per warehouse table.

Bulk data crosses layers as Arrow tables built from these (``to_arrow``) or straight from SQL;
records are for the code that makes or reads a handful of rows at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import pyarrow as pa

from alignloop.warehouse import ids
from alignloop.warehouse.ids import canonical_json

Source = Literal["human", "ai", "rule", "reward_model"]
Winner = Literal["a", "b", "tie", "invalid"]
Origin = Literal["policy", "aligner", "human_edit", "reference", "import"]
Split = Literal["train", "test"]
Message = dict[str, str]


def norm_hash(text: str) -> str:
    """Key for exact dedup: case, punctuation and whitespace do not make a prompt new."""
    return ids.content_id("norm", ids.normalise(text))


def flatten_messages(messages: list[Message]) -> str:
    """One text for dedup, length filters and display: ``role: content`` lines."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


@dataclass(frozen=True, slots=True)
class Prompt:
    table: ClassVar[str] = "prompts"
    json_fields: ClassVar[tuple[str, ...]] = ("messages", "meta")
    id: str
    messages: list[Message]
    text: str
    norm_hash: str
    source: str
    split: Split
    reference: str | None = None
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] | None = None

    @classmethod
    def create(cls, messages: list[Message], source: str, split: Split = "train", reference: str | None = None,
               tags: list[str] | None = None, meta: dict[str, Any] | None = None) -> Prompt:
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        text = flatten_messages(msgs)
        return cls(ids.prompt_id(msgs), msgs, text, norm_hash(text), source, split, reference, tags or [], meta)


@dataclass(frozen=True, slots=True)
class Model:
    table: ClassVar[str] = "models"
    json_fields: ClassVar[tuple[str, ...]] = ("meta",)
    id: str
    uri: str
    role: str
    parent_id: str | None = None
    training_run_id: str | None = None
    meta: dict[str, Any] | None = None

    @classmethod
    def create(cls, uri: str, role: str, **kw: Any) -> Model:
        return cls(ids.model_id(uri, role), uri, role, **kw)


@dataclass(frozen=True, slots=True)
class Round:
    table: ClassVar[str] = "rounds"
    json_fields: ClassVar[tuple[str, ...]] = ("config",)
    id: str
    policy_model_id: str | None = None
    parent_round_id: str | None = None
    config: dict[str, Any] | None = None
    status: str = "open"


@dataclass(frozen=True, slots=True)
class Response:
    table: ClassVar[str] = "responses"
    json_fields: ClassVar[tuple[str, ...]] = ("sampling", "meta")
    id: str
    prompt_id: str
    model_id: str
    round_id: str
    text: str
    origin: Origin
    sampling: dict[str, Any] | None = None
    seed: int | None = None
    sample_index: int = 0
    steps: list[str] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    parent_id: str | None = None
    meta: dict[str, Any] | None = None

    @classmethod
    def sampled(cls, prompt_id: str, model_id: str, round_id: str, text: str, sampling: dict[str, Any],
                seed: int | None, sample_index: int, **kw: Any) -> Response:
        rid = ids.response_id(prompt_id, model_id, sampling, seed, sample_index)
        return cls(rid, prompt_id, model_id, round_id, text, "policy", sampling, seed, sample_index, **kw)

    @classmethod
    def imported(cls, prompt_id: str, model_id: str, round_id: str, text: str, origin: Origin, **kw: Any) -> Response:
        """A response that came in a file: its content defines it (``ids.imported_response_id``), not the file."""
        rid = ids.imported_response_id(prompt_id, text, origin, kw.get("steps"))
        return cls(rid, prompt_id, model_id, round_id, text, origin, **kw)

    @classmethod
    def given(cls, prompt_id: str, model_id: str, round_id: str, text: str, origin: Origin, **kw: Any) -> Response:
        """A response the platform did not sample (imported, reference, correction): its text defines it."""
        rid = ids.response_id(prompt_id, model_id, None, None, kw.get("sample_index", 0), text=text)
        return cls(rid, prompt_id, model_id, round_id, text, origin, **kw)


@dataclass(frozen=True, slots=True)
class Comparison:
    table: ClassVar[str] = "comparisons"
    json_fields: ClassVar[tuple[str, ...]] = ("meta",)
    id: str
    prompt_id: str
    response_a: str
    response_b: str
    winner: Winner
    judge: str
    source: Source
    round_id: str
    prob_a: float | None = None
    verdict_ab: str | None = None
    verdict_ba: str | None = None
    consistent: bool | None = None
    rationale: str | None = None
    meta: dict[str, Any] | None = None
    aspect: str = "overall"
    """What was compared (helpfulness, harmlessness, ...); ``overall`` unless the judge or file says."""

    @staticmethod
    def make_id(judge: str, response_a: str, response_b: str, aspect: str = "overall") -> str:
        return ids.judgment_id("pairwise", judge, [response_a, response_b], aspect)

    @staticmethod
    def label_id(labeller: str, response_a: str, response_b: str, winner: str, prob_a: float | None,
                 aspect: str = "overall") -> str:
        """A comparison that came in a file (``ids.label_id``): the verdict and its soft label are the label."""
        label = {"winner": winner, "prob_a": None if prob_a is None else float(prob_a)}
        return ids.label_id("pairwise", labeller, [response_a, response_b], label, aspect)


@dataclass(frozen=True, slots=True)
class Ranking:
    table: ClassVar[str] = "rankings"
    json_fields: ClassVar[tuple[str, ...]] = ("permutations", "meta")
    id: str
    prompt_id: str
    response_ids: list[str]
    judge: str
    source: Source
    round_id: str
    scores: list[float] | None = None
    permutations: list[list[int]] | None = None
    meta: dict[str, Any] | None = None
    aspect: str = "overall"
    """What the responses were ranked by (helpfulness, harmlessness, ...); ``overall`` unless the judge or file
    says."""

    @staticmethod
    def make_id(judge: str, response_ids: list[str], aspect: str = "overall") -> str:
        return ids.judgment_id("listwise", judge, sorted(response_ids), aspect)

    @staticmethod
    def label_id(labeller: str, response_ids: list[str], aspect: str = "overall") -> str:
        """A ranking that came in a file: the responses ranked, and their order (best first) as the label."""
        return ids.label_id("listwise", labeller, sorted(response_ids), list(response_ids), aspect)


@dataclass(frozen=True, slots=True)
class Rating:
    table: ClassVar[str] = "ratings"
    json_fields: ClassVar[tuple[str, ...]] = ("meta",)
    id: str
    prompt_id: str
    response_id: str
    score: float | None
    scale_min: float
    scale_max: float
    judge: str
    source: Source
    round_id: str
    aspect: str = "overall"
    rationale: str | None = None
    meta: dict[str, Any] | None = None

    @staticmethod
    def make_id(judge: str, response_id: str, aspect: str = "overall", kind: str = "rating") -> str:
        return ids.judgment_id(kind, judge, {"response": response_id, "aspect": aspect})

    @staticmethod
    def label_id(labeller: str, response_id: str, aspect: str, score: float | None, scale_min: float,
                 scale_max: float) -> str:
        """A rating that came in a file: the score on its scale is the label."""
        label = {"score": None if score is None else float(score), "scale": [float(scale_min), float(scale_max)]}
        return ids.label_id("rating", labeller, {"response": response_id, "aspect": aspect}, label)


@dataclass(frozen=True, slots=True)
class StepLabel:
    table: ClassVar[str] = "step_labels"
    json_fields: ClassVar[tuple[str, ...]] = ("meta",)
    id: str
    prompt_id: str
    response_id: str
    step_index: int
    label: int | None
    judge: str
    source: Source
    round_id: str
    flagged: bool = False
    finish_reason: str | None = None
    meta: dict[str, Any] | None = None

    @staticmethod
    def make_id(judge: str, response_id: str, step_index: int) -> str:
        return ids.judgment_id("step", judge, {"response": response_id, "step": step_index})

    @staticmethod
    def label_id(labeller: str, response_id: str, step_index: int, label: int | None, flagged: bool) -> str:
        """A step label that came in a file: the -1/0/+1 label and the labeller's flag are the label."""
        return ids.label_id("step", labeller, {"response": response_id, "step": int(step_index)},
                            {"label": None if label is None else int(label), "flagged": bool(flagged)})

    @staticmethod
    def first_error(labels: dict[int, int | None]) -> int | None:
        """The index of a solution's first -1 step, from {step index: label} (None: no step labelled -1)."""
        return min((i for i, lab in labels.items() if lab == -1), default=None)


@dataclass(frozen=True, slots=True)
class Correction:
    table: ClassVar[str] = "corrections"
    json_fields: ClassVar[tuple[str, ...]] = ("meta",)
    id: str
    prompt_id: str
    original_id: str
    corrected_id: str
    judge: str
    source: Source
    round_id: str
    meta: dict[str, Any] | None = None
    aspect: str = "overall"
    """What the answer was corrected for (helpfulness, harmlessness, ...); ``overall`` unless the judge or file
    says."""

    @staticmethod
    def make_id(judge: str, original_id: str, aspect: str = "overall") -> str:
        return ids.judgment_id("correction", judge, [original_id], aspect)

    @staticmethod
    def label_id(labeller: str, original_id: str, corrected_id: str, aspect: str = "overall") -> str:
        """A correction that came in a file: the corrected response is the label."""
        return ids.label_id("correction", labeller, [original_id], corrected_id, aspect)


@dataclass(frozen=True, slots=True)
class AnnotationTask:
    table: ClassVar[str] = "annotation_tasks"
    json_fields: ClassVar[tuple[str, ...]] = ("payload",)
    id: str
    kind: str
    round_id: str
    item_ids: list[str]
    payload: dict[str, Any]
    project_id: int | None = None
    task_id: int | None = None
    status: str = "pushed"


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    table: ClassVar[str] = "datasets"
    json_fields: ClassVar[tuple[str, ...]] = ("params", "source_counts", "row_counts")
    id: str
    name: str
    version: int
    kind: str
    params: dict[str, Any]
    content_hash: str
    path: str
    source_counts: dict[str, Any] | None = None
    row_counts: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TrainingRun:
    table: ClassVar[str] = "training_runs"
    json_fields: ClassVar[tuple[str, ...]] = ("config", "meta")
    id: str
    method: str
    config: dict[str, Any]
    dataset_id: str | None = None
    base_model_id: str | None = None
    reference_model_id: str | None = None
    output_model_id: str | None = None
    round_id: str | None = None
    status: str = "running"
    meta: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    table: ClassVar[str] = "training_metrics"
    json_fields: ClassVar[tuple[str, ...]] = ()
    run_id: str
    step: int
    name: str
    value: float | None


@dataclass(frozen=True, slots=True)
class Evaluation:
    table: ClassVar[str] = "evaluations"
    json_fields: ClassVar[tuple[str, ...]] = ("details",)
    id: str
    kind: str
    target: str
    metric: str
    value: float | None
    round_id: str | None = None
    details: dict[str, Any] | None = None

    @classmethod
    def create(cls, kind: str, target: str, metric: str, value: float | None, round_id: str | None = None,
               details: dict[str, Any] | None = None, config: dict[str, Any] | None = None) -> Evaluation:
        eid = ids.content_id("evaluation", {"kind": kind, "target": target, "round": round_id, "metric": metric,
                                            "config": config or {}})
        return cls(eid, kind, target, metric, value, round_id, details)


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file the platform derived and caches (e.g. reference log-probs), keyed by the hash of its inputs."""

    table: ClassVar[str] = "artifacts"
    json_fields: ClassVar[tuple[str, ...]] = ("inputs",)
    id: str
    kind: str
    path: str
    inputs: dict[str, Any]

@dataclass(frozen=True, slots=True)
class ImportRecord:
    """One file's import: which file (name, path, sha256 of its bytes), with which options, what it stored. Its rows
    are in ``import_rows``; a second import of the same bytes under the same name and options is the same import."""

    table: ClassVar[str] = "imports"
    json_fields: ClassVar[tuple[str, ...]] = ("options", "counts")
    id: str
    path: str
    file_name: str
    source: str
    sha256: str | None = None
    bytes: int | None = None
    format: str | None = None
    round_id: str | None = None
    options: dict[str, Any] | None = None
    counts: dict[str, Any] | None = None

    @staticmethod
    def make_id(file_name: str, sha256: str, options: dict[str, Any]) -> str:
        return ids.content_id("import", {"file": file_name, "sha256": sha256, "options": options})


def to_arrow(rows: list[Any]) -> pa.Table:
    """Records of one type -> an Arrow table whose column names match the warehouse table."""
    if not rows:
        raise ValueError("to_arrow needs at least one record")
    cls = type(rows[0])
    names = [f.name for f in fields(cls)]
    cols: dict[str, list[Any]] = {n: [] for n in names}
    for r in rows:
        for n in names:
            v = getattr(r, n)
            if n in cls.json_fields and v is not None:
                v = canonical_json(v)
            cols[n].append(v)
    return pa.table(cols)


def loads(value: str | None) -> Any:
    """Parse a JSON column value as DuckDB returns it."""
    return None if value is None else json.loads(value)
