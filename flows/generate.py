"""Prefect flow ``generate``: sample responses for a round's prompts, one task per shard, the flow writes.

    python -c "from alignloop.flows.generate import generate, GenerateParams as P; generate(P(round='r1', limit=8))"
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from prefect import flow, task
from pydantic import Field

from alignloop.flows.params import FlowParams, secret_value
from alignloop.pipelines import generate as gen
from alignloop.pipelines.backends import Backend, Sampling, make_backend
from alignloop.warehouse import db


class GenerateParams(FlowParams):
    """What to generate: the form the Prefect UI shows."""

    round: str = Field(..., min_length=1, description="Round name; created on first use.")
    model: str = Field("default", description="'default' (embedded SmolLM2), a model folder, or the served model "
                                              "name for the openai backend.")
    backend: Literal["transformers", "vllm", "openai"] = Field("transformers", description="Generation engine.")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (openai backend), e.g. "
                                                   "http://127.0.0.1:8000/v1; default $ALIGNLOOP_OPENAI_BASE_URL.")
    api_key_secret: str | None = Field(None, description="Name of a Prefect Secret block holding the API key "
                                                          "(openai backend); default $OPENAI_API_KEY.")
    n: int = Field(4, ge=1, description="Samples per prompt.")
    temperature: float = Field(0.7, ge=0, description="0 means greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(128, ge=1, description="Longest completion, in tokens.")
    seed: int = Field(0, description="Base seed; each sample's seed derives from it, the prompt and the index.")
    split: str | None = Field("train", description="Only prompts of this split (empty: all).")
    tags: list[str] = Field(default_factory=list, description="Only prompts with one of these tags (empty: all).")
    limit: int | None = Field(None, ge=1, description="At most this many prompts.")
    fresh: bool = Field(False, description="Only prompts no other round has sampled (fresh prompts per round).")
    shard_size: int = Field(32, ge=1, description="Prompts per task; each shard is written when it finishes.")
    max_batch_size: int = Field(64, ge=1, description="Rows decoded together (transformers backend).")
    steps_separator: str | None = Field(None, description="Split responses into steps on this separator "
                                                          "(e.g. a newline); empty: no steps.")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")

    def sampling(self) -> Sampling:
        return Sampling(n=self.n, temperature=self.temperature, top_p=self.top_p,
                        max_new_tokens=self.max_new_tokens, seed=self.seed)

    def config_args(self) -> dict[str, Any]:
        """GenerateConfig fields (all but model_id)."""
        return {"round": self.round, "sampling": self.sampling(), "split": self.split or None,
                "tags": tuple(self.tags), "limit": self.limit, "fresh": self.fresh, "shard_size": self.shard_size,
                "steps_separator": self.steps_separator or None}


def backend_options(params: GenerateParams, api_key: str | None = None) -> dict[str, Any]:
    """Backend keyword arguments for the chosen engine."""
    if params.backend == "transformers":
        return {"max_batch_size": params.max_batch_size}
    if params.backend == "openai":
        return {"base_url": params.base_url, "api_key": api_key}
    return {}


def _api_key(params: GenerateParams) -> str | None:
    return secret_value(params.api_key_secret) if params.backend == "openai" else None


@lru_cache(maxsize=2)
def _cached_backend(kind: str, model: str, opts: tuple[tuple[str, Any], ...]) -> Backend:
    """One loaded model per worker process, reused by every shard task."""
    return make_backend(kind, model, **dict(opts))  # type: ignore[arg-type]


def load_backend(params: GenerateParams) -> Backend:
    return _cached_backend(params.backend, params.model, tuple(sorted(backend_options(params, _api_key(params))
                                                                      .items())))


@task(name="generate-shard", persist_result=False)
def shard_task(params: GenerateParams, shard: list[gen.PromptTodo], cfg: gen.GenerateConfig) -> gen.ShardResult:
    return gen.generate_shard(load_backend(params), shard, cfg)


@flow(name="generate", persist_result=True)
def generate(params: GenerateParams) -> dict[str, int]:
    """Plan (resume-aware), generate shard by shard, write each shard as it arrives."""
    path = db.existing_path(params.db)
    cfg, work = gen.open_run(path, load_backend(params), params.config_args())  # the flow writes, tasks compute
    return gen.run_and_write(path, work, cfg, lambda shard: shard_task(params, shard, cfg))
