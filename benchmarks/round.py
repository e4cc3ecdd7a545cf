"""Wall time of one demo round split by stage, and the orchestration overhead as a fraction.

    .venv/bin/python benchmarks/round.py [--prompts 80] [--heldout 40] [--samples 8] [--epochs 3]

The round runs through Prefect exactly as the demo runs it. The library calls that do the stages' own
work (model loading, generation shards, judging, dataset build and write, training, held-out scoring,
warehouse writes) are timed in place; overhead = round wall time - the sum of that work, which also
counts Prefect's flow/task bookkeeping, parameter validation and result persistence. Goal <= 10%.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORK: dict[str, float] = defaultdict(float)
_DEPTH = [0]


def _timed(stage: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _DEPTH[0]:  # nested timed calls are already counted by the outer one
            return fn(*args, **kwargs)
        _DEPTH[0] += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            WORK[stage] += time.perf_counter() - t0
            _DEPTH[0] -= 1
    return wrapper


def instrument() -> None:
    import alignloop.flows.evaluate as fe
    import alignloop.flows.generate as fg
    import alignloop.flows.train as ft
    import alignloop.pipelines.backends.transformers_backend as tb
    import alignloop.pipelines.datasets.publish as pub
    import alignloop.pipelines.generate as gen
    import alignloop.pipelines.judges.pairwise as jp
    import alignloop.pipelines.judges.run as jr
    import alignloop.trainers.divergence as div

    for mod, name, stage in [
        (fg, "make_backend", "load model"), (fe, "make_backend", "load model"),
        (gen, "generate_shard", "generate"), (gen, "write_shard", "write"), (gen, "open_run", "plan"),
        (jr, "select_items", "feedback"), (jr, "execute", "feedback"), (jr, "store", "write"),
        (pub, "build_for", "dataset"), (pub, "write", "dataset"),
        (ft, "train_model", "train"), (ft, "record_result", "write"), (ft, "resolve_base", "plan"),
        (fe, "rate", "evaluate"), (fe, "load_responses", "evaluate"), (div, "kl_to_reference", "evaluate"),
        (tb.TransformersBackend, "generate", "generate"), (jp.PairwiseJudge, "judge_pairs", "evaluate"),
    ]:
        setattr(mod, name, _timed(stage, getattr(mod, name)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=80, help="Training prompts (the demo uses 80).")
    ap.add_argument("--heldout", type=int, default=40, help="Held-out prompts (the demo uses 40).")
    ap.add_argument("--samples", type=int, default=8, help="Samples per prompt (the demo uses 8).")
    ap.add_argument("--epochs", type=float, default=3.0, help="Training epochs (the demo uses 3).")
    args = ap.parse_args()
    instrument()
    from alignloop.flows.round import RoundParams, round_flow
    from alignloop.pipelines.demo_prompts import write_demo_prompts
    from alignloop.pipelines.intake import ImportOptions, import_file
    from alignloop.warehouse import db

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.duckdb")
        with db.connect(path) as con:
            import_file(con, write_demo_prompts(Path(tmp) / "p.jsonl"), ImportOptions(source="demo"))
        t0 = time.perf_counter()
        out = round_flow(RoundParams(round="bench", prompts_per_round=args.prompts, heldout_limit=args.heldout,
                                     n=args.samples, temperature=1.0, lr=1e-5, epochs=args.epochs,
                                     runs_dir=str(Path(tmp) / "runs"), db=path))
        wall = time.perf_counter() - t0
    work = sum(WORK.values())
    print(f"round wall time: {wall:.1f} s ({args.prompts} prompts x {args.samples} samples, {args.heldout} held-out,"
          f" {args.epochs:g} epochs)")
    print("stage wall times (round flow, incl. sub-flow bookkeeping):")
    for stage, secs in out["timings"].items():
        print(f"  {stage:<10} {secs:7.1f} s")
    print("own work timed in place:")
    for stage, secs in sorted(WORK.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<10} {secs:7.1f} s")
    print(f"orchestration overhead: {wall - work:.1f} s = {(wall - work) / wall:.1%} of the round (goal <= 10%)")


if __name__ == "__main__":
    main()
