"""Shared fixtures for generation tests: a tiny random Llama with a tiny byte-level BPE tokenizer, prompt warehouses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alignloop.warehouse import db
from alignloop.warehouse.records import Prompt

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = ["the quick brown fox jumps over the lazy dog", "what is two plus two", "write a short poem about the sea",
          "name three colors: red, green, blue", "hello there, how are you today?", "0123456789 + - * / = ( )"]


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Save a ~0.2M-parameter random Llama and a ChatML tokenizer into ``folder`` (no downloads)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    eos = fast.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256, initializer_range=0.5,
                         eos_token_id=eos, pad_token_id=eos, bos_token_id=fast.bos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = eos
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path):
    from alignloop.pipelines.backends.transformers_backend import TransformersBackend

    return TransformersBackend.load(str(tiny_model_dir), device="cpu", dtype="float32", max_batch_size=4)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


QUESTIONS = [f"question number {i}: " + " ".join(CORPUS[i % len(CORPUS)].split()[: 2 + i % 5]) for i in range(10)]


def add_prompts(path: str, texts: list[str] = QUESTIONS, split: str = "train") -> list[str]:
    """Insert one user-turn prompt per text; returns their ids."""
    prompts = [Prompt.create(user(t), "test", split=split, tags=["t"]) for t in texts]  # type: ignore[arg-type]
    with db.connect(path) as con:
        db.ingest(con, "prompts", prompts)
    return [p.id for p in prompts]


@pytest.fixture
def prompt_db(tmp_path: Path) -> str:
    path = str(tmp_path / "w.duckdb")
    add_prompts(path)
    return path
