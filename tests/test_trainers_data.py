"""Tokenisation, label masks (PRM exactly), collators, log-probs, configs: no training."""

from __future__ import annotations

import json

import pytest
import torch

from alignloop.trainers import config as C
from alignloop.trainers.collators import ListCollator, PairCollator, UnpairedCollator
from alignloop.trainers.logprobs import sequence_logprobs
from alignloop.trainers.tokenize import (
    IGNORE_INDEX,
    Encoder,
    encode_lists,
    encode_pairs,
    encode_steps,
    encode_unpaired,
)
from tests.fixtures_trainers import rows_for, tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_completion_labels_masked_on_prompt(tok):
    enc = Encoder(tok, 200, 100)
    prompt = enc.prompt_ids(json.dumps([{"role": "user", "content": "hi"}]), "hi")
    e = enc.completion(prompt, "ok")
    assert e.input_ids[: len(prompt)] == prompt
    assert e.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert e.labels[len(prompt):] == tok("ok<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(e.input_ids).endswith("<|im_start|>assistant\nok<|im_end|>")


def test_truncation_is_counted(tok):
    enc = Encoder(tok, 28, 20)
    feats = encode_pairs(enc, rows_for("pairwise", 3, "train"))
    assert enc.counts.rows == 3 and enc.counts.prompts_truncated == 3  # the ChatML prompt alone is > 20 bytes
    assert all(len(f.chosen.input_ids) == 28 and len(f.rejected.input_ids) == 28 for f in feats)
    assert enc.counts.completions_truncated == 6


def test_prm_labels_only_at_step_ends(tok):
    enc = Encoder(tok, 500, 200)
    row = rows_for("steps", 1, "train")[0] | {"steps": ["a b", "cd", "e"], "labels": [1, -1, 0]}
    (feat,) = encode_steps(enc, [row], "\n\n")
    ids, labels = feat.encoded.input_ids, feat.encoded.labels
    prompt_len = len(enc.prompt_ids(row["prompt"], row["prompt_text"]))
    # byte-level tokenizer: "a b\n\n" is 5 tokens, "cd\n\n" 4, "e\n\n" 3 -> step ends at these offsets
    ends = [prompt_len + 4, prompt_len + 8, prompt_len + 11]
    expected = [IGNORE_INDEX] * len(ids)
    for pos, lab in zip(ends, [1, -1, 0], strict=True):
        expected[pos] = lab
    assert labels == expected
    assert len(ids) == prompt_len + 12
    assert tok.decode(ids[ends[1]]) == "\n"  # the label sits on the separator's last token


def test_prm_steps_that_do_not_fit_are_dropped_and_counted(tok):
    enc = Encoder(tok, 0, 1)  # patched below: budget for prompt + first step only
    row = rows_for("steps", 1, "train")[0] | {"steps": ["aaaa", "bbbb", "cccc"], "labels": [1, 1, 1]}
    prompt_len = len(Encoder(tok, 500, 200).prompt_ids(row["prompt"], row["prompt_text"]))
    enc.max_length, enc.max_prompt_length = prompt_len + 7, prompt_len
    (feat,) = encode_steps(enc, [row], "\n\n")
    assert sum(lab != IGNORE_INDEX for lab in feat.encoded.labels) == 1
    assert enc.counts.steps_dropped == 2


def test_pair_collator_puts_chosen_then_rejected_in_one_batch(tok):
    enc = Encoder(tok, 128, 64)
    feats = encode_pairs(enc, rows_for("pairwise", 3, "train"))
    ref = torch.arange(6, dtype=torch.float64).view(3, 2).numpy()
    batch = PairCollator(tok.pad_token_id, ref)(feats[1:])
    assert batch["input_ids"].shape[0] == 4
    assert batch["input_ids"][0, : len(feats[1].chosen.input_ids)].tolist() == feats[1].chosen.input_ids
    assert batch["input_ids"][2, : len(feats[1].rejected.input_ids)].tolist() == feats[1].rejected.input_ids
    assert batch["rows"].tolist() == [1, 2]
    assert batch["ref"].tolist() == [[2.0, 3.0], [4.0, 5.0]]
    pad_positions = batch["attention_mask"] == 0
    assert (batch["labels"][pad_positions] == IGNORE_INDEX).all()


def test_unpaired_mismatched_completion_is_next_rows(tok):
    enc = Encoder(tok, 128, 64)
    rows = rows_for("binary", 3, "train")
    feats = encode_unpaired(enc, rows)
    assert tok.decode(feats[0].mismatched.input_ids).endswith(rows[1]["completion"] + "<|im_end|>")
    assert tok.decode(feats[2].mismatched.input_ids).endswith(rows[0]["completion"] + "<|im_end|>")
    batch = UnpairedCollator(tok.pad_token_id)(feats)
    assert batch["input_ids"].shape[0] == 6 and batch["desirable"].tolist() == [True, False, True]


def test_list_collator_pads_short_lists_with_mask(tok):
    enc = Encoder(tok, 128, 64)
    rows = rows_for("listwise", 2, "train")
    rows[1] = rows[1] | {"completions": rows[1]["completions"][:2], "scores": [1.0, 0.0]}
    batch = ListCollator(tok.pad_token_id)(encode_lists(enc, rows, 4))
    assert batch["input_ids"].shape[0] == 6
    assert batch["list_mask"].tolist() == [[True, True, True], [True, True, False]]


def test_sequence_logprobs_matches_manual_sum():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 0]])
    logps, lengths = sequence_logprobs(logits, labels)
    lsm = logits.log_softmax(-1)
    want0 = lsm[0, 1, 3] + lsm[0, 2, 4]
    want1 = lsm[1, 0, 1] + lsm[1, 1, 2] + lsm[1, 2, 6] + lsm[1, 3, 0]
    assert torch.allclose(logps, torch.stack([want0, want1]), atol=1e-5)
    assert lengths.tolist() == [2, 4]


def test_config_validation_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="max_prompt_length"):
        C.TrainConfig(max_length=64, max_prompt_length=64)
    with pytest.raises(ValueError, match="has no parameter gama"):
        C.PreferenceConfig(loss="simpo", loss_params={"gama": 1.0})
    with pytest.raises(ValueError, match="not pairwise"):
        C.PreferenceConfig(loss="kto")
    cfg = C.PreferenceConfig(train=C.TrainConfig(lora=C.LoraConfig(r=4)), loss="simpo", beta=2.0,
                             loss_params={"gamma": 0.5})
    assert C.from_dict(json.loads(json.dumps(C.to_dict(cfg)))) == cfg


def test_a_config_file_holds_only_what_it_changes(tmp_path):
    from alignloop.warehouse.errors import AlignloopError

    base = C.PreferenceConfig()
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"beta": 0.2, "train": {"lr": 1e-6, "max_steps": 3, "lora": {"r": 4}}}))
    cfg = C.load_over(f, base)
    assert (cfg.beta, cfg.train.lr, cfg.train.max_steps, cfg.train.lora.r) == (0.2, 1e-6, 3, 4)
    assert cfg.loss == base.loss and cfg.train.batch_size == base.train.batch_size
    assert cfg.train.lora.targets == C.LoraConfig().targets
    saved = C.PreferenceConfig(loss="simpo", beta=2.0, train=C.TrainConfig(epochs=2.0))  # a run's config.json
    f.write_text(json.dumps(C.to_dict(saved)))
    assert C.load_over(f, base) == saved
    for given, match in (({"type": "RewardConfig"}, "it is a RewardConfig; this method takes a PreferenceConfig"),
                         ({"train": {"lr": "fast"}}, "train.lr must be a number, got 'fast'"),
                         ({"train": {"max_steps": 2.5}}, "train.max_steps must be a whole number, got 2.5"),
                         ({"train": {"bf16": "yes"}}, "train.bf16 must be true or false"),
                         ({"gamma": 1}, "unknown config fields: gamma"),
                         ([1], "expected a JSON object"),
                         ({"train": {"lr": -1.0}}, "lr must be > 0")):
        f.write_text(json.dumps(given))
        with pytest.raises(AlignloopError, match=rf"^{f}: bad training config: .*{match}"):
            C.load_over(f, base)
    with pytest.raises(AlignloopError, match="no such config file"):
        C.load_over(tmp_path / "missing.json", base)


def test_a_new_run_refuses_a_folder_of_other_files(tmp_path):
    """A run writes model/ into its folder and removes checkpoints/ when done: pointed at a folder of the user's
    (``--output-dir .``) it mixed into it and pruned their checkpoints/. Refused in one line, nothing written."""
    from alignloop.warehouse.errors import AlignloopError

    ident = {"method": "dpo", "dataset": "h", "base_model": "b"}
    mine = tmp_path / "project"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "checkpoints" / "keep.pt").write_bytes(b"x")
    cfg = C.PreferenceConfig(train=C.TrainConfig(output_dir=str(mine)))
    with pytest.raises(AlignloopError, match=r"holds 'checkpoints' but no run's config\.json") as err:
        C.check_resume(mine, cfg, ident)
    assert "\n" not in str(err.value)
    (mine / "config.json").write_text('{"model_type": "llama"}')  # a model folder's, not a run's
    with pytest.raises(AlignloopError, match=r"holds 'checkpoints' and 1 more but no run's config\.json"):
        C.check_resume(mine, cfg, ident)
    assert sorted(p.name for p in mine.rglob("*")) == ["checkpoints", "config.json", "keep.pt"]
    assert (mine / "config.json").read_text() == '{"model_type": "llama"}'
    assert C.check_resume(tmp_path / "new", cfg, ident) is False  # a new folder, and an empty one, are fine
    (tmp_path / "empty").mkdir()
    assert C.check_resume(tmp_path / "empty", cfg, ident) is False


def test_resume_with_other_config_is_refused(tmp_path):
    from alignloop.warehouse.errors import AlignloopError

    ident = {"method": "dpo", "dataset": "h", "base_model": "b"}
    cfg = C.PreferenceConfig(train=C.TrainConfig(output_dir=str(tmp_path)))
    assert C.check_resume(tmp_path, cfg, ident) is False
    assert C.check_resume(tmp_path, cfg, ident) is True
    other = C.PreferenceConfig(train=C.TrainConfig(output_dir=str(tmp_path), lr=1e-4), beta=0.2)
    with pytest.raises(AlignloopError, match=r"differs in beta, train\.lr;") as err:
        C.check_resume(tmp_path, other, ident)
    assert "\n" not in str(err.value)
