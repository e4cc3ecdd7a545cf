"""An OpenAI-compatible chat endpoint on 127.0.0.1 whose verdicts follow a rule, to run the platform's judges through
the real ``openai`` client over HTTP where a served model's verdicts would be noise (a tiny random model's are):
the shorter answer wins a comparison (a ranking lists them shortest first), and an answer of c characters is rated
``9 - c // 4`` (at least 0). With ``logprobs`` asked for, the top log-probabilities put 0.9 on that verdict
(pairwise) or spread it over the digit and its neighbours (ratings); ``RuleJudge.logprobs = False`` answers without
them, as ``transformers serve`` does.

    from tests.fixtures_judge_server import RuleJudge, rule_judge, shorter_wins

``garbage_judge`` serves ``GarbageJudge``: replies that look like verdicts and are none (in turn), without
log-probabilities.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

ANSWER = re.compile(r"\[\[\[BEGIN ANSWER( [A-Z])?\]\]\]\n(.*?)\n\[\[\[END ANSWER", re.DOTALL)


def shorter_wins(a: str, b: str) -> str:
    """The rule's pairwise verdict: "A", "B" or "tie"."""
    return "tie" if len(a) == len(b) else ("A" if len(a) < len(b) else "B")


def rule_rating(answer: str) -> int:
    return max(0, 9 - len(answer) // 4)


def _verdict(content: str) -> tuple[str, dict[str, float]]:
    """The reply's text and its top log-probabilities."""
    answers = {(tag or "").strip(): text for tag, text in ANSWER.findall(content)}
    if "Rank all answers" in content:  # listwise: the letters, shortest answer first
        return " > ".join(sorted(answers, key=lambda k: (len(answers[k]), k))), {}
    if "A" in answers and "B" in answers:
        v = shorter_wins(answers["A"], answers["B"])
        if v == "tie":
            return v, {"A": math.log(0.5), "B": math.log(0.5)}
        return v, {v: math.log(0.9), "B" if v == "A" else "A": math.log(0.1)}
    d = rule_rating(answers[""]) if "" in answers else 5
    near = {k: 0.1 for k in (d - 1, d + 1) if 0 <= k <= 9}
    return str(d), {str(k): math.log(p) for k, p in {d: 1 - sum(near.values()), **near}.items()}


class RuleJudge(BaseHTTPRequestHandler):
    """POST /v1/chat/completions. ``requests`` keeps each body with its Authorization header (as ``_auth``)."""

    requests: ClassVar[list[dict]] = []
    logprobs: ClassVar[bool] = True

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({**body, "_auth": self.headers.get("Authorization")})
        text, top = _verdict(body["messages"][-1]["content"])
        logprobs = None
        if body.get("logprobs") and type(self).logprobs:
            ranked = sorted(top.items(), key=lambda kv: -kv[1])[:body.get("top_logprobs") or 1]
            logprobs = {"content": [{"token": ranked[0][0], "logprob": ranked[0][1], "bytes": None,
                                     "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in ranked]}]}
        send_json(self, completion(body["model"], [text] * (body.get("n") or 1), logprobs))

    def log_message(self, *args):
        pass


GARBAGE = ("The answer is a bit unclear, both fine", "The choice is a hard one; B", "Tie-breaker: A",
           "answer: tie actually B", "The answer is A. Actually, B.", "No problems, the answer is correct.", "-3",
           "Rating: 7\nRating: 8", "Step 1: 1\nStep 1: -1", "C > A > C", "Neither", "lorem ipsum dolor sit amet", "")
"""Replies no template's grammar reads as a verdict: articles, contradictions, a score out of range, a step labelled
twice, a ranking naming one answer twice, nothing."""


class GarbageJudge(BaseHTTPRequestHandler):
    """POST /v1/chat/completions: the next reply of GARBAGE (in turn), no log-probabilities."""

    served: ClassVar[int] = 0

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        texts = [GARBAGE[(cls.served + i) % len(GARBAGE)] for i in range(body.get("n") or 1)]
        cls.served += len(texts)
        send_json(self, completion(body["model"], texts))

    def log_message(self, *args):
        pass


@pytest.fixture
def garbage_judge():
    """An endpoint answering GARBAGE; its base URL (``.../v1``)."""
    GarbageJudge.served = 0
    with serving(GarbageJudge) as url:
        yield url


def completion(model: str, texts: list[str], logprobs: dict | None = None, tokens: tuple[int, int] = (5, 3)
               ) -> dict:
    """A chat completion with one choice per text; ``tokens``: its prompt and completion token counts."""
    return {"id": "local", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop",
                         "logprobs": logprobs} for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1], "total_tokens": sum(tokens)}}


def send_json(handler: BaseHTTPRequestHandler, payload: dict, status: int = 200) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on a free port of 127.0.0.1 in a thread; yields the base URL (``.../v1``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


@pytest.fixture
def rule_judge():
    """The endpoint's base URL (``.../v1``); its requests start empty, with log-probabilities on."""
    RuleJudge.requests, RuleJudge.logprobs = [], True
    with serving(RuleJudge) as url:
        yield url
