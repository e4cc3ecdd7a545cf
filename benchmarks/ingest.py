"""Ingest comparisons through the Arrow insert-if-absent path vs row-by-row executemany.

    .venv/bin/python benchmarks/ingest.py [--rows 1000000] [--baseline-rows 20000]

Both paths write the same synthetic rows into the real ``comparisons`` table of a fresh warehouse
file. The baseline is slow, so it runs on the first ``--baseline-rows`` rows; rates (rows/s) are
compared, which is fair because executemany's cost per row does not fall with more rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from alignloop.warehouse import db


def synthetic_comparisons(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    hexes = np.char.mod("%032x", idx)
    winners = np.array(["a", "b", "tie"])[rng.integers(0, 3, n)]
    return pa.table({
        "id": pa.array(np.char.add("c", hexes)),
        "prompt_id": pa.array(np.char.add("p", np.char.mod("%031x", idx // 4))),
        "response_a": pa.array(np.char.add("a", hexes)),
        "response_b": pa.array(np.char.add("b", hexes)),
        "winner": pa.array(winners),
        "prob_a": pa.array(rng.random(n)),
        "consistent": pa.array(rng.random(n) > 0.2),
        "judge": pa.array(np.full(n, "bench-judge@1")),
        "source": pa.array(np.full(n, "ai")),
        "round_id": pa.array(np.full(n, "bench")),
    })


INSERT_ROW = ("INSERT INTO comparisons (id, prompt_id, response_a, response_b, winner, prob_a, consistent, judge, "
              "source, round_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--baseline-rows", type=int, default=5_000)
    args = ap.parse_args()
    table = synthetic_comparisons(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        with db.connect(Path(tmp) / "arrow.duckdb") as con:
            t0 = time.perf_counter()
            with db.transaction(con):
                inserted = db.ingest(con, "comparisons", table)
            arrow_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with db.transaction(con):
                again = db.ingest(con, "comparisons", table)
            rerun_s = time.perf_counter() - t0
        assert inserted == args.rows and again == 0
        base = table.slice(0, args.baseline_rows).to_pylist()
        rows = [tuple(r[c] for c in table.column_names) for r in base]
        with db.connect(Path(tmp) / "rows.duckdb") as con:
            t0 = time.perf_counter()
            with db.transaction(con):
                con.executemany(INSERT_ROW, rows)
            rows_s = time.perf_counter() - t0
            assert con.execute("SELECT count(*) FROM comparisons").fetchone()[0] == len(rows)
    arrow_rate, rows_rate = args.rows / arrow_s, len(rows) / rows_s
    print(f"arrow insert-if-absent : {args.rows:>9,} rows in {arrow_s:7.2f} s = {arrow_rate:>11,.0f} rows/s")
    print(f"  re-ingest (all dupes): {args.rows:>9,} rows in {rerun_s:7.2f} s, 0 inserted")
    print(f"row-by-row executemany : {len(rows):>9,} rows in {rows_s:7.2f} s = {rows_rate:>11,.0f} rows/s")
    print(f"ratio (arrow / executemany rows/s): {arrow_rate / rows_rate:.1f}x  (goal >= 20x)")


if __name__ == "__main__":
    main()
