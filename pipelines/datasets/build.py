"""Build a dataset from the warehouse: feedback -> rows in the snapshot schema, with counts after each filter.

    with db.connect("alignloop.duckdb") as con:
        result = build(con, parse_options("pairwise", {"origin": "comparisons", "ties": "keep"}))

All row work happens in DuckDB (``warehouse/sql/builders/*.sql``); Python picks the stages and binds options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from alignloop.pipelines.datasets.config import (
    FEEDBACK_SOURCES,
    BinaryConfig,
    CorrectionConfig,
    DatasetSpec,
    ListwiseConfig,
    PairwiseConfig,
    SFTConfig,
    StepsConfig,
)
from alignloop.pipelines.datasets.stages import Chain, EmptyDataset, run_sql
from alignloop.warehouse import db
from alignloop.warehouse.snapshots import SCHEMAS


@dataclass
class BuildResult:
    """A built dataset before it is written: rows sorted deterministically, plus how they came to be."""

    spec: DatasetSpec
    table: pa.Table
    """Rows in ``warehouse.snapshots.SCHEMAS[kind]``, sorted (both splits; the ``split`` column tells)."""
    stage_counts: dict[str, int]
    """Rows after each stage, in order: which filter removed what."""
    source_counts: dict[str, Any]
    """Feedback rows the build started from: table and count per source."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Policy counts (duplicates merged, contradictions) and agreement figures."""

    @property
    def kind(self) -> str:
        return self.spec.kind


def _params(spec: DatasetSpec) -> dict[str, Any]:
    c = spec.common
    p: dict[str, Any] = {"sources": list(c.sources), "rounds": list(c.rounds), "judges": list(c.judges),
                         "aspect": c.aspect,
                         "prefer_human": c.prefer_human, "ngram": c.ngram, "threshold": c.decontam_threshold,
                         "scale": "any", "correct_only": False}
    return p


def _sources(chain: Chain, table_name: str, notes_file: str = "notes_source_counts") -> str:
    """Count the current stage (the feedback a build starts from) per source; returns the table's name."""
    chain.note("sources", notes_file)
    return table_name


def _rated(chain: Chain, scale: str, rule_only: bool = False, rso: PairwiseConfig | None = None) -> str:
    """Register one score per rated response as side table ``_rated`` (with ``rso``, the responses its rejection
    sampling accepts) after counting them per source; returns the sources' table name."""
    chain.params["scale"] = scale
    if rule_only:
        chain.params["sources"] = ["rule"]
    chain.source("rated_responses", "rated_responses")
    sources = _sources(chain, "ratings")
    if rso is not None:
        chain.params.update(rso_beta=rso.rso_beta, rso_seed=rso.rso_seed, rso_samples=rso.rso_samples)
        chain.then("rso_accepted", "rso_accept" if rso.rso_samples is None else "rso_accept_until")
    chain.keep_as("_rated")
    return sources


def _pairs(chain: Chain, cfg: PairwiseConfig) -> str:
    """Pairwise stages up to resolved, filtered pairs keyed by (lo, hi, p_lo). Returns the source table."""
    chain.params.update(soft_labels=cfg.soft_labels, ranking_pairs=cfg.ranking_pairs, aggregate=cfg.aggregate,
                        ties=cfg.ties, min_margin=cfg.min_margin, min_score_gap=cfg.min_score_gap)
    if cfg.origin in ("ratings", "verifier"):
        verifier = cfg.origin == "verifier"
        pairing = cfg.pairing if cfg.pairing != "auto" else ("all" if verifier else "best_vs_worst")
        sources = _rated(chain, "any", rule_only=verifier, rso=cfg if pairing == "rso" else None)
        chain.params.update(pairing=pairing, correct_only=verifier)
        chain.source("pairs", "pairwise_from_rated")
        chain.then("min_score_gap", "min_gap")
    else:
        chain.source(cfg.origin, f"pairwise_from_{cfg.origin}")
        sources = _sources(chain, cfg.origin)
        if cfg.origin == "comparisons":
            chain.note("swap", "notes_swap_consistency")
            if cfg.require_consistent:
                chain.then("require_consistent", "pairwise_consistent")
    chain.then("merge_duplicates", "pairwise_group")
    chain.note("groups", "notes_pairwise_groups")
    chain.then("contradictions", "pairwise_resolve")
    if chain.params["prefer_human"]:
        chain.then("prefer_human", "pairwise_prefer_source")
    chain.then("ties", "pairwise_ties")
    if cfg.min_margin > 0:
        chain.then("min_margin", "pairwise_min_margin")
    return sources


def _build_pairwise(chain: Chain, cfg: PairwiseConfig) -> str:
    sources = _pairs(chain, cfg)
    chain.then("render", "pairwise_render")
    chain.then("identical_texts", "pairwise_distinct_texts")
    if cfg.max_length_ratio is not None:
        chain.params["max_ratio"] = cfg.max_length_ratio
        chain.then("max_length_ratio", "pairwise_length_ratio")
    if cfg.max_pairs_per_prompt is not None:
        chain.params["max_pairs_per_prompt"] = cfg.max_pairs_per_prompt
        chain.then("max_pairs_per_prompt", "pairwise_cap")
    return sources


def _build_listwise(chain: Chain, cfg: ListwiseConfig) -> str:
    chain.params["k"] = cfg.k
    if cfg.origin == "ratings":
        sources = _rated(chain, "any")
        chain.source(f"at_least_{cfg.k}_rated", "listwise_from_ratings")
    else:
        chain.source(f"rankings_with_{cfg.k}", "listwise_from_rankings")
        sources = _sources(chain, "rankings")
    chain.then("render", "listwise_render")
    return sources


def _build_binary(chain: Chain, cfg: BinaryConfig) -> str:
    if cfg.origin == "pairwise":
        sources = _pairs(chain, cfg.pairwise)
        chain.then("split_pairs", "binary_from_pairs")
        chain.then("one_label_per_completion", "binary_dedupe")
    else:
        thumbs = cfg.origin == "thumbs"
        sources = _rated(chain, "thumbs" if thumbs else "graded")
        chain.params.update(desirable_min=1.0 if thumbs else cfg.desirable_min,
                            undesirable_max=0.0 if thumbs else cfg.undesirable_max)
        chain.then("thresholds", "binary_from_ratings")
    chain.then("render", "binary_render")
    return sources


def _build_steps(chain: Chain, cfg: StepsConfig) -> str:
    chain.params.update(truncate_after_negative=cfg.truncate_after_negative, rollout_threshold=cfg.rollout_threshold)
    chain.source("labelled_solutions", "steps_from_labels")
    sources = _sources(chain, "step_labels")
    chain.then("render", "steps_render")
    return sources


def _build_correction(chain: Chain, cfg: CorrectionConfig) -> str:
    chain.params["identity_fraction"] = cfg.identity_fraction
    chain.source("corrections", "correction_from_corrections")
    return _sources(chain, "corrections", "notes_correction_sources")


def _build_sft(chain: Chain, cfg: SFTConfig) -> str:
    chain.params.update(min_score=cfg.min_score, per_prompt=cfg.per_prompt, correct_only=cfg.origin == "verifier")
    if cfg.origin == "rankings":
        chain.source("top_of_rankings", "sft_from_rankings")
        sources = _sources(chain, "rankings")
        chain.then("one_row_per_completion", "sft_dedupe")
    else:
        sources = _rated(chain, "any", rule_only=cfg.origin == "verifier")
        chain.source("best_of_n", "sft_from_rated")
    chain.then("render", "sft_render")
    return sources


def _notes(spec: DatasetSpec, found: dict[str, list[dict[str, Any]]], counts: list[tuple[str, int]]) -> dict[str, Any]:
    """Build notes from the chain's summaries: swap consistency, merged duplicates, contradictions, agreement."""
    notes: dict[str, Any] = {}
    if "swap" in found:
        swap = found["swap"][0]
        notes["ai_swap_consistency"] = round(swap["held"] / swap["checked"], 4) if swap["checked"] else None
    if "groups" in found:
        stages = [s for s, _ in counts]
        at = stages.index("merge_duplicates")
        groups = found["groups"][0]
        notes["duplicates_merged"] = counts[at - 1][1] - counts[at][1]
        notes["contradictory_pairs"] = groups["contradictory"]
        if groups["human_multi"]:
            notes["human_agreement"] = round(1 - groups["human_contradictory"] / groups["human_multi"], 4)
    if spec.kind == "correction":
        notes["identity_rows"] = sum(r["identity_rows"] for r in found["sources"])
    if isinstance(spec.config, StepsConfig):
        notes["label_rule"] = spec.config.label_rule()
    return notes


_BUILDERS = {PairwiseConfig: _build_pairwise, ListwiseConfig: _build_listwise, BinaryConfig: _build_binary,
             StepsConfig: _build_steps, CorrectionConfig: _build_correction, SFTConfig: _build_sft}


def _listed(values: list[str], most: int = 4) -> str:
    return ", ".join(values[:most]) + (f" and {len(values) - most} more" if len(values) > most else "")


def feedback_hint(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, table_name: str) -> str:
    """For a build whose source found nothing: what it read, and the feedback the warehouse does hold."""
    c = spec.common
    asked = (f"this build read {table_name.replace('_', ' ')}"
             + (f" (aspect {c.aspect!r})" if table_name == "ratings" or c.aspect != "overall" else "")
             + (f" from {_listed(list(c.sources))}" if set(c.sources) != set(FEEDBACK_SOURCES) else "")
             + (f" in rounds {_listed(list(c.rounds))}" if c.rounds else "")
             + (f" by judges {_listed(list(c.judges))}" if c.judges else ""))
    held = con.execute(db.query("feedback_inventory")).fetchall()
    if not held:
        return f"{asked}; the warehouse holds no feedback yet (judge a round, import labelled data or pull annotations)"
    found = [f"{n} {kind.replace('_', ' ')}" + (f" with aspect {aspect!r}" if aspect is not None else "")
             + f" from {_listed(sources)} in rounds {_listed(rounds)}" + (f" by {_listed(judges)}" if c.judges else "")
             for kind, aspect, n, sources, rounds, judges in held]
    options = ("origin=, " if hasattr(spec.config, "origin") else "") + "aspect=, sources=, rounds=, judges="
    return (f"{asked}; the warehouse holds {'; '.join(found)} (select with -o {options}; "
            f"'alignloop dataset options {spec.kind}' lists them)")


def eval_texts_from_warehouse(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Evaluation prompts for decontamination: the test split (one ``text`` column)."""
    return run_sql(con, "eval_prompts_test_split", {})


# What relaxes a filter that removed every row ({p}: 'pairwise.' where a binary set is built from pairs).
_RELAX: dict[str | tuple[str, str], str] = {
    "require_consistent": "-o {p}require_consistent=false keeps verdicts that flipped under position swap "
                          "(with -o {p}soft_labels=true, training on the judge's probabilities)",
    "contradictions": "-o {p}aggregate=majority or -o {p}aggregate=mean resolves pairs judged both ways",
    "ties": "-o {p}ties=keep keeps ties as 0.5 labels",
    ("binary", "ties"): "every pair left is a tie, and unpaired rows need a preferred side: more feedback, or a "
                        "judge that tells these responses apart",
    "min_margin": "a lower -o {p}min_margin keeps them",
    "min_score_gap": "a lower -o {p}min_score_gap keeps them",
    "max_length_ratio": "a higher -o {p}max_length_ratio keeps them",
    "decontaminate": "-o decontaminate=false, a higher -o decontam_threshold or a longer -o ngram keeps them",
}


def build(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, eval_texts: pa.Table | None = None) -> BuildResult:
    """Build ``spec`` from the warehouse on ``con`` (read only).

    Args:
        con: an open warehouse connection.
        spec: kind, options and shared options.
        eval_texts: evaluation prompts (column ``text``) for decontamination; default: the test split.

    Raises:
        EmptyDataset: a stage left no rows (the message names it and lists the counts so far).
    """
    chain = Chain(con, spec.kind, _params(spec))
    table_name = _BUILDERS[type(spec.config)](chain, spec.config)
    evals = None
    if spec.common.decontaminate:
        evals = eval_texts if eval_texts is not None else eval_texts_from_warehouse(con)
        if evals.num_rows:
            chain.then("decontaminate", "decontaminate", _eval_texts=evals.select(["text"]))
    try:
        done = chain.finish(f"finalize_{spec.kind}")
    except EmptyDataset as exc:
        if not exc.at_source:
            relax = _RELAX.get((spec.kind, exc.stage)) or _RELAX.get(exc.stage)
            if relax:
                relax = relax.format(p="pairwise." if spec.kind == "binary" else "")
                raise EmptyDataset(f"{exc}; {relax}", stage=exc.stage) from None
            raise
        raise EmptyDataset(f"{exc}; {feedback_hint(con, spec, table_name)}", at_source=True) from None
    notes = _notes(spec, done.notes, done.log.counts)
    if evals is not None:
        notes["eval_prompts"] = evals.num_rows
    by = dict(sorted((r["source"], r["n"]) for r in done.notes["sources"]))
    sources = {"table": table_name, "rows": sum(by.values()), "by_source": by}
    table = done.table
    schema = SCHEMAS[spec.kind]
    table = table.select(schema.names).cast(schema).combine_chunks()
    return BuildResult(spec, table, done.log.as_dict(), sources, notes)
