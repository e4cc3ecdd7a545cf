"""Session-wide test settings: offline hub, no telemetry, shared data location, one Prefect harness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ALIGNLOOP_LOCK_WAIT", "5")

REPO = Path(__file__).resolve().parents[1]

# One real Label Studio server per test session, shared by every module that asks for it.
pytest_plugins = ("tests.labelstudio_fixtures",)


def shared_data_dir() -> Path:
    """``../shared/data`` beside the repository (CI has it; a user's clone does not)."""
    return Path(os.environ.get("ALIGNLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(name: str) -> Path:
    path = shared_data_dir() / name
    if not path.exists():
        pytest.skip(f"shared data file {name} is not on this machine (expected in ../shared/data)")
    return path


@pytest.fixture
def hh_path() -> Path:
    return shared_file("hh-rlhf-harmless-base-test.jsonl.gz")


@pytest.fixture
def prm_path() -> Path:
    return shared_file("prm800k-readme-example.jsonl")


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect API for the whole session (a flow run costs seconds, the harness more)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
