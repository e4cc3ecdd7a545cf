"""A model folder is one judge however it is given: its judge id names the folder's content, not the path (relative or
absolute, from any working folder, or a copy elsewhere); the path is kept as provenance in each judgment's meta."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignloop.pipelines import models
from alignloop.pipelines.judges.config import JudgeConfig, ResponseItem
from alignloop.pipelines.judges.rollouts import RolloutStepJudge
from alignloop.pipelines.judges.run import make_judge
from alignloop.pipelines.models import CONTENT_CACHE, model_name, provenance
from alignloop.pipelines.verifiers import get_verifier
from alignloop.warehouse import db
from tests.fixtures_judges import FakeBackend, seed_round
from tests.fixtures_trainers import tiny_tokenizer

REL = "runs/reward-x/model"


def folder_in(root: Path) -> Path:
    """A model folder as a run leaves it: config, weights, tokenizer and a model card (nothing is loaded)."""
    folder = root / REL
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "README.md").write_text("a model card")
    return folder


def copied(folder: Path, to: Path) -> Path:
    """A copy with new modification times (``cp`` without ``-p``): its cached content id no longer applies."""
    return Path(shutil.copytree(folder, to, copy_function=shutil.copy))


def test_a_model_folder_is_named_by_its_content(tmp_path, monkeypatch):
    folder = folder_in(tmp_path)
    monkeypatch.chdir(tmp_path)
    name = model_name(REL)
    # sha256 over each file's name and sha256, the model card and hidden files left out
    digest = hashlib.sha256()
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        digest.update(f"{f}\0{hashlib.sha256((folder / f).read_bytes()).hexdigest()}\n".encode())
    assert name == f"sha256:{digest.hexdigest()[:16]}"
    assert model_name(str(folder)) == model_name("./runs/../runs/reward-x/model") == name
    monkeypatch.chdir(folder.parent)
    assert model_name("model") == name
    copy = copied(folder, tmp_path / "elsewhere" / "rm-copy")
    (copy / "README.md").write_text("another card")  # a model card is no part of the model
    assert model_name(str(copy)) == name
    assert provenance(str(copy)) == {"model_path": str(copy.resolve())}
    (copy / "model.safetensors").write_bytes(b"other weights")  # other weights: another model
    assert model_name(str(copy)) != name
    assert (model_name("gpt-4o"), provenance("gpt-4o")) == ("gpt-4o", {})  # an endpoint's model: its name


def test_the_content_id_is_hashed_once_and_read_back(tmp_path, monkeypatch):
    folder = folder_in(tmp_path)
    name = model_name(str(folder))
    assert json.loads((folder / CONTENT_CACHE).read_text())["id"] == name.removeprefix("sha256:")
    models._content_ids.clear()

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed again")

    monkeypatch.setattr(hashlib, "file_digest", no_hashing)
    assert model_name(str(folder)) == name  # from the folder's cache, its files unchanged


JUDGES = {
    **{kind: (lambda path, kind=kind: make_judge(kind, FakeBackend(name=path), JudgeConfig()))
       for kind in ("pairwise", "listwise", "rating", "binary", "steps", "correction")},
    "rollouts": lambda path: RolloutStepJudge(FakeBackend(name=path), get_verifier("final_answer")),
}


@pytest.mark.parametrize("kind", list(JUDGES))
def test_every_judge_given_a_model_folder_names_it_by_content(kind, tmp_path, monkeypatch):
    folder = folder_in(tmp_path)
    monkeypatch.chdir(tmp_path)
    copy = copied(folder, tmp_path / "copy")
    ids = {JUDGES[kind](path).judge for path in (REL, str(folder), str(copy))}
    assert len(ids) == 1 and ids.pop().startswith(f"{model_name(REL)}:")


def test_a_correction_from_a_copy_is_the_same_response(tmp_path, monkeypatch):
    folder = folder_in(tmp_path)
    monkeypatch.chdir(tmp_path)
    copy = copied(folder, tmp_path / "copy")
    item = ResponseItem("r1", "p1", "Question?", "A rude answer.")
    results = [make_judge("correction", FakeBackend(name=path, reply=lambda c: "A kind answer."))
               .judge_items([item], "r1") for path in (REL, str(copy))]
    (first,), (second,) = (r.responses for r in results)
    assert first.id == second.id and first.model_id == second.model_id == model_name(REL)
    assert (first.meta["model_path"], second.meta["model_path"]) == (str(folder.resolve()), str(copy.resolve()))
    assert results[0].corrections[0].id == results[1].corrections[0].id


def head_folder(path: Path, head: str) -> Path:
    """A tiny random reward model (one score per sequence) or process reward model (3 classes per token)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification, LlamaForTokenClassification

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, num_labels=1 if head == "reward" else 3)
    cls = LlamaForSequenceClassification if head == "reward" else LlamaForTokenClassification
    cls(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind, head, extra", [("rating", "reward", []), ("rating", "prm", ["--prm-aggregate", "min"]),
                                               ("steps", "prm", [])])
def test_a_reward_model_by_two_paths_is_one_judge(kind, head, extra, tmp_path, monkeypatch):
    from alignloop.flows.cli import app

    pytest.importorskip("torch")
    folder = head_folder(tmp_path / REL, head)
    copy = copied(folder, tmp_path / "elsewhere" / "model")
    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        seed_round(con)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    runs = []
    for spec in (f"rm:{REL}", f"rm:{copy}"):  # relative here, then a copy by its absolute path
        res = runner.invoke(app, ["judge", kind, "--round", "r1", "--judge", spec, *extra, "--db", path, "--json"])
        assert res.exit_code == 0, res.output
        runs.append(json.loads(res.stdout))
    assert runs[0]["judge"] == runs[1]["judge"] and runs[0]["judge"].startswith(f"{model_name(REL)}:")
    assert (runs[0]["selected"], runs[1]["selected"], runs[1]["cached"]) == (9, 0, 9)  # nothing judged twice
    table = "ratings" if kind == "rating" else "step_labels"
    with db.connect(path) as con:
        judges = con.execute(f"SELECT DISTINCT judge, meta->>'model_path' FROM {table}").fetchall()
    assert judges == [(runs[0]["judge"], str(folder.resolve()))]
