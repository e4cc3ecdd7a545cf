"""Tokens/s of the batched transformers backend vs one-prompt-at-a-time ``model.generate`` (embedded model, greedy).

    HF_HUB_OFFLINE=1 python benchmarks/generate.py [--prompts 32] [--max-new-tokens 64] [--batch 32] [--threads 2]
        [--samples 4]

With ``--samples N`` (N > 1) it also times N sampled answers per prompt (the rounds' pattern: each prompt's prefill
runs once and its cache serves the N rows) against the same rows sent as N separate copies of each prompt.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = ["the sea", "autumn", "a lighthouse", "coffee", "mountains", "a city at night", "rain", "friendship"]
TASKS = ["Write a short poem about {}.", "Give three facts about {}.", "Describe {} in two sentences.",
         "Write a one-paragraph story about {}."]


def prompts(k: int) -> list[list[dict[str, str]]]:
    texts = [t.format(topic) for topic in TOPICS for t in TASKS]
    return [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=1, help="Also time N samples per prompt vs N copies.")
    ap.add_argument("--dtype", default=None, help="bfloat16 or float32 (default: bf16 where the CPU has it)")
    args = ap.parse_args()

    import torch

    from alignloop.pipelines.backends import Sampling
    from alignloop.pipelines.backends.transformers_backend import TransformersBackend
    from alignloop.pipelines.models import default_dtype

    torch.set_num_threads(args.threads)
    dtype = args.dtype or default_dtype("cpu")
    backend = TransformersBackend.load("default", device="cpu", dtype=dtype, max_batch_size=args.batch)
    convs = prompts(args.prompts)
    sampling = Sampling(max_new_tokens=args.max_new_tokens)
    backend.generate(convs[:2], Sampling(max_new_tokens=4))  # warm-up

    start = time.perf_counter()
    batched = backend.generate(convs, sampling)
    t_batched = time.perf_counter() - start
    n_batched = sum(c[0].completion_tokens or 0 for c in batched)
    print(f"batched backend (batch {args.batch}): {n_batched} tokens in {t_batched:.1f} s = "
          f"{n_batched / t_batched:.1f} tok/s", flush=True)

    model, tok = backend.model, backend.tokenizer
    n_single, start = 0, time.perf_counter()
    with torch.inference_mode():
        for conv in convs:
            ids = torch.tensor([backend.encode(conv)])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
            new = out[0, ids.shape[1]:].tolist()
            n_single += len([t for t in new if t not in backend.eos_ids])
    t_single = time.perf_counter() - start

    tps_b, tps_s = n_batched / t_batched, n_single / t_single
    print(f"model: embedded SmolLM2-135M-Instruct ({dtype}), {args.prompts} prompts x <= {args.max_new_tokens} new "
          f"tokens, greedy, {args.threads} threads")
    print(f"one at a time (model.generate): {n_single} tokens in {t_single:.1f} s = {tps_s:.1f} tok/s")
    print(f"speed-up: {tps_b / tps_s:.2f}x", flush=True)
    if args.samples > 1:
        samples(backend, convs, args.samples, args.max_new_tokens)


def samples(backend, convs, n: int, max_new_tokens: int) -> None:
    """N samples per prompt (shared prefill) vs N separate copies of each prompt, same rows, batch and sampling."""
    from dataclasses import replace

    from alignloop.pipelines.backends import Sampling

    sampling = Sampling(n=n, temperature=0.9, max_new_tokens=max_new_tokens, seed=0)
    runs = {}
    for name, batch, s in (("copies", [c for c in convs for _ in range(n)], replace(sampling, n=1)),
                           ("samples", convs, sampling)):
        start = time.perf_counter()
        out = backend.generate(batch, s)
        seconds = time.perf_counter() - start
        runs[name] = sum(c.completion_tokens or 0 for row in out for c in row) / seconds
        print(f"{name:>8}: {len(batch)} prompts x n={s.n}, {runs[name]:.1f} tok/s ({seconds:.1f} s)", flush=True)
    print(f"{n} samples per prompt, shared prefill vs copies: {runs['samples'] / runs['copies']:.2f}x")


if __name__ == "__main__":
    main()
