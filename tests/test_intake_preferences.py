"""Intake of preference data from outside: TRL's preference and unpaired formats, UltraFeedback, rankings, Nectar,
SHP and HelpSteer, with the round trip of a pairwise export."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from alignloop.pipelines.datasets.build import build
from alignloop.pipelines.datasets.config import parse_options
from alignloop.pipelines.datasets.export import export_snapshot
from alignloop.pipelines.datasets.publish import build_and_publish
from alignloop.pipelines.datasets.snapshot import load_snapshot
from alignloop.pipelines.datasets.stages import EmptyDataset
from alignloop.pipelines.intake import ImportOptions, import_file
from alignloop.warehouse import db
from alignloop.warehouse.errors import InputError

USER, ASSISTANT = "user", "assistant"


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


@pytest.fixture
def con():
    with db.connect(":memory:") as c:
        yield c


def _pairs(con) -> set[tuple[tuple, str, str]]:
    """((role, content) of each prompt message, chosen text, rejected text) of every stored comparison."""
    return {(tuple((m["role"], m["content"]) for m in json.loads(p)), a, b) for p, a, b in con.execute("""
        SELECT p.messages, a.text, b.text FROM comparisons c JOIN prompts p ON p.id = c.prompt_id
        JOIN responses a ON a.id = c.response_a JOIN responses b ON b.id = c.response_b
        WHERE c.winner = 'a' AND c.source = 'human' AND c.prob_a = 1.0""").fetchall()}


def test_each_shape_of_trl_preference_records_becomes_a_human_comparison(con, tmp_path):
    rows = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."},                    # standard
        {"prompt": [_msg("system", "Be brief."), _msg(USER, "Say hi.")],                        # conversational
         "chosen": [_msg(ASSISTANT, "Hi.")], "rejected": [_msg(ASSISTANT, "No.")]},
        {"prompt": "What is 2+2?", "chosen": [_msg(USER, "What is 2+2?"), _msg(ASSISTANT, "4")],  # UltraFeedback
         "rejected": [_msg(USER, "What is 2+2?"), _msg(ASSISTANT, "5")], "score_chosen": 9.0, "score_rejected": 2},
        {"chosen": [_msg(USER, "Pick one."), _msg(ASSISTANT, "A")],                               # implicit prompt
         "rejected": [_msg(USER, "Pick one."), _msg(ASSISTANT, "B")]},
        {"prompt": "Same?", "chosen": "yes", "rejected": "yes"},                                 # reported
    ]
    s = import_file(con, _jsonl(tmp_path / "prefs.jsonl", rows))
    assert s.format == "preference" and s.read == 5 and s.imported == 4
    assert s.rejected == {"chosen and rejected are the same text": 1} and s.rejected_lines == [
        (5, "chosen and rejected are the same text")]
    assert s.inserted["comparisons"] == 4 and s.inserted["responses"] == 8
    assert _pairs(con) == {
        (((USER, "Name a colour."),), "Blue.", "Seven."), ((("system", "Be brief."), (USER, "Say hi.")), "Hi.", "No."),
        (((USER, "What is 2+2?"),), "4", "5"), (((USER, "Pick one."),), "A", "B")}
    scores = dict(con.execute("SELECT text, meta->>'$.score' FROM responses WHERE text IN ('4', '5')").fetchall())
    assert scores == {"4": "9.0", "5": "2.0"}
    assert sum(import_file(con, tmp_path / "prefs.jsonl").inserted.values()) == 0  # idempotent
    pairs = build(con, parse_options("pairwise", {"decontaminate": False})).table
    assert sorted(zip(pairs["chosen"].to_pylist(), pairs["rejected"].to_pylist())) == [
        ("4", "5"), ("A", "B"), ("Blue.", "Seven."), ("Hi.", "No.")]


def test_labels_a_model_gave_are_imported_as_ai_feedback(con, tmp_path):
    """UltraFeedback's chosen/rejected come from GPT-4's ratings: `--feedback-source ai` stores them as AI feedback,
    which a build limited to people's labels leaves out."""
    path = _jsonl(tmp_path / "uf.jsonl", [{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}])
    s = import_file(con, path, ImportOptions(feedback_source="ai"))
    assert s.inserted["comparisons"] == 1
    assert con.execute("SELECT source, judge FROM comparisons").fetchall() == [("ai", "dataset:uf.jsonl")]
    pairs = build(con, parse_options("pairwise", {"decontaminate": False})).table
    assert pairs["source"].to_pylist() == ["ai"] and pairs["chosen"].to_pylist() == ["Blue."]
    with pytest.raises(EmptyDataset, match="pairwise dataset is empty"):
        build(con, parse_options("pairwise", {"decontaminate": False, "sources": "human"}))
    with pytest.raises(InputError, match="--feedback-source must be human or ai, got 'robot'"):
        ImportOptions(feedback_source="robot")


def test_an_export_of_ai_soft_labels_imports_back_with_them(tmp_path):
    """A judge's swap-averaged probabilities (soft labels, a tie kept as 0.5) survive export and import: the file's
    `prob` is each comparison's probability, `--feedback-source ai` its source, and the rebuilt pairs are the same."""
    from tests.fixtures_datasets import Wh

    soft = {"soft_labels": True, "ties": "keep", "decontaminate": False}
    with db.connect(":memory:") as con:
        wh = Wh(con)
        for i, (winner, prob) in enumerate([("a", 0.8), ("b", 0.3), ("tie", 0.5), ("a", 1.0)]):
            p = wh.prompt(f"question {i}")
            a, b = wh.responses(p, f"first {i}", f"second {i}")
            wh.compare(p, a, b, winner, source="ai", judge="judge-v1", prob_a=prob, consistent=True)
        build_and_publish(con, parse_options("pairwise", soft), "soft", tmp_path / "snaps")
    snap = load_snapshot("soft", root=tmp_path / "snaps")
    export_snapshot(snap, "jsonl", tmp_path / "export")
    with db.connect(":memory:") as con:
        for split in ("train", "test"):
            if snap.tables[split].num_rows:
                import_file(con, tmp_path / "export" / f"{split}.jsonl", ImportOptions(feedback_source="ai"))
        again = build(con, parse_options("pairwise", soft)).table
    exported = pa.concat_tables([snap.train, snap.test])

    def rows(t: pa.Table) -> list[tuple]:
        return sorted(zip(t["prompt_text"].to_pylist(), t["chosen"].to_pylist(), t["rejected"].to_pylist(),
                          t["prob"].to_pylist(), t["source"].to_pylist(), t["split"].to_pylist()))

    assert rows(again) == rows(exported) and sorted(exported["prob"].to_pylist()) == [0.5, 0.7, 0.8, 1.0]
    with db.connect(":memory:") as con, pytest.raises(InputError, match=r"field 'prob': expected P\(chosen better\) "
                                                                        r"in \[0.5, 1\], got 0.2"):
        import_file(con, _jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "prob": 0.2}]))


def _uf_completion(model: str, response: str, overall, ratings: list) -> dict:
    """One completion as openbmb/UltraFeedback stores it (fine-grained ratings as strings, "N/A" allowed)."""
    notes = {aspect: {"Rating": r, "Rationale": f"{aspect} of {model}"} for aspect, r in
             zip(("instruction_following", "honesty", "truthfulness", "helpfulness"), ratings)}
    notes["truthfulness"] |= {"Type": ["0"], "Rationale For Rating": f"why {model}"}
    return {"model": model, "principle": "helpfulness", "custom_system_prompt": "Be helpful.", "response": response,
            "annotations": notes, "critique": f"critique of {model}", "overall_score": overall,
            "fine-grained_score": 3.5}


def test_ultrafeedback_completions_become_ai_ratings_per_aspect(con, tmp_path):
    """Each completion is a response rated by GPT-4 (source ai): overall 1-10 and each fine-grained aspect 1-5 with
    its rationale; the ratings builders then give UltraFeedback's binarisation (best vs worst) per aspect."""
    rows = [{"source": "sharegpt", "instruction": "Plan a day in Cairo.", "models": ["m1", "m2", "m3", "m4"],
             "correct_answers": ["None"], "incorrect_answers": ["None"],
             "completions": [_uf_completion("m1", "Pyramids.", 7.5, ["4", "5", "3", "4"]),
                             _uf_completion("m2", "Museum, then the bazaar.", 9.0, ["5", "5", "N/A", "2"]),
                             _uf_completion("m3", "Stay home.", 2.0, ["1", "3", "5", "1"]),
                             _uf_completion("m4", "", 5.0, ["3", "3", "3", "3"])]}]   # empty: left out
    s = import_file(con, _jsonl(tmp_path / "uf.jsonl", rows))
    assert s.format == "ultrafeedback" and s.inserted["responses"] == 3
    assert s.inserted["ratings"] == 3 + 4 + 3 + 4  # overall and the four aspects, one N/A
    stored = con.execute("""SELECT r.text, t.aspect, t.score, t.scale_max, t.source, t.rationale FROM ratings t
                            JOIN responses r ON r.id = t.response_id WHERE r.text = 'Stay home.'
                            ORDER BY t.aspect""").fetchall()
    assert stored == [("Stay home.", "helpfulness", 1.0, 5.0, "ai", "helpfulness of m3"),
                      ("Stay home.", "honesty", 3.0, 5.0, "ai", "honesty of m3"),
                      ("Stay home.", "instruction_following", 1.0, 5.0, "ai", "instruction_following of m3"),
                      ("Stay home.", "overall", 2.0, 10.0, "ai", "critique of m3"),
                      ("Stay home.", "truthfulness", 5.0, 5.0, "ai", "why m3")]
    assert con.execute("SELECT meta->>'$.model' FROM responses WHERE text = 'Pyramids.'").fetchone() == ("m1",)

    def best_vs_worst(aspect: str) -> tuple[str, str]:
        t = build(con, parse_options("pairwise", {"origin": "ratings", "aspect": aspect, "decontaminate": False})).table
        return t["chosen"][0].as_py(), t["rejected"][0].as_py()

    assert best_vs_worst("overall") == ("Museum, then the bazaar.", "Stay home.")
    assert best_vs_worst("truthfulness") == ("Stay home.", "Pyramids.")
    with pytest.raises(InputError, match=r"uf2\.jsonl:1: field 'completions\[0\]\.overall_score': expected a rating "
                                         r"in \[1, 10\] or N/A, got 11"):
        import_file(con, _jsonl(tmp_path / "uf2.jsonl", [{"instruction": "q", "completions": [
            _uf_completion("m1", "a", 11, ["1", "1", "1", "1"])]}]))


def test_rankings_and_nectar_become_best_first_rankings_for_listwise_rows(con, tmp_path):
    """A ranking record (ranks, 1 the best, ties in file order) and a Nectar record (an HH-style prompt, GPT-4's
    ranks: AI feedback) each become one best-first ranking, which the listwise and pairwise builders read."""
    ranked = _jsonl(tmp_path / "r.jsonl", [{"prompt": "Rank these.", "completions": ["ok", "best", "worst", "fine"],
                                             "ranks": [2, 1, 4, 2]}])
    s = import_file(con, ranked)
    assert s.format == "ranking" and s.inserted["rankings"] == 1 and s.inserted["responses"] == 4
    nectar = {"prompt": "\n\nHuman: Name a fruit.\n\nAssistant: Which kind?\n\nHuman: Any.\n\nAssistant:",
              "answers": [{"answer": f"fruit {r}", "model": f"m{r}", "rank": float(r)} for r in (3, 1, 7, 2, 5, 4, 6)],
              "turns": 2, "num_responses": 7, "source": ["sharegpt"], "good_natured": True}
    s = import_file(con, _jsonl(tmp_path / "nectar.jsonl", [nectar]))
    assert s.format == "nectar" and s.inserted["rankings"] == 1 and s.inserted["responses"] == 7
    stored = {p: (source, texts) for p, source, texts in con.execute("""
        SELECT p.text, k.source, list(r.text ORDER BY u.pos) FROM rankings k JOIN prompts p ON p.id = k.prompt_id,
        unnest(k.response_ids) WITH ORDINALITY AS u(rid, pos) JOIN responses r ON r.id = u.rid
        GROUP BY p.text, k.source""").fetchall()}
    assert stored == {"user: Rank these.": ("human", ["best", "ok", "fine", "worst"]),
                      "user: Name a fruit.\nassistant: Which kind?\nuser: Any.": (
                          "ai", [f"fruit {r}" for r in range(1, 8)])}
    lists = build(con, parse_options("listwise", {"origin": "rankings", "k": 4, "decontaminate": False})).table
    assert sorted(lists["completions"].to_pylist()) == [["best", "ok", "fine", "worst"],
                                                        ["fruit 1", "fruit 2", "fruit 3", "fruit 4"]]
    # the same file imported as harmlessness rankings: a ranking of its own, which a build of that aspect reads
    s = import_file(con, ranked, ImportOptions(aspect="harmlessness"))
    assert s.inserted["rankings"] == 1 and s.inserted["responses"] == 0
    safe = build(con, parse_options("listwise", {"origin": "rankings", "k": 4, "decontaminate": False,
                                                 "aspect": "harmlessness"})).table
    assert safe["completions"].to_pylist() == [["best", "ok", "fine", "worst"]]
    with pytest.raises(InputError, match=r"r2\.jsonl:1: field 'ranks': expected a number per completion \(2\)"):
        import_file(con, _jsonl(tmp_path / "r2.jsonl", [{"prompt": "q", "completions": ["a", "b"], "ranks": [1]}]))


def test_shp_records_are_human_comparisons_by_their_label(con, tmp_path):
    rows = [{"post_id": "p1", "domain": "askscience_train", "upvote_ratio": 0.9, "history": "Why is the sky blue?",
             "c_root_id_A": "a1", "c_root_id_B": "b1", "created_at_utc_A": 1, "created_at_utc_B": 2, "score_A": 40,
             "score_B": 5, "human_ref_A": "Rayleigh scattering.", "human_ref_B": "Because.", "labels": 1,
             "seconds_difference": 1.0, "score_ratio": 8.0},
            {"post_id": "p2", "domain": "askscience_train", "history": "Is water wet?", "score_A": 2, "score_B": 9,
             "human_ref_A": "No.", "human_ref_B": "It wets things.", "labels": 0, "score_ratio": 4.5}]
    s = import_file(con, _jsonl(tmp_path / "shp.jsonl", rows))
    assert s.format == "shp" and s.inserted["comparisons"] == 2
    preferred = con.execute("""
        SELECT p.text, CASE c.winner WHEN 'a' THEN a.text ELSE b.text END, CASE c.winner WHEN 'a' THEN b.text
        ELSE a.text END, c.source FROM comparisons c JOIN prompts p ON p.id = c.prompt_id
        JOIN responses a ON a.id = c.response_a JOIN responses b ON b.id = c.response_b ORDER BY 1""").fetchall()
    assert preferred == [("user: Is water wet?", "It wets things.", "No.", "human"),
                         ("user: Why is the sky blue?", "Rayleigh scattering.", "Because.", "human")]
    assert con.execute("SELECT meta->>'$.score_ratio' FROM prompts WHERE text LIKE '%water%'").fetchone() == ("4.5",)


@pytest.mark.parametrize("row,match", [
    ({"prompt": "q", "chosen": "a"}, r"p\.jsonl:1: field 'rejected': missing field"),
    ({"prompt": "q", "chosen": [_msg(USER, "q"), _msg(ASSISTANT, "a"), _msg(USER, "more")], "rejected": "b"},
     r"p\.jsonl:1: .*expected one assistant message after the prompt, got 2 message\(s\) \(assistant, user\)"),
    ({"chosen": [_msg(USER, "q"), _msg(ASSISTANT, "a")], "rejected": [_msg(USER, "other"), _msg(ASSISTANT, "b")]},
     r"p\.jsonl:1: .*without a prompt field, chosen and rejected must be chats that differ in their last message"),
    ({"chosen": "a", "rejected": "b"}, r"p\.jsonl:1: .*text chosen and rejected need the prompt they answer"),
    ({"prompt": [_msg(USER, "q"), _msg(ASSISTANT, "a")], "chosen": "x", "rejected": "y"},
     r"p\.jsonl:1: .*the prompt ends with an assistant message"),
    ({"prompt": "q", "completion": "a", "label": "maybe"}, r"p\.jsonl:1: .*label.*expected true or false, got 'maybe'"),
    ({"completion": "a", "label": True}, r"p\.jsonl:1: field 'prompt': missing field"),
])
def test_bad_preference_records_name_line_and_field_and_write_nothing(con, tmp_path, row, match):
    fmt = "unpaired" if "completion" in row else "preference"  # auto-detection needs the format's fields
    with pytest.raises(InputError, match=match):
        import_file(con, _jsonl(tmp_path / "p.jsonl", [row]), ImportOptions(format=fmt))
    assert db.counts(con)["prompts"] == 0 and db.counts(con)["responses"] == 0


def test_unpaired_records_are_thumbs_ratings_that_build_kto_rows(con, tmp_path):
    csv = tmp_path / "kto.csv"
    csv.write_text("prompt,completion,label\nSay hi.,Hi!,true\nSay hi.,Go away.,false\nCount to 2.,1 2,1\n")
    s = import_file(con, csv, ImportOptions(test_fraction=0.0))
    assert s.format == "unpaired" and s.inserted["ratings"] == 3 and s.inserted["prompts"] == 2
    stored = con.execute("""SELECT r.text, t.score, t.scale_min, t.scale_max, t.source FROM ratings t
                            JOIN responses r ON r.id = t.response_id ORDER BY r.text""").fetchall()
    assert stored == [("1 2", 1.0, 0.0, 1.0, "human"), ("Go away.", 0.0, 0.0, 1.0, "human"),
                      ("Hi!", 1.0, 0.0, 1.0, "human")]
    kto = build(con, parse_options("binary", {"origin": "thumbs", "decontaminate": False})).table
    assert sorted(zip(kto["completion"].to_pylist(), kto["label"].to_pylist())) == [
        ("1 2", True), ("Go away.", False), ("Hi!", True)]


@pytest.mark.parametrize("standard", [False, True])
def test_a_trl_export_of_hh_pairs_imports_back_as_the_same_pairs(tmp_path, hh_path, standard):
    """Rows 0-199 of HH-RLHF -> pairwise snapshot -> `trl` export (conversational, or standard: the prompt as its
    plain text) -> a new warehouse -> the same pairs, each prompt on the side of the split it was exported in."""
    with db.connect(":memory:") as a:
        import_file(a, hh_path, ImportOptions(limit=200))
        build_and_publish(a, parse_options("pairwise", {"decontaminate": False}), "hh", tmp_path / "snaps")
    snap = load_snapshot("hh", root=tmp_path / "snaps")
    export_snapshot(snap, "trl", tmp_path / "export", standard=standard)
    with db.connect(":memory:") as b:
        s = import_file(b, tmp_path / "export")
        again = build(b, parse_options("pairwise", {"decontaminate": False})).table
    exported = pa.concat_tables([snap.train, snap.test])
    assert s.format == "preference" and s.imported == exported.num_rows > 150 and not s.rejected

    def rows(t: pa.Table, prompts: list) -> list[tuple]:
        return sorted(zip(prompts, t["chosen"].to_pylist(), t["rejected"].to_pylist(), t["split"].to_pylist()))

    if standard:  # one user message holding the rendered conversation
        assert rows(again, [json.loads(p)[0]["content"] for p in again["prompt"].to_pylist()]) == \
            rows(exported, exported["prompt_text"].to_pylist())
    else:
        assert rows(again, again["prompt_id"].to_pylist()) == rows(exported, exported["prompt_id"].to_pylist())


def test_helpsteer_records_become_ratings_per_attribute_and_pairs_by_helpfulness(con, tmp_path):
    """HelpSteer2 rates two responses to each prompt, 0-4 on five attributes (records written in its published
    schema); a multi-turn prompt keeps its earlier turns."""
    def rec(prompt: str, response: str, *scores: int) -> dict:
        return {"prompt": prompt, "response": response,
                **dict(zip(("helpfulness", "correctness", "coherence", "complexity", "verbosity"), scores))}

    turns = "Name a prime.<extra_id_1>Assistant\n7<extra_id_1>User\nAnother one?"
    rows = [rec("What is 2+2?", "4.", 4, 4, 4, 0, 1), rec("What is 2+2?", "Five, I think.", 1, 0, 3, 0, 1),
            rec(turns, "11.", 3, 4, 4, 1, 0)]
    s = import_file(con, _jsonl(tmp_path / "helpsteer2.jsonl", rows))
    assert s.format == "helpsteer" and (s.read, s.imported) == (3, 3) and s.inserted["prompts"] == 2
    assert s.inserted["ratings"] == 15
    got = con.execute("SELECT r.text, t.aspect, t.score, t.scale_min, t.scale_max, t.source FROM ratings t "
                      "JOIN responses r ON r.id = t.response_id WHERE t.aspect IN ('helpfulness', 'verbosity')"
                      ).fetchall()
    assert sorted(got) == sorted([("4.", "helpfulness", 4.0, 0.0, 4.0, "human"), ("4.", "verbosity", 1.0, 0.0, 4.0,
                                  "human"), ("Five, I think.", "helpfulness", 1.0, 0.0, 4.0, "human"),
                                  ("Five, I think.", "verbosity", 1.0, 0.0, 4.0, "human"),
                                  ("11.", "helpfulness", 3.0, 0.0, 4.0, "human"),
                                  ("11.", "verbosity", 0.0, 0.0, 4.0, "human")])
    chat = con.execute("SELECT messages FROM prompts WHERE text LIKE '%prime%'").fetchone()[0]
    assert json.loads(chat) == [_msg(USER, "Name a prime."), _msg(ASSISTANT, "7"), _msg(USER, "Another one?")]
    built = build(con, parse_options("pairwise", {"origin": "ratings", "aspect": "helpfulness",
                                                  "decontaminate": False}))
    assert [(r["chosen"], r["rejected"]) for r in built.table.to_pylist()] == [("4.", "Five, I think.")]
    bad = _jsonl(tmp_path / "bad.jsonl", [rows[0], rec("Hi", "Hello", 5, 4, 4, 0, 0)])
    with pytest.raises(InputError) as e:
        import_file(con, bad)
    assert (e.value.line, e.value.field) == (2, "helpfulness") and "[0, 4]" in str(e.value)
