"""A round that waits for people: pairs go to a real Label Studio, the round stops or polls until annotators reach
the quota, then pulls their labels and trains on them. Tiny random policy, so the round itself takes seconds."""

from __future__ import annotations

import pytest

import flows.round
from annotation import push
from annotation.client import connect
from annotation.configs import config_for
from flows.round import RoundParams, round_flow
from pipelines.demo_prompts import write_demo_prompts
from pipelines.intake import ImportOptions, import_file
from tests.fixtures_annotation import pref
from tests.fixtures_generate import build_tiny_model
from warehouse import db

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]
PROMPTS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory, label_studio, prefect_harness):
    tmp = tmp_path_factory.mktemp("human-round")
    with db.connect(tmp / "w.duckdb") as con:
        import_file(con, write_demo_prompts(tmp / "p.jsonl", n_train=12, n_test=4), ImportOptions(source="demo"))
    return tmp, build_tiny_model(tmp / "policy"), label_studio


def _params(tmp, policy, round_id: str, **kw) -> RoundParams:
    return RoundParams(round=round_id, policy=str(policy), feedback="human", n=2, temperature=1.0,
                       max_new_tokens=8, prompts_per_round=PROMPTS, fresh_prompts=True, heldout_limit=2,
                       heldout_max_new_tokens=8, win_rate=False, epochs=1, batch_size=2, max_length=96,
                       runs_dir=str(tmp / "runs"), db=str(tmp / "w.duckdb"), poll_interval_s=1, **kw)


def _annotate_all(client, round_id: str, value: str = "A") -> int:
    project = client.get_or_create_project(push.project_title(round_id, "pairwise"), config_for("pairwise"))
    tasks = [t for t in client.list_tasks(project.id) if not t.total_annotations]
    for t in tasks:
        client.create_annotation(t.id, pref(value))
    return len(tasks)


def _one(path, sql: str, *args):
    with db.connect(str(path)) as con:
        return con.execute(sql, list(args)).fetchone()[0]


def test_round_stops_waiting_then_trains_on_human_labels(setup, monkeypatch):
    tmp, policy, ls = setup
    monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls.token)
    w = tmp / "w.duckdb"

    first = round_flow(_params(tmp, policy, "h1", human_wait="stop"))
    assert first["status"] == "waiting_for_labels"
    assert first["human"]["tasks"] == PROMPTS and first["human"]["done"] == 0
    assert _one(w, "SELECT status FROM rounds WHERE id = ?", "h1") == "waiting"
    assert _one(w, "SELECT count(*) FROM datasets") == 0  # nothing trained on missing labels

    client = connect(ls.url, ls.token)
    assert _annotate_all(client, "h1", "A") == PROMPTS
    second = round_flow(_params(tmp, policy, "h1", human_wait="stop"))
    assert second["feedback"]["human"]["status"] == "labelled"
    assert second["feedback"]["human"]["pushed"] == 0  # no task sent twice
    assert _one(w, "SELECT count(*) FROM annotation_tasks WHERE kind = 'pairwise'") == PROMPTS
    assert _one(w, "SELECT count(*) FROM comparisons WHERE source = 'human' AND round_id = ?", "h1") == PROMPTS
    assert sum(second["dataset"]["rows"].values()) == PROMPTS
    assert _one(w, "SELECT status FROM rounds WHERE id = ?", "h1") in ("done", "stopped")


def test_polling_round_times_out_cleanly_then_resumes_when_annotators_finish(setup, monkeypatch):
    tmp, policy, ls = setup
    monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls.token)
    w = tmp / "w.duckdb"
    timed_out = round_flow(_params(tmp, policy, "h2", human_wait="poll", human_timeout_s=2))
    assert timed_out["status"] == "waiting_for_labels"
    assert _one(w, "SELECT status FROM rounds WHERE id = ?", "h2") == "waiting"
    # Fresh prompts: h2 samples none of h1's.
    assert _one(w, """SELECT count(*) FROM (SELECT DISTINCT prompt_id FROM responses WHERE round_id = 'h1'
                      INTERSECT SELECT DISTINCT prompt_id FROM responses WHERE round_id = 'h2')""") == 0

    client = connect(ls.url, ls.token)
    annotated: list[int] = []
    real_count = flows.round.count_done

    def count_done(*args, **kwargs):  # the round's polls; annotators finish between the first and second poll
        if len(annotated) == 0 and getattr(count_done, "calls", 0) == 1:
            assert _one(w, "SELECT status FROM rounds WHERE id = ?", "h2") == "waiting"
            annotated.append(_annotate_all(client, "h2", "B"))
        count_done.calls = getattr(count_done, "calls", 0) + 1
        return real_count(*args, **kwargs)

    monkeypatch.setattr(flows.round, "count_done", count_done)
    done = round_flow(_params(tmp, policy, "h2", human_wait="poll", human_timeout_s=120))
    assert annotated == [PROMPTS]
    assert done["feedback"]["human"]["status"] == "labelled"
    assert done["feedback"]["human"]["done_before_wait"] == 0  # it did wait for the annotators
    assert count_done.calls >= 2
    assert _one(w, "SELECT count(*) FROM comparisons WHERE source = 'human' AND round_id = ?", "h2") == PROMPTS
    assert sum(done["dataset"]["rows"].values()) == PROMPTS
