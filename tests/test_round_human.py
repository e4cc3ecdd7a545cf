"""A round that waits for people: pairs go to a real Label Studio, the round stops or polls until annotators reach
the quota, then pulls their labels and trains on them. Tiny random policy, so the round itself takes seconds."""

from __future__ import annotations

import pytest

from alignloop.annotation import waiting
from alignloop.annotation.client import connect
from alignloop.flows.round import round_flow
from tests.fixtures_round import PROMPTS, annotate_all, human_round_params, scalar, seed_human_round

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, label_studio, prefect_harness):
    tmp = tmp_path_factory.mktemp("human-round")
    return tmp, seed_human_round(tmp), label_studio


def test_round_stops_waiting_then_trains_on_human_labels(setup, monkeypatch):
    tmp, policy, ls = setup
    monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls.token)
    w = tmp / "w.duckdb"

    first = round_flow(human_round_params(tmp, policy, "h1", human_wait="stop"))
    assert first["status"] == "waiting_for_labels"
    assert first["human"]["tasks"] == PROMPTS and first["human"]["done"] == 0
    assert scalar(w, "SELECT status FROM rounds WHERE id = ?", "h1") == "waiting"
    assert scalar(w, "SELECT count(*) FROM datasets") == 0  # nothing trained on missing labels

    client = connect(ls.url, ls.token)
    assert annotate_all(client, "h1", "A") == PROMPTS
    second = round_flow(human_round_params(tmp, policy, "h1", human_wait="stop"))
    assert second["feedback"]["human"]["status"] == "labelled"
    assert second["feedback"]["human"]["pushed"] == 0  # no task sent twice
    assert scalar(w, "SELECT count(*) FROM annotation_tasks WHERE kind = 'pairwise'") == PROMPTS
    assert scalar(w, "SELECT count(*) FROM comparisons WHERE source = 'human' AND round_id = ?", "h1") == PROMPTS
    assert sum(second["dataset"]["rows"].values()) == PROMPTS
    assert scalar(w, "SELECT status FROM rounds WHERE id = ?", "h1") in ("done", "stopped")


def test_polling_round_times_out_cleanly_then_resumes_when_annotators_finish(setup, monkeypatch):
    tmp, policy, ls = setup
    monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls.token)
    w = tmp / "w.duckdb"
    timed_out = round_flow(human_round_params(tmp, policy, "h2", human_wait="poll", human_timeout_s=2))
    assert timed_out["status"] == "waiting_for_labels"
    assert scalar(w, "SELECT status FROM rounds WHERE id = ?", "h2") == "waiting"
    # Fresh prompts: h2 samples none of h1's.
    assert scalar(w, """SELECT count(*) FROM (SELECT DISTINCT prompt_id FROM responses WHERE round_id = 'h1'
                      INTERSECT SELECT DISTINCT prompt_id FROM responses WHERE round_id = 'h2')""") == 0

    client = connect(ls.url, ls.token)
    annotated: list[int] = []
    real_count = waiting.count_done

    def count_done(*args, **kwargs):  # the round's polls; annotators finish between the first and second poll
        if len(annotated) == 0 and getattr(count_done, "calls", 0) == 1:
            assert scalar(w, "SELECT status FROM rounds WHERE id = ?", "h2") == "waiting"
            annotated.append(annotate_all(client, "h2", "B"))
        count_done.calls = getattr(count_done, "calls", 0) + 1
        return real_count(*args, **kwargs)

    monkeypatch.setattr(waiting, "count_done", count_done)
    done = round_flow(human_round_params(tmp, policy, "h2", human_wait="poll", human_timeout_s=120))
    assert annotated == [PROMPTS]
    assert done["feedback"]["human"]["status"] == "labelled"
    assert done["feedback"]["human"]["done_before_wait"] == 0  # it did wait for the annotators
    assert count_done.calls >= 2
    assert scalar(w, "SELECT count(*) FROM comparisons WHERE source = 'human' AND round_id = ?", "h2") == PROMPTS
    assert sum(done["dataset"]["rows"].values()) == PROMPTS


def test_a_kto_round_asks_people_for_a_thumbs_up_or_down_on_each_sample(setup, monkeypatch):
    from alignloop.annotation import push
    from alignloop.annotation.configs import config_for
    from tests.fixtures_annotation import choice

    tmp, policy, ls = setup
    monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls.token)
    w = tmp / "w.duckdb"
    first = round_flow(human_round_params(tmp, policy, "t1", method="kto", human_wait="stop"))
    assert first["status"] == "waiting_for_labels" and first["human"]["tasks"] == 2 * PROMPTS  # n=2 samples each
    client = connect(ls.url, ls.token)
    project = client.get_or_create_project(push.project_title("t1", "binary"), config_for("binary"))
    tasks = sorted(client.list_tasks(project.id), key=lambda t: t.id)
    for i, task in enumerate(tasks):  # every other sample good
        client.create_annotation(task.id, [choice("thumbs", "response", "good" if i % 2 == 0 else "bad")])
    second = round_flow(human_round_params(tmp, policy, "t1", method="kto", human_wait="stop"))
    assert second["feedback"]["human"]["status"] == "labelled"
    assert scalar(w, "SELECT count(*) FROM annotation_tasks WHERE kind = 'binary' AND round_id = 't1'") == 2 * PROMPTS
    assert scalar(w, "SELECT count(*) FROM ratings WHERE source = 'human' AND round_id = 't1'") == 2 * PROMPTS
    assert second["dataset"]["id"] == "t1-thumbs@v1" and sum(second["dataset"]["rows"].values()) == 2 * PROMPTS
    assert scalar(w, "SELECT method FROM training_runs WHERE round_id = 't1'") == "kto"
