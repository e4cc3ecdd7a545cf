"""A human-feedback round small enough for tests: demo prompts, a tiny random policy, Label Studio helpers.

    from tests.fixtures_round import PROMPTS, human_round_params, seed_human_round
"""

from __future__ import annotations

from pathlib import Path

from alignloop.annotation import push
from alignloop.annotation.configs import config_for
from alignloop.flows.round import RoundParams
from alignloop.pipelines.demo_prompts import write_demo_prompts
from alignloop.pipelines.intake import ImportOptions, import_file
from alignloop.warehouse import db
from tests.fixtures_annotation import pref
from tests.fixtures_generate import build_tiny_model

PROMPTS = 3
"""Training prompts per round: one Label Studio task each (n=2 samples make one pair)."""


def seed_human_round(tmp: Path) -> Path:
    """Demo prompts in ``tmp/w.duckdb`` and a tiny random policy; returns the policy folder."""
    with db.connect(tmp / "w.duckdb") as con:
        import_file(con, write_demo_prompts(tmp / "p.jsonl", n_train=12, n_test=4), ImportOptions(source="demo"))
    return build_tiny_model(tmp / "policy")


def human_round_params(tmp: Path, policy: Path, round_id: str, **kw) -> RoundParams:
    """A round with human feedback that takes seconds: few short samples, one epoch, no win rate."""
    return RoundParams(round=round_id, policy=str(policy), feedback="human", n=2, temperature=1.0,
                       max_new_tokens=8, prompts_per_round=PROMPTS, fresh_prompts=True, heldout_limit=2,
                       heldout_max_new_tokens=8, win_rate=False, epochs=1, batch_size=2, max_length=96,
                       runs_dir=str(tmp / "runs"), db=str(tmp / "w.duckdb"), poll_interval_s=1, **kw)


def round_project(client, round_id: str):
    return client.get_or_create_project(push.project_title(round_id, "pairwise"), config_for("pairwise"))


def annotate_all(client, round_id: str, value: str = "A") -> int:
    """Answer every unannotated task of the round's pairwise project with ``value``; returns how many."""
    tasks = [t for t in client.list_tasks(round_project(client, round_id).id) if not t.total_annotations]
    for t in tasks:
        client.create_annotation(t.id, pref(value))
    return len(tasks)


def scalar(path, sql: str, *args):
    with db.connect(str(path)) as con:
        return con.execute(sql, list(args)).fetchone()[0]
