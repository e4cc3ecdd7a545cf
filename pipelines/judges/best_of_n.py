"""Best-of-N with the warehouse's scorers (Lightman et al. 2023, Sec. 3): of N sampled solutions to a problem with a
reference answer, each rating judge (a PRM, a reward model as ORM, an AI judge, a rule) picks its highest-scored one;
how often that pick is right, as N grows, against majority vote over final answers, the share of right samples (a
random pick) and the oracle (any of the N right).

    curve = selection_curve(problems, score=lambda s: scores[s.id])   # {N: {"best_of_n": ..., "majority": ...}}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import duckdb

from alignloop.pipelines.judges.config import ResponseItem
from alignloop.pipelines.verifiers.answers import extract_answer, normalize
from alignloop.pipelines.verifiers.checks import FinalAnswer
from alignloop.warehouse import db

BEST_OF_N_METRICS = ("best_of_n", "majority", "mean_correct", "oracle")


@dataclass(frozen=True, slots=True)
class Sample:
    """One sampled solution of a problem."""

    id: str
    answer: str | None
    """Its final answer, normalised (what majority vote counts); None where it gives none."""
    correct: bool
    """Whether the final answer matches the prompt's reference (the ground truth)."""


def pick_best(samples: Sequence[Sample], score: Callable[[Sample], float]) -> Sample:
    """The highest-scored sample; a tie keeps the earlier one (sample order)."""
    return max(samples, key=score)  # max keeps the first of equal keys


def pick_majority(samples: Sequence[Sample]) -> Sample:
    """A sample giving the most frequent final answer (the earliest of them); with no answer at all, the first."""
    votes = Counter(s.answer for s in samples if s.answer is not None)
    if not votes:
        return samples[0]
    top = votes.most_common(1)[0][0]  # equal counts: the answer seen first
    return next(s for s in samples if s.answer == top)


def sizes(largest: int) -> list[int]:
    """The N a curve is drawn at: 1, 2, 4, ... up to ``largest``, and ``largest`` itself."""
    out = [1]
    while out[-1] * 2 < largest:
        out.append(out[-1] * 2)
    return out + ([largest] if largest > 1 else [])


def selection_curve(problems: Sequence[Sequence[Sample]], score: Callable[[Sample], float] | None = None
                    ) -> dict[int, dict[str, float]]:
    """Per N: the share of problems whose pick among their first N samples is right, by ``score`` (``best_of_n``,
    when given) and by majority vote, with the mean share of right samples and the oracle. A problem with fewer
    than N samples is left out at that N."""
    curve: dict[int, dict[str, float]] = {}
    for n in sizes(max((len(p) for p in problems), default=0)):
        firsts = [list(p[:n]) for p in problems if len(p) >= n]
        row = {"problems": float(len(firsts)),
               "majority": _share(pick_majority(f).correct for f in firsts),
               "mean_correct": _share(sum(s.correct for s in f) / n for f in firsts),
               "oracle": _share(any(s.correct for s in f) for f in firsts)}
        if score is not None:
            row["best_of_n"] = _share(pick_best(f, score).correct for f in firsts)
        curve[n] = row
    return curve


def _share(values) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else float("nan")


@dataclass(frozen=True)
class BestOfNQuality:
    """A scorer picking the best of N samples, on the problems whose every sample it scored."""

    judge: str
    aspect: str
    problems: int
    """(round, prompt) groups with a reference answer and two or more samples, all scored by this judge."""
    samples: int
    """The largest N: the most samples any of those problems has (the figures below are at this N)."""
    best_of_n: float | None
    """Share of problems whose highest-scored sample is right."""
    majority: float | None
    """Majority vote over the same samples' final answers."""
    mean_correct: float | None
    """Share of right samples (what a random pick scores)."""
    oracle: float | None
    """Share of problems with a right sample (the ceiling of any pick)."""
    curve: dict[int, dict[str, float]] = field(default_factory=dict)
    """The same figures at N = 1, 2, 4, ... (first N samples of each problem)."""

    @property
    def target(self) -> str:
        return f"{self.judge} [{self.aspect}] best-of-N"


def best_of_n_quality(con: duckdb.DuckDBPyConnection, round_id: str | None = None) -> list[BestOfNQuality]:
    """One row per rating judge (not people) and aspect that scored every sample of some problem. Final answers are
    checked only for the problems some judge scored in full."""
    rows: dict[tuple[str, str], dict[str, dict]] = {}  # problem -> sample id -> row, in sample order
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for r in db.fetch_dicts(con, db.query("best_of_n_rows"), {"round_id": round_id}):
        rows.setdefault((r["round_id"], r["prompt_id"]), {}).setdefault(r["id"], r)
        if r["judge"] is not None:
            scores.setdefault((r["judge"], r["aspect"]), {})[r["id"]] = r["score"]
    covered = {judge: [key for key, samples in rows.items() if samples.keys() <= scored.keys()]
               for judge, scored in scores.items()}
    check = FinalAnswer()
    problems = {key: [_sample(r, check) for r in rows[key].values()] for key in {k for ks in covered.values()
                                                                                 for k in ks}}
    out = []
    for (judge, aspect), keys in sorted(covered.items()):
        if not keys:
            continue
        scored = scores[(judge, aspect)]
        curve = selection_curve([problems[k] for k in keys], lambda s, scored=scored: scored[s.id])
        top = curve[max(curve)]
        out.append(BestOfNQuality(judge, aspect, len(keys), max(curve), top["best_of_n"], top["majority"],
                                  top["mean_correct"], top["oracle"], curve))
    return out


def _sample(row: dict, check: FinalAnswer) -> Sample:
    got = extract_answer(row["text"])
    item = ResponseItem(row["id"], row["prompt_id"], "", row["text"], reference=row["reference"])
    return Sample(row["id"], normalize(got) if got else None, check.check(item).passed)


def plot_curves(report: list[BestOfNQuality], path) -> None:
    """Accuracy of each scorer's pick against N (log2 axis), with majority vote and the oracle of the first one's
    problems dashed: Lightman et al.'s figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for q in report:
        ns = sorted(q.curve)
        ax.plot(ns, [q.curve[n]["best_of_n"] for n in ns], marker="o", label=f"{q.judge} [{q.aspect}] "
                                                                                f"({q.problems} problems)")
    if report:
        first = report[0]
        ns = sorted(first.curve)
        ax.plot(ns, [first.curve[n]["majority"] for n in ns], ls="--", c="grey", label="majority vote")
        ax.plot(ns, [first.curve[n]["oracle"] for n in ns], ls=":", c="black", label="oracle (any right)")
        ax.plot(ns, [first.curve[n]["mean_correct"] for n in ns], ls="-.", c="lightgrey", label="random pick")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_ylim(0, 1)
    ax.set_xlabel("N (samples per problem)")
    ax.set_ylabel("share of problems whose pick is right")
    ax.set_title("Best-of-N by each scorer")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
