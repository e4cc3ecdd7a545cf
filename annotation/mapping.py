"""Label Studio annotations -> warehouse feedback records (pure: no I/O).

Each annotation is validated with ``configs.validate_result`` first: the server stores values its own config
does not allow. The annotator is the judge (``annotator:<email or id>``) and the source is ``human``, so one
annotator's verdict on an item has a stable id and an edited annotation replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignloop.annotation import configs
from alignloop.annotation.client import Annotator, ExportedAnnotation
from alignloop.warehouse import ids
from alignloop.warehouse.records import Comparison, Correction, Ranking, Rating, Response, StepLabel

_WINNER = {"A": "a", "B": "b", "tie": "tie"}
_STEP = {"positive": 1, "neutral": 0, "negative": -1}
THUMBS_ASPECT = "thumbs"


@dataclass(frozen=True)
class SentTask:
    """A row of ``annotation_tasks``: what was sent to Label Studio and where it lives."""

    id: str
    kind: str
    round_id: str
    project_id: int
    task_id: int
    item_ids: tuple[str, ...]
    payload: dict[str, Any]
    status: str = "pushed"

    @property
    def data(self) -> dict[str, Any]:
        return self.payload.get("data", {})

    @property
    def prompt_id(self) -> str:
        return str(self.data.get("prompt_id", ""))


@dataclass
class FeedbackRows:
    """Records produced from annotations, one list per warehouse table."""

    comparisons: list[Comparison] = field(default_factory=list)
    rankings: list[Ranking] = field(default_factory=list)
    ratings: list[Rating] = field(default_factory=list)
    step_labels: list[StepLabel] = field(default_factory=list)
    corrections: list[Correction] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    """Human-edited responses (origin ``human_edit``) that corrections point to."""

    def extend(self, other: FeedbackRows) -> None:
        for name in self.tables():
            getattr(self, name).extend(getattr(other, name))

    @staticmethod
    def tables() -> tuple[str, ...]:
        return ("comparisons", "rankings", "ratings", "step_labels", "corrections", "responses")

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self.tables() if getattr(self, name)}


def annotator_judge(annotator: Annotator) -> str:
    return f"annotator:{annotator.email or annotator.id}"


def _by_name(result: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["from_name"]: r.get("value", {}) for r in result if isinstance(r, dict) and "from_name" in r}


def _text(value: dict[str, Any] | None) -> str | None:
    texts = (value or {}).get("text") or []
    joined = "\n".join(t for t in texts if isinstance(t, str)).strip()
    return joined or None


def to_feedback(task: SentTask, ann: ExportedAnnotation, config: str | None = None
                ) -> tuple[FeedbackRows, list[str]]:
    """Feedback records for one annotation, or the problems that make it unusable (then no records).

    Args:
        task: the warehouse's record of the Label Studio task the annotation belongs to.
        ann: the exported annotation.
        config: the labeling config of the task's project (default: the kind's own), which says the questions.
    """
    config = config or configs.config_for(task.kind)
    problems = configs.validate_result(task.kind, config, ann.result, task.data)
    if problems:
        return FeedbackRows(), problems
    judge = annotator_judge(ann.annotator)
    values = _by_name(ann.result)
    meta: dict[str, Any] = {"project_id": task.project_id, "task_id": task.task_id, "annotation_id": ann.annotation_id,
                            "annotation_task": task.id, "updated_at": ann.updated_at}
    if ann.lead_time is not None:  # read back by the agreement report's throughput (median per annotator)
        meta["lead_time"] = ann.lead_time
    rows = FeedbackRows()
    prompt, rnd = task.prompt_id, task.round_id
    if task.kind == "pairwise":
        a, b = task.item_ids
        asked = {"preference": "overall"} | configs.aspect_questions(config)
        for name, aspect in asked.items():  # the overall verdict (required), then each optional aspect's
            if name not in values:
                continue
            winner = _WINNER[values[name]["choices"][0]]
            rows.comparisons.append(Comparison(
                Comparison.make_id(judge, a, b, aspect), prompt, a, b, winner, judge, "human", rnd,
                prob_a={"a": 1.0, "b": 0.0, "tie": 0.5}[winner],
                rationale=_text(values.get("rationale")) if aspect == "overall" else None, meta=meta, aspect=aspect))
        for name, v in values.items():  # optional 1-5 ratings of each response per criterion
            if "rating" in v and (side := name.rpartition("_"))[0] in configs.CRITERIA:
                rid = a if side[2] == "a" else b
                # one per task: a response shown in two pairs may be rated twice by one annotator, each kept
                rating_id = ids.judgment_id("pair_rating", judge, {"response": rid, "aspect": side[0], "pair": [a, b]})
                rows.ratings.append(Rating(rating_id, prompt, rid, float(v["rating"]), 1.0, 5.0, judge, "human", rnd,
                                           aspect=side[0], meta=meta))
    elif task.kind == "ranking":
        order = [x for ids in values["ranker"]["ranker"].values() for x in ids]
        meta["shown"] = list(task.item_ids)
        rows.rankings.append(Ranking(Ranking.make_id(judge, order), prompt, order, judge, "human", rnd,
                                     scores=[float(len(order) - 1 - i) for i in range(len(order))], meta=meta))
    elif task.kind == "binary":
        (rid,) = task.item_ids
        score = 1.0 if values["thumbs"]["choices"][0] == "good" else 0.0
        rows.ratings.append(Rating(Rating.make_id(judge, rid, THUMBS_ASPECT, kind="binary"), prompt, rid, score,
                                   0.0, 1.0, judge, "human", rnd, aspect=THUMBS_ASPECT, meta=meta))
    elif task.kind == "step":
        (rid,) = task.item_ids
        first_error = values.get("first_error", {}).get("number")
        reason = "found_error" if first_error is not None else "solution"
        labels = {int(name.rsplit("_", 1)[1]): _STEP[v["choices"][0]]
                  for name, v in values.items() if name.startswith("step_label_")}
        if first_error is not None:
            meta["first_error"] = int(first_error)
        rows.step_labels.extend(
            StepLabel(StepLabel.make_id(judge, rid, i), prompt, rid, i, labels[i], judge, "human", rnd,
                      finish_reason=reason, meta=meta) for i in sorted(labels))
    elif task.kind == "correction":
        (rid,) = task.item_ids
        text = _text(values["correction"]) or ""
        edited = Response.given(prompt, judge, rnd, text, "human_edit", parent_id=rid,
                                meta={"annotation_id": ann.annotation_id})
        rows.responses.append(edited)
        rows.corrections.append(Correction(Correction.make_id(judge, rid), prompt, rid, edited.id, judge, "human",
                                           rnd, meta={**meta, "unchanged": text.strip() == task.data.get(
                                               "answer", "").strip()}))
    return rows, []
