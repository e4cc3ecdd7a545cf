"""Annotation without a server: push ordering and idempotency, pull mapping and rejection, agreement math,
the webhook receiver."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from alignloop.annotation import agreement, pull, push, waiting
from alignloop.annotation.agreement import HumanAiRow, LabelRow
from alignloop.annotation.mapping import SentTask, to_feedback
from alignloop.annotation.pull import collect
from alignloop.warehouse import db
from alignloop.warehouse.records import AnnotationTask, StepLabel
from tests.fixtures_annotation import JUDGE_X, JUDGE_Y, choice, exported, pref, seed_round


@pytest.fixture
def con():
    with db.connect(":memory:") as c:
        yield c


# ------------------------------------------------------------------------------------------------ push


def test_plan_push_orders_inconsistent_then_disagreement_then_audit(con):
    s = seed_round(con, "r1")
    keys = s.pair_keys()
    tasks = push.plan_push(con, "pairwise", "r1")
    order = [keys[tuple(t.item_ids)] for t in tasks]
    assert order[:2] == ["p0_01", "p0_02"] and sorted(order[2:]) == ["p0_12", "p1_01", "p1_02", "p1_12"]
    assert [keys[tuple(t.item_ids)] for t in push.plan_push(con, "pairwise", "r1", strategy="disagreement")][:2] == [
        "p0_02", "p0_01"]
    # AI verdicts go along as predictions; judge y's swapped row is mapped to this pair's order (B)
    preds = {p["model_version"]: p["result"][0]["value"]["choices"] for p in tasks[1].payload["predictions"]}
    assert preds == {JUDGE_X: ["A"], JUDGE_Y: ["B"]}
    assert tasks[1].payload["data"]["response_a_id"] == tasks[1].item_ids[0]
    assert tasks[0].payload["meta"] == {"inconsistent": True, "disagreement": False}
    # sample 3 with a 30% audit share: both flagged pairs + ceil(0.9) = 1 random unflagged pair
    sampled = [keys[tuple(t.item_ids)] for t in push.plan_push(con, "pairwise", "r1", sample=3, audit=0.3)]
    assert sampled[:2] == ["p0_01", "p0_02"] and sampled[2] in order[2:]
    # with a sample of 1 and an audit share, the single slot goes to the audit
    assert next(keys[tuple(t.item_ids)] for t in push.plan_push(con, "pairwise", "r1", sample=1, audit=0.5)) not in (
        "p0_01", "p0_02")
    # the random order is seeded and stable
    assert [t.id for t in push.plan_push(con, "pairwise", "r1", strategy="random", seed=3)] == [
        t.id for t in push.plan_push(con, "pairwise", "r1", strategy="random", seed=3)]


def test_step_tasks_put_convincing_wrong_answers_first_then_step_judges_that_disagree(con):
    from alignloop.warehouse.records import Rating

    s = seed_round(con, "r1", with_ai=False)
    (r0, r1, r2), prompt = s.responses[0], s.prompts[0]

    def labels(judge: str, rid: str, marks: list[int | None], source: str = "ai") -> list[StepLabel]:
        return [StepLabel(StepLabel.make_id(judge, rid, i), prompt, rid, i, m, judge, source, "r1")
                for i, m in enumerate(marks)]

    def outcome(rid: str, score: float) -> Rating:
        return Rating(Rating.make_id("final_answer@v", rid, "final_answer", kind="verifier"), prompt, rid, score,
                      0.0, 1.0, "final_answer@v", "rule", "r1", aspect="final_answer")

    db.ingest(con, "step_labels", [*labels("judge-a", r0, [1, 1, 1]), *labels("judge-a", r1, [1, -1, -1]),
                                   *labels("prm", r1, [1, 1, -1], "reward_model"), *labels("judge-a", r2, [1, 1, 1]),
                                   *labels("ann", r2, [1, -1, -1], "human")])  # people's labels are no prediction
    db.ingest(con, "ratings", [outcome(r0, 0.0), outcome(r2, 1.0)])
    tasks = push.plan_push(con, "step", "r1")
    # r0: wrong answer, every step passed (a convincing wrong answer); r1: its judges' first errors differ (2 vs 3)
    assert [tuple(t.item_ids) for t in tasks[:2]] == [(r0,), (r1,)]
    assert [t.payload["meta"] for t in tasks[:2]] == [{"inconsistent": True, "disagreement": False},
                                                      {"inconsistent": False, "disagreement": True}]
    assert all(t.payload["meta"] == {"inconsistent": False, "disagreement": False} for t in tasks[2:])
    assert [tuple(t.item_ids) for t in push.plan_push(con, "step", "r1", strategy="disagreement")[:2]] == [(r1,),
                                                                                                          (r0,)]
    # each step judge's labels go along as a prediction: the choices of the step config and the first error's number
    preds = {p["model_version"]: p["result"] for p in tasks[1].payload["predictions"]}
    assert preds == {"judge-a": [choice("step_label_0", "step_0", "positive"),
                                 choice("step_label_1", "step_1", "negative"),
                                 choice("step_label_2", "step_2", "negative"),
                                 {"from_name": "first_error", "to_name": "question", "type": "number",
                                  "value": {"number": 2}}],
                     "prm": [choice("step_label_0", "step_0", "positive"), choice("step_label_1", "step_1", "positive"),
                             choice("step_label_2", "step_2", "negative"),
                             {"from_name": "first_error", "to_name": "question", "type": "number",
                              "value": {"number": 3}}]}
    r2_task = next(t for t in tasks if tuple(t.item_ids) == (r2,))
    assert [p["model_version"] for p in r2_task.payload["predictions"]] == ["judge-a"]


def test_plan_push_skips_items_already_sent_and_ids_are_content_hashes(con):
    seed_round(con, "r1")
    tasks = push.plan_push(con, "binary", "r1", sample=2)
    assert tasks[0].id == push.task_id("binary", "r1", tasks[0].item_ids)
    push.record(con, [t for t in tasks])
    again = push.plan_push(con, "binary", "r1")
    assert len(again) == 4 and not {t.id for t in again} & {t.id for t in tasks}
    assert push.record(con, tasks) == 0  # recording twice adds nothing


def test_plan_push_other_kinds_and_gold(con):
    s = seed_round(con, "r1", with_ai=False)
    ranking = push.plan_push(con, "ranking", "r1")
    assert [t.item_ids for t in ranking] == s.responses or [t.item_ids for t in ranking] == s.responses[::-1]
    assert [i["id"] for i in ranking[0].payload["data"]["items"]] == ranking[0].item_ids
    steps = push.plan_push(con, "step", "r1")
    assert len(steps) == 6 and len(steps[0].payload["data"]["steps"]) == 3
    gold_key = (s.responses[1][2],)
    binary = push.plan_push(con, "binary", "r1", sample=1, gold={gold_key: "good"})
    assert tuple(binary[0].item_ids) == gold_key and binary[0].payload["meta"]["gold_answer"] == "good"
    assert len(binary) == 2  # gold tasks go out ahead of the sample
    with pytest.raises(ValueError, match="unknown annotation kind"):
        push.PushRequest("likert", "r1")


# ------------------------------------------------------------------------------------------------ pull (pure)


def _sent(task_id: int, items: tuple[str, str], status: str = "pushed") -> SentTask:
    return SentTask(f"t{task_id}", "pairwise", "r1", 7, task_id, items,
                    {"data": {"prompt_id": "p", "prompt": "q", "a": "x", "b": "y"}}, status)


def test_collect_maps_valid_annotations_and_reports_the_rest():
    sent = [_sent(1, ("ra", "rb")), _sent(2, ("ra", "rc")), _sent(3, ("ra", "rd"), status="deleted")]
    anns = [
        exported(1, 10, 5, pref("B") + [{"from_name": "rationale", "to_name": "prompt", "type": "textarea",
                                         "value": {"text": ["b is right"]}}], email="ann@x"),
        exported(1, 11, 6, pref("Z")),  # a choice the config does not allow
        exported(2, 12, 5, pref("A")),  # superseded by 13
        exported(2, 13, 5, pref("tie")),
        exported(3, 14, 5, pref("A")),  # task marked deleted
        exported(9, 15, 5, pref("A")),  # a task the warehouse never sent
        exported(1, 16, 8, pref("A"), cancelled=True),
    ]
    plan = collect(sent, {7: anns}, {7: {1, 2, 3, 9}}, {"ra", "rb", "rc", "rd"})
    got = {(c.response_b, c.judge): (c.winner, c.rationale) for c in plan.rows.comparisons}
    assert got == {("rb", "annotator:ann@x"): ("b", "b is right"), ("rc", "annotator:5"): ("tie", None)}
    reasons = {s.annotation_id: s.reason for s in plan.skipped}
    assert set(reasons) == {11, 12, 14, 15, 16}
    assert "'Z'" in reasons[11] and "superseded" in reasons[12] and "deleted" in reasons[14]
    assert "not known" in reasons[15] and "cancelled" in reasons[16]
    assert plan.annotated == {"t1", "t2"} and plan.annotations == 7
    # a Label Studio task that disappeared is marked deleted; responses deleted from the warehouse are refused
    plan = collect(sent, {7: [exported(1, 10, 5, pref("A"))]}, {7: {1}}, {"ra"})
    assert plan.deleted == {"t2", "t3"} and "no longer in the warehouse" in plan.skipped[0].reason


def test_to_feedback_steps_and_correction():
    data = {"prompt_id": "p", "question": "q", "steps": [{"title": "Step 1", "text": "a"}] * 3, "answer": "Lyon"}
    step = SentTask("t", "step", "r1", 1, 2, ("resp",), {"data": data})
    result = [{"from_name": "step_label_0", "to_name": "step_0", "type": "choices", "value": {"choices": ["positive"]}},
              {"from_name": "step_label_1", "to_name": "step_1", "type": "choices", "value": {"choices": ["negative"]}},
              {"from_name": "first_error", "to_name": "question", "type": "number", "value": {"number": 2}}]
    rows, problems = to_feedback(step, exported(2, 3, 4, result))
    assert problems == []
    assert [(r.step_index, r.label, r.finish_reason) for r in rows.step_labels] == [(0, 1, "found_error"),
                                                                                    (1, -1, "found_error")]
    assert rows.step_labels[0].meta.get("lead_time") is None
    rows, _ = to_feedback(step, exported(2, 3, 4, result, lead_time=12.5))
    assert {r.meta["lead_time"] for r in rows.step_labels} == {12.5}  # the report's throughput reads it
    corr = SentTask("t", "correction", "r1", 1, 2, ("orig",), {"data": data})
    text = [{"from_name": "correction", "to_name": "answer", "type": "textarea", "value": {"text": ["Paris"]}}]
    rows, _ = to_feedback(corr, exported(2, 3, 4, text, email="e@x"))
    (resp,), (c,) = rows.responses, rows.corrections
    assert (resp.text, resp.origin, resp.parent_id, c.corrected_id, c.original_id) == (
        "Paris", "human_edit", "orig", resp.id, "orig")


def test_edited_step_annotation_retires_only_its_own_missing_steps(con):
    data = {"prompt_id": "p", "question": "q", "steps": [{"title": "Step 1", "text": "a"}] * 3}
    sent = [SentTask("t1", "step", "r1", 1, 2, ("resp",), {"data": data})]

    def steps(*labels: str, first_error: int | None = None) -> list[dict]:
        out = [{"from_name": f"step_label_{i}", "to_name": f"step_{i}", "type": "choices",
                "value": {"choices": [v]}} for i, v in enumerate(labels)]
        if first_error:
            out.append({"from_name": "first_error", "to_name": "question", "type": "number",
                        "value": {"number": first_error}})
        return out

    def pulled(*anns):
        return pull.store(con, collect(sent, {1: list(anns)}, {1: {2}}, {"resp"}))

    ai = StepLabel(StepLabel.make_id("prm:x", "resp", 2), "p", "resp", 2, 0, "prm:x", "ai", "r1")
    db.ingest(con, "step_labels", [ai])
    full = exported(2, 10, 5, steps("positive", "positive", "neutral"))
    other = exported(2, 11, 6, steps("neutral", "neutral", "neutral"))
    assert pulled(full, other).inserted == {"step_labels": 6}
    written = pulled(exported(2, 10, 5, steps("negative", first_error=1)), other)
    assert (written.inserted, written.replaced, written.removed) == ({}, {"step_labels": 1}, {"step_labels": 2})
    left = con.execute("SELECT judge, step_index FROM step_labels ORDER BY 1, 2").fetchall()
    assert left == [("annotator:5", 0)] + [("annotator:6", i) for i in range(3)] + [("prm:x", 2)]
    assert con.execute("SELECT count(*) FROM feedback_history").fetchone()[0] == 3
    assert pulled(exported(2, 10, 5, steps("negative", first_error=1)), other).removed == {}


def test_a_pairwise_annotation_gives_its_aspect_verdicts_and_ratings_and_an_edit_retires_what_it_dropped(con):
    """Safe RLHF's second question (which is more harmless) is a comparison with aspect harmlessness, the optional
    1-5 ratings are ratings per criterion; an edited annotation that leaves them out retires them (to history)."""
    data = {"prompt_id": "p", "prompt": "q", "a": "x", "b": "y"}
    sent = [SentTask("t1", "pairwise", "r1", 1, 2, ("ra", "rb"), {"data": data})]

    def rating(name: str, to: str, value: int) -> dict:
        return {"from_name": name, "to_name": to, "type": "rating", "value": {"rating": value}}

    def pulled(*anns):
        return pull.store(con, collect(sent, {1: list(anns)}, {1: {2}}, {"ra", "rb"}))

    full = pref("A") + [choice("preference_harmlessness", "prompt", "B"), rating("helpfulness_a", "a", 5),
                        rating("harmlessness_b", "b", 4),
                        {"from_name": "rationale", "to_name": "prompt", "type": "textarea",
                         "value": {"text": ["a answers"]}}]
    rows, problems = to_feedback(sent[0], exported(2, 10, 5, full))
    assert problems == []
    assert sorted((c.aspect, c.winner, c.rationale) for c in rows.comparisons) == [
        ("harmlessness", "b", None), ("overall", "a", "a answers")]
    assert len({c.id for c in rows.comparisons}) == 2
    assert sorted((r.response_id, r.aspect, r.score, r.scale_min, r.scale_max, r.source) for r in rows.ratings) == [
        ("ra", "helpfulness", 5.0, 1.0, 5.0, "human"), ("rb", "harmlessness", 4.0, 1.0, 5.0, "human")]
    bad, problems = to_feedback(sent[0], exported(2, 10, 5, pref("A") + [choice("preference_harmlessness", "prompt",
                                                                                "C")]))
    assert problems and not bad.comparisons

    other = exported(2, 11, 6, pref("B") + [choice("preference_harmlessness", "prompt", "B")])
    assert pulled(exported(2, 10, 5, full), other).inserted == {"comparisons": 4, "ratings": 2}
    db.ingest(con, "annotation_tasks", [AnnotationTask("t1", "pairwise", "r1", ["ra", "rb"], {"data": data}, 1, 2)])
    labels = {(r.annotator, r.unit): r.label for r in agreement.collect(con)[0]}
    assert labels == {("annotator:5", ""): "a", ("annotator:5", "harmlessness"): "b", ("annotator:6", ""): "b",
                      ("annotator:6", "harmlessness"): "b"}  # each question an item of its own for agreement
    projects = {p.target: (p.items, p.percent_agreement) for p in agreement.report(*agreement.collect(con)).projects}
    assert projects == {"project:1": (1, 0.0), "project:1 [harmlessness]": (1, 1.0)}  # and an agreement of its own
    edited = exported(2, 10, 5, pref("B") + [rating("helpfulness_a", "a", 5)])
    written = pulled(edited, other)
    assert (written.inserted, written.replaced, written.removed) == (
        {}, {"comparisons": 1}, {"comparisons": 1, "ratings": 1})
    left = con.execute("SELECT judge, aspect, winner FROM comparisons ORDER BY 1, 2").fetchall()
    assert left == [("annotator:5", "overall", "b"), ("annotator:6", "harmlessness", "b"),
                    ("annotator:6", "overall", "b")]
    assert con.execute("SELECT aspect FROM ratings").fetchall() == [("helpfulness",)]
    assert con.execute("SELECT count(*) FROM feedback_history").fetchone()[0] == 3  # replaced 1, retired 2
    assert pulled(edited, other).removed == {}


def test_a_project_asks_the_aspect_questions_it_was_given_and_its_answers_are_those_aspects(con):
    from alignloop.annotation import configs

    default = configs.config_for("pairwise")
    assert configs.config_for("pairwise", ("harmlessness",)) == default
    assert configs.aspect_questions(default) == {"preference_harmlessness": "harmlessness"}
    asked = configs.config_for("pairwise", ("honesty", "code_style"))
    configs.validate_config(asked)  # the SDK's check of the generated XML
    assert configs.aspect_questions(asked) == {"preference_honesty": "honesty", "preference_code_style": "code_style"}
    assert "Which response is more honest? (optional)" in asked and "better for code style" in asked
    assert configs.aspect_questions(configs.config_for("pairwise", ())) == {}  # the overall question only
    for bad, message in ((("overall",), "other than 'overall'"), (("Honesty",), "lower-case"),
                         (("a", "a"), "repeat")):
        with pytest.raises(configs.ConfigError, match=message):
            configs.config_for("pairwise", bad)
        with pytest.raises(ValueError, match=message):
            push.PushRequest("pairwise", "r1", questions=bad)
    with pytest.raises(ValueError, match="asked of pairwise projects, not binary"):
        push.PushRequest("binary", "r1", questions=("honesty",))
    # pulled against its project's config: the honesty answer is a comparison of aspect honesty; the same answer
    # against a project that does not ask it is refused, not stored under a question nobody was asked
    data = {"prompt_id": "p", "prompt": "q", "a": "x", "b": "y"}
    sent = [SentTask("t1", "pairwise", "r1", 1, 2, ("ra", "rb"), {"data": data})]
    answer = exported(2, 10, 5, pref("A") + [choice("preference_honesty", "prompt", "B")])
    plan = collect(sent, {1: [answer]}, {1: {2}}, {"ra", "rb"}, {1: asked})
    assert sorted((c.aspect, c.winner) for c in plan.rows.comparisons) == [("honesty", "b"), ("overall", "a")]
    refused = collect(sent, {1: [answer]}, {1: {2}}, {"ra", "rb"}, {1: default})
    assert not refused.rows.comparisons and "preference_honesty" in refused.skipped[0].reason


def test_a_response_rated_in_two_pairs_by_one_annotator_keeps_both_ratings(con):
    """Response ra is in tasks (ra, rb) and (ra, rc): its helpfulness rated 5 in one and 2 in the other are two
    judgments (each in its context), not one overwriting the other."""
    def task(tid: str, task_id: int, other: str) -> SentTask:
        return SentTask(tid, "pairwise", "r1", 1, task_id, ("ra", other), {"data": {"prompt_id": "p"}})

    def rated(task_id: int, ann: int, score: int):
        return exported(task_id, ann, 5, pref("A") + [{"from_name": "helpfulness_a", "to_name": "a",
                                                       "type": "rating", "value": {"rating": score}}])

    plan = collect([task("t1", 2, "rb"), task("t2", 3, "rc")], {1: [rated(2, 10, 5), rated(3, 11, 2)]}, {1: {2, 3}},
                   {"ra", "rb", "rc"})
    assert pull.store(con, plan).inserted == {"comparisons": 2, "ratings": 2}
    assert sorted(con.execute("SELECT response_id, score FROM ratings").fetchall()) == [("ra", 2.0), ("ra", 5.0)]


def test_export_lead_time_is_a_non_negative_number_or_none():
    from alignloop.annotation.client import _seconds

    assert [_seconds(v) for v in (12.5, "3", 0, None, -1, "x", float("nan"), True)] == [
        12.5, 3.0, 0.0, None, None, None, None, None]


# ------------------------------------------------------------------------------------------------ agreement


def test_cohen_fleiss_alpha_by_hand():
    x, y = ["a", "b", "a"], ["a", "b", "b"]
    # p_o = 2/3; p_e = (2/3)(1/3) + (1/3)(2/3) = 4/9; kappa = (2/9) / (5/9)
    assert agreement.cohen_kappa(x, y) == pytest.approx(0.4)
    assert agreement.cohen_kappa(["a", "a"], ["a", "a"]) is None
    # P_i = 1, 1/3, 1 -> 7/9; p = 5/9, 4/9 -> P_e = 41/81; kappa = (7/9 - 41/81) / (40/81) = 22/40
    assert agreement.fleiss_kappa([["a"] * 3, ["a", "a", "b"], ["b"] * 3]) == pytest.approx(0.55)
    # coincidences o_aa = 2, o_bb = 2, o_ab = o_ba = 1; n_a = n_b = 3, n = 6: alpha = 1 - 5 * 2 / 18
    assert agreement.krippendorff_alpha_nominal([["a", "a"], ["b", "b"], ["a", "b"]]) == pytest.approx(1 - 10 / 18)
    assert agreement.majority(["a", "b"]) is None and agreement.majority(["a", "b", "b"]) == "b"


def test_report_picks_cohen_or_fleiss_and_scores_ai_and_gold():
    two = [LabelRow("binary", "r", 1, t, "", who, lab, gold="good" if t == 0 else None)
           for t, (l1, l2) in enumerate([("good", "good"), ("bad", "bad"), ("good", "bad")])
           for who, lab in (("u1", l1), ("u2", l2))]
    three = [LabelRow("pairwise", "r", 2, 0, "", u, v) for u, v in (("u1", "a"), ("u2", "a"), ("u3", "b"))]
    ai = [HumanAiRow("j", "c1", "a", "u1", "a"), HumanAiRow("j", "c1", "a", "u2", "a"),
          HumanAiRow("j", "c2", "b", "u1", "a"), HumanAiRow("j", "c2", "b", "u2", "a"),
          HumanAiRow("j", "c3", "a", "u1", "a"), HumanAiRow("j", "c3", "a", "u2", "b")]  # humans tie: left out
    rep = agreement.report(two + three, ai)
    p1, p2 = rep.projects
    assert (p1.method, p1.annotators, p1.items) == ("cohen", 2, 3)
    assert p1.kappa == pytest.approx(agreement.cohen_kappa(["good", "bad", "good"], ["good", "bad", "bad"]))
    assert (p2.method, p2.items) == ("fleiss", 1)
    (h,) = rep.human_vs_ai
    assert (h.items, h.accuracy) == (2, 0.5)
    assert {g.annotator: g.accuracy for g in rep.gold} == {"u1": 1.0, "u2": 1.0}
    assert [(t.annotator, t.tasks) for t in rep.throughput] == [("u1", 4), ("u2", 4), ("u3", 1)]


def test_agreement_store_replaces_values(con):
    rep = agreement.report([LabelRow("binary", "r", 1, 0, "", "u1", "good"),
                            LabelRow("binary", "r", 1, 0, "", "u2", "good")], [])
    assert agreement.store(con, rep, "r") > 0
    n = con.execute("SELECT count(*) FROM evaluations WHERE kind = 'annotation_agreement'").fetchone()[0]
    agreement.store(con, rep, "r")
    assert con.execute("SELECT count(*) FROM evaluations WHERE kind = 'annotation_agreement'").fetchone()[0] == n


# ------------------------------------------------------------------------------------------------ waiting


def test_quota_and_webhook_receiver_checks_secret():
    assert waiting.quota_met(3, 3) and not waiting.quota_met(2, 3)
    secret = secrets.token_hex(16)
    seen = []
    with waiting.WebhookReceiver(secret, on_event=lambda p, c: seen.append((p, dict(c)))) as hook:
        body = json.dumps({"action": "ANNOTATION_CREATED", "project": {"id": 4}, "task": {"id": 1}})
        assert httpx.post(hook.url, content=body, headers={waiting.SECRET_HEADER: "wrong"}).status_code == 401
        assert httpx.post(hook.url, content=body, headers=hook.headers()).status_code == 200
        other = json.dumps({"action": "TASKS_CREATED", "project": {"id": 4}})
        assert httpx.post(hook.url, content=other, headers=hook.headers()).status_code == 200
        assert hook.count(4) == 1 and hook.rejected == 1
    assert seen == [(4, {"ANNOTATION_CREATED": 1})]


# ------------------------------------------------------------------------------------------------ template


def test_template_build_refuses_a_folder_it_did_not_make(tmp_path, monkeypatch):
    """ensure_template removed whatever stood at its path without its marker once its build finished; a folder of
    files is refused before anything starts, and left as it was."""
    from alignloop.annotation import server

    started = []
    monkeypatch.setattr(server, "start_server", lambda folder, **kw: started.append(folder))
    monkeypatch.setattr(server, "stop_server", lambda srv: None)
    mine = tmp_path / "label-studio-data"
    mine.mkdir()
    (mine / "label_studio.sqlite3").write_text("someone's projects")
    with pytest.raises(server.LabelStudioError, match="refusing to build a Label Studio template in .*: it holds"):
        server.ensure_template(mine)
    assert not started and [p.name for p in mine.iterdir()] == ["label_studio.sqlite3"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (server.ensure_template(empty) / server._TEMPLATE_MARKER).is_file() and len(started) == 1


def test_annotate_server_writes_its_token_file_owner_only_from_the_start(tmp_path, monkeypatch):
    """The token file was written with the umask's mode (world-readable) and chmod'ed to 0600 after: for a moment,
    and for good where the chmod never came, anyone could read the token. It is created 0600, whole or not at all."""
    import os
    import stat
    from pathlib import Path

    from typer.testing import CliRunner

    from alignloop.annotation import server
    from alignloop.flows.cli import app

    seen = {}

    def fake_start(data_dir, **kw):
        seen["token"] = kw["token"]
        raise server.LabelStudioError("not starting one in a unit test")

    monkeypatch.setattr(server, "start_server", fake_start)
    monkeypatch.setattr(Path, "chmod", lambda *a, **k: None)  # a mode set after the write does not count
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "ls-token-0123456789")
    old = os.umask(0o022)
    try:
        r = CliRunner().invoke(app, ["annotate", "server", "--data-dir", str(tmp_path / "ls")])
    finally:
        os.umask(old)
    assert r.exit_code == 2 and "not starting one" in r.output, r.output
    token = tmp_path / "ls" / "alignloop-api-token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text() == seen["token"] == "ls-token-0123456789"
    assert [p.name for p in (tmp_path / "ls").iterdir()] == ["alignloop-api-token"]  # no temp file left


def test_a_label_studio_url_with_credentials_is_never_quoted_with_them():
    import socket

    from alignloop.annotation.client import LabelStudioClientError, connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LabelStudioClientError) as err:
        connect(f"http://bob:ls-pass-123@127.0.0.1:{port}", "tok", retries=0, backoff=0.01)
    assert f"cannot reach Label Studio at http://127.0.0.1:{port} " in str(err.value)
    assert "ls-pass-123" not in str(err.value) and "bob" not in str(err.value)
