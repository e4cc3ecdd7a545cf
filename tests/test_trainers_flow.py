"""The train flow writes runs, metrics, models, evaluations and artifacts; the CLI lists every method."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignloop.trainers import config as C
from tests.fixtures_trainers import make_snapshot, new_warehouse, small_train, tiny_model_dir  # noqa: F401

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def test_logged_progress_logs_each_phase_at_its_start_tenths_and_end():
    import logging

    from alignloop.flows.train import logged_progress

    class Kept(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    logger, kept = logging.getLogger("alignloop.test.progress"), Kept()
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    report = logged_progress(logger, parts=4)
    for done in range(3, 21, 3):  # reference rows 3, 6, ..., 18, then the end (20)
        report("reference", done, 20, {})
    report("reference", 20, 20, {})
    for step in (1, 2, 3, 4):
        report("train", step, 4, {"loss": 0.7 - step / 100, "learning_rate": 1e-5})
    report("train", 4, 4, {"train_runtime": 9.0})  # the Trainer's closing log repeats the last step
    assert [r.getMessage() for r in kept.records] == [
        "reference log-probs (rows) 3/20", "reference log-probs (rows) 9/20", "reference log-probs (rows) 15/20",
        "reference log-probs (rows) 20/20",
        "training steps 1/4 (loss=0.69)", "training steps 2/4 (loss=0.68)", "training steps 3/4 (loss=0.67)",
        "training steps 4/4 (loss=0.66)"]


def test_train_flow_records_everything(tmp_path, tiny_model_dir, prefect_harness, monkeypatch):  # noqa: F811
    from alignloop.flows.train import TrainParams, train
    from alignloop.warehouse import db

    snap = make_snapshot(tmp_path / "snap", "pairwise")
    cfg_file = tmp_path / "cfg.json"
    import json

    cfg_file.write_text(json.dumps(C.to_dict(C.PreferenceConfig(train=small_train(tmp_path)))))
    warehouse = new_warehouse(tmp_path)
    params = TrainParams(method="dpo", dataset=str(snap), base=str(tiny_model_dir), config_file=str(cfg_file),
                         loss="ipo", max_steps=2, db=warehouse, round="r1")
    run_log: list[str] = []
    logger = logging.getLogger("alignloop.test.train_task")
    logger.setLevel(logging.INFO)
    monkeypatch.setattr(logger, "info", lambda msg, *args: run_log.append(msg % args))
    monkeypatch.setattr("alignloop.flows.train.get_run_logger", lambda: logger)
    summary = train.fn(params)
    assert summary["written"]["training_runs"] == 1 and summary["written"]["models"] == 1
    # a run without a progress bar (the UI, a round) reports its phases to the run's log
    assert run_log[0] == "reference log-probs (rows) 2/12" and "reference log-probs (rows) 12/12" in run_log
    assert any(m.startswith("training steps 2/2 (loss=") for m in run_log) and run_log[-1] == "held-out evaluation (rows) 4/4"
    assert summary["written"]["artifacts"] == 2 and summary["written"]["training_metrics"] > 4
    with db.connect(warehouse) as con:
        [(method, cfg, status, out_model)] = con.execute(
            "SELECT method, config, status, output_model_id FROM training_runs").fetchall()
        assert (method, json.loads(cfg)["loss"], status) == ("dpo", "ipo", "finished")
        [(parent, out_uri)] = con.execute("SELECT parent_id, uri FROM models WHERE id = ?", [out_model]).fetchall()
        [(base_uri,)] = con.execute("SELECT uri FROM models WHERE id = ?", [parent]).fetchall()
        assert base_uri == str(tiny_model_dir)
        [(steps,)] = con.execute("SELECT count(DISTINCT step) FROM training_metrics WHERE name = 'loss'").fetchall()
        assert steps == 2
    # the model folder's card: the run, its loss, dataset and held-out figures; where the run wrote is left out
    card = (Path(out_uri) / "README.md").read_text()
    assert "tags:\n- \"alignloop\"\n- \"dpo\"\n- \"ipo\"\n- \"policy\"\n" in card
    assert f"| run | `{summary['run_id']}` |" in card and "| method | dpo (loss ipo) |" in card
    assert "Trained by alignloop: pairwise preference optimisation.\n" in card  # the catalog's line, no CLI hints
    assert f"| base model | `{tiny_model_dir}`, warehouse id `{parent}` |" in card
    assert "| reference model | the base model |" in card
    assert "## Held-out evaluation" in card and "| eval/rewards/accuracies | " in card
    assert '"max_steps": 2' in card and "output_dir" not in card and str(tmp_path) not in card
    again = train.fn(params.model_copy(update={"output_dir": str(tmp_path / "run2")}))
    # the same recipe in another folder is another run with its own record and model; the reference
    # log-probs (keyed by what they are computed from) are reused
    assert again["run_id"] != summary["run_id"] and again["model_id"] != summary["model_id"]
    assert again["written"]["artifacts"] == 0 and again["written"]["training_runs"] == 1
    with db.connect(warehouse) as con:
        runs = dict(con.execute("SELECT id, output_model_id FROM training_runs").fetchall())
        models = dict(con.execute("SELECT id, training_run_id FROM models WHERE training_run_id IS NOT NULL").fetchall())
    assert runs == {summary["run_id"]: summary["model_id"], again["run_id"]: again["model_id"]}
    assert models == {summary["model_id"]: summary["run_id"], again["model_id"]: again["run_id"]}
    assert not summary["reused"] and not again["reused"]
    # the same run in the same folder: finished, so its stored records come back and nothing new is written
    same = train.fn(params)
    assert same["reused"] and same["run_id"] == summary["run_id"] and same["model_id"] == summary["model_id"]
    assert not any(same["written"].values())


def test_cli_help_lists_every_method():
    from alignloop.flows.cli import app
    from alignloop.trainers.methods import METHODS

    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0
    for name in METHODS:
        assert f"\n {name} " in out.output or f" {name} " in out.output
    for option in ("--dataset", "--base", "--loss", "--max-steps", "--epochs", "--batch-size", "--lr",
                   "--max-length", "--lora", "--config", "--reward-model"):
        assert option in out.output


def test_the_cli_catalog_lists_the_registry_methods_and_kinds():
    from alignloop.trainers.catalog import CATALOG
    from alignloop.trainers.methods import METHODS

    assert {n: tuple(m.layouts) for n, m in METHODS.items()} == {n: c.kinds for n, c in CATALOG.items()}
    assert all(m.help == CATALOG[n].help for n, m in METHODS.items())


def test_cli_wrong_dataset_kind_is_one_line(tmp_path, tiny_model_dir):  # noqa: F811
    from alignloop.flows.cli import app

    snap = make_snapshot(tmp_path / "prefs", "pairwise", name="prefs")
    out = CliRunner().invoke(app, ["train", "kto", "--dataset", str(snap), "--base", str(tiny_model_dir),
                                   "--db", new_warehouse(tmp_path)], env={"COLUMNS": "200"})
    assert out.exit_code == 2
    assert "method kto needs a binary dataset; 'prefs' is pairwise" in out.output


def test_an_unknown_dataset_name_lists_the_datasets_the_warehouse_holds(tmp_path):
    from alignloop.flows.train import resolve_dataset
    from alignloop.warehouse import db
    from alignloop.warehouse.errors import AlignloopError, InputError

    path = new_warehouse(tmp_path)
    with pytest.raises(AlignloopError, match=r"dataset 'prefs' is not in the warehouse .*; none built yet"):
        resolve_dataset("prefs", path)
    with db.connect(path) as con:
        for version in (1, 2):
            con.execute("INSERT INTO datasets (id, name, version, kind, params, content_hash, path) "
                        "VALUES ($id, 'prefs', $v, 'pairwise', '{}', 'h', $path)",
                        {"id": f"prefs@v{version}", "v": version, "path": str(tmp_path / f"v{version}")})
    assert resolve_dataset("prefs", path) == (tmp_path / "v2", "prefs@v2")
    assert resolve_dataset("prefs@v1", path) == (tmp_path / "v1", "prefs@v1")
    with pytest.raises(AlignloopError, match=r"dataset 'pref' is not in the warehouse .*; datasets there: "
                                             r"prefs \(pairwise, v1, v2\)$"):
        resolve_dataset("pref", path)
    with pytest.raises(AlignloopError, match="'prefs@v3' is not in the warehouse"):
        resolve_dataset("prefs@v3", path)
    with pytest.raises(InputError, match="bad dataset version 'x' in prefs@x; use NAME@vN"):
        resolve_dataset("prefs@x", path)


def test_cli_train_runs_quietly_then_reuses_the_finished_run(tmp_path, tiny_model_dir, prefect_harness, capfd):  # noqa: F811
    from alignloop.flows.cli import app

    snap = make_snapshot(tmp_path / "prefs", "pairwise", name="prefs")
    args = ["train", "dpo", "--dataset", str(snap), "--base", str(tiny_model_dir), "--max-steps", "2",
            "--output-dir", str(tmp_path / "run"), "--db", new_warehouse(tmp_path)]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    again = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    logged = capfd.readouterr()
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert "already finished" not in first.output and "2 steps" in first.output
    assert re.search(r"examples=4[,;]", first.output.replace("\n", ""))  # a count, not 4.000
    # a bar for each phase: the reference pass over both splits (8 + 4 rows), the steps, the held-out rows
    for bar in (r"reference log-probs +━+ 12/12 +rows", r"training dpo +━+ 2/2 +steps loss=", r"held-out evaluation +━+ 4/4 +rows"):
        assert re.search(bar, first.output), first.output
    assert "Loading weights" not in first.output  # transformers' own bars are off: the phases say it
    assert "reference log-probs" not in again.output and "training dpo" not in again.output
    assert "(already finished in this folder: stored records, nothing trained)" in again.output
    # no Prefect traceback for an unhashable task input, no warning about logs outside a flow run
    for noise in ("computing cache key", "without a flow run id", "Traceback"):
        assert noise not in logged.out + logged.err + first.output + again.output


def test_cli_train_on_the_wrong_kind_of_dataset_is_one_line(tmp_path, tiny_model_dir, prefect_harness, capfd,  # noqa: F811
                                                            monkeypatch):
    import alignloop.flows.train as flows_train
    from alignloop.flows.cli import app

    started = []
    monkeypatch.setattr(flows_train, "train_task", lambda *a, **k: started.append(a))  # the flow refuses first
    snap = make_snapshot(tmp_path / "kto", "binary", name="kto")
    res = CliRunner().invoke(app, ["train", "dpo", "--dataset", str(snap), "--base", str(tiny_model_dir), "--db",
                                   new_warehouse(tmp_path)], env={"COLUMNS": "400"})
    logged = capfd.readouterr()
    assert res.exit_code == 2 and "error: method dpo needs a pairwise dataset; 'kto' is binary" in res.output
    # the failed task run's traceback and its "Finished in state Failed" lines are not printed around it
    assert "Traceback" not in logged.out + logged.err + res.output
    assert "Failed" not in logged.out + logged.err + res.output
    assert started == []


def test_cli_trains_ppo_with_a_reward_model_and_refuses_it_without(tmp_path, tiny_model_dir, prefect_harness):  # noqa: F811
    from alignloop.flows.cli import app
    from alignloop.warehouse import db
    from tests.test_trainers_ppo import tiny_reward_model

    snap = make_snapshot(tmp_path / "prefs", "pairwise", name="prefs")
    path = new_warehouse(tmp_path)
    args = ["train", "ppo", "--dataset", str(snap), "--base", str(tiny_model_dir), "--max-steps", "2",
            "--max-length", "64", "--output-dir", str(tmp_path / "run"), "--db", path]
    missing = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert missing.exit_code == 2 and "method ppo needs one reward: a reward model (reward_model, --reward-model " \
        "FOLDER from `alignloop train reward`), a rule verifier (verifier, --verifier NAME) or an LLM judge " \
        "(judge_model, --judge-model MODEL)" in missing.output
    wrong = CliRunner().invoke(app, ["train", "dpo", *args[2:], "--reward-model", "rm"], env={"COLUMNS": "400"})
    assert wrong.exit_code == 2 and "method dpo has no reward_model option" in wrong.output
    rm = tiny_reward_model(tiny_model_dir, tmp_path / "rm")
    out = CliRunner().invoke(app, [*args, "--reward-model", str(rm)], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert re.search(r"training ppo +━+ 2/2 +steps loss=\S+ reward=", out.output), out.output
    assert re.search(r"held-out: reward=\S+, reference_reward=\S+, win_rate_vs_reference=", out.output), out.output
    with db.connect(path) as con:
        runs = con.execute("SELECT method, config->>'$.reward_model' FROM training_runs").fetchall()
        metrics = {r[0] for r in con.execute("SELECT DISTINCT name FROM training_metrics").fetchall()}
    assert runs == [("ppo", str(rm))] and {"reward", "kl", "policy_loss", "value_loss"} <= metrics
    # PPO-ptx: an sft snapshot's likelihood in each update; another kind of dataset, or a method without it, refused
    demos = make_snapshot(tmp_path / "demos", "sft", name="demos")
    ptx = [*args[:-3], str(tmp_path / "ptx"), "--db", path, "--reward-model", str(rm), "--ptx-coef", "0.5"]
    wrong = CliRunner().invoke(app, [*ptx, "--ptx-dataset", str(snap)], env={"COLUMNS": "400"})
    assert wrong.exit_code == 2 and "is a pairwise snapshot; PPO-ptx trains on the completions of an sft one" in \
        wrong.output, wrong.output
    out = CliRunner().invoke(app, [*ptx, "--ptx-dataset", str(demos)], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    with db.connect(path) as con:
        got = con.execute("SELECT config->>'$.ptx_coef', meta->>'$.ptx.dataset', (SELECT count(*) FROM "
                          "training_metrics m WHERE m.run_id = r.id AND name = 'ptx_loss') FROM training_runs r "
                          "WHERE meta->>'$.ptx' IS NOT NULL").fetchall()
    assert got == [("0.5", "demos", 2)]
    no_ptx = CliRunner().invoke(app, ["train", "dpo", *args[2:], "--ptx-coef", "0.5"], env={"COLUMNS": "400"})
    assert no_ptx.exit_code == 2 and "method dpo has no ptx_coef option" in no_ptx.output
    # grpo: the same options, its advantage and 4 answers per prompt from the method's defaults
    grpo = ["train", "grpo", *args[2:-3], str(tmp_path / "grpo"), "--db", path, "--reward-model", str(rm)]
    out = CliRunner().invoke(app, grpo, env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert re.search(r"training grpo +━+ 2/2 +steps loss=\S+ reward=", out.output), out.output
    with db.connect(path) as con:
        runs = con.execute("SELECT config->>'$.advantage', config->>'$.samples_per_prompt' FROM training_runs "
                           "WHERE method = 'grpo'").fetchall()
    assert runs == [("grpo", "4")]
    # a verifier instead: it reads the prompts' reference answers from the warehouse
    rlvr = [*grpo[:-2], "--verifier", "final_answer", "--max-steps", "1", "--samples-per-prompt", "2",
            "--max-new-tokens", "5", "--dynamic-sampling"]
    rlvr[rlvr.index(str(tmp_path / "grpo"))] = str(tmp_path / "rlvr")
    out = CliRunner().invoke(app, rlvr, env={"COLUMNS": "400"})
    assert out.exit_code == 2 and "none of the 8 train prompts has one in the warehouse" in out.output, out.output
    from alignloop.warehouse.records import Prompt, to_arrow
    from tests.fixtures_trainers import rows_for

    with db.connect(path) as con:
        rows = [Prompt(r["prompt_id"], json.loads(r["prompt"]), r["prompt_text"], r["prompt_id"], "test", split,
                       reference="999") for split, n in (("train", 8), ("test", 4))
                for r in rows_for("pairwise", n, split)]
        db.ingest(con, "prompts", to_arrow(rows))
    out = CliRunner().invoke(app, rlvr, env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    with db.connect(path) as con:
        got = con.execute("SELECT meta->>'$.reward', meta->>'$.steps', config->>'$.samples_per_prompt', "
                          "config->>'$.max_new_tokens', config->>'$.dynamic_sampling', meta->>'$.optimizer_steps', "
                          "(SELECT list(value ORDER BY name) FROM training_metrics m WHERE m.run_id = r.id "
                          " AND name IN ('groups_used', 'rollouts')) FROM training_runs r WHERE method = 'grpo' "
                          "AND config->>'$.verifier' = 'final_answer'").fetchall()
    # no answer of the random policy matches the reference: three rollouts (the default most) and no update
    assert got == [("verifier:final_answer", "1", "2", "5", "true", "0", [0.0, 3.0])]
    out = CliRunner().invoke(app, [*grpo[:1], "dpo", *grpo[2:-2], "--dynamic-sampling"], env={"COLUMNS": "400"})
    assert out.exit_code == 2 and "method dpo has no dynamic_sampling option" in out.output, out.output


def test_sdpo_trains_its_parts_in_turn_each_from_and_against_the_stage_before(tmp_path, tiny_model_dir,  # noqa: F811
                                                                             prefect_harness, monkeypatch):
    """sDPO: the train prompts cut by a hash into stages of near-equal size, each prompt in one; stage 2 starts from
    stage 1's model and uses it as its reference; the stages' rows are the whole train split, each once."""
    from alignloop.flows.cli import app
    from alignloop.warehouse import db
    from alignloop.warehouse.ids import hash_parts

    ids = [f"p{i}" for i in range(10)]
    parts = hash_parts(ids, 3)
    assert sorted(parts) == ids and sorted(list(parts.values()).count(k) for k in range(3)) == [3, 3, 4]
    assert hash_parts(reversed(ids + ids), 3) == parts  # by prompt, whatever the order or repeats
    monkeypatch.setenv("ALIGNLOOP_CACHE", str(tmp_path / "cache"))  # reference log-probs of this test's runs only
    snap = make_snapshot(tmp_path / "prefs", "pairwise", name="prefs")
    path = new_warehouse(tmp_path)
    args = ["train", "dpo", "--dataset", str(snap), "--base", str(tiny_model_dir), "--max-steps", "1", "--stages",
            "2", "--output-dir", str(tmp_path / "sdpo"), "--db", path]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert first.exit_code == 0, first.output
    assert "sDPO stage 1/2: run " in first.output and "sDPO stage 2/2: run " in first.output
    with db.connect(path) as con:
        runs = con.execute("SELECT config->>'$.stage', base_model_id, reference_model_id, output_model_id, "
                           "meta->>'$.truncation.train.rows', config->>'$.train.output_dir' FROM training_runs "
                           "ORDER BY config->>'$.stage'").fetchall()
    (s1, base1, ref1, out1, rows1, dir1), (s2, base2, ref2, out2, rows2, dir2) = runs
    assert (s1, s2) == ("0", "1") and base1 == ref1 and (base2, ref2) == (out1, out1) and out2 != out1
    halves = list(hash_parts([f"p-train-{i}" for i in range(8)], 2).values())
    assert (int(rows1), int(rows2)) == (halves.count(0), halves.count(1)) and int(rows1) + int(rows2) == 8
    assert (dir1, dir2) == (str(tmp_path / "sdpo" / "stage-1"), str(tmp_path / "sdpo" / "stage-2"))
    again = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert again.exit_code == 0 and again.output.count("(already finished in this folder") == 2, again.output
    # stage 1's reference log-probs (of its part's rows, by the base model) are cached apart from the whole split's:
    # plain DPO from the same base computes all 8 train rows (the 4 test rows are the same and read from the cache)
    plain = [*args[:args.index("--stages")], "--output-dir", str(tmp_path / "plain"), "--db", path]
    whole = CliRunner().invoke(app, plain, env={"COLUMNS": "400"})
    assert whole.exit_code == 0 and re.search(r"reference log-probs +━+ 8/8 +rows", whole.output), whole.output
    # easy first: here every pair is as clear as the next (prob 1, margin 1), so the parts are the hash's, yet the
    # stage's reference log-probs are cached under its order, never read from the hash order's stage
    easy = [*args[:args.index("--output-dir")], "--stage-order", "easy_first", "--output-dir",
            str(tmp_path / "easy"), "--db", path]
    ordered = CliRunner().invoke(app, easy, env={"COLUMNS": "400"})
    assert ordered.exit_code == 0, ordered.output
    hashed, eased = (set(json.loads((tmp_path / d / "stage-1" / "run.json").read_text())["reference_artifacts"])
                     for d in ("sdpo", "easy"))
    assert len(hashed) == len(eased) == 2 and len(hashed & eased) == 1  # the test split's shared, the train part's not
    kto = CliRunner().invoke(app, ["train", "kto", *args[2:]], env={"COLUMNS": "400"})
    assert kto.exit_code == 2 and "method kto has no stages option" in kto.output, kto.output
    many = [*args[:args.index("--stages") + 1], "9", "--output-dir", str(tmp_path / "many"), "--db", path]
    refused = CliRunner().invoke(app, many, env={"COLUMNS": "400"})
    assert refused.exit_code == 2 and "sDPO with 9 stages needs at least as many train prompts; dataset " in \
        refused.output and "has 8" in refused.output, refused.output
    assert not (tmp_path / "many").exists()  # refused before any stage trained


def test_sdpo_with_a_dataset_per_stage_trains_each_in_turn_from_and_against_the_one_before(
        tmp_path, tiny_model_dir, prefect_harness, monkeypatch):  # noqa: F811
    """sDPO as the paper ran it: the whole of one dataset, then the whole of the next, from and against stage 1's
    model; refused with the cut of one dataset into stages, for other methods and for another kind of dataset."""
    from alignloop.flows.cli import app
    from alignloop.warehouse import db

    monkeypatch.setenv("ALIGNLOOP_CACHE", str(tmp_path / "cache"))
    first = make_snapshot(tmp_path / "easy", "pairwise", n_train=8, name="easy")
    second = make_snapshot(tmp_path / "hard", "pairwise", n_train=5, name="hard")
    path = new_warehouse(tmp_path)
    args = ["train", "dpo", "--dataset", str(first), "--stage-dataset", str(second), "--base", str(tiny_model_dir),
            "--max-steps", "1", "--output-dir", str(tmp_path / "sdpo"), "--db", path]
    out = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    assert f"sDPO stage 1/2 ({first}): run " in out.output and f"sDPO stage 2/2 ({second}): run " in out.output
    with db.connect(path) as con:
        runs = con.execute("SELECT config->>'$.stage', config->>'$.stages', base_model_id, reference_model_id, "
                           "output_model_id, meta->>'$.truncation.train.rows', config->>'$.train.output_dir' "
                           "FROM training_runs ORDER BY config->>'$.train.output_dir'").fetchall()
    (s1, n1, base1, ref1, out1, rows1, dir1), (s2, n2, base2, ref2, out2, rows2, dir2) = runs
    assert (s1, n1, s2, n2) == ("0", "1", "0", "1")  # each stage trains its dataset whole
    assert base1 == ref1 and (base2, ref2) == (out1, out1) and out2 != out1
    assert (rows1, rows2) == ("8", "5")
    assert (dir1, dir2) == (str(tmp_path / "sdpo" / "stage-1"), str(tmp_path / "sdpo" / "stage-2"))
    again = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert again.exit_code == 0 and again.output.count("(already finished in this folder") == 2, again.output
    for extra, method, message in ((["--stages", "2"], "dpo", "use one or the other"),
                                   (["--stage-order", "easy_first"], "dpo", "use one or the other"),
                                   ([], "kto", "method kto has no stages")):
        bad = CliRunner().invoke(app, ["train", method, *args[2:-4], *extra, "--output-dir", str(tmp_path / "x"),
                                       "--db", path], env={"COLUMNS": "400"})
        assert bad.exit_code == 2 and message in bad.output, bad.output
    other = make_snapshot(tmp_path / "thumbs", "binary", name="thumbs")
    bad = CliRunner().invoke(app, [*args[:5], str(other), *args[6:-4], "--output-dir", str(tmp_path / "x"),
                                   "--db", path], env={"COLUMNS": "400"})
    assert bad.exit_code == 2 and f"stage dataset {str(other)!r} is binary" in bad.output, bad.output
    assert not (tmp_path / "x").exists()  # every refusal came before a stage trained


def test_sdpo_easy_first_puts_the_clearest_preferences_in_stage_one():
    """sDPO's curricula: prompts ordered by the mean |prob - 0.5| of their pairs, then their mean margin; or from
    AI-labelled pairs to people's."""
    from alignloop.trainers import config as C
    from alignloop.trainers.run import _stage_rows

    probs = {"a": [1.0, 0.9], "b": [0.55], "c": [0.9], "d": [0.6, 0.6], "e": [0.1]}  # clarity .45 .05 .4 .1 .4
    margins = {"c": 2.0, "e": 1.0}
    rows = [{"prompt_id": p, "prob": q, "margin": margins.get(p)} for p, qs in probs.items() for q in qs]
    snap = type("Snap", (), {"name": "prefs"})()

    def stage(k, order="easy_first"):
        cfg = C.PreferenceConfig(stages=2, stage=k, stage_order=order)
        return sorted({r["prompt_id"] for r in _stage_rows(rows, snap, cfg)})

    # a (.45), then c and e (.4, c's margin larger) form the first 3 of 5 prompts (parts of 3 and 2: the hash cut)
    assert stage(0) == ["a", "c", "e"] and stage(1) == ["b", "d"]
    assert sorted(stage(0, "hash") + stage(1, "hash")) == sorted(probs)
    with pytest.raises(ValueError, match="stage_order must be one of hash, easy_first, ai_first, got 'hard'"):
        C.PreferenceConfig(stages=2, stage_order="hard")
    # ai_first: by the share of people's pairs; a, b AI-only, c mixed, d and e people's only; 3 + 2 by the hash cut
    sources = {"a": ["ai", "ai"], "b": ["ai"], "c": ["human", "ai"], "d": ["human", "human"], "e": ["human"]}
    rows[:] = [{"prompt_id": p, "prob": 1.0, "margin": None, "source": s} for p, ss in sources.items() for s in ss]
    assert stage(0, "ai_first") == ["a", "b", "c"] and stage(1, "ai_first") == ["d", "e"]
