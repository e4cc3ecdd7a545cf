"""Dataset builders, DuckDB vs pandas, on synthetic comparisons: ``python benchmarks/build.py [--full]``.

Builds pairwise (comparisons: consistency, aggregation, human-over-AI, ties), binary (the pairs split) and
listwise (ratings, k=4) with the platform's DuckDB builders and with a pandas implementation of the same rules,
checks both give exactly the same rows (the snapshot's columns and order), and prints the best of ``--repeat``
times for each. Then the DuckDB time at 100k and 1M comparisons (10M with ``--full``; pandas is left out there,
its frames alone would not fit in memory).
Decontamination is off in both (it is a separate cost that depends on the evaluation set). The load average is
printed before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alignloop.pipelines.datasets.build import build
from alignloop.pipelines.datasets.config import parse_options
from alignloop.warehouse import db
from alignloop.warehouse.snapshots import SCHEMAS

RESPONSES_PER_PROMPT = 4
SPECS = {"pairwise": ("pairwise", {"decontaminate": False}),
         "binary": ("binary", {"origin": "pairwise", "decontaminate": False}),
         "listwise": ("listwise", {"origin": "ratings", "k": 4, "decontaminate": False})}


def synthetic(n: int, seed: int = 0) -> dict[str, pa.Table]:
    """n comparisons over n/4 prompts x 4 responses (humans and an AI judge, some repeats) and ratings of each response."""
    rng = np.random.default_rng(seed)
    n_prompts = max(n // 4, 1)
    pid = np.char.add("p", np.arange(n_prompts).astype(str))
    rid = np.char.add("r", np.arange(n_prompts * RESPONSES_PER_PROMPT).astype(str))
    words = rng.integers(3, 60, len(rid))
    prompts = pa.table({"id": pid, "messages": [f'[{{"role":"user","content":"question {i}"}}]' for i in
                                                range(n_prompts)],
                        "text": np.char.add("user: question ", np.arange(n_prompts).astype(str)),
                        "norm_hash": np.char.add("h", np.arange(n_prompts).astype(str)), "source": ["bench"] * n_prompts, "split": np.where(rng.random(n_prompts) < 0.1, "test", "train")})
    texts = pc.utf8_rtrim_whitespace(pc.binary_repeat("word ", pa.array(words)))  # "word word ...", w words
    responses = pa.table({"id": rid, "prompt_id": np.repeat(pid, RESPONSES_PER_PROMPT), "model_id": ["m"] * len(rid),
                          "round_id": ["r1"] * len(rid), "text": texts, "origin": ["policy"] * len(rid)})
    prompt_of = rng.integers(0, n_prompts, n)
    i = rng.integers(0, RESPONSES_PER_PROMPT, n)
    j = (i + rng.integers(1, RESPONSES_PER_PROMPT, n)) % RESPONSES_PER_PROMPT
    human = rng.random(n) < 0.3
    comparisons = pa.table({
        "id": np.char.add("c", np.arange(n).astype(str)), "prompt_id": pid[prompt_of],
        "response_a": rid[prompt_of * RESPONSES_PER_PROMPT + i], "response_b": rid[prompt_of * RESPONSES_PER_PROMPT + j],
        "winner": rng.choice(["a", "b", "tie"], n, p=[0.45, 0.45, 0.1]),
        "prob_a": rng.random(n), "consistent": np.where(human, None, rng.random(n) < 0.8),
        "judge": np.where(human, np.char.add("ann", rng.integers(0, 3, n).astype(str)), "judge-v1"),
        "source": np.where(human, "human", "ai"), "round_id": ["r1"] * n, "aspect": ["overall"] * n})
    # every response rated by a human; a quarter also by the AI judge (dropped: human over AI), a tenth twice by
    # humans (averaged)
    ai, twice = rng.random(len(rid)) < 0.25, rng.random(len(rid)) < 0.10
    rated = np.concatenate([rid, rid[ai], rid[twice]])
    n_r = len(rated)
    ratings = pa.table({"id": np.char.add("t", np.arange(n_r).astype(str)),
                        "prompt_id": np.concatenate([np.repeat(pid, RESPONSES_PER_PROMPT)[m] for m in
                                                     (slice(None), ai, twice)]),
                        "response_id": rated, "score": rng.integers(1, 11, n_r).astype(float),
                        "scale_min": [1.0] * n_r, "scale_max": [10.0] * n_r,
                        "judge": np.concatenate([["ann0"] * len(rid), ["judge-v1"] * int(ai.sum()),
                                                 ["ann1"] * int(twice.sum())]),
                        "source": np.concatenate([["human"] * len(rid), ["ai"] * int(ai.sum()),
                                                  ["human"] * int(twice.sum())]),
                        "round_id": ["r1"] * n_r})
    return {"prompts": prompts, "responses": responses, "comparisons": comparisons, "ratings": ratings}


# ---- pandas implementation of the same rules and the same output (defaults: consistent only, drop contradictions,
# ---- human over AI, ties dropped, hard labels, pairs with identical texts dropped; for ratings one score per
# ---- response from its best source tier). It yields the snapshot's columns and row order, so the run checks
# ---- that both give exactly the same rows. Lists of feedback ids are built sorted (rows sorted by id first).

TIER = {"human": 0, "rule": 1, "ai": 2}


def tier(source: pd.Series) -> pd.Series:
    return source.map(TIER).fillna(3)


def pandas_pairs(c: pd.DataFrame) -> pd.DataFrame:
    c = c[c["winner"].isin(["a", "b", "tie"]) & (c["consistent"] != False) & (c["aspect"] == "overall")]  # None stays
    c = c[c["response_a"] != c["response_b"]].sort_values("id")
    p_a = np.where(c["winner"] == "tie", 0.5, np.where(c["winner"] == "a", 1.0, 0.0))
    a_lo = (c["response_a"] < c["response_b"]).to_numpy()
    c = c.assign(lo=np.where(a_lo, c["response_a"], c["response_b"]), hi=np.where(a_lo, c["response_b"], c["response_a"]),
                 p_lo=np.where(a_lo, p_a, 1 - p_a))
    c = c.assign(vote_lo=c["p_lo"] > 0.5, vote_hi=c["p_lo"] < 0.5)
    g = c.groupby(["prompt_id", "lo", "hi", "source"], sort=False).agg(
        round_id=("round_id", "min"), n_lo=("vote_lo", "sum"), n_hi=("vote_hi", "sum"), p_lo=("p_lo", "mean"),
        feedback_ids=("id", list)).reset_index()
    g = g[~((g["n_lo"] > 0) & (g["n_hi"] > 0))]
    g = g.assign(tier=tier(g["source"]))
    g = g[g["tier"] == g.groupby(["prompt_id", "lo", "hi"])["tier"].transform("min")]
    g = g[g["p_lo"] != 0.5]
    won = g["p_lo"] >= 0.5
    return g.assign(chosen_id=np.where(won, g["lo"], g["hi"]), rejected_id=np.where(won, g["hi"], g["lo"]))


def pandas_render(rows: pd.DataFrame, d: dict[str, pd.DataFrame], kind: str, order: list[str]) -> pa.Table:
    """Join the prompt's fields; the snapshot's columns, sorted by ``order``."""
    prompts = d["prompts"][["id", "split", "messages", "text"]].rename(
        columns={"id": "prompt_id", "messages": "prompt", "text": "prompt_text"})
    out = rows.merge(prompts, on="prompt_id").sort_values(order)
    schema = SCHEMAS[kind]
    return pa.Table.from_pandas(out[schema.names], schema=schema, preserve_index=False)


def pandas_pairwise(d: dict[str, pd.DataFrame]) -> pa.Table:
    g = pandas_pairs(d["comparisons"]).assign(prob=1.0, margin=np.nan)
    g = g.assign(chosen=g["chosen_id"].map(d["texts"]), rejected=g["rejected_id"].map(d["texts"]))
    g = g.dropna(subset=["chosen", "rejected"])
    g = g[g["chosen"] != g["rejected"]]
    return pandas_render(g, d, "pairwise", ["prompt_id", "chosen_id", "rejected_id", "source"])


def pandas_binary(d: dict[str, pd.DataFrame]) -> pa.Table:
    g = pandas_pairs(d["comparisons"])
    rows = pd.concat([g.assign(completion_id=g["chosen_id"], label=True),
                      g.assign(completion_id=g["rejected_id"], label=False)])
    b = rows.groupby(["prompt_id", "completion_id"], sort=False).agg(
        label_all=("label", "all"), label_any=("label", "any"), round_id=("round_id", "min"),
        source=("source", "min"),
        feedback_ids=("feedback_ids", lambda s: sorted({x for ids in s for x in ids}))).reset_index()
    b = b[b["label_all"] | ~b["label_any"]].assign(label=lambda x: x["label_all"],
                                                    completion=lambda x: x["completion_id"].map(d["texts"]))
    return pandas_render(b.dropna(subset=["completion"]), d, "binary", ["prompt_id", "completion_id"])


def pandas_rated(r: pd.DataFrame) -> pd.DataFrame:
    """One row per rated response: mean score over the judges of its best source tier, their ids sorted."""
    r = r[r["score"].notna()].assign(tier=lambda x: tier(x["source"]))
    r = r[r["tier"] == r.groupby("response_id")["tier"].transform("min")].sort_values("id")
    return r.groupby(["prompt_id", "response_id"], sort=False).agg(
        round_id=("round_id", "min"), score=("score", "mean"), source=("source", "first"),
        feedback_ids=("id", list)).reset_index()


def pandas_listwise(d: dict[str, pd.DataFrame], k: int = 4) -> pa.Table:
    r = pandas_rated(d["ratings"]).sort_values(["prompt_id", "score", "response_id"], ascending=[True, False, True])
    r = r[r.groupby("prompt_id")["response_id"].transform("size") >= k]
    top = r.groupby("prompt_id", sort=False).head(k)
    lists = top.groupby("prompt_id", sort=False).agg(completion_ids=("response_id", list), scores=("score", list))
    per = r.groupby("prompt_id", sort=False).agg(round_id=("round_id", "min"), source=("source", "min"),
                                                  feedback_ids=("feedback_ids", lambda s: sorted(x for ids in s for x in ids)))
    lists = lists.join(per).reset_index()
    texts = d["texts"]
    lists["completions"] = lists["completion_ids"].map(lambda ids: [texts.get(i) for i in ids])
    lists = lists[lists["completions"].map(lambda ts: None not in ts)]
    return pandas_render(lists, d, "listwise", ["prompt_id"])


PANDAS = {"pairwise": pandas_pairwise, "binary": pandas_binary, "listwise": pandas_listwise}


def pandas_frames(data: dict[str, pa.Table]) -> dict[str, pd.DataFrame]:
    """The pandas side's input: ``synthetic`` as frames, plus ``texts`` (response id -> text)."""
    frames = {k: v.to_pandas() for k, v in data.items()}
    frames["texts"] = frames["responses"].set_index("id")["text"]
    return frames


def load(n: int, memory_limit: str | None = None, folder: str | None = None):
    """A warehouse holding ``synthetic(n)``: in memory, or in a file in ``folder`` (as the platform keeps it)."""
    data = synthetic(n)
    con = db.open_connection(os.path.join(folder, f"bench-{n}.duckdb") if folder else ":memory:")
    if memory_limit:  # past the limit DuckDB spills to a temporary folder instead of failing
        con.execute("SET memory_limit = $limit", {"limit": memory_limit})
        con.execute("SET temp_directory = $dir", {"dir": os.path.join(tempfile.gettempdir(), "alignloop-bench")})
    t0 = time.perf_counter()
    db.ensure_round(con, "r1")
    for table, t in data.items():
        db.ingest(con, table, t)
    return con, data, time.perf_counter() - t0


def timed(fn, repeat: int = 1, cpu: bool = False):
    """The last result and the best wall time of ``repeat`` calls (and their best CPU time, all threads)."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    return (out, best, best_cpu) if cpu else (out, best)


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def compare(n: int, repeat: int, memory_limit: str | None = None) -> None:
    con, data, t_ingest = load(n, memory_limit)
    frames = pandas_frames(data)
    print(f"\n{n:,} comparisons ({len(frames['prompts']):,} prompts, {len(frames['responses']):,} responses); "
          f"ingest {t_ingest:.1f} s; best of {repeat}")
    print("wall seconds (CPU seconds, all threads, in brackets)")
    print(f"{'dataset':<10}{'rows':>10}{'duckdb s':>16}{'pandas s':>16}{'ratio':>8}")
    for name, (kind, opts) in SPECS.items():
        res, t_duck, c_duck = timed(lambda kind=kind, opts=opts: build(con, parse_options(kind, opts)), repeat, True)
        ref, t_pd, c_pd = timed(lambda name=name: PANDAS[name](frames), repeat, True)
        if not res.table.equals(ref):
            raise SystemExit(f"{name}: DuckDB and pandas rows differ ({res.table.num_rows:,} vs {ref.num_rows:,} rows)")
        print(f"{name:<10}{res.table.num_rows:>10,}{t_duck:>8.2f} ({c_duck:5.2f}){t_pd:>8.2f} ({c_pd:5.2f})"
              f"{t_pd / t_duck:>7.1f}x", flush=True)
    con.close()


def scaling(sizes: list[int], repeat: int, memory_limit: str | None = None, in_file: bool = False) -> None:
    where = "a warehouse file" if in_file else "an in-memory warehouse"
    print(f"\nDuckDB build time by size, {where} (best of {repeat})\n{'comparisons':>12}"
          + "".join(f"{k:>10}" for k in SPECS))
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="alignloop-bench-") as folder:
            con, _, _ = load(n, memory_limit, folder if in_file else None)
            times = [timed(lambda c=con, k=kind, o=opts: build(c, parse_options(k, o)), repeat)[1]
                     for kind, opts in SPECS.values()]
            print(f"{n:>12,}" + "".join(f"{t:>9.2f}s" for t in times), flush=True)
            con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="comparisons for the DuckDB vs pandas run")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each build; the best time counts")
    ap.add_argument("--full", action="store_true", help="also time 10M comparisons (DuckDB only; memory heavy)")
    ap.add_argument("--sizes-only", action="store_true", help="skip the DuckDB vs pandas run")
    ap.add_argument("--memory-limit", help="DuckDB memory limit, e.g. 12GB (default: DuckDB's, 80%% of RAM)")
    ap.add_argument("--file", action="store_true", help="time the sizes on a warehouse file (at 10M the tables "
                    "alone fill much of the memory an in-memory warehouse may use)")
    args = ap.parse_args()
    import duckdb

    print(f"duckdb {duckdb.__version__}, pandas {pd.__version__} (pandas 3 keeps strings in Arrow: a much faster "
          f"baseline than pandas 2), numpy {np.__version__}")
    print(f"load average (1/5/15 min) at start: {load_average()}")
    if not args.sizes_only:
        compare(args.n, args.repeat, args.memory_limit)
    scaling([100_000, 1_000_000] + ([10_000_000] if args.full else []), args.repeat, args.memory_limit, args.file)
    print(f"\nload average (1/5/15 min) at end: {load_average()}")


if __name__ == "__main__":
    main()
