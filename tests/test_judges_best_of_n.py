"""Best-of-N in the judge report: each scorer's pick among a problem's samples against majority vote, a random pick
and the oracle, at N = 1, 2, 4, on a hand-made warehouse with hand-checked figures."""

from __future__ import annotations

import json

import pytest

from alignloop.pipelines.judges.best_of_n import Sample, best_of_n_quality, pick_majority, selection_curve, sizes
from alignloop.warehouse import db
from alignloop.warehouse.records import Prompt, Rating, Response

# three problems of round r1, four samples each (final answers); P3 has no right one
ANSWERS = {"4": ["5", "4", "5", "4"], "6": ["6", "7", "7", "8"], "9": ["1", "2", "3", "2"]}
SCORES = {"rm": {"4": [0.1, 0.9, 0.2, 0.3], "6": [0.5, 0.8, 0.1, 0.2], "9": [0.1, 0.2, 0.3, 0.4]},
          "prm": {"4": [0.5, 0.5, 0.1, 0.9], "6": [0.9, 0.1, 0.2, 0.3], "9": [0.4, 0.3, 0.2, 0.1]}}


def _rating(judge: str, response: Response, score: float, source: str = "reward_model") -> Rating:
    return Rating(Rating.make_id(judge, response.id), response.prompt_id, response.id, score, 0.0, 1.0, judge,
                  source, response.round_id)


def seed(con) -> None:
    for r in ("r1", "r2"):
        db.ensure_round(con, r)
    prompts = {ref: Prompt.create([{"role": "user", "content": f"Which number is {ref}?"}], "test", reference=ref)
               for ref in ANSWERS}
    plain = Prompt.create([{"role": "user", "content": "Say hi."}], "test")  # no reference: no problem
    responses, ratings = [], []
    for ref, answers in ANSWERS.items():
        for i, a in enumerate(answers):
            r = Response.sampled(prompts[ref].id, "m", "r1", f"Let me think.\nThe answer is {a}.", {}, 0, i)
            responses.append(r)
            ratings += [_rating(judge, r, SCORES[judge][ref][i]) for judge in SCORES]
            if ref == "4":  # a judge that scored one problem only, and a person (not a scorer)
                ratings += [_rating("partial", r, float(i == 3), "ai"), _rating("ann1", r, 1.0, "human")]
    # a branch of P1's first sample (PRM800K's alternative steps) is no sample of its own
    responses.append(Response.given(prompts["4"].id, "m", "r1", "The answer is 4.", "import",
                                    parent_id=responses[0].id))
    # round r2: two samples of the second problem, scored by rm only
    for i, (a, score) in enumerate([("6", 0.2), ("8", 0.7)]):
        r = Response.sampled(prompts["6"].id, "m2", "r2", f"The answer is {a}.", {}, 0, i)
        responses.append(r)
        ratings.append(_rating("rm", r, score))
    hi = [Response.sampled(plain.id, "m", "r1", t, {}, 0, i) for i, t in enumerate(["hi", "hello"])]
    ratings += [_rating("rm", r, 0.5) for r in hi]
    db.ingest(con, "prompts", [*prompts.values(), plain])
    db.ingest(con, "responses", responses + hi)
    db.ingest(con, "ratings", ratings)


def test_selection_rules():
    def s(answer, correct):
        return Sample(answer, answer, correct)

    assert sizes(1) == [1] and sizes(4) == [1, 2, 4] and sizes(6) == [1, 2, 4, 6]
    assert pick_majority([s("5", False), s("4", True), s("4", True), s("5", False)]).answer == "5"  # tie: first seen
    assert pick_majority([s(None, False), s("3", True)]).answer == "3"  # no answer casts no vote
    curve = selection_curve([[s("1", False), s("2", True)], [s("3", True)]], lambda x: x.answer == "2")
    assert curve == {1: {"problems": 2.0, "majority": 0.5, "mean_correct": 0.5, "oracle": 0.5, "best_of_n": 0.5},
                     2: {"problems": 1.0, "majority": 0.0, "mean_correct": 0.5, "oracle": 1.0, "best_of_n": 1.0}}


def test_best_of_n_per_scorer_on_hand_made_problems():
    with db.connect(":memory:") as con:
        seed(con)
        one = {(q.judge, q.aspect): q for q in best_of_n_quality(con, "r1")}
        every = {q.judge: q for q in best_of_n_quality(con)}
    assert set(one) == {("rm", "overall"), ("prm", "overall"), ("partial", "overall")}  # no person, no branch
    rm, prm, partial = one[("rm", "overall")], one[("prm", "overall")], one[("partial", "overall")]
    assert (rm.problems, rm.samples, partial.problems) == (3, 4, 1)
    # at N=4: rm picks P1's "4" only; prm P1's "4" (0.9) and P2's "6" (0.9); majority: P1 ties 5/4 (first: 5), P2 7
    assert (rm.best_of_n, prm.best_of_n) == pytest.approx((1 / 3, 2 / 3))
    assert (rm.majority, rm.mean_correct, rm.oracle) == pytest.approx((0.0, 0.25, 2 / 3))
    assert [rm.curve[n]["best_of_n"] for n in (1, 2, 4)] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    # at N=2 prm's tie on P1 (0.5, 0.5) keeps the first sample, a 5
    assert [prm.curve[n]["best_of_n"] for n in (1, 2, 4)] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    assert [rm.curve[n]["majority"] for n in (1, 2, 4)] == pytest.approx([1 / 3, 1 / 3, 0.0])
    assert [rm.curve[n]["oracle"] for n in (1, 2, 4)] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert partial.best_of_n == 1.0 and partial.curve[4]["problems"] == 1
    # all rounds: r2's two samples of P2 are a problem of their own, counted up to N=2
    assert every["rm"].problems == 4 and every["rm"].curve[2]["problems"] == 4 and every["rm"].curve[4]["problems"] == 3
    assert every["rm"].curve[2]["best_of_n"] == pytest.approx(0.25)  # r2: 0.7 on the 8
    assert every["rm"].curve[2]["majority"] == pytest.approx(0.5)  # r2: 6 and 8 tie, the 6 came first


def test_cli_report_shows_stores_and_plots_best_of_n(tmp_path):
    from typer.testing import CliRunner

    from alignloop.flows.cli import app

    path = tmp_path / "w.duckdb"
    with db.connect(path) as con:
        seed(con)
    png = tmp_path / "judges.png"
    out = CliRunner().invoke(app, ["judge", "report", "--round", "r1", "--png", str(png), "--db", str(path),
                                   "--json"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    best = {q["judge"]: q for q in json.loads(out.output)["best_of_n"]}
    assert best["prm"]["best_of_n"] == pytest.approx(2 / 3) and best["prm"]["curve"]["2"]["best_of_n"] == 1 / 3
    assert (tmp_path / "judges_best_of_n.png").stat().st_size > 0 and not png.exists()  # nothing else to draw
    with db.connect(path) as con:
        stored = dict(con.execute("SELECT target, value FROM evaluations WHERE metric = 'best_of_n'").fetchall())
    assert stored == pytest.approx({"rm [overall] best-of-N": 1 / 3, "prm [overall] best-of-N": 2 / 3,
                                    "partial [overall] best-of-N": 1.0})
    table = CliRunner().invoke(app, ["judge", "report", "--round", "r1", "--png", str(png), "--db", str(path)],
                               env={"COLUMNS": "400"})
    assert table.exit_code == 0 and "best of N samples by each scorer" in table.output
    assert "1: 0.33, 2: 0.33, 4: 0.67" in table.output and f"best-of-N plot: {tmp_path / 'judges_best_of_n.png'}" in \
        table.output.replace("\n", "")
