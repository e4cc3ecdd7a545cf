"""The dataset builders against an independent pandas implementation of the same rules (benchmarks/build.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from alignloop.pipelines.datasets.build import build
from alignloop.pipelines.datasets.config import parse_options


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "build.py"
    spec = importlib.util.spec_from_file_location("alignloop_bench_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def warehouse(bench):
    """One synthetic warehouse (8k comparisons) and its pandas frames for every kind."""
    con, data, _ = bench.load(8000)
    yield con, bench.pandas_frames(data)
    con.close()


@pytest.mark.parametrize("name", ["pairwise", "binary", "listwise"])
def test_builders_equal_the_pandas_reference(bench, warehouse, name):
    con, frames = warehouse
    kind, opts = bench.SPECS[name]
    built = build(con, parse_options(kind, opts))
    expected = bench.PANDAS[name](frames)
    assert built.table.num_rows > 1000
    assert built.table.equals(expected)
    if name == "pairwise":  # the synthetic warehouse exercises the policies, not only the happy path
        counts = built.stage_counts
        assert counts["require_consistent"] < counts["comparisons"] and counts["prefer_human"] < counts["contradictions"]
