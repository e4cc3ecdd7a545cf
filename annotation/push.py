"""Send warehouse items to Label Studio for human feedback: ``alignloop annotate push KIND --round R``.

Selection (``plan_push``) reads the warehouse only; ``send`` talks to Label Studio (one bulk import per
push); ``record`` writes the ``annotation_tasks`` rows in one short transaction. ``push`` does the three in
order, so the warehouse is never held while Label Studio is called (one-writer rule).

Pairwise items are ordered by what a person's verdict is worth most: pairs an AI judge was inconsistent on
under position swap first, then pairs where AI judges disagree, then a seeded random audit sample of the
rest (so human-vs-AI agreement is not measured on hard cases only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import duckdb

from alignloop.annotation import configs
from alignloop.annotation.client import LabelStudioClient, Project
from alignloop.warehouse import db, ids
from alignloop.warehouse.records import AnnotationTask, StepLabel, loads

Strategy = Literal["inconsistent", "disagreement", "random"]
STRATEGIES: tuple[str, ...] = ("inconsistent", "disagreement", "random")
DEFAULT_ORIGINS: tuple[str, ...] = ("policy", "import")
_WINNER_CHOICE = {"a": "A", "b": "B", "tie": "tie"}


@dataclass(frozen=True)
class PushRequest:
    """What to send for annotation."""

    kind: str
    """Feedback kind, one of ``annotation.configs.KINDS``."""
    round: str
    """Round whose responses are sent."""
    sample: int | None = None
    """Send at most this many new tasks (None: all not yet sent)."""
    strategy: Strategy = "inconsistent"
    """Pairwise ordering: AI-inconsistent pairs first, judge disagreements first, or plain random."""
    seed: int = 0
    """Seed of the random order (audit sample and ties within a priority group)."""
    audit: float = 0.1
    """Share of a sample reserved for randomly chosen, unflagged pairs (human-vs-AI audit)."""
    origins: tuple[str, ...] = DEFAULT_ORIGINS
    """Response origins eligible for annotation."""
    questions: tuple[str, ...] | None = None
    """Pairwise: the optional aspect questions the project asks (None: an existing project's, else
    ``configs.DEFAULT_QUESTIONS``)."""
    overlap: int | None = None
    """Annotators each task wants before it counts as done (None: the project's, 1 for a new one)."""
    instructions: str | None = None
    """What annotators read before they label, HTML or text (None: the project's)."""

    def __post_init__(self) -> None:
        if self.kind not in configs.KINDS:
            raise ValueError(f"unknown annotation kind {self.kind!r}; expected one of {', '.join(configs.KINDS)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if self.sample is not None and self.sample < 1:
            raise ValueError(f"sample must be >= 1, got {self.sample}")
        if not 0 <= self.audit <= 1:
            raise ValueError(f"audit must be within [0, 1], got {self.audit}")
        if not self.round:
            raise ValueError("round must not be empty")
        if self.overlap is not None and self.overlap < 1:
            raise ValueError(f"overlap must be >= 1, got {self.overlap}")
        if self.questions is not None:
            if self.kind != "pairwise":
                raise ValueError(f"aspect questions are asked of pairwise projects, not {self.kind}")
            if problem := configs.question_problem(self.questions):
                raise ValueError(problem)


@dataclass(frozen=True)
class Candidate:
    """One possible task: the items shown, its task data, AI verdicts as predictions, and priority flags."""

    item_ids: tuple[str, ...]
    data: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    inconsistent: bool = False
    disagreement: bool = False

    @property
    def flagged(self) -> bool:
        return self.inconsistent or self.disagreement


@dataclass(frozen=True)
class PushResult:
    project_id: int | None
    title: str
    planned: int
    """New tasks selected this time (items already sent are never selected again)."""
    imported: int
    """Tasks created in Label Studio by this push."""
    recovered: int
    """Tasks found in Label Studio from an earlier push whose warehouse write did not happen."""
    recorded: int
    """Rows added to ``annotation_tasks``."""


def project_title(round_id: str, kind: str) -> str:
    return f"alignloop {round_id} {kind}"


def task_id(kind: str, round_id: str, item_ids: Sequence[str]) -> str:
    """Content-hash id of an annotation task: pushing the same items twice gives the same id."""
    return ids.content_id("annotation_task", {"kind": kind, "round": round_id, "items": list(item_ids)})


# ---------------------------------------------------------------------------------------------- candidates


def _choice(name: str, to: str, value: str) -> dict[str, Any]:
    return {"from_name": name, "to_name": to, "type": "choices", "value": {"choices": [value]}}


def _pair_predictions(verdicts: list[dict] | None) -> list[dict[str, Any]]:
    out = []
    for v in verdicts or []:
        if v["winner"] not in _WINNER_CHOICE:
            continue  # an invalid verdict shows nothing useful
        pred: dict[str, Any] = {"model_version": v["judge"],
                                "result": [_choice("preference", "prompt", _WINNER_CHOICE[v["winner"]])]}
        if v.get("prob_a") is not None:
            pred["score"] = float(v["prob_a"])
        out.append(pred)
    return out


_STEP_CHOICE = {1: "positive", 0: "neutral", -1: "negative"}


def _step_prediction(judge: str, labels: dict[int, int | None]) -> dict[str, Any]:
    """A step judge's labels as a Label Studio prediction of the step config: each labelled step's choice and, where
    it found one, the first error's number (1-based)."""
    result = [_choice(f"step_label_{i}", f"step_{i}", _STEP_CHOICE[lab]) for i, lab in sorted(labels.items())
              if lab is not None]
    first = StepLabel.first_error(labels)
    if first is not None:
        result.append({"from_name": "first_error", "to_name": "question", "type": "number",
                       "value": {"number": first + 1}})
    return {"model_version": judge, "result": result}


def candidates(con: duckdb.DuckDBPyConnection, kind: str, round_id: str,
               origins: Sequence[str] = DEFAULT_ORIGINS) -> list[Candidate]:
    """Every item of ``kind`` in the round, with task data (see ``annotation.configs``) and AI predictions."""
    params = {"round_id": round_id, "origins": list(origins)}
    if kind == "pairwise":
        rows = db.fetch_dicts(con, db.query("annotation_pair_candidates"), params)
        return [Candidate((r["a_id"], r["b_id"]),
                          configs.pairwise_task(r["question"], r["a_text"], r["b_text"], prompt_id=r["prompt_id"],
                                                response_a_id=r["a_id"], response_b_id=r["b_id"]),
                          _pair_predictions(r["verdicts"]), bool(r["inconsistent"]), bool(r["disagreement"]))
                for r in rows]
    if kind == "ranking":
        rows = db.fetch_dicts(con, db.query("annotation_ranking_candidates"), params)
        return [Candidate(tuple(r["ids"]),
                          configs.ranking_task(r["question"], list(zip(r["ids"], r["texts"])),
                                               prompt_id=r["prompt_id"]),
                          [{"model_version": v["judge"],
                            "result": [{"from_name": "ranker", "to_name": "items", "type": "ranker",
                                        "value": {"ranker": {"ranker": list(v["order"])}}}]}
                           for v in r["verdicts"] or []],
                          disagreement=len({tuple(v["order"]) for v in r["verdicts"] or []}) > 1)
                for r in rows]
    rows = db.fetch_dicts(con, db.query("annotation_response_candidates"), {**params, "need_steps": kind == "step"})
    out = []
    for r in rows:
        meta = {"prompt_id": r["prompt_id"], "response_id": r["id"]}
        preds: list[dict[str, Any]] = []
        if kind == "binary":
            data = configs.binary_task(r["question"], r["text"], **meta)
            preds = [{"model_version": v["judge"], "score": float(v["score"]),
                      "result": [_choice("thumbs", "response", "good" if v["score"] >= 0.5 else "bad")]}
                     for v in r["verdicts"] or []]
        elif kind == "step":
            data = configs.step_task(r["question"], list(r["steps"]), **meta)
            verdicts = [(v["judge"], dict(zip(v["steps"], v["labels"]))) for v in r["step_verdicts"] or []]
            preds = [_step_prediction(judge, labels) for judge, labels in verdicts]
            firsts = {StepLabel.first_error(labels) for _, labels in verdicts}
            # PRM800K's pick for people: a convincing wrong answer (a step judge passed every step of a solution
            # whose final answer is wrong); then solutions whose step judges put the first error apart
            convincing = bool(r["wrong_answer"]) and None in firsts
            out.append(Candidate((r["id"],), data, preds, inconsistent=convincing, disagreement=len(firsts) > 1))
            continue
        else:
            data = configs.correction_task(r["question"], r["text"], **meta)
        disagree = len({v["score"] >= 0.5 for v in r["verdicts"] or []}) > 1
        out.append(Candidate((r["id"],), data, preds, disagreement=disagree))
    return out


# ---------------------------------------------------------------------------------------------- ordering


def order_candidates(cands: Sequence[Candidate], strategy: Strategy = "inconsistent", sample: int | None = None,
                     seed: int = 0, audit: float = 0.1) -> list[Candidate]:
    """Priority order, then the sample: flagged items first, with ``ceil(audit * sample)`` random unflagged ones.

    Within a priority group the order is a seeded hash of the item ids (stable across runs and machines).
    """
    def rnd(c: Candidate) -> str:
        return ids.content_id("audit", {"seed": seed, "items": list(c.item_ids)})

    if strategy == "random":
        ordered = sorted(cands, key=rnd)
        return ordered if sample is None else ordered[:sample]
    first, second = ("inconsistent", "disagreement") if strategy == "inconsistent" else ("disagreement",
                                                                                          "inconsistent")
    flagged = sorted((c for c in cands if c.flagged),
                     key=lambda c: (not getattr(c, first), not getattr(c, second), rnd(c)))
    rest = sorted((c for c in cands if not c.flagged), key=rnd)
    if sample is None:
        return flagged + rest
    n_audit = min(len(rest), math.ceil(audit * sample)) if rest else 0
    take_flagged = min(len(flagged), sample - n_audit)
    chosen = flagged[:take_flagged]
    return chosen + rest[:sample - len(chosen)]


# ---------------------------------------------------------------------------------------------- plan


def plan_push(con: duckdb.DuckDBPyConnection, kind: str, round: str, sample: int | None = None,
              strategy: Strategy = "inconsistent", seed: int = 0, audit: float = 0.1,
              origins: Sequence[str] = DEFAULT_ORIGINS,
              gold: Mapping[tuple[str, ...], str] | None = None) -> list[AnnotationTask]:
    """New annotation tasks for ``kind`` in ``round``, best first; items already sent are skipped.

    Args:
        gold: known answers for quality-control tasks, keyed by the task's item ids (pairwise: ``a``/``b``/``tie``;
            binary: ``good``/``bad``). Gold tasks always go out (ahead of the sample) and carry the answer in the
            task's ``meta`` (not shown to annotators).

    Returns:
        ``AnnotationTask`` rows without project/task ids; each ``payload`` is the Label Studio task as it will be
        imported: ``{"data": {...}, "predictions": [...], "meta": {...}}``.
    """
    request = PushRequest(kind, round, sample, strategy, seed, audit, tuple(origins))
    cands = candidates(con, kind, round, request.origins)
    tids = {c.item_ids: task_id(kind, round, c.item_ids) for c in cands}
    existing = {r[0] for r in con.execute(db.query("annotation_existing_tasks"), {"ids": list(tids.values())})
                .fetchall()} if tids else set()
    fresh = [c for c in cands if tids[c.item_ids] not in existing]
    gold = dict(gold or {})
    gold_first = [c for c in fresh if c.item_ids in gold]
    ordered = gold_first + order_candidates([c for c in fresh if c.item_ids not in gold], strategy, sample, seed,
                                            audit)
    tasks = []
    for c in ordered:
        tid = tids[c.item_ids]
        payload: dict[str, Any] = {"data": {**c.data, "alignloop_task_id": tid, "round": round},
                                   "predictions": c.predictions}
        meta: dict[str, Any] = {"inconsistent": c.inconsistent, "disagreement": c.disagreement}
        if c.item_ids in gold:
            meta["gold_answer"] = gold[c.item_ids]
        payload["meta"] = meta
        tasks.append(AnnotationTask(tid, kind, round, list(c.item_ids), payload))
    return tasks


# ---------------------------------------------------------------------------------------------- send / record


def project_for(client: LabelStudioClient, round_id: str, kind: str, questions: Sequence[str] | None = None
                ) -> Project:
    """The Label Studio project of a round and feedback kind, created on first use. A pairwise project asks
    ``questions`` where they are given; otherwise an existing one keeps the aspect questions it asks (a new one
    asks the defaults), so a push or a round that names none never drops a question from a project."""
    def config(existing: Project | None) -> str:
        asked = questions
        if asked is None and kind == "pairwise" and existing is not None:
            asked = tuple(configs.aspect_questions(existing.label_config).values())
        return configs.config_for(kind, None if asked is None else tuple(asked))

    return client.get_or_create_project(project_title(round_id, kind), config,
                                        description=f"alignloop {kind} feedback for round {round_id}")


def configure_only(client: LabelStudioClient, request: PushRequest) -> int | None:
    """With nothing new to send: apply the request's project settings (questions, overlap, instructions) where it
    names any, so a push that only changes them does so; the project's id, or None when none was named."""
    if request.questions is None and request.overlap is None and request.instructions is None:
        return None
    project = project_for(client, request.round, request.kind, request.questions)
    return client.configure_project(project, request.overlap, request.instructions).id


def send(client: LabelStudioClient, kind: str, round_id: str, tasks: Sequence[AnnotationTask],
         questions: Sequence[str] | None = None, overlap: int | None = None, instructions: str | None = None
         ) -> tuple[int, list[AnnotationTask], int]:
    """Create or reuse the project of (round, kind) and import the tasks in ONE bulk call.

    Tasks already in the project (same ``alignloop_task_id``: a push whose warehouse write was lost) are
    reused instead of imported twice.

    Returns:
        (project id, the tasks with project and task ids set, how many were recovered rather than imported)
    """
    project = client.configure_project(project_for(client, round_id, kind, questions), overlap, instructions)
    if not tasks:
        return project.id, [], 0
    present = {t.data.get("alignloop_task_id"): t.id for t in client.list_tasks(project.id)}
    todo = [t for t in tasks if t.id not in present]
    new_ids = client.import_tasks(project.id, [t.payload for t in todo]) if todo else []
    by_id = dict(zip((t.id for t in todo), new_ids))
    by_id.update({t.id: present[t.id] for t in tasks if t.id in present})
    placed = [replace(t, project_id=project.id, task_id=int(by_id[t.id])) for t in tasks]
    return project.id, placed, len(tasks) - len(todo)


def record(con: duckdb.DuckDBPyConnection, tasks: Sequence[AnnotationTask]) -> int:
    """Write the sent tasks to ``annotation_tasks`` in one transaction; returns rows added."""
    if not tasks:
        return 0
    with db.transaction(con):
        return db.ingest(con, "annotation_tasks", list(tasks))


def push(db_path: str, client: LabelStudioClient, request: PushRequest,
         gold: Mapping[tuple[str, ...], str] | None = None) -> PushResult:
    """Plan (read), send to Label Studio, then record (one short write)."""
    with db.connect(db_path) as con:
        tasks = plan_push(con, request.kind, request.round, request.sample, request.strategy, request.seed,
                          request.audit, request.origins, gold)
    title = project_title(request.round, request.kind)
    if not tasks:
        return PushResult(configure_only(client, request), title, 0, 0, 0, 0)
    project_id, placed, recovered = send(client, request.kind, request.round, tasks, request.questions,
                                         request.overlap, request.instructions)
    with db.connect(db_path) as con:
        added = record(con, placed)
    return PushResult(project_id, title, len(tasks), len(tasks) - recovered, recovered, added)


def payload_of(row_payload: str | dict) -> dict[str, Any]:
    """The Label Studio task stored in ``annotation_tasks.payload``."""
    return loads(row_payload) if isinstance(row_payload, str) else row_payload
