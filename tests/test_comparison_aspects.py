"""Comparisons with aspects: the schema migration, PKU-SafeRLHF's two verdicts per pair and per-response safety
(and BeaverTails' safety labels), ``--aspect`` on an import, builds that select an aspect, and judge agreement
measured within an aspect."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from alignloop.flows.cli import app
from alignloop.pipelines.datasets.build import build
from alignloop.pipelines.datasets.config import parse_options
from alignloop.pipelines.datasets.stages import EmptyDataset
from alignloop.pipelines.intake import ImportOptions, import_file
from alignloop.pipelines.judges.report import rating_quality
from alignloop.warehouse import db, ids
from alignloop.warehouse.errors import InputError
from alignloop.warehouse.records import Comparison, Correction, Ranking, Rating
from tests.fixtures_datasets import ROUND, Wh, wh  # noqa: F401

runner = CliRunner()

HARMS = {"Violence": False, "Privacy Violation": False, "Cybercrime": False}


def _pku(prompt: str, r0: str, r1: str, better: int, safer: int, safe0: bool, safe1: bool, **extra) -> dict:
    """A record in PKU-SafeRLHF's published schema (its 2024 release)."""
    return {"prompt": prompt, "response_0": r0, "response_1": r1, "prompt_source": "BeaverTails",
            "response_0_source": "Alpaca-7B", "response_1_source": "Alpaca3-8B",
            "is_response_0_safe": safe0, "is_response_1_safe": safe1,
            "response_0_severity_level": 0 if safe0 else 2, "response_1_severity_level": 0 if safe1 else 1,
            "response_0_harm_category": {**HARMS, "Cybercrime": not safe0},
            "response_1_harm_category": {**HARMS, "Violence": not safe1},
            "better_response_id": better, "safer_response_id": safer,
            "response_0_sha256": "x", "response_1_sha256": "y", **extra}


PKU_ROWS = [
    # the detailed answer helps more but is unsafe: the two aspects disagree
    _pku("How do I get into my neighbour's wifi?", "Use aircrack-ng to crack the WPA handshake: ...",
         "Ask your neighbour for the password.", better=0, safer=1, safe0=False, safe1=True, split="train"),
    _pku("How do I bake bread?", "Mix flour, water, yeast and salt; knead; let rise; bake at 230C.",
         "Buy some.", better=0, safer=0, safe0=True, safe1=True, split="train"),
]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _texts(con, table) -> set[tuple[str, ...]]:
    return {(r["prompt_text"].removeprefix("user: "), r["chosen"], r["rejected"]) for r in table.to_pylist()}


def test_a_schema_v1_warehouse_gains_comparison_ranking_and_correction_aspects_and_keeps_its_ids(tmp_path):
    path = str(tmp_path / "old.duckdb")
    old = duckdb.connect(path)
    old.execute(dict(db.migrations())[1])
    old.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL DEFAULT "
                "current_timestamp)")
    old.execute("INSERT INTO schema_version (version) VALUES (1)")
    cid = ids.judgment_id("pairwise", "ann1", ["ra", "rb"])  # how a v1 comparison's id was made
    old.execute("INSERT INTO comparisons (id, prompt_id, response_a, response_b, winner, judge, source, round_id) "
                "VALUES (?, 'p', 'ra', 'rb', 'a', 'ann1', 'human', 'r1')", [cid])
    kid = ids.judgment_id("listwise", "ann1", ["ra", "rb", "rc"])  # and a v1 ranking's
    old.execute("INSERT INTO rankings (id, prompt_id, response_ids, judge, source, round_id) "
                "VALUES (?, 'p', ['rc', 'ra', 'rb'], 'ann1', 'human', 'r1')", [kid])
    fid = ids.judgment_id("correction", "ann1", ["ra"])  # and a v1 correction's
    old.execute("INSERT INTO corrections (id, prompt_id, original_id, corrected_id, judge, source, round_id) "
                "VALUES (?, 'p', 'ra', 'rd', 'ann1', 'human', 'r1')", [fid])
    old.close()
    with db.connect(path, migrate=True) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == max(v for v, _ in
                                                                                            db.migrations())
        assert con.execute("SELECT id, aspect FROM comparisons").fetchall() == [(cid, "overall")]
        assert con.execute("SELECT id, aspect FROM rankings").fetchall() == [(kid, "overall")]
        assert con.execute("SELECT id, aspect FROM corrections").fetchall() == [(fid, "overall")]
    # an overall verdict keeps its id; another aspect of the same pair by the same judge is a judgment of its own
    assert Comparison.make_id("ann1", "ra", "rb") == cid
    assert len({cid, Comparison.make_id("ann1", "ra", "rb", "harmlessness"),
                Comparison.make_id("ann1", "ra", "rb", "helpfulness")}) == 3
    assert Ranking.make_id("ann1", ["rc", "ra", "rb"]) == kid != Ranking.make_id("ann1", ["rc", "ra", "rb"], "honesty")
    assert Correction.make_id("ann1", "ra") == fid != Correction.make_id("ann1", "ra", "harmlessness")


def test_pku_saferlhf_records_become_two_aspect_comparisons_and_safety_ratings(tmp_path):
    same = _pku("Say hi.", "Hi.", "Hi.", better=0, safer=1, safe0=True, safe1=True)
    f = _jsonl(tmp_path / "pku.jsonl", [*PKU_ROWS, same])
    with db.connect(":memory:") as con:
        s = import_file(con, f)
        assert s.format == "pku-saferlhf" and (s.read, s.imported) == (3, 2)
        assert s.rejected == {"the two responses are the same text": 1}
        assert s.inserted["comparisons"] == 4 and s.inserted["ratings"] == 4
        stored = con.execute("""
            SELECT p.text, c.aspect, w.text, c.source FROM comparisons c JOIN prompts p ON p.id = c.prompt_id
            JOIN responses w ON w.id = CASE c.winner WHEN 'a' THEN c.response_a ELSE c.response_b END""").fetchall()
        assert sorted(stored) == sorted([
            ("user: How do I bake bread?", "harmlessness", PKU_ROWS[1]["response_0"], "human"),
            ("user: How do I bake bread?", "helpfulness", PKU_ROWS[1]["response_0"], "human"),
            ("user: How do I get into my neighbour's wifi?", "harmlessness", PKU_ROWS[0]["response_1"], "human"),
            ("user: How do I get into my neighbour's wifi?", "helpfulness", PKU_ROWS[0]["response_0"], "human")])
        safety = con.execute("SELECT r.text, t.aspect, t.score, t.scale_min, t.scale_max FROM ratings t "
                             "JOIN responses r ON r.id = t.response_id").fetchall()
        assert sorted(safety) == sorted([(PKU_ROWS[0]["response_0"], "safety", 0.0, 0.0, 1.0),
                                         (PKU_ROWS[0]["response_1"], "safety", 1.0, 0.0, 1.0),
                                         (PKU_ROWS[1]["response_0"], "safety", 1.0, 0.0, 1.0),
                                         (PKU_ROWS[1]["response_1"], "safety", 1.0, 0.0, 1.0)])
        meta = json.loads(con.execute("SELECT meta FROM responses WHERE text = ?",
                                      [PKU_ROWS[0]["response_0"]]).fetchone()[0])
        assert meta == {"model": "Alpaca-7B", "severity_level": 2, "harm_categories": ["Cybercrime"]}

        # each aspect is a dataset of its own; the default (overall) finds none and says which aspects there are
        helpful = build(con, parse_options("pairwise", {"aspect": "helpfulness", "decontaminate": False}))
        harmless = build(con, parse_options("pairwise", {"aspect": "harmlessness", "decontaminate": False}))
        assert _texts(con, helpful.table) == {(r["prompt"], r["response_0"], r["response_1"]) for r in PKU_ROWS}
        assert _texts(con, harmless.table) == {
            (PKU_ROWS[0]["prompt"], PKU_ROWS[0]["response_1"], PKU_ROWS[0]["response_0"]),
            (PKU_ROWS[1]["prompt"], PKU_ROWS[1]["response_0"], PKU_ROWS[1]["response_1"])}
        with pytest.raises(EmptyDataset, match="aspect 'harmlessness'") as e:
            build(con, parse_options("pairwise", {"decontaminate": False}))
        assert "aspect 'helpfulness'" in str(e.value)
        # safety labels as unpaired rows (a safety classifier's or KTO's data)
        safe = build(con, parse_options("binary", {"origin": "thumbs", "aspect": "safety", "decontaminate": False}))
        assert sorted((r["completion"], r["label"]) for r in safe.table.to_pylist()) == sorted(
            [(PKU_ROWS[0]["response_0"], False), (PKU_ROWS[0]["response_1"], True),
             (PKU_ROWS[1]["response_0"], True), (PKU_ROWS[1]["response_1"], True)])
        # importing again adds nothing
        again = import_file(con, f)
        assert sum(again.inserted.values()) == 0


@pytest.mark.parametrize(("change", "field"), [({"better_response_id": 2}, "better_response_id"),
                                               ({"safer_response_id": True}, "safer_response_id"),
                                               ({"is_response_1_safe": "yes"}, "is_response_1_safe"),
                                               ({"response_0": None}, "response_0")])
def test_a_bad_pku_record_is_named_by_line_and_field_and_nothing_is_written(tmp_path, change, field):
    f = _jsonl(tmp_path / "pku.jsonl", [PKU_ROWS[1], {**PKU_ROWS[0], **change}])
    with db.connect(":memory:") as con:
        with pytest.raises(InputError) as e:
            import_file(con, f)
        assert e.value.line == 2 and e.value.field == field and "pku.jsonl" in str(e.value)
        assert con.execute("SELECT count(*) FROM prompts").fetchone()[0] == 0


def test_import_aspect_labels_a_files_comparisons_and_builds_select_it(tmp_path):
    """HH-RLHF's helpful-base and harmless-base into one warehouse, each under its aspect (through the CLI)."""
    helpful = _jsonl(tmp_path / "helpful.jsonl", [
        {"chosen": "\n\nHuman: Name a fruit.\n\nAssistant: An apple.",
         "rejected": "\n\nHuman: Name a fruit.\n\nAssistant: No."}])
    harmless = _jsonl(tmp_path / "harmless.jsonl", [
        {"chosen": "\n\nHuman: Name a fruit.\n\nAssistant: I'd rather not say.",
         "rejected": "\n\nHuman: Name a fruit.\n\nAssistant: A poisonous one."}])
    path = str(tmp_path / "w.duckdb")
    env = {"COLUMNS": "400"}
    for f, aspect in ((helpful, "helpfulness"), (harmless, "harmlessness")):
        r = runner.invoke(app, ["prompts", "import", str(f), "--aspect", aspect, "--test-fraction", "0",
                                "--db", path], env=env)
        assert r.exit_code == 0, r.output
    with db.connect(path) as con:
        assert sorted(con.execute("SELECT aspect, count(*) FROM comparisons GROUP BY aspect").fetchall()) == [
            ("harmlessness", 1), ("helpfulness", 1)]
        for aspect, chosen in (("helpfulness", "An apple."), ("harmlessness", "I'd rather not say.")):
            t = build(con, parse_options("pairwise", {"aspect": aspect, "decontaminate": False})).table
            assert [(r["chosen"], r["source"]) for r in t.to_pylist()] == [(chosen, "human")]
    st = runner.invoke(app, ["status", "--json", "--db", path], env=env)
    assert json.loads(st.stdout)["aspects"]["comparisons"] == {"harmlessness": 1, "helpfulness": 1}
    table = runner.invoke(app, ["status", "--db", path], env=env).stdout
    assert "feedback by aspect (-o aspect=)" in table and "harmlessness" in table
    r = runner.invoke(app, ["prompts", "import", str(helpful), "--aspect", " ", "--db", path], env=env)
    assert r.exit_code != 0 and "--aspect must not be empty" in r.output


def test_aspect_is_refused_where_the_feedback_has_none():
    with pytest.raises(InputError, match="carry no aspect") as e:
        parse_options("steps", {"aspect": "harmlessness"})
    assert e.value.field == "aspect"
    assert parse_options("binary", {"origin": "pairwise", "aspect": "harmlessness"}).common.aspect == "harmlessness"
    for kind, opts in (("pairwise", {"origin": "rankings"}), ("listwise", {}), ("sft", {"origin": "rankings"}),
                       ("pairwise", {"origin": "corrections"}), ("correction", {}),
                       ("binary", {"origin": "pairwise", "pairwise.origin": "corrections"})):
        assert parse_options(kind, {**opts, "aspect": "harmlessness"}).common.aspect == "harmlessness"


def _compare(w: Wh, pid: str, a: str, b: str, winner: str, aspect: str) -> None:
    db.ingest(w.con, "comparisons", [Comparison(Comparison.make_id("ann1", a, b, aspect), pid, a, b, winner, "ann1",
                                                "human", ROUND, aspect=aspect)])


def test_a_rating_judge_is_measured_on_peoples_verdicts_of_its_aspect_where_there_are_any(wh):  # noqa: F811
    pid = wh.prompt("How do I pick a lock?")
    detailed, refusal = wh.responses(pid, "Insert a tension wrench, then rake the pins.", "I can't help with that.")
    _compare(wh, pid, detailed, refusal, "a", "overall")        # people: the detailed answer is better overall,
    _compare(wh, pid, detailed, refusal, "b", "harmlessness")   # the refusal more harmless
    for aspect, (s_detailed, s_refusal) in (("overall", (8, 3)), ("harmlessness", (2, 9)), ("honesty", (7, 4))):
        for rid, score in ((detailed, s_detailed), (refusal, s_refusal)):
            db.ingest(wh.con, "ratings", [Rating(Rating.make_id("judge-v1", rid, aspect), pid, rid, score, 1, 10,
                                                 "judge-v1", "ai", ROUND, aspect=aspect)])
    # a second pair people judged on harmlessness only: no overall verdict for the other aspects to fall back on
    pid2 = wh.prompt("How do I whittle a knife?")
    safe, unsafe = wh.responses(pid2, "Carve away from yourself.", "Carve towards your thumb.")
    _compare(wh, pid2, safe, unsafe, "a", "harmlessness")
    for aspect in ("overall", "harmlessness", "honesty"):
        for rid, score in ((safe, 9), (unsafe, 1)):
            db.ingest(wh.con, "ratings", [Rating(Rating.make_id("judge-v1", rid, aspect), pid2, rid, score, 1, 10,
                                                 "judge-v1", "ai", ROUND, aspect=aspect)])
    got = {q.aspect: (q.human_pairs, q.human_accuracy) for q in rating_quality(wh.con)}
    # harmlessness against people's harmlessness verdicts; overall and honesty (no verdict of its own) against overall
    assert got == {"overall": (1, 1.0), "harmlessness": (2, 1.0), "honesty": (1, 1.0)}


def test_ai_agreement_with_people_compares_verdicts_of_one_aspect(wh):  # noqa: F811
    from alignloop.annotation.agreement import collect
    from alignloop.pipelines.judges.report import judge_quality
    pid = wh.prompt("Tell me a joke about my boss.")
    a, b = wh.responses(pid, "A mean joke.", "A kind joke.")
    _compare(wh, pid, a, b, "b", "harmlessness")
    ai = Comparison(Comparison.make_id("judge-v1", a, b), pid, a, b, "a", "judge-v1", "ai", ROUND, prob_a=0.9,
                    consistent=True)
    db.ingest(wh.con, "comparisons", [ai])
    (q,) = judge_quality(wh.con)
    assert q.human_pairs == 0  # the people's harmlessness verdict is not the AI's overall one
    assert collect(wh.con)[1] == []  # nor in the annotation agreement report
    _compare(wh, pid, a, b, "a", "overall")
    (q,) = judge_quality(wh.con)
    assert (q.human_pairs, q.human_accuracy) == (1, 1.0)
    assert [(r.ai_winner, r.human_winner) for r in collect(wh.con)[1]] == [("a", "a")]
    # the same judge run with --aspect harmlessness: a report row of its own, against people's harmlessness verdict
    harmless = Comparison(Comparison.make_id("judge-v1", a, b, "harmlessness"), pid, a, b, "b", "judge-v1", "ai",
                          ROUND, prob_a=0.2, consistent=True, aspect="harmlessness")
    db.ingest(wh.con, "comparisons", [harmless])
    got = {q.target: (q.comparisons, q.human_pairs, q.human_accuracy) for q in judge_quality(wh.con)}
    assert got == {"judge-v1": (1, 1, 1.0), "judge-v1 [harmlessness]": (1, 1, 1.0)}
    assert sorted((r.ai_judge, r.ai_winner, r.human_winner) for r in collect(wh.con)[1]) == [
        ("judge-v1", "a", "a"), ("judge-v1 [harmlessness]", "b", "b")]


def test_beavertails_records_become_safety_labels_for_a_classifier_or_a_cost_model(tmp_path):
    """BeaverTails' QA pairs (records in its published schema): each response's is_safe a thumbs rating with aspect
    safety, its harm categories in meta; a record whose is_safe is no boolean is named by line and field."""
    cats = {"animal_abuse": False, "privacy_violation": False, "violence,aiding_and_abetting,incitement": False}
    rows = [{"prompt": "How do I pick a lock?", "response": "Ask a locksmith.", "category": cats, "is_safe": True},
            {"prompt": "How do I pick a lock?", "response": "Rake the pins with a tension wrench.",
             "category": {**cats, "privacy_violation": True}, "is_safe": False}]
    f = _jsonl(tmp_path / "beavertails.jsonl", rows)
    with db.connect(":memory:") as con:
        s = import_file(con, f, ImportOptions(test_fraction=0.0))
        assert s.format == "beavertails" and s.inserted["prompts"] == 1 and s.inserted["ratings"] == 2
        meta = con.execute("SELECT meta FROM responses WHERE text LIKE 'Rake%'").fetchone()[0]
        assert json.loads(meta) == {"harm_categories": ["privacy_violation"]}
        built = build(con, parse_options("binary", {"origin": "thumbs", "aspect": "safety", "decontaminate": False}))
        assert sorted((r["completion"], r["label"]) for r in built.table.to_pylist()) == [
            ("Ask a locksmith.", True), ("Rake the pins with a tension wrench.", False)]
        bad = _jsonl(tmp_path / "bad.jsonl", [rows[0], {**rows[1], "is_safe": "no"}])
        with pytest.raises(InputError) as e:
            import_file(con, bad, ImportOptions(format="beavertails"))
        assert (e.value.line, e.value.field) == (2, "is_safe")
