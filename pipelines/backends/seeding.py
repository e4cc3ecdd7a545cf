"""Per-sample seeds: sample i of a conversation gets the same seed whatever batch it lands in."""

from __future__ import annotations

from alignloop.pipelines.backends.base import Conversation
from alignloop.warehouse import ids


def conversation_hash(conversation: Conversation) -> str:
    """Content hash of the conversation (role and content only), as prompts are hashed in the warehouse."""
    return ids.prompt_id(conversation)


def sample_seed(seed: int, conversation: Conversation, sample_index: int) -> int:
    """A 63-bit seed derived from (base seed, conversation hash, sample index)."""
    digest = ids.content_id("seed", {"seed": seed, "conversation": conversation_hash(conversation),
                                     "index": sample_index})
    return int(digest[:15], 16)
