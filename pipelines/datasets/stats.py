"""Dataset statistics: counts, source mix, length distributions (chosen vs rejected always), a PNG to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _lengths(col: pa.ChunkedArray) -> pa.Array:
    if pa.types.is_list(col.type):
        col = pc.binary_join(col, "\n")
    return pc.utf8_length(pc.fill_null(col, ""))


def _summary(lengths: pa.Array) -> dict[str, float]:
    if len(lengths) == 0:
        return {}
    q = pc.quantile(lengths, q=[0.5, 0.9]).to_pylist()
    return {"mean": round(pc.mean(lengths).as_py(), 1), "median": round(q[0], 1), "p90": round(q[1], 1),
            "max": pc.max(lengths).as_py()}


def _counts(col: pa.ChunkedArray) -> dict[str, int]:
    return {str(r["values"]): r["counts"] for r in sorted(pc.value_counts(col).to_pylist(), key=lambda r: str(r["values"]))}


def compute_stats(table: pa.Table, kind: str, notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summary numbers for the manifest and the CLI table (lengths in characters)."""
    out: dict[str, Any] = {"rows": table.num_rows, "splits": _counts(table["split"]),
                           "source_mix": _counts(table["source"]),
                           "prompts": pc.count_distinct(table["prompt_id"]).as_py(),
                           "prompt_length": _summary(_lengths(table["prompt_text"]))}
    if kind == "pairwise":
        ch, rj = _lengths(table["chosen"]), _lengths(table["rejected"])
        out["chosen_length"], out["rejected_length"] = _summary(ch), _summary(rj)
        out["chosen_longer_fraction"] = round(pc.mean(pc.cast(pc.greater(ch, rj), pa.float64())).as_py(), 4)
        out["prob_mean"] = round(pc.mean(table["prob"]).as_py(), 4)
    elif kind in ("binary", "sft"):
        out["completion_length"] = _summary(_lengths(table["completion"]))
        if kind == "binary":
            out["labels"] = _counts(table["label"])
    elif kind == "listwise":
        out["completion_length"] = _summary(_lengths(pc.list_flatten(table["completions"])))
        out["list_sizes"] = _counts(pc.list_value_length(table["completions"]))
    elif kind == "steps":
        out["steps_per_row"] = _summary(pc.cast(pc.list_value_length(table["steps"]), pa.int64()))
        out["step_labels"] = _counts(pc.list_flatten(table["labels"]))
    elif kind == "correction":
        out["answer_length"] = _summary(_lengths(table["answer"]))
        out["correction_length"] = _summary(_lengths(table["correction"]))
        out["identity_rows"] = int(pc.sum(table["identity"]).as_py() or 0)
    for key in ("ai_swap_consistency", "human_agreement", "duplicates_merged", "contradictory_pairs"):
        if notes and notes.get(key) is not None:
            out[key] = notes[key]
    return out


def length_histograms(table: pa.Table, kind: str, bins: int = 40) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Completion lengths as counts per bin, chosen and rejected (for pairs) over one set of bin edges."""
    if kind == "pairwise":
        series = {"chosen": _lengths(table["chosen"]), "rejected": _lengths(table["rejected"])}
    else:
        col = {"binary": "completion", "sft": "completion", "listwise": "completions", "steps": "steps",
               "correction": "correction"}[kind]
        values = pc.list_flatten(table[col]) if kind == "listwise" else table[col]  # each of a list's completions
        series = {col: _lengths(values)}
    arrays = {label: values.to_numpy(zero_copy_only=False) for label, values in series.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(arrays.values())), bins=bins)
    return edges, {label: np.histogram(values, bins=edges)[0] for label, values in arrays.items()}


def plot_stats(table: pa.Table, kind: str, path: Path) -> Path:
    """Length histograms (chosen vs rejected for pairs, on the same bins) and the source mix, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_len, ax_src) = plt.subplots(1, 2, figsize=(10, 3.8))
    edges, counts = length_histograms(table, kind)
    for label, n in counts.items():
        ax_len.stairs(n, edges, fill=True, alpha=0.6, label=label)
    ax_len.set(xlabel="length (characters)", ylabel="rows", title=f"{kind}: completion lengths")
    ax_len.legend()
    mix = _counts(table["source"])
    ax_src.bar(list(mix), list(mix.values()), color="tab:gray")
    ax_src.set(title="source mix", ylabel="rows")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def stats_rows(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) pairs for a rich table."""
    rows = []
    for key, value in stats.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        rows.append((key, str(value)))
    return rows
