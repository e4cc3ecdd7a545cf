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
import pyarrow.compute as pc

from pipelines.datasets.config import (
    BinaryConfig,
    CorrectionConfig,
    DatasetSpec,
    ListwiseConfig,
    PairwiseConfig,
    SFTConfig,
    StepsConfig,
)
from pipelines.datasets.stages import Chain, run_sql
from warehouse.snapshots import SCHEMAS


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
    p: dict[str, Any] = {"sources": list(c.sources), "rounds": list(c.rounds), "aspect": c.aspect,
                         "prefer_human": c.prefer_human, "ngram": c.ngram, "threshold": c.decontam_threshold,
                         "scale": "any", "correct_only": False}
    return p


def _source_counts(table_name: str, first: pa.Table) -> dict[str, Any]:
    by = {r["values"]: r["counts"] for r in pc.value_counts(first["source"]).to_pylist()} if first.num_rows else {}
    return {"table": table_name, "rows": first.num_rows, "by_source": dict(sorted(by.items()))}


def _rated(chain: Chain, scale: str, rule_only: bool = False) -> None:
    """Register one score per rated response as side table ``_rated``."""
    chain.params["scale"] = scale
    if rule_only:
        chain.params["sources"] = ["rule"]
    chain.source("rated_responses", "rated_responses")
    chain.side["_rated"] = chain.table


def _pairs(chain: Chain, cfg: PairwiseConfig, notes: dict[str, Any]) -> dict[str, Any]:
    """Pairwise stages up to resolved, filtered pairs keyed by (lo, hi, p_lo). Returns source counts."""
    chain.params.update(soft_labels=cfg.soft_labels, ranking_pairs=cfg.ranking_pairs, aggregate=cfg.aggregate,
                        ties=cfg.ties, min_margin=cfg.min_margin, min_score_gap=cfg.min_score_gap)
    if cfg.origin in ("ratings", "verifier"):
        _rated(chain, "any", rule_only=cfg.origin == "verifier")
        sources = _source_counts("ratings", chain.table)
        chain.source("pairs", f"pairwise_from_{cfg.origin}")
        chain.then("min_score_gap", "min_gap")
    else:
        chain.source(cfg.origin, f"pairwise_from_{cfg.origin}")
        sources = _source_counts(cfg.origin, chain.table)
        if cfg.origin == "comparisons":
            ai = chain.table.filter(pc.equal(chain.table["source"], "ai"))["consistent"]
            checked = len(ai) - ai.null_count
            notes["ai_swap_consistency"] = round((pc.sum(ai).as_py() or 0) / checked, 4) if checked else None
            if cfg.require_consistent:
                chain.then("require_consistent", "pairwise_consistent")
    judgments = chain.table.num_rows
    chain.then("merge_duplicates", "pairwise_group")
    grouped = chain.table
    notes["duplicates_merged"] = judgments - grouped.num_rows
    notes["contradictory_pairs"] = int(pc.sum(grouped["contradictory"]).as_py() or 0)
    human_multi = grouped.filter(pc.and_(pc.equal(grouped["source"], "human"), pc.greater(grouped["n"], 1)))
    if human_multi.num_rows:
        notes["human_agreement"] = round(1 - pc.sum(human_multi["contradictory"]).as_py() / human_multi.num_rows, 4)
    chain.then("contradictions", "pairwise_resolve")
    if chain.params["prefer_human"]:
        chain.then("prefer_human", "pairwise_prefer_source")
    chain.then("ties", "pairwise_ties")
    if cfg.min_margin > 0:
        chain.then("min_margin", "pairwise_min_margin")
    return sources


def _build_pairwise(chain: Chain, cfg: PairwiseConfig, notes: dict[str, Any]) -> dict[str, Any]:
    sources = _pairs(chain, cfg, notes)
    chain.then("render", "pairwise_render")
    if cfg.max_length_ratio is not None:
        chain.params["max_ratio"] = cfg.max_length_ratio
        chain.then("max_length_ratio", "pairwise_length_ratio")
    return sources


def _build_listwise(chain: Chain, cfg: ListwiseConfig, notes: dict[str, Any]) -> dict[str, Any]:
    chain.params["k"] = cfg.k
    if cfg.origin == "ratings":
        _rated(chain, "any")
        sources = _source_counts("ratings", chain.table)
        chain.source(f"at_least_{cfg.k}_rated", "listwise_from_ratings")
    else:
        chain.source(f"rankings_with_{cfg.k}", "listwise_from_rankings")
        sources = _source_counts("rankings", chain.table)
    chain.then("render", "listwise_render")
    return sources


def _build_binary(chain: Chain, cfg: BinaryConfig, notes: dict[str, Any]) -> dict[str, Any]:
    if cfg.origin == "pairwise":
        sources = _pairs(chain, cfg.pairwise, notes)
        chain.then("split_pairs", "binary_from_pairs")
        chain.then("one_label_per_completion", "binary_dedupe")
    else:
        thumbs = cfg.origin == "thumbs"
        _rated(chain, "thumbs" if thumbs else "graded")
        sources = _source_counts("ratings", chain.table)
        chain.params.update(desirable_min=1.0 if thumbs else cfg.desirable_min,
                            undesirable_max=0.0 if thumbs else cfg.undesirable_max)
        chain.then("thresholds", "binary_from_ratings")
    chain.then("render", "binary_render")
    return sources


def _build_steps(chain: Chain, cfg: StepsConfig, notes: dict[str, Any]) -> dict[str, Any]:
    chain.params["truncate_after_negative"] = cfg.truncate_after_negative
    chain.source("labelled_solutions", "steps_from_labels")
    notes["label_rule"] = cfg.label_rule()
    sources = _source_counts("step_labels", chain.table)
    chain.then("render", "steps_render")
    return sources


def _build_correction(chain: Chain, cfg: CorrectionConfig, notes: dict[str, Any]) -> dict[str, Any]:
    chain.params["identity_fraction"] = cfg.identity_fraction
    chain.source("corrections", "correction_from_corrections")
    notes["identity_rows"] = int(pc.sum(chain.table["identity"]).as_py() or 0)
    return _source_counts("corrections", chain.table.filter(pc.invert(chain.table["identity"])))


def _build_sft(chain: Chain, cfg: SFTConfig, notes: dict[str, Any]) -> dict[str, Any]:
    chain.params.update(min_score=cfg.min_score, per_prompt=cfg.per_prompt, correct_only=cfg.origin == "verifier")
    if cfg.origin == "rankings":
        chain.source("top_of_rankings", "sft_from_rankings")
        sources = _source_counts("rankings", chain.table)
        chain.then("one_row_per_completion", "sft_dedupe")
    else:
        _rated(chain, "any", rule_only=cfg.origin == "verifier")
        sources = _source_counts("ratings", chain.table)
        chain.source("best_of_n", "sft_from_rated")
    chain.then("render", "sft_render")
    return sources


_BUILDERS = {PairwiseConfig: _build_pairwise, ListwiseConfig: _build_listwise, BinaryConfig: _build_binary,
             StepsConfig: _build_steps, CorrectionConfig: _build_correction, SFTConfig: _build_sft}


def eval_texts_from_warehouse(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Evaluation prompts for decontamination: the test split (one ``text`` column)."""
    return run_sql(con, "eval_prompts_test_split", {})


def build(con: duckdb.DuckDBPyConnection, spec: DatasetSpec, eval_texts: pa.Table | None = None) -> BuildResult:
    """Build ``spec`` from the warehouse on ``con`` (read only).

    Args:
        con: an open warehouse connection.
        spec: kind, options and shared options.
        eval_texts: evaluation prompts (column ``text``) for decontamination; default: the test split.

    Raises:
        EmptyDataset: a stage left no rows (the message names it and lists the counts so far).
    """
    notes: dict[str, Any] = {}
    chain = Chain(con, spec.kind, _params(spec))
    sources = _BUILDERS[type(spec.config)](chain, spec.config, notes)
    if spec.common.decontaminate:
        evals = eval_texts if eval_texts is not None else eval_texts_from_warehouse(con)
        notes["eval_prompts"] = evals.num_rows
        if evals.num_rows:
            chain.then("decontaminate", "decontaminate", _eval_texts=evals.select(["text"]))
    table = run_sql(con, f"finalize_{spec.kind}", {}, {"_in": chain.table})
    schema = SCHEMAS[spec.kind]
    table = table.select(schema.names).cast(schema).combine_chunks()
    return BuildResult(spec, table, chain.log.as_dict(), sources, notes)
