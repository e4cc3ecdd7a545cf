"""Reward-model judge: score responses with a sequence-classification model (num_labels=1), or a PRM's per-step
scores aggregated by product or minimum (Lightman et al. 2023); best-of-N from the scores. torch is imported
inside functions so the data side stays light.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.judges.config import ResponseItem
from pipelines.judges.steps import split_steps
from warehouse.errors import AlignloopError
from warehouse.records import Rating


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
        """From a local folder (never a hub)."""
        from pathlib import Path

        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        if not (Path(path) / "config.json").is_file():
            raise AlignloopError(f"reward model {path!r} is not a local model folder (no config.json)")
        config = AutoConfig.from_pretrained(path)
        arch = (config.architectures or ["model of unknown architecture"])[0]
        if not (arch.endswith("ForSequenceClassification") and config.num_labels == 1):
            what = f"{arch} with {config.num_labels} labels" if arch.endswith("Classification") else arch
            raise AlignloopError(f"{path} is a {what}, not a reward model (one score per sequence); "
                                 "`alignloop train reward` trains one")
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        trained = getattr(config, "alignloop_input", None) or {}  # the lengths it was trained with, if saved
        lengths = {k: int(trained[k]) for k in ("max_length", "max_prompt_length") if k in trained}
        return cls(model, tok, str(path), **(lengths | kw))

    def __post_init__(self) -> None:
        if getattr(self.model.config, "num_labels", 1) != 1:
            raise AlignloopError(f"reward model {self.name} has {self.model.config.num_labels} labels; need 1")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def score_texts(self, texts: list[str]) -> list[float]:
        """Scalar reward per text. Inputs are right-truncated to ``max_length`` tokens."""
        return self.score_ids([self._ids(t)[: self.max_length] for t in texts])

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, item: ResponseItem) -> list[int]:
        """The tokens a reward model trained here saw for this prompt and answer (trainers' ``Encoder``): the prompt
        left-truncated to ``max_prompt_length``, the answer and end-of-turn token right-truncated to ``max_length``.
        The reward is read at the last token that is not padding, as in training."""
        import json

        messages = json.loads(item.messages) if item.messages else [{"role": "user", "content": item.question}]
        if getattr(self.tokenizer, "chat_template", None):
            prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            prompt = item.question + "\n"
        ids = self._ids(prompt)[-self.max_prompt_length:]
        return ids + self._ids(item.text + (self.tokenizer.eos_token or ""))[: self.max_length - len(ids)]

    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        """Scalar reward per token sequence, batched with right padding."""
        import torch

        out: list[float] = []
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for i in range(0, len(seqs), self.batch_size):
                batch = seqs[i:i + self.batch_size]
                width = max(len(s) for s in batch)
                ids = torch.tensor([s + [pad] * (width - len(s)) for s in batch], device=self.model.device)
                mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in batch], device=self.model.device)
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


def rank_by_score(items: list[ResponseItem], scores: list[float]) -> dict[str, list[str]]:
    """Per prompt, response ids best first."""
    groups: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for it, s in zip(items, scores):
        groups[it.prompt_id].append((s, it.id))
    return {p: [rid for _, rid in sorted(g, key=lambda x: -x[0])] for p, g in groups.items()}


@dataclass(frozen=True)
class RewardModelJudge:
    """Ratings with source 'reward_model'. ORM scores are unbounded (scale -inf..inf); PRM scores lie in 0..1."""

    scorer: RewardModelScorer
    prm: Literal["product", "min"] | None = None
    """None: ORM (one score per response); product/min: PRM step scores aggregated this way."""

    @classmethod
    def load(cls, path: str, prm: Literal["product", "min"] | None = None, **kw: Any) -> RewardModelJudge:
        return cls(RewardModelScorer.load(path, **kw), prm)

    @property
    def judge(self) -> str:
        return f"{self.scorer.name}:{'prm-' + self.prm if self.prm else 'orm@' + INPUT_LAYOUT}"

    @property
    def aspect(self) -> str:
        return "prm" if self.prm else "reward"

    def ids(self, items: list[ResponseItem]) -> list[str]:
        return [Rating.make_id(self.judge, it.id, self.aspect, kind="reward") for it in items]

    def judge_items(self, items: list[ResponseItem], round_id: str) -> list[Rating]:
        if self.prm:
            steps = self.scorer.step_scores(items)
            scores = [aggregate_steps(s, self.prm) for s in steps]
            lo, hi, metas = 0.0, 1.0, [{"step_probs": s, "aggregate": self.prm} for s in steps]
        else:
            scores = self.scorer.score(items)
            lo, hi, metas = -math.inf, math.inf, [{} for _ in items]
        return [Rating(rid, it.prompt_id, it.id, s, lo, hi, self.judge, "reward_model", round_id, aspect=self.aspect,
                       meta=m) for rid, it, s, m in zip(self.ids(items), items, scores, metas)]
