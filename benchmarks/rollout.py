"""Peak memory and time of scoring one PPO / GRPO / RLOO rollout: the policy's and the reference's log-probs of every
sampled answer, as each iteration computes them before its updates.

    python benchmarks/rollout.py [--answers 64 --prompt-tokens 48 --answer-tokens 48 --chunk 4 --repeat 2]

Same model (the embedded SmolLM2-135M, float32, loaded twice as policy and reference), same random token rows and
seed on both sides. The baseline is how a rollout was scored before: the whole rollout in one forward pass per
model, logits at every position (prompt included) and the entropy of each answer token. The new side is
``trainers.ppo.score_rollout``: ``--chunk`` rows at a time (the updates' minibatch), the answer positions' logits
only, no entropy. Each side runs in its own subprocess; peak RSS is the child's VmHWM, and the figure compared is the
peak above the RSS with both models loaded. The sides alternate; the largest peak and the best time per side are
kept, and the log-probs of the two sides are checked equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.train import REPO, peak_rss_mb, status_mb


def before(model, tokens, attention, width: int, temperature: float):
    """The previous scoring: one pass over the whole rollout, every position's logits, entropy computed."""
    import torch
    import torch.nn.functional as F

    from alignloop.trainers.ppo import _positions

    with torch.no_grad():
        out = model(input_ids=tokens, attention_mask=attention, position_ids=_positions(attention))
        logits = out.logits[:, width - 1:-1].float() / temperature
        logp_all = F.log_softmax(logits, dim=-1)
        logprobs = logp_all.gather(-1, tokens[:, width:, None]).squeeze(-1)
        _ = -(logp_all.exp() * logp_all).sum(-1)
    return logprobs


def child(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from alignloop.pipelines.models import resolve_model
    from alignloop.trainers.ppo import score_rollout

    torch.set_num_threads(args.threads)
    folder = resolve_model("default")
    policy = AutoModelForCausalLM.from_pretrained(folder).eval()
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    g = torch.Generator().manual_seed(0)
    width = args.prompt_tokens
    tokens = torch.randint(3, policy.config.vocab_size, (args.answers, width + args.answer_tokens), generator=g)
    attention = torch.ones_like(tokens)
    loaded = status_mb("VmRSS")
    t0 = time.perf_counter()
    if args.side == "before":
        out = [before(m, tokens, attention, width, 1.0) for m in (policy, reference)]
    else:
        out = [score_rollout(m, tokens, attention, width, 1.0, None, args.chunk)[0] for m in (policy, reference)]
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({"side": args.side, "seconds": seconds, "loaded_mb": loaded,
                                  "peak_mb": peak_rss_mb(), "checksum": float(out[0].sum() + out[1].sum())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--answers", type=int, default=64, help="Rows in the rollout (prompts x samples per prompt).")
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--answer-tokens", type=int, default=48)
    ap.add_argument("--chunk", type=int, default=4, help="Rows per forward pass on the new side.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--side", choices=("before", "chunked"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        child(args)
        return
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for side in ("before", "chunked"):
            cmd = [sys.executable, __file__, "--side", side, "--answers", str(args.answers), "--prompt-tokens",
                   str(args.prompt_tokens), "--answer-tokens", str(args.answer_tokens), "--chunk", str(args.chunk),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not lines:
                sys.exit(f"{side} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(lines[-1][7:])
            r["above_mb"] = r["peak_mb"] - r["loaded_mb"]
            print(json.dumps(r), flush=True)
            b = best.setdefault(side, r)
            best[side] = {**r, "seconds": min(b["seconds"], r["seconds"]),
                          "above_mb": max(b["above_mb"], r["above_mb"]), "peak_mb": max(b["peak_mb"], r["peak_mb"])}
    old, new = best["before"], best["chunked"]
    if abs(old["checksum"] - new["checksum"]) > 1e-3 * abs(old["checksum"]):
        sys.exit(f"log-probs differ: checksum {old['checksum']} vs {new['checksum']}")
    print(f"rollout of {args.answers} answers ({args.prompt_tokens} prompt + {args.answer_tokens} answer tokens), "
          f"policy + reference, SmolLM2-135M fp32, {args.threads} threads, best of {args.repeat}:")
    print(f"  peak above the loaded models: {old['above_mb']:.0f} MB before vs {new['above_mb']:.0f} MB in chunks of "
          f"{args.chunk} = {old['above_mb'] / max(new['above_mb'], 1):.1f}x less (both include the weights paged in "
          f"on first use); whole process {old['peak_mb']:.0f} vs {new['peak_mb']:.0f} MB "
          f"= {old['peak_mb'] / new['peak_mb']:.1f}x")
    print(f"  time: {old['seconds']:.2f} s vs {new['seconds']:.2f} s = {old['seconds'] / new['seconds']:.2f}x")


if __name__ == "__main__":
    main()
