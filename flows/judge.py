"""Prefect flow ``judge``: AI, rule or reward-model feedback on a round's responses; cached judgments are skipped.

    python -c "from alignloop.flows.judge import judge, JudgeParams as P; judge(P(kind='pairwise', round='r1', limit=8))"
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from typing import Any, Literal

from prefect import flow, task
from pydantic import Field

from alignloop.flows.params import FlowParams, JudgeBaseUrl, JudgeKeySecret, Principles, secret_value
from alignloop.pipelines.judges import report as quality
from alignloop.pipelines.judges import run
from alignloop.pipelines.judges.calls import CallPolicy
from alignloop.pipelines.judges.config import JudgeConfig
from alignloop.pipelines.judges.rollouts import RolloutConfig
from alignloop.warehouse import db


class JudgeParams(FlowParams):
    """What to judge and with which judge: the form the Prefect UI shows."""

    kind: Literal["pairwise", "listwise", "rating", "binary", "steps", "correction"] = Field(
        ..., description="Feedback kind.")
    round: str = Field(..., min_length=1, description="Round whose responses are judged.")
    judge: str = Field("default", description="Judge model ('default', a folder, an API model), "
                                              "'verifier:NAME' (rule) or 'rm:FOLDER' (reward model; a PRM also labels steps).")
    backend: Literal["transformers", "vllm", "openai"] = Field("transformers", description="Judge engine.")
    base_url: JudgeBaseUrl = None
    api_key_secret: JudgeKeySecret = None
    limit: int | None = Field(None, ge=1, description="Judge at most this many new items.")
    principles: Principles
    mode: Literal["auto", "logprobs", "text"] = Field("auto", description="Verdicts from token log-probs or text.")
    tie_band: float = Field(0.05, ge=0, lt=0.5, description="Pairwise: |prob_a - 0.5| <= band is a tie.")
    disagreement: Literal["tie", "drop", "first"] = Field("tie", description="Text verdicts: when the two orders "
                                                                             "disagree.")
    pairs: Literal["all", "consecutive"] = Field("all", description="Pairwise: which pairs of a prompt's responses.")
    max_pairs_per_prompt: int = Field(6, ge=1)
    group_size: int = Field(4, ge=2, le=26, description="Listwise: responses ranked together.")
    permutations: int = Field(3, ge=1, description="Listwise: orders shown (Borda count).")
    aspects: list[str] = Field(default_factory=lambda: ["overall"], description="Rating: aspects rated; pairwise, "
                              "listwise, correction: the one aspect its comparisons, rankings or corrections are "
                              "stored under.")
    max_chars: int | None = Field(4000, ge=16, description="Clip conversation and answers to this many characters.")
    batch_size: int = Field(16, ge=2, description="Conversations per backend call.")
    chunk_size: int = Field(64, ge=1, description="Items per task; each chunk is written when it finishes.")
    retries: int = Field(3, ge=1, description="Attempts per backend call.")
    prm_aggregate: Literal["product", "min"] | None = Field(
        None, description="A process reward model (rm:FOLDER from `train prm`): its step scores as the product "
                          "(default: every step right) or the minimum (the weakest step).")
    rollouts: int | None = Field(None, ge=1, description="Steps: label each step from this many completions of "
                                                        "the solution up to it (Math-Shepherd): +1 where one reaches "
                                                        "the right answer, else -1; the judge model completes.")
    rollout_verifier: str = Field("final_answer", description="Steps with rollouts: the verifier that checks each "
                                                              "completion (final_answer needs a reference answer).")
    rollout_temperature: float = Field(0.7, ge=0, description="Steps with rollouts: sampling temperature.")
    rollout_max_new_tokens: int = Field(256, ge=1, description="Steps with rollouts: longest completion, in tokens.")
    rollout_search: Literal["all", "binary"] = Field(
        "all", description="Steps with rollouts: from every step, or a binary search for the first error (OmegaPRM; "
                           "the steps after it taken as -1).")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")

    def config(self) -> JudgeConfig:
        return JudgeConfig(principles=tuple(self.principles), mode=self.mode, tie_band=self.tie_band,
                           disagreement=self.disagreement, max_chars=self.max_chars, permutations=self.permutations,
                           aspects=tuple(self.aspects), calls=CallPolicy(retries=self.retries,
                                                                         batch_size=self.batch_size))

    def chunk(self) -> int:
        """Items judged and written together: with rollouts (``n`` completions of every step of every item) at most
        8, so progress shows and a kill loses little."""
        return min(self.chunk_size, 8) if self.rollouts else self.chunk_size

    def rollout_config(self) -> RolloutConfig | None:
        if self.rollouts is None:
            return None
        return RolloutConfig(n=self.rollouts, verifier=self.rollout_verifier, temperature=self.rollout_temperature,
                             max_new_tokens=self.rollout_max_new_tokens, search=self.rollout_search)

    def request(self) -> run.JudgeRequest:
        return run.JudgeRequest(self.kind, self.round, self.limit, self.pairs, self.max_pairs_per_prompt,
                                self.group_size)

    def backend_options(self) -> dict[str, Any]:
        return engine_options(self.backend, self.base_url, self.api_key_secret, self.batch_size)


def engine_options(backend: str, base_url: str | None, api_key_secret: str | None, batch_size: int = 16
                   ) -> dict[str, Any]:
    """A judge engine's keyword arguments for ``make_backend``; an endpoint's key is read from its Secret block here,
    where the backend is built, so it never travels as a flow or task parameter."""
    if backend == "openai":
        return {"base_url": base_url, "api_key": secret_value(api_key_secret)}
    return {"max_batch_size": batch_size} if backend == "transformers" else {}


def build_judge(params: JudgeParams) -> Any:
    return run.build_judge(params.kind, params.judge, params.backend, params.config(), params.prm_aggregate,
                           params.rollout_config(), **params.backend_options())


@task(name="judge-chunk", persist_result=False)
def judge_chunk(judge: Any, kind: str, items: list, round_id: str) -> run.JudgeOutput:
    return run.execute(judge, kind, items, round_id)


def prepare(params: JudgeParams, judge_obj: Any = None,
            loading: Callable[[], AbstractContextManager[Any]] = nullcontext) -> tuple[str, Any, list, int]:
    """The warehouse, the judge (built inside ``loading``) and the items it has not judged yet, with the count of
    those it has: what the flow and ``alignloop judge`` both do before judging. A missing round fails first."""
    path = db.existing_path(params.db)
    with db.connect(path) as con:
        run.check_round(con, params.round)
    with loading():
        judge_obj = judge_obj or build_judge(params)
    with db.connect(path) as con:
        items, cached = run.select_items(con, params.request(), judge_obj)
    return path, judge_obj, items, cached


@flow(name="judge", persist_result=True)
def judge(params: JudgeParams, judge_obj: Any = None) -> dict[str, Any]:
    """Select items (ids first, cached skipped), judge chunk by chunk, write each chunk in one transaction."""
    path, judge_obj, items, cached = prepare(params, judge_obj)
    stored = run.judge_and_store(path, judge_obj, params.kind, items, params.round, params.chunk(), judge_chunk)
    aspect = {"aspect": judge_obj.aspect} if isinstance(getattr(judge_obj, "aspect", None), str) else {}
    return {"judge": judge_obj.judge, **aspect, "selected": len(items), "cached": cached, **stored}


@flow(name="judge-report", persist_result=True)
def judge_report(db_file: str | None = None, round_id: str | None = None) -> dict[str, Any]:
    """Compute the judge quality report (pairwise and listwise judges; rating judges on pairs people compared, step
    judges on steps people labelled; every AI judge's unreadable replies), store it in ``evaluations``; ``tie_rule``
    says how ties are scored against people."""
    path = db.existing_path(db_file)
    with db.connect(path) as con:
        found = quality.full_report(con, round_id)
        quality.store(con, [q for kind in found.values() for q in kind], round_id)
    return {**{kind: [asdict(q) for q in qs] for kind, qs in found.items()}, "tie_rule": quality.TIE_RULE}
