"""CLI start: ``alignloop --help`` and ``alignloop status`` as they are vs with torch and Prefect imported first.

    python benchmarks/cli.py [--repeat 5]

The command modules import torch and Prefect only in the commands that run them; the baseline is the same CLI
started after ``import torch, prefect`` (what every command paid when the modules imported them at the top). Each
is a fresh Python process, the two alternate, best of ``--repeat`` per side; prints the ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def timed(prelude: str, argv: list[str], cwd: str) -> float:
    code = f"{prelude}import sys; sys.argv = {['alignloop', *argv]!r}; from alignloop.flows.cli import app; app()"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        timed("", ["init"], tmp)
        for argv in (["--help"], ["status"]):
            best = {"as is": float("inf"), "torch + prefect first": float("inf")}
            for _ in range(args.repeat):
                for side, prelude in (("as is", ""), ("torch + prefect first", "import torch, prefect; ")):
                    best[side] = min(best[side], timed(prelude, argv, tmp))
            now, before = best["as is"], best["torch + prefect first"]
            print(f"alignloop {' '.join(argv)}: {now:.2f} s vs {before:.2f} s with torch and Prefect first "
                  f"= {before / now:.1f}x")


if __name__ == "__main__":
    main()
