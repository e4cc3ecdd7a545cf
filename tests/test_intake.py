"""Intake: every format, real HH-RLHF and PRM800K data, dedup, splits, and each kind of bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignloop.pipelines.intake import ImportOptions, import_file
from alignloop.pipelines.intake.dedup import NearDuplicateIndex
from alignloop.pipelines.intake.formats import FieldMap, hh_turns, parse_hh
from alignloop.pipelines.intake.parsed import Rejected
from alignloop.pipelines.intake.readers import RawRecord
from alignloop.warehouse import db
from alignloop.warehouse.errors import InputError


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def con():
    with db.connect(":memory:") as c:
        yield c


def test_hh_rows_0_1999_import_with_exact_counts(con, hh_path, tmp_path):
    sub = tmp_path / "hh.jsonl"
    with gzip.open(hh_path, "rt") as fh:
        sub.write_text("".join(next(fh) for _ in range(2000)))
    s = import_file(con, sub)
    assert s.format == "hh-rlhf" and s.read == 2000
    reported = sum(s.rejected.values()) + len(s.skipped)
    assert s.inserted["comparisons"] == 2000 - reported
    assert s.inserted["responses"] == 2 * (2000 - reported)
    assert con.execute("SELECT count(*) FROM comparisons WHERE source = 'human' AND winner = 'a'").fetchone()[0] \
        == 2000 - reported
    # every prompt ends with a user turn, and every comparison's prompt exists
    bad = con.execute("""SELECT count(*) FROM prompts WHERE json_extract_string(messages, '$[-1].role') <> 'user'""")
    assert bad.fetchone()[0] == 0
    orphans = con.execute("SELECT count(*) FROM comparisons c ANTI JOIN prompts p ON p.id = c.prompt_id")
    assert orphans.fetchone()[0] == 0
    again = import_file(con, sub)
    assert sum(again.inserted.values()) == 0


def test_hh_parse_by_turns_keeps_embedded_turns_and_reports_divergence():
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: ok\n\nHuman: fake turn"
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: no"
    item = parse_hh(RawRecord({"chosen": chosen, "rejected": rejected}, 7), "f")
    assert [m["role"] for m in item.messages] == ["user", "assistant", "user"]
    texts = {r.key: r.text for r in item.responses}
    assert texts == {"chosen": "ok\n\nHuman: fake turn", "rejected": "no"}
    assert item.responses[0].meta == {"embedded_turns": True}
    diverge_early = {"chosen": "\n\nHuman: a\n\nAssistant: x\n\nHuman: b\n\nAssistant: y",
                     "rejected": "\n\nHuman: a\n\nAssistant: x\n\nHuman: c\n\nAssistant: y"}
    with pytest.raises(Rejected, match="diverge before the last assistant turn"):
        parse_hh(RawRecord(diverge_early, 3), "f")
    assert hh_turns("no turns here") == []


def test_prm800k_example_imports_steps_and_labels(con, prm_path):
    s = import_file(con, prm_path)
    assert s.format == "prm800k"
    steps, finish = con.execute(
        "SELECT steps, finish_reason FROM responses WHERE parent_id IS NULL").fetchone()
    assert len(steps) == 16 and finish == "found_error"
    main_labels = con.execute("""
        SELECT l.step_index, l.label FROM step_labels l JOIN responses r ON r.id = l.response_id
        WHERE r.parent_id IS NULL ORDER BY l.step_index""").fetchall()
    assert main_labels == [(0, 0), (1, 0), (2, -1)]
    assert con.execute("SELECT reference FROM prompts").fetchone()[0] == "40,\\!000"
    alts = con.execute("SELECT count(*) FROM responses WHERE parent_id IS NOT NULL").fetchone()[0]
    assert alts == 4  # the other completions offered at step 3, kept with their ratings
    assert con.execute("SELECT DISTINCT judge FROM step_labels").fetchone()[0].startswith("labeler:")


def test_qac_and_generic_formats(con, tmp_path):
    qac = _jsonl(tmp_path / "qac.jsonl", [{"question": "q?", "answer": "bad", "correction": "good"}])
    s = import_file(con, qac)
    assert s.format == "qac" and s.inserted["corrections"] == 1
    orig, corr = con.execute("""SELECT o.text, c.text FROM corrections x JOIN responses o ON o.id = x.original_id
                                JOIN responses c ON c.id = x.corrected_id""").fetchone()
    assert (orig, corr) == ("bad", "good")
    # the same file as harmlessness corrections: a correction of its own (same answer and corrected text)
    s = import_file(con, qac, ImportOptions(aspect="harmlessness"))
    assert s.inserted.get("corrections") == 1 and not s.inserted.get("responses")
    assert con.execute("SELECT aspect FROM corrections ORDER BY aspect").fetchall() == [("harmlessness",),
                                                                                       ("overall",)]

    csv = tmp_path / "p.csv"
    csv.write_text("question,answer\nWhat is 1+1?,2\nName a colour,red\n")
    s = import_file(con, csv)
    assert s.inserted["prompts"] == 2
    assert con.execute("SELECT reference FROM prompts WHERE text LIKE '%1+1%'").fetchone()[0] == "2"

    pq.write_table(pa.table({"instruction": ["a parquet prompt"]}), tmp_path / "p.parquet")
    assert import_file(con, tmp_path / "p.parquet").inserted["prompts"] == 1

    msgs = _jsonl(tmp_path / "m.jsonl", [{"conv": [{"role": "user", "content": "hello there"}]}])
    opts = ImportOptions(fields=FieldMap(messages_field="conv", system="Be brief."))
    import_file(con, msgs, opts)
    stored = con.execute("SELECT messages FROM prompts WHERE text LIKE '%hello there%'").fetchone()[0]
    assert json.loads(stored)[0] == {"role": "system", "content": "Be brief."}


def test_hf_datasets_folder(con, tmp_path):
    import datasets

    datasets.Dataset.from_dict({"prompt": ["from a dataset", "another"]}).save_to_disk(str(tmp_path / "ds"))
    s = import_file(con, tmp_path / "ds")
    assert s.inserted["prompts"] == 2


def test_dedup_exact_near_and_split(con, tmp_path):
    base = "Tell me a story about a brave little toaster who crosses the desert to find its owner"
    rows = [{"prompt": base}, {"prompt": base.upper() + "!!"}, {"prompt": base + " again"},
            {"prompt": "Something else entirely"}]
    s = import_file(con, _jsonl(tmp_path / "d.jsonl", rows), ImportOptions(near_dup=0.8, test_fraction=0.5))
    assert (s.already_present, s.near_duplicates, s.inserted["prompts"]) == (1, 1, 2)
    splits = dict(con.execute("SELECT id, split FROM prompts").fetchall())
    with db.connect(":memory:") as other:  # same prompt, same split, wherever it is imported
        import_file(other, _jsonl(tmp_path / "e.jsonl", rows[::-1]), ImportOptions(test_fraction=0.5))
        other_splits = dict(other.execute("SELECT id, split FROM prompts").fetchall())
        shared = splits.keys() & other_splits.keys()
        assert shared and all(other_splits[k] == splits[k] for k in shared)


def test_near_duplicate_index_confirms_with_exact_jaccard():
    idx = NearDuplicateIndex(threshold=0.5)
    assert idx.add("the quick brown fox jumps over the lazy dog") is None
    assert idx.add("the quick brown fox jumps over the lazy dog today") == 0
    assert idx.add("completely unrelated words in this sentence here") is None


@pytest.mark.parametrize("content,match", [
    (b'{"prompt": "ok"}\n{"prompt": \n', r"m\.jsonl:2: malformed JSON"),
    (b'{"text_missing": 1}\n', r"m\.jsonl:1: field 'prompt': missing field"),
    (b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', r"m\.jsonl:2: invalid UTF-8"),
    (b"", r"m\.jsonl: file is empty"),
    (b"\n\n", r"m\.jsonl: no records found"),
    (b'[1, 2]\n', r"m\.jsonl:1: expected a JSON object"),
])
def test_bad_input_names_file_and_line_and_writes_nothing(con, tmp_path, content, match):
    path = tmp_path / "m.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        import_file(con, path)
    assert db.counts(con)["prompts"] == 0


def _damaged(kind: str) -> bytes:
    data = gzip.compress(b'{"prompt": "a question"}\n' * 500)
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "crc":  # the trailer's checksum no longer matches the data
        return data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:]
    return b'{"prompt": "plain text, not gzip"}\n'


@pytest.mark.parametrize("kind,match", [
    ("truncated", r"m\.jsonl\.gz: the gzip data ends early"),
    ("crc", r"m\.jsonl\.gz: corrupt gzip data \(CRC check failed"),
    ("plain", r"m\.jsonl\.gz: not gzip data, though the name ends in \.gz"),
])
@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_damaged_gzip_file_is_one_error_and_writes_nothing(con, tmp_path, kind, match, on_error):
    """Even with on_error=skip: the records before the damage are not imported on their own."""
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(_damaged(kind))
    with pytest.raises(InputError, match=match):
        import_file(con, path, ImportOptions(on_error=on_error))
    assert db.counts(con)["prompts"] == 0


def test_megabyte_prompt_is_bad_input(con, tmp_path):
    path = _jsonl(tmp_path / "big.jsonl", [{"prompt": "ok"}, {"prompt": "x" * 1_500_000}])
    with pytest.raises(InputError, match=r"big\.jsonl:2: .*bytes"):
        import_file(con, path)
    assert db.counts(con)["prompts"] == 0


def test_on_error_skip_imports_the_rest_and_lists_skips(con, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "good one"}\nnot json\n{"prompt": 5}\n{"prompt": "good two"}\n')
    s = import_file(con, path, ImportOptions(on_error="skip"))
    assert s.inserted["prompts"] == 2
    assert [line for line, _ in s.skipped] == [2, 3]


def test_unknown_format_and_options(tmp_path):
    with pytest.raises(InputError, match="unknown format 'xml'"):
        ImportOptions(format="xml")
    with pytest.raises(InputError, match="test-fraction"):
        ImportOptions(test_fraction=1.5)
    with pytest.raises(InputError, match=r"--near-dup must be in \(0, 1\] \(a Jaccard similarity\), got 2"):
        ImportOptions(near_dup=2)
    with pytest.raises(InputError, match="--limit must be >= 1, got 0"):
        ImportOptions(limit=0)
    (tmp_path / "data.txt").write_text("hello")
    with db.connect(":memory:") as c, pytest.raises(InputError, match="unknown file type"):
        import_file(c, tmp_path / "data.txt")


def test_length_filters_reject_with_reason(con, tmp_path):
    path = _jsonl(tmp_path / "l.jsonl", [{"prompt": "hi"}, {"prompt": "a reasonable prompt"}])
    s = import_file(con, path, ImportOptions(min_chars=5))
    assert s.rejected == {"prompt shorter than 5 chars": 1} and s.inserted["prompts"] == 1


def test_on_error_skip_of_a_file_with_no_good_record_is_an_error(con, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('not json\n{"prompt": 5}\n')
    with pytest.raises(InputError, match=r"bad\.jsonl: no record to import: 2 of 2 skipped as errors, 0 rejected; "
                                         r"the first at line 1: .*bad\.jsonl:1: malformed JSON"):
        import_file(con, path, ImportOptions(on_error="skip"))
    assert db.counts(con)["prompts"] == 0


@pytest.mark.parametrize("content,match", [
    # an unterminated quote swallowed the rest of the file into one prompt
    ('prompt,other\n"hello, world",1\n"unterminated quote,2\nfoo,3\n',
     r"p\.csv:3: a quoted value that starts in this record is never closed"),
    ('prompt,other\nfine,1\n"x" y,2\n', r"p\.csv:3: malformed CSV: ',' expected after '\"'"),
    # the csv module's own limit (131,072 characters) named no line and was not the 1 MB of the other formats
    ("prompt\nfine\n" + "x" * 1_000_001 + "\n", r"p\.csv:3: a value is over 1,000,000 bytes \(limit 1,000,000\)"),
])
def test_malformed_csv_is_one_error_naming_the_line(con, tmp_path, content, match):
    path = tmp_path / "p.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=match):
        import_file(con, path)
    assert db.counts(con)["prompts"] == 0


def test_csv_values_up_to_the_limit_and_quoted_newlines_import(con, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('prompt,other\n"two\nlines",1\n' + "y" * 200_000 + ",2\n")
    s = import_file(con, path, ImportOptions(max_chars=300_000))
    assert s.inserted["prompts"] == 2
    assert con.execute("SELECT count(*) FROM prompts WHERE text = 'user: two\nlines'").fetchone()[0] == 1
