"""Pairwise judging throughput: batched verdict-token log-probs (both orders) vs a naive generate-and-parse loop.

    python benchmarks/judge.py --pairs 32 [--model default] [--max-chars 300] [--batch-size 16[,64]] [--json F]

Same model, same pairs, same run. Pairs come from the HH-RLHF harmless test file (rows 0-1999) when present
(../shared/data or $ALIGNLOOP_SHARED_DATA), else from synthetic answers.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from alignloop.pipelines.backends import Sampling, make_backend
from alignloop.pipelines.judges.calls import CallPolicy
from alignloop.pipelines.judges.config import JudgeConfig, PairItem
from alignloop.pipelines.judges.pairwise import PairwiseJudge, resolve, to_response
from alignloop.pipelines.judges.parsing import read
from alignloop.pipelines.models import model_uri


def load_pairs(n: int) -> list[PairItem]:
    data = Path(os.environ.get("ALIGNLOOP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = data / "hh-rlhf-harmless-base-test.jsonl.gz"
    pairs = []
    if path.exists():
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= min(n, 2000):
                    break
                rec = json.loads(line)
                head, _, chosen = rec["chosen"].rpartition("\n\nAssistant:")
                _, _, rejected = rec["rejected"].rpartition("\n\nAssistant:")
                pairs.append(PairItem(f"p{i}", head.strip(), f"c{i}", chosen.strip(), f"r{i}", rejected.strip()))
    while len(pairs) < n:
        i = len(pairs)
        pairs.append(PairItem(f"p{i}", f"What is {i} plus {i}?", f"a{i}", f"It is {2 * i}.", f"b{i}", "No idea."))
    return pairs


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--model", default="default")
    ap.add_argument("--max-chars", type=int, default=300)
    ap.add_argument("--batch-size", default="16", help="Batched path: one size or several, comma-separated.")
    ap.add_argument("--max-new-tokens", type=int, default=8, help="Naive loop: verdict length.")
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    args = ap.parse_args()
    sizes = [int(b) for b in str(args.batch_size).split(",")]

    backend = make_backend("transformers", args.model, max_batch_size=max(sizes))
    pairs = load_pairs(args.pairs)
    n = len(pairs)
    results: dict[str, object] = {"pairs": n, "model": model_uri(backend.name), "max_chars": args.max_chars,
                                  "device": device_name()}
    batched: dict[int, float] = {}
    counts = {}
    for bs in sizes:
        cfg = JudgeConfig(mode="logprobs", max_chars=args.max_chars, calls=CallPolicy(batch_size=bs))
        judge = PairwiseJudge(backend, cfg)
        judge.judge_pairs(pairs[:2], "bench")  # warm-up
        t0 = time.perf_counter()
        fast = judge.judge_pairs(pairs, "bench")
        t_fast = time.perf_counter() - t0
        counts[bs] = {w: sum(r.winner == w for r in fast) for w in ("a", "b", "tie", "invalid")}
        batched[bs] = t_fast
        print(f"batched log-probs (batch {bs}) done in {t_fast:.1f} s", flush=True)

    sampling = Sampling(n=1, temperature=0.0, max_new_tokens=args.max_new_tokens)
    backend.generate([judge.conversations(pairs[0])[0]], sampling)  # warm-up
    t0 = time.perf_counter()
    naive = []
    for p in pairs:
        ab, ba = judge.conversations(p)
        v_ab = read("pairwise", backend.generate([ab], sampling)[0][0].text).verdict
        v_ba = read("pairwise", backend.generate([ba], sampling)[0][0].text).verdict
        naive.append(resolve(to_response(v_ab, True), to_response(v_ba, False), "tie")[0])
    t_naive = time.perf_counter() - t0
    results.update(batched=batched, naive=t_naive)

    print(f"pairs: {n} (both orders each), model {results['model']} on {results['device']}, "
          f"max_chars {args.max_chars}")
    for bs in sizes:
        t_fast = batched[bs]
        print(f"batched log-probs, batch {bs:3d}: {n / t_fast:8.2f} pairs/s ({t_fast:.1f} s); winners {counts[bs]}")
    print(f"naive generate            : {n / t_naive:8.2f} pairs/s ({t_naive:.1f} s); winners "
          f"{ {w: naive.count(w) for w in ('a', 'b', 'tie', 'invalid')} }")
    for bs in sizes:
        print(f"speed-up, batch {bs:3d}       : {t_naive / batched[bs]:8.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
