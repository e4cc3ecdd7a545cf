"""The dataset card (``README.md``) an export carries: what the rows are, how they were built, how to load them.

The YAML header follows the Hugging Face Hub's dataset-card metadata, so an exported folder uploaded as a dataset
repository (or read with ``datasets.load_dataset(folder)``) finds its splits: ``configs`` names each split's file
for the file formats. A ``trl`` export is a ``save_to_disk`` folder, read with ``datasets.load_from_disk``; its
card has no ``configs``. The card is made from the snapshot's manifest only, so the same snapshot exported twice
gives the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

from alignloop.pipelines.datasets.snapshot import SPLITS, Snapshot

TAGS = {"pairwise": ["preference", "dpo", "reward-modeling"], "binary": ["unpaired-preference", "kto"],
        "listwise": ["ranking", "listwise-preference"], "steps": ["stepwise-supervision", "process-reward-modeling"],
        "correction": ["aligner", "correction"], "sft": ["sft", "best-of-n"]}
"""Hub tags by dataset kind (beside ``alignloop``)."""

MEANING = {
    "pairwise": "`chosen` is preferred to `rejected`; `prob` is P(chosen better) (1 for hard labels, else the soft "
                "label)",
    "binary": "`label` true marks a desirable completion, false an undesirable one",
    "listwise": "`completions` are ranked best first, with their `scores`",
    "steps": "each step of a solution has one label (see the label rule below)",
    "correction": "`correction` rewrites `answer` (an identity row repeats the answer, for the copy warm-up)",
    "sft": "`completion` is the best response found for the prompt",
}
_OWN = "the snapshot's own columns (`prompt` is the chat as JSON, `prompt_text` the same as text)"
LAYOUT = {"trl": "TRL's column conventions", "openrlhf": "OpenRLHF's keys", "jsonl": _OWN, "parquet": _OWN}
LINEAGE = ("Every row keeps the warehouse ids it came from (`prompt_id`, the response ids, `round_id`, `source`, "
           "`feedback_ids`: the comparisons, ratings, rankings, labels or corrections behind it), so a row can "
           "be traced to its prompt, response, judge or annotator and round.")


def source_line(counts: dict[str, Any]) -> str:
    """``ratings: 24 rows (rule 24)`` from a manifest's source counts."""
    by = counts.get("by_source") or {}
    mix = f" ({', '.join(f'{k} {v:,}' for k, v in by.items())})" if by else ""
    return f"{counts.get('table', '?')}: {counts.get('rows', 0):,} rows{mix}"


def note_text(value: Any) -> str:
    """A build note as a line: a mapping as ``key=value`` pairs, a mapping of mappings (a mixture's parts) as
    ``a@v1: fraction=1.0, ...; b@v1: ...``."""
    if not isinstance(value, dict):
        return str(value)
    if value and all(isinstance(v, dict) for v in value.values()):
        return "; ".join(f"{k}: {note_text(v)}" for k, v in value.items())
    return ", ".join(f"{k}={v}" for k, v in value.items())


def _size_category(rows: int) -> str:
    for top, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                      (10_000_000, "1M<n<10M")):
        if rows < top:
            return name
    return "n>10M"


def _yaml_list(key: str, values: list[str]) -> list[str]:
    return [f"{key}:"] + [f"- {json.dumps(v)}" for v in values]


def _options(params: dict[str, Any]) -> list[str]:
    """The builder's options as ``key = value`` lines (its own, then the shared ones); a derived snapshot's (a
    mixture, a part, a relabelling) own parameters (its parts or parent, with their content hashes)."""
    groups = [params[p] for p in ("config", "common") if isinstance(params.get(p), dict)]
    if not groups:
        groups = [{k: v for k, v in params.items() if k not in ("kind", "builder")}]
    return [f"- `{key}` = `{json.dumps(value)}`" for group in groups for key, value in group.items()]


def dataset_card(snap: Snapshot, fmt: str, files: dict[str, str], columns: list[str], *, standard: bool = False,
                 label_rule: str | None = None) -> str:
    """The card for ``snap`` exported as ``fmt`` with ``columns``; ``files`` maps each exported split to its file
    (none for trl)."""
    m = snap.manifest
    rows = {s: snap.tables[s].num_rows for s in SPLITS}
    head = ["---", f"pretty_name: {json.dumps(m.id)}", *_yaml_list("tags", ["alignloop", *TAGS.get(m.kind, [])]),
            *_yaml_list("size_categories", [_size_category(sum(rows.values()))])]
    if files:
        head += ["configs:", "- config_name: default", "  data_files:"]
        head += [line for s, path in files.items() for line in (f"  - split: {s}", f"    path: {path}")]
    head.append("---")
    load = ("from datasets import load_from_disk\nds = load_from_disk(\"path/to/this/folder\")" if fmt == "trl" else
            "from datasets import load_dataset\nds = load_dataset(\"path/to/this/folder\")")
    style = "plain strings" if standard else "conversational (chat messages)"
    body = [
        "", f"# {m.id}", "",
        f"A {m.kind} dataset built by alignloop with builder `{m.builder}`, "
        f"exported as `{fmt}`" + (f", {style}." if fmt in ("trl", "openrlhf") else "."),
        "", "| | |", "| --- | --- |",
        f"| content hash | `{m.content_hash}` |",
        f"| rows | {', '.join(f'{s} {n:,}' for s, n in rows.items())} |",
        f"| created | {m.created_at or 'n/a'} |",
        f"| source | {source_line(m.source_counts)} |",
        "", "Rebuilding it from the same warehouse with the same options gives the same content hash; "
        "`alignloop dataset show " + m.id + "` prints the manifest this card is made from.",
        "", "## Loading", "", "```python", load, "```",
        "", "## Columns", "", f"{', '.join(f'`{c}`' for c in columns)}: {LAYOUT[fmt]}; {MEANING[m.kind]}. {LINEAGE}",
        "",
    ]
    if label_rule:
        body += [f"Label rule (the warehouse keeps -1 / 0 / +1): {label_rule}.", ""]
    body += ["## How it was built", "", "Options:", "", *_options(m.params), "",
             "Rows after each stage: " + " -> ".join(f"{k} {v:,}" for k, v in m.stage_counts.items()) + ".", ""]
    notes = [f"- {k}: {'n/a' if v is None else note_text(v)}" for k, v in m.notes.items()]
    if notes:
        body += ["Notes:", "", *notes, ""]
    lint_counts = m.lint.get("counts") or {}
    if lint_counts:
        body += ["Lint (rows with each problem): " + ", ".join(f"{k} {v:,}" for k, v in lint_counts.items()) + ".",
                 ""]
    return "\n".join(head + body)
