"""Step labels from rollouts, as Math-Shepherd labels steps without people: complete a solution from each of its
steps ``n`` times with a model, check each completion with a verifier (its final answer against the prompt's
reference; a completion cut at the token limit reached none); a step from which some completion reaches a right
answer is +1, one from which none does -1 (the "hard estimate"), and the share that did is kept with the label (the
"soft estimate"). The last step of a finished response is the response itself: its label is the verifier's verdict
on it, no rollouts needed (a partial one, cut at the token limit or a branch such as PRM800K's alternative steps, is
rolled out from its last step too).

    judge = RolloutStepJudge(make_backend("transformers", "default"), get_verifier("final_answer"), RolloutConfig(n=8))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from pipelines.backends.base import Backend, Completion, Conversation, Sampling
from pipelines.judges import calls
from pipelines.judges.config import ResponseItem
from pipelines.judges.steps import finish_reason, split_steps
from pipelines.models import model_uri
from warehouse.errors import AlignloopError
from warehouse.ids import content_id
from warehouse.records import StepLabel

STEP_JOIN = "\n"
"""How a solution's steps are joined into the text its rollouts continue (the steps' own split: lines)."""


@dataclass(frozen=True)
class RolloutConfig:
    n: int = 8
    """Completions per step (Math-Shepherd used 8)."""
    verifier: str = "final_answer"
    """The verifier that checks each completed solution (``alignloop judge binary --judge verifier:NAME``'s names)."""
    temperature: float = 0.7
    max_new_tokens: int = 256
    """Longest completion of a partial solution, in tokens."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise AlignloopError(f"--rollouts must be >= 1, got {self.n}")
        if self.temperature == 0 and self.n > 1:
            raise AlignloopError(f"--rollouts {self.n} at temperature 0 would repeat one greedy completion; "
                                 "give a --rollout-temperature above 0 or --rollouts 1")

    def sampling(self) -> Sampling:
        return Sampling(n=self.n, temperature=self.temperature, max_new_tokens=self.max_new_tokens, seed=self.seed)


@dataclass(frozen=True)
class RolloutStepJudge:
    """The step judge behind ``alignloop judge steps --judge MODEL --rollouts N``; labels have source 'ai' (a model's
    completions decide them), so people's labels of the same step take precedence in datasets."""

    backend: Backend
    verifier: Any
    """A check from ``pipelines.verifiers.get_verifier``."""
    config: RolloutConfig = field(default_factory=RolloutConfig)
    policy: calls.CallPolicy = field(default_factory=calls.CallPolicy)

    @property
    def judge(self) -> str:
        spec = {"verifier": self.verifier.judge, "n": self.config.n, "sampling": self.config.sampling().identity(),
                "seed": self.config.seed, "join": STEP_JOIN}
        return f"{model_uri(self.backend.name)}:rollouts@{content_id('rollouts', spec)[:8]}"

    def accepts(self, item: ResponseItem) -> bool:
        """Whether the verifier can judge the item's completions (a reference answer where it needs one)."""
        return bool(item.reference) or not getattr(self.verifier, "needs_reference", False)

    def refusal(self, round_id: str, responses: int) -> str:
        """Why a round none of whose responses it accepts cannot be labelled."""
        return (f"round {round_id!r} has {responses:,} responses to judge, none to a prompt with a reference answer, "
                f"which verifier {self.verifier.judge} compares each rollout's final answer with (import prompts "
                "with a reference: PRM800K, or --reference-field)")

    def ids(self, items: list[ResponseItem]) -> list[str]:
        return [StepLabel.make_id(self.judge, it.id, i) for it in items for i in range(len(split_steps(it)))]

    def judge_items(self, items: list[ResponseItem], round_id: str) -> list[StepLabel]:
        steps = [split_steps(it) for it in items]
        # every step but a finished response's last: (item, step index, the conversation its rollouts continue)
        todo = [(k, i, partial(it, st[: i + 1])) for k, (it, st) in enumerate(zip(items, steps))
                for i in range(len(st) - (0 if it.partial else 1))]
        stats = calls.CallStats()
        done: dict[tuple[int, int], list[Completion]] = {}
        for batch in calls.chunks(todo, self.policy.batch_size):
            out = calls.samples(self.backend, [conv for _, _, conv in batch], self.policy, stats,
                                self.config.sampling())
            done.update({(k, i): comps for (k, i, _), comps in zip(batch, out)})
        share = stats.share(max(len(todo), 1))
        labels: list[StepLabel] = []
        for k, (it, st) in enumerate(zip(items, steps)):
            found: list[tuple[int, int, int]] = []  # (right, tried, cut at the token limit) per step
            for i in range(len(st) - (0 if it.partial else 1)):
                prefix = STEP_JOIN.join(st[: i + 1]) + STEP_JOIN
                # a completion cut at the token limit reached no answer, whatever number it stopped on
                cut = [c.finish_reason == "length" for c in done[(k, i)]]
                right = sum(not c_cut and self._right(it, prefix + c.text) for c, c_cut in zip(done[(k, i)], cut))
                found.append((right, len(cut), sum(cut)))
            if not it.partial:
                found.append((int(self._right(it, it.text)), 0, 0))  # the response itself
            marks: list[int | None] = [1 if right else -1 for right, _, _ in found]
            reason = finish_reason(marks)
            for i, ((right, tried, cut_n), mark) in enumerate(zip(found, marks)):
                meta = ({"right": right, "rollouts": tried, "cut": cut_n, "estimate": right / tried, **share}
                        if tried else {"right": right, "rollouts": 0, "estimate": float(right), "from": "response"})
                labels.append(StepLabel(StepLabel.make_id(self.judge, it.id, i), it.prompt_id, it.id, i, mark,
                                        self.judge, "ai", round_id, finish_reason=reason,
                                        meta={**meta, "steps": len(st), "verifier": self.verifier.judge}))
        return labels

    def _right(self, item: ResponseItem, text: str) -> bool:
        return self.verifier.check(replace(item, text=text, steps=None)).passed


def partial(item: ResponseItem, steps: list[str]) -> Conversation:
    """The prompt's chat with the first ``steps`` of the solution as an assistant message to continue."""
    chat = json.loads(item.messages) if item.messages else [{"role": "user", "content": item.question}]
    return [*chat, {"role": "assistant", "content": STEP_JOIN.join(steps) + STEP_JOIN}]
