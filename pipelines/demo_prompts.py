"""Prompts the project makes itself for the demo: short questions about a named subject.

Each prompt asks for an answer "in at most N words" and carries its subject as a tag
(``topic:<word>``) so a verifier can check that the answer is on topic.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from alignloop.warehouse.outputs import check_replaceable, staging_dir

SUBJECTS = (
    "computers", "coffee", "bicycles", "rain", "music", "gardens", "libraries", "oceans", "mountains", "bread",
    "cats", "dogs", "trains", "winter", "summer", "books", "chess", "football", "tea", "rivers", "forests",
    "bees", "stars", "clocks", "bridges", "volcanoes", "deserts", "museums", "kites", "apples", "honey",
    "snow", "umbrellas", "maps", "candles", "pianos", "lighthouses", "owls", "cheese", "sailing", "painting",
    "photography", "soup", "clouds", "islands", "robots", "tigers", "glaciers", "markets", "festivals",
    "puzzles", "windmills", "dolphins", "bakeries", "telescopes", "castles", "ferries", "orchards", "lanterns",
    "penguins",
)
TEMPLATES = (
    "Why do people like {s}?",
    "What is the best thing about {s}?",
    "Why are {s} important?",
    "What makes {s} interesting?",
    "How would you describe {s} to a child?",
    "What is one fact about {s}?",
)
INSTRUCTION = "Answer in at most {n} words."


def demo_prompts(n_train: int = 80, n_test: int = 40, max_words: int = 6, seed: int = 0) -> list[dict]:
    """Deterministic prompt records (generic import format) with disjoint subjects for train and test."""
    rng = random.Random(seed)
    subjects = list(SUBJECTS)
    rng.shuffle(subjects)
    n_test_subjects = max(1, len(subjects) // 3)
    test_subjects, train_subjects = subjects[:n_test_subjects], subjects[n_test_subjects:]
    records = []
    for split, pool, count in (("train", train_subjects, n_train), ("test", test_subjects, n_test)):
        pairs = [(s, t) for s in pool for t in TEMPLATES]
        rng.shuffle(pairs)
        if count > len(pairs):
            raise ValueError(f"at most {len(pairs)} {split} prompts can be made, asked for {count}")
        for subject, template in pairs[:count]:
            question = template.format(s=subject)
            records.append({"prompt": f"{question} {INSTRUCTION.format(n=max_words)}", "split": split,
                            "tags": [f"topic:{subject}", f"max_words:{max_words}", "demo"]})
    return records


def _demo_file_problem(path: Path) -> str | None:
    """None where ``path`` is a demo prompt file this module wrote (every record tagged ``demo``), else why not."""
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                rec = json.loads(line)
                if not isinstance(rec, dict) or "demo" not in rec.get("tags", ()):
                    return f"line {n} is not a demo prompt (no 'demo' tag)"
    except (OSError, UnicodeDecodeError, ValueError):
        return "it is not a demo prompt file"
    return None


def write_demo_prompts(path: str | Path, **kw: int) -> Path:
    """Write the demo prompts to ``path`` (JSONL); an existing file is replaced only where it is an earlier demo
    prompt file (never a user's file), and whole: written beside it, then renamed over it."""
    path = Path(path)
    check_replaceable(path, "--out", _demo_file_problem)
    tmp = staging_dir(path)  # a folder beside it: the file is renamed out of it into place
    try:
        with open(tmp / path.name, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(rec) + "\n" for rec in demo_prompts(**kw))
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
