"""Generation and judging backends: one protocol, three implementations (transformers, vLLM, OpenAI-compatible)."""

from __future__ import annotations

from typing import Any, Literal

from alignloop.pipelines.backends.base import Backend, Completion, Conversation, Sampling, TokenScores

BackendKind = Literal["transformers", "vllm", "openai"]
BACKEND_KINDS: tuple[str, ...] = ("transformers", "vllm", "openai")

__all__ = ["Backend", "BackendKind", "Completion", "Conversation", "Sampling", "TokenScores", "make_backend"]


def make_backend(kind: BackendKind, model: str, **opts: Any) -> Backend:
    """A backend by kind; engines are imported only when chosen (vLLM and torch stay optional for data work).

    Args:
        kind: "transformers" (local folder or "default"), "vllm" (local folder, CUDA) or "openai" (endpoint).
        model: model folder / "default" for local kinds, the served model name for "openai".
        **opts: the chosen backend's options (TransformersOptions fields, vllm.LLM kwargs, OpenAIBackend args).
    """
    from alignloop.warehouse.errors import AlignloopError

    if kind == "transformers":
        from alignloop.pipelines.backends.transformers_backend import TransformersBackend

        return TransformersBackend.load(model, **opts)
    if kind == "vllm":
        from alignloop.pipelines.backends.vllm_backend import VLLMBackend

        return VLLMBackend(model, **opts)
    if kind == "openai":
        from alignloop.pipelines.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(model, **opts)
    raise AlignloopError(f"unknown backend {kind!r}; use one of {', '.join(BACKEND_KINDS)}")
