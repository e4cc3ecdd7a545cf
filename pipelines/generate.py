"""The generate stage as library code: plan a round's prompts, skip what is stored, generate shard by shard.

Writes happen in the caller (flow or CLI), one ``db.ingest`` per shard, so a killed run keeps finished shards
and a rerun generates only what is missing (response ids are content hashes of prompt, model, sampling, seed
and sample index).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pyarrow as pa

from alignloop.pipelines.backends.base import Backend, Sampling
from alignloop.warehouse import db, ids
from alignloop.warehouse.errors import OptionError
from alignloop.warehouse.records import Response, loads, to_arrow


@dataclass(frozen=True)
class GenerateConfig:
    round: str
    """Round the responses belong to."""
    model_id: str
    """Warehouse id of the policy model (see ``pipelines.models.register_model``)."""
    sampling: Sampling = field(default_factory=Sampling)
    """Sampling parameters; ``n`` samples per prompt."""
    split: str | None = "train"
    """Only prompts of this split (None: all)."""
    tags: tuple[str, ...] = ()
    """Only prompts with at least one of these tags (empty: all)."""
    limit: int | None = None
    """At most this many prompts (in id order, so the same ones each time)."""
    fresh: bool = False
    """Only prompts no other round has sampled (fresh prompts per round, as iterative-DPO recipes use)."""
    shard_size: int = 32
    """Prompts per shard; one shard is generated, returned and written at a time."""
    steps_separator: str | None = None
    """Split each response into ``steps`` on this separator (e.g. "\\n"); None: no steps."""

    def __post_init__(self) -> None:
        if not self.round or not self.round.strip():
            raise OptionError("round must not be empty")
        if self.limit is not None and self.limit < 1:
            raise OptionError(f"limit must be >= 1, got {self.limit}")
        if self.shard_size < 1:
            raise OptionError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.steps_separator == "":
            raise OptionError("steps_separator must not be empty (use None for no steps)")


@dataclass(frozen=True)
class PromptTodo:
    """A prompt with the sample indices it still lacks."""

    id: str
    messages: list[dict[str, str]]
    missing: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    todo: list[PromptTodo]
    """Prompts with at least one missing sample, in id order."""
    selected: int
    """Prompts selected for the round."""
    already_done: int
    """Samples already stored (skipped on resume)."""

    @property
    def samples(self) -> int:
        return sum(len(t.missing) for t in self.todo)

    def shards(self, shard_size: int) -> list[list[PromptTodo]]:
        return [self.todo[i:i + shard_size] for i in range(0, len(self.todo), shard_size)]


@dataclass(frozen=True)
class ShardResult:
    table: pa.Table | None
    """Response rows (warehouse ``responses`` columns), None when nothing was produced."""
    prompts: int
    responses: int
    skipped: int
    """Samples not produced (prompt over the length limit with the skip policy, or a per-sample error)."""
    truncated: int
    """Prompts truncated to fit the context."""
    completion_tokens: int
    seconds: float


def expected_ids(prompt_id: str, model_id: str, sampling: Sampling) -> list[str]:
    """The response ids generation WOULD produce for this prompt, sample 0..n-1."""
    return [ids.response_id(prompt_id, model_id, sampling.identity(), sampling.seed, i) for i in range(sampling.n)]


def plan(con: object, cfg: GenerateConfig) -> Plan:
    """Select the round's prompts and drop samples already stored (resume)."""
    rows = con.execute(db.query("select_generation_prompts"),  # type: ignore[attr-defined]
                       {"split": cfg.split, "tags": list(cfg.tags) or None, "limit": cfg.limit,
                        "fresh_for": cfg.round if cfg.fresh else None}).fetchall()
    wanted = {pid: expected_ids(pid, cfg.model_id, cfg.sampling) for pid, _ in rows}
    all_ids = [rid for rids in wanted.values() for rid in rids]
    stored = {r[0] for r in con.execute(db.query("existing_response_ids"), {"ids": all_ids}).fetchall()}  # type: ignore[attr-defined]
    todo = []
    for pid, messages in rows:
        missing = tuple(i for i, rid in enumerate(wanted[pid]) if rid not in stored)
        if missing:
            todo.append(PromptTodo(pid, loads(messages), missing))
    return Plan(todo, len(rows), len(stored))


def split_steps(text: str, separator: str) -> list[str]:
    """Non-empty, stripped pieces of ``text`` between separators."""
    return [s.strip() for s in text.split(separator) if s.strip()]


def generate_shard(backend: Backend, shard: list[PromptTodo], cfg: GenerateConfig) -> ShardResult:
    """Generate the missing samples of one shard and return them as ``responses`` rows (no writes)."""
    start = time.perf_counter()
    stats = getattr(backend, "stats", None)
    truncated_before = stats.truncated if stats is not None else 0
    needed = max(max(t.missing) for t in shard) + 1
    sampling = cfg.sampling if needed == cfg.sampling.n else _with_n(cfg.sampling, needed)
    completions = backend.generate([t.messages for t in shard], sampling)
    identity = cfg.sampling.identity()
    rows, skipped, tokens = [], 0, 0
    for todo, comps in zip(shard, completions):
        for i in todo.missing:
            comp = comps[i]
            if comp.finish_reason in ("skipped", "error"):
                skipped += 1
                continue
            tokens += comp.completion_tokens or 0
            steps = split_steps(comp.text, cfg.steps_separator) if cfg.steps_separator else None
            rows.append(Response.sampled(todo.id, cfg.model_id, cfg.round, comp.text, identity, cfg.sampling.seed, i,
                                         steps=steps, prompt_tokens=comp.prompt_tokens,
                                         completion_tokens=comp.completion_tokens, finish_reason=comp.finish_reason))
    truncated = (stats.truncated - truncated_before) if stats is not None else 0
    return ShardResult(to_arrow(rows) if rows else None, len(shard), len(rows), skipped, truncated, tokens,
                       time.perf_counter() - start)


def _with_n(sampling: Sampling, n: int) -> Sampling:
    return Sampling(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                    max_new_tokens=sampling.max_new_tokens, seed=sampling.seed, stop=sampling.stop)


def run_shards(backend: Backend, work: Plan, cfg: GenerateConfig) -> Iterator[ShardResult]:
    """Generate shard after shard; the caller writes each result before asking for the next."""
    for shard in work.shards(cfg.shard_size):
        yield generate_shard(backend, shard, cfg)


def run_and_write(db_path: str, work: Plan, cfg: GenerateConfig,
                  compute: Callable[[list[PromptTodo]], ShardResult],
                  on_shard: Callable[[ShardResult, dict[str, int]], None] | None = None) -> dict[str, int]:
    """Generate shard after shard with ``compute`` and write each before the next (a kill loses one shard at most).

    Returns the run's totals; ``on_shard(result, totals)`` follows each write (the CLI's progress bar).
    """
    totals = {"selected": work.selected, "already_done": work.already_done, "inserted": 0, "skipped": 0,
              "truncated": 0, "completion_tokens": 0}
    for shard in work.shards(cfg.shard_size):
        result = compute(shard)
        with db.connect(db_path) as con:
            totals["inserted"] += write_shard(con, result)
        totals["skipped"] += result.skipped
        totals["truncated"] += result.truncated
        totals["completion_tokens"] += result.completion_tokens
        if on_shard:
            on_shard(result, totals)
    return totals


def write_shard(con: object, result: ShardResult) -> int:
    """Insert one shard's rows in one transaction; returns rows inserted (0 for rows already there)."""
    if result.table is None:
        return 0
    with db.transaction(con):  # type: ignore[arg-type]
        return db.ingest(con, "responses", result.table)  # type: ignore[arg-type]


def open_run(db_path: str, backend: Backend, cfg_args: dict[str, object]) -> tuple[GenerateConfig, Plan]:
    """Create the round if new, register the backend's model as a policy, and plan what is left to generate.

    Args:
        db_path: warehouse file.
        backend: its ``name`` is the model uri stored in ``models``.
        cfg_args: :class:`GenerateConfig` fields except ``model_id``.
    """
    from alignloop.pipelines.models import register_model

    cfg = GenerateConfig(model_id="", **cfg_args)  # type: ignore[arg-type]  # bad options: nothing written
    with db.connect(db_path) as con:
        with db.transaction(con):
            model_id = register_model(con, backend.name, "policy")
            db.ensure_round(con, cfg.round, policy_model_id=model_id)
        cfg = replace(cfg, model_id=model_id)
        return cfg, plan(con, cfg)
