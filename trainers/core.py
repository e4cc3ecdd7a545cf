"""The one trainer core: ``transformers.Trainer`` with ``compute_loss`` delegated to an objective.

Distribution is the Trainer's: run the same code under ``accelerate launch`` / ``torchrun`` with DeepSpeed or FSDP.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from alignloop.warehouse.errors import AlignloopError

LOSS_STATE = "loss_state.pt"
"""A checkpoint's file with the objective's loss state (:meth:`trainers.objectives.PolicyLoss.state_dict`)."""
Objective = Callable[[torch.nn.Module, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, torch.Tensor]]]


class NonFiniteLoss(AlignloopError):
    """The loss became NaN or infinite; the message names the step and the examples of the batch."""


class AlignTrainer(Trainer):
    """Trainer whose loss comes from ``objective(model, batch)``; logs the objective's metrics (mean per log step).

    Args:
        objective: returns ``(loss, metrics)``; metrics are detached 0-d tensors.
        row_ids: snapshot ids of each training row (index = the batch's ``rows``), for error messages.
    """

    def __init__(self, *args: Any, objective: Objective, row_ids: Sequence[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.row_ids = row_ids
        self.model_accepts_loss_kwargs = False  # our loss is a per-micro-batch mean: let Trainer scale by grad_accum
        self._stash: dict[str, list[torch.Tensor]] = defaultdict(list)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        confidence = getattr(self.objective, "confidence", None)
        if confidence is not None and model.training:  # weak-to-strong weight warms up with training
            confidence.progress = self.state.global_step / max(self.state.max_steps, 1)
        loss, metrics = self.objective(model, inputs)
        if not torch.isfinite(loss.detach()).all():
            rows = inputs["rows"].tolist()
            ids = ", ".join(self.row_ids[r] for r in rows)
            raise NonFiniteLoss(f"loss is {loss.item()} at step {self.state.global_step + 1}; batch examples: {ids}")
        if model.training:
            for name, value in metrics.items():
                self._stash[name].append(value.detach())
        return (loss, None) if return_outputs else loss

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        loss = self._stateful_loss()
        if loss is not None and loss.state and self.args.should_save:  # its running state beside the optimizer's
            folder = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            torch.save(loss.state_dict(), folder / LOSS_STATE)

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        loss = self._stateful_loss()
        if resume_from_checkpoint and loss is not None:
            folder = (get_last_checkpoint(self.args.output_dir) if resume_from_checkpoint is True
                      else resume_from_checkpoint)
            if folder and (Path(folder) / LOSS_STATE).is_file():
                loss.load_state_dict(torch.load(Path(folder) / LOSS_STATE, weights_only=True))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _stateful_loss(self) -> Any:
        """The objective's registry loss when it keeps running state (beta-DPO's m0, BCO's delta), else None."""
        loss = getattr(self.objective, "loss", None)
        return loss if getattr(getattr(loss, "spec", None), "running", None) else None

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._stash and "loss" in logs:
            for name, values in self._stash.items():
                if name != "loss":
                    logs[name] = round(torch.stack([v.float().cpu() for v in values]).mean().item(), 6)
            self._stash.clear()
        super().log(logs, *args, **kwargs)


class MetricsRecorder(TrainerCallback):
    """Keeps every logged (step, name, value) for the ``training_metrics`` table."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
        for name, value in (logs or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.rows.append((state.global_step, name, float(value)))


class ProgressPrinter(TrainerCallback):
    """Training steps reported through a caller's ``report("train", step, max_steps, logs)`` at every log."""

    def __init__(self, report: Callable[[str, int, int, dict[str, float]], None]) -> None:
        self.report = report

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
        self.report("train", state.global_step, state.max_steps, logs or {})
