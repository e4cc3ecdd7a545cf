"""A short DPO run (``--max-steps``): reference log-probs computed per batch vs a pass over every row first.

    python benchmarks/short_run.py [--pairs 128 --steps 3 --batch-size 8 --max-length 128 --repeat 2]

Same snapshot (HH-RLHF pairs where ../shared/data has them, else synthetic), model (the embedded SmolLM2-135M),
config and seed on both sides, each run with an empty reference cache and its own run folder. The baseline is the
same code with the per-batch rule turned off (``trainers.run.per_batch_reference`` returns False): a pass over
every train row before the first step, which every run did before the rule. The sides alternate; the best wall
time of ``train_model`` per side and their ratio are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train import make_pairs, pairs_snapshot


def run(side: str, snap: Path, model: Path, args: argparse.Namespace, tmp: Path) -> tuple[float, int]:
    """(wall seconds of train_model, reference rows computed) for one side, cold reference cache."""
    import alignloop.trainers.run as tr
    from alignloop.trainers.config import PreferenceConfig, TrainConfig

    folder = Path(tempfile.mkdtemp(dir=tmp))
    cfg = PreferenceConfig(train=TrainConfig(lr=1e-6, max_steps=args.steps, batch_size=args.batch_size,
                                             max_length=args.max_length, max_prompt_length=args.max_length // 2,
                                             eval=False, output_dir=str(folder / "run"), save_steps=10_000))
    rows: list[int] = []
    real = tr.compute_logps

    def counting(model_, features, *a):
        rows.append(len(features))
        return real(model_, features, *a)

    rule = tr.per_batch_reference if side == "per batch" else (lambda *a: False)
    with mock.patch.object(tr, "per_batch_reference", rule), mock.patch.object(tr, "compute_logps", counting):
        start = time.perf_counter()
        tr.train_model("dpo", snap, model, cfg, base_model_id="bench", cache_dir=folder / "cache")
        return time.perf_counter() - start, sum(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from alignloop.pipelines.models import default_model_path

    model = default_model_path()
    tmp = Path(tempfile.mkdtemp())
    snap = pairs_snapshot(tmp / "snap", make_pairs(args.pairs))
    best: dict[str, tuple[float, int]] = {}
    for i in range(args.repeat):
        for side in (("per batch", "every row first") if i % 2 == 0 else ("every row first", "per batch")):
            wall, computed = run(side, snap, model, args, tmp)
            print(f"  {side:16s} {wall:7.1f} s ({computed} reference rows computed)", flush=True)
            if side not in best or wall < best[side][0]:
                best[side] = (wall, computed)
    (fast, fast_rows), (base, base_rows) = best["per batch"], best["every row first"]
    print(f"{args.pairs} pairs, {args.steps} steps x {args.batch_size}: per batch {fast:.1f} s ({fast_rows} rows) "
          f"vs every row first {base:.1f} s ({base_rows} rows) = {base / fast:.2f}x")


if __name__ == "__main__":
    main()
