"""Reward-model judge: score responses with a sequence-classification model (num_labels=1), or a PRM's per-step
scores aggregated by product or minimum (Lightman et al. 2023); best-of-N from the scores. torch is imported
inside functions so the data side stays light.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from alignloop.pipelines.judges.config import ResponseItem
from alignloop.pipelines.judges.steps import finish_reason, split_steps
from alignloop.pipelines.models import model_name, provenance
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.records import Rating, StepLabel


def _text(tokenizer: Any, question: str, answer: str) -> str:
    """A PRM prefix as one chat turn pair (the per-step scores of a one-label model)."""
    if getattr(tokenizer, "chat_template", None):
        conv = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return tokenizer.apply_chat_template(conv, tokenize=False)
    return f"{question}\n\n{answer}"


INPUT_LAYOUT = "v2"
"""How an ORM's input is built; part of the judge id so that scores of an older layout are not reused.
v2: the layout reward models are trained on here (the prompt's messages through the chat template with the assistant
turn opened, then the answer and the end-of-turn token)."""


def _folder_config(path: str) -> Any:
    """The folder's config, checked to be a local model folder (never a hub name)."""
    from pathlib import Path

    from transformers import AutoConfig

    if not (Path(path) / "config.json").is_file():
        raise AlignloopError(f"reward model {path!r} is not a local model folder (no config.json)")
    return AutoConfig.from_pretrained(path)


def _head(config: Any) -> tuple[str | None, str]:
    """('reward' | 'prm' | None, what the folder holds in words) from a model config."""
    arch = (config.architectures or ["model of unknown architecture"])[0]
    what = f"{arch} with {config.num_labels} labels" if arch.endswith("Classification") else arch
    if arch.endswith("ForSequenceClassification") and config.num_labels == 1:
        return "reward", what
    if arch.endswith("ForTokenClassification") and config.num_labels in (2, 3):
        return "prm", what
    return None, what


def check_reward_model(path: str) -> str:
    """'reward' or 'prm': what ``path`` holds, read from its config alone (no weights load); else a one-line error."""
    head, what = _head(_folder_config(path))
    if head is None:
        raise AlignloopError(f"{path} is a {what}, not a reward model (one score per sequence) or a process reward "
                             "model; `alignloop train reward` or `alignloop train prm` trains one")
    return head


_WANTED = {
    "reward": ("AutoModelForSequenceClassification",
               "a reward model (one score per sequence); `alignloop train reward` trains one"),
    "prm": ("AutoModelForTokenClassification",
            "a process reward model (2 or 3 classes per step); `alignloop train prm` trains one"),
}
"""The auto class that loads each head, and what the error names where a folder holds something else."""


def _load_head(path: str, want: Literal["reward", "prm"]) -> tuple[Any, Any, dict[str, Any]]:
    """The model (eval mode), its tokenizer (pad = eos where it has none) and the input settings ``alignloop train``
    saved with it (lengths; a PRM's step separator), from a folder that must hold ``want``."""
    import transformers

    config = _folder_config(path)
    head, what = _head(config)
    auto, wanted = _WANTED[want]
    if head != want:
        raise AlignloopError(f"{path} is a {what}, not {wanted}")
    tok = transformers.AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = getattr(transformers, auto).from_pretrained(path).eval()
    saved = getattr(config, "alignloop_input", None) or {}
    settings: dict[str, Any] = {k: int(saved[k]) for k in ("max_length", "max_prompt_length") if k in saved}
    if want == "prm" and saved.get("step_separator"):
        settings["separator"] = str(saved["step_separator"])
    return model, tok, settings


def _prompt_ids(tokenizer: Any, item: ResponseItem, max_prompt_length: int) -> list[int]:
    """The prompt as trainers' ``Encoder`` renders it: its messages through the chat template with the assistant turn
    opened (else the text and a newline), left-truncated to ``max_prompt_length`` tokens."""
    messages = item.chat()
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        prompt = item.question + "\n"
    return _ids(tokenizer, prompt)[-max_prompt_length:]


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _padded(seqs: list[list[int]], pad: int, device: Any) -> tuple[Any, Any]:
    """Right-padded ``input_ids`` and ``attention_mask`` tensors."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    return ids, mask


@dataclass
class RewardModelScorer:
    """A sequence-classification model with one output per sequence (higher is better)."""

    model: Any
    tokenizer: Any
    name: str
    max_length: int = 512
    batch_size: int = 8
    max_prompt_length: int = 256
    """A longer prompt keeps its end. Both lengths default to those the model was trained with (saved in its
    config by ``alignloop train``), else to training's defaults."""

    @classmethod
    def load(cls, path: str, **kw: Any) -> RewardModelScorer:
        """From a local folder (never a hub) holding a one-score sequence-classification model."""
        model, tok, settings = _load_head(path, "reward")
        return cls(model, tok, str(path), **(settings | kw))

    def __post_init__(self) -> None:
        if getattr(self.model.config, "num_labels", 1) != 1:
            raise AlignloopError(f"reward model {self.name} has {self.model.config.num_labels} labels; need 1")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def score_texts(self, texts: list[str]) -> list[float]:
        """Scalar reward per text. Inputs are right-truncated to ``max_length`` tokens."""
        return self.score_ids([_ids(self.tokenizer, t)[: self.max_length] for t in texts])

    def encode(self, item: ResponseItem) -> list[int]:
        """The tokens a reward model trained here saw for this prompt and answer (trainers' ``Encoder``): the prompt
        left-truncated to ``max_prompt_length``, the answer and end-of-turn token right-truncated to ``max_length``.
        The reward is read at the last token that is not padding, as in training."""
        ids = _prompt_ids(self.tokenizer, item, self.max_prompt_length)
        return ids + _ids(self.tokenizer, item.text + (self.tokenizer.eos_token or ""))[: self.max_length - len(ids)]

    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        """Scalar reward per token sequence, batched with right padding."""
        import torch

        out: list[float] = []
        with torch.inference_mode():
            for i in range(0, len(seqs), self.batch_size):
                ids, mask = _padded(seqs[i:i + self.batch_size], self.tokenizer.pad_token_id, self.model.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits  # (b, 1)
                out += [float(x) for x in logits[:, 0].float().cpu()]
        return out

    def score(self, items: list[ResponseItem]) -> list[float]:
        """ORM: one reward per response, on the input layout it was trained on."""
        return self.score_ids([self.encode(it) for it in items])

    def step_scores(self, items: list[ResponseItem]) -> list[list[float]]:
        """PRM: P(step correct) = sigmoid(score of the solution up to and including that step), per step."""
        flat, spans = [], []
        for it in items:
            steps = split_steps(it)
            spans.append(len(steps))
            flat += [_text(self.tokenizer, it.question, "\n".join(steps[: k + 1])) for k in range(len(steps))]
        scores = [1.0 / (1.0 + math.exp(-s)) for s in self.score_texts(flat)]
        out, pos = [], 0
        for n in spans:
            out.append(scores[pos:pos + n])
            pos += n
        return out


@dataclass
class StepRewardScorer:
    """A process reward model from ``alignloop train prm``: a token-classification head read at the last token of each
    step, each step followed by the separator it was trained with. A step's score is P(it is no error): 1 - P(bad)
    with three classes (a neutral step is no error, PRM800K's convention), P(OK) with two."""

    model: Any
    tokenizer: Any
    name: str
    max_length: int = 512
    max_prompt_length: int = 256
    separator: str = "\n\n"
    batch_size: int = 8

    @classmethod
    def load(cls, path: str, **kw: Any) -> StepRewardScorer:
        """From a local folder (never a hub) holding a token-classification PRM."""
        model, tok, settings = _load_head(path, "prm")
        return cls(model, tok, str(path), **(settings | kw))

    def step_ends(self, item: ResponseItem) -> tuple[list[int], list[int]]:
        """The token ids and the position of each scored step's last token (where its label was trained)."""
        ids = _prompt_ids(self.tokenizer, item, self.max_prompt_length)
        ends = []
        for step in split_steps(item):
            piece = _ids(self.tokenizer, step + self.separator)
            if not piece or len(ids) + len(piece) > self.max_length:
                break
            ids += piece
            ends.append(len(ids) - 1)
        return ids, ends

    def class_probs(self, items: list[ResponseItem]) -> list[list[list[float]]]:
        """Per response, per step that fits, the head's class probabilities: (bad, neutral, good) with three
        classes, (bad, OK) with two."""
        import torch

        encoded = [self.step_ends(it) for it in items]
        out: list[list[list[float]]] = []
        with torch.inference_mode():
            for i in range(0, len(encoded), self.batch_size):
                batch = encoded[i:i + self.batch_size]
                ids, mask = _padded([e[0] for e in batch], self.tokenizer.pad_token_id, self.model.device)
                probs = self.model(input_ids=ids, attention_mask=mask).logits.float().softmax(-1)  # (b, T, C)
                out += [probs[row, ends].cpu().tolist() for row, (_, ends) in enumerate(batch)]
        return out

    def step_scores(self, items: list[ResponseItem]) -> list[list[float]]:
        """P(step is no error) for each step that fits, per response."""
        return [[1.0 - p[0] for p in steps] for steps in self.class_probs(items)]


def aggregate_steps(step_probs: list[float], how: Literal["product", "min"] = "product") -> float:
    """A solution's PRM score: product of step probabilities (all steps right) or their minimum (weakest step)."""
    if not step_probs:
        raise ValueError("no steps to aggregate")
    return math.prod(step_probs) if how == "product" else min(step_probs)


def best_of_n(items: list[ResponseItem], scores: list[float]) -> dict[str, str]:
    """Per prompt, the id of the highest-scoring response (the first on ties)."""
    best: dict[str, tuple[float, str]] = {}
    for it, s in zip(items, scores):
        if it.prompt_id not in best or s > best[it.prompt_id][0]:
            best[it.prompt_id] = (s, it.id)
    return {p: rid for p, (_, rid) in best.items()}


def orm_judge_id(path: str) -> str:
    """The judge id of the (outcome) reward model in folder ``path``: its ratings' ``judge``; the folder named by its
    content (:func:`pipelines.models.model_name`), so every path to it and every copy of it is one judge."""
    return f"{model_name(path)}:orm@{INPUT_LAYOUT}"


def orm_rating_id(path: str, response_id: str) -> str:
    """The id of the rating the reward model in folder ``path`` gives a response, known before the model loads."""
    return Rating.make_id(orm_judge_id(path), response_id, "reward", kind="reward")


def rank_by_score(items: list[ResponseItem], scores: list[float]) -> dict[str, list[str]]:
    """Per prompt, response ids best first."""
    groups: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for it, s in zip(items, scores):
        groups[it.prompt_id].append((s, it.id))
    return {p: [rid for _, rid in sorted(g, key=lambda x: -x[0])] for p, g in groups.items()}


@dataclass(frozen=True)
class RewardModelJudge:
    """Ratings with source 'reward_model'. ORM scores are unbounded (scale -inf..inf); PRM scores lie in 0..1."""

    scorer: RewardModelScorer | StepRewardScorer
    prm: Literal["product", "min"] | None = None
    """None: ORM (one score per response); product/min: PRM step scores aggregated this way."""

    @classmethod
    def load(cls, path: str, prm: Literal["product", "min"] | None = None, **kw: Any) -> RewardModelJudge:
        """A reward model (``alignloop train reward``) or a process reward model (``alignloop train prm``; its step
        scores aggregated by ``prm``, product by default), told apart by the folder's head."""
        if check_reward_model(path) == "prm":
            return cls(StepRewardScorer.load(path, **kw), prm or "product")
        return cls(RewardModelScorer.load(path, **kw), prm)

    @property
    def judge(self) -> str:
        if isinstance(self.scorer, StepRewardScorer):
            return f"{model_name(self.scorer.name)}:prm-{self.prm}@{INPUT_LAYOUT}"
        return f"{model_name(self.scorer.name)}:prm-{self.prm}" if self.prm else orm_judge_id(self.scorer.name)

    @property
    def aspect(self) -> str:
        return "prm" if self.prm else "reward"

    def ids(self, items: list[ResponseItem]) -> list[str]:
        return [Rating.make_id(self.judge, it.id, self.aspect, kind="reward") for it in items]

    def judge_items(self, items: list[ResponseItem], round_id: str) -> list[Rating]:
        if self.prm:
            steps = self.scorer.step_scores(items)
            # a response none of whose steps fit in max_length gets no score (invalid), not a made-up one
            scores = [aggregate_steps(s, self.prm) if s else None for s in steps]
            lo, hi = 0.0, 1.0
            metas = [{"step_probs": s, "aggregate": self.prm, "steps": len(split_steps(it))}
                     for s, it in zip(steps, items)]
        else:
            scores = self.scorer.score(items)
            lo, hi, metas = -math.inf, math.inf, [{} for _ in items]
        where = provenance(self.scorer.name)
        metas = [{**m, **where} for m in metas]
        return [Rating(rid, it.prompt_id, it.id, s, lo, hi, self.judge, "reward_model", round_id, aspect=self.aspect,
                       meta=m) for rid, it, s, m in zip(self.ids(items), items, scores, metas)]


def step_label(probs: list[float]) -> int:
    """A step's label from a PRM head's class probabilities: the most likely of (bad, neutral, good) as -1 / 0 / +1
    with three classes; with two, +1 where P(OK) >= 0.5, else -1."""
    if len(probs) == 3:
        return max(range(3), key=lambda c: probs[c]) - 1
    return 1 if probs[1] >= 0.5 else -1


@dataclass(frozen=True)
class StepLabelJudge:
    """Step labels from a process reward model, as Math-Shepherd labels steps without people: every step that fits
    the model's max length gets ``step_label`` of its class probabilities (kept in meta), later steps no label
    (NULL, flagged). Source 'reward_model', so people's and AI judges' labels of a step take precedence in datasets."""

    scorer: StepRewardScorer

    @classmethod
    def load(cls, path: str, **kw: Any) -> StepLabelJudge:
        return cls(StepRewardScorer.load(path, **kw))

    @property
    def judge(self) -> str:
        return f"{model_name(self.scorer.name)}:prm-steps@{INPUT_LAYOUT}"

    def ids(self, items: list[ResponseItem]) -> list[str]:
        return [StepLabel.make_id(self.judge, it.id, i) for it in items for i in range(len(split_steps(it)))]

    def judge_items(self, items: list[ResponseItem], round_id: str) -> list[StepLabel]:
        out: list[StepLabel] = []
        where = provenance(self.scorer.name)
        for it, probs in zip(items, self.scorer.class_probs(items)):
            n = len(split_steps(it))
            labels: list[int | None] = [step_label(p) for p in probs] + [None] * (n - len(probs))
            reason = finish_reason(labels)
            out += [StepLabel(StepLabel.make_id(self.judge, it.id, i), it.prompt_id, it.id, i, lab, self.judge,
                              "reward_model", round_id, flagged=lab is None, finish_reason=reason,
                              meta={"probs": probs[i] if i < len(probs) else None, "steps": n, **where})
                    for i, lab in enumerate(labels)]
        return out
