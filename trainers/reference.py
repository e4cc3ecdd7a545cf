"""Reference log-probabilities, computed once per (snapshot content, reference model, tokenisation) and cached.

The cache is a content-hashed Parquet artifact (``<cache>/reference/<id>.parquet``: ``row`` int64, ``logps``
list<double>); later runs with the same inputs read it and never load the reference model. The returned
:class:`Artifact` is the lineage row; the flow writes it to the ``artifacts`` table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from alignloop.trainers.packing import batch_logprobs
from alignloop.warehouse.ids import content_id
from alignloop.warehouse.records import Artifact

KIND = "reference_logps"


def cache_root() -> Path:
    """``$ALIGNLOOP_CACHE/reference`` (default ``~/.cache/alignloop/reference``)."""
    base = os.environ.get("ALIGNLOOP_CACHE") or Path.home() / ".cache" / "alignloop"
    return Path(base).expanduser() / "reference"


def reference_inputs(*, content_hash: str, split: str, reference_model_id: str, tokenizer_id: str, layout: str,
                     max_length: int, max_prompt_length: int, dtype: str, **extra: Any) -> dict[str, Any]:
    """Everything that determines the reference log-probs; its hash is the artifact id."""
    return {"snapshot": content_hash, "split": split, "reference_model": reference_model_id,
            "tokenizer": tokenizer_id, "layout": layout, "max_length": max_length,
            "max_prompt_length": max_prompt_length, "dtype": dtype, **extra}


def _matrix(batch: dict[str, torch.Tensor], logps: torch.Tensor) -> torch.Tensor:
    """Batch log-probs -> (B, M): pairs/unpaired (2B,) -> (B, 2); lists (B*K,) -> (B, K), NaN where padded."""
    if "list_mask" in batch:
        mask = batch["list_mask"].bool()
        return logps.view(mask.shape).masked_fill(~mask.to(logps.device), float("nan"))
    return logps.view(2, -1).T


@torch.no_grad()
def compute_logps(model: torch.nn.Module, features: Sequence[Any], collate: Callable[[list[Any]], dict],
                  batch_size: int = 8, bf16: bool = False,
                  on_rows: Callable[[int], None] | None = None) -> np.ndarray:
    """Reference log-probs for each feature, as an (N, M) float64 array (row i = feature i).

    Args:
        model: the reference causal LM.
        features: tokenised features (pairs, unpaired or lists).
        collate: the layout's collator without a reference.
        on_rows: called after each batch with the number of rows it held (progress).
    """
    model.eval()
    device = next(model.parameters()).device
    rows: list[np.ndarray] = []
    for start in range(0, len(features), batch_size):
        batch = collate(list(features[start:start + batch_size]))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logps, _ = batch_logprobs(model, {k: v.to(device) for k, v in batch.items()})
        rows.append(_matrix(batch, logps.double().cpu()).numpy())
        if on_rows:
            on_rows(len(rows[-1]))
    width = max((r.shape[1] for r in rows), default=0)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=np.nan) for r in rows]
    return np.concatenate(padded) if padded else np.zeros((0, width))


def _write(path: Path, logps: np.ndarray) -> None:
    table = pa.table({"row": pa.array(np.arange(len(logps)), pa.int64()),
                      "logps": pa.array([list(r) for r in logps], pa.list_(pa.float64()))})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written artifact under the final name


def _read(path: Path) -> np.ndarray:
    table = pq.read_table(path).sort_by("row")
    values = table.column("logps").to_pylist()
    width = max((len(v) for v in values), default=0)
    return np.array([[(x if x is not None else np.nan) for x in v] + [np.nan] * (width - len(v)) for v in values],
                    dtype=np.float64).reshape(len(values), width)


def _artifact(inputs: dict[str, Any], cache_dir: Path | None) -> tuple[str, Path]:
    art_id = content_id("artifact", {"kind": KIND, "inputs": inputs})
    return art_id, (cache_dir or cache_root()) / f"{art_id}.parquet"


def is_cached(inputs: dict[str, Any], cache_dir: Path | None = None) -> bool:
    """Whether :func:`cached_reference` would read ``inputs``' log-probs instead of computing them."""
    return _artifact(inputs, cache_dir)[1].is_file()


def cached_reference(inputs: dict[str, Any], compute: Callable[[], np.ndarray],
                     cache_dir: Path | None = None) -> tuple[np.ndarray, Artifact]:
    """Read the artifact for ``inputs`` or compute and store it.

    Args:
        inputs: from :func:`reference_inputs`.
        compute: called only on a cache miss (this is where the reference model gets loaded).
        cache_dir: folder of artifacts (default :func:`cache_root`).

    Returns:
        ``(logps (N, M), artifact)``.
    """
    art_id, path = _artifact(inputs, cache_dir)
    if path.is_file():
        logps = _read(path)
    else:
        logps = compute()
        _write(path, logps)
    return logps, Artifact(art_id, KIND, str(path), inputs)
