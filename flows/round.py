"""Prefect flow ``round``: walk the loop once — generate, get feedback, build a dataset, train, evaluate.

    python -c "from alignloop.flows.round import round_flow, RoundParams; round_flow(RoundParams(round='r1'))"

Policy k answers fresh samples of the training prompts, a verifier (or an AI judge with position swap)
scores them, the round's pairs become a dataset snapshot, iterative DPO (or PPO with a reward model)
trains policy k+1 against a reference (the previous policy by default), and policy k+1 is evaluated on
held-out prompts. The stopping rule reads every round's held-out figures and says whether to go on.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import Field, model_validator

from alignloop.annotation import waiting
from alignloop.annotation.configs import question_problem
from alignloop.annotation.mapping import THUMBS_ASPECT
from alignloop.flows.annotate import (
    AnnotatePullParams,
    AnnotatePushParams,
    LabelStudioParams,
    QuotaReached,
    annotate_pull,
    annotate_push,
    count_done,
    label_studio,
    round_project_id,
)
from alignloop.flows.build_dataset import BuildDatasetParams, build_dataset
from alignloop.flows.evaluate import RM_FIGURES, EvaluateParams, check_heldout, evaluate
from alignloop.flows.generate import GenerateParams, generate
from alignloop.flows.judge import JudgeParams, judge
from alignloop.flows.params import FlowParams, JudgeBaseUrl, JudgeKeySecret, Principles
from alignloop.flows.train import TrainParams, train
from alignloop.pipelines.evaluation import StoppingRule
from alignloop.pipelines.judges.reward_model import check_reward_model
from alignloop.pipelines.models import resolve_model
from alignloop.trainers.config import check_run_folder
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError, InputError
from alignloop.warehouse.ids import canonical_json
from alignloop.warehouse.names import check_name
from alignloop.warehouse.records import Evaluation, to_arrow
from alignloop.warehouse.redact import redact_urls

NEXT = "next"
"""Round name that picks the round itself (see ``next_round``): what a scheduled deployment runs."""
SELF_JUDGE = "policy"
"""``judge_model`` for self-rewarding rounds: the round's own policy judges."""
ONLINE = ("ppo", "grpo", "rloo", "online_dpo")
"""Methods that sample and score as they train (the others train offline on the round's dataset)."""


class RoundParams(FlowParams):
    """One round of the loop: the form the Prefect UI shows."""

    round: str = Field(NEXT, min_length=1, description="This round's name (e.g. r1; created on first use), or "
                                                     "'next': go on from the round run last (resume it if it did "
                                                     "not finish, else the one after it, e.g. r4 after r3; r1 on "
                                                     "a new warehouse), as a schedule does.")
    policy: str = Field("auto", description="Policy k: 'auto' (the parent round's trained policy where there is a "
                                            "parent round, else the initial policy), 'previous' (the parent's; a "
                                            "parent is required), 'default' (embedded SmolLM2) or a model folder.")
    parent_round: str | None = Field(None, description="Round this one continues (for 'previous' and lineage).")
    reference: Literal["previous", "initial"] = Field("previous", description="DPO reference: policy k, or the "
                                                                              "initial policy.")
    initial_policy: str = Field("default", description="The initial policy (reference when reference='initial').")
    feedback: Literal["verifier", "ai_judge", "human", "ai_judge+human", "reward_model"] = Field(
        "verifier", description="Who scores the samples: a rule verifier, an AI judge (both orders; online methods: "
                                "its 0-9 rating of each sample, direct RLAIF), people in Label Studio, the AI judge "
                                "first and people on what it was inconsistent on, or a reward model (per prompt its "
                                "best-scored sample over its worst).")
    verifier: str = Field("short_on_topic:6", description="Rule judge (feedback=verifier) and held-out metric.")
    require_consistent: bool = Field(True, description="AI judge feedback: train only on verdicts that agree in both "
                                                       "orders; false keeps every verdict, each pair's target the "
                                                       "judge's swap-averaged probability (soft labels; a tie 0.5).")
    judge_model: str = Field("default", description="Judge model (feedback=ai_judge), judged in both orders; "
                                                    "'policy': the round's own policy judges its samples "
                                                    "(self-rewarding, Yuan et al. 2024).")
    judge_backend: Literal["transformers", "openai"] = Field(
        "transformers", description="The AI judge's engine (feedback ai_judge and ai_judge+human, and the held-out "
                                    "win rate): openai is any OpenAI-compatible endpoint (an API, vLLM's or "
                                    "llama.cpp's server), judge_model then the served model's name. A vLLM judge is "
                                    "served beside the round (vllm serve), not loaded in it: the round trains on "
                                    "the same GPU.")
    judge_base_url: JudgeBaseUrl = None
    judge_api_key_secret: JudgeKeySecret = None
    principles: Principles
    judge_aspect: str = Field("overall", min_length=1, description=(
        "feedback ai_judge: what its verdicts judge (e.g. harmlessness, with principles that say what it weighs), "
        "stored as that aspect; the round's dataset reads it."))
    reward_model: str | None = Field(None, description="Reward model folder (feedback=reward_model), from "
                                                       "`alignloop train reward` (or a PRM from `train prm`).")
    n: int = Field(4, ge=2, description="Samples per training prompt (grpo, rloo, online_dpo: also per prompt in "
                                        "each training iteration).")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature for training samples.")
    max_new_tokens: int = Field(24, ge=1, description="Longest sample, in tokens.")
    prompts_per_round: int | None = Field(None, ge=1, description="Training prompts per round (empty: all).")
    fresh_prompts: bool = Field(False, description="Each round samples training prompts no other round has used "
                                                   "(a new shard per round); set prompts_per_round with it.")
    prompt_tags: list[str] = Field(default_factory=list, description="Only prompts with one of these tags.")
    max_pairs_per_prompt: int = Field(2, ge=1, description="Preference pairs kept per prompt.")
    replay_rounds: int = Field(0, ge=0, description="dpo, kto: also train on the feedback of up to this many rounds "
                                                    "before this one along its parents (a replay buffer; each as it "
                                                    "was judged then); 0: this round's only.")
    rso_beta: float | None = Field(None, gt=0, description="feedback reward_model, method dpo: pair the samples by "
                                                           "RSO's statistical rejection sampling at this temperature "
                                                           "(reward units): keep each with probability exp((reward "
                                                           "- best) / rso_beta), then pairs among the kept, up to "
                                                           "max_pairs_per_prompt (empty: best over worst).")
    method: Literal["dpo", "kto", "listwise", "ppo", "grpo", "rloo", "online_dpo"] = Field(
        "dpo", description="dpo: iterative DPO on the round's pairs; kto: KTO on unpaired rows (with feedback "
                           "verifier each sample's own pass or fail, with human people's thumbs, else the pairs "
                           "split in two); listwise: each prompt's n samples ranked (the AI judge's listwise "
                           "ranking or the reward model's scores) for a list loss (loss lipo by default, rrhf, "
                           "pro, ...); ppo, grpo, rloo, "
                           "online_dpo: online training on "
                           "the round's prompts, scored as it samples by what gives the round's feedback: "
                           "reward_model (feedback reward_model) or the verifier (feedback verifier). loss is dpo's "
                           "and online_dpo's, beta theirs and kto's.")
    dynamic_sampling: bool = Field(False, description="grpo, rloo, online_dpo: update only on prompts whose samples "
                                                      "scored differently, sampling more prompts to fill each batch "
                                                      "(DAPO).")
    ptx_dataset: str | None = Field(None, description="ppo, grpo, rloo, online_dpo, PPO-ptx: an sft dataset whose "
                                                      "completions' likelihood each update keeps (with ptx_coef).")
    ptx_coef: float = Field(0.0, ge=0, description="PPO-ptx: weight of that likelihood term (0: off).")
    cost_model: str | None = Field(None, description="ppo, grpo, rloo, online_dpo, Safe RLHF: a reward model "
                                                     "trained on harmlessness pairs; its negated score is a sample's "
                                                     "cost, kept under cost_limit by a Lagrange multiplier.")
    cost_limit: float | None = Field(None, description="Safe RLHF: the bound on the samples' mean cost (empty: the "
                                                       "round's starting policy's).")
    stages: int = Field(1, ge=1, description="dpo: sDPO, train on the round's pairs in this many parts in turn, "
                                             "each from and against the model of the stage before (1: plain DPO).")
    loss: str = Field("dpo", description="Loss of the dpo and online_dpo methods (dpo, ipo, simpo, ...).")
    beta: float = Field(0.1, gt=0, description="KL strength of the loss.")
    lr: float = Field(5e-6, gt=0, description="Learning rate.")
    epochs: float = Field(2.0, gt=0, description="Passes over the round's pairs.")
    batch_size: int = Field(4, ge=1, description="Pairs per step.")
    max_length: int = Field(128, ge=16, description="Longest prompt + answer, in tokens.")
    heldout_limit: int = Field(40, ge=1, description="Held-out prompts evaluated.")
    heldout_max_new_tokens: int = Field(32, ge=1, description="Longest held-out answer, in tokens.")
    win_rate: bool = Field(True, description="Also judge policy k+1 against the parent round's policy on held-out "
                                             "prompts (AI judge, both orders).")
    min_improvement: float = Field(0.02, ge=0, description="Stopping rule: stop below this held-out gain (of the "
                                                           "verifier's pass rate; of the mean reward with "
                                                           "feedback=reward_model).")
    seed: int = Field(0, description="Sampling seed for this round.")
    human_sample: int | None = Field(None, ge=1, description="Human feedback: pairs sent to Label Studio "
                                                             "(empty: all).")
    annotation_questions: list[str] | None = Field(None, description="Human feedback: the optional aspect questions "
                                                                     "the round's Label Studio project asks besides "
                                                                     "the overall one (empty: harmlessness).")
    annotation_overlap: int | None = Field(None, ge=1, description="Human feedback: annotators each task wants "
                                                                   "before it counts towards the quota (empty: 1).")
    annotation_instructions: str | None = Field(None, description="Human feedback: what annotators read before they "
                                                                  "label (HTML or text).")
    human_quota: int | None = Field(None, ge=1, description="Human feedback: annotated tasks needed before "
                                                            "training (empty: every task of the round).")
    human_wait: Literal["auto", "suspend", "poll", "stop"] = Field(
        "auto", description="Until the quota is met: suspend the run (deployments; resumed by the "
                            "check-annotation-quota flow or a webhook), poll Label Studio in-process, or stop the "
                            "round at once (rerun it later). auto: suspend under a deployment, else poll.")
    human_timeout_s: int = Field(86400, ge=1, description="Human feedback: stop waiting after this many seconds; "
                                                          "the round ends 'waiting' and a rerun resumes it.")
    poll_interval_s: int = Field(15, ge=1, description="Human feedback: seconds between Label Studio polls.")
    label_studio_url: str | None = Field(None, description="Label Studio URL; default env LABEL_STUDIO_URL.")
    label_studio_token_secret: str | None = Field(None, description="Prefect Secret block holding the Label "
                                                                    "Studio token; default env "
                                                                    "LABEL_STUDIO_API_KEY.")
    runs_dir: str = Field("runs", description="Where trained models are written.")
    db: str | None = Field(None, description="Warehouse file; default $ALIGNLOOP_DB or ./alignloop.duckdb.")

    def path(self) -> str:
        return db.existing_path(self.db)

    def dataset(self) -> tuple[str, str]:
        """(kind, name) of the dataset the round builds from its feedback."""
        if self.method == "listwise":  # every sample of a prompt in one ranked list
            return "listwise", f"{self.round}-lists"
        if _thumbs(self):  # people's thumbs up or down on each sample: KTO's unpaired rows as they are
            return "binary", f"{self.round}-thumbs"
        if self.method != "dpo" and self.feedback == "verifier":
            # online RL needs only the round's prompts, and a verifier may fail every sample of a prompt (no pair):
            # its outcomes, pass or fail, carry every sampled prompt; KTO learns from each sample's own outcome
            return "binary", f"{self.round}-outcomes"
        if self.method == "kto":  # the round's pairs, each split into a desirable and an undesirable answer
            return "binary", f"{self.round}-unpaired"
        return "pairwise", f"{self.round}-pairs"

    def run_folder(self) -> str:
        """Where the round's training run goes (``runs_dir``/ROUND)."""
        return f"{self.runs_dir}/{self.round}"

    @model_validator(mode="after")
    def _names_valid(self) -> RoundParams:
        """A name the round derives its dataset's and run folder's from fails here, in the form, not after
        generation and judging."""
        try:
            check_name(self.round, "round name")
            check_name(self.dataset()[1], "the round's dataset name")
        except InputError as exc:
            raise ValueError(str(exc)) from None  # the form's error: one line from validated(), a field in the UI
        return self

    def scored_by(self) -> str | None:
        """The reward model the round optimises (its feedback, and PPO's reward), which then also scores the held-out
        answers and drives the stopping rule; None for rounds without one."""
        return self.reward_model if self.feedback == "reward_model" else None

    @model_validator(mode="after")
    def _reward_model_given(self) -> RoundParams:
        if self.method in ONLINE and self.feedback not in ("reward_model", "verifier", "ai_judge"):
            raise ValueError(f"method {self.method!r} trains on scores a program gives as it samples: set feedback "
                             f"'reward_model' (and reward_model), 'verifier' or 'ai_judge' (direct RLAIF: the judge "
                             f"rates each sample), not {self.feedback!r}")
        if self.feedback == "reward_model" and not self.reward_model:
            raise ValueError("feedback 'reward_model' needs reward_model: the folder of a trained reward model")
        if self.dynamic_sampling and self.method not in ("grpo", "rloo", "online_dpo"):
            raise ValueError(f"dynamic_sampling drops groups of samples to one prompt that scored alike: needs method "
                             f"grpo, rloo or online_dpo, not {self.method!r}")
        if (self.ptx_dataset or self.ptx_coef) and self.method not in ONLINE:
            raise ValueError(f"ptx_dataset and ptx_coef (PPO-ptx) mix into an online method's updates: needs method "
                             f"ppo, grpo, rloo or online_dpo, not {self.method!r}")
        if self.replay_rounds and self.method in ONLINE:
            raise ValueError(f"replay_rounds adds earlier rounds' feedback to an offline method's: needs method "
                             f"'dpo' or 'kto', not {self.method!r}")
        self._loss_fits()
        if self.method == "listwise" and self.feedback not in ("ai_judge", "reward_model"):
            raise ValueError(f"method 'listwise' ranks each prompt's samples: needs feedback 'ai_judge' (its "
                             f"listwise ranking) or 'reward_model' (its scores), not {self.feedback!r}")
        if self.stages > 1 and self.method != "dpo":
            raise ValueError(f"stages (sDPO) cut an offline DPO's pairs into parts: needs method 'dpo', not "
                             f"{self.method!r}")
        if self.rso_beta is not None and (self.feedback != "reward_model" or self.method != "dpo"):
            raise ValueError(f"rso_beta samples pairs from a reward model's scores for DPO: needs feedback "
                             f"'reward_model' and method 'dpo', not {self.feedback!r} and {self.method!r}")
        if (self.cost_model or self.cost_limit is not None) and self.method not in ONLINE:
            raise ValueError(f"cost_model and cost_limit (Safe RLHF) weigh an online method's samples: needs method "
                             f"ppo, grpo, rloo or online_dpo, not {self.method!r}")
        if self.cost_limit is not None and not self.cost_model:
            raise ValueError("cost_limit bounds the cost a cost_model gives: set cost_model")
        self._judge_engine_fits()
        asked = [k for k in ("annotation_questions", "annotation_overlap", "annotation_instructions")
                 if getattr(self, k) is not None]
        if asked and self.feedback not in ("human", "ai_judge+human"):
            raise ValueError(f"{', '.join(asked)}: Label Studio's, needs feedback 'human' or 'ai_judge+human', not "
                             f"{self.feedback!r}")
        if self.annotation_questions is not None and (problem := question_problem(self.annotation_questions)):
            raise ValueError(problem)
        if self.annotation_questions is not None and self.method == "kto" and self.feedback == "human":
            raise ValueError("annotation_questions are asked of pairs: a KTO round with human feedback asks a thumbs "
                             "up or down on each sample")
        if bool(self.ptx_dataset) != bool(self.ptx_coef):
            raise ValueError("PPO-ptx needs both ptx_dataset (an sft dataset) and ptx_coef > 0")
        return self

    def _judge_engine_fits(self) -> None:
        """The AI judge's engine and what it judges, where the round has one to give them to."""
        if self.judge_aspect != "overall" and self.feedback != "ai_judge":
            raise ValueError(f"judge_aspect is what the AI judge's verdicts are stored as judging: needs feedback "
                             f"'ai_judge', not {self.feedback!r} (people answer the overall question)")
        if self.judge_backend == "transformers":
            if self.judge_base_url or self.judge_api_key_secret:
                raise ValueError("judge_base_url and judge_api_key_secret are an endpoint's: set judge_backend "
                                 "'openai'")
            return
        if self.feedback not in ("ai_judge", "ai_judge+human") and not self.win_rate:
            raise ValueError(f"judge_backend {self.judge_backend!r}: this round has no AI judge (feedback "
                             f"{self.feedback!r}, win_rate off)")
        if self.judge_backend == "openai" and self.judge_model in ("default", SELF_JUDGE):
            raise ValueError(f"judge_backend 'openai' needs judge_model: the served model's name, not "
                             f"{self.judge_model!r}")

    def _loss_fits(self) -> None:
        """An unknown loss, or one of the wrong kind for the method, fails here (in the form, before any
        generation), not at training; a listwise round left at the default loss takes lipo."""
        from alignloop.trainers.losses import get_loss

        if self.method == "listwise" and self.loss == "dpo":
            self.loss = "lipo"
        if self.method not in ("dpo", "online_dpo", "listwise"):
            if self.loss != "dpo":
                raise ValueError(f"loss is dpo's, online_dpo's and listwise's: method {self.method!r} has its own")
            return
        want, what = ("lists", "listwise") if self.method == "listwise" else ("pairs", "pairwise")
        if (got := get_loss(self.loss).data) != want:
            raise ValueError(f"loss {self.loss!r} is not {what} (it takes {got}); method {self.method!r} trains on "
                             f"{'ranked lists' if want == 'lists' else 'preference pairs'}")


def _after(name: str) -> str:
    """r3 -> r4, r09 -> r10, nightly -> nightly2."""
    m = re.fullmatch(r"(.*?)(\d+)", name)
    return f"{m[1]}{int(m[2]) + 1:0{len(m[2])}d}" if m else f"{name}2"


def next_round(params: RoundParams) -> RoundParams | dict[str, Any]:
    """The concrete round that ``round='next'`` stands for, or, where the stopping rule ended the iteration, the
    summary to return instead of running one.

    The round run last (by the round flow) is resumed with its recorded parameters when it did not finish
    (running, waiting for labels, or failed); after a finished one comes the next name, continuing it (``parent_round``);
    on a warehouse without one, ``r1`` (a policy of 'previous' is then the initial policy).
    """
    with db.connect(params.path()) as con:
        last = con.execute(db.query("latest_flow_round")).fetchall()
        taken = {r[0] for r in con.execute(db.query("round_names")).fetchall()}
    update: dict[str, Any] = {"parent_round": None}
    if last:
        round_id, status, config = last[0]
        if status in ("running", "waiting", "failed"):
            stored = json.loads(config) if isinstance(config, str) else dict(config)
            return RoundParams(**{**stored, "db": params.db})
        if status == "stopped":
            return {"round": round_id, "status": "iteration_stopped", "stop": True,
                    "reason": f"the stopping rule ended the iteration after round {round_id}; to go on all the "
                              f"same, run a named round (--round NAME --policy previous --parent-round {round_id})"}
        update["parent_round"] = params.parent_round or round_id
    elif params.policy == "previous":
        update["policy"] = params.initial_policy
    name = _after(last[0][0]) if last else "r1"
    while name in taken:
        name = _after(name)
    return params.model_copy(update={**update, "round": name})


@task(name="resolve-policy")
def resolve_policy(params: RoundParams) -> tuple[str, str]:
    """(policy k folder, reference folder)."""
    chosen = params.policy
    if chosen == "auto":
        chosen = "previous" if params.parent_round else params.initial_policy
    if chosen == "previous":
        if not params.parent_round:
            raise AlignloopError("policy 'previous' needs --parent-round")
        with db.connect(params.path()) as con:
            row = con.execute(db.query("round_output_model"), {"round_id": params.parent_round}).fetchall()
        if not row:
            raise AlignloopError(f"round {params.parent_round!r} has no trained policy; run it first")
        policy = row[0][0]
    else:
        policy = str(resolve_model(chosen))
    reference = policy if params.reference == "previous" else str(resolve_model(params.initial_policy))
    return policy, reference


@task(name="stopping-rule")
def decide(params: RoundParams) -> tuple[bool, str]:
    """Apply the stopping rule to the held-out history and record the decision in ``evaluations``."""
    with db.connect(params.path()) as con:
        rows = con.execute(db.query("heldout_history")).fetchall()
    by_round: dict[str, dict[str, float]] = {}
    rm = params.scored_by()
    metric = "heldout_reward" if rm else "heldout_accuracy"
    for round_id, name, value, scored_by in rows:
        if name in RM_FIGURES and scored_by != rm:  # reward scales differ between reward models
            continue
        by_round.setdefault(round_id, {})[name] = value
    history = [m for m in by_round.values() if metric in m]
    stop, reason = StoppingRule(metric=metric, min_improvement=params.min_improvement).decide(history)
    ev = Evaluation.create("heldout", "stopping_rule", "decision", float(stop), round_id=params.round,
                           details={"stop": stop, "reason": reason, "rounds_seen": list(by_round)})
    with db.connect(params.path()) as con, db.transaction(con):
        db.ingest(con, "evaluations", to_arrow([ev]))
    return stop, reason


@task(name="round-status", cache_policy=NO_CACHE, persist_result=False)  # a resumed run writes it again
def set_status(params: RoundParams, status: str, policy: str | None = None) -> None:
    from alignloop.pipelines.models import register_model

    config = canonical_json(redact_urls(params.model_dump(exclude={"db"})))  # a URL's credentials stay in memory
    with db.connect(params.path()) as con, db.transaction(con):
        db.ensure_round(con, params.round)
        policy_id = register_model(con, policy, "policy") if policy else None
        con.execute(db.query("set_round_status"), {"round_id": params.round, "status": status, "config": config,
                                                    "parent": params.parent_round, "policy": policy_id})


@flow(name="round", persist_result=True)
def round_flow(params: RoundParams) -> dict[str, Any]:
    """Policy k -> samples -> feedback -> dataset -> policy k+1 -> held-out evaluation -> stop or go on."""
    if params.round == NEXT:
        chosen = next_round(params)
        if isinstance(chosen, dict):
            get_run_logger().info(chosen["reason"])
            return chosen
        params = chosen
        get_run_logger().info("round 'next' is %s (after %s)", params.round, params.parent_round or "none")
    check_heldout(params.path())  # the round ends on held-out figures: refuse before anything runs
    check_run_folder(params.run_folder())  # and trains into its run folder: one of other files is refused now
    if params.feedback == "reward_model":  # the same for a reward model that would only load after generation
        check_reward_model(params.reward_model)
    if params.judge_backend == "openai":  # before anything is generated
        from alignloop.pipelines.backends.openai_backend import resolve_base_url

        try:
            resolve_base_url(params.judge_base_url)
        except AlignloopError:
            raise AlignloopError("judge_backend 'openai' has no endpoint: set judge_base_url (or "
                                 "$ALIGNLOOP_OPENAI_BASE_URL)") from None
    policy, reference = resolve_policy(params)
    set_status(params, "running", policy)
    try:
        return _run_round(params, policy, reference)
    except Exception:
        # what `alignloop status` shows; 'next' resumes a failed round once its cause is fixed
        set_status(params, "failed")
        raise


def _run_round(params: RoundParams, policy: str, reference: str) -> dict[str, Any]:
    path = params.path()
    # self-rewarding: the policy the round starts from judges its own samples (and the held-out win rate)
    judge_model = policy if params.judge_model == SELF_JUDGE else params.judge_model
    timings: dict[str, float] = {}

    def timed(stage: str, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        timings[stage] = time.perf_counter() - t0
        return out

    gen = timed("generate", generate, GenerateParams(
        round=params.round, model=policy, n=params.n, temperature=params.temperature,
        max_new_tokens=params.max_new_tokens, seed=params.seed, split="train", tags=params.prompt_tags,
        limit=params.prompts_per_round, fresh=params.fresh_prompts, db=path))
    if not gen["selected"]:
        raise AlignloopError(f"round {params.round}: no training prompts to sample"
                             + (" that no other round has used (fresh_prompts); import more prompts"
                                if params.fresh_prompts else "; import prompts first"))
    if params.method == "listwise" and params.feedback == "ai_judge":  # each prompt's samples ranked together
        fb = timed("feedback", judge, JudgeParams(kind="listwise", round=params.round, group_size=params.n,
                                                  aspects=[params.judge_aspect], **_judge_engine(params, judge_model),
                                                  db=path))
        options: dict[str, Any] = {"origin": "rankings", "rounds": [params.round], "sources": ["ai"],
                                   "aspect": params.judge_aspect}
    elif params.feedback == "verifier":
        fb = timed("feedback", judge, JudgeParams(kind="binary", round=params.round,
                                                  judge=f"verifier:{params.verifier}", db=path))
        options = {"origin": "verifier", "rounds": [params.round], "pairing": "all",
                   "max_pairs_per_prompt": params.max_pairs_per_prompt,
                   "aspect": fb.get("aspect") or _verifier_aspect(params.verifier)}
    elif params.feedback == "reward_model" or params.method in ONLINE:  # online: what scores the samples in training
        rm = params.feedback == "reward_model"  # else direct RLAIF: the AI judge's expected 0-9 rating
        fb = timed("feedback", judge, JudgeParams(kind="rating", round=params.round, judge=f"rm:{params.reward_model}",
                                                  mode="auto", db=path) if rm else
                   JudgeParams(kind="rating", round=params.round, mode="logprobs", aspects=[params.judge_aspect],
                               **_judge_engine(params, judge_model), db=path))
        options = {"origin": "ratings", "rounds": [params.round], "sources": ["reward_model" if rm else "ai"],
                   "judges": [fb["judge"]], "aspect": fb["aspect"] if rm else params.judge_aspect,
                   "pairing": "best_vs_worst"}
        if params.rso_beta is not None:
            options |= {"pairing": "rso", "rso_beta": params.rso_beta, "rso_seed": params.seed,
                        "max_pairs_per_prompt": params.max_pairs_per_prompt}
    else:
        fb = {}
        if params.feedback != "human":
            fb = timed("feedback", judge, JudgeParams(kind="pairwise", round=params.round,
                                                      max_pairs_per_prompt=params.max_pairs_per_prompt,
                                                      aspects=[params.judge_aspect],
                                                      **_judge_engine(params, judge_model), db=path))
        options = {"origin": "comparisons", "rounds": [params.round], "sources": ["ai"], "aspect": params.judge_aspect}
        if not params.require_consistent:
            options |= {"require_consistent": False, "soft_labels": True, "ties": "keep"}
        if params.feedback != "ai_judge":
            human = human_feedback(params, timed)
            if human["status"] != "labelled":
                set_status(params, "waiting", policy)
                return {"round": params.round, "policy": policy, "status": "waiting_for_labels", "generate": gen,
                        "feedback": fb, "human": human, "stop": False, "timings": timings,
                        "reason": f"{human['done']} of {human['quota']} tasks annotated; rerun the round to go on"}
            fb = {**fb, "human": human}
            options["sources"] = ["human"] if params.feedback == "human" else ["human", "ai"]
    kind, dataset = params.dataset()
    if kind == "listwise":  # every sample of a prompt in one ranked list
        options = {"k": params.n, **{k: v for k, v in options.items() if k not in ("pairing", "rso_beta", "rso_seed",
                                                                                     "max_pairs_per_prompt")}}
    elif dataset.endswith("-thumbs"):  # people's thumbs up or down on each sample: KTO's unpaired rows as they are
        options = {"origin": "thumbs", "rounds": [params.round], "sources": ["human"], "aspect": THUMBS_ASPECT}
    elif dataset.endswith("-outcomes"):
        options = {"origin": "thumbs", "rounds": [params.round], "sources": ["rule"], "aspect": options["aspect"]}
    elif dataset.endswith("-unpaired"):
        options = unpaired(options)
    if params.replay_rounds:  # a replay buffer: the feedback of the rounds before this one, as judged then
        options["rounds"] = [params.round, *replayed(path, params.round, params.replay_rounds)]
    ds = timed("dataset", build_dataset, BuildDatasetParams(kind=kind, name=dataset, options=options, db=path))
    tr = timed("train", train, TrainParams(
        method=params.method, dataset=dataset, base=policy, reference=reference,
        **({"loss": params.loss, "beta": params.beta} if params.method in ("dpo", "online_dpo", "listwise") else
           {"beta": params.beta} if params.method == "kto" else {}),
        **({"stages": params.stages} if params.stages > 1 else {}),
        **(_online(params, judge_model) if params.method in ONLINE else {}), lr=params.lr, epochs=params.epochs,
        batch_size=params.batch_size, max_length=params.max_length, round=params.round,
        output_dir=params.run_folder(), db=path))
    ev = timed("evaluate", evaluate, EvaluateParams(
        round=params.round, model=tr["model_dir"], reference=reference, verifier=params.verifier,
        limit=params.heldout_limit, max_new_tokens=params.heldout_max_new_tokens,
        previous_round=params.parent_round if params.win_rate else None, judge_model=judge_model,
        judge_backend=params.judge_backend, judge_base_url=params.judge_base_url,
        judge_api_key_secret=params.judge_api_key_secret, principles=params.principles,
        reward_model=params.scored_by(), db=path))
    stop, reason = decide(params)
    set_status(params, "stopped" if stop else "done")
    keys = ("run_id", "model_dir", "steps", "train_seconds", "eval", "plot")
    train_part = {k: tr.get(k) for k in keys}
    if "stages" in tr:  # sDPO: each stage's run, as `alignloop train` lists them
        train_part["stages"] = [{k: s.get(k) for k in keys} for s in tr["stages"]]
    summary = {"round": params.round, "policy": policy, "new_policy": tr["model_dir"], "generate": gen,
               "feedback": fb, "dataset": ds, "train": train_part,
               "heldout": ev["figures"], "samples": ev["samples"], "stop": stop, "reason": reason,
               "timings": timings}
    create_markdown_artifact(key=_artifact_key(params.round), markdown=_markdown(summary),
                             description=f"alignloop round {params.round}")
    return summary


def _online(params: RoundParams, judge_model: str) -> dict[str, Any]:
    """An online method's reward and sampling, the round's own: its reward model, verifier or AI judge (direct
    RLAIF; the policy the round started from for a self-rewarding round), and answers sampled as the round samples
    (``n`` per prompt for grpo and rloo, ``max_new_tokens`` long, at its temperature)."""
    reward = {"reward_model": {"reward_model": params.reward_model}, "verifier": {"verifier": params.verifier},
              "ai_judge": _trainer_judge(params, judge_model)}[params.feedback]
    return {**reward, "max_new_tokens": params.max_new_tokens, "temperature": params.temperature,
            "samples_per_prompt": params.n if params.method != "ppo" else None,
            "dynamic_sampling": params.dynamic_sampling or None,
            **({"ptx_dataset": params.ptx_dataset, "ptx_coef": params.ptx_coef} if params.ptx_dataset else {}),
            **({"cost_model": params.cost_model, "cost_limit": params.cost_limit} if params.cost_model else {})}


def unpaired(pairwise: dict[str, Any]) -> dict[str, Any]:
    """A pairwise build's options as a binary build that splits those pairs (KTO's unpaired rows): the shared
    options as they are, the pairwise ones as ``pairwise.KEY``. Left out: a cap of pairs per prompt (the pairwise
    kind's), and soft labels and kept ties (a split pair's labels are hard: a tie has no desirable side)."""
    from dataclasses import fields

    from alignloop.pipelines.datasets.config import CommonOptions

    shared = {f.name for f in fields(CommonOptions)}
    return {"origin": "pairwise", **{k if k in shared else f"pairwise.{k}": v for k, v in pairwise.items()
                                     if k not in ("max_pairs_per_prompt", "soft_labels", "ties")}}


def replayed(path: str, round_id: str, depth: int) -> list[str]:
    """Up to ``depth`` rounds before ``round_id`` along its parents, nearest first."""
    with db.connect(path) as con:
        return [r[0] for r in con.execute(db.query("round_ancestors"), {"round_id": round_id, "depth": depth})
                .fetchall()]


def _judge_engine(params: RoundParams, judge_model: str) -> dict[str, Any]:
    """The judge flow's fields for the round's AI judge: its model, engine and principles."""
    return {"judge": judge_model, "backend": params.judge_backend, "base_url": params.judge_base_url,
            "api_key_secret": params.judge_api_key_secret, "principles": params.principles}


def _trainer_judge(params: RoundParams, judge_model: str) -> dict[str, Any]:
    """Direct RLAIF's judge as the trainer takes it: a local model, or the served one at its endpoint."""
    out: dict[str, Any] = {"judge_model": judge_model, "judge_principles": params.principles,
                           "judge_aspect": params.judge_aspect}
    if params.judge_backend == "openai":
        from alignloop.pipelines.backends.openai_backend import resolve_base_url

        out["judge_base_url"] = resolve_base_url(params.judge_base_url)
        out["judge_api_key_secret"] = params.judge_api_key_secret  # the block's name: the train task reads the key
    return out


def _thumbs(params: RoundParams) -> bool:
    """A KTO round with people's feedback: they give each sample a thumbs up or down (binary tasks), not pairs."""
    return params.method == "kto" and params.feedback == "human"


def human_feedback(params: RoundParams, timed: Any) -> dict[str, Any]:
    """Send the round's pairs (a KTO round's samples, for thumbs up or down) to Label Studio (no task twice), wait
    for the quota as ``human_wait`` says, and pull the annotations. ``status`` is "labelled" when the quota was met
    and the labels are in the warehouse."""
    where = LabelStudioParams(label_studio_url=params.label_studio_url, token_secret=params.label_studio_token_secret,
                              db=params.path())
    ls = where.model_dump()
    kind = "binary" if _thumbs(params) else "pairwise"
    pushed = timed("push", annotate_push, AnnotatePushParams(
        kind=kind, round=params.round, sample=params.human_sample, seed=params.seed,
        strategy="random" if params.feedback == "human" else "inconsistent", questions=params.annotation_questions,
        overlap=params.annotation_overlap, instructions=params.annotation_instructions, **ls))
    client = label_studio(where)
    project_id = round_project_id(client, params.round, kind)
    progress = count_done(client, project_id)
    if not progress.total:
        raise AlignloopError(f"round {params.round}: nothing to send to Label Studio"
                             + (" (samples identical?)" if kind == "pairwise" else ""))
    quota = min(params.human_quota or progress.total, progress.total)
    t0 = time.perf_counter()
    done = _wait_for_quota(params, client, project_id, quota, progress.done)
    timings_wait = time.perf_counter() - t0
    out = {"project_id": project_id, "tasks": progress.total, "pushed": pushed.get("imported", 0), "quota": quota,
           "done_before_wait": progress.done, "done": done, "wait_seconds": timings_wait}
    if done < quota:
        return {**out, "status": "waiting"}
    pulled = timed("pull", annotate_pull, AnnotatePullParams(round=params.round, **ls))
    return {**out, "status": "labelled", "pulled": pulled}


def _wait_for_quota(params: RoundParams, client: Any, project_id: int, quota: int, done: int) -> int:
    """Annotated tasks once the quota is met, or the count when waiting ends without it."""
    from prefect.context import FlowRunContext

    if done >= quota or params.human_wait == "stop":
        return done
    mode = params.human_wait
    if mode == "auto":
        context = FlowRunContext.get()
        mode = "suspend" if context and context.flow_run and context.flow_run.deployment_id else "poll"
    set_status(params, "waiting")  # what the warehouse (and `alignloop status`) shows while people label
    log = get_run_logger()
    log.info("round %s: waiting for %d annotated tasks in Label Studio project %d (%d done, %s)", params.round,
             quota, project_id, done, mode)
    if mode == "suspend":
        from prefect.flow_runs import suspend_flow_run

        # The process exits here; on resume the round runs again from the top, every stage finding its work
        # stored, and this call returns the resumer's input.
        suspend_flow_run(wait_for_input=QuotaReached, timeout=params.human_timeout_s, key="annotation-quota")
        return count_done(client, project_id).done
    return waiting.poll_until_quota(client, project_id, quota, params.human_timeout_s, params.poll_interval_s, done)


def _verifier_aspect(name: str) -> str:
    from alignloop.pipelines.verifiers.composite import get_verifier, verifier_aspect

    return verifier_aspect(get_verifier(name))


def _artifact_key(round_name: str) -> str:
    return "round-" + "".join(c if c.isalnum() else "-" for c in round_name.lower())


def _markdown(s: dict[str, Any]) -> str:
    h = s["heldout"]
    rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in h.items() if isinstance(v, float))
    stages = "\n".join(f"| {k} | {v:.1f} s |" for k, v in s["timings"].items())
    return (f"# Round {s['round']}\n\npolicy k: `{s['policy']}` -> policy k+1: `{s['new_policy']}`\n\n"
            f"## Held-out\n| metric | value |\n|---|---|\n{rows}\n\n"
            f"## Data\n- samples written: {s['generate'].get('inserted')}\n- feedback: {s['feedback']}\n"
            f"- dataset: {s['dataset'].get('id', '')} rows {s['dataset'].get('rows', '')}\n\n"
            f"## Stages\n| stage | time |\n|---|---|\n{stages}\n\n"
            f"**Stopping rule:** {'stop' if s['stop'] else 'continue'} ({s['reason']})\n")
