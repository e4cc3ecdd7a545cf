"""Push, annotate through the API, pull, agreement: against a real Label Studio server (one per session)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from alignloop.annotation import agreement, configs, push, waiting
from alignloop.annotation.client import LabelStudioClient, User, connect
from alignloop.annotation.pull import pull
from alignloop.annotation.server import DEFAULT_USERNAME
from alignloop.flows.cli import app
from alignloop.warehouse import db
from alignloop.warehouse.records import StepLabel
from tests.fixtures_annotation import JUDGE_X, JUDGE_Y, Seeded, choice, pref, seed_round

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]
ADMIN = f"annotator:{DEFAULT_USERNAME}"
BOB = "annotator:bob.annotator@alignloop.local"
CAROL = "annotator:carol.annotator@alignloop.local"


@dataclass(frozen=True)
class Team:
    admin: LabelStudioClient
    bob: User
    carol: User


@pytest.fixture(scope="module")
def team(label_studio) -> Team:
    admin = connect(label_studio.url, label_studio.token)
    return Team(admin, admin.create_user(BOB.removeprefix("annotator:")),
                admin.create_user(CAROL.removeprefix("annotator:")))


def _seed(tmp_path, round_id: str) -> tuple[str, Seeded]:
    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        return path, seed_round(con, round_id)


def _tasks(path: str, kind: str) -> dict[tuple[str, ...], tuple[int, str]]:
    with db.connect(path) as con:
        rows = con.execute("SELECT item_ids, task_id, status FROM annotation_tasks WHERE kind = ?", [kind]).fetchall()
    return {tuple(i): (t, s) for i, t, s in rows}


def test_a_pairwise_project_asks_the_questions_it_was_pushed_with_and_keeps_them(tmp_path, team):
    path, _ = _seed(tmp_path, "lsq1")
    admin = team.admin
    asked = {"preference_honesty": "honesty", "preference_helpfulness": "helpfulness"}
    first = push.push(path, admin, push.PushRequest("pairwise", "lsq1", sample=2, strategy="random",
                                                    questions=("honesty", "helpfulness")))

    def questions() -> dict[str, str]:
        [project] = [p for p in admin.list_projects() if p.id == first.project_id]
        return configs.aspect_questions(project.label_config)

    assert questions() == asked
    rest = push.push(path, admin, push.PushRequest("pairwise", "lsq1"))  # naming none keeps the project's
    assert rest.project_id == first.project_id and rest.imported == 4 and questions() == asked
    for task_id, _ in _tasks(path, "pairwise").values():
        admin.create_annotation(task_id, pref("A") + [choice("preference_honesty", "prompt", "B")])
    assert pull(path, admin, "lsq1").skipped == []
    with db.connect(path) as con:
        got = con.execute("SELECT aspect, winner, count(*) FROM comparisons WHERE source = 'human' GROUP BY ALL "
                          "ORDER BY 1").fetchall()
    assert got == [("honesty", "b", 6), ("overall", "a", 6)]


def test_a_project_with_an_overlap_counts_a_task_done_when_enough_annotators_labelled_it(tmp_path, team):
    path, _ = _seed(tmp_path, "lso1")
    admin = team.admin
    guide = "<h3>Guidelines</h3><p>Prefer the answer a careful expert would give.</p>"
    first = push.push(path, admin, push.PushRequest("binary", "lso1", sample=2, overlap=2, instructions=guide))
    project = admin.project(first.project_id)
    assert (project.overlap, project.instructions) == (2, guide)
    task_ids = [t for t, _ in _tasks(path, "binary").values()]
    admin.create_annotation(task_ids[0], [choice("thumbs", "response", "good")])
    assert waiting.count_done(admin, first.project_id).done == 0  # one of the two annotators it wants
    admin.create_annotation(task_ids[0], [choice("thumbs", "response", "bad")], completed_by=team.bob.id)
    assert waiting.count_done(admin, first.project_id).done == 1
    push.push(path, admin, push.PushRequest("binary", "lso1"))  # naming neither keeps both
    assert admin.project(first.project_id) == project
    push.push(path, admin, push.PushRequest("binary", "lso1", overlap=1))
    assert admin.project(first.project_id).overlap == 1 and waiting.count_done(admin, first.project_id).done == 1


def test_pairwise_push_annotate_pull_agreement_update(tmp_path, team):
    path, s = _seed(tmp_path, "lsr1")
    admin = team.admin
    result = push.push(path, admin, push.PushRequest("pairwise", "lsr1"))
    assert (result.planned, result.imported, result.recorded) == (6, 6, 6) and result.title == "alignloop lsr1 pairwise"
    again = push.push(path, admin, push.PushRequest("pairwise", "lsr1"))
    assert again.planned == 0 and len(admin.list_tasks(result.project_id)) == 6  # no duplicate tasks

    keys = s.pair_keys()
    task_of = {keys[items]: tid for items, (tid, _) in _tasks(path, "pairwise").items()}
    # AI verdicts travel as predictions with the judge as model version
    [task] = [t for t in admin.sdk.tasks.list(project=result.project_id, fields="all") if t.id == task_of["p0_02"]]
    assert {p["model_version"] if isinstance(p, dict) else p.model_version for p in task.predictions} == {JUDGE_X,
                                                                                                        JUDGE_Y}

    labels = {  # pair: (admin, bob, carol)
        "p0_01": ("A", "A", None), "p0_02": ("A", "B", "B"), "p0_12": ("B", "B", "Z"),
        "p1_01": ("tie", "A", "A"), "p1_02": ("A", "A", None), "p1_12": ("B", "A", None),
    }
    # seconds spent per annotation as Label Studio records it: admin on every task, bob on three, carol never
    admin_lead = {"p0_01": 12.5, "p0_02": 30.0, "p0_12": 7.0, "p1_01": 20.0, "p1_02": 3.25, "p1_12": 41.0}
    bob_lead = {"p0_01": 5.0, "p0_12": 60.0, "p1_02": 9.0}
    ann_ids = {}
    for pair, (x, y, z) in labels.items():
        ann_ids[pair] = admin.create_annotation(task_of[pair], pref(x), lead_time=admin_lead[pair])
        admin.create_annotation(task_of[pair], pref(y), completed_by=team.bob.id, lead_time=bob_lead.get(pair))
        if z:
            admin.create_annotation(task_of[pair], pref(z), completed_by=team.carol.id)
    # a task someone imported by hand into the project: the warehouse does not know it
    [stray] = admin.import_tasks(result.project_id, [{"prompt": "p", "a": "x", "b": "y"}])
    admin.create_annotation(stray, pref("A"))

    summary = pull(path, admin, "lsr1")
    assert summary.inserted == {"comparisons": 14} and summary.replaced == {} and summary.annotated == 6
    reasons = {(sk.task_id, sk.reason.split(":")[0]) for sk in summary.skipped}
    assert reasons == {(task_of["p0_12"], "invalid result"), (stray, ("task not known to the warehouse (not pushed by "
                                                                      "alignloop)"))}
    with db.connect(path) as con:
        rows = con.execute("SELECT response_a, response_b, judge, winner, source, round_id FROM comparisons "
                           "WHERE source = 'human'").fetchall()
        statuses = {r[0] for r in con.execute("SELECT status FROM annotation_tasks").fetchall()}
    who = {ADMIN: 0, BOB: 1, CAROL: 2}
    got = {(keys[(a, b)], who[j]): w for a, b, j, w, src, rnd in rows}
    expected = {(pair, i): {"A": "a", "B": "b", "tie": "tie"}[v] for pair, vs in labels.items()
                for i, v in enumerate(vs) if v and v != "Z"}
    assert got == expected and statuses == {"annotated"}

    # agreement by hand. Units (3 annotators -> Fleiss): p0_01 [a,a], p0_02 [a,b,b], p0_12 [b,b], p1_01 [tie,a,a],
    # p1_02 [a,a], p1_12 [b,a]. P_i = 1, 1/3, 1, 1/3, 1, 0 -> P_bar = 11/18; label totals a 8, b 5, tie 1 of 14.
    with db.connect(path) as con:
        rep = agreement.report(*agreement.collect(con, "lsr1"))
    (proj,) = rep.projects
    p_bar, p_e = 11 / 18, (8**2 + 5**2 + 1**2) / 14**2
    assert (proj.method, proj.annotators, proj.items) == ("fleiss", 3, 6)
    assert proj.kappa == pytest.approx((p_bar - p_e) / (1 - p_e))
    # human majority: p0_01 a, p0_02 b, p1_01 a. Judge x said tie, a, a -> 1/3 right;
    # kappa: p_o = 1/3, p_e = (2/3 * 2/3) = 4/9 -> (1/3 - 4/9) / (5/9) = -0.2. Judge y (p0_02: b) -> 1/1.
    by_judge = {h.judge: h for h in rep.human_vs_ai}
    assert (by_judge[JUDGE_X].items, by_judge[JUDGE_X].accuracy) == (3, pytest.approx(1 / 3))
    assert by_judge[JUDGE_X].kappa == pytest.approx(-0.2)
    assert (by_judge[JUDGE_Y].items, by_judge[JUDGE_Y].accuracy, by_judge[JUDGE_Y].kappa) == (1, 1.0, None)
    # throughput: median lead time per annotator over the tasks pulled (carol's one valid task has none)
    # admin 3.25 7 12.5 | 20 30 41 -> (12.5 + 20) / 2; bob 5 9 60 -> 9
    lead = {t.annotator: (t.tasks, t.median_lead_time) for t in rep.throughput}
    assert lead == {ADMIN: (6, 16.25), BOB: (6, 9.0), CAROL: (2, None)}
    res = CliRunner().invoke(app, ["annotate", "report", "--round", "lsr1", "--db", path, "--json"])
    assert res.exit_code == 0, res.output
    assert {t["annotator"]: t["median_lead_time"] for t in json.loads(res.output)["throughput"]} == {
        ADMIN: 16.25, BOB: 9.0, CAROL: None}

    # pulling again adds nothing
    second = pull(path, admin, "lsr1")
    assert second.inserted == {} and second.replaced == {}

    # an edited annotation replaces the verdict; the old one stays in feedback_history
    admin.sdk.annotations.update(id=ann_ids["p1_12"], result=pref("A"))
    third = pull(path, admin, "lsr1")
    assert third.inserted == {} and third.replaced == {"comparisons": 1}
    a, b = s.pair(1, 1, 2)
    with db.connect(path) as con:
        now = con.execute("SELECT winner FROM comparisons WHERE judge = ? AND response_a = ? AND response_b = ?",
                          [ADMIN, a, b]).fetchall()
        old = con.execute("SELECT row_json FROM feedback_history WHERE feedback_table = 'comparisons'").fetchall()
        rep = agreement.report(*agreement.collect(con, "lsr1"))
        assert agreement.store(con, rep, "lsr1") > 0
        stored = con.execute("SELECT value FROM evaluations WHERE kind = 'annotation_agreement' AND metric = 'kappa' "
                             "AND target = ?", [f"project:{result.project_id}"]).fetchone()[0]
    assert now == [("a",)] and len(old) == 1 and json.loads(old[0][0])["winner"] == "b"
    # p1_12 is now [a, a]: P_bar = 7/9; totals a 9, b 4, tie 1 -> P_e = 98/196 = 1/2; kappa = (7/9 - 1/2) / (1/2)
    assert rep.projects[0].kappa == pytest.approx(5 / 9) and stored == pytest.approx(5 / 9)

    # a task deleted in Label Studio is marked deleted on the next pull
    admin.sdk.tasks.delete(id=task_of["p1_02"])
    fourth = pull(path, admin, "lsr1")
    assert fourth.deleted == 1 and _tasks(path, "pairwise")[s.pair(1, 0, 2)][1] == "deleted"
    progress = waiting.count_done(admin, result.project_id)
    assert (progress.done, progress.total) == (6, 6)  # 5 pushed tasks left + the stray one, all annotated


def test_binary_two_annotators_gold_and_other_kinds(tmp_path, team):
    path, s = _seed(tmp_path, "lsr2")
    admin = team.admin
    gold = {(s.responses[0][0],): "good", (s.responses[0][1],): "good"}
    res = push.push(path, admin, push.PushRequest("binary", "lsr2"), gold=gold)
    assert res.imported == 6
    tasks = _tasks(path, "binary")
    order = [r for rs in s.responses for r in rs]
    admin_l = ["good", "good", "bad", "bad", "good", "good"]
    bob_l = ["good", "bad", "bad", "good", "good", "good"]
    for rid, x, y in zip(order, admin_l, bob_l):
        admin.create_annotation(tasks[(rid,)][0], [choice("thumbs", "response", x)])
        admin.create_annotation(tasks[(rid,)][0], [choice("thumbs", "response", y)], completed_by=team.bob.id)

    with db.connect(path) as con:  # an AI step judge's labels, which go along as the step task's prediction
        db.ingest(con, "step_labels", [StepLabel(StepLabel.make_id("judge-steps", rid, i), s.prompts[p], rid, i, mark,
                                                 "judge-steps", "ai", "lsr2")
                                       for p, rs in enumerate(s.responses) for rid in rs
                                       for i, mark in enumerate([1, -1, -1])])
    step_res = push.push(path, admin, push.PushRequest("step", "lsr2", sample=1, strategy="random"))
    corr_res = push.push(path, admin, push.PushRequest("correction", "lsr2", sample=1))
    rank_res = push.push(path, admin, push.PushRequest("ranking", "lsr2", sample=1))
    (_step_items, (step_task, _)), = _tasks(path, "step").items()
    (prediction,) = admin.sdk.predictions.list(task=step_task)
    assert prediction.model_version == "judge-steps" and [(r["from_name"], r["value"]) for r in prediction.result] == [
        ("step_label_0", {"choices": ["positive"]}), ("step_label_1", {"choices": ["negative"]}),
        ("step_label_2", {"choices": ["negative"]}), ("first_error", {"number": 2})]
    (corr_items, (corr_task, _)), = _tasks(path, "correction").items()
    (rank_items, (rank_task, _)), = _tasks(path, "ranking").items()
    admin.create_annotation(step_task, [
        choice("step_label_0", "step_0", "positive"), choice("step_label_1", "step_1", "negative"),
        {"from_name": "first_error", "to_name": "question", "type": "number", "value": {"number": 2}}])
    admin.create_annotation(corr_task, [{"from_name": "correction", "to_name": "answer", "type": "textarea",
                                         "value": {"text": ["a better answer"]}}])
    ranked = list(reversed(rank_items))
    admin.create_annotation(rank_task, [{"from_name": "ranker", "to_name": "items", "type": "ranker",
                                         "value": {"ranker": {"ranker": ranked}}}])
    assert {step_res.planned, corr_res.planned, rank_res.planned} == {1}

    summary = pull(path, admin, "lsr2")
    assert summary.skipped == []
    assert summary.inserted == {"ratings": 12, "step_labels": 2, "corrections": 1, "rankings": 1, "responses": 1}
    with db.connect(path) as con:
        steps = con.execute("SELECT step_index, label, finish_reason, judge FROM step_labels WHERE source = 'human' "
                            "ORDER BY 1").fetchall()
        corr = con.execute("SELECT c.original_id, r.text, r.origin, r.parent_id FROM corrections c "
                           "JOIN responses r ON r.id = c.corrected_id").fetchall()
        rank = con.execute("SELECT response_ids, scores FROM rankings").fetchall()
        thumbs = con.execute("SELECT DISTINCT aspect, scale_min, scale_max FROM ratings").fetchall()
        rep = agreement.report(*agreement.collect(con, "lsr2"))
    assert steps == [(0, 1, "found_error", ADMIN), (1, -1, "found_error", ADMIN)]
    assert corr == [(corr_items[0], "a better answer", "human_edit", corr_items[0])]
    assert rank == [(ranked, [2.0, 1.0, 0.0])] and thumbs == [("thumbs", 0.0, 1.0)]

    binary = next(p for p in rep.projects if p.project_id == res.project_id)
    # Cohen by hand: agree on 4 of 6 -> p_o = 2/3; both raters 4 good / 2 bad -> p_e = (16 + 4) / 36; kappa = 1/4
    assert (binary.method, binary.items) == ("cohen", 6) and binary.kappa == pytest.approx(0.25)
    gold_acc = {g.annotator: (g.gold_tasks, g.accuracy) for g in rep.gold}
    assert gold_acc == {ADMIN: (2, 1.0), BOB: (2, 0.5)}


def _steps(*labels: str, first_error: int | None = None) -> list[dict]:
    result = [choice(f"step_label_{i}", f"step_{i}", label) for i, label in enumerate(labels)]
    if first_error is not None:
        result.append({"from_name": "first_error", "to_name": "question", "type": "number",
                       "value": {"number": first_error}})
    return result


def test_edited_step_annotation_keeps_only_the_steps_it_still_labels(tmp_path, team):
    path, _ = _seed(tmp_path, "lsr3")
    admin = team.admin
    push.push(path, admin, push.PushRequest("step", "lsr3", sample=1, strategy="random"))
    ((response,), (task, _)), = _tasks(path, "step").items()
    ann = admin.create_annotation(task, _steps("positive", "positive", "neutral"), lead_time=10.0)
    admin.create_annotation(task, _steps("positive", "neutral", "neutral"), completed_by=team.bob.id)
    first = pull(path, admin, "lsr3")
    assert first.inserted == {"step_labels": 6} and first.removed == {} and first.skipped == []

    # the annotator finds an error in the first step: one label now, the two later ones must go
    admin.sdk.annotations.update(id=ann, result=_steps("negative", first_error=1))
    second = pull(path, admin, "lsr3")
    assert (second.inserted, second.replaced, second.removed) == ({}, {"step_labels": 1}, {"step_labels": 2})
    with db.connect(path) as con:
        rows = con.execute("SELECT judge, step_index, label, finish_reason FROM step_labels WHERE response_id = ? "
                           "ORDER BY judge, step_index", [response]).fetchall()
        history = con.execute("SELECT row_json FROM feedback_history WHERE feedback_table = 'step_labels'").fetchall()
    assert [r for r in rows if r[0] == ADMIN] == [(ADMIN, 0, -1, "found_error")]
    assert [r[1:] for r in rows if r[0] == BOB] == [(0, 1, "solution"), (1, 0, "solution"), (2, 0, "solution")]
    old = sorted((h["judge"], h["step_index"], h["label"], h["finish_reason"])
                 for h in (json.loads(r[0]) for r in history))
    assert old == [(ADMIN, 0, 1, "solution"), (ADMIN, 1, 1, "solution"), (ADMIN, 2, 0, "solution")]

    third = pull(path, admin, "lsr3")  # nothing left to replace or remove
    assert (third.inserted, third.replaced, third.removed) == ({}, {}, {})
