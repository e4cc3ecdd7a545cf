"""Load a base model for training (causal LM, reward head or PRM head), with optional LoRA; save the result."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from alignloop.trainers.config import LoraConfig, TrainConfig
from alignloop.warehouse.errors import AlignloopError

_AUTO = {"causal": "AutoModelForCausalLM", "reward": "AutoModelForSequenceClassification",
         "prm": "AutoModelForTokenClassification"}
_PEFT_TASK = {"causal": "CAUSAL_LM", "reward": "SEQ_CLS", "prm": "TOKEN_CLS"}


def bf16_supported() -> bool:
    """bf16 is worth using: CUDA with bf16, or a CPU with native bf16 math (AVX512-BF16 / AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except (RuntimeError, AttributeError, OSError):  # private probes; failure means "unknown", i.e. no
            pass
    return False


def use_bf16(train: TrainConfig) -> bool:
    return bf16_supported() if train.bf16 is None else train.bf16


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def check_model_dir(path: str | Path) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise AlignloopError(f"base model {path} not found (no config.json there); pass a model folder or 'default'")
    return p


def load_model(path: str | Path, head: str, *, num_labels: int = 1, pad_token_id: int | None = None,
               lora: LoraConfig | None = None, gradient_checkpointing: bool = False,
               freeze_layers: int = 0) -> torch.nn.Module:
    """Load ``path`` in float32 (master weights; bf16 runs under autocast) with the head ``head`` needs.

    Reward heads (``num_labels=1``) and PRM heads (``num_labels`` classes) are freshly initialised on top of a causal
    LM folder. With ``lora`` the base is frozen and peft adapters (plus the new head) are trained. With
    ``freeze_layers`` N the input embeddings and the first N decoder layers are frozen.
    """
    import transformers

    check_model_dir(path)
    auto = getattr(transformers, _AUTO[head])
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if head != "causal":
        kwargs["num_labels"] = num_labels
    model = auto.from_pretrained(str(path), **kwargs) if head == "causal" else _load_with_new_head(auto, path, kwargs)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if freeze_layers:
        freeze_bottom(model, freeze_layers)
    if lora is not None:
        from peft import LoraConfig as PeftLora
        from peft import get_peft_model

        if gradient_checkpointing:
            model.enable_input_require_grads()
        cfg = PeftLora(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                       target_modules=list(lora.targets), task_type=_PEFT_TASK[head])
        model = get_peft_model(model, cfg)
    return model


class _NoLoadReport(logging.Filter):
    """Drops transformers' "LOAD REPORT" table (for a reward or PRM head it only says the new head is new)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


_NO_LOAD_REPORT = _NoLoadReport()


def _load_with_new_head(auto: Any, path: str | Path, kwargs: dict[str, Any]) -> torch.nn.Module:
    """A reward or PRM model from a causal LM folder, without transformers' report that its new head is missing.

    That head is meant to be new; any other missing weight (a backbone that did not load) still raises.
    """
    # a filter, not a level: transformers runs extra checks (and warns) when this logger's level is raised
    report = logging.getLogger("transformers.modeling_utils")
    report.addFilter(_NO_LOAD_REPORT)
    try:
        model, info = auto.from_pretrained(str(path), output_loading_info=True, **kwargs)
    finally:
        report.removeFilter(_NO_LOAD_REPORT)
    backbone = f"{model.base_model_prefix}."
    lost = sorted(k for k in info.get("missing_keys", ()) if k.startswith(backbone))
    if lost:
        raise AlignloopError(f"base model {path}: {len(lost)} backbone weights missing from the checkpoint "
                             f"(e.g. {lost[0]}); is it a causal LM folder?")
    return model


def save_model(model: torch.nn.Module, tokenizer: Any, target: Path) -> Path:
    """Save a plain HF folder (LoRA adapters merged) with the tokenizer."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of decoder layers: the module list as long as ``config.num_hidden_layers``."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"{type(model).__name__} has no list of {n} decoder layers to freeze")


def check_freeze_layers(n: int, depth: int) -> None:
    """``freeze_layers`` must name 1 to ``depth`` (the model's decoder layers); run before any costly work."""
    if not 0 < n <= depth:
        raise ValueError(f"freeze_layers must be in [1, {depth}] for this model, got {n}")


def freeze_bottom(model: torch.nn.Module, n: int) -> None:
    """Freeze the input embeddings and decoder layers ``[0, n)``; everything above (and any head) keeps training."""
    layers = decoder_layers(model)
    check_freeze_layers(n, len(layers))
    model.get_input_embeddings().requires_grad_(False)
    for layer in layers[:n]:
        layer.requires_grad_(False)
