"""The column contract of dataset snapshots (Parquet), shared by dataset builders and trainers.

Every row carries the warehouse ids it came from. ``prompt`` is the chat message list as JSON text
(conversational); ``prompt_text`` is the same conversation rendered as plain text for trainers that
want strings. Completions are assistant text.
"""

from __future__ import annotations

import pyarrow as pa

_LINEAGE = [
    pa.field("prompt_id", pa.string()),
    pa.field("split", pa.string()),          # train | test
    pa.field("round_id", pa.string()),
    pa.field("prompt", pa.string()),         # JSON chat list
    pa.field("prompt_text", pa.string()),
]

SCHEMAS: dict[str, pa.Schema] = {
    # pairwise preference: chosen over rejected, with a soft label and provenance
    "pairwise": pa.schema(_LINEAGE + [
        pa.field("chosen", pa.string()),
        pa.field("rejected", pa.string()),
        pa.field("chosen_id", pa.string()),
        pa.field("rejected_id", pa.string()),
        pa.field("prob", pa.float64()),      # P(chosen better); 1.0 for hard labels, 0.5 for kept ties
        pa.field("margin", pa.float64()),    # score gap where the source has one, else null
        pa.field("source", pa.string()),     # human | ai | rule | reward_model
        pa.field("feedback_ids", pa.list_(pa.string())),
    ]),
    # unpaired (KTO / BCO): one completion and a desirable flag
    "binary": pa.schema(_LINEAGE + [
        pa.field("completion", pa.string()),
        pa.field("completion_id", pa.string()),
        pa.field("label", pa.bool_()),
        pa.field("source", pa.string()),
        pa.field("feedback_ids", pa.list_(pa.string())),
    ]),
    # listwise: k completions best first, with scores (higher better) where known
    "listwise": pa.schema(_LINEAGE + [
        pa.field("completions", pa.list_(pa.string())),
        pa.field("completion_ids", pa.list_(pa.string())),
        pa.field("scores", pa.list_(pa.float64())),
        pa.field("source", pa.string()),
        pa.field("feedback_ids", pa.list_(pa.string())),
    ]),
    # step-level (PRM): labels kept as -1 / 0 / +1
    "steps": pa.schema(_LINEAGE + [
        pa.field("completion_id", pa.string()),
        pa.field("steps", pa.list_(pa.string())),
        pa.field("labels", pa.list_(pa.int8())),
        pa.field("source", pa.string()),
        pa.field("feedback_ids", pa.list_(pa.string())),
    ]),
    # Aligner question / answer / correction
    "correction": pa.schema(_LINEAGE + [
        pa.field("answer", pa.string()),
        pa.field("correction", pa.string()),
        pa.field("answer_id", pa.string()),
        pa.field("correction_id", pa.string()),
        pa.field("identity", pa.bool_()),    # copy warm-up row (correction == answer)
        pa.field("source", pa.string()),
        pa.field("feedback_ids", pa.list_(pa.string())),
    ]),
    # SFT (best-of-N, rejection sampling)
    "sft": pa.schema(_LINEAGE + [
        pa.field("completion", pa.string()),
        pa.field("completion_id", pa.string()),
        pa.field("score", pa.float64()),
        pa.field("source", pa.string()),
        pa.field("feedback_ids", pa.list_(pa.string())),
    ]),
}

KINDS = tuple(SCHEMAS)
