"""The prompt chat lint: malformed chats apart from valid chats that repeat a role (HH-RLHF has some)."""

from __future__ import annotations

import json

import pytest

from alignloop.pipelines.datasets.lint import _chat_problem


def chat(*roles: str) -> str:
    return json.dumps([{"role": r, "content": f"turn {i}"} for i, r in enumerate(roles)])


@pytest.mark.parametrize(("prompt", "problem"), [
    (chat("user"), None),
    (chat("system", "user", "assistant", "user"), None),
    (chat("user", "assistant", "assistant", "user"), "consecutive_same_role"),
    (chat("user", "user"), "consecutive_same_role"),
    (chat("user", "assistant"), "bad_chat_prompt"),            # ends with the assistant
    (chat("assistant", "user"), "bad_chat_prompt"),            # starts with the assistant
    (chat("user", "system", "assistant", "user"), "bad_chat_prompt"),
    ("not json", "bad_chat_prompt"),
    (json.dumps([{"role": "bot", "content": "x"}]), "bad_chat_prompt"),
    ("[]", "bad_chat_prompt"),
])
def test_chat_problem(prompt: str, problem: str | None):
    assert _chat_problem(prompt) == problem
