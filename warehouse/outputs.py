"""Folders and files a user names for alignloop to write: replaced only where alignloop wrote them, swapped in whole.

A destructive option (``--force``) refuses what it did not create: a folder or file is replaced only when it is one
that alignloop wrote there before (``is_ours``; a folder holding nothing else), and never when it is the current
folder or holds it, is a warehouse's folder or holds any ``.duckdb`` file. The new version is written beside the
old one and renamed into place at the end, so a failure leaves the old one whole. Secrets are written readable by
their owner only from the start (:func:`write_private`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from alignloop.warehouse.errors import AlignloopError

WAREHOUSE_SUFFIX = ".duckdb"


def _named_inside(folder: Path, warehouses: Iterable[str | os.PathLike[str]]) -> str | None:
    """The first of ``warehouses`` that is in ``folder``, or None."""
    for w in warehouses:
        if str(w) != ":memory:" and Path(w).exists() and Path(w).resolve().is_relative_to(folder):
            return str(Path(w).resolve())
    return None


def _any_inside(folder: Path) -> str | None:
    """The first ``.duckdb`` file (or its write-ahead log) below ``folder``, or None."""
    for root, _, names in os.walk(folder):
        for name in names:
            if name.endswith(WAREHOUSE_SUFFIX) or WAREHOUSE_SUFFIX + "." in name:  # a.duckdb, a.duckdb.wal
                return str(Path(root) / name)
    return None


def replace_problem(path: str | os.PathLike[str], is_ours: Callable[[Path], str | None],
                    warehouses: Iterable[str | os.PathLike[str]] = ()) -> str | None:
    """Why the existing ``path`` may not be replaced, or None where it may.

    Args:
        path: the folder or file a user named (it exists).
        is_ours: None where ``path`` is what alignloop wrote there (a folder holding nothing else), else why not
            (e.g. "it is not an alignloop export (no alignloop_export.json)").
        warehouses: warehouse files whose folder is never replaced (e.g. the command's ``--db``).
    """
    path = Path(path)
    if path.is_symlink():
        return "it is a symbolic link (name what it points to)"
    target, here = path.resolve(), Path.cwd().resolve()
    if not path.is_dir():
        return "it is a warehouse" if WAREHOUSE_SUFFIX in target.name else is_ours(target)
    if target == here or target in here.parents:
        return "it is the current folder" if target == here else "it holds the current folder"
    warehouses = list(warehouses)
    for w in warehouses:
        if str(w) != ":memory:" and Path(w).resolve().parent == target:
            return f"it is the warehouse's folder ({Path(w).resolve()})"
    if (found := _named_inside(target, warehouses)) is not None:
        return f"it holds a warehouse ({found})"
    if (why := is_ours(target)) is not None:  # before the walk below: a folder of anything may be large
        return why
    return None if (found := _any_inside(target)) is None else f"it holds a warehouse ({found})"


def check_replaceable(path: str | os.PathLike[str], option: str, is_ours: Callable[[Path], str | None],
                      warehouses: Iterable[str | os.PathLike[str]] = (), force: bool = True) -> None:
    """Refuse, in one line naming ``path`` and why, to replace an existing ``path`` (see :func:`replace_problem`);
    without ``force``, refuse any existing one (saying whether ``--force`` would do)."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    why = replace_problem(path, is_ours, warehouses)
    if why is not None:
        raise AlignloopError(f"refusing to replace {path}: {why}; choose another {option}")
    if not force:
        raise AlignloopError(f"{path} exists; pass --force to replace it")


def write_private(path: str | os.PathLike[str], text: str) -> None:
    """Write a secret (a token) to ``path``: readable by its owner only from the first byte (a temp file created
    0600 in the same folder, then renamed over ``path``), never a moment world-readable, never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)  # mode 0600 from the start
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def staging_dir(out: Path) -> Path:
    """A new, empty folder beside ``out`` to write its next version in (hidden: ``.NAME.tmp-*``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(out, "tmp")
    tmp.mkdir()  # not mkdtemp: its 0700 would become the export's mode; mkdir keeps the umask's
    return tmp


def _beside(out: Path, what: str) -> Path:
    """A name no other process picks, hidden beside ``out``: ``.NAME.WHAT-PID-RANDOM``."""
    return out.with_name(f".{out.name}.{what}-{os.getpid()}-{secrets.token_hex(4)}")


def swap_in(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``. An ``out`` there already is renamed aside first, removed once ``new`` is in place,
    and put back where the rename fails."""
    old = None
    if out.exists() or out.is_symlink():
        old = _beside(out, "old")
        os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
