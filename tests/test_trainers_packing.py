"""Shared-prompt packing and chunked token log-probs: same numbers as the padded batch, less work."""

from __future__ import annotations

import pytest
import torch

from alignloop.trainers import logprobs, packing
from alignloop.trainers.collators import PackedPairCollator, PairCollator
from alignloop.trainers.loading import load_model
from alignloop.trainers.logprobs import IGNORE_INDEX, token_logprobs
from alignloop.trainers.packing import PROMPT, batch_logprobs, pack_groups, pack_pairs
from alignloop.trainers.tokenize import Encoder, encode_pairs
from tests.fixtures_trainers import rows_for, tiny_model_dir, tiny_tokenizer  # noqa: F401


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def feats(tok):
    return encode_pairs(Encoder(tok, 96, 48), rows_for("pairwise", 5, "train"))


def _logps_and_grads(model, batch):
    logps, lengths = batch_logprobs(model, batch)
    (logps * torch.linspace(0.5, 1.5, logps.numel())).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return logps.detach(), lengths, grads


@pytest.mark.parametrize("attn", ["sdpa", "eager", "fallback"])
def test_packed_pairs_match_padded_pairs(tiny_model_dir, tok, feats, attn, monkeypatch):  # noqa: F811
    model = load_model(tiny_model_dir, "causal")
    model.config._attn_implementation = "sdpa" if attn == "fallback" else attn
    want, want_len, want_grads = _logps_and_grads(model, PairCollator(tok.pad_token_id)(feats))
    if attn == "fallback":  # e.g. flash attention: no 4D masks, the packed rows are unpacked again
        monkeypatch.setattr(packing, "_mask_kind", lambda model, width: None)
    packed = PackedPairCollator(tok.pad_token_id)(feats)
    got, got_len, got_grads = _logps_and_grads(model, packed)
    assert torch.equal(got_len, want_len)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)
    for name, g in want_grads.items():
        assert torch.allclose(got_grads[name], g, atol=1e-5, rtol=1e-4), name
    if attn != "fallback":
        assert packed["input_ids"].numel() < PairCollator(tok.pad_token_id)(feats)["input_ids"].numel()


def test_pack_layout_positions_and_targets():
    batch = pack_groups([([1, 2], [[3, 4], [5]]), ([6], [[7], [8, 9]])], pad_id=0, row_tokens=100)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2, 0, 1, 1, 2]]
    assert batch["part_ids"].tolist() == [[PROMPT, PROMPT, 2, 2, 3, PROMPT, 2, 3, 3]]
    # sequence k * G + g: chosen of group 0, chosen of group 1, rejected of group 0, rejected of group 1
    assert batch["target_counts"].tolist() == [2, 1, 1, 2]
    by_seq = {}
    for pos, tid, seq in zip(batch["target_pos"].tolist(), batch["target_ids"].tolist(),
                             batch["target_seq"].tolist(), strict=True):
        by_seq.setdefault(seq, []).append((pos, tid))
    assert by_seq == {0: [(1, 3), (2, 4)], 2: [(1, 5)], 1: [(5, 7)], 3: [(5, 8), (7, 9)]}
    allowed = packing._allowed(batch["group_ids"], batch["part_ids"])[0, 0]
    assert allowed[4].tolist() == [True, True, False, False, True] + [False] * 4  # rejected skips chosen
    assert not allowed[6, :5].any()  # group 1 never sees group 0


def test_rows_hold_groups_up_to_row_tokens():
    groups = [([1] * 3, [[2] * 3, [3] * 2])] * 3  # 8 tokens each
    assert pack_groups(groups, 0, row_tokens=16)["input_ids"].shape == (2, 16)
    assert pack_groups(groups, 0, row_tokens=4)["input_ids"].shape == (3, 8)  # a group is never split


def test_pairs_must_share_the_prompt():
    with pytest.raises(ValueError, match="same prompt"):
        pack_pairs([([1, 2, 3], [IGNORE_INDEX, IGNORE_INDEX, 3], [1, 9, 3], [IGNORE_INDEX, IGNORE_INDEX, 3])], 0)


def test_token_logprobs_value_and_gradient(monkeypatch):
    torch.manual_seed(0)
    logits = torch.randn(7, 11, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (7,))
    want = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    monkeypatch.setattr(logprobs, "CHUNK_ELEMENTS", 25)  # 2 rows per chunk
    assert torch.allclose(token_logprobs(logits, targets), want)
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, targets), (logits,))


def test_token_logprobs_bf16_computes_in_float32():
    torch.manual_seed(0)
    logits = (torch.randn(4, 50) * 8).to(torch.bfloat16).requires_grad_()
    targets = torch.tensor([0, 5, 49, 7])
    got = token_logprobs(logits, targets)
    want = logits.float().log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)
    got.sum().backward()
    ref = logits.detach().float().requires_grad_()
    ref.log_softmax(-1).gather(-1, targets[:, None]).sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.allclose(logits.grad.float(), ref.grad, atol=1e-2)
