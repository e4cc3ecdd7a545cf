"""Step labels from rollouts (Math-Shepherd): a scripted completer gives exact labels; backends continue an assistant
message (transformers: the rendered text; an OpenAI-compatible endpoint: vLLM's request fields); the CLI end to end."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from alignloop.pipelines.backends.base import Completion, Conversation, Sampling, TokenScores
from alignloop.pipelines.judges.calls import CallPolicy
from alignloop.pipelines.judges.rollouts import RolloutConfig, RolloutStepJudge
from alignloop.pipelines.judges.run import JudgeRequest, build_judge, execute, select_items, store
from alignloop.pipelines.verifiers import get_verifier
from alignloop.warehouse import db
from alignloop.warehouse.errors import AlignloopError, InputError
from alignloop.warehouse.records import Prompt, Response
from tests.fixtures_generate import *
from tests.fixtures_judges import *

FAST = CallPolicy(retries=1, retry_delay_s=0.0, batch_size=4)
QUESTION = [{"role": "user", "content": "What is (2 + 3) * 1?"}]


@dataclass
class Completer:
    """Continues a partial solution: from one that wrote a 6 every sample answers 6; otherwise sample 0 answers 5 (the
    reference) and the rest 7. Records each conversation and sampling it was asked for."""

    name: str = "completer"
    asked: list[tuple[Conversation, Sampling]] = field(default_factory=list)
    cut: bool = False
    """Every completion stops at the token limit (its text as before)."""

    def generate(self, conversations: list[Conversation], sampling: Sampling) -> list[list[Completion]]:
        out = []
        for conv in conversations:
            self.asked.append((conv, sampling))
            wrong = "6" in conv[-1]["content"]
            out.append([Completion(f"The answer is {6 if wrong else 5 if s == 0 else 7}.",
                                   "length" if self.cut else "stop", 10, 5, s) for s in range(sampling.n)])
        return out

    def next_token_logprobs(self, conversations: list[Conversation], candidates: list[str]) -> list[TokenScores]:
        raise AssertionError("rollouts never score tokens")


def seed_solutions(con) -> dict[str, Response]:
    db.ensure_round(con, "r1")
    with_ref = Prompt.create(QUESTION, "test", reference="5")
    no_ref = Prompt.create([{"role": "user", "content": "Say hello."}], "test")
    wrong = Response.sampled(with_ref.id, "m", "r1", "2 + 3 = 5\n5 * 1 = 6\nThe answer is 6.", {}, 0, 0,
                             steps=["2 + 3 = 5", "5 * 1 = 6", "The answer is 6."])
    right = Response.sampled(with_ref.id, "m", "r1", "2 + 3 = 5\n5 * 1 = 5\nThe answer is 5.", {}, 0, 1)
    hello = Response.sampled(no_ref.id, "m", "r1", "Hello\nthere", {}, 0, 0)
    db.ingest(con, "prompts", [with_ref, no_ref])
    db.ingest(con, "responses", [wrong, right, hello])
    return {"wrong": wrong, "right": right, "hello": hello}


def test_rollout_labels_are_exact_and_stored_once(con):
    seeded = seed_solutions(con)
    backend = Completer()
    judge = RolloutStepJudge(backend, get_verifier("final_answer"), RolloutConfig(n=4), FAST)
    items, cached = select_items(con, JudgeRequest("steps", "r1"), judge)
    # the answer to a prompt without a reference is not selected: the verifier could not tell right from wrong
    assert cached == 0 and {it.id for it in items} == {seeded["wrong"].id, seeded["right"].id}
    assert store(con, execute(judge, "steps", items, "r1")) == {"step_labels": 6}
    rows = con.execute("SELECT response_id, step_index, label, source, finish_reason, meta FROM step_labels "
                       "ORDER BY response_id, step_index").fetchall()
    got = {(rid, i): (label, source, reason, json.loads(meta)) for rid, i, label, source, reason, meta in rows}
    w, r = seeded["wrong"].id, seeded["right"].id
    # from "2 + 3 = 5" one rollout of four reaches 5: +1 (soft 0.25); from "5 * 1 = 6" none does: -1; the last step is
    # the response itself, whose answer 6 is wrong
    assert [got[(w, i)][0] for i in range(3)] == [1, -1, -1]
    assert [(got[(w, i)][3]["right"], got[(w, i)][3]["rollouts"]) for i in range(3)] == [(1, 4), (0, 4), (0, 0)]
    assert got[(w, 0)][3]["estimate"] == 0.25 and got[(w, 2)][3]["from"] == "response"
    assert [got[(r, i)][0] for i in range(3)] == [1, 1, 1]
    assert {got[(w, i)][2] for i in range(3)} == {"found_error"} and {got[(r, i)][2] for i in range(3)} == {"solution"}
    assert {v[1] for v in got.values()} == {"ai"}
    # two partial solutions per response were continued, each as the prompt's chat plus the steps so far, 4 samples
    convs = [c for c, _ in backend.asked]
    assert len(convs) == 4 and all(c[:-1] == QUESTION and c[-1]["role"] == "assistant" for c in convs)
    assert {c[-1]["content"] for c in convs} == {"2 + 3 = 5\n", "2 + 3 = 5\n5 * 1 = 6\n", "2 + 3 = 5\n5 * 1 = 5\n"}
    assert {(s.n, s.temperature, s.max_new_tokens) for _, s in backend.asked} == {(4, 0.7, 256)}
    # run again: every label is stored, nothing is selected, the completer is not asked
    assert select_items(con, JudgeRequest("steps", "r1"), judge) == ([], 2)
    # a different rollout count is another judge: its labels are new rows
    other = RolloutStepJudge(Completer(), get_verifier("final_answer"), RolloutConfig(n=2), FAST)
    assert other.judge != judge.judge and re.search(r":rollouts@[0-9a-f]{8}$", judge.judge)
    assert len(select_items(con, JudgeRequest("steps", "r1"), other)[0]) == 2


def test_a_partial_response_is_rolled_out_from_its_last_step_too(con):
    db.ensure_round(con, "r1")
    p = Prompt.create(QUESTION, "test", reference="5")
    cut = Response.sampled(p.id, "m", "r1", "2 + 3 = 5\n5 * 1 = 5", {}, 0, 0, finish_reason="length")
    branch = Response.given(p.id, "m", "r1", "2 + 3 = 5\n5 * 1 = 6", "import", steps=["2 + 3 = 5", "5 * 1 = 6"],
                            meta={"alternative_for_step": 1})  # as PRM800K's alternative steps are imported
    db.ingest(con, "prompts", [p])
    db.ingest(con, "responses", [cut, branch])
    judge = RolloutStepJudge(Completer(), get_verifier("final_answer"), RolloutConfig(n=4), FAST)
    items, _ = select_items(con, JudgeRequest("steps", "r1"), judge)
    assert {it.id: it.partial for it in items} == {cut.id: True, branch.id: True}
    rows = {(r.response_id, r.step_index): (r.label, r.meta["rollouts"], r.meta["right"])
            for r in judge.judge_items(items, "r1")}
    # "5 * 1 = 5" states the right number, but a partial answer is no final answer: its step is rolled out as well
    assert rows == {(cut.id, 0): (1, 4, 1), (cut.id, 1): (1, 4, 1), (branch.id, 0): (1, 4, 1),
                    (branch.id, 1): (-1, 4, 0)}


def test_binary_search_finds_the_first_error_in_fewer_rollouts_with_the_same_labels(con):
    db.ensure_round(con, "r1")
    p = Prompt.create(QUESTION, "test", reference="5")
    steps = ["a = 1", "b = 2", "c = 3", "d = 4", "e = 6", "f = 7", "g = 8", "The answer is 9."]
    long = Response.sampled(p.id, "m", "r1", "\n".join(steps), {}, 0, 0, steps=steps)
    right = Response.sampled(p.id, "m", "r1", "2 + 3 = 5\n5 * 1 = 5\nThe answer is 5.", {}, 0, 1)
    cut = Response.sampled(p.id, "m", "r1", "2 + 3 = 5\n5 * 1 = 5", {}, 0, 2, finish_reason="length")
    db.ingest(con, "prompts", [p])
    db.ingest(con, "responses", [long, right, cut])
    labels, asked = {}, {}
    for search in ("all", "binary"):
        backend = Completer()
        judge = RolloutStepJudge(backend, get_verifier("final_answer"), RolloutConfig(n=4, search=search), FAST)
        items, _ = select_items(con, JudgeRequest("steps", "r1"), judge)
        rows = judge.judge_items(items, "r1")
        labels[search] = {(r.response_id, r.step_index): r.label for r in rows}
        asked[search] = sorted((c[-1]["content"].count("\n")) for c, _ in backend.asked)  # steps in each prefix
        metas = {(r.response_id, r.step_index): r.meta for r in rows}
    # the first error ("e = 6", step 4) found by probing steps 3, 5 and 4 (an 8-step wrong answer: its last step is
    # its own); the right answer needs no rollout; the cut one is probed at its second step only
    assert asked == {"all": [1, 1, 1, 2, 2, 2, 3, 4, 5, 6, 7], "binary": [2, 4, 5, 6]}
    assert labels["binary"] == labels["all"]
    assert [labels["all"][(long.id, i)] for i in range(8)] == [1, 1, 1, 1, -1, -1, -1, -1]
    assert [metas[(long.id, i)].get("inferred") for i in range(8)] == [
        "before a step that reached the answer"] * 3 + [None, None, None, "after the first error", None]
    assert metas[(right.id, 0)] == {"inferred": "before a step that reached the answer", "rollouts": 0, "steps": 3,
                                    "verifier": judge.verifier.judge}
    assert (metas[(long.id, 3)]["right"], metas[(long.id, 7)]["from"]) == (1, "response")
    binary = RolloutStepJudge(Completer(), get_verifier("final_answer"), RolloutConfig(n=4, search="binary"))
    assert binary.judge != RolloutStepJudge(Completer(), get_verifier("final_answer"), RolloutConfig(n=4)).judge


def test_a_completion_cut_at_the_token_limit_reaches_no_answer(con):
    seeded = seed_solutions(con)
    judge = RolloutStepJudge(Completer(cut=True), get_verifier("final_answer"), RolloutConfig(n=4), FAST)
    items, _ = select_items(con, JudgeRequest("steps", "r1"), judge)
    rows = {(r.response_id, r.step_index): (r.label, r.meta["right"], r.meta.get("cut"))
            for r in judge.judge_items(items, "r1")}
    # sample 0 wrote the right number but was cut: no step before the last reaches an answer; the last steps are the
    # responses' own finished answers
    w, r = seeded["wrong"].id, seeded["right"].id
    assert rows == {(w, 0): (-1, 0, 4), (w, 1): (-1, 0, 4), (w, 2): (-1, 0, None),
                    (r, 0): (-1, 0, 4), (r, 1): (-1, 0, 4), (r, 2): (1, 1, None)}


def test_rollout_labels_build_a_step_dataset(con):
    from alignloop.pipelines.datasets.build import build
    from alignloop.pipelines.datasets.config import parse_options

    seeded = seed_solutions(con)
    judge = RolloutStepJudge(Completer(), get_verifier("final_answer"), RolloutConfig(n=4), FAST)
    store(con, execute(judge, "steps", select_items(con, JudgeRequest("steps", "r1"), judge)[0], "r1"))
    t = build(con, parse_options("steps", {"decontaminate": False, "sources": "ai"})).table
    rows = {cid: (steps, labels) for cid, steps, labels in
            zip(t["completion_id"].to_pylist(), t["steps"].to_pylist(), t["labels"].to_pylist())}
    assert rows == {seeded["wrong"].id: (["2 + 3 = 5", "5 * 1 = 6", "The answer is 6."], [1, -1, -1]),
                    seeded["right"].id: (["2 + 3 = 5", "5 * 1 = 5", "The answer is 5."], [1, 1, 1])}
    # the soft estimate cut at a half: one rollout of four is not enough; the last steps are the responses' own
    soft = build(con, parse_options("steps", {"decontaminate": False, "sources": "ai", "rollout_threshold": 0.5}))
    assert dict(zip(soft.table["completion_id"].to_pylist(), soft.table["labels"].to_pylist())) == {
        seeded["wrong"].id: [-1, -1, -1], seeded["right"].id: [-1, -1, 1]}
    with pytest.raises(InputError, match=r"rollout_threshold must be in \(0, 1\], got 0$"):
        parse_options("steps", {"rollout_threshold": 0})


def test_rollout_judge_is_refused_where_it_cannot_label(con):
    db.ensure_round(con, "r1")
    p = Prompt.create([{"role": "user", "content": "Say hello."}], "test")
    db.ingest(con, "prompts", [p])
    db.ingest(con, "responses", [Response.sampled(p.id, "m", "r1", "Hello\nthere", {}, 0, 0)])
    judge = RolloutStepJudge(Completer(), get_verifier("final_answer"), RolloutConfig(n=2), FAST)
    with pytest.raises(AlignloopError, match="round 'r1' has 1 responses to judge, none to a prompt with a reference"):
        select_items(con, JudgeRequest("steps", "r1"), judge)
    with pytest.raises(AlignloopError, match=r"--rollouts \(rollouts\) labels steps .* not `judge pairwise`"):
        build_judge("pairwise", "default", rollouts=RolloutConfig(n=2))
    with pytest.raises(AlignloopError, match="needs a model to complete solutions with"):
        build_judge("steps", "verifier:final_answer", rollouts=RolloutConfig(n=2))
    with pytest.raises(AlignloopError, match="unknown verifier 'exact'"):
        build_judge("steps", "default", rollouts=RolloutConfig(n=2, verifier="exact"))
    with pytest.raises(AlignloopError, match="at temperature 0 would repeat one greedy completion"):
        RolloutConfig(n=4, temperature=0)


def test_transformers_backend_continues_an_assistant_message(tiny_backend):
    prefix = "two plus two\n"
    opened = tiny_backend.encode(QUESTION)
    cont = tiny_backend.encode([*QUESTION, {"role": "assistant", "content": prefix}])
    # the assistant turn as generation opens it, then the prefix's own tokens, and no end of turn after them
    assert cont[:len(opened)] == opened
    assert tiny_backend.tokenizer.decode(cont[len(opened):]) == prefix
    end = tiny_backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert cont[-1] != end
    out = tiny_backend.generate([[*QUESTION, {"role": "assistant", "content": prefix}]],
                                Sampling(n=2, temperature=1.0, max_new_tokens=4, seed=3))
    assert len(out[0]) == 2 and all(c.prompt_tokens == len(cont) for c in out[0])


def test_cli_labels_steps_from_rollouts_of_a_model(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from alignloop.flows.cli import app

    path = tmp_path / "w.duckdb"
    with db.connect(path) as con:
        seeded = seed_solutions(con)
    args = ["judge", "steps", "--round", "r1", "--judge", str(tiny_model_dir), "--rollouts", "2",
            "--rollout-max-new-tokens", "4", "--rollout-search", "binary", "--db", str(path), "--json"]
    first = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert first.exit_code == 0, first.output
    out = json.loads(first.output)
    assert out["selected"] == 2 and out["inserted"] == {"step_labels": 6} and ":rollouts@" in out["judge"]
    with db.connect(path) as con:
        last = dict(con.execute("SELECT response_id, label FROM step_labels WHERE step_index = 2").fetchall())
        tried = {r[0] for r in con.execute("SELECT json_extract(meta, '$.rollouts')::INT FROM step_labels "
                                           "WHERE step_index < 2").fetchall()}
    # the last step is the response's own final answer, whatever the random model wrote in its rollouts; the right
    # answer's steps need no rollout in a binary search, the wrong one's are probed (2 rollouts each)
    assert last == {seeded["wrong"].id: -1, seeded["right"].id: 1} and tried == {0, 2}
    again = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert again.exit_code == 0 and json.loads(again.output)["cached"] == 2
    bad = CliRunner().invoke(app, [*args[:-1], "--rollout-temperature", "0"], env={"COLUMNS": "400"})
    assert bad.exit_code == 2 and "would repeat one greedy completion" in bad.output


def test_rollouts_are_judged_and_written_a_few_items_at_a_time():
    from alignloop.flows.judge import JudgeParams

    assert JudgeParams(kind="steps", round="r1", rollouts=4).chunk() == 8
    assert JudgeParams(kind="steps", round="r1", rollouts=4, chunk_size=3).chunk() == 3
    assert JudgeParams(kind="steps", round="r1").chunk() == 64
