"""The environments scripts/setup makes hold exactly the versions locked in scripts/locks/."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

LOCKS = REPO / "scripts" / "locks"


def _locks_module():
    spec = importlib.util.spec_from_file_location("alignloop_locks", REPO / "scripts" / "locks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


locks = _locks_module()


def _lock_fits() -> bool:
    import platform

    return sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64"


def test_project_environment_is_the_lock():
    if not _lock_fits():
        pytest.skip("the locks are for CPython 3.11 on Linux x86-64; scripts/setup installs unlocked elsewhere")
    gpu = shutil.which("nvidia-smi") is not None
    lock = LOCKS / ("project-cuda.txt" if gpu else "project-cpu.txt")
    locked = {**locks.read_lock(lock), **locks.read_lock(LOCKS / "model.txt")}
    assert locks.mismatches(locked, locks.installed()) == []
    if not gpu:
        import torch

        assert torch.__version__.endswith("+cpu"), "a machine without a GPU must get torch's CPU build"


def test_label_studio_environment_is_the_lock():
    python = REPO / ".venv-ls" / "bin" / "python"
    if not python.exists():
        pytest.skip(".venv-ls is not on this machine (bash scripts/setup-label-studio makes it)")
    run = subprocess.run(
        [str(python), str(REPO / "scripts" / "locks.py"), "verify", str(LOCKS / "label-studio.txt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_every_lock_pins_with_hashes():
    for lock in sorted(LOCKS.glob("*.txt")):
        text = lock.read_text()
        pins = locks.read_lock(lock)
        assert pins, lock.name
        for name in pins:
            assert "--hash=sha256:" in locks.requirement(lock, name), f"{lock.name}: {name} has no hash"
        assert "/tmp/" not in text and "/opt/" not in text, f"{lock.name} names a path of the machine it was made on"


def test_label_studio_lock_keeps_sentry_below_3():
    """sentry-sdk 3 kills the Label Studio 1.23.2 server at start-up (TypeError on send_default_pii)."""
    version = locks.read_lock(LOCKS / "label-studio.txt")["sentry-sdk"]
    assert int(version.split(".")[0]) < 3


def test_lock_diff_and_mismatches(tmp_path):
    old = tmp_path / "old.txt"
    new = tmp_path / "new.txt"
    old.write_text("Foo_Bar==1.0 \\\n    --hash=sha256:aa\n    # via x\nbaz==2.0\n")
    new.write_text("foo-bar==1.1 \\\n    --hash=sha256:bb\nqux==0.1\n")
    assert locks.diff(locks.read_lock(old), locks.read_lock(new)) == [
        "- baz 2.0",
        "~ foo-bar 1.0 -> 1.1",
        "+ qux 0.1",
    ]
    assert locks.requirement(old, "foo-bar") == "Foo_Bar==1.0 --hash=sha256:aa"
    problems = locks.mismatches({"foo-bar": "1.1", "qux": "0.1"}, {"foo-bar": "1.0", "pip": "24", "extra": "3"})
    assert problems == [
        "foo-bar is 1.0, the lock says 1.1",
        "qux==0.1 is locked but not installed",
        "extra==3 is installed but in no lock",
    ]
