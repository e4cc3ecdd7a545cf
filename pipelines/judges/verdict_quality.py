"""How many of each AI judge's replies could be read, and why the others could not (every judge kind; a judge
answering garbage shows here as invalid, never as ties or as A)."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from alignloop.pipelines.judges.parsing import GRAMMARS
from alignloop.warehouse import db

VERDICT_METRICS = ("invalid_rate",)
TOP_REASONS = 5


@dataclass(frozen=True)
class VerdictQuality:
    judge: str
    aspect: str
    kind: str
    """The judge kind its template's grammar belongs to (pairwise, listwise, rating, binary, steps)."""
    verdicts: int
    """Verdicts it was asked for: one per order shown (pairwise, listwise), per rating, per step label."""
    invalid: int
    """Those its replies did not give (stored as invalid: never a tie, a side or a score)."""
    invalid_rate: float | None
    reasons: dict[str, int] = field(default_factory=dict)
    """Its commonest reasons (up to TOP_REASONS) with their counts."""

    @property
    def target(self) -> str:
        """The judge as its kind's own report section names it, so stored figures line up."""
        if self.kind in ("rating", "binary"):
            return f"{self.judge} [{self.aspect}]"
        if self.kind == "steps" or self.aspect == "overall":
            return self.judge
        return f"{self.judge} [{self.aspect}]"


def verdict_quality(con: duckdb.DuckDBPyConnection, round_id: str | None = None) -> list[VerdictQuality]:
    """One row per AI judge and aspect that read replies: its invalid rate and reasons."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in db.fetch_dicts(con, db.query("judge_verdicts"), {"round_id": round_id}):
        groups.setdefault((r["judge"], r["aspect"], r["template"]), []).append(r)
    out = []
    for (judge, aspect, template), rows in groups.items():
        total = sum(r["n"] for r in rows)
        bad = [r for r in rows if r["invalid"]]
        invalid = sum(r["n"] for r in bad)
        grammar = GRAMMARS.get(template)
        out.append(VerdictQuality(judge, aspect, grammar.kind if grammar else template, total, invalid,
                                  invalid / total if total else None,
                                  {r["reason"]: r["n"] for r in bad[:TOP_REASONS]}))
    return out
