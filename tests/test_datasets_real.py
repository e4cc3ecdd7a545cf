"""Real data: HH-RLHF rows 0-1999 -> pairwise snapshot -> TRL export; the PRM800K example -> stepwise export."""

from __future__ import annotations

import pytest

from alignloop.pipelines.datasets.config import parse_options
from alignloop.pipelines.datasets.export import export_snapshot, read_export
from alignloop.pipelines.datasets.publish import build_and_publish
from alignloop.pipelines.datasets.snapshot import load_snapshot
from alignloop.warehouse import db
from tests.conftest import shared_file

intake = pytest.importorskip("alignloop.pipelines.intake", reason="the intake importer is not there")


def test_hh_rlhf_pairwise_snapshot_to_trl(tmp_path):
    path = shared_file("hh-rlhf-harmless-base-test.jsonl.gz")
    with db.connect(":memory:") as con:
        summary = intake.import_file(con, path, intake.ImportOptions(format="hh-rlhf", limit=2000))
        pub = build_and_publish(con, parse_options("pairwise", {}), "hh", tmp_path / "snaps")
    m = pub.outcome.manifest
    assert summary.read == 2000
    assert m.stage_counts["comparisons"] == summary.inserted["comparisons"] == 1996
    assert m.stage_counts["ties"] == 1996                   # human labels: no ties, no contradictions
    total = m.row_counts["train"] + m.row_counts["test"]
    assert total == m.stage_counts["decontaminate"] == 1983  # 13 train prompts share a 13-gram with test ones
    assert pub.lint.counts["chosen_equals_rejected"] == 0
    # source lines 668, 764, 1320 and 1850 have two Assistant turns in a row inside the shared conversation
    assert pub.lint.counts["consecutive_same_role"] == 4 and pub.lint.counts["bad_chat_prompt"] == 0
    snap = load_snapshot("hh", root=tmp_path / "snaps")
    export_snapshot(snap, "trl", tmp_path / "trl")
    back = read_export(tmp_path / "trl")
    assert {s: t.num_rows for s, t in back.items()} == m.row_counts
    assert back["train"].column_names[:3] == ["prompt", "chosen", "rejected"]
    assert back["train"]["chosen_id"].to_pylist() == snap.train["chosen_id"].to_pylist()
    assert {"prompt_id", "rejected_id", "feedback_ids", "round_id"} <= set(back["train"].column_names)


def test_prm800k_example_to_stepwise_trl(tmp_path):
    path = shared_file("prm800k-readme-example.jsonl")
    with db.connect(":memory:") as con:
        intake.import_file(con, path, intake.ImportOptions(format="prm800k"))
        pub = build_and_publish(con, parse_options("steps", {"neutral_label": "false"}), "prm", tmp_path / "s")
    snap = load_snapshot("prm", root=tmp_path / "s")
    export_snapshot(snap, "trl", tmp_path / "trl")
    t = read_export(tmp_path / "trl")["train"]
    assert t.num_rows == pub.outcome.manifest.row_counts["train"] == 5
    assert t.column_names[:3] == ["prompt", "completions", "labels"]
    main = [(c, lab) for c, lab in zip(t["completions"].to_pylist(), t["labels"].to_pylist()) if len(c) == 3
            and lab[0] is not None]
    assert main and main[0][1] == [False, False, False]     # 0, 0, -1 with 0 -> False (recorded rule)
    assert pub.outcome.manifest.notes["label_rule"] == "+1 -> True, 0 -> False, -1 -> False"
