"""Prefect flow ``import_prompts``: bring a file of prompts (and the feedback it carries) into the warehouse.

    python -c "from alignloop.flows.import_prompts import import_prompts, ImportPromptsParams; \
import_prompts(ImportPromptsParams(path='data/demo_prompts.jsonl'))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow
from pydantic import Field

from alignloop.flows.params import FlowParams
from alignloop.pipelines.intake import ImportOptions, import_into
from alignloop.warehouse import db

Format = Literal["auto", "jsonl", "json", "csv", "parquet", "hf", "hh-rlhf", "prm800k", "qac", "preference",
                 "unpaired", "ultrafeedback", "ranking", "nectar", "shp", "pku-saferlhf", "helpsteer",
                 "beavertails"]


class ImportPromptsParams(FlowParams):
    """What to import: the form the Prefect UI shows."""

    path: str = Field(..., min_length=1, description="File (or HF datasets folder) to import, as the flow's "
                                                     "machine sees it.")
    format: Format = Field("auto", description="File format; 'auto' detects HH-RLHF, PRM800K, Q-A-C, preference "
                                               "(prompt/chosen/rejected), unpaired (prompt/completion/label), "
                                               "UltraFeedback, ranking (prompt/completions/ranks), Nectar, "
                                               "SHP, PKU-SafeRLHF, BeaverTails and HelpSteer records.")
    round: str = Field("import", min_length=1, description="Round that imported responses and feedback belong to.")
    source: str | None = Field(None, description="Source name stored with the prompts (default: the file name).")
    feedback_source: Literal["human", "ai"] | None = Field(None, description="Who gave the file's labels: people "
                                                                             "or a model (empty: ai for "
                                                                             "UltraFeedback and Nectar, else "
                                                                             "human).")
    aspect: str = Field("overall", min_length=1, description="What the file's comparisons judged where a record "
                                                             "does not say (e.g. helpfulness, harmlessness).")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of prompts put in the test split "
                                                              "(chosen from the prompt id).")
    near_dup: float | None = Field(None, gt=0, le=1, description="Drop prompts whose 3-gram Jaccard similarity to "
                                                                 "an earlier one is at least this (empty: keep).")
    on_error: Literal["fail", "skip"] = Field("fail", description="fail: write nothing on a bad record; "
                                                                  "skip: import the rest.")
    limit: int | None = Field(None, ge=1, description="Read at most this many records (empty: all).")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")

    def options(self) -> ImportOptions:
        return ImportOptions(format=self.format, round=self.round, source=self.source,
                             feedback_source=self.feedback_source, aspect=self.aspect,
                             test_fraction=self.test_fraction, near_dup=self.near_dup, on_error=self.on_error,
                             limit=self.limit)


@flow(name="import-prompts", persist_result=True)
def import_prompts(params: ImportPromptsParams) -> dict[str, Any]:
    """Import one file: parsed first, then written in one transaction (rerunning it, or importing a renamed copy,
    inserts nothing twice); returns the import summary."""
    return import_into(params.db or db.default_path(), Path(params.path), params.options()).as_dict()
