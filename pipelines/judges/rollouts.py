"""Step labels from rollouts, as Math-Shepherd labels steps without people: complete a solution from each of its
steps ``n`` times with a model, check each completion with a verifier (its final answer against the prompt's
reference; a completion cut at the token limit reached none); a step from which some completion reaches a right
answer is +1, one from which none does -1 (the "hard estimate"), and the share that did is kept with the label (the
"soft estimate"). The last step of a finished response is the response itself: its label is the verifier's verdict
on it, no rollouts needed (a partial one, cut at the token limit or a branch such as PRM800K's alternative steps, is
rolled out from its last step too).

With ``search="binary"`` (OmegaPRM's) only the first error is searched for, in about log2(steps) probes: every step
before a step some rollout continued to the answer is +1 by that very completion (inferred, no rollouts of its own:
a right finished response needs none at all), and the steps after the first error are taken to be -1 too (the
search's assumption: a solution that cannot be saved at one step cannot be saved later), marked as inferred.

    judge = RolloutStepJudge(make_backend("transformers", "default"), get_verifier("final_answer"), RolloutConfig(n=8))
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from alignloop.pipelines.backends.base import Backend, Conversation, Sampling
from alignloop.pipelines.judges import calls
from alignloop.pipelines.judges.config import ResponseItem
from alignloop.pipelines.judges.steps import finish_reason, split_steps
from alignloop.pipelines.models import model_name, provenance
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.ids import content_id
from alignloop.warehouse.records import StepLabel

GOOD_BEFORE = "before a step that reached the answer"
"""Binary search: an unprobed step before one some rollout continued to the answer (+1)."""
BAD_AFTER = "after the first error"
"""Binary search: an unprobed step after the first error (-1, the search's assumption)."""
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
    search: Literal["all", "binary"] = "all"
    """all: roll out from every step; binary: search for the first error only (OmegaPRM), inferring the rest."""

    def __post_init__(self) -> None:
        if self.search not in ("all", "binary"):
            raise AlignloopError(f"--rollout-search must be all or binary, got {self.search!r}")
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
                "seed": self.config.seed, "join": STEP_JOIN, "search": self.config.search}
        return f"{model_name(self.backend.name)}:rollouts@{content_id('rollouts', spec)[:8]}"

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
        stats = calls.CallStats()
        # per item and step: (right, rollouts, cut at the token limit), or the inference that labels it
        found: list[dict[int, tuple[int, int, int] | str]] = []
        for it, st in zip(items, steps):
            known: dict[int, tuple[int, int, int] | str] = {}
            if not it.partial:  # the last step of a finished response is the response itself
                known[len(st) - 1] = (int(self._right(it, it.text)), 0, 0)
            found.append(known)
        if self.config.search == "all":
            wanted = [(k, i) for k, st in enumerate(steps) for i in range(len(st)) if i not in found[k]]
            self._probe(items, steps, wanted, found, stats)
        else:
            self._search(items, steps, found, stats)
        share = stats.share(max(sum(isinstance(v, tuple) and v[1] > 0 for f in found for v in f.values()), 1))
        labels: list[StepLabel] = []
        where = provenance(self.backend.name)
        for it, st, known in zip(items, steps, found):
            marks = [self._mark(known[i]) for i in range(len(st))]
            reason = finish_reason(marks)
            for i, mark in enumerate(marks):
                labels.append(StepLabel(StepLabel.make_id(self.judge, it.id, i), it.prompt_id, it.id, i, mark,
                                        self.judge, "ai", round_id, finish_reason=reason,
                                        meta={**self._meta(known[i], share), "steps": len(st),
                                              "verifier": self.verifier.judge, **where}))
        return labels

    def _probe(self, items: list[ResponseItem], steps: list[list[str]], wanted: list[tuple[int, int]],
               found: list[dict[int, Any]], stats: calls.CallStats) -> None:
        """Roll out ``n`` completions from each (item, step) wanted and record how many reached a right answer."""
        for batch in calls.chunks(wanted, self.policy.batch_size):
            convs = [partial(items[k], steps[k][: i + 1]) for k, i in batch]
            for (k, i), conv, comps in zip(batch, convs, calls.samples(self.backend, convs, self.policy, stats,
                                                                       self.config.sampling())):
                prefix = conv[-1]["content"]  # the steps so far, which each completion continues
                # a completion cut at the token limit reached no answer, whatever number it stopped on
                cut = [c.finish_reason == "length" for c in comps]
                right = sum(not c_cut and self._right(items[k], prefix + c.text) for c, c_cut in zip(comps, cut))
                found[k][i] = (right, len(comps), sum(cut))

    def _search(self, items: list[ResponseItem], steps: list[list[str]], found: list[dict[int, Any]],
                stats: calls.CallStats) -> None:
        """Binary search for each item's first error, all items' probes of one round in one batch of calls. Steps
        before ``lo`` are good and step ``hi`` is bad (``hi`` = the step count: none is)."""
        bounds: dict[int, tuple[int, int]] = {}
        for k, st in enumerate(steps):
            last = found[k].get(len(st) - 1)
            if last is not None and last[0]:  # a right finished response: every step leads to it
                bounds[k] = (len(st) - 1, len(st) - 1)
            else:
                bounds[k] = (0, len(st) - 1 if last is not None else len(st))
        while True:
            probes = {k: (lo + hi) // 2 for k, (lo, hi) in bounds.items() if lo < hi}
            if not probes:
                break
            self._probe(items, steps, sorted(probes.items()), found, stats)
            for k, mid in probes.items():
                lo, hi = bounds[k]
                bounds[k] = (mid + 1, hi) if found[k][mid][0] else (lo, mid)
        for k, (_, first_bad) in bounds.items():
            for i in range(len(steps[k])):
                if i not in found[k]:
                    found[k][i] = GOOD_BEFORE if i < first_bad else BAD_AFTER

    @staticmethod
    def _mark(result: tuple[int, int, int] | str) -> int:
        if isinstance(result, str):
            return 1 if result == GOOD_BEFORE else -1
        return 1 if result[0] else -1

    @staticmethod
    def _meta(result: tuple[int, int, int] | str, share: dict[str, float]) -> dict[str, Any]:
        if isinstance(result, str):
            return {"inferred": result, "rollouts": 0}
        right, tried, cut = result
        if not tried:
            return {"right": right, "rollouts": 0, "estimate": float(right), "from": "response"}
        return {"right": right, "rollouts": tried, "cut": cut, "estimate": right / tried, **share}

    def _right(self, item: ResponseItem, text: str) -> bool:
        return self.verifier.check(replace(item, text=text, steps=None)).passed


def partial(item: ResponseItem, steps: list[str]) -> Conversation:
    """The prompt's chat with the first ``steps`` of the solution as an assistant message to continue."""
    return [*item.chat(), {"role": "assistant", "content": STEP_JOIN.join(steps) + STEP_JOIN}]
