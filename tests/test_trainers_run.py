"""Each trainer for 2 steps on a tiny random Llama; reference cache reuse; NaN and input errors; the flow."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignloop.trainers import config as C
from alignloop.trainers import reference
from alignloop.trainers.run import train_model
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_trainers import make_snapshot, save_tiny_model, small_train, tiny_model_dir  # noqa: F401

CASES = [
    ("dpo", "pairwise", lambda t: C.PreferenceConfig(train=t), "rewards/accuracies"),
    ("dpo", "pairwise", lambda t: C.PreferenceConfig(train=t, loss="simpo", beta=2.0), "rewards/margins"),
    ("kto", "binary", lambda t: C.UnpairedConfig(train=t), "kl"),
    ("listwise", "listwise", lambda t: C.ListwiseConfig(train=t, loss="lipo"), "rewards/accuracies"),
    ("listwise", "listwise", lambda t: C.ListwiseConfig(train=t, loss="rrhf", beta=1.0), "rewards/accuracies"),
    ("reward", "pairwise", lambda t: C.RewardConfig(train=t, use_margin=True), "rewards/accuracies"),
    ("reward", "listwise", lambda t: C.RewardConfig(train=t), "rewards/accuracies"),
    ("prm", "steps", lambda t: C.PRMConfig(train=t), "step_accuracy"),
    ("sft", "sft", lambda t: C.SFTConfig(train=t), "loss"),
    ("sft", "correction", lambda t: C.SFTConfig(train=t), "loss"),
]


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize(("method", "kind", "make", "metric"), CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in
                                                                              enumerate(CASES)])
def test_trainer_changes_parameters_and_logs(tmp_path, tiny_model_dir, method, kind, make, metric):  # noqa: F811
    snap = make_snapshot(tmp_path / "snap", kind)
    result = train_model(method, snap, tiny_model_dir, make(small_train(tmp_path)), base_model_id="base",
                         cache_dir=tmp_path / "cache")
    before, after = _weights(tiny_model_dir), _weights(result.model_dir)
    shared = [k for k in before if k in after]
    assert shared and any(not torch.equal(before[k], after[k]) for k in shared)
    logged = {(m.step, m.name) for m in result.metrics}
    assert {(1, "loss"), (2, "loss"), (2, metric)} <= logged
    assert result.run.status == "finished" and result.run.meta["steps"] == 2
    assert result.model.parent_id == "base" and result.model.training_run_id == result.run.id
    assert result.evaluations and all(e.target == result.model.id for e in result.evaluations)
    assert result.plot is not None and result.plot.stat().st_size > 1000


def test_lora_trains_adapters_and_merges(tmp_path, tiny_model_dir):  # noqa: F811
    snap = make_snapshot(tmp_path / "snap", "pairwise")
    t = small_train(tmp_path, lora=C.LoraConfig(r=2, alpha=4, dropout=0.0, targets=("q_proj", "v_proj")),
                    gradient_checkpointing=True)
    result = train_model("dpo", snap, tiny_model_dir, C.PreferenceConfig(train=t), base_model_id="base",
                         cache_dir=tmp_path / "cache")
    before, after = _weights(tiny_model_dir), _weights(result.model_dir)
    assert set(before) == set(after)  # merged: a plain model folder
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)


def test_frozen_bottom_layers_stay_and_the_rest_trains(tmp_path, tiny_model_dir):  # noqa: F811
    snap = make_snapshot(tmp_path / "snap", "pairwise")
    result = train_model("reward", snap, tiny_model_dir, C.RewardConfig(train=small_train(tmp_path, freeze_layers=1)),
                         base_model_id="base")
    before, after = _weights(tiny_model_dir), _weights(result.model_dir)
    changed = {k for k in before.keys() & after.keys() if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("model.layers.1.", "model.norm")) for k in changed), changed
    assert "score.weight" in after  # the new head trained beside the top layer
    with pytest.raises(ValueError, match=r"freeze_layers must be in \[1, 2\] for this model, got 3"):
        train_model("reward", snap, tiny_model_dir, C.RewardConfig(train=small_train(tmp_path / "b", freeze_layers=3)),
                    base_model_id="base")
    with pytest.raises(ValueError, match="freeze_layers and lora both"):
        C.TrainConfig(freeze_layers=1, lora=C.LoraConfig())


def test_reference_is_computed_once_and_reused(tmp_path, tiny_model_dir, monkeypatch):  # noqa: F811
    snap = make_snapshot(tmp_path / "snap", "pairwise")
    calls = []
    real = reference.compute_logps

    def counting(model, features, collate, *args):
        calls.append(len(features))
        return real(model, features, collate, *args)

    monkeypatch.setattr("alignloop.trainers.run.compute_logps", counting)
    cfg = C.PreferenceConfig(train=small_train(tmp_path / "a"))
    first = train_model("dpo", snap, tiny_model_dir, cfg, base_model_id="base", cache_dir=tmp_path / "cache")
    assert calls == [8, 4]  # train and test split
    second = train_model("dpo", snap, tiny_model_dir, C.PreferenceConfig(train=small_train(tmp_path / "b")),
                         base_model_id="base", cache_dir=tmp_path / "cache")
    assert calls == [8, 4]  # no forward pass the second time
    assert [a.id for a in first.artifacts] == [a.id for a in second.artifacts]
    assert first.artifacts[0].inputs["snapshot"] and first.artifacts[0].kind == "reference_logps"
    assert second.run.reference_model_id == "base"
    # only the held-out split's artifact gone: its 4 rows are computed, and the progress total counts only them
    Path(first.artifacts[1].path).unlink()
    reports = []
    train_model("dpo", snap, tiny_model_dir, C.PreferenceConfig(train=small_train(tmp_path / "c")),
                base_model_id="base", cache_dir=tmp_path / "cache", progress=lambda *r: reports.append(r[:3]))
    assert calls == [8, 4, 4]
    assert [r for r in reports if r[0] == "reference"] == [("reference", 2, 4), ("reference", 4, 4)]


def test_nan_loss_names_step_and_examples(tmp_path):
    folder = save_tiny_model(tmp_path / "nan")
    weights = _weights(folder)
    weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], float("nan"))
    from safetensors.torch import save_file

    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    snap = make_snapshot(tmp_path / "snap", "sft")
    with pytest.raises(AlignloopError, match=r"loss is nan at step 1; batch examples: c-train-\d+, c-train-\d+"):
        train_model("sft", snap, folder, C.SFTConfig(train=small_train(tmp_path)), base_model_id="b")


def test_input_errors_are_one_line(tmp_path, tiny_model_dir):  # noqa: F811
    prefs = make_snapshot(tmp_path / "prefs", "pairwise")
    with pytest.raises(AlignloopError, match="^method kto needs a binary dataset; 'pairwise' is pairwise$"):
        train_model("kto", prefs, tiny_model_dir, base_model_id="b")
    empty = make_snapshot(tmp_path / "empty", "pairwise", n_train=0, n_test=0, name="empty")
    with pytest.raises(AlignloopError, match="^dataset 'empty' is empty"):
        train_model("dpo", empty, tiny_model_dir, base_model_id="b")
    with pytest.raises(AlignloopError, match="^base model .*missing.* not found"):
        train_model("dpo", prefs, tmp_path / "missing", base_model_id="b")


def test_short_run_computes_reference_only_for_the_rows_its_steps_see(tmp_path, tiny_model_dir, monkeypatch):  # noqa: F811
    import numpy as np

    snap = make_snapshot(tmp_path / "snap", "pairwise")  # 8 train rows, 4 held-out
    calls = []
    real = reference.compute_logps

    def recording(model, features, collate, *args):
        out = real(model, features, collate, *args)
        calls.append({f.row: o for f, o in zip(features, out, strict=True)})
        return out

    monkeypatch.setattr("alignloop.trainers.run.compute_logps", recording)
    one_step = C.PreferenceConfig(train=small_train(tmp_path / "a", max_steps=1))  # 1 step x 2 rows: under half
    short = train_model("dpo", snap, tiny_model_dir, one_step, base_model_id="base", cache_dir=tmp_path / "cache")
    # the held-out split (cached), then the step's 2 train rows and the next batch's (the data loader reads one
    # batch ahead): 4 of 8
    assert [len(c) for c in calls] == [4, 2, 2]
    assert short.run.meta["reference_rows_per_batch"] == 4 and short.run.meta["steps"] == 1
    assert [a.inputs["split"] for a in short.artifacts] == ["test"]  # a partial train split is not cached
    full = train_model("dpo", snap, tiny_model_dir, C.PreferenceConfig(train=small_train(tmp_path / "b")),
                       base_model_id="base", cache_dir=tmp_path / "cache")  # 2 steps x 2 rows: half, precomputed
    assert [len(c) for c in calls] == [4, 2, 2, 8] and "reference_rows_per_batch" not in full.run.meta
    for row, logps in (calls[1] | calls[2]).items():  # the rows computed per batch match the pass over every row
        np.testing.assert_allclose(logps, calls[3][row], atol=1e-4)


def test_snapshot_kind_reads_no_rows_and_names_what_is_wrong(tmp_path):
    import json

    from alignloop.trainers.snapshot import snapshot_kind

    prefs = make_snapshot(tmp_path / "prefs", "pairwise", name="prefs")
    assert snapshot_kind(prefs) == ("prefs", "pairwise")
    (prefs / "manifest.json").unlink()  # no manifest: the kind comes from the train split's columns
    assert snapshot_kind(prefs) == ("prefs", "pairwise")
    (prefs / "manifest.json").write_text(json.dumps({"kind": "binary"}))
    with pytest.raises(AlignloopError, match=r"train\.parquet: binary snapshot lacks column\(s\) completion, completion_id, label$"):
        snapshot_kind(prefs)
    (prefs / "manifest.json").write_text(json.dumps({"kind": "triples"}))
    with pytest.raises(AlignloopError, match=r"manifest\.json: unknown dataset kind 'triples'; known: pairwise"):
        snapshot_kind(prefs)
    with pytest.raises(AlignloopError, match="^dataset snapshot .*missing not found$"):
        snapshot_kind(tmp_path / "missing")
    (tmp_path / "bare").mkdir()
    with pytest.raises(AlignloopError, match="^dataset snapshot .*bare has no train.parquet$"):
        snapshot_kind(tmp_path / "bare")


def test_resumed_run_with_changed_config_is_refused(tmp_path, tiny_model_dir):  # noqa: F811
    snap = make_snapshot(tmp_path / "snap", "sft")
    train_model("sft", snap, tiny_model_dir, C.SFTConfig(train=small_train(tmp_path)), base_model_id="b")
    with pytest.raises(AlignloopError, match=r"config differs in train\.lr;"):
        train_model("sft", snap, tiny_model_dir, C.SFTConfig(train=small_train(tmp_path, lr=0.5)), base_model_id="b")


def test_finished_run_keeps_no_checkpoint_and_reruns_from_its_records(tmp_path, tiny_model_dir, monkeypatch):  # noqa: F811
    snap = make_snapshot(tmp_path / "snap", "pairwise")
    cfg = C.PreferenceConfig(train=small_train(tmp_path))
    first = train_model("dpo", snap, tiny_model_dir, cfg, base_model_id="base", cache_dir=tmp_path / "cache")
    out = tmp_path / "run"
    assert not (out / "checkpoints").exists()  # model + run.json describe the finished run; no optimizer state
    assert {p.name for p in out.iterdir()} >= {"config.json", "model", "run.json"}
    weights = _weights(first.model_dir)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("alignloop.trainers.run.load_model", no_training)
    again = train_model("dpo", snap, tiny_model_dir, cfg, base_model_id="base", cache_dir=tmp_path / "cache")
    assert again.run == first.run and again.model == first.model and again.metrics == first.metrics
    assert again.evaluations == first.evaluations and again.artifacts == first.artifacts
    assert again.model_dir == first.model_dir and again.plot == first.plot
    assert again.reused and not first.reused
    assert all(torch.equal(weights[k], v) for k, v in _weights(again.model_dir).items())
    # a run folder whose model was removed is not taken for finished: it trains again
    shutil.rmtree(out / "model")
    monkeypatch.undo()
    third = train_model("dpo", snap, tiny_model_dir, cfg, base_model_id="base", cache_dir=tmp_path / "cache")
    assert third.run.id == first.run.id and (out / "model" / "config.json").is_file()


def test_a_new_reward_head_loads_without_transformers_report_but_a_missing_backbone_is_refused(tmp_path, caplog,
                                                                                             tiny_model_dir):  # noqa: F811
    import logging

    from safetensors.torch import save_file

    from alignloop.trainers.loading import load_model

    with caplog.at_level(logging.INFO):
        model = load_model(tiny_model_dir, "reward")
    assert model.score.weight.shape[0] == 1  # the head is new, and meant to be: no report about it
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage() or "not sharded" in r.getMessage()]
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    lost = next(k for k in weights if ".layers.0." in k)
    save_file({k: v for k, v in weights.items() if k != lost}, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(AlignloopError, match=rf"backbone weights missing from the checkpoint \(e.g. {lost}\)"):
        load_model(broken, "reward")


def test_a_reward_model_judge_reads_the_input_its_trainer_trained_on(tmp_path, tiny_model_dir):  # noqa: F811
    import json

    from transformers import AutoModelForSequenceClassification

    from alignloop.pipelines.judges.config import ResponseItem
    from alignloop.pipelines.judges.reward_model import RewardModelScorer
    from alignloop.trainers.loading import load_tokenizer
    from alignloop.trainers.tokenize import Encoder
    from tests.fixtures_trainers import rows_for

    train = small_train(tmp_path)
    result = train_model("reward", make_snapshot(tmp_path / "snap", "pairwise"), tiny_model_dir,
                         C.RewardConfig(train=train), base_model_id="base", cache_dir=tmp_path / "cache")
    enc = Encoder(load_tokenizer(result.model_dir), train.max_length, train.max_prompt_length)
    talk = [{"role": "user", "content": "hello " * 20}, {"role": "assistant", "content": "hi"},
            {"role": "user", "content": "and now?"}]  # several turns, longer than the prompt budget
    rows = [*rows_for("pairwise", 4, "test"), {"prompt": json.dumps(talk), "prompt_text": "flat", "chosen": "yes " * 40}]
    items = [ResponseItem(f"r{i}", f"p{i}", r["prompt_text"], r["chosen"], messages=r["prompt"])
             for i, r in enumerate(rows)]
    trained_on = [enc.completion(enc.prompt_ids(r["prompt"], r["prompt_text"]), r["chosen"]).input_ids for r in rows]
    scorer = RewardModelScorer.load(str(result.model_dir), batch_size=3)  # its lengths come with the model
    assert (scorer.max_length, scorer.max_prompt_length) == (train.max_length, train.max_prompt_length) != (512, 256)
    assert [scorer.encode(it) for it in items] == trained_on
    assert enc.counts.prompts_truncated == 1 and enc.counts.completions_truncated == 1  # both rules exercised
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    with torch.inference_mode():
        alone = [float(model(input_ids=torch.tensor([ids])).logits[0, 0]) for ids in trained_on]
    assert scorer.score(items) == pytest.approx(alone, abs=1e-4)  # batched with padding, read where training read
    from alignloop.pipelines.judges.run import build_judge

    with pytest.raises(AlignloopError, match=r"rm:\S+ scores whole responses; --prm-aggregate \(prm_aggregate\) is "
                                             r"for a process reward model"):
        build_judge("rating", f"rm:{result.model_dir}", prm_aggregate="min")


def test_a_process_reward_model_judge_reads_each_step_where_its_trainer_put_the_label(tmp_path, tiny_model_dir):  # noqa: F811
    from transformers import AutoModelForTokenClassification

    from alignloop.pipelines.judges.config import ResponseItem
    from alignloop.pipelines.judges.reward_model import RewardModelJudge, StepRewardScorer
    from alignloop.trainers.loading import load_tokenizer
    from alignloop.trainers.tokenize import Encoder
    from tests.fixtures_trainers import rows_for

    train = small_train(tmp_path)
    result = train_model("prm", make_snapshot(tmp_path / "snap", "steps"), tiny_model_dir,
                         C.PRMConfig(train=train, step_separator=" ;\n"), base_model_id="base",
                         cache_dir=tmp_path / "cache")
    judge = RewardModelJudge.load(str(result.model_dir))  # told apart from a reward model by its head
    assert isinstance(judge.scorer, StepRewardScorer) and judge.prm == "product"
    assert (judge.scorer.separator, judge.scorer.max_length) == (" ;\n", train.max_length)  # saved with the model
    enc = Encoder(load_tokenizer(result.model_dir), train.max_length, train.max_prompt_length)
    rows = rows_for("steps", 3, "test")
    items = [ResponseItem(f"r{i}", f"p{i}", r["prompt_text"], "\n".join(r["steps"]), steps=tuple(r["steps"]),
                          messages=r["prompt"]) for i, r in enumerate(rows)]
    model = AutoModelForTokenClassification.from_pretrained(result.model_dir).eval()
    expected = []
    for r, it in zip(rows, items):
        trained = enc.steps(enc.prompt_ids(r["prompt"], r["prompt_text"]), list(r["steps"]), list(r["labels"]), " ;\n")
        ids, ends = judge.scorer.step_ends(it)
        assert ids == trained.input_ids and ends == [k for k, lab in enumerate(trained.labels) if lab != -100]
        with torch.inference_mode():
            probs = model(input_ids=torch.tensor([ids])).logits[0, ends].softmax(-1)
        expected.append([float(1 - p[0]) for p in probs])  # P(no error): good or neutral, of three classes
    too_long = ResponseItem("r9", "p9", "q", "x", steps=("word " * 200,), messages=rows[0]["prompt"])
    ratings = judge.judge_items([*items, too_long], "r1")
    for rating, probs in zip(ratings, expected):
        assert rating.meta["step_probs"] == pytest.approx(probs, abs=1e-5) and len(probs) == 3
        assert rating.score == pytest.approx(math.prod(probs), abs=1e-5) and rating.aspect == "prm"
    assert ratings[0].judge.endswith(":prm-product@v2")
    assert ratings[-1].score is None and ratings[-1].meta["step_probs"] == []  # no step fits: no score
    assert RewardModelJudge.load(str(result.model_dir), prm="min").judge_items(items, "r1")[0].score == \
        pytest.approx(min(expected[0]), abs=1e-5)
    from alignloop.pipelines.judges.run import build_judge

    assert build_judge("rating", f"rm:{result.model_dir}", prm_aggregate="min").judge.endswith(":prm-min@v2")
    with pytest.raises(AlignloopError, match=r"process reward model \('rm:FOLDER'\), not judge 'verifier:final_answer'"):
        build_judge("rating", "verifier:final_answer", prm_aggregate="min")


def test_a_process_reward_model_labels_steps_that_build_a_step_dataset(tmp_path, tiny_model_dir):  # noqa: F811
    import json

    from transformers import AutoModelForTokenClassification

    from alignloop.pipelines.datasets.build import build
    from alignloop.pipelines.datasets.config import parse_options
    from alignloop.pipelines.judges.reward_model import step_label
    from alignloop.pipelines.judges.run import JudgeRequest, build_judge, execute, select_items, store
    from alignloop.warehouse import db
    from alignloop.warehouse.records import Prompt, Response

    assert [step_label(p) for p in ([0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.6, 0.4], [0.5, 0.5])] == \
        [0, 1, -1, -1, 1]
    prm = train_model("prm", make_snapshot(tmp_path / "snap", "steps"), tiny_model_dir,
                      C.PRMConfig(train=small_train(tmp_path)), base_model_id="base",
                      cache_dir=tmp_path / "cache").model_dir
    with db.connect(":memory:") as con:
        db.ensure_round(con, "r1")
        p = Prompt.create([{"role": "user", "content": "What is 2 + 3?"}], "test")
        rs = [Response.sampled(p.id, "m", "r1", text, {}, 0, k)
              for k, text in enumerate(["2 + 3 = 5\nSo 5.", "2 + 3 = 6\nSo 6.\nDone."])]
        db.ingest(con, "prompts", [p])
        db.ingest(con, "responses", rs)
        judge = build_judge("steps", f"rm:{prm}")
        items, _ = select_items(con, JudgeRequest("steps", "r1"), judge)
        assert store(con, execute(judge, "steps", items, "r1")) == {"step_labels": 5}
        model = AutoModelForTokenClassification.from_pretrained(prm).eval()
        expected = {}
        for it in items:  # each step labelled by the class its trainer's head finds most likely at the step's end
            ids, ends = judge.scorer.step_ends(it)
            with torch.inference_mode():
                probs = model(input_ids=torch.tensor([ids])).logits[0, ends].softmax(-1)
            expected[it.id] = [int(x.argmax()) - 1 for x in probs]
        got = con.execute("SELECT response_id, list(label ORDER BY step_index), list(DISTINCT source), "
                          "list(meta->>'$.probs' ORDER BY step_index) FROM step_labels GROUP BY 1").fetchall()
        assert {r: labels for r, labels, _, _ in got} == expected
        assert all(src == ["reward_model"] and all(len(json.loads(x)) == 3 for x in probs) for _, _, src, probs in got)
        t = build(con, parse_options("steps", {"decontaminate": False, "sources": "reward_model"})).table
        assert dict(zip(t["completion_id"].to_pylist(), t["labels"].to_pylist())) == expected
        assert sorted(map(len, t["steps"].to_pylist())) == [2, 3]
        assert select_items(con, JudgeRequest("steps", "r1"), judge) == ([], 2)  # judged once
    with pytest.raises(AlignloopError, match=r"combines step scores into one rating"):
        build_judge("steps", f"rm:{prm}", prm_aggregate="min")
    orm = tmp_path / "orm"
    orm.mkdir()
    config = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    (orm / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"],
                                                 "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}))
    with pytest.raises(AlignloopError, match=r"scores whole responses; `judge steps` needs a process reward model"):
        build_judge("steps", f"rm:{orm}")
    with pytest.raises(AlignloopError, match=r"not `judge pairwise`"):
        build_judge("pairwise", f"rm:{prm}")


def test_soft_labels_reach_the_losses_that_take_them(tmp_path, tiny_model_dir):  # noqa: F811
    """Pairs that are all ties (prob 0.5) teach a reward model no margin; trained as hard preferences they do."""
    import pyarrow as pa

    from alignloop.trainers.snapshot import write_snapshot_dir
    from alignloop.warehouse.snapshots import SCHEMAS
    from tests.fixtures_trainers import rows_for

    ties = [{**r, "prob": 0.5} for r in rows_for("pairwise", 8, "train")]
    snap = write_snapshot_dir(tmp_path / "ties", "pairwise", pa.Table.from_pylist(ties, schema=SCHEMAS["pairwise"]),
                              pa.Table.from_pylist(rows_for("pairwise", 2, "test"), schema=SCHEMAS["pairwise"]),
                              name="ties")

    def last_margin(result) -> float:
        return [m.value for m in result.metrics if m.name == "rewards/margins"][-1]

    runs = {soft: train_model("reward", snap, tiny_model_dir,
                              C.RewardConfig(train=small_train(tmp_path / str(soft), lr=3e-3, max_steps=12,
                                                               batch_size=4), soft_labels=soft),
                              base_model_id="base") for soft in (True, False)}
    assert runs[True].run.meta["soft_labels"] == {"pairs": 8, "used": True}
    assert runs[False].run.meta["soft_labels"] == {"pairs": 8, "used": False}
    assert abs(last_margin(runs[True])) < 0.25 < last_margin(runs[False])
    simpo = train_model("dpo", snap, tiny_model_dir, C.PreferenceConfig(train=small_train(tmp_path / "simpo"),
                                                                         loss="simpo"), base_model_id="base")
    assert simpo.run.meta["soft_labels"] == {"pairs": 8, "used": False}  # SimPO has no soft form: counted


def test_weak_to_strong_confidence_warms_up_and_reaches_the_reward_loss(tmp_path, tiny_model_dir, monkeypatch):  # noqa: F811
    from types import SimpleNamespace

    from alignloop.trainers import objectives as O
    from alignloop.trainers.losses import bradley_terry_loss

    conf = O.Confidence(weight=0.5, warmup=0.5)
    assert [O.Confidence(0.5, 0.5, p).alpha for p in (0.0, 0.25, 0.5, 0.9)] == [0.0, 0.25, 0.5, 0.5]
    scores = torch.tensor([1.0, -1.0, 0.0, 0.0])  # chosen rows 0-1, rejected 2-3: margins +1 and -1
    model = lambda input_ids, **kw: SimpleNamespace(logits=scores[input_ids[:, 0]][:, None])
    batch = {"rows": torch.tensor([0, 1]), "input_ids": torch.tensor([[0], [1], [2], [3]]),
             "attention_mask": torch.ones(4, 1), "margin": torch.zeros(2), "prob": torch.ones(2)}
    objective = O.RewardPairObjective(soft_labels=True, confidence=conf)
    assert objective(model, batch)[0] == pytest.approx(bradley_terry_loss(scores[:2], scores[2:]).mean())  # cold
    conf.progress = 1.0
    # warm: the pair the model ranks the other way gets target (1 - 0.5) * 1 + 0.5 * 0 = 0.5
    expected = bradley_terry_loss(scores[:2], scores[2:], label=torch.tensor([1.0, 0.5])).mean()
    assert objective(model, batch)[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="confidence_weight needs a loss with a soft form"):
        C.PreferenceConfig(loss="simpo", confidence_weight=0.5)
    with pytest.raises(ValueError, match=r"confidence_weight must be in \[0, 1\)"):
        C.RewardConfig(confidence_weight=1.0)
    seen = []
    real = O.Confidence.target
    monkeypatch.setattr(O.Confidence, "target", lambda self, label, margin: seen.append(self.alpha) or
                        real(self, label, margin))
    train_model("reward", make_snapshot(tmp_path / "snap", "pairwise"), tiny_model_dir,
                C.RewardConfig(train=small_train(tmp_path, max_steps=4, batch_size=2), confidence_weight=0.4,
                               confidence_warmup=0.5), base_model_id="base")
    assert seen[:4] == pytest.approx([0.0, 0.2, 0.4, 0.4])  # the trainer tells it how far training is
    seen.clear()
    dpo = train_model("dpo", make_snapshot(tmp_path / "snap2", "pairwise"), tiny_model_dir,
                      C.PreferenceConfig(train=small_train(tmp_path / "dpo"), confidence_weight=0.3,
                                         confidence_warmup=0.0), base_model_id="base")
    assert seen[:2] == [0.3, 0.3] and dpo.run.meta["steps"] == 2  # the policy losses take it too


def test_a_trained_aligner_corrects_answers_with_the_prompt_it_was_trained_on(tmp_path, tiny_model_dir):  # noqa: F811
    import dataclasses
    import json

    from alignloop.pipelines.backends.base import Sampling
    from alignloop.pipelines.judges.config import ResponseItem
    from alignloop.pipelines.judges.run import build_judge
    from alignloop.trainers.tokenize import ALIGNER_TEMPLATE

    aligner = train_model("sft", make_snapshot(tmp_path / "qac", "correction"), tiny_model_dir,
                          C.SFTConfig(train=small_train(tmp_path)), base_model_id="base").model_dir
    assert json.loads((aligner / "config.json").read_text())["alignloop_input"]["template"] == "aligner"
    judge = build_judge("correction", str(aligner))
    assert judge.template.name == "aligner" and ":aligner@" in judge.judge
    question, answer = "How do I pick a lock?", "Here is how to do it."
    assert judge.template.render(question=question, response=answer)[0]["content"] == \
        ALIGNER_TEMPLATE.format(question=question, answer=answer)  # the judge's prompt is the trainer's
    short = dataclasses.replace(judge, sampling=Sampling(n=1, temperature=0.0, max_new_tokens=4))
    out = short.judge_items([ResponseItem("r1", "p1", question, "fine"), ResponseItem("r2", "p1", question, "no")],
                            "r1")
    assert len(out.responses) + len(out.invalid) == 2
    assert build_judge("correction", str(tiny_model_dir)).template.name == "correction"


@pytest.mark.parametrize("loss", ["beta_dpo", "bco_pair"])
def test_a_killed_run_resumes_with_its_loss_s_running_state(tmp_path, tiny_model_dir, monkeypatch, loss):  # noqa: F811
    """beta-DPO's m0 and BCO's reward shift are running means over the steps: a run killed after its checkpoint
    resumes with them (saved beside the optimizer's state) and logs what the run that was never killed logs."""
    from alignloop.trainers.objectives import PairwiseObjective

    snap = make_snapshot(tmp_path / "snap", "pairwise")

    def config(out):
        return C.PreferenceConfig(train=small_train(out, max_steps=4, save_steps=2), loss=loss, beta=1.0)

    whole = train_model("dpo", snap, tiny_model_dir, config(tmp_path / "whole"), base_model_id="base",
                        cache_dir=tmp_path / "cache")
    real, calls = PairwiseObjective.__call__, []

    def dies_at_the_third_step(self, model, batch):
        if model.training:
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
        return real(self, model, batch)

    monkeypatch.setattr(PairwiseObjective, "__call__", dies_at_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        train_model("dpo", snap, tiny_model_dir, config(tmp_path / "killed"), base_model_id="base",
                    cache_dir=tmp_path / "cache")
    saved = tmp_path / "killed" / "run" / "checkpoints" / "checkpoint-2" / "loss_state.pt"
    assert saved.is_file() and set(torch.load(saved)) == {"m0" if loss == "beta_dpo" else "delta"}
    monkeypatch.setattr(PairwiseObjective, "__call__", real)
    resumed = train_model("dpo", snap, tiny_model_dir, config(tmp_path / "killed"), base_model_id="base",
                          cache_dir=tmp_path / "cache")
    assert resumed.run.meta["resumed"] and not whole.run.meta["resumed"]
    later = [(m.step, m.name, m.value) for m in resumed.metrics  # the steps after the checkpoint (not the summary)
             if m.step > 2 and not m.name.startswith(("train_", "total_flos"))]
    expected = {(m.step, m.name): m.value for m in whole.metrics}
    assert later and [v for _, _, v in later] == pytest.approx([expected[s, n] for s, n, _ in later], rel=1e-4)
