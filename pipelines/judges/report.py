"""Judge quality report: position and length bias, swap consistency, invalid verdicts, agreement with people, cost;
for listwise judges the same under their permutations, against people's rankings and pairwise verdicts; for rating
judges (AI, reward model, rule) how often they score higher the answer people preferred; for step judges (AI,
process reward model) how often their step labels and first errors match people's; for every scorer of samples to
problems with a reference answer, how often its best of N is right (``best_of_n``); for every AI judge how many of its
replies could be read, and why the others could not (``verdicts``).

    alignloop judge report [--round R] [--json] [--png FILE]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import duckdb

from alignloop.pipelines.judges import parsing
from alignloop.pipelines.judges.best_of_n import BEST_OF_N_METRICS, BestOfNQuality, best_of_n_quality
from alignloop.pipelines.judges.templates import letters
from alignloop.pipelines.judges.verdict_quality import VERDICT_METRICS, VerdictQuality, verdict_quality
from alignloop.warehouse import db
from alignloop.warehouse.records import Evaluation, StepLabel, loads

TIE_RULE = ("agreement with people is scored on the pairs they decided (a or b won; their ties have no winner to "
            "agree with): human_accuracy over the pairs the judge decided too, human_ties (a rating judge's "
            "score_ties) the share it tied, human_accuracy_half with each of its ties as half a right answer")
"""How every section scores a judge's ties against people (pairwise, listwise, rating judges): the same rule."""
# invalid_rate is stored once per judge, from the verdicts section (VERDICT_METRICS), which measures every kind
METRICS = ("consistency", "first_position", "longer", "human_accuracy", "human_ties", "human_accuracy_half",
           "human_kappa")
RATING_METRICS = ("human_accuracy", "human_accuracy_half", "heldout_accuracy", "heldout_accuracy_half", "score_ties",
                  "longer")
STEP_METRICS = ("step_accuracy", "step_kappa", "first_error_agreement", "negative_rate", "human_negative_rate")
LISTWISE_METRICS = ("consistency", "first_position", "chance", "longer", "human_top_agreement", "human_tau",
                    "human_accuracy", "human_ties", "human_accuracy_half")


def agreement(outcomes: list[str]) -> tuple[float | None, float | None, float | None]:
    """(accuracy over the pairs the judge decided, its tie rate, accuracy with a tie as half a right answer) from its
    outcome on each pair people decided: "right", "wrong" or "tie" (TIE_RULE)."""
    if not outcomes:
        return None, None, None
    right, ties = outcomes.count("right"), outcomes.count("tie")
    decided = len(outcomes) - ties
    return (right / decided if decided else None), ties / len(outcomes), (right + 0.5 * ties) / len(outcomes)


@dataclass(frozen=True)
class JudgeQuality:
    judge: str
    """Judge id (model:template@version)."""
    comparisons: int
    consistency: float | None
    """Share of pairs (both orders valid) whose two orders picked the same response."""
    first_position: float | None
    """P(prefers the answer shown first), over single-order verdicts that picked a side; 0.5 is unbiased."""
    longer: float | None
    """P(prefers the longer answer), over decided pairs of unequal length."""
    invalid_rate: float | None
    """Share of single-order verdicts it was asked for (imported comparisons were never asked) that it did not give."""
    human_pairs: int
    """Pairs people decided (a or b won) that it gave a verdict on (TIE_RULE)."""
    human_accuracy: float | None
    """Share of those it decided too where it picked people's winner."""
    human_ties: float | None
    """Share of them it called a tie."""
    human_accuracy_half: float | None
    """Share where it picked people's winner, each tie counting half."""
    human_kappa: float | None
    """Cohen's kappa of its verdicts (a, b, tie) against people's on those pairs (chance-corrected)."""
    calls: float
    tokens: float
    seconds: float
    aspect: str = "overall"
    """What its comparisons judged (a judge run with ``--aspect``); people's verdicts of that aspect are its human
    labels."""

    @property
    def target(self) -> str:
        """The judge as reports name it: its id, with the aspect where it is not overall."""
        return self.judge if self.aspect == "overall" else f"{self.judge} [{self.aspect}]"


@dataclass(frozen=True)
class RatingJudgeQuality:
    judge: str
    aspect: str
    human_pairs: int
    """Human comparisons with a winner whose two responses this judge scored on this aspect (TIE_RULE)."""
    human_accuracy: float | None
    """Share of those it scored unequally where the human's winner scored higher, as reward-model accuracy."""
    human_accuracy_half: float | None
    """Share of them where the human's winner scored higher, equal scores counting half."""
    heldout_pairs: int
    """Those of them on held-out (test split) prompts: pairs a reward model trained on the train split never saw."""
    heldout_accuracy: float | None
    """``human_accuracy`` over the held-out pairs only."""
    heldout_accuracy_half: float | None
    """``human_accuracy_half`` over the held-out pairs only."""
    score_ties: float | None
    """Share of them where both scores were equal (a coarse scale or a rule judge cannot separate them): its tie
    rate, as ``human_ties`` of the other sections."""
    longer: float | None
    """P(the higher score goes to the longer answer), over pairs of unequal scores and lengths."""

    @property
    def target(self) -> str:
        return f"{self.judge} [{self.aspect}]"


@dataclass(frozen=True)
class StepJudgeQuality:
    judge: str
    steps: int
    """Steps this judge and a person both labelled (a step two people labelled counts twice)."""
    step_accuracy: float | None
    """Share of them given the same label (-1 / 0 / +1)."""
    step_kappa: float | None
    """Cohen's kappa of that agreement (chance-corrected)."""
    solutions: int
    """(solution, person) pairs compared."""
    first_error_agreement: float | None
    """Share of them where the judge's first -1 is the person's first -1 (both none counts), over the steps both
    labelled: PRM800K's found-error verdict."""
    negative_rate: float | None
    """The judge's share of -1 labels on those steps."""
    human_negative_rate: float | None
    """People's share of -1 labels on the same steps."""


@dataclass(frozen=True)
class ListwiseJudgeQuality:
    judge: str
    aspect: str
    rankings: int
    consistency: float | None
    """Share of rankings with two or more readable orders whose orders all put the same response first."""
    first_position: float | None
    """P(the response shown first is ranked first), over readable orders; ``chance`` is the unbiased rate."""
    chance: float | None
    """What ``first_position`` and ``longer`` are for a judge blind to position and length: the mean of 1/k."""
    longer: float | None
    """P(its best is the longest response of the list), over lists with one longest response."""
    invalid_rate: float | None
    """Share of its replies (one per order shown) that could not be read as a ranking."""
    human_lists: int
    """People's rankings of the same responses on the same aspect."""
    human_top_agreement: float | None
    """Share of them with the same best response."""
    human_tau: float | None
    """Mean Kendall tau between its order and theirs (1: the same order, -1: reversed)."""
    human_pairs: int
    """People's pairwise verdicts (a or b won, the latest per pair) on two of its responses, same aspect."""
    human_accuracy: float | None
    """Share of them where its order puts people's winner higher, over those it did not tie (TIE_RULE)."""
    human_ties: float | None
    """Share of them it tied: equal Borda points (its order then follows the responses' ids, not its judgment)."""
    human_accuracy_half: float | None
    """Share where its order puts people's winner higher, each tie counting half."""

    @property
    def target(self) -> str:
        return self.judge if self.aspect == "overall" else f"{self.judge} [{self.aspect}]"


def kendall_tau(a: list[str], b: list[str]) -> float | None:
    """Kendall's tau between two orders of the same items (best first); None with fewer than two."""
    if len(a) < 2 or set(a) != set(b):
        return None
    rank = {x: i for i, x in enumerate(b)}
    signs = [1 if rank[x] < rank[y] else -1 for x, y in combinations(a, 2)]  # a ranks x above y
    return sum(signs) / len(signs)


def cohen_kappa(x: list[str], y: list[str]) -> float | None:
    """(p_o - p_e) / (1 - p_e) for two raters' labels; None when undefined (no items, or p_e = 1)."""
    n = len(x)
    if n == 0 or n != len(y):
        return None
    labels = set(x) | set(y)
    po = sum(a == b for a, b in zip(x, y)) / n
    pe = sum((x.count(k) / n) * (y.count(k) / n) for k in labels)
    return None if pe >= 1.0 else (po - pe) / (1.0 - pe)


def _mean(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def judge_quality(con: duckdb.DuckDBPyConnection, round_id: str | None = None) -> list[JudgeQuality]:
    """One row per AI judge (model + template version) and aspect from the comparisons stored."""
    rows = db.fetch_dicts(con, db.query("judge_quality_rows"), {"round_id": round_id})
    by_judge: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_judge.setdefault((r["judge"], r["aspect"]), []).append(r)
    return [_quality(j, rs, aspect) for (j, aspect), rs in by_judge.items()]


def _quality(judge: str, rs: list[dict], aspect: str) -> JudgeQuality:
    verdicts = [r[k] for r in rs if r["template"] for k in ("pos_ab", "pos_ba")]  # imported ones were never asked
    sided = [v for v in verdicts if v in ("A", "B")]
    longer = [(r["winner"] == "a") == (r["len_a"] > r["len_b"]) for r in rs
              if r["winner"] in ("a", "b") and r["len_a"] is not None and r["len_b"] is not None
              and r["len_a"] != r["len_b"]]
    human = [(r["winner"], r["human_winner"]) for r in rs if r["human_winner"] in ("a", "b") and r["winner"] != "invalid"]
    accuracy, ties, half = agreement(["tie" if a == "tie" else "right" if a == h else "wrong" for a, h in human])
    return JudgeQuality(
        judge=judge, comparisons=len(rs),
        consistency=_mean([bool(r["consistent"]) for r in rs if r["consistent"] is not None]),
        first_position=_mean([v == "A" for v in sided]),
        longer=_mean(longer),
        invalid_rate=_mean([v is None for v in verdicts]),
        human_pairs=len(human),
        human_accuracy=accuracy, human_ties=ties, human_accuracy_half=half,
        human_kappa=cohen_kappa([a for a, _ in human], [h for _, h in human]),
        calls=sum(r["calls"] or 0 for r in rs),
        tokens=sum((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0) for r in rs),
        seconds=sum(r["seconds"] or 0 for r in rs),
        aspect=aspect,
    )


def rating_quality(con: duckdb.DuckDBPyConnection, round_id: str | None = None) -> list[RatingJudgeQuality]:
    """One row per rating judge and aspect that scored both sides of pairs people compared (one SQL aggregate)."""
    return [RatingJudgeQuality(**r) for r in db.fetch_dicts(con, db.query("rating_judge_pairs"), {"round_id": round_id})]


def step_quality(con: duckdb.DuckDBPyConnection, round_id: str | None = None) -> list[StepJudgeQuality]:
    """One row per step judge (AI, reward model) that labelled steps people labelled too."""
    by_judge: dict[str, list[dict]] = {}
    for r in db.fetch_dicts(con, db.query("step_judge_pairs"), {"round_id": round_id}):
        by_judge.setdefault(r["judge"], []).append(r)
    return [_step_quality(judge, rows) for judge, rows in by_judge.items()]


def listwise_quality(con: duckdb.DuckDBPyConnection, round_id: str | None = None) -> list[ListwiseJudgeQuality]:
    """One row per listwise AI judge and aspect, from its rankings' replies under each order shown (read again, as
    the judge read them) and people's rankings and pairwise verdicts of the same responses."""
    by_judge: dict[tuple[str, str], list[dict]] = {}
    for r in db.fetch_dicts(con, db.query("listwise_judge_rows"), {"round_id": round_id}):
        by_judge.setdefault((r["judge"], r["aspect"]), []).append(r)
    return [_listwise_quality(judge, aspect, rows) for (judge, aspect), rows in by_judge.items()]


def _readings(row: dict[str, Any], meta: dict[str, Any]) -> tuple[list[tuple[int, int]], int]:
    """Each readable reply's (index shown first, index ranked first), in the group's item indices, and how many
    replies could not be read; none for a ranking that came with no replies (an imported one, e.g. Nectar's)."""
    perms, raw = loads(row["permutations"]) or [], meta.get("raw") or []
    if not perms or not raw:
        return [], 0
    labels = letters(len(row["response_ids"]))
    read, invalid = [], 0
    for perm, text in zip(perms, raw):
        shown = parsing.read("listwise", text, labels).verdict  # positions best first
        if shown is None:
            invalid += 1
        else:
            read.append((perm[0], perm[shown[0]]))
    return read, invalid


def _listwise_quality(judge: str, aspect: str, rows: list[dict]) -> ListwiseJudgeQuality:
    consistent, first, chance, longer, invalid, replies = [], [], [], [], 0, 0
    tops, taus, pairs = [], [], []
    for r in rows:
        order, k = list(r["response_ids"]), len(r["response_ids"])
        meta = loads(r["meta"]) or {}
        read, bad = _readings(r, meta)
        invalid, replies = invalid + bad, replies + bad + len(read)
        if len(read) >= 2:
            consistent.append(len({best for _, best in read}) == 1)
        first += [shown == best for shown, best in read]
        chance += [1 / k] * len(read)
        if meta.get("invalid"):  # no reply could be read: the order stored is its group's, not the judge's
            continue
        lengths = r["lengths"] or []
        if len(lengths) == k and None not in lengths and lengths.count(max(lengths)) == 1:
            longer.append(lengths[0] == max(lengths))
        for theirs in r["human_orders"] or []:
            tops.append(theirs[0] == order[0])
            taus.append(kendall_tau(order, list(theirs)))
        pos = {x: i for i, x in enumerate(order)}
        points = dict(zip(order, r["scores"])) if r["scores"] else {}
        pairs += ["tie" if points and points[won] == points[lost] else "right" if pos[won] < pos[lost] else "wrong"
                  for won, lost in r["human_pairs"] or []]
    taus = [t for t in taus if t is not None]
    accuracy, ties, half = agreement(pairs)
    return ListwiseJudgeQuality(
        judge=judge, aspect=aspect, rankings=len(rows), consistency=_mean(consistent), first_position=_mean(first),
        chance=sum(chance) / len(chance) if chance else None, longer=_mean(longer),
        invalid_rate=invalid / replies if replies else None, human_lists=len(tops), human_top_agreement=_mean(tops),
        human_tau=sum(taus) / len(taus) if taus else None, human_pairs=len(pairs), human_accuracy=accuracy,
        human_ties=ties, human_accuracy_half=half)


def _step_quality(judge: str, rows: list[dict]) -> StepJudgeQuality:
    mine, theirs = [str(r["judge_label"]) for r in rows], [str(r["human_label"]) for r in rows]
    solutions: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        solutions.setdefault((r["response_id"], r["person"]), []).append(r)
    first = [StepLabel.first_error({r["step_index"]: r["judge_label"] for r in rs})
             == StepLabel.first_error({r["step_index"]: r["human_label"] for r in rs}) for rs in solutions.values()]
    return StepJudgeQuality(
        judge=judge, steps=len(rows), step_accuracy=_mean([a == b for a, b in zip(mine, theirs)]),
        step_kappa=cohen_kappa(mine, theirs), solutions=len(solutions), first_error_agreement=_mean(first),
        negative_rate=_mean([x == "-1" for x in mine]), human_negative_rate=_mean([x == "-1" for x in theirs]))


Quality = (JudgeQuality | ListwiseJudgeQuality | RatingJudgeQuality | StepJudgeQuality | BestOfNQuality
           | VerdictQuality)


def full_report(con: duckdb.DuckDBPyConnection, round_id: str | None = None) -> dict[str, list[Quality]]:
    """Every judge measured, by kind: pairwise, listwise, ratings (rating judges), steps (step judges), best_of_n
    (rating judges picking among samples of problems with a reference answer) and verdicts (every AI judge's replies
    read or not)."""
    return {"pairwise": judge_quality(con, round_id), "listwise": listwise_quality(con, round_id),
            "ratings": rating_quality(con, round_id), "steps": step_quality(con, round_id),
            "best_of_n": best_of_n_quality(con, round_id), "verdicts": verdict_quality(con, round_id)}


def _target(q: Quality) -> tuple[str, tuple[str, ...]]:
    if isinstance(q, BestOfNQuality):
        return q.target, BEST_OF_N_METRICS
    if isinstance(q, VerdictQuality):
        return q.target, VERDICT_METRICS
    if isinstance(q, ListwiseJudgeQuality):
        return q.target, LISTWISE_METRICS
    if isinstance(q, RatingJudgeQuality):
        return q.target, RATING_METRICS
    return (q.judge, STEP_METRICS) if isinstance(q, StepJudgeQuality) else (q.target, METRICS)


def evaluations(report: list[Quality], round_id: str | None = None) -> list[Evaluation]:
    """One ``judge_quality`` evaluation per judge (a rating judge: per aspect) and metric; details hold the row."""
    out = []
    for q in report:
        target, metrics = _target(q)
        details = asdict(q) | ({"tie_rule": TIE_RULE} if hasattr(q, "human_accuracy_half") else {})
        out += [Evaluation.create("judge_quality", target, m, getattr(q, m), round_id, details=details)
                for m in metrics]
    return out


def store(con: duckdb.DuckDBPyConnection, report: list[Quality], round_id: str | None = None) -> int:
    """Replace this report's evaluations (same judge, round and metric) in one transaction."""
    rows = evaluations(report, round_id)
    if not rows:
        return 0
    with db.transaction(con):
        con.execute(db.query("delete_evaluations"), {"ids": [r.id for r in rows]})
        return db.ingest(con, "evaluations", rows)


def plot(report: list[Quality], path: str | Path) -> Path:
    """Bar chart per judge of the bias and agreement rates (dashed line: 0.5, no position/length bias).

    A rating or step judge has no position or consistency figures: no bar is drawn for them (not a zero). Best-of-N
    figures are curves (:func:`pipelines.judges.best_of_n.plot_curves`), not drawn here, nor the verdicts section
    (its invalid rates are the pairwise and listwise bars').
    """
    report = [q for q in report if not isinstance(q, BestOfNQuality | VerdictQuality)]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("consistency", "first_position", "longer", "invalid_rate", "human_accuracy", "human_ties",
             "human_accuracy_half", "heldout_accuracy", "score_ties")
    if any(isinstance(q, StepJudgeQuality) for q in report):
        shown += ("step_accuracy", "first_error_agreement")
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(shown) * max(len(report), 1) / 2), 4))
    width = 0.8 / max(len(report), 1)
    for j, q in enumerate(report):
        vals = [getattr(q, m, None) for m in shown]
        label, n = (q.target, q.human_pairs) if isinstance(q, RatingJudgeQuality) else \
            (q.judge, q.steps) if isinstance(q, StepJudgeQuality) else \
            (q.target, q.rankings) if isinstance(q, ListwiseJudgeQuality) else (q.target, q.comparisons)
        ax.bar([i + j * width for i in range(len(shown))], [float("nan") if v is None else v for v in vals], width,
               label=f"{label} (n={n})")
    ax.axhline(0.5, ls="--", c="grey", lw=1)
    ax.set_xticks([i + width * (len(report) - 1) / 2 for i in range(len(shown))], list(shown))
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate")
    ax.set_title("Judge quality (position bias: first_position far from 0.5; listwise: from chance, 1/k)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
