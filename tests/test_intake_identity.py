"""Imported rows are named by their content: a renamed, re-compressed or overlapping copy of a file adds nothing, the
summary says what was already there, each file's import is recorded, and a v3 warehouse migrates to these ids."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignloop.pipelines.datasets.build import build
from alignloop.pipelines.datasets.config import parse_options
from alignloop.pipelines.intake import ImportOptions, import_file, import_into
from alignloop.warehouse import db
from alignloop.warehouse.errors import InputError

DATA = Path(__file__).parent / "data"
FILES = DATA / "warehouse_v3"
CLI = str(Path(sys.executable).with_name("alignloop"))
DATA_TABLES = ("prompts", "models", "rounds", "responses", "comparisons", "rankings", "ratings", "step_labels",
               "corrections", "annotation_tasks")


def _hh(tmp_path: Path, hh_path: Path, n: int, name: str = "hh100.jsonl") -> Path:
    with gzip.open(hh_path, "rt") as fh:
        lines = [next(fh) for _ in range(n)]
    path = tmp_path / name
    path.write_text("".join(lines))
    return path


def _data_counts(con) -> dict[str, int]:
    counts = db.counts(con)
    return {t: counts[t] for t in DATA_TABLES}


def test_a_renamed_gzipped_resourced_or_overlapping_copy_adds_nothing(tmp_path, hh_path):
    """hh100.jsonl, then the same lines gzipped, then under --source other, then its first half under another name:
    99 pairs stored once (it was 198 responses and comparisons after the second, 297 after the third), and a
    pairwise build has 99 rows."""
    plain = _hh(tmp_path, hh_path, 100)
    gz = tmp_path / "hh100.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    half = tmp_path / "hh-first-50.jsonl"
    half.write_text("".join(plain.read_text().splitlines(keepends=True)[:50]))
    with db.connect(tmp_path / "w.duckdb") as con:
        first = import_file(con, plain)
        pairs = first.inserted["comparisons"]
        assert pairs == 99 and first.inserted["responses"] == 198 and first.imported == 99
        after_first = _data_counts(con)
        for path, opts in ((gz, ImportOptions()), (plain, ImportOptions(source="other")), (half, ImportOptions())):
            s = import_file(con, path, opts)
            assert not any(s.inserted.values()), (path.name, s.inserted)
            assert s.imported == 0 and s.already_present == s.read - sum(s.rejected.values())
            assert s.present["comparisons"] == s.already_present and s.present["responses"] == 2 * s.already_present
            assert _data_counts(con) == after_first
        rows = build(con, parse_options("pairwise", {"decontaminate": False})).table
        assert rows.num_rows == pairs
        # provenance: four imports, each listing the rows it carried; only the first stored any
        imports = con.execute("SELECT file_name, source, sha256, bytes FROM imports ORDER BY imported_at").fetchall()
        assert [(f, s) for f, s, _, _ in imports] == [("hh100.jsonl", "hh100.jsonl"), ("hh100.jsonl.gz",
                                                      "hh100.jsonl.gz"), ("hh100.jsonl", "other"),
                                                     ("hh-first-50.jsonl", "hh-first-50.jsonl")]
        import hashlib

        assert imports[1][2:] == (hashlib.sha256(gz.read_bytes()).hexdigest(), gz.stat().st_size)
        carried = dict(con.execute("""SELECT i.file_name || '/' || i.source, count(*) FILTER (r.is_new)
                                      FROM import_rows r JOIN imports i ON i.id = r.import_id
                                      WHERE r.table_name = 'comparisons' GROUP BY 1""").fetchall())
        assert carried == {"hh100.jsonl/hh100.jsonl": 99, "hh100.jsonl.gz/hh100.jsonl.gz": 0,
                           "hh100.jsonl/other": 0, "hh-first-50.jsonl/hh-first-50.jsonl": 0}
        again = import_file(con, plain)  # the same bytes, name and options: the same import, nothing recorded twice
        assert again.seen_before and con.execute("SELECT count(*) FROM imports").fetchone()[0] == 4


def test_identical_lines_are_counted_as_already_present(tmp_path, hh_path):
    """2,000 copies of one HH line stored one comparison; the summary said imported 2000, duplicates 0."""
    line = _hh(tmp_path, hh_path, 1).read_text()
    path = tmp_path / "same.jsonl"
    path.write_text(line * 2000)
    with db.connect(":memory:") as con:
        s = import_file(con, path)
    assert (s.read, s.imported, s.already_present) == (2000, 1, 1999)
    assert (s.inserted["prompts"], s.inserted["responses"], s.inserted["comparisons"]) == (1, 2, 1)
    assert (s.present["prompts"], s.present["responses"], s.present["comparisons"]) == (1999, 3998, 1999)


@pytest.mark.parametrize("name", sorted(p.name for p in FILES.iterdir() if p.name != "hh30.jsonl.gz"))
def test_every_format_counts_a_second_copy_as_already_present(tmp_path, name):
    """Each format's file, then a copy under another name: the copy stores nothing and says so, row by row."""
    copy = tmp_path / f"copy-of-{name}"
    shutil.copy(FILES / name, copy)
    with db.connect(":memory:") as con:
        first = import_file(con, FILES / name)
        before = _data_counts(con)
        second = import_file(con, copy)
        assert _data_counts(con) == before
    assert second.imported == 0 and second.already_present == first.imported + first.already_present > 0
    assert not any(second.inserted.values())
    assert {t: n for t, n in second.present.items() if n} == \
        {t: first.inserted[t] + first.present[t] for t in first.present if first.inserted[t] + first.present[t]}


def test_two_labellers_giving_one_pair_opposite_verdicts_are_two_comparisons(tmp_path):
    """The label is part of an imported comparison's identity: a data set's anonymous people may disagree."""
    rows = [{"prompt": "Pick one.", "chosen": "A", "rejected": "B"}, {"prompt": "Pick one.", "chosen": "B",
                                                                      "rejected": "A"}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with db.connect(":memory:") as con:
        s = import_file(con, path)
        assert s.inserted["comparisons"] == 2 and s.inserted["responses"] == 2
        assert import_file(con, path, ImportOptions(feedback_source="ai")).inserted["comparisons"] == 2  # others


# ------------------------------------------------------------------------------------------------ migration


def _v3_copy(tmp_path: Path) -> Path:
    path = tmp_path / "v3.duckdb"
    with gzip.open(DATA / "warehouse_v3.duckdb.gz", "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def _read(path: Path, sql: str) -> list[dict]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return db.fetch_dicts(con, sql)
    finally:
        con.close()


_REFS = {"responses": ("parent_id",), "comparisons": ("response_a", "response_b"), "ratings": ("response_id",),
         "step_labels": ("response_id",), "corrections": ("original_id", "corrected_id")}
_LISTS = {"rankings": "response_ids", "annotation_tasks": "item_ids"}
_TABLES = ("prompts", "responses", "comparisons", "rankings", "ratings", "step_labels", "corrections",
           "annotation_tasks")


def test_a_v3_warehouse_migrates_keeping_every_row_with_consistent_ids(tmp_path):
    """The warehouse release 8742308 made from tests/data/warehouse_v3/ (HH imported plain and gzipped: stored
    twice) migrates to v4: every row is there under its new id (copies merged into the earliest, labels merged away
    kept in feedback_history), every reference resolves, ids are what the importer and each stage compute now, and
    re-importing every file adds nothing."""
    from tests.data.make_warehouse_v3 import IMPORTS

    path = _v3_copy(tmp_path)
    old = {t: {r["id"]: r for r in _read(path, f"SELECT * FROM {t}")} for t in _TABLES}
    assert _read(path, "SELECT max(version) AS v FROM schema_version")[0]["v"] == 3
    assert len(old["responses"]) == 151 and len(old["comparisons"]) == 100  # HH's 30 pairs twice among them
    with db.connect(path, migrate=True) as con:
        assert db.schema_version(con) == db.latest_version()
    new = {t: {r["id"]: r for r in _read(path, f"SELECT * FROM {t}")} for t in _TABLES}
    rekey = {(r["table_name"], r["old_id"]): r["new_id"] for r in _read(path, "SELECT * FROM id_rekeys")}

    def resolve(table: str, old_id: str | None) -> str | None:
        return None if old_id is None else rekey.get((table, old_id), old_id)

    history = {(h["feedback_table"], h["feedback_id"]): h for h in _read(path, "SELECT * FROM feedback_history")}
    for table in _TABLES:
        for old_id, row in old[table].items():
            kept = new[table].get(resolve(table, old_id))
            assert kept is not None, (table, old_id)  # every row is still there, under its new id
            for col in _REFS.get(table, ()):
                assert kept[col] == resolve("responses", row[col]), (table, col)
            if table in _LISTS:
                assert kept[_LISTS[table]] == [resolve("responses", x) for x in row[_LISTS[table]]]
            same = {c: v for c, v in row.items() if c not in ("id", "created_at", "judge", "round_id", "model_id",
                                                           "meta", *_REFS.get(table, ()), _LISTS.get(table))}
            if table == "responses":  # a copy merged into the earliest: the same text, prompt, origin and steps
                assert {c: kept[c] for c in same} == same
            elif {c: kept[c] for c in same} != same or kept["created_at"] != row["created_at"]:
                # merged into an earlier copy: the copy is kept in feedback_history under the new id
                assert (table, kept["id"]) in history, (table, old_id)
    # every reference resolves
    for table, cols in _REFS.items():
        for row in new[table].values():
            assert all(row[c] is None or row[c] in new["responses"] for c in cols), (table, row["id"])
            assert row["prompt_id"] in new["prompts"]
    for table, col in _LISTS.items():
        assert all(set(r[col]) <= new["responses"].keys() for r in new[table].values())
    assert all(fid in new[t] for t, fid in history)
    # the second copy of hh30's 30 pairs merged into the first: 60 responses and 30 comparisons fewer
    assert (len(new["responses"]), len(new["comparisons"])) == (151 - 60, 100 - 30)
    _ids_are_what_the_stages_compute(new)
    # re-importing every file adds nothing
    with db.connect(path) as con:
        before = _data_counts(con)
        for name, opts in IMPORTS:
            s = import_file(con, FILES / name, ImportOptions(**opts))
            assert not any(s.inserted.values()) and s.imported == 0, (name, s.inserted)
        assert _data_counts(con) == before
        provenance = dict(con.execute("SELECT source, count(*) FROM imports GROUP BY source").fetchall())
    assert provenance["hh30.jsonl.gz"] == 2 and provenance["hh30.jsonl"] == 3  # recorded by the migration, then now


def _ids_are_what_the_stages_compute(rows: dict[str, dict[str, dict]]) -> None:
    """After the migration an AI judge, Aligner or annotation push run again finds its rows by the id it computes."""
    from alignloop.annotation.push import task_id
    from alignloop.warehouse import ids
    from alignloop.warehouse.records import Comparison, Ranking, Rating, StepLabel

    judged = [c for c in rows["comparisons"].values() if c["source"] == "ai"]
    assert judged and all(c["id"] == Comparison.make_id(c["judge"], c["response_a"], c["response_b"], c["aspect"])
                          for c in judged)
    ranked = [r for r in rows["rankings"].values() if r["source"] == "ai"]
    assert ranked and all(r["id"] == Ranking.make_id(r["judge"], r["response_ids"], r["aspect"]) for r in ranked)
    ruled = [r for r in rows["ratings"].values() if r["source"] == "rule"]
    assert ruled and all(r["id"] == Rating.make_id(r["judge"], r["response_id"], r["aspect"], kind="verifier")
                         for r in ruled)
    stepped = [s for s in rows["step_labels"].values() if s["source"] == "ai"]
    assert stepped and all(s["id"] == StepLabel.make_id(s["judge"], s["response_id"], s["step_index"])
                           for s in stepped)
    aligned = [r for r in rows["responses"].values() if r["origin"] == "aligner"]
    assert aligned and all(r["id"] == ids.response_id(r["prompt_id"], r["model_id"], {
        **json.loads(r["sampling"]), "parent_id": r["parent_id"]}, None, 0, text=r["text"]) for r in aligned)
    tasks = list(rows["annotation_tasks"].values())
    assert tasks and all(t["id"] == task_id(t["kind"], t["round_id"], t["item_ids"]) for t in tasks)


# ------------------------------------------------------------------------------------------------ the warehouse


def test_an_import_does_not_hold_the_warehouse_while_it_reads_the_file(tmp_path):
    """Two processes: an import reading a pipe (a parse that takes as long as its writer likes) and a status. The
    status answers at once; before, the import held the write lock from its start and status said "warehouse
    busy"."""
    path = tmp_path / "w.duckdb"
    with db.connect(path):
        pass
    pipe = tmp_path / "prompts.jsonl"
    os.mkfifo(pipe)
    env = {**os.environ, "ALIGNLOOP_LOCK_WAIT": "2"}
    importer = subprocess.Popen([CLI, "prompts", "import", str(pipe), "--db", str(path), "--json"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # the importer has opened the pipe for reading: it is parsing
            try:
                fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                assert importer.poll() is None and time.monotonic() < deadline, importer.communicate()
                time.sleep(0.1)
        with os.fdopen(fd, "w") as writer:
            writer.write('{"prompt": "first"}\n')
            writer.flush()
            status = subprocess.run([CLI, "status", "--json", "--db", str(path)], env=env, capture_output=True,
                                    text=True, timeout=120, check=False)
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["tables"]["prompts"] == 0
            writer.write('{"prompt": "second"}\n')
        out, err = importer.communicate(timeout=120)
    finally:
        if importer.poll() is None:
            importer.kill()
            importer.wait()
    assert importer.returncode == 0, err
    assert json.loads(out)["inserted"]["prompts"] == 2


def test_a_failed_import_removes_the_warehouse_it_created_and_only_that(tmp_path, monkeypatch):
    from alignloop.pipelines.intake import importer

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{oops\n')
    new = tmp_path / "sub" / "dir" / "new.duckdb"
    with pytest.raises(InputError, match=r"bad\.jsonl:2: malformed JSON"):  # fails in the parse, before any write
        import_into(str(new), bad)
    assert not (tmp_path / "sub").exists()

    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "fine"}\n')

    def broken(con, plan):
        raise RuntimeError("disk full")

    monkeypatch.setattr(importer, "write_plan", broken)  # fails after the warehouse file was created
    with pytest.raises(RuntimeError, match="disk full"):
        import_into(str(new), good)
    assert not (tmp_path / "sub").exists()
    (tmp_path / "kept").mkdir()
    existing = tmp_path / "kept" / "w.duckdb"
    with db.connect(existing):
        pass
    with pytest.raises(RuntimeError, match="disk full"):
        import_into(str(existing), good)
    assert existing.exists()


def test_the_cli_leaves_no_warehouse_behind_a_failed_import(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "fine"}\n{oops\n')
    r = subprocess.run([CLI, "prompts", "import", "bad.jsonl", "--db", "new/w.duckdb"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "bad.jsonl:2" in r.stderr
    assert not (tmp_path / "new").exists()
