"""Bring human feedback back from Label Studio: ``alignloop annotate pull [--round R]``.

``pull`` reads the tasks recorded by ``push``, exports every annotation of their projects, validates and maps
each one (``collect``, pure), then writes all rows in one transaction (``store``). Feedback rows are upserted
with ``db.replace_feedback``: an edited annotation replaces the stored verdict and the old row goes to
``feedback_history``; pulling again adds nothing. A step annotation gives the annotator's whole labelling of a
response, so labels of steps an edited annotation no longer labels go to ``feedback_history`` too. Annotations
that cannot be trusted are reported, never written: a task the warehouse does not know, a task marked deleted,
items no longer in the warehouse, a cancelled (skipped) annotation, or a result the labeling config does not
allow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import duckdb

from alignloop.annotation.client import ExportedAnnotation, LabelStudioClient
from alignloop.annotation.configs import CRITERIA
from alignloop.annotation.mapping import FeedbackRows, SentTask, annotator_judge, to_feedback
from alignloop.warehouse import db
from alignloop.warehouse.records import loads


@dataclass(frozen=True)
class Skipped:
    """An annotation that was not written, and why."""

    project_id: int
    task_id: int
    annotation_id: int
    reason: str


@dataclass
class PullPlan:
    rows: FeedbackRows = field(default_factory=FeedbackRows)
    skipped: list[Skipped] = field(default_factory=list)
    annotated: set[str] = field(default_factory=set)
    """``annotation_tasks`` ids with at least one valid annotation."""
    deleted: set[str] = field(default_factory=set)
    """``annotation_tasks`` ids whose Label Studio task no longer exists."""
    step_scopes: set[tuple[str, str]] = field(default_factory=set)
    """(judge, response id) of each valid step annotation: its rows are that annotator's whole labelling."""
    pair_scopes: set[tuple[str, str, str]] = field(default_factory=set)
    """(judge, response a, response b) of each valid pairwise annotation: its comparisons (per aspect) and ratings
    of the two responses are that annotator's whole verdict."""
    annotations: int = 0


@dataclass(frozen=True)
class Written:
    """Rows per table that ``store`` changed."""

    inserted: dict[str, int]
    """New rows."""
    replaced: dict[str, int]
    """Rows replaced because an annotation changed (old versions are in ``feedback_history``)."""
    removed: dict[str, int]
    """Rows an edited annotation no longer gives (step labels of steps no longer labelled; kept in history)."""


@dataclass(frozen=True)
class PullSummary:
    projects: list[int]
    annotations: int
    """Annotations exported from Label Studio."""
    inserted: dict[str, int]
    """New rows per table."""
    replaced: dict[str, int]
    """Rows replaced because an annotation changed (old versions are in ``feedback_history``)."""
    skipped: list[Skipped]
    annotated: int
    deleted: int
    removed: dict[str, int] = field(default_factory=dict)
    """Rows an edited annotation no longer gives (old versions are in ``feedback_history``)."""

    @classmethod
    def of(cls, projects: list[int], plan: PullPlan, written: Written) -> PullSummary:
        return cls(projects, plan.annotations, written.inserted, written.replaced, plan.skipped, len(plan.annotated),
                   len(plan.deleted), written.removed)

    def as_dict(self) -> dict:
        return {"projects": self.projects, "annotations": self.annotations, "inserted": self.inserted,
                "replaced": self.replaced, "removed": self.removed, "annotated_tasks": self.annotated,
                "deleted_tasks": self.deleted, "skipped": [s.__dict__ for s in self.skipped]}


def load_sent(con: duckdb.DuckDBPyConnection, round_id: str | None = None) -> list[SentTask]:
    """Tasks recorded by push (optionally of one round)."""
    return [SentTask(r["id"], r["kind"], r["round_id"], int(r["project_id"]), int(r["task_id"]),
                     tuple(r["item_ids"]), loads(r["payload"]), r["status"])
            for r in db.fetch_dicts(con, db.query("annotation_pull_tasks"), {"round_id": round_id})]


def collect(sent: Iterable[SentTask], exported: Mapping[int, list[ExportedAnnotation]],
            live_tasks: Mapping[int, set[int]], known_responses: set[str],
            project_configs: Mapping[int, str] | None = None) -> PullPlan:
    """Validate and map exported annotations (pure).

    Args:
        sent: the warehouse's tasks.
        exported: annotations per project id.
        live_tasks: task ids that still exist in Label Studio, per project id.
        known_responses: response ids present in the warehouse.
        project_configs: each project's labeling config (the questions it asks); default the kind's own.
    """
    project_configs = project_configs or {}
    plan = PullPlan()
    by_key = {(t.project_id, t.task_id): t for t in sent}
    for (project_id, task_id), task in by_key.items():
        if project_id in live_tasks and task_id not in live_tasks[project_id]:
            plan.deleted.add(task.id)
    for project_id, project_annotations in exported.items():
        latest: dict[tuple[int, int], ExportedAnnotation] = {}
        for ann in sorted(project_annotations, key=lambda a: a.annotation_id):
            plan.annotations += 1

            def skip(reason: str, ann: ExportedAnnotation = ann, project_id: int = project_id) -> None:
                plan.skipped.append(Skipped(project_id, ann.task_id, ann.annotation_id, reason))

            task = by_key.get((project_id, ann.task_id))
            if task is None:
                skip("task not known to the warehouse (not pushed by alignloop)")
            elif task.status == "deleted" or task.id in plan.deleted:
                skip("task is marked deleted")
            elif ann.was_cancelled:
                skip("annotation was cancelled (task skipped by the annotator)")
            elif ann.annotator.id < 0:
                skip("annotation has no annotator")
            elif missing := [i for i in task.item_ids if i not in known_responses]:
                skip(f"responses no longer in the warehouse: {missing}")
            else:
                key = (ann.task_id, ann.annotator.id)
                if key in latest:  # one verdict per annotator and task: the newest annotation wins
                    older = latest[key]
                    skip(f"superseded by annotation {ann.annotation_id} of the same annotator", older)
                latest[key] = ann
        for ann in latest.values():
            task = by_key[(project_id, ann.task_id)]
            rows, problems = to_feedback(task, ann, project_configs.get(project_id))
            if problems:
                plan.skipped.append(Skipped(project_id, ann.task_id, ann.annotation_id,
                                            "invalid result: " + "; ".join(problems)))
                continue
            plan.rows.extend(rows)
            plan.annotated.add(task.id)
            if task.kind == "step":
                plan.step_scopes.add((annotator_judge(ann.annotator), task.item_ids[0]))
            if task.kind == "pairwise":
                plan.pair_scopes.add((annotator_judge(ann.annotator), *task.item_ids))
    return plan


def _retire_step_labels(con: duckdb.DuckDBPyConnection, plan: PullPlan) -> int:
    """Move the step labels the plan's step annotations no longer give to ``feedback_history``; returns how many."""
    if not plan.step_scopes:
        return 0
    judges, responses = zip(*sorted(plan.step_scopes))
    keep = [r.id for r in plan.rows.step_labels]
    retired = [r[0] for r in con.execute(db.query("annotation_retire_step_labels"),
                                         {"judges": list(judges), "responses": list(responses), "keep": keep}
                                         ).fetchall()]
    if retired:
        con.execute(db.query("annotation_delete_step_labels"), {"ids": retired})
    return len(retired)


def _retire_pair_feedback(con: duckdb.DuckDBPyConnection, plan: PullPlan) -> dict[str, int]:
    """Move the aspect verdicts and ratings the plan's pairwise annotations no longer give to ``feedback_history``;
    returns how many per table."""
    if not plan.pair_scopes:
        return {}
    judges, a, b = (list(x) for x in zip(*sorted(plan.pair_scopes)))
    scopes = {"comparisons": ("annotation_retire_pair_comparisons", {"judges": judges, "a": a, "b": b}),
              "ratings": ("annotation_retire_pair_ratings", {"judges": judges + judges, "responses": a + b,
                                                             "aspects": list(CRITERIA)})}
    removed = {}
    for table, (query, params) in scopes.items():
        keep = [r.id for r in getattr(plan.rows, table)]
        retired = [r[0] for r in con.execute(db.query(query), {**params, "keep": keep}).fetchall()]
        if retired:
            con.execute(db.query(f"annotation_delete_{table}"), {"ids": retired})
            removed[table] = len(retired)
    return removed


def store(con: duckdb.DuckDBPyConnection, plan: PullPlan) -> Written:
    """Write a plan in ONE transaction."""
    inserted: dict[str, int] = {}
    replaced: dict[str, int] = {}
    with db.transaction(con):
        removed = {"step_labels": _retire_step_labels(con, plan), **_retire_pair_feedback(con, plan)}
        if plan.rows.responses:
            inserted["responses"] = db.ingest(con, "responses", plan.rows.responses)
        for table in ("comparisons", "rankings", "ratings", "step_labels", "corrections"):
            rows = getattr(plan.rows, table)
            if rows:
                inserted[table], replaced[table] = db.replace_feedback(con, table, rows)
        for status, ids in (("annotated", plan.annotated - plan.deleted), ("deleted", plan.deleted)):
            if ids:
                con.execute(db.query("annotation_set_status"), {"ids": sorted(ids), "status": status})
    return Written(*({k: v for k, v in counts.items() if v} for counts in (inserted, replaced, removed)))


def fetch(client: LabelStudioClient, projects: Iterable[int]
          ) -> tuple[dict[int, list[ExportedAnnotation]], dict[int, set[int]], dict[int, str]]:
    """What :func:`collect` reads of Label Studio, per project: its annotations, the ids of its tasks that still
    exist, and its labeling config (the questions it asks; absent for a project Label Studio no longer has)."""
    wanted = sorted(set(projects))
    exported = {p: client.export_annotations(p) for p in wanted}
    live = {p: {t.id for t in client.list_tasks(p)} for p in wanted}
    configs = {p.id: p.label_config for p in client.list_projects() if p.id in exported and p.label_config}
    return exported, live, configs


def pull(db_path: str, client: LabelStudioClient, round_id: str | None = None) -> PullSummary:
    """Export, validate, map and store the annotations of every project recorded in ``annotation_tasks``."""
    with db.connect(db_path) as con:
        sent = load_sent(con, round_id)
        item_ids = sorted({i for t in sent for i in t.item_ids})
        known = {r[0] for r in con.execute(db.query("annotation_known_responses"), {"ids": item_ids}).fetchall()}
    projects = sorted({t.project_id for t in sent})
    exported, live, configs = fetch(client, projects)
    plan = collect(sent, exported, live, known, configs)
    with db.connect(db_path) as con:
        written = store(con, plan)
    return PullSummary.of(projects, plan, written)
