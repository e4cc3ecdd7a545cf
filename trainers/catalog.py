"""Training methods by name: the dataset kinds each reads and a line about it.

Nothing heavy is imported here, so the CLI lists the methods without loading torch; :mod:`trainers.methods`
builds the registry from these entries (and checks it covers the same kinds).
"""

from __future__ import annotations

from typing import NamedTuple


class MethodInfo(NamedTuple):
    kinds: tuple[str, ...]
    help: str


_ANY = ("pairwise", "binary", "listwise", "steps", "correction", "sft")
"""The online methods read only a snapshot's prompts, of any kind."""

CATALOG: dict[str, MethodInfo] = {
    "dpo": MethodInfo(("pairwise",), "pairwise preference optimisation; pick the loss with --loss (dpo, ipo, simpo, "
                                     "orpo, ...)"),
    "kto": MethodInfo(("binary",), "KTO on unpaired desirable/undesirable completions"),
    "bco": MethodInfo(("binary",), "BCO on unpaired completions (needs an unpaired 'bco' loss in the registry)"),
    "listwise": MethodInfo(("listwise",), "listwise policy optimisation (--loss rrhf, lipo or pro)"),
    "reward": MethodInfo(("pairwise", "listwise", "binary"), "reward model: Bradley-Terry on pairs, Plackett-Luce "
                                                             "on lists, the label's sign on binary rows"),
    "prm": MethodInfo(("steps",), "process reward model (token-classification head at step ends)"),
    "sft": MethodInfo(("sft", "correction"), "supervised fine-tuning: best-of-N / rejection sampling rows, or "
                                             "Aligner corrections"),
    "ppo": MethodInfo(_ANY, "RLHF with PPO: the policy answers the dataset's prompts, a reward model "
                            "(--reward-model) scores them, a KL penalty keeps it near the reference"),
    "grpo": MethodInfo(_ANY, "GRPO: like ppo without a critic; several answers per prompt, each scored against its "
                             "group's mean and spread, KL as a loss term"),
    "rloo": MethodInfo(_ANY, "RLOO: like ppo without a critic; several answers per prompt, each answer's "
                             "KL-penalised score against the mean of the others'"),
    "online_dpo": MethodInfo(_ANY, "online DPO: several answers per prompt, scored as they are sampled; each "
                                   "prompt's best and worst answer a pair for any pairwise loss (--loss)"),
}
