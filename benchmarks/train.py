"""DPO training speed and peak memory: alignloop's trainer vs TRL's DPOTrainer, same model, data and settings.

    python benchmarks/train.py --trl-python /path/to/venv-with-trl/bin/python [--steps 6 --batch-size 2 --threads 1]

Each run is its own subprocess (peak RSS = the child's VmHWM from /proc). TRL is installed only for this benchmark
(the ``bench`` extra), in a separate virtualenv. Both sides: same model folder (float32 weights), same pairs, batch
size, ``max_length``, bf16 autocast (or not), learning rate, AdamW (the Trainer default), no gradient checkpointing,
a log every step, the same torch thread count.

Reference log-probs: alignloop computes them once before training (a cached artifact) and reads them per step, so
its steps run the policy only. TRL runs twice: ``precompute_ref_log_probs=True`` (the like-for-like setting, its
precompute also happens before the first step) and its default, a reference forward pass in every step.

Steps/s excludes the first (warm-up) step; one-time work (tokenising, reference precompute) is in ``wall_s`` only.
``tokens_per_step`` is the mean ``input_ids`` size (rows x columns, padding included) each side's training batches
put through the model. With ``--repeats N`` the runs alternate (alignloop, TRL, TRL per-step, alignloop, ...) and
each side's median steps/s and largest peak RSS are reported, so load from other jobs hits both sides alike.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmHWM``: peak RSS, ``VmRSS``: now), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return status_mb("VmHWM")


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


def pairs_snapshot(folder: Path, pairs: list[dict]) -> Path:
    """A pairwise snapshot folder (train split only) of ``pairs``."""
    import pyarrow as pa

    from alignloop.trainers.snapshot import write_snapshot_dir
    from alignloop.warehouse.snapshots import SCHEMAS

    rows = [{"prompt_id": f"p{i}", "split": "train", "round_id": "bench", "prompt_text": p["prompt"],
             "prompt": json.dumps([{"role": "user", "content": p["prompt"]}]), "chosen": p["chosen"],
             "rejected": p["rejected"], "chosen_id": f"c{i}", "rejected_id": f"r{i}", "prob": 1.0, "margin": None,
             "source": "human", "feedback_ids": []} for i, p in enumerate(pairs)]
    table = pa.Table.from_pylist(rows, schema=SCHEMAS["pairwise"])
    return write_snapshot_dir(folder, "pairwise", table, table.slice(0, 0), name="bench")


def run_ours(args: argparse.Namespace, pairs: list[dict]) -> dict:
    from alignloop.trainers.config import PreferenceConfig, TrainConfig
    from alignloop.trainers.methods import get_method
    from alignloop.trainers.run import train_model

    tmp = Path(tempfile.mkdtemp())
    snap = pairs_snapshot(tmp / "snap", pairs)
    tokens = _count_tokens(get_method("dpo").layout("pairwise", "bench").collator,
                           lambda batch: "ref" in batch)  # training batches carry the cached reference
    stamps: list[float] = []
    cfg = PreferenceConfig(train=TrainConfig(lr=1e-6, max_steps=args.steps, batch_size=args.batch_size,
                                             max_length=args.max_length, max_prompt_length=args.max_length // 2,
                                             bf16=args.bf16, eval=False, output_dir=str(tmp / "run"),
                                             save_steps=10_000))
    start = time.perf_counter()
    result = train_model("dpo", snap, args.model, cfg, base_model_id="bench", cache_dir=tmp / "cache",
                         progress=lambda phase, step, total, logs: stamps.append(time.perf_counter())
                         if phase == "train" and "loss" in logs else None)
    wall = time.perf_counter() - start
    return {"side": "alignloop", "reference": "cached before training", "steps_per_s": _rate(stamps),
            "wall_s": wall, "train_s": result.run.meta["train_seconds"], "tokens_per_step": _mean(tokens),
            "truncation": result.truncation["train"]}


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
    precompute = args.side == "trl"
    cfg = DPOConfig(output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                    learning_rate=1e-6, beta=0.1, max_length=args.max_length, bf16=args.bf16, use_cpu=True,
                    gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=1,
                    disable_tqdm=True, seed=0, dataloader_pin_memory=False, precompute_ref_log_probs=precompute)
    start = time.perf_counter()
    trainer = DPOTrainer(model=args.model, args=cfg, train_dataset=data, callbacks=[Stamp()])
    tokens: list[int] = []
    collate = trainer.data_collator

    def counting(examples: list) -> dict:
        batch = collate(examples)
        tokens.append(batch["input_ids"].numel())
        return batch

    trainer.data_collator = counting  # the train dataloader is built in train(), after the precompute
    trainer.train()
    wall = time.perf_counter() - start
    return {"side": args.side, "reference": "precomputed before training" if precompute else "forward every step",
            "steps_per_s": _rate(stamps), "wall_s": wall, "tokens_per_step": _mean(tokens)}


def _count_tokens(cls: type, keep: Callable[[dict], bool]) -> list[int]:
    """Record the ``input_ids`` size of each batch collator class ``cls`` makes that ``keep`` accepts."""
    seen: list[int] = []
    call = cls.__call__

    def counting(self: object, feats: list) -> dict:
        batch = call(self, feats)
        if keep(batch):
            seen.append(batch["input_ids"].numel())
        return batch

    cls.__call__ = counting  # this child process only
    return seen


def _rate(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _mean(values: list[int]) -> float:
    return round(sum(values) / len(values), 1) if values else float("nan")


def child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pairs = make_pairs(args.steps * args.batch_size)
    out = (run_ours if args.side == "alignloop" else run_trl)(args, pairs)
    out["peak_rss_mb"] = peak_rss_mb()
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out))


def summarise(results: list[dict], args: argparse.Namespace) -> None:
    sides: dict[str, list[dict]] = {}
    for r in results:
        sides.setdefault(r["side"], []).append(r)
    best = {side: {"steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "tokens_per_step": runs[0]["tokens_per_step"],
                   "reference": runs[0]["reference"], "runs": len(runs)} for side, runs in sides.items()}
    print(f"batch {args.batch_size} pairs, max_length {args.max_length}, bf16={args.bf16}, {args.steps} steps, "
          f"threads {args.threads or 'default'}, load average {args.load_before} -> {os.getloadavg()[0]:.2f}")
    for side, b in best.items():
        print(f"  {side:13s} {b['steps_per_s']:.3f} steps/s (median of {b['runs']}), peak RSS {b['peak_rss_mb']:.0f} MB,"
              f" {b['tokens_per_step']} tokens/step, reference {b['reference']}")
    ours = best.get("alignloop")
    for side in ("trl", "trl-per-step"):
        if ours and side in best:
            print(f"  vs {side}: speed-up {ours['steps_per_s'] / best[side]['steps_per_s']:.2f}x, peak RSS "
                  f"{ours['peak_rss_mb']:.0f} vs {best[side]['peak_rss_mb']:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", choices=["alignloop", "trl", "trl-per-step"], help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help="Model folder (default: the embedded SmolLM2).")
    ap.add_argument("--trl-python", default=None, help="Python of a virtualenv with TRL installed.")
    ap.add_argument("--trl-ref", choices=["precompute", "per-step", "both"], default="both",
                    help="TRL's reference log-probs: precomputed before training, a forward pass per step, or both runs.")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--threads", type=int, default=0, help="torch threads for every side (0: torch's default).")
    ap.add_argument("--repeats", type=int, default=1, help="Runs per side, alternating sides.")
    args = ap.parse_args()
    if args.side:
        child(args)
        return
    if args.model is None:
        sys.path.insert(0, str(REPO))
        from alignloop.pipelines.models import default_model_path

        args.model = str(default_model_path("float32"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "TOKENIZERS_PARALLELISM": "false"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    sides = [("alignloop", sys.executable)]
    if args.trl_python:
        sides += [(side, args.trl_python) for side, ref in (("trl", "precompute"), ("trl-per-step", "per-step"))
                  if args.trl_ref in (ref, "both")]
    args.load_before = f"{os.getloadavg()[0]:.2f}"
    results = []
    for _ in range(args.repeats):
        for side, python in sides:
            cmd = [python, __file__, "--side", side, "--model", args.model, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--threads", str(args.threads), "--bf16" if args.bf16 else "--no-bf16"]
            load = os.getloadavg()[0]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(lines[-1][7:]) | {"load_before": load, "load_after": os.getloadavg()[0]}
            print(json.dumps(result), flush=True)
            results.append(result)
    summarise(results, args)


if __name__ == "__main__":
    main()
