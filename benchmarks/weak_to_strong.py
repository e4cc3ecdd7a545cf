"""Weak-to-strong with reward models on real human preferences (HH-RLHF harmless, rows 0-1999), measured.

    python benchmarks/weak_to_strong.py [--weak-layers 4] [--mid-layers 12] [--epochs 1] [--workdir DIR]

What a user runs, as commands: import the rows, build the pairwise dataset, cut the smaller models from the embedded
SmolLM2-135M (``alignloop models shrink``: its first N of 30 decoder layers), then ``alignloop weak-to-strong`` with
the models weakest first (``--mid-layers 0``: weak and full model only, no bootstrapping). Printed: each run's
held-out accuracy on the test split's human labels and training time, how often each supervisor's labels agree with
the human ones, and each step's performance gap recovered, the ratio against the weak supervisor and the ceiling
measured in the same run.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alignloop.flows.weak_to_strong import result_lines


def hh_file() -> Path:
    data = Path(os.environ.get("ALIGNLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = data / "hh-rlhf-harmless-base-test.jsonl.gz"
    if not path.exists():
        sys.exit(f"this benchmark needs the HH-RLHF test file: {path} is missing (set ALIGNLOOP_SHARED_DATA)")
    return path


def alignloop(work: Path, *args: str) -> str:
    """One command in the work folder (its warehouse), its progress on the terminal; returns its stdout."""
    cmd = [str(Path(sys.executable).parent / "alignloop"), *args, "--db", str(work / "w.duckdb")]
    out = subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode:
        sys.exit(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stdout[-2000:]}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weak-layers", type=int, default=4)
    ap.add_argument("--mid-layers", type=int, default=0, help="0: no middle model")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--confidence-weight", type=float, default=0.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--runs", default="runs", help="run folder in the work folder (another setting: another name)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="w2s-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    alignloop(work, "prompts", "import", str(hh_file()), "--format", "hh-rlhf", "--limit", "2000")
    alignloop(work, "dataset", "build", "pairwise", "--name", "hh")
    models = [str(work / f"smol-{n}l") for n in (args.weak_layers, args.mid_layers) if n]
    for n, folder in zip((args.weak_layers, args.mid_layers), models):
        alignloop(work, "models", "shrink", "--layers", str(n), "--out", folder)
    models.append("default")
    run = ["weak-to-strong", "--dataset", "hh", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--lr", str(args.lr), "--max-length", str(args.max_length), "--confidence-weight",
           str(args.confidence_weight), "--output-dir", str(work / args.runs), "--json"]
    run += ["--max-steps", str(args.max_steps)] if args.max_steps else []
    for m in models:
        run += ["--model", m]
    t0 = time.perf_counter()
    summary = json.loads(alignloop(work, *run))
    wall = time.perf_counter() - t0
    print(f"work folder {work}; experiment {wall:.0f} s; models (weakest first): {', '.join(models)}")
    print(result_lines(summary))  # the command's own report: accuracies, agreement with people, PGR
    runs = [summary["weak"]] + [r for s in summary["steps"] + [summary["direct"] or {}] for r in
                                (s.get("student"), s.get("ceiling")) if r]
    print("training: " + ", ".join(f"{r['run']} {r['steps']} steps in {r['train_seconds']} s" for r in runs))
    print("RESULT " + json.dumps({"summary": summary, "wall_s": wall}))


if __name__ == "__main__":
    main()
