"""Shared trainer fixtures: a tiny byte-level ChatML tokenizer, a tiny random Llama folder, snapshot writers."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pytest

from alignloop.trainers.snapshot import write_snapshot_dir
from alignloop.warehouse.snapshots import SCHEMAS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = ["yes", "no", "maybe", "sure", "fine", "good", "bad", "blue", "red", "cat", "dog", "sun", "rain"]


def tiny_tokenizer():
    """Byte-level tokenizer (one token per byte) with ChatML specials; eos = pad = <|im_end|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.chat_template = CHATML
    return fast


def save_tiny_model(path: Path, seed: int = 0, layers: int = 2) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _extra(kind: str, rng: random.Random, split: str, i: int) -> dict:
    if kind == "pairwise":
        return {"chosen": "good " + _text(rng, 2), "rejected": "bad " + _text(rng, 2), "chosen_id": f"c-{split}-{i}",
                "rejected_id": f"r-{split}-{i}", "prob": 1.0, "margin": 1.0}
    if kind == "binary":
        return {"completion": _text(rng, 3), "completion_id": f"c-{split}-{i}", "label": i % 2 == 0}
    if kind == "listwise":
        return {"completions": [_text(rng, 2) for _ in range(3)],
                "completion_ids": [f"c-{split}-{i}-{k}" for k in range(3)], "scores": [2.0, 1.0, 0.0]}
    if kind == "steps":
        return {"completion_id": f"c-{split}-{i}", "steps": [_text(rng, 2) for _ in range(3)], "labels": [1, 0, -1]}
    if kind == "correction":
        return {"answer": _text(rng, 2), "correction": _text(rng, 3), "answer_id": f"a-{i}",
                "correction_id": f"x-{split}-{i}", "identity": False}
    return {"completion": _text(rng, 3), "completion_id": f"c-{split}-{i}", "score": 1.0}


def rows_for(kind: str, n: int, split: str, seed: int = 0) -> list[dict]:
    """``n`` rows of a snapshot kind with short random texts and unique ids."""
    rng = random.Random(f"{kind}-{split}-{seed}")
    rows = []
    for i in range(n):
        q = f"q{i} " + _text(rng, 3)
        base = {"prompt_id": f"p-{split}-{i}", "split": split, "round_id": "r1",
                "prompt": json.dumps([{"role": "user", "content": q}]), "prompt_text": q, "source": "human",
                "feedback_ids": [f"f-{split}-{i}"]}
        rows.append(base | _extra(kind, rng, split, i))
    return rows


def make_snapshot(root: Path, kind: str, n_train: int = 8, n_test: int = 4, name: str | None = None) -> Path:
    schema = SCHEMAS[kind]
    tables = {s: pa.Table.from_pylist(rows_for(kind, n, s), schema=schema)
              for s, n in (("train", n_train), ("test", n_test))}
    return write_snapshot_dir(root, kind, tables["train"], tables["test"], name=name or kind)


def new_warehouse(folder: Path) -> str:
    """An empty warehouse file in ``folder`` (``alignloop init``): training records its runs there."""
    from alignloop.warehouse import db

    path = folder / "w.duckdb"
    with db.connect(path):
        pass
    return str(path)


def small_train(tmp: Path, **kw):
    """A TrainConfig for 2 quick steps on the tiny model."""
    from alignloop.trainers.config import TrainConfig

    base = {"lr": 1e-2, "max_steps": 2, "batch_size": 2, "max_length": 96, "max_prompt_length": 48,
            "bf16": False, "output_dir": str(tmp / "run"), "save_steps": 1000}
    return TrainConfig(**(base | kw))
