"""The model card (``README.md``) a trained model folder carries: what was trained, on what, how, and how it scored.

The YAML header follows the Hugging Face Hub's model-card metadata (``library_name``, ``pipeline_tag``, ``tags``),
so the folder uploaded as a model repository is described and loaded as what it is. The body is made from the
run's records only (``run.json`` beside the folder holds them all): the same finished run gives the same card.
"""

from __future__ import annotations

import json
import re
from typing import Any

from alignloop.trainers.catalog import CATALOG

PIPELINE = {"reward": "text-classification", "prm": "token-classification"}
"""Hub pipeline tag by model role (policies and Aligner correctors generate text)."""
LOADER = {"reward": "AutoModelForSequenceClassification", "prm": "AutoModelForTokenClassification"}
_RUN_ONLY = {"output_dir", "save_steps", "logging_steps", "eval"}
"""Config keys about where and how often the run wrote, not what it learned: left out of the card."""


def _trained_with(config: dict[str, Any]) -> dict[str, Any]:
    """The run's config without the keys in :data:`_RUN_ONLY` (nested ``train`` included)."""
    out = {k: v for k, v in config.items() if k not in _RUN_ONLY}
    if isinstance(out.get("train"), dict):
        out["train"] = {k: v for k, v in out["train"].items() if k not in _RUN_ONLY}
    return out


def _about(method: str) -> str:
    """The method's catalog line without its command-line hints (``--loss ...``)."""
    line = CATALOG[method].help if method in CATALOG else method
    return re.sub(r";[^;]*--.*$", "", re.sub(r"\s*\([^)]*--[^)]*\)", "", line))


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card(run: dict[str, Any], model: dict[str, Any], meta: dict[str, Any]) -> str:
    """The card for a finished run: ``run`` and ``model`` are its warehouse records as dicts, ``meta`` its summary."""
    method, config = run["method"], run.get("config") or {}
    role = model.get("role", "policy")
    dataset = (model.get("meta") or {}).get("dataset") or run.get("dataset_id") or "?"
    loss = config.get("loss")
    tags = ["alignloop", method, *([loss] if isinstance(loss, str) and loss != method else []), role]
    head = ["---", "library_name: transformers", f"pipeline_tag: {PIPELINE.get(role, 'text-generation')}", "tags:",
            *[f"- {json.dumps(t)}" for t in dict.fromkeys(tags)], "---"]
    rows = [("run", f"`{run['id']}`"), ("method", method + (f" (loss {loss})" if loss else "")),
            ("dataset", f"`{dataset}`"),
            ("base model", (f"`{meta['base_model']}`, " if meta.get("base_model") else "")
             + f"warehouse id `{run.get('base_model_id')}`")]
    if run.get("reference_model_id"):
        same = run["reference_model_id"] == run.get("base_model_id")
        rows.append(("reference model", "the base model" if same else f"warehouse id `{run['reference_model_id']}`"))
    if run.get("round_id"):
        rows.append(("round", f"`{run['round_id']}`"))
    rows.append(("steps", f"{meta.get('steps', '?')} in {meta.get('train_seconds', '?')} s"
                          + (" (bf16)" if meta.get("bf16") else "")))
    loader = LOADER.get(role, "AutoModelForCausalLM")
    body = ["", f"# {method} on {dataset}", "",
            f"Trained by alignloop: {_about(method)}.", "",
            "| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows], ""]
    evals = meta.get("eval") or {}
    if evals:
        body += ["## Held-out evaluation", "", "On the dataset's test split (prompts never trained on).", "",
                 "| metric | value |", "| --- | --- |", *[f"| {k} | {_figure(v)} |" for k, v in evals.items()], ""]
    body += ["## Loading", "", "```python", f"from transformers import AutoTokenizer, {loader}",
             f"model = {loader}.from_pretrained(\"path/to/this/folder\")",
             "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")", "```", ""]
    if role in ("reward", "prm"):
        body += [("Read its inputs as training did: the prompt's messages through the chat template, then the "
                  "answer (`alignloop judge rating --judge rm:FOLDER` does); the lengths it was trained with are in "
                  "its `config.json` (`alignloop_input`)."), ""]
    body += ["## Training configuration", "", "```json", json.dumps(_trained_with(config), indent=2, sort_keys=True),
             "```", ""]
    return "\n".join(head + body)
