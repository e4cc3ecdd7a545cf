"""Reward-model judge on a tiny random-initialised sequence-classification model (no weights downloaded)."""

from __future__ import annotations

import math

import pytest

from alignloop.pipelines.judges.config import ResponseItem
from alignloop.pipelines.judges.reward_model import (
    RewardModelJudge,
    RewardModelScorer,
    aggregate_steps,
    best_of_n,
    rank_by_score,
)

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "question", "answer", "step", "good", "bad", "x", "y", "1", "2", "3", "the", "is"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<pad>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, num_labels=1, pad_token_id=0)
    model = LlamaForSequenceClassification(cfg).eval()
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    return str(path)


def items():
    return [ResponseItem("r1", "p1", "question", "good answer"), ResponseItem("r2", "p1", "question", "bad answer"),
            ResponseItem("r3", "p2", "question", "step 1\nstep 2 is bad", steps=("step 1", "step 2 is bad"))]


def test_scores_are_deterministic_and_batch_independent(tiny_rm):
    scorer = RewardModelScorer.load(tiny_rm, batch_size=3)
    s1 = scorer.score(items())
    s2 = RewardModelScorer.load(tiny_rm, batch_size=1).score(items())
    assert len(s1) == 3 and all(math.isfinite(x) for x in s1)
    assert s1 == pytest.approx(s2, abs=1e-5)  # right padding and pad-aware pooling
    assert len({round(x, 6) for x in s1}) > 1


def test_orm_and_prm_ratings(tiny_rm):
    orm = RewardModelJudge.load(tiny_rm)
    rows = orm.judge_items(items(), "r1")
    assert {r.source for r in rows} == {"reward_model"} and rows[0].judge.endswith(":orm@v2")
    assert rows[0].scale_min == -math.inf
    prm = RewardModelJudge.load(tiny_rm, prm="min")
    prow = prm.judge_items(items(), "r1")[2]
    assert len(prow.meta["step_probs"]) == 2 and prow.score == pytest.approx(min(prow.meta["step_probs"]))
    assert 0.0 < prow.score < 1.0 and prm.ids(items()) != orm.ids(items())


def test_aggregation_and_best_of_n():
    assert aggregate_steps([0.5, 0.8], "product") == pytest.approx(0.4)
    assert aggregate_steps([0.5, 0.8], "min") == 0.5
    its = items()
    assert best_of_n(its, [0.1, 0.9, 0.3]) == {"p1": "r2", "p2": "r3"}
    assert rank_by_score(its, [0.1, 0.9, 0.3]) == {"p1": ["r2", "r1"], "p2": ["r3"]}


def test_refuses_non_folder():
    from alignloop.warehouse.errors import AlignloopError

    with pytest.raises(AlignloopError, match="not a local model folder"):
        RewardModelScorer.load("some/hub-name")


def test_a_folder_that_is_no_one_score_reward_model_is_refused_by_name(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    from alignloop.warehouse.errors import AlignloopError

    small = {"vocab_size": 16, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32}
    LlamaForCausalLM(LlamaConfig(**small)).save_pretrained(tmp_path / "policy")  # scored by a random head before
    LlamaForTokenClassification(LlamaConfig(**small, num_labels=3)).save_pretrained(tmp_path / "prm")
    with pytest.raises(AlignloopError, match=r"policy is a LlamaForCausalLM, not a reward model"):
        RewardModelScorer.load(str(tmp_path / "policy"))
    with pytest.raises(AlignloopError, match=r"prm is a LlamaForTokenClassification with 3 labels, not a reward"):
        RewardModelScorer.load(str(tmp_path / "prm"))
