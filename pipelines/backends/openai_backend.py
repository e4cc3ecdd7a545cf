"""Generation and next-token scoring against any OpenAI-compatible endpoint (vLLM serve, transformers serve, APIs).

Requests run concurrently under an ``asyncio.Semaphore``; 429, 5xx, timeouts and connection errors are retried
with exponential backoff, then fail with an AlignloopError naming the URL and the cause (never the key, nor
credentials the URL carries).
The key is passed in as a string: flows resolve Prefect Secret blocks, this layer never sees Prefect.
"""

from __future__ import annotations

import asyncio
import os
import random
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from alignloop.pipelines.backends.base import Completion, Conversation, Sampling, TokenScores, continues
from alignloop.pipelines.backends.seeding import sample_seed
from alignloop.pipelines.backends.stats import GenerationStats
from alignloop.warehouse.errors import AlignloopError
from alignloop.warehouse.redact import redact_url, scrub, url_secrets

T = TypeVar("T")
TOP_LOGPROBS = 20


def resolve_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get("ALIGNLOOP_OPENAI_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    if not url:
        raise AlignloopError("openai backend: no base URL; pass --base-url or set ALIGNLOOP_OPENAI_BASE_URL")
    return url.rstrip("/")


def _retryable(exc: Exception) -> bool:
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


class OpenAIBackend:
    """The Backend protocol over ``openai.AsyncOpenAI``.

    Args:
        model: the model name the server knows (stored as the backend's name).
        base_url: endpoint, e.g. ``http://127.0.0.1:8000/v1``; default from env.
        api_key: key string; default ``$OPENAI_API_KEY`` or "EMPTY" (local servers ignore it).
        concurrency: requests in flight at once.
        max_retries: retries per request after the first attempt.
        backoff_s: first retry delay; doubles each retry (with jitter).
        timeout_s: per-request timeout.
    """

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None, concurrency: int = 8,
                 max_retries: int = 4, backoff_s: float = 0.5, timeout_s: float = 120.0):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.name = model
        self.base_url = resolve_base_url(base_url)  # as given: credentials in it reach the endpoint
        self.shown_url = redact_url(self.base_url)  # in messages and logs
        self._key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency, self.max_retries, self.backoff_s, self.timeout_s = concurrency, max_retries, backoff_s, \
            timeout_s
        self.stats = GenerationStats()
        self._warned_logprobs = False

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIBackend(model={self.name!r}, base_url={self.shown_url!r})"

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _run(self, make: Callable[[Any, asyncio.Semaphore], Awaitable[T]]) -> T:
        """Run ``make(client, semaphore)`` on a fresh event loop (in a thread if one is already running)."""
        from openai import AsyncOpenAI

        async def main() -> T:
            async with AsyncOpenAI(base_url=self.base_url, api_key=self._key, max_retries=0,
                                   timeout=self.timeout_s) as client:
                return await make(client, asyncio.Semaphore(self.concurrency))

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(main())
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, main()).result()

    async def _call(self, sem: asyncio.Semaphore, fn: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                async with sem:
                    return await fn()
            except Exception as exc:
                if not _retryable(exc):
                    if type(exc).__module__.startswith("openai"):
                        raise AlignloopError(self._describe(exc, attempt + 1)) from None
                    raise
                if attempt >= self.max_retries:
                    raise AlignloopError(self._describe(exc, attempt + 1)) from None
                await asyncio.sleep(self.backoff_s * 2**attempt * (1 + 0.25 * random.random()))
                attempt += 1

    def _describe(self, exc: Exception, attempts: int) -> str:
        cause = scrub(f"{type(exc).__name__}: {exc}", self._key, *url_secrets(self.base_url)).splitlines()[0][:300]
        return f"OpenAI-compatible endpoint {self.shown_url} failed after {attempts} attempt(s): {cause}"

    # -- generation ----------------------------------------------------------------------------------------------

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[list[Completion]]:
        async def one(client: Any, sem: asyncio.Semaphore, conv: Conversation) -> list[Completion]:
            n = 1 if sampling.temperature == 0 else sampling.n
            choices = await self._chat(client, sem, conv, sampling, n, sample_seed(sampling.seed, conv, 0))
            # Servers that ignore n return one choice: ask for the missing samples one by one.
            for s in range(len(choices), n):
                choices += await self._chat(client, sem, conv, sampling, 1, sample_seed(sampling.seed, conv, s))
            if sampling.temperature == 0:
                choices = choices[:1] * sampling.n
            comps = []
            for s, (choice, prompt_tokens, completion_tokens) in enumerate(choices[:sampling.n]):
                text = choice.message.content or ""
                comps.append(Completion(text, choice.finish_reason or "stop", prompt_tokens, completion_tokens, s))
            return comps

        async def run(client: Any, sem: asyncio.Semaphore) -> list[list[Completion]]:
            return list(await asyncio.gather(*(one(client, sem, c) for c in conversations)))

        out = self._run(run)
        for comps in out:
            self.stats.prompts += 1
            self.stats.prompt_tokens += comps[0].prompt_tokens or 0
            self.stats.completion_tokens += sum(c.completion_tokens or 0 for c in comps)
        return out

    async def _chat(self, client: Any, sem: asyncio.Semaphore, conv: Conversation, sampling: Sampling, n: int,
                    seed: int) -> list[tuple[Any, int | None, int | None]]:
        """(choice, prompt tokens, completion tokens per choice) for one chat request."""
        kw: dict[str, Any] = {"model": self.name, "messages": conv, "temperature": sampling.temperature,
                              "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens, "seed": seed % 2**31}
        if n > 1:
            kw["n"] = n
        if sampling.stop:
            kw["stop"] = list(sampling.stop)
        if continues(conv):  # vLLM's and SGLang's chat parameters for continuing the last (assistant) message
            kw["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        resp = await self._call(sem, lambda: client.chat.completions.create(**kw))
        usage = getattr(resp, "usage", None)
        prompt = getattr(usage, "prompt_tokens", None)
        total = getattr(usage, "completion_tokens", None)
        per = None if total is None or not resp.choices else total // len(resp.choices)
        return [(ch, prompt, per) for ch in resp.choices]

    # -- scoring -------------------------------------------------------------------------------------------------

    def next_token_logprobs(self, conversations: list[Conversation], candidates: list[str]) -> list[TokenScores]:
        async def one(client: Any, sem: asyncio.Semaphore, conv: Conversation) -> TokenScores:
            kw = {"model": self.name, "messages": conv, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                  "top_logprobs": TOP_LOGPROBS}
            resp = await self._call(sem, lambda: client.chat.completions.create(**kw))
            return self._scores(resp, candidates)

        async def run(client: Any, sem: asyncio.Semaphore) -> list[TokenScores]:
            return list(await asyncio.gather(*(one(client, sem, c) for c in conversations)))

        return self._run(run)

    def _scores(self, resp: Any, candidates: list[str]) -> TokenScores:
        content = None
        if resp.choices and resp.choices[0].logprobs is not None:
            content = resp.choices[0].logprobs.content
        if not content:
            if not self._warned_logprobs:
                self._warned_logprobs = True
                warnings.warn(f"{self.shown_url} returned no logprobs; verdict-token scores are unavailable",
                              stacklevel=3)
            return TokenScores({c: None for c in candidates}, available=False)
        top = {t.token: t.logprob for t in (content[0].top_logprobs or [])}
        top.setdefault(content[0].token, content[0].logprob)
        stripped: dict[str, float] = {}
        for tok, lp in top.items():  # " A" and "A" are both the verdict "A"; keep the likelier
            stripped[tok.strip()] = max(lp, stripped.get(tok.strip(), float("-inf")))
        return TokenScores({c: top.get(c, stripped.get(c.strip())) for c in candidates})
