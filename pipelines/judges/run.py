"""Which items a judge sees (SQL), which it has judged already (ids first), and running it into Arrow tables.

Caching: judgment ids are content hashes of (kind, judge id with template version, items), so they are known
before judging; ids already stored are skipped and the backend is never called for them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from alignloop.pipelines.backends.base import Backend
from alignloop.pipelines.judges.config import JUDGE_KINDS, GroupItem, JudgeConfig, PairItem, ResponseItem
from alignloop.pipelines.judges.correction import CorrectionJudge
from alignloop.pipelines.judges.listwise import ListwiseJudge
from alignloop.pipelines.judges.pairwise import PairwiseJudge
from alignloop.pipelines.judges.pointwise import BinaryJudge, RatingJudge
from alignloop.pipelines.judges.rollouts import RolloutConfig, RolloutStepJudge
from alignloop.pipelines.judges.steps import StepJudge, split_steps
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.records import to_arrow

ORIGINS = ("policy", "import", "reference", "human_edit", "aligner")
_CLASSES = {"pairwise": PairwiseJudge, "listwise": ListwiseJudge, "rating": RatingJudge, "binary": BinaryJudge,
            "steps": StepJudge, "correction": CorrectionJudge}


@dataclass(frozen=True)
class JudgeRequest:
    kind: Literal["pairwise", "listwise", "rating", "binary", "steps", "correction"]
    """What to judge (see JUDGE_KINDS)."""
    round_id: str
    """Round whose responses are judged; judgments are stored in the same round."""
    limit: int | None = None
    """Judge at most this many new items (pairs, groups or responses); cached ones do not count."""
    pairs: Literal["all", "consecutive"] = "all"
    """Pairwise: all pairs of a prompt's responses (up to max_pairs_per_prompt), or sample k with k+1."""
    max_pairs_per_prompt: int = 6
    group_size: int = 4
    """Listwise: responses ranked together (a prompt's first group_size responses in sample order)."""
    origins: tuple[str, ...] = ORIGINS
    """Response origins to judge."""

    def __post_init__(self) -> None:
        if self.kind not in JUDGE_KINDS:
            raise AlignloopError(f"unknown judge kind {self.kind!r}; use one of {', '.join(JUDGE_KINDS)}")
        if not self.round_id or not self.round_id.strip():
            raise AlignloopError("--round must not be empty")
        if self.limit is not None and self.limit < 1:
            raise AlignloopError(f"--limit must be >= 1, got {self.limit}")
        if self.max_pairs_per_prompt < 1:
            raise AlignloopError(f"max_pairs_per_prompt must be >= 1, got {self.max_pairs_per_prompt}")
        if not 2 <= self.group_size <= 26:
            raise AlignloopError(f"group_size must be in 2..26, got {self.group_size}")


@dataclass
class JudgeOutput:
    judge: str
    kind: str
    tables: dict[str, pa.Table] = field(default_factory=dict)
    """Warehouse table name -> rows to ingest (responses before corrections)."""
    judged: int = 0
    cached: int = 0
    invalid: int = 0

    def summary(self) -> dict[str, Any]:
        return {"judge": self.judge, "kind": self.kind, "judged": self.judged, "cached": self.cached,
                "invalid": self.invalid, "rows": {t: tb.num_rows for t, tb in self.tables.items()}}


def _topic(tags: list[str] | None, meta: dict | None) -> tuple[str, ...]:
    """Subject word(s): prompt meta "topic"/"subject" (str or list), else tags "topic:WORD"."""
    for key in ("topic", "subject"):
        v = (meta or {}).get(key)
        if isinstance(v, str) and v.strip():
            return (v.strip(),)
        if isinstance(v, list) and v:
            return tuple(str(x) for x in v)
    return tuple(t.split(":", 1)[1] for t in tags or [] if t.startswith("topic:") and t.split(":", 1)[1])


def load_responses(con: duckdb.DuckDBPyConnection, round_id: str, origins: tuple[str, ...] = ORIGINS
                   ) -> list[ResponseItem]:
    rows = con.execute(db.query("judge_responses"), {"round_id": round_id, "origins": list(origins)}).fetchall()
    out = []
    for rid, pid, question, text, steps, reference, tags, meta, messages, partial in rows:
        out.append(ResponseItem(rid, pid, question, text, tuple(steps) if steps else None,
                                messages=messages, partial=partial, **_check_fields(reference, tags, meta)))
    return out


def _check_fields(reference: str | None, tags: list[str] | None, meta: str | None) -> dict[str, Any]:
    """What rule verifiers read of a prompt, as :class:`ResponseItem` fields, from its warehouse columns."""
    return {"reference": reference, "tags": tuple(tags or ()),
            "topic": _topic(tags, json.loads(meta) if meta else None)}


def prompt_checks(con: duckdb.DuckDBPyConnection, prompt_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What rule verifiers read of each prompt (``reference``, ``tags``, ``topic``: :class:`ResponseItem`'s fields),
    by prompt id, for the ids the warehouse holds."""
    rows = con.execute(db.query("prompt_checks"), {"ids": prompt_ids}).fetchall()
    return {pid: _check_fields(reference, tags, meta) for pid, reference, tags, meta in rows}


def load_pairs(con: duckdb.DuckDBPyConnection, round_id: str, consecutive: bool = False, cap: int = 6,
               origins: tuple[str, ...] = ORIGINS) -> list[PairItem]:
    rows = con.execute(db.query("judge_pairs"), {"round_id": round_id, "consecutive": consecutive, "cap": cap,
                                                 "origins": list(origins)}).fetchall()
    return [PairItem(*r) for r in rows]


def load_groups(con: duckdb.DuckDBPyConnection, round_id: str, size: int = 4, origins: tuple[str, ...] = ORIGINS
                ) -> list[GroupItem]:
    """Per prompt with at least two responses, its first ``size`` responses; ids sorted (the set is the item)."""
    by_prompt: dict[str, list[ResponseItem]] = defaultdict(list)
    for it in load_responses(con, round_id, origins):
        by_prompt[it.prompt_id].append(it)
    groups = []
    for pid, items in by_prompt.items():
        chosen = sorted(items[:size], key=lambda it: it.id)
        if len(chosen) >= 2:
            groups.append(GroupItem(pid, chosen[0].question, tuple(i.id for i in chosen),
                                    tuple(i.text for i in chosen)))
    return groups


def existing_ids(con: duckdb.DuckDBPyConnection, ids: list[str]) -> set[str]:
    """The subset of ``ids`` stored in any feedback table."""
    if not ids:
        return set()
    return {r[0] for r in con.execute(db.query("judge_existing_ids"), {"ids": ids}).fetchall()}


def make_judge(kind: str, backend: Backend, config: JudgeConfig | None = None):
    return _CLASSES[kind](backend, config or JudgeConfig())


def check_round(con: duckdb.DuckDBPyConnection, round_id: str) -> None:
    """Refuse a round without responses (a typo in its name, or one not generated yet) before a judge loads."""
    rounds = dict(con.execute(db.query("responses_per_round")).fetchall())
    if not rounds.get(round_id):
        held = ", ".join(f"{r} ({n:,})" for r, n in rounds.items()) or "none yet"
        raise AlignloopError(f"round {round_id!r} has no responses to judge; rounds with responses: {held}")


def select_items(con: duckdb.DuckDBPyConnection, request: JudgeRequest, judge: Any) -> tuple[list, int]:
    """(items still to judge, how many were judged before); at most ``request.limit`` items."""
    r = request
    if r.kind == "pairwise":
        items: list = load_pairs(con, r.round_id, r.pairs == "consecutive", r.max_pairs_per_prompt, r.origins)
    elif r.kind == "listwise":
        items = load_groups(con, r.round_id, r.group_size, r.origins)
    else:
        items = load_responses(con, r.round_id, r.origins)
    if items and hasattr(judge, "accepts"):  # a judge that can label some responses only (rollouts: a reference)
        kept = [it for it in items if judge.accepts(it)]
        if not kept:
            raise AlignloopError(judge.refusal(r.round_id, len(items)))
        items = kept
    if r.kind == "correction":  # corrections of corrections are not wanted
        aligner = {it.id for it in load_responses(con, r.round_id, ("aligner",))}
        items = [it for it in items if it.id not in aligner]
    per_item = [judge.ids([it]) for it in items]
    done = existing_ids(con, [i for ids in per_item for i in ids])
    todo = [it for it, ids in zip(items, per_item) if not all(i in done for i in ids)]
    cached = len(items) - len(todo)
    return (todo[: r.limit] if r.limit else todo), cached


def execute(judge: Any, kind: str, items: list, round_id: str) -> JudgeOutput:
    """Run the judge on the items; return warehouse rows as Arrow tables (nothing is written here)."""
    out = JudgeOutput(judge.judge, kind, judged=len(items))
    if not items:
        return out
    if kind == "pairwise":
        rows = judge.judge_pairs(items, round_id)
        out.tables["comparisons"] = to_arrow(rows)
        out.invalid = sum(r.winner == "invalid" for r in rows)
    elif kind == "listwise":
        rows = judge.judge_groups(items, round_id)
        out.tables["rankings"] = to_arrow(rows)
        out.invalid = sum(bool((r.meta or {}).get("invalid")) for r in rows)
    elif kind in ("rating", "binary"):
        rows = judge.judge_items(items, round_id)
        out.tables["ratings"] = to_arrow(rows)
        out.invalid = sum(r.score is None for r in rows)
    elif kind == "steps":
        rows = judge.judge_items(items, round_id)
        if rows:
            out.tables["step_labels"] = to_arrow(rows)
            # responses stored without steps keep the split the labels index (datasets align labels with it)
            split = [it for it in items if not it.steps]
            if split:
                out.tables["response_steps"] = pa.table({"id": [it.id for it in split],
                                                         "steps": [split_steps(it) for it in split]})
        out.invalid = sum(r.label is None for r in rows)
    else:
        res = judge.judge_items(items, round_id)
        if res.responses:
            out.tables["responses"] = to_arrow(res.responses)
            out.tables["corrections"] = to_arrow(res.corrections)
        out.invalid = len(res.invalid)
    return out


def judge_and_store(db_path: str, judge: Any, kind: str, items: list, round_id: str, chunk_size: int,
                    compute: Callable[[Any, str, list, str], JudgeOutput] = execute,
                    on_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Judge the items chunk by chunk with ``compute`` and store each chunk before the next (a kill loses one chunk
    at most). Returns ``{"invalid": n, "inserted": {table: rows}}``; ``on_chunk(items)`` follows each store."""
    totals: dict[str, Any] = {"invalid": 0, "inserted": {}}
    for start in range(0, len(items), chunk_size):
        chunk = items[start:start + chunk_size]
        out = compute(judge, kind, chunk, round_id)
        with db.connect(db_path) as con:
            for table, n in store(con, out).items():
                totals["inserted"][table] = totals["inserted"].get(table, 0) + n
        totals["invalid"] += out.invalid
        if on_chunk:
            on_chunk(len(chunk))
    return totals


def store(con: duckdb.DuckDBPyConnection, output: JudgeOutput) -> dict[str, int]:
    """Ingest all tables of one judge run in one transaction; returns new rows per table."""
    inserted: dict[str, int] = {}
    if not output.tables:
        return inserted
    with db.transaction(con):
        db.ensure_round(con, _round_of(output))
        for table in ("responses", "comparisons", "rankings", "ratings", "step_labels", "corrections"):
            if table in output.tables:
                inserted[table] = db.ingest(con, table, output.tables[table])
        if "response_steps" in output.tables:
            con.register("_response_steps", output.tables["response_steps"])
            try:
                con.execute(db.query("set_missing_steps"))
            finally:
                con.unregister("_response_steps")
    return inserted


def _round_of(output: JudgeOutput) -> str:
    for tb in output.tables.values():
        if "round_id" in tb.column_names and tb.num_rows:
            return tb.column("round_id")[0].as_py()
    raise AssertionError("judge output without rows")


@dataclass(frozen=True)
class VerifierJudge:
    """A rule verifier behind the judge interface: binary ratings with source 'rule', judge ``name@version``."""

    verifier: Any

    @property
    def judge(self) -> str:
        return self.verifier.judge

    def ids(self, items: list[ResponseItem]) -> list[str]:
        from alignloop.pipelines.verifiers.composite import rating_id

        return [rating_id(self.verifier, it.id) for it in items]

    def judge_items(self, items: list[ResponseItem], round_id: str):
        from alignloop.pipelines.verifiers.composite import rate

        return rate(self.verifier, items, round_id)


def build_judge(kind: str, spec: str, backend: str = "transformers", config: JudgeConfig | None = None,
                prm_aggregate: str | None = None, rollouts: RolloutConfig | None = None, **backend_opts: Any) -> Any:
    """A judge from ``--judge``: ``verifier:NAME`` (rule), ``rm:FOLDER`` (reward model) or a model for ``backend``
    (with ``rollouts``, the model completes partial solutions and a verifier labels the steps: Math-Shepherd).

    Raises:
        AlignloopError: a verifier or reward model asked for a kind it cannot produce.
    """
    if prm_aggregate and not spec.startswith("rm:"):
        raise AlignloopError(f"--prm-aggregate (prm_aggregate) is for a process reward model ('rm:FOLDER'), not "
                             f"judge {spec!r}")
    if rollouts is not None:
        if kind != "steps":
            raise AlignloopError(f"--rollouts (rollouts) labels steps (`judge steps`), not `judge {kind}`")
        if spec.startswith(("verifier:", "rm:")):
            raise AlignloopError(f"--rollouts (rollouts) needs a model to complete solutions with (--judge MODEL), "
                                 f"not {spec!r}")
        from alignloop.pipelines.backends import make_backend
        from alignloop.pipelines.verifiers import get_verifier

        verifier = get_verifier(rollouts.verifier)  # an unknown name fails before a model loads
        return RolloutStepJudge(make_backend(backend, spec, **backend_opts), verifier, rollouts,
                                (config or JudgeConfig()).calls)
    if spec.startswith("verifier:"):
        if kind not in ("binary", "rating"):
            raise AlignloopError(f"verifiers give binary ratings; use `judge binary`, not `judge {kind}`")
        from alignloop.pipelines.verifiers import get_verifier

        return VerifierJudge(get_verifier(spec.split(":", 1)[1]))
    if spec.startswith("rm:"):
        if kind not in ("rating", "steps"):
            raise AlignloopError(f"reward models give scores (`judge rating`) and process reward models step labels "
                                 f"(`judge steps`), not `judge {kind}`")
        from alignloop.pipelines.judges.reward_model import RewardModelJudge, StepLabelJudge, check_reward_model

        folder = spec.split(":", 1)[1]
        head = check_reward_model(folder) if prm_aggregate or kind == "steps" else None  # config only, no weights
        if head == "reward":
            raise AlignloopError(f"{spec} scores whole responses; " + (
                "`judge steps` needs a process reward model (`alignloop train prm`)" if kind == "steps" else
                "--prm-aggregate (prm_aggregate) is for a process reward model"))
        if kind == "steps":
            if prm_aggregate:
                raise AlignloopError("--prm-aggregate (prm_aggregate) combines step scores into one rating "
                                     "(`judge rating`); `judge steps` labels each step")
            return StepLabelJudge.load(folder)
        return RewardModelJudge.load(folder, prm=prm_aggregate)
    from alignloop.pipelines.backends import make_backend

    if kind == "correction" and not (config and config.template) and trained_aligner(spec):
        config = replace(config or JudgeConfig(), template="aligner")  # the prompt it was trained on
    return make_judge(kind, make_backend(backend, spec, **backend_opts), config)


def trained_aligner(spec: str) -> bool:
    """Whether ``spec`` is a local model folder that `alignloop train sft` trained on corrections (an Aligner)."""
    path = Path(spec) / "config.json"
    if not path.is_file():
        return False
    layout = json.loads(path.read_text()).get("alignloop_input") or {}
    return layout.get("template") == "aligner"
