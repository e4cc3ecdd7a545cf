"""The generate stage: planning, resume after an interrupted run, failures, steps, skipped prompts, CLI."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from alignloop.pipelines import generate as gen
from alignloop.pipelines.backends import Sampling
from alignloop.pipelines.backends.transformers_backend import TransformersBackend
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError
from tests.fixtures_generate import *
from tests.fixtures_generate import QUESTIONS, add_prompts


def cfg_args(**kw):
    base = {"round": "r1", "sampling": Sampling(n=2, temperature=1.0, max_new_tokens=6, seed=3), "shard_size": 4}
    return base | kw


def stored(path):
    with db.connect(path, read_only=True) as con:
        return con.execute("SELECT prompt_id, sample_index, id, text FROM responses ORDER BY 1, 2").fetchall()


def test_resume_after_interrupted_run_fills_only_the_gaps(prompt_db, tiny_backend):
    cfg, work = gen.open_run(prompt_db, tiny_backend, cfg_args())
    assert (work.selected, work.samples, len(work.shards(4))) == (10, 20, 3)
    for result in gen.run_shards(tiny_backend, work, cfg):  # killed after the first shard
        with db.connect(prompt_db) as con:
            assert gen.write_shard(con, result) == 8
        break
    cfg2, rest = gen.open_run(prompt_db, tiny_backend, cfg_args())
    assert cfg2 == cfg and (rest.already_done, rest.samples) == (8, 12)
    calls = []
    for result in gen.run_shards(tiny_backend, rest, cfg):
        calls.append(result.prompts)
        with db.connect(prompt_db) as con:
            gen.write_shard(con, result)
    assert calls == [4, 2]  # only the 6 unfinished prompts were generated
    rows = stored(prompt_db)
    assert len(rows) == 20 and len({r[2] for r in rows}) == 20
    assert {(p, i) for p, i, _, _ in rows} == {(p, i) for p in {r[0] for r in rows} for i in range(2)}
    assert all(r[2] == gen.expected_ids(r[0], cfg.model_id, cfg.sampling)[r[1]] for r in rows)
    _, done = gen.open_run(prompt_db, tiny_backend, cfg_args())
    assert done.todo == [] and done.already_done == 20


def test_same_seed_same_output_across_runs_and_shard_sizes(tmp_path, tiny_backend):
    texts = []
    for i, shard_size in enumerate((3, 10)):
        path = str(tmp_path / f"w{i}.duckdb")
        add_prompts(path)
        cfg, work = gen.open_run(path, tiny_backend, cfg_args(shard_size=shard_size))
        for result in gen.run_shards(tiny_backend, work, cfg):
            with db.connect(path) as con:
                gen.write_shard(con, result)
        texts.append(stored(path))
    assert texts[0] == texts[1]


def test_more_samples_later_adds_only_the_new_indices(prompt_db, tiny_backend):
    cfg, work = gen.open_run(prompt_db, tiny_backend, cfg_args(limit=3))
    with db.connect(prompt_db) as con:
        gen.write_shard(con, gen.generate_shard(tiny_backend, work.todo, cfg))
    first = stored(prompt_db)
    more = Sampling(n=3, temperature=1.0, max_new_tokens=6, seed=3)
    cfg3, work3 = gen.open_run(prompt_db, tiny_backend, cfg_args(limit=3, sampling=more))
    assert [t.missing for t in work3.todo] == [(2,)] * 3
    with db.connect(prompt_db) as con:
        assert gen.write_shard(con, gen.generate_shard(tiny_backend, work3.todo, cfg3)) == 3
    assert set(first) <= set(stored(prompt_db))  # samples 0 and 1 are the same rows as before


def test_steps_and_filters(prompt_db, tiny_backend):
    add_prompts(prompt_db, ["a test prompt"], split="test")
    cfg, work = gen.open_run(prompt_db, tiny_backend, cfg_args(split="test", steps_separator="\n"))
    assert work.selected == 1
    result = gen.generate_shard(tiny_backend, work.todo, cfg)
    rows = result.table.to_pylist()
    assert all(r["steps"] == [s.strip() for s in r["text"].split("\n") if s.strip()] for r in rows)
    assert gen.split_steps("1. a\n\n2. b \n", "\n") == ["1. a", "2. b"]
    _, none = gen.open_run(prompt_db, tiny_backend, cfg_args(tags=("nope",)))
    assert none.selected == 0


def test_prompts_over_the_limit_are_counted_not_stored(prompt_db, tiny_model_dir, tiny_backend):
    add_prompts(prompt_db, ["the quick brown fox " * 30])
    limit = max(len(tiny_backend.encode([{"role": "user", "content": q}])) for q in QUESTIONS)
    skipper = TransformersBackend.load(str(tiny_model_dir), device="cpu", dtype="float32", max_prompt_tokens=limit,
                                       long_prompts="skip")
    cfg, work = gen.open_run(prompt_db, skipper, cfg_args(shard_size=20))
    result = gen.generate_shard(skipper, work.todo, cfg)
    assert (result.prompts, result.responses, result.skipped) == (11, 20, 2)


class FailingAfter:
    """Wraps a backend; every call after the first ``ok`` raises, as an endpoint that went down would."""

    def __init__(self, inner, ok: int):
        self.inner, self.ok, self.name, self.stats = inner, ok, inner.name, inner.stats

    def generate(self, conversations, sampling):
        if self.ok <= 0:
            raise AlignloopError("OpenAI-compatible endpoint http://127.0.0.1:9/v1 failed after 5 attempt(s): "
                                 "APIConnectionError: Connection error.")
        self.ok -= 1
        return self.inner.generate(conversations, sampling)

    def next_token_logprobs(self, conversations, candidates):
        return self.inner.next_token_logprobs(conversations, candidates)


def cli_app() -> typer.Typer:
    import alignloop.flows.cli  # noqa: F401  (the main app first: stage modules import its helpers)
    from alignloop.flows.cli import generate as cli_generate
    from alignloop.flows.cli import models as cli_models

    app = typer.Typer()
    cli_generate.register(app)
    cli_models.register(app)
    return app


def test_cli_generate_then_list_models(prompt_db, tiny_model_dir):
    runner = CliRunner()
    args = ["generate", "--round", "r1", "--model", str(tiny_model_dir), "--n", "2", "--limit", "3",
            "--max-new-tokens", "4", "--shard-size", "2", "--db", prompt_db, "--json"]
    res = runner.invoke(cli_app(), args)
    assert res.exit_code == 0, res.output
    totals = json.loads(res.stdout)
    assert (totals["selected"], totals["inserted"], totals["already_done"]) == (3, 6, 0)
    again = json.loads(runner.invoke(cli_app(), args).stdout)
    assert (again["inserted"], again["already_done"]) == (0, 6)
    models = json.loads(runner.invoke(cli_app(), ["models", "list", "--db", prompt_db, "--json"]).stdout)
    assert [(m["uri"], m["role"]) for m in models] == [(str(tiny_model_dir), "policy")]


def test_cli_failing_backend_keeps_finished_shards(prompt_db, tiny_backend, monkeypatch):
    import alignloop.flows.cli  # noqa: F401
    from alignloop.flows.cli import generate as cli_generate

    monkeypatch.setattr(cli_generate, "make_backend", lambda *a, **k: FailingAfter(tiny_backend, ok=2))
    res = CliRunner().invoke(cli_app(), ["generate", "--round", "r1", "--n", "1", "--shard-size", "3",
                                         "--max-new-tokens", "4", "--db", prompt_db])
    assert res.exit_code == 2
    assert "127.0.0.1:9" in res.output and "Connection error" in res.output
    assert len(stored(prompt_db)) == 6  # two finished shards stay


def test_cli_unknown_model_is_one_line(prompt_db, tmp_path):
    res = CliRunner().invoke(cli_app(), ["generate", "--round", "r1", "--model", str(tmp_path / "nope"),
                                         "--db", prompt_db])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown model" in lines[0]


def test_flow_generates_and_resumes(prompt_harness_db, tiny_model_dir):
    from alignloop.flows.generate import GenerateParams, generate

    params = GenerateParams(round="r1", model=str(tiny_model_dir), n=2, limit=4, max_new_tokens=4, shard_size=3,
                            db=prompt_harness_db)
    first = generate(params)
    assert (first["selected"], first["inserted"]) == (4, 8)
    assert generate(params)["already_done"] == 8
    assert len(stored(prompt_harness_db)) == 8


@pytest.fixture
def prompt_harness_db(prefect_harness, prompt_db):
    return prompt_db


def test_cli_models_default_prints_and_registers(prompt_db, tiny_model_dir, monkeypatch):
    from alignloop.pipelines import models

    monkeypatch.setattr(models, "default_model_path", lambda dtype=None: tiny_model_dir)
    res = CliRunner().invoke(cli_app(), ["models", "default", "--db", prompt_db])
    assert res.exit_code == 0 and res.stdout.strip() == str(tiny_model_dir)
    with db.connect(prompt_db, read_only=True) as con:
        assert con.execute("SELECT uri, role FROM models").fetchall() == [(str(tiny_model_dir), "policy")]


def test_fresh_prompts_give_each_round_new_ones_and_a_rerun_the_same(prompt_db, tiny_backend):
    def run(round_id: str) -> set[str]:
        cfg, work = gen.open_run(prompt_db, tiny_backend, cfg_args(round=round_id, limit=4, fresh=True))
        for result in gen.run_shards(tiny_backend, work, cfg):
            with db.connect(prompt_db) as con:
                gen.write_shard(con, result)
        with db.connect(prompt_db, read_only=True) as con:
            return {r[0] for r in con.execute("SELECT prompt_id FROM responses WHERE round_id = ?", [round_id]).fetchall()}

    a, b = run("a"), run("b")
    assert len(a) == len(b) == 4 and not a & b
    assert run("a") == a  # a rerun of round a samples its own prompts again (nothing new: all stored)
    _, again = gen.open_run(prompt_db, tiny_backend, cfg_args(round="a", limit=4, fresh=True))
    assert again.selected == 4 and again.todo == []
    _, last = gen.open_run(prompt_db, tiny_backend, cfg_args(round="c", limit=4, fresh=True))
    assert last.selected == 2  # 10 prompts, 8 used
