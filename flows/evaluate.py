"""Prefect flow ``evaluate``: a policy on held-out prompts it never trained on.

    python -c "from alignloop.flows.evaluate import evaluate, EvaluateParams; evaluate(EvaluateParams(round='r0'))"

Greedy answers to the held-out prompts, a verifier's pass rate (``heldout_accuracy``), length and
degeneration figures (distinct-n, repetition), the drift from a reference model, and optionally the
win rate over the previous policy by an AI judge that sees both orders.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from prefect import flow, task
from pydantic import Field

from alignloop.flows.params import FlowParams, JudgeBaseUrl, JudgeKeySecret, Principles
from alignloop.pipelines import generate as gen
from alignloop.pipelines.backends import Sampling, make_backend
from alignloop.pipelines.evaluation import text_stats, win_rate
from alignloop.pipelines.judges.config import JudgeConfig, PairItem, ResponseItem
from alignloop.pipelines.judges.run import load_responses, make_judge
from alignloop.pipelines.models import register_model, resolve_model
from alignloop.pipelines.verifiers import get_verifier, rate
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.records import Evaluation, to_arrow


class EvaluateParams(FlowParams):
    """What to evaluate: the form the Prefect UI shows."""

    round: str = Field(..., min_length=1, description="Round the figures belong to (created on first use).")
    model: str = Field("default", description="Policy: 'default' (embedded SmolLM2) or a model folder.")
    reference: str | None = Field(None, description="Reference model folder for the KL figure (empty: none).")
    verifier: str = Field("short_on_topic:6", description="Rule judge for heldout_accuracy (e.g. final_answer).")
    split: str = Field("test", description="Held-out prompts: this split.")
    tags: list[str] = Field(default_factory=list, description="Only prompts with one of these tags.")
    limit: int | None = Field(40, ge=1, description="At most this many held-out prompts.")
    max_new_tokens: int = Field(32, ge=1, description="Longest answer, in tokens.")
    previous_round: str | None = Field(None, description="Round whose policy this one is compared with by an AI "
                                                         "judge (win rate, both orders); empty: no comparison.")
    judge_model: str = Field("default", description="Judge model for the win rate ('default', a folder, or the "
                                                    "served model's name for judge_backend openai).")
    judge_backend: Literal["transformers", "openai"] = Field("transformers", description="Win-rate judge's engine "
                                                                                         "(openai: any endpoint, "
                                                                                         "e.g. vllm serve).")
    judge_base_url: JudgeBaseUrl = None
    judge_api_key_secret: JudgeKeySecret = None
    principles: Principles
    reward_model: str | None = Field(None, description="Reward model folder (`train reward`, or a PRM from `train "
                                                       "prm`): the mean score of the held-out answers "
                                                       "(heldout_reward) and, with previous_round, how often this "
                                                       "policy's answer scores higher (rm_win_rate); empty: none.")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")

    def heldout_round(self) -> str:
        return f"{self.round}/heldout"


@task(name="heldout-answers")
def heldout_answers(params: EvaluateParams, path: str) -> tuple[str, dict[str, float]]:
    """Generate (resume-aware) greedy answers; the task writes each shard (it runs in the flow's process)."""
    backend = make_backend("transformers", params.model)
    args = {"round": params.heldout_round(), "sampling": Sampling(n=1, temperature=0.0,
                                                                  max_new_tokens=params.max_new_tokens),
            "split": params.split, "tags": tuple(params.tags), "limit": params.limit, "shard_size": 64}
    cfg, work = gen.open_run(path, backend, args)
    t0 = time.perf_counter()
    totals = gen.run_and_write(path, work, cfg, lambda shard: gen.generate_shard(backend, shard, cfg))
    return cfg.model_id, {"generation_seconds": time.perf_counter() - t0,
                          "generated_tokens": float(totals["completion_tokens"])}


@task(name="kl-to-reference")
def kl_task(policy: str, reference: str, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> float:
    """KL(pi || ref) in nats per answer: one answer per held-out prompt sampled from pi at temperature 1
    (an unbiased Monte-Carlo estimate; greedy answers would bias it). The samples are not stored."""
    from alignloop.trainers.divergence import kl_to_reference

    backend = make_backend("transformers", policy, dtype="float32")  # sample the model that is scored
    samples = backend.generate(prompts, Sampling(n=1, temperature=1.0, max_new_tokens=max_new_tokens, seed=0))
    del backend
    return kl_to_reference(policy, reference, prompts, [s[0].token_ids or s[0].text for s in samples],
                           ended=[s[0].finish_reason == "stop" for s in samples])


@task(name="win-rate")
def win_rate_task(params: EvaluateParams, pairs: list[PairItem], round_id: str) -> dict[str, float]:
    """Win rate of ``a`` (this policy) over ``b`` (the previous one), judged in both orders; in memory only, so
    held-out prompts never become feedback a dataset could train on. Verdicts from the judge's log-probabilities,
    from its text where an endpoint returns none."""
    from alignloop.flows.judge import engine_options

    backend = make_backend(params.judge_backend, params.judge_model, **engine_options(
        params.judge_backend, params.judge_base_url, params.judge_api_key_secret))
    judge = make_judge("pairwise", backend, JudgeConfig(principles=tuple(params.principles), mode="auto"))
    rows = judge.judge_pairs(pairs, round_id)
    probs = [r.prob_a for r in rows if r.prob_a is not None]
    consistent = [bool(r.consistent) for r in rows if r.consistent is not None]
    return {"win_rate": sum(probs) / len(probs) if probs else float("nan"),
            "judge_consistency": sum(consistent) / len(consistent) if consistent else float("nan")}


RM_FIGURES = ("heldout_reward", "rm_win_rate")


@task(name="reward-model-scores")
def reward_task(folder: str, ours: list[ResponseItem], previous: list[ResponseItem]) -> dict[str, float]:
    """Held-out figures by a reward model, in memory only (held-out prompts never become feedback): the mean score
    of this policy's answers, and over the prompts the previous policy answered too, the share where this policy's
    answer scores higher (a tie counts half)."""
    from alignloop.pipelines.judges.reward_model import RewardModelJudge

    judge = RewardModelJudge.load(folder)
    scores = [r.score for r in judge.judge_items([*ours, *previous], "")]
    mine = {it.prompt_id: s for it, s in zip(ours, scores) if s is not None}
    figures = {"heldout_reward": sum(mine.values()) / len(mine) if mine else float("nan")}
    if previous:
        theirs = {it.prompt_id: s for it, s in zip(previous, scores[len(ours):]) if s is not None}
        both = [p for p in mine if p in theirs]
        figures["rm_win_rate"] = win_rate([mine[p] for p in both], [theirs[p] for p in both])
    return figures


def check_heldout(path: str, split: str = "test", tags: list[str] | None = None) -> None:
    """Refuse, before a model loads, a warehouse without the held-out prompts an evaluation answers."""
    with db.connect(path) as con:
        found = con.execute(db.query("select_generation_prompts"), {"split": split, "tags": list(tags or []) or None,
                                                                     "limit": 1, "fresh_for": None}).fetchall()
    if not found:
        which = f"split {split!r}" + (f" and a tag of {', '.join(tags or [])}" if tags else "")
        raise AlignloopError(f"no held-out prompts ({which}) in {path} to evaluate on; 'alignloop prompts import "
                             "FILE --test-fraction 0.1' puts a share of the prompts in the test split")


@flow(name="evaluate", persist_result=True)
def evaluate(params: EvaluateParams) -> dict[str, Any]:
    """Held-out figures for one policy, stored in ``evaluations`` (kind 'heldout') under the round."""
    path = db.existing_path(params.db)
    check_heldout(path, params.split, params.tags)
    if params.reward_model:  # from its config, before a policy loads
        from alignloop.pipelines.judges.reward_model import check_reward_model

        check_reward_model(params.reward_model)
    model_dir = str(resolve_model(params.model))
    params = params.model_copy(update={"model": model_dir})
    model_id, timing = heldout_answers(params, path)
    verifier = get_verifier(params.verifier)
    with db.connect(path) as con:
        with db.transaction(con):
            db.ensure_round(con, params.round, policy_model_id=model_id)
        rows = con.execute(db.query("heldout_answers"), {"round_id": params.heldout_round(),
                                                          "model_id": model_id}).fetchall()
        ours = {r[0] for r in rows}
        items = [it for it in load_responses(con, params.heldout_round()) if it.id in ours]
        ratings = rate(verifier, items, params.heldout_round())
        with db.transaction(con):
            if ratings:
                db.ingest(con, "ratings", to_arrow(ratings))
    answers = [r[3] for r in rows]
    figures: dict[str, float] = {"heldout_accuracy": sum(r.score for r in ratings) / len(ratings) if ratings else 0.0,
                                 "n_heldout": float(len(rows)), **text_stats(answers), **timing}
    if params.reference:
        ref_dir = str(resolve_model(params.reference))
        figures["kl_to_reference"] = kl_task(model_dir, ref_dir, [json.loads(r[2]) for r in rows],
                                             params.max_new_tokens)
    if params.previous_round:
        pairs = _pairs_with_previous(path, params, rows)
        if pairs:
            figures.update(win_rate_task(params, pairs, params.round))
    if params.reward_model:
        previous = _previous_answers(path, params) if params.previous_round else []
        figures.update(reward_task(params.reward_model, items, previous))
    config = {"verifier": verifier.judge, "split": params.split, "tags": params.tags, "limit": params.limit,
              "max_new_tokens": params.max_new_tokens, "reference": params.reference}
    if params.reward_model:
        config["reward_model"] = params.reward_model
    by_rm = {"reward_model": params.reward_model}  # the stopping rule compares rounds scored by the same one
    evals = [Evaluation.create("heldout", model_id, name, float(value), round_id=params.round, config=config,
                               details=by_rm if name in RM_FIGURES else None) for name, value in figures.items()]
    with db.connect(path) as con, db.transaction(con):
        register_model(con, model_dir, "policy")
        db.ingest(con, "evaluations", to_arrow(evals))
    samples = [{"prompt": json.loads(r[2])[-1]["content"], "answer": r[3],
                "passed": next((x.score for x in ratings if x.response_id == r[0]), None)} for r in rows]
    return {"round": params.round, "model_id": model_id, "model_dir": model_dir, "figures": figures,
            "samples": samples}


def _previous_answers(path: str, params: EvaluateParams) -> list[ResponseItem]:
    """The previous round's held-out answers (one per prompt), as judge items."""
    heldout = f"{params.previous_round}/heldout"
    with db.connect(path) as con:
        ids = {rid for _, rid, _ in con.execute(db.query("heldout_answers_of_round"), {"round_id": heldout}).fetchall()}
        return [it for it in load_responses(con, heldout) if it.id in ids]


def _pairs_with_previous(path: str, params: EvaluateParams, rows: list[tuple]) -> list[PairItem]:
    """This policy's answer (a) against the previous round's answer (b) to the same held-out prompt."""
    with db.connect(path) as con:
        prev = {pid: (rid, text) for pid, rid, text in con.execute(
            db.query("heldout_answers_of_round"), {"round_id": f"{params.previous_round}/heldout"}).fetchall()}
    return [PairItem(pid, json.loads(messages)[-1]["content"], rid, text, *prev[pid])
            for rid, pid, messages, text in rows if pid in prev]
