"""DPO training speed and peak memory: alignloop's trainer vs TRL's DPOTrainer, same model, data and settings.

    python benchmarks/train.py --trl-python /path/to/venv-with-trl/bin/python [--steps 6 --batch-size 2]

Each side runs in its own subprocess (peak RSS = the child's VmHWM from /proc). TRL is installed only for this
benchmark (the ``bench`` extra), in a separate virtualenv. Steps/s excludes the first (warm-up) step; alignloop's
one-time reference precompute (cached for later runs) is reported separately and included in ``wall_s``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_pairs(n: int) -> list[dict]:
    """Pairs from HH-RLHF rows 0..n-1 when ../shared/data has it, else synthetic; last human turn as prompt."""
    data = Path(os.environ.get("ALIGNLOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
    src = data / "hh-rlhf-harmless-base-test.jsonl.gz"
    pairs = []
    if src.is_file():
        with gzip.open(src, "rt") as fh:
            for line in fh:
                row = json.loads(line)
                head, _, chosen = row["chosen"].rpartition("\n\nAssistant: ")
                _, _, rejected = row["rejected"].rpartition("\n\nAssistant: ")
                question = head.rpartition("\n\nHuman: ")[2]
                pairs.append({"prompt": question, "chosen": chosen, "rejected": rejected})
                if len(pairs) == n:
                    break
    while len(pairs) < n:
        i = len(pairs)
        pairs.append({"prompt": f"Question {i}: name a colour.", "chosen": "Blue is a colour. " * 8,
                      "rejected": "I do not know. " * 8})
    return pairs


def run_ours(args: argparse.Namespace, pairs: list[dict]) -> dict:
    import pyarrow as pa

    from trainers.config import PreferenceConfig, TrainConfig
    from trainers.run import train_model
    from trainers.snapshot import write_snapshot_dir
    from warehouse.snapshots import SCHEMAS

    tmp = Path(tempfile.mkdtemp())
    rows = [{"prompt_id": f"p{i}", "split": "train", "round_id": "bench", "prompt_text": p["prompt"],
             "prompt": json.dumps([{"role": "user", "content": p["prompt"]}]), "chosen": p["chosen"],
             "rejected": p["rejected"], "chosen_id": f"c{i}", "rejected_id": f"r{i}", "prob": 1.0, "margin": None,
             "source": "human", "feedback_ids": []} for i, p in enumerate(pairs)]
    table = pa.Table.from_pylist(rows, schema=SCHEMAS["pairwise"])
    snap = write_snapshot_dir(tmp / "snap", "pairwise", table, table.slice(0, 0), name="bench")
    stamps: list[float] = []
    cfg = PreferenceConfig(train=TrainConfig(lr=1e-6, max_steps=args.steps, batch_size=args.batch_size,
                                             max_length=args.max_length, max_prompt_length=args.max_length // 2,
                                             bf16=args.bf16, eval=False, output_dir=str(tmp / "run"),
                                             save_steps=10_000))
    start = time.perf_counter()
    result = train_model("dpo", snap, args.model, cfg, base_model_id="bench", cache_dir=tmp / "cache",
                         progress=lambda step, total, logs: stamps.append(time.perf_counter()) if "loss" in logs
                         else None)
    wall = time.perf_counter() - start
    return {"side": "alignloop", "steps_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "wall_s": wall,
            "train_s": result.run.meta["train_seconds"], "truncation": result.truncation["train"]}


def run_trl(args: argparse.Namespace, pairs: list[dict]) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            stamps.append(time.perf_counter())

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p["prompt"]}],
                               "chosen": [{"role": "assistant", "content": p["chosen"]}],
                               "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])
    tmp = tempfile.mkdtemp()
    cfg = DPOConfig(output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                    learning_rate=1e-6, beta=0.1, max_length=args.max_length, bf16=args.bf16, use_cpu=True,
                    gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1,
                    disable_tqdm=True, seed=0, dataloader_pin_memory=False)
    start = time.perf_counter()
    trainer = DPOTrainer(model=args.model, args=cfg, train_dataset=data, callbacks=[Stamp()])
    trainer.train()
    wall = time.perf_counter() - start
    return {"side": "trl", "steps_per_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "wall_s": wall}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(0)
    pairs = make_pairs(args.steps * args.batch_size)
    out = (run_ours if args.side == "alignloop" else run_trl)(args, pairs)
    out["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", choices=["alignloop", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help="Model folder (default: the embedded SmolLM2).")
    ap.add_argument("--trl-python", default=None, help="Python of a virtualenv with TRL installed.")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    if args.side:
        child(args)
        return
    if args.model is None:
        sys.path.insert(0, str(REPO))
        from pipelines.models import default_model_path

        args.model = str(default_model_path("float32"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "TOKENIZERS_PARALLELISM": "false"}
    results = []
    sides = [("alignloop", sys.executable)] + ([("trl", args.trl_python)] if args.trl_python else [])
    for side, python in sides:
        cmd = [python, __file__, "--side", side, "--model", args.model, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--bf16" if args.bf16 else "--no-bf16"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(lines[-1][7:]))
    for r in results:
        print(json.dumps(r))
    if len(results) == 2:
        ours, trl = results
        print(f"speed-up {ours['steps_per_s'] / trl['steps_per_s']:.2f}x; peak RSS {ours['peak_rss_mb']:.0f} MB vs "
              f"{trl['peak_rss_mb']:.0f} MB (batch {args.batch_size} pairs, {args.max_length} tokens, "
              f"bf16={args.bf16}, {args.steps} steps)")


if __name__ == "__main__":
    main()
