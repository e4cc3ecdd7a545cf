"""A GRPO round on the demo prompts with a sparse verifier, with and without dynamic sampling (DAPO).

    python benchmarks/dynamic_sampling.py [--method grpo --n-train 80 --n-test 40 --workdir DIR]

Each side is one round in its own subprocess and its own warehouse, from the embedded SmolLM2-135M: the demo's 80
training and 40 held-out prompts, the demo's verifier (``short_on_topic:6``) as the round's feedback and reward,
4 answers of at most 24 tokens per prompt at temperature 0.9, lr 1e-5, one epoch (5 iterations of 16 prompts).
The baseline updates on every group; the other side (``dynamic_sampling=true``, at most 3 rollouts an iteration)
only on groups whose answers scored differently, sampling further prompts to fill the batch. Printed per side: the
round's and the training's time, the process's peak memory, the held-out pass rate and KL, and per iteration the
sampled reward, the share of groups without signal and the groups used; then the ratios. ``--method online_dpo``
runs the same with online DPO (loss dpo).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.train import REPO, peak_rss_mb

METRICS = ("reward", "zero_std_groups", "groups_used", "rollouts", "pairs", "kl", "response_length")


def child(args: argparse.Namespace) -> None:
    from alignloop.flows.demo import DemoConfig
    from alignloop.flows.evaluate import EvaluateParams, evaluate
    from alignloop.flows.round import RoundParams, round_flow
    from alignloop.pipelines.demo_prompts import write_demo_prompts
    from alignloop.pipelines.intake.importer import ImportOptions, import_file
    from alignloop.warehouse import db

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cfg = DemoConfig(db=str(work / "w.duckdb"), workdir=str(work), n_train=args.n_train, n_test=args.n_test)
    prompts = write_demo_prompts(work / "prompts.jsonl", n_train=args.n_train, n_test=args.n_test, max_words=6)
    with db.connect(cfg.db) as con:
        import_file(con, prompts, ImportOptions(source="demo"))
    base = evaluate(EvaluateParams(round="r0", model="default", verifier=cfg.verifier, limit=args.n_test, db=cfg.db))
    t0 = time.perf_counter()
    out = round_flow(RoundParams(**cfg.round_fields(1) | {
        "method": args.method, "feedback": "verifier", "lr": 1e-5, "epochs": 1, "win_rate": False, "n": 4,
        "temperature": 0.9, "max_new_tokens": 24, "loss": "dpo", "dynamic_sampling": args.side == "dynamic"}))
    wall = time.perf_counter() - t0
    with db.connect(cfg.db) as con:
        rows = con.execute("SELECT name, step, value FROM training_metrics WHERE list_contains(?, name) "
                           "ORDER BY name, step", [list(METRICS)]).fetchall()
    series: dict[str, list[float]] = {}
    for name, _, value in rows:
        series.setdefault(name, []).append(round(value, 4))
    print("RESULT " + json.dumps({"round_s": wall, "train_s": out["train"]["train_seconds"],
                                  "heldout_before": base["figures"]["heldout_accuracy"],
                                  "heldout": out["heldout"]["heldout_accuracy"],
                                  "kl_to_reference": out["heldout"]["kl_to_reference"],
                                  "mean_words": out["heldout"]["mean_words"], "peak_mb": peak_rss_mb(),
                                  "per_iteration": series}))


def run_side(args: argparse.Namespace, side: str, root: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--workdir", str(root / side), "--method", args.method,
           "--n-train", str(args.n_train), "--n-test", str(args.n_test)]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{side} side failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="grpo", choices=["grpo", "rloo", "online_dpo"])
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--n-test", type=int, default=40)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", choices=["every_group", "dynamic"], dest="side")
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    root = Path(args.workdir or tempfile.mkdtemp(prefix="alignloop-ds-"))
    sides = {side: run_side(args, side, root) for side in ("every_group", "dynamic")}
    for side, r in sides.items():
        print(f"{side:>12}: round {r['round_s']:.0f} s, training {r['train_s']:.0f} s, peak {r['peak_mb']:,.0f} MB, "
              f"held-out pass {r['heldout_before']:.3f} -> {r['heldout']:.3f}, KL {r['kl_to_reference']:.2f} nats, "
              f"{r['mean_words']:.1f} words")
        for name, values in r["per_iteration"].items():
            print(f"{'':>14}{name}: {' / '.join(f'{v:g}' for v in values)}")
    base, dyn = sides["every_group"], sides["dynamic"]
    print(f"training time dynamic / every group: {dyn['train_s'] / base['train_s']:.2f}x; held-out pass rate "
          f"{base['heldout']:.3f} -> {dyn['heldout']:.3f}")


if __name__ == "__main__":
    main()
