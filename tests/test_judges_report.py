"""Judge quality report on hand-made comparisons; the CLI and the Prefect flow end to end with rule judges."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from alignloop.pipelines.judges import report
from alignloop.pipelines.judges.calls import CallPolicy
from alignloop.pipelines.judges.config import JudgeConfig
from alignloop.pipelines.judges.run import JudgeRequest, execute, make_judge, select_items, store
from alignloop.warehouse import db
from alignloop.warehouse.records import Comparison
from tests.fixtures_judges import *
from tests.fixtures_judges import FakeBackend, seed_round

FAST = CallPolicy(retries=1, retry_delay_s=0.0, batch_size=8)


def test_cohen_kappa_exact():
    assert report.cohen_kappa(["a", "a", "b", "b"], ["a", "a", "b", "b"]) == pytest.approx(1.0)
    # p_o = 0.5, p_e = 0.5 -> 0
    assert report.cohen_kappa(["a", "b", "a", "b"], ["a", "a", "b", "b"]) == pytest.approx(0.0)
    assert report.cohen_kappa(["a", "a"], ["a", "a"]) is None and report.cohen_kappa([], []) is None


def test_report_measures_position_bias_and_human_agreement(seeded, tmp_path):
    first_lover = make_judge("pairwise", FakeBackend(reply=lambda c: "A", name="biased"), JudgeConfig(calls=FAST))
    fair = make_judge("pairwise", FakeBackend(name="fair"), JudgeConfig(calls=FAST))
    for j in (first_lover, fair):
        items, _ = select_items(seeded, JudgeRequest("pairwise", "r1"), j)
        store(seeded, execute(j, "pairwise", items, "r1"))
    # Human labels on the same pairs, stored in the opposite order for half of them, all agreeing with quality.
    rows = seeded.execute("SELECT response_a, response_b, winner FROM comparisons WHERE judge LIKE 'fair:%'")
    human = []
    for k, (a, b, w) in enumerate(rows.fetchall()):
        if k % 2:
            a, b, w = b, a, {"a": "b", "b": "a"}.get(w, w)
        human.append(Comparison(Comparison.make_id("ann1", a, b), "p", a, b, w, "ann1", "human", "r1"))
    db.ingest(seeded, "comparisons", human)
    by = {q.judge.split(":")[0]: q for q in report.judge_quality(seeded)}
    assert set(by) == {"biased", "fair"}
    assert by["biased"].first_position == 1.0 and by["biased"].consistency == 0.0
    assert by["fair"].first_position == pytest.approx(0.5) and by["fair"].consistency == 1.0
    assert by["fair"].human_pairs == 9 and by["fair"].human_accuracy == 1.0 and by["fair"].human_kappa == 1.0
    # all ties: no decided verdict to score (not an accuracy of 0.00), every pair tied, half credit each
    assert (by["biased"].human_accuracy, by["biased"].human_ties, by["biased"].human_accuracy_half) == (None, 1.0, 0.5)
    assert (by["fair"].human_ties, by["fair"].human_accuracy_half) == (0.0, 1.0)
    assert by["fair"].invalid_rate == 0.0 and by["fair"].calls == pytest.approx(18)
    # longer answers in the fake data have fewer 'good's in some prompts: the rate is measured, not assumed
    assert 0.0 <= by["fair"].longer <= 1.0
    # seven figures each (their invalid rates are stored from the verdicts section, which reads every kind)
    assert report.store(seeded, list(by.values())) == 14
    assert report.store(seeded, list(by.values())) == 14  # replaced, not duplicated
    assert seeded.execute("SELECT count(*) FROM evaluations WHERE kind = 'judge_quality'").fetchone()[0] == 14
    png = report.plot(list(by.values()), tmp_path / "q.png")
    assert png.stat().st_size > 1000


def test_cli_verifier_judge_and_report(tmp_path):
    from alignloop.flows.cli import app

    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        seed_round(con)
    runner = CliRunner()
    res = runner.invoke(app, ["judge", "binary", "--round", "r1", "--judge", "verifier:short_on_topic:8", "--db",
                              path, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["selected"] == 9 and out["inserted"] == {"ratings": 9}
    again = json.loads(runner.invoke(app, ["judge", "binary", "--round", "r1", "--judge",
                                           "verifier:short_on_topic:8", "--db", path, "--json"]).stdout)
    assert again["selected"] == 0 and again["cached"] == 9
    bad = runner.invoke(app, ["judge", "pairwise", "--round", "r1", "--judge", "verifier:final_answer", "--db", path])
    assert bad.exit_code == 2 and "binary" in bad.output
    rep = runner.invoke(app, ["judge", "report", "--db", path, "--json", "--png", str(tmp_path / "r.png")])
    assert rep.exit_code == 0 and json.loads(rep.stdout) == {"pairwise": [], "listwise": [], "ratings": [], "steps": [],
                                                         "best_of_n": [], "verdicts": [],  # rules read no replies
                                                         "tie_rule": report.TIE_RULE}
    # verifier ratings are no pairwise judge: the table view says what would give it rows instead of printing none
    rep = runner.invoke(app, ["judge", "report", "--round", "r1", "--db", path], env={"COLUMNS": "200"})
    assert rep.exit_code == 0
    assert "no AI pairwise judgments in round r1 to report on yet; 'alignloop judge pairwise" in rep.output


def test_flow_fn_with_injected_judge(tmp_path, prefect_harness):
    from alignloop.flows.judge import JudgeParams, judge

    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        seed_round(con)
    backend = FakeBackend()
    params = JudgeParams(kind="pairwise", round="r1", db=path, chunk_size=4)
    j = make_judge("pairwise", backend, params.config())
    res = judge.fn(params, j)
    assert res["selected"] == 9 and res["inserted"] == {"comparisons": 9}
    assert judge.fn(params, j)["cached"] == 9 and backend.logprob_calls == 18
    from alignloop.flows.cli import app

    # the table view: a row per judge on a wide terminal, a column per judge on a narrow one; no figure cut
    for width, layout in (("200", "judge"), ("80", "metric")):
        rep = CliRunner().invoke(app, ["judge", "report", "--db", path, "--png", ""], env={"COLUMNS": width})
        assert rep.exit_code == 0, rep.output
        assert f"┃ {layout}" in rep.output and "P(first)" in rep.output and "…" not in rep.output, rep.output


def test_rating_judges_are_measured_on_the_pairs_people_compared(tmp_path):
    from alignloop.flows.cli import app
    from alignloop.pipelines.report import JUDGE_METRICS, write_report
    from tests.fixtures_datasets import Wh

    path = str(tmp_path / "w.duckdb")
    rm, rule = "rm:runs/rm/model:orm", "verifier:short"
    with db.connect(path) as con:
        wh = Wh(con)
        scored = {  # prompt: (human winner, rm score of the longer answer a, of the short answer b)
            "p1": ("a", 2.0, 1.0),  # agrees
            "p2": ("b", 3.0, 1.0),  # disagrees
            "p3": ("a", 1.0, 1.0),  # the scores tie: not decided, half in the half-credit figure
            "p4": ("tie", 5.0, 1.0),  # people saw no winner: not counted
        }
        for text, (winner, score_a, score_b) in scored.items():
            p = wh.prompt(text, split="test" if text in ("p2", "p3") else "train")
            a, b = wh.responses(p, f"{text} a long and careful answer", "short")
            wh.compare(p, a, b, winner)
            wh.compare(p, a, b, "b", source="ai", judge="ai-judge")  # an AI verdict is no reference
            wh.rate(p, a, score_a, source="rm", judge=rm)
            wh.rate(p, b, score_b, source="rm", judge=rm)
            wh.rate(p, a, 9, judge="ann1")  # people's own ratings are not a judge to measure
            wh.rate(p, b, 1, judge="ann1")
            if text == "p1":
                wh.rate(p, a, 0, 0, 1, source="rule", judge=rule, aspect="short")
                wh.rate(p, b, 1, 0, 1, source="rule", judge=rule, aspect="short")
        p = wh.prompt("p5")
        a, b = wh.responses(p, "only one side scored", "x")
        wh.compare(p, a, b, "a")
        wh.rate(p, a, 4.0, source="rm", judge=rm)
        rated = {q.target: q for q in report.rating_quality(con)}
        assert report.rating_quality(con, "another-round") == []
        assert set(rated) == {f"{rm} [overall]", f"{rule} [short]"}
        q = rated[f"{rm} [overall]"]
        assert (q.human_pairs, q.human_accuracy, q.score_ties, q.longer) == (3, pytest.approx(0.5),
                                                                            pytest.approx(1 / 3), 1.0)
        assert q.human_accuracy_half == pytest.approx(0.5)  # (1 + 0 + 1/2) / 3
        assert (q.heldout_pairs, q.heldout_accuracy, q.heldout_accuracy_half) == (2, 0.0, 0.25)  # p2 wrong, p3 a tie
        r = rated[f"{rule} [short]"]
        assert (r.human_pairs, r.human_accuracy, r.human_accuracy_half, r.score_ties, r.longer) == (1, 0.0, 0.0, 0.0,
                                                                                                    0.0)
        assert (r.heldout_pairs, r.heldout_accuracy, r.heldout_accuracy_half) == (0, None, None)
    res = CliRunner().invoke(app, ["judge", "report", "--db", path, "--json", "--png", str(tmp_path / "q.png")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["judge"] for r in out["pairwise"]] == ["ai-judge"]
    assert {(r["judge"], r["human_pairs"]) for r in out["ratings"]} == {(rm, 3), (rule, 1)}
    assert (tmp_path / "q.png").stat().st_size > 1000
    res = CliRunner().invoke(app, ["judge", "report", "--db", path, "--png", ""], env={"COLUMNS": "200"})
    assert "rating judges on pairs people compared" in res.output and f"{rm} [overall]" in res.output, res.output
    with db.connect(path) as con:
        stored = con.execute("SELECT metric, value FROM evaluations WHERE kind = 'judge_quality' AND target = $t "
                             "ORDER BY metric", {"t": f"{rm} [overall]"}).fetchall()
        assert stored == [("heldout_accuracy", 0.0), ("heldout_accuracy_half", 0.25), ("human_accuracy", 0.5),
                          ("human_accuracy_half", 0.5), ("longer", 1.0), ("score_ties", pytest.approx(1 / 3))]
        page = write_report(con, tmp_path / "rep").read_text()
    assert "<h2>Judges</h2>" in page and f"<td>{rm} [overall]</td>" in page and "<th>score_ties</th>" in page
    assert "<th>first_position</th>" not in page  # not measured (no single-order verdicts): no empty column
    assert (tmp_path / "rep" / "judges.png").stat().st_size > 1000
    # the report's table and plot know every figure the judge report stores, by its stored name
    assert set(report.METRICS) | set(report.RATING_METRICS) <= set(JUDGE_METRICS)


def test_step_judges_are_measured_on_the_steps_people_labelled(tmp_path):
    from alignloop.flows.cli import app
    from alignloop.pipelines.report import JUDGE_METRICS, write_report
    from tests.fixtures_datasets import Wh

    path = str(tmp_path / "w.duckdb")
    ai, prm = "ai-steps", "runs/prm/model:prm-steps@v2"
    labelled = {  # solution: {labeller: labels}, None where a step is unlabelled
        "s1": {"ann1": [1, 1, -1], ai: [1, -1, -1], prm: [-1, -1, -1]},
        "s2": {"ann1": [1, 0, 1], ai: [1, 0, 1]},
        "s3": {"ann2": [1, None], ai: [0, 1]},  # one step compared
        "s4": {"ann1": [1, -1], "ann2": [1, 1], ai: [1, -1]},  # two people: each compared
        "s5": {ai: [1, 1]},  # nobody labelled it: not counted
    }
    with db.connect(path) as con:
        wh = Wh(con)
        for name, by in labelled.items():
            p = wh.prompt(f"question {name}")
            r = wh.response(p, f"answer {name}", steps=[f"step {i}" for i in range(len(next(iter(by.values()))))])
            for who, labels in by.items():
                wh.step_labels(p, r, labels, source="human" if who.startswith("ann") else
                               "reward_model" if who == prm else "ai", judge=who)
        got = {q.judge: q for q in report.step_quality(con)}
        assert report.step_quality(con, "another-round") == []
    q = got[ai]
    mine = [1, -1, -1, 1, 0, 1, 0, 1, -1, 1, -1]  # s1, s2, s3 step 0, s4 against ann1 then ann2
    theirs = [1, 1, -1, 1, 0, 1, 1, 1, -1, 1, 1]
    assert (q.steps, q.step_accuracy, q.solutions) == (11, pytest.approx(8 / 11), 5)
    assert q.step_kappa == pytest.approx(report.cohen_kappa(list(map(str, mine)), list(map(str, theirs))))
    # same first error: s2 (none, none), s3 (none, none), s4 with ann1 (step 1 both); not s1 (1 vs 2), s4 with ann2
    assert q.first_error_agreement == pytest.approx(3 / 5)
    assert (q.negative_rate, q.human_negative_rate) == (pytest.approx(4 / 11), pytest.approx(2 / 11))
    p = got[prm]
    assert (p.steps, p.step_accuracy, p.first_error_agreement, p.negative_rate) == (3, pytest.approx(1 / 3), 0.0,
                                                                                    1.0)
    res = CliRunner().invoke(app, ["judge", "report", "--db", path, "--json", "--png", str(tmp_path / "q.png")])
    assert res.exit_code == 0, res.output
    assert {(r["judge"], r["steps"]) for r in json.loads(res.stdout)["steps"]} == {(ai, 11), (prm, 3)}
    assert (tmp_path / "q.png").stat().st_size > 1000
    res = CliRunner().invoke(app, ["judge", "report", "--db", path, "--png", ""], env={"COLUMNS": "200"})
    assert "step judges on steps people labelled" in res.output and prm in res.output, res.output
    with db.connect(path) as con:
        stored = dict(con.execute("SELECT metric, value FROM evaluations WHERE kind = 'judge_quality' AND target = $t",
                                  {"t": ai}).fetchall())
        assert stored["step_accuracy"] == pytest.approx(8 / 11) and set(stored) == set(report.STEP_METRICS)
        page = write_report(con, tmp_path / "rep").read_text()
    assert "<th>first_error_agreement</th>" in page and set(report.STEP_METRICS) <= set(JUDGE_METRICS)


def test_listwise_judges_are_measured_under_their_orders_and_against_people(seeded, tmp_path):
    """A judge that ranks by quality, one that always ranks the answer shown first first, one whose replies cannot be
    read; people rank one prompt's answers (once in quality order, once reversed) and compare two pairs of
    another's: each figure is checked by hand."""
    from alignloop.flows.cli import app
    from alignloop.pipelines.report import JUDGE_METRICS
    from alignloop.warehouse.records import Ranking
    from tests.fixtures_judges import quality
    from tests.test_judges_kinds import rank_by_quality

    config = JudgeConfig(permutations=3, calls=FAST)  # cyclic orders of 3: each answer is shown first once
    for name, reply in (("fair", rank_by_quality), ("first", lambda c: "A > B > C"), ("lost", lambda c: "no idea")):
        judge = make_judge("listwise", FakeBackend(reply=reply, name=name), config)
        items, _ = select_items(seeded, JudgeRequest("listwise", "r1", group_size=3), judge)
        store(seeded, execute(judge, "listwise", items, "r1"))
    answers: dict[str, list[tuple[str, str]]] = {}
    for rid, pid, text in seeded.execute("SELECT id, prompt_id, text FROM responses ORDER BY sample_index").fetchall():
        answers.setdefault(pid, []).append((rid, text))
    (p0, first_prompt), (p1, second_prompt) = list(answers.items())[:2]
    best_first = [rid for rid, text in sorted(first_prompt, key=lambda a: -quality(a[1]))]
    db.ingest(seeded, "rankings", [Ranking(Ranking.make_id(who, order), p0, order, who, "human", "r1")
                                   for who, order in (("ann1", best_first), ("ann2", best_first[::-1]))])
    by_quality = [rid for rid, text in sorted(second_prompt, key=lambda a: -quality(a[1]))]
    db.ingest(seeded, "comparisons", [  # two verdicts agreeing with quality, and a tie (no winner: not counted)
        Comparison(Comparison.make_id("ann1", by_quality[0], by_quality[2]), p1, by_quality[0], by_quality[2], "a",
                   "ann1", "human", "r1"),
        Comparison(Comparison.make_id("ann1", by_quality[2], by_quality[1]), p1, by_quality[2], by_quality[1], "b",
                   "ann1", "human", "r1"),
        Comparison(Comparison.make_id("ann1", by_quality[0], by_quality[1]), p1, by_quality[0], by_quality[1],
                   "tie", "ann1", "human", "r1")])
    by = {q.judge.split(":")[0]: q for q in report.listwise_quality(seeded)}
    fair, first, lost = by["fair"], by["first"], by["lost"]
    assert (fair.rankings, fair.consistency, fair.invalid_rate) == (3, 1.0, 0.0)
    assert fair.first_position == pytest.approx(1 / 3) and fair.chance == pytest.approx(1 / 3)
    longest_is_best = [max(a, key=lambda x: len(x[1])) == max(a, key=lambda x: quality(x[1])) for a in answers.values()]
    assert fair.longer == pytest.approx(sum(longest_is_best) / 3)
    # people: the same best in one of their two rankings, tau +1 and -1; both pairwise winners ranked higher
    assert (fair.human_lists, fair.human_top_agreement, fair.human_tau) == (2, 0.5, 0.0)
    assert (fair.human_pairs, fair.human_accuracy) == (2, 1.0)
    # the position-biased judge: its three orders never agree on a best, and the first shown is always its best
    assert (first.consistency, first.first_position, first.invalid_rate) == (0.0, 1.0, 0.0)
    assert (lost.invalid_rate, lost.consistency, lost.first_position, lost.human_lists) == (1.0, None, None, 0)
    assert report.kendall_tau(["a", "b", "c"], ["a", "c", "b"]) == pytest.approx(1 / 3)
    # an AI ranking imported without replies (as Nectar's GPT-4 rankings are): no orders to read, still compared
    # with people's ranking of the same answers
    (p2, third_prompt), = list(answers.items())[2:]
    imported = [rid for rid, _ in third_prompt]
    db.ingest(seeded, "rankings", [Ranking(Ranking.make_id("gpt-4", imported), p2, imported, "gpt-4", "ai", "r1"),
                                   Ranking(Ranking.make_id("ann1", imported), p2, imported, "ann1", "human", "r1")])
    gpt = {q.judge: q for q in report.listwise_quality(seeded)}["gpt-4"]
    assert (gpt.rankings, gpt.consistency, gpt.first_position, gpt.invalid_rate) == (1, None, None, None)
    assert (gpt.human_lists, gpt.human_top_agreement, gpt.human_tau) == (1, 1.0, 1.0)
    path = str(tmp_path / "w.duckdb")
    seeded.execute("ATTACH $p AS out", {"p": path})
    seeded.execute("COPY FROM DATABASE memory TO out")
    seeded.execute("DETACH out")
    res = CliRunner().invoke(app, ["judge", "report", "--db", path, "--json", "--png", str(tmp_path / "q.png")])
    assert res.exit_code == 0, res.output
    res_json = res.stdout
    listed = {r["judge"].split(":")[0]: r for r in json.loads(res.stdout)["listwise"]}
    assert set(listed) == {"fair", "first", "lost", "gpt-4"} and listed["first"]["first_position"] == 1.0
    res = CliRunner().invoke(app, ["judge", "report", "--db", path, "--png", ""], env={"COLUMNS": "200"})
    assert "listwise judges" in res.output and "people same best" in res.output, res.output
    with db.connect(path) as con:
        stored = dict(con.execute("SELECT metric, value FROM evaluations WHERE kind = 'judge_quality' AND target = $t",
                                  {"t": fair.judge}).fetchall())
    assert stored["first_position"] == pytest.approx(1 / 3)
    assert set(stored) == set(report.LISTWISE_METRICS) | {"invalid_rate"} and stored["invalid_rate"] == 0.0
    read = {r["judge"].split(":")[0]: r for r in json.loads(res_json)["verdicts"]}
    assert (read["lost"]["verdicts"], read["lost"]["invalid_rate"], read["fair"]["invalid_rate"]) == (9, 1.0, 0.0)
    assert read["lost"]["reasons"] == {"no verdict: the template asks for the answers' letters best first, separated "
                                       "by '>', alone or after 'Ranking:'": 9}
    assert "gpt-4" not in read  # imported without replies: none to read
    assert set(report.LISTWISE_METRICS) <= set(JUDGE_METRICS)


def test_ties_are_scored_by_one_rule_in_every_section(tmp_path):
    """A pairwise judge that ties both pairs people decided, a rating judge that scores both sides alike and a
    listwise judge whose Borda points tie score the same everywhere: no accuracy over decided pairs (none decided),
    a tie rate of 1, half credit 0.5; the table, --json and the stored evaluations say so."""
    from alignloop.flows.cli import app
    from tests.fixtures_datasets import Wh

    path = str(tmp_path / "w.duckdb")
    with db.connect(path) as con:
        wh = Wh(con)
        for text, winner in (("p1", "a"), ("p2", "b")):
            p = wh.prompt(text)
            a, b = wh.responses(p, f"{text} the first answer", f"{text} another")
            wh.compare(p, a, b, winner)
            wh.compare(p, a, b, "tie", source="ai", judge="tier")
            wh.rate(p, a, 5, source="ai", judge="flat")
            wh.rate(p, b, 5, source="ai", judge="flat")
            wh.rank(p, [a, b], source="ai", judge="even", scores=[1.0, 1.0])
    res = CliRunner().invoke(app, ["judge", "report", "--db", path, "--json", "--png", ""])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["tie_rule"] == report.TIE_RULE and "decided" in report.TIE_RULE
    (pairwise,), (rated,), (listed,) = out["pairwise"], out["ratings"], out["listwise"]
    for row, ties in ((pairwise, "human_ties"), (rated, "score_ties"), (listed, "human_ties")):
        assert (row["human_pairs"], row["human_accuracy"], row[ties], row["human_accuracy_half"]) == (2, None, 1.0,
                                                                                                       0.5), row
    with db.connect(path) as con:
        stored = con.execute("SELECT target, metric, value, details->>'tie_rule' FROM evaluations WHERE metric IN "
                             "('human_accuracy', 'human_ties', 'score_ties', 'human_accuracy_half') "
                             "ORDER BY target, metric").fetchall()
    assert [(t, m, v) for t, m, v, _ in stored] == [
        ("even", "human_accuracy", None), ("even", "human_accuracy_half", 0.5), ("even", "human_ties", 1.0),
        ("flat [overall]", "human_accuracy", None), ("flat [overall]", "human_accuracy_half", 0.5),
        ("flat [overall]", "score_ties", 1.0),
        ("tier", "human_accuracy", None), ("tier", "human_accuracy_half", 0.5), ("tier", "human_ties", 1.0)]
    assert {rule for *_, rule in stored} == {report.TIE_RULE}
    table = CliRunner().invoke(app, ["judge", "report", "--db", path, "--png", ""], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "ties count half" in table.output, table.output
