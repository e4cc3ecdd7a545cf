"""The command line as a user meets it: exit codes, one-line errors, --json output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLI = [str(Path(sys.executable).with_name("alignloop"))]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_init_demo_import_status_json(tmp_path):
    assert run("init", cwd=tmp_path).returncode == 0
    assert (tmp_path / "alignloop.duckdb").exists()
    r = run("prompts", "demo", "--out", "demo.jsonl", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["inserted"]["prompts"] == 120
    r = run("prompts", "demo", "--out", "demo.jsonl", "--json", cwd=tmp_path)
    assert json.loads(r.stdout)["inserted"]["prompts"] == 0
    st = json.loads(run("status", "--json", cwd=tmp_path).stdout)
    assert st["tables"]["prompts"] == 120 and st["prompt_splits"] == {"test": 40, "train": 80}


def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "fine"}\n{oops\n')
    r = run("prompts", "import", "bad.jsonl", "--db", "w.duckdb", cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "bad.jsonl:2" in lines[0] and "malformed JSON" in lines[0]
    st = json.loads(run("status", "--json", "--db", "w.duckdb", cwd=tmp_path).stdout)
    assert st["tables"]["prompts"] == 0


def test_status_without_warehouse_says_so(tmp_path):
    r = run("status", "--db", "missing.duckdb", cwd=tmp_path)
    assert r.returncode == 2 and "alignloop init" in r.stderr


def test_demo_refuses_a_bad_recipe_before_writing_anything(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    for args, expected in ((["--loss", "kto"], "loss 'kto' is not pairwise"), (["--lr", "0"], "lr: "),
                           (["--samples", "1"], "n: ")):
        r = CliRunner().invoke(app, ["demo", "--db", str(tmp_path / "w.duckdb"), *args])
        assert r.exit_code == 2 and expected in r.output, r.output
    assert not (tmp_path / "w.duckdb").exists() and not (tmp_path / "data").exists()


def test_a_temporary_prefect_server_that_does_not_answer_is_one_line(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")
    assert run("init", "--db", "w.duckdb", cwd=tmp_path).returncode == 0
    r = subprocess.run([*CLI, "round", "--round", "r1", "--db", "w.duckdb"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, check=False, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "temporary Prefect server did not answer within 0 s" in r.stderr
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in r.stderr
    st = json.loads(run("status", "--json", "--db", "w.duckdb", cwd=tmp_path).stdout)
    assert st["tables"]["rounds"] == 0 and st["tables"]["responses"] == 0


def test_cli_holds_back_prefect_run_logs_of_user_errors_only():
    import logging

    from flows.cli import _QuietUserErrors
    from warehouse.errors import InputError

    quiet = _QuietUserErrors()

    def record(msg: str, level: int = logging.ERROR, exc: BaseException | None = None) -> logging.LogRecord:
        return logging.LogRecord("prefect.flow_runs", level, __file__, 1, msg, None,
                                 (type(exc), exc, None) if exc else None)

    assert not quiet.filter(record("Task run failed with exception", exc=InputError("bad option")))
    assert not quiet.filter(record("Finished in state Failed('Task run encountered an exception InputError: bad')"))
    assert not quiet.filter(record("Finished in state Failed('Flow run encountered an exception: InputError: bad')"))
    # anything else still shows: another error's traceback and failed state, and lines that are not errors
    assert quiet.filter(record("Task run failed with exception", exc=ValueError("bug")))
    assert quiet.filter(record("Finished in state Failed('Flow run encountered an exception: ValueError: bug')"))
    assert quiet.filter(record("Finished in state Completed()", logging.INFO))


def test_listing_commands_load_neither_torch_nor_prefect():
    """`alignloop --help`, `status`, `dataset list` start in about a second: the heavy libraries load with the
    commands that use them."""
    code = ("import sys, flows.cli; heavy = [m for m in ('torch', 'transformers', 'prefect') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""
