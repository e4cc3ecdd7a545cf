"""How far human feedback can be trusted: ``alignloop annotate report``.

Pure functions on small typed rows (``LabelRow``, ``HumanAiRow``), plus ``collect``/``store`` for the
warehouse. Labels are compared as nominal categories.

* Inter-annotator agreement per project: Cohen's kappa when exactly two annotators labelled the project
  (on the items both labelled), Fleiss' kappa for more (the variable-raters form: items with >= 2 labels),
  and Krippendorff's alpha (nominal) in both cases.
* Human vs AI: per AI judge, accuracy and Cohen's kappa between the human majority verdict (plurality; items
  where humans tie are left out) and the judge's winner on the same pair.
* Throughput: annotated tasks per annotator, median lead time when Label Studio reported one.
* Gold tasks (known answer in the task's meta): per-annotator accuracy.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import duckdb

from alignloop.warehouse import db
from alignloop.warehouse.records import Evaluation

EVAL_KIND = "annotation_agreement"


@dataclass(frozen=True, slots=True)
class LabelRow:
    kind: str
    round_id: str
    project_id: int
    task_id: int
    unit: str
    """Sub-item of a task ('' for the whole task, the step index for step labels)."""
    annotator: str
    label: str
    gold: str | None = None
    lead_time: float | None = None


@dataclass(frozen=True, slots=True)
class HumanAiRow:
    ai_judge: str
    item: str
    """The AI comparison's id."""
    ai_winner: str
    annotator: str
    human_winner: str


@dataclass(frozen=True)
class ProjectAgreement:
    project_id: int
    kind: str
    annotators: int
    items: int
    """Items (task, unit) with labels from at least two annotators."""
    method: Literal["cohen", "fleiss"] | None
    kappa: float | None
    alpha: float | None
    percent_agreement: float | None
    aspect: str = "overall"
    """Pairwise projects: the question (overall, or an optional aspect question such as harmlessness), each its own
    agreement."""

    @property
    def target(self) -> str:
        """The project as reports name it: ``project:ID``, with the aspect where it is not overall."""
        return f"project:{self.project_id}" + (f" [{self.aspect}]" if self.aspect != "overall" else "")


@dataclass(frozen=True)
class HumanAiAgreement:
    judge: str
    items: int
    accuracy: float | None
    kappa: float | None


@dataclass(frozen=True)
class Throughput:
    annotator: str
    tasks: int
    median_lead_time: float | None


@dataclass(frozen=True)
class GoldAccuracy:
    annotator: str
    gold_tasks: int
    correct: int
    accuracy: float


@dataclass(frozen=True)
class AgreementReport:
    projects: list[ProjectAgreement]
    human_vs_ai: list[HumanAiAgreement]
    throughput: list[Throughput]
    gold: list[GoldAccuracy]

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ statistics


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items: (p_o - p_e) / (1 - p_e). None when undefined
    (no items, or both raters used one and the same label only, p_e = 1)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs paired labels, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa over items each labelled by >= 2 raters (Fleiss 1971; raters per item may vary).

    P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)), P_bar = mean P_i, p_j = share of all labels in category j,
    P_e = sum_j p_j^2, kappa = (P_bar - P_e) / (1 - P_e).
    """
    items = [list(i) for i in items if len(i) >= 2]
    if not items:
        return None
    p_bar = statistics.fmean(
        sum(c * (c - 1) for c in Counter(i).values()) / (len(i) * (len(i) - 1)) for i in items)
    totals = Counter(label for i in items for label in i)
    n = sum(totals.values())
    p_e = sum((c / n) ** 2 for c in totals.values())
    return None if p_e == 1 else (p_bar - p_e) / (1 - p_e)


def krippendorff_alpha_nominal(items: Sequence[Sequence[str]]) -> float | None:
    """Krippendorff's alpha for nominal data from the coincidence matrix (Krippendorff 2011).

    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k, over items with >= 2 labels.
    """
    items = [list(i) for i in items if len(i) >= 2]
    if not items:
        return None
    disagree = 0.0  # sum over c != k of o_ck
    n_c: Counter[str] = Counter()
    for labels in items:
        m = len(labels)
        counts = Counter(labels)
        n_c.update(counts)
        disagree += sum(counts[c] * counts[k] for c in counts for k in counts if c != k) / (m - 1)
    n = sum(n_c.values())
    expected = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k)
    return None if expected == 0 else 1 - (n - 1) * disagree / expected


def percent_agreement(items: Sequence[Sequence[str]]) -> float | None:
    """Share of rater pairs that agree, averaged over items with >= 2 labels (Fleiss' P_bar)."""
    items = [list(i) for i in items if len(i) >= 2]
    if not items:
        return None
    return statistics.fmean(sum(c * (c - 1) for c in Counter(i).values()) / (len(i) * (len(i) - 1)) for i in items)


def majority(labels: Sequence[str]) -> str | None:
    """The plurality label, or None when the top labels tie."""
    top = Counter(labels).most_common()
    if not top or (len(top) > 1 and top[0][1] == top[1][1]):
        return None
    return top[0][0]


# ------------------------------------------------------------------------------------------------ report


def project_agreement(rows: Sequence[LabelRow]) -> list[ProjectAgreement]:
    """Inter-annotator agreement per project, and per question of a pairwise project (see the module docstring for
    the method chosen)."""
    by_project: dict[tuple[int, str], list[LabelRow]] = defaultdict(list)
    for r in rows:
        by_project[(r.project_id, r.unit if r.kind == "pairwise" and r.unit else "overall")].append(r)
    out = []
    for (pid, aspect), prows in sorted(by_project.items()):
        units: dict[tuple[int, str], dict[str, str]] = defaultdict(dict)
        for r in prows:
            units[(r.task_id, r.unit)][r.annotator] = r.label
        annotators = sorted({r.annotator for r in prows})
        shared = [u for u in units.values() if len(u) >= 2]
        lists = [list(u.values()) for u in shared]
        if len(annotators) == 2:
            x, y = annotators
            both = [u for u in shared if x in u and y in u]
            method, kappa = "cohen", cohen_kappa([u[x] for u in both], [u[y] for u in both])
        elif len(annotators) > 2:
            method, kappa = "fleiss", fleiss_kappa(lists)
        else:
            method, kappa = None, None
        out.append(ProjectAgreement(pid, prows[0].kind, len(annotators), len(shared), method if shared else None,
                                    kappa, krippendorff_alpha_nominal(lists), percent_agreement(lists), aspect))
    return out


def human_vs_ai(rows: Sequence[HumanAiRow]) -> list[HumanAiAgreement]:
    """Per AI judge: accuracy and kappa of its winners against the human majority on the same pairs."""
    grouped: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
    for r in rows:
        _, humans = grouped.setdefault((r.ai_judge, r.item), (r.ai_winner, {}))
        humans[r.annotator] = r.human_winner
    per_judge: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for (judge, _), (ai, humans) in sorted(grouped.items()):
        verdict = majority(list(humans.values()))
        if verdict is not None:
            per_judge[judge].append((verdict, ai))
    out = []
    for judge in sorted({r.ai_judge for r in rows}):
        pairs = per_judge.get(judge, [])
        acc = sum(h == a for h, a in pairs) / len(pairs) if pairs else None
        out.append(HumanAiAgreement(judge, len(pairs), acc,
                                    cohen_kappa([h for h, _ in pairs], [a for _, a in pairs]) if pairs else None))
    return out


def throughput(rows: Sequence[LabelRow]) -> list[Throughput]:
    tasks: dict[str, set[tuple[int, int]]] = defaultdict(set)
    leads: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
    for r in rows:
        tasks[r.annotator].add((r.project_id, r.task_id))
        if r.lead_time is not None:
            leads[r.annotator][(r.project_id, r.task_id)] = r.lead_time
    return [Throughput(a, len(t), statistics.median(leads[a].values()) if leads[a] else None)
            for a, t in sorted(tasks.items())]


def gold_accuracy(rows: Sequence[LabelRow]) -> list[GoldAccuracy]:
    """Per annotator: share of gold tasks answered with the known answer (whole-task labels only)."""
    seen: dict[str, dict[tuple[int, int], bool]] = defaultdict(dict)
    for r in rows:
        if r.gold is not None and r.unit == "":
            seen[r.annotator][(r.project_id, r.task_id)] = r.label == r.gold
    return [GoldAccuracy(a, len(v), sum(v.values()), sum(v.values()) / len(v)) for a, v in sorted(seen.items())]


def report(labels: Sequence[LabelRow], ai_rows: Sequence[HumanAiRow]) -> AgreementReport:
    return AgreementReport(project_agreement(labels), human_vs_ai(ai_rows), throughput(labels), gold_accuracy(labels))


# ------------------------------------------------------------------------------------------------ warehouse


def collect(con: duckdb.DuckDBPyConnection, round_id: str | None = None
            ) -> tuple[list[LabelRow], list[HumanAiRow]]:
    """Human labels and human-vs-AI rows from the warehouse (optionally one round)."""
    params = {"round_id": round_id}
    labels = [LabelRow(**r) for r in db.fetch_dicts(con, db.query("annotation_labels"), params)]
    ai_rows = [HumanAiRow(**r) for r in db.fetch_dicts(con, db.query("annotation_human_vs_ai"), params)]
    return labels, ai_rows


def evaluations(rep: AgreementReport, round_id: str | None = None) -> list[Evaluation]:
    """The report as ``evaluations`` rows (kind ``annotation_agreement``)."""
    out = []

    def add(target: str, metric: str, value: float | None, **details: object) -> None:
        out.append(Evaluation.create(EVAL_KIND, target, metric, value, round_id, details=details or None))

    for p in rep.projects:
        target = p.target
        add(target, "kappa", p.kappa, method=p.method, kind=p.kind, annotators=p.annotators, items=p.items)
        add(target, "krippendorff_alpha", p.alpha, kind=p.kind, items=p.items)
        add(target, "percent_agreement", p.percent_agreement, kind=p.kind, items=p.items)
    for h in rep.human_vs_ai:
        add(h.judge, "human_accuracy", h.accuracy, items=h.items)
        add(h.judge, "human_kappa", h.kappa, items=h.items)
    for t in rep.throughput:
        add(t.annotator, "annotated_tasks", float(t.tasks))
        if t.median_lead_time is not None:
            add(t.annotator, "median_lead_time_s", t.median_lead_time)
    for g in rep.gold:
        add(g.annotator, "gold_accuracy", g.accuracy, gold_tasks=g.gold_tasks, correct=g.correct)
    return out


def store(con: duckdb.DuckDBPyConnection, rep: AgreementReport, round_id: str | None = None) -> int:
    """Replace this report's evaluations in one transaction; returns rows written."""
    rows = evaluations(rep, round_id)
    if not rows:
        return 0
    with db.transaction(con):
        con.execute(db.query("delete_evaluations"), {"ids": [r.id for r in rows]})
        return db.ingest(con, "evaluations", rows)
