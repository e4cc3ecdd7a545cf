"""Read the lock files under scripts/locks/ and compare them with each other or with an environment.

    python scripts/locks.py diff OLD NEW          # what moved between two versions of a lock
    python scripts/locks.py verify LOCK [LOCK..]  # the running interpreter holds exactly these versions
    python scripts/locks.py line NAME LOCK        # NAME's pin with its hashes, as one requirement line

Used by scripts/lock (what a refresh moved), scripts/check-latest (what the newest allowed versions
change) and scripts/setup (the environment it made is the locked one). Standard library only: it runs
under any interpreter, before anything is installed.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

LOCKS = Path(__file__).resolve().parent / "locks"
# Installed beside a lock by scripts/setup on purpose: the project itself (editable) and the
# installers that a venv is seeded with.
NOT_LOCKED = {"alignloop", "pip", "setuptools", "wheel"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 name: case and runs of -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path | str) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a lock (hash and comment lines skipped)."""
    pins: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        match = _PIN.match(line)
        if match is None:
            continue
        name = canonical(match.group(1))
        if name in pins:
            raise ValueError(f"{path}:{number}: {name} is pinned twice")
        pins[name] = match.group(2)
    return pins


def requirement(path: Path | str, name: str) -> str:
    """NAME's entry in a lock as one line (``name==version --hash=... --hash=...``), to install it alone."""
    entry: list[str] = []
    for line in Path(path).read_text().splitlines():
        match = _PIN.match(line)
        if match is not None:
            if entry:
                break
            if canonical(match.group(1)) == canonical(name):
                entry.append(line.rstrip(" \\"))
        elif entry and line.strip().startswith("--hash="):
            entry.append(line.strip().rstrip(" \\"))
        elif entry and not line.strip().startswith("#"):
            break
    if not entry:
        raise ValueError(f"{path}: no pin for {name}")
    return " ".join(entry)


def diff(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """One line per package that moved, was added or removed, sorted by name."""
    lines = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            lines.append(f"+ {name} {after}")
        elif after is None:
            lines.append(f"- {name} {before}")
        else:
            lines.append(f"~ {name} {before} -> {after}")
    return lines


def installed() -> dict[str, str]:
    """``name -> version`` of the distributions the running interpreter sees."""
    return {canonical(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def mismatches(locked: dict[str, str], present: dict[str, str]) -> list[str]:
    """Where an environment differs from its lock: wrong version, missing, or not in the lock."""
    problems = []
    for name, version in sorted(locked.items()):
        have = present.get(name)
        if have is None:
            problems.append(f"{name}=={version} is locked but not installed")
        elif have != version:
            problems.append(f"{name} is {have}, the lock says {version}")
    for name in sorted(present.keys() - locked.keys() - NOT_LOCKED):
        problems.append(f"{name}=={present[name]} is installed but in no lock")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "diff" and len(argv) == 3:
        old = read_lock(argv[1]) if Path(argv[1]).exists() else {}
        for line in diff(old, read_lock(argv[2])):
            print(line)
        return 0
    if len(argv) == 3 and argv[0] == "line":
        try:
            print(requirement(argv[2], argv[1]))
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        return 0
    if len(argv) >= 2 and argv[0] == "verify":
        locked: dict[str, str] = {}
        for path in argv[1:]:
            locked.update(read_lock(path))
        problems = mismatches(locked, installed())
        for problem in problems:
            print(f"{sys.executable}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    print(__doc__.strip().splitlines()[2], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
