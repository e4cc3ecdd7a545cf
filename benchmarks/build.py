"""Dataset builders, DuckDB vs pandas, on synthetic comparisons: ``python benchmarks/build.py [--full]``.

Builds pairwise (comparisons: consistency, aggregation, human-over-AI, ties), binary (the pairs split) and
listwise (ratings, k=4) with the platform's DuckDB builders and with a pandas implementation of the same rules,
checks both give the same rows, and prints the best of ``--repeat`` times for each. Then the DuckDB time at 100k
and 1M comparisons (10M with ``--full``; pandas is left out there, its frames alone would not fit in memory).
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

from pipelines.datasets.build import build
from pipelines.datasets.config import parse_options
from warehouse import db

RESPONSES_PER_PROMPT = 4
SPECS = {"pairwise": ("pairwise", {"decontaminate": False}),
         "binary": ("binary", {"origin": "pairwise", "decontaminate": False}),
         "listwise": ("listwise", {"origin": "ratings", "k": 4, "decontaminate": False})}


def synthetic(n: int, seed: int = 0) -> dict[str, pa.Table]:
    """n comparisons over n/4 prompts x 4 responses (humans and an AI judge, some repeats), one rating per response."""
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
        "source": np.where(human, "human", "ai"), "round_id": ["r1"] * n})
    ratings = pa.table({"id": np.char.add("t", np.arange(len(rid)).astype(str)),
                        "prompt_id": responses["prompt_id"], "response_id": rid,
                        "score": rng.integers(1, 11, len(rid)).astype(float), "scale_min": [1.0] * len(rid),
                        "scale_max": [10.0] * len(rid), "judge": ["ann0"] * len(rid), "source": ["human"] * len(rid),
                        "round_id": ["r1"] * len(rid)})
    return {"prompts": prompts, "responses": responses, "comparisons": comparisons, "ratings": ratings}


# ---- pandas implementation of the same rules (defaults: consistent only, drop contradictions, human over AI,
# ---- ties dropped, hard labels, pairs with identical texts dropped) ----

def pandas_pairs(c: pd.DataFrame) -> pd.DataFrame:
    c = c[c["winner"].isin(["a", "b", "tie"]) & (c["consistent"] != False)].copy()
    p_a = np.where(c["winner"] == "tie", 0.5, np.where(c["winner"] == "a", 1.0, 0.0))
    a_lo = c["response_a"] < c["response_b"]
    c["lo"] = np.where(a_lo, c["response_a"], c["response_b"])
    c["hi"] = np.where(a_lo, c["response_b"], c["response_a"])
    c["p_lo"] = np.where(a_lo, p_a, 1 - p_a)
    c["vote_lo"], c["vote_hi"] = c["p_lo"] > 0.5, c["p_lo"] < 0.5
    g = c.groupby(["prompt_id", "lo", "hi", "source"], sort=False).agg(
        round_id=("round_id", "min"), n_lo=("vote_lo", "sum"), n_hi=("vote_hi", "sum"), p_lo=("p_lo", "mean"),
        feedback_ids=("id", lambda s: sorted(s))).reset_index()
    g = g[~((g["n_lo"] > 0) & (g["n_hi"] > 0))]
    g["tier"] = g["source"].map({"human": 0, "rule": 1, "ai": 2}).fillna(3)
    g = g[g["tier"] == g.groupby(["prompt_id", "lo", "hi"])["tier"].transform("min")]
    g = g[g["p_lo"] != 0.5]
    g["chosen_id"] = np.where(g["p_lo"] >= 0.5, g["lo"], g["hi"])
    g["rejected_id"] = np.where(g["p_lo"] >= 0.5, g["hi"], g["lo"])
    return g


def pandas_render(rows: pd.DataFrame, prompts: pd.DataFrame, texts: pd.Series, cols: dict[str, str]) -> pd.DataFrame:
    out = rows.merge(prompts, left_on="prompt_id", right_on="id", suffixes=("", "_p"))
    for text_col, id_col in cols.items():
        out[text_col] = out[id_col].map(texts)
    return out.sort_values(["prompt_id", *cols.values()])


def pandas_pairwise(d: dict[str, pd.DataFrame]) -> pd.DataFrame:
    g = pandas_pairs(d["comparisons"])
    g["prob"] = 1.0
    out = pandas_render(g, d["prompts"], d["texts"], {"chosen": "chosen_id", "rejected": "rejected_id"})
    return out[out["chosen"] != out["rejected"]]


def pandas_binary(d: dict[str, pd.DataFrame]) -> pd.DataFrame:
    g = pandas_pairs(d["comparisons"])
    rows = pd.concat([g.assign(completion_id=g["chosen_id"], label=True),
                      g.assign(completion_id=g["rejected_id"], label=False)])
    b = rows.groupby(["prompt_id", "completion_id"], sort=False).agg(
        label_all=("label", "all"), label_any=("label", "any"), round_id=("round_id", "min"),
        feedback_ids=("feedback_ids", lambda s: sorted({x for ids in s for x in ids}))).reset_index()
    b = b[b["label_all"] | ~b["label_any"]].assign(label=lambda x: x["label_all"])
    return pandas_render(b, d["prompts"], d["texts"], {"completion": "completion_id"})


def pandas_listwise(d: dict[str, pd.DataFrame], k: int = 4) -> pd.DataFrame:
    r = d["ratings"].sort_values(["prompt_id", "score", "response_id"], ascending=[True, False, True])
    r = r[r.groupby("prompt_id")["response_id"].transform("size") >= k]
    top = r.groupby("prompt_id", sort=False).head(k)
    lists = top.groupby("prompt_id", sort=False).agg(completion_ids=("response_id", list), scores=("score", list))
    lists["completions"] = lists["completion_ids"].map(lambda ids: [d["texts"][i] for i in ids])
    return lists.reset_index().merge(d["prompts"], left_on="prompt_id", right_on="id").sort_values("prompt_id")


PANDAS = {"pairwise": pandas_pairwise, "binary": pandas_binary, "listwise": pandas_listwise}


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
    frames = {k: v.to_pandas() for k, v in data.items()}
    frames["texts"] = frames["responses"].set_index("id")["text"]
    print(f"\n{n:,} comparisons ({len(frames['prompts']):,} prompts, {len(frames['responses']):,} responses); "
          f"ingest {t_ingest:.1f} s; best of {repeat}")
    print("wall seconds (CPU seconds, all threads, in brackets)")
    print(f"{'dataset':<10}{'rows':>10}{'duckdb s':>16}{'pandas s':>16}{'ratio':>8}")
    for name, (kind, opts) in SPECS.items():
        res, t_duck, c_duck = timed(lambda kind=kind, opts=opts: build(con, parse_options(kind, opts)), repeat, True)
        ref, t_pd, c_pd = timed(lambda name=name: PANDAS[name](frames), repeat, True)
        assert res.table.num_rows == len(ref), (name, res.table.num_rows, len(ref))
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
    print(f"load average (1/5/15 min) at start: {load_average()}")
    if not args.sizes_only:
        compare(args.n, args.repeat, args.memory_limit)
    scaling([100_000, 1_000_000] + ([10_000_000] if args.full else []), args.repeat, args.memory_limit, args.file)
    print(f"\nload average (1/5/15 min) at end: {load_average()}")


if __name__ == "__main__":
    main()
