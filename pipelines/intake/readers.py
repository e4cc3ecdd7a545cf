"""Read records from JSONL, JSON, CSV, Parquet and HF ``datasets`` folders, each with its location."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from alignloop.warehouse.errors import InputError

MAX_FIELD_BYTES = 1_000_000
"""A single value larger than this is bad input (a prompt of megabytes), not a prompt."""

FORMATS = ("auto", "jsonl", "json", "csv", "parquet", "hf", "hh-rlhf", "prm800k", "qac", "preference", "unpaired",
           "ultrafeedback", "ranking", "nectar", "shp", "pku-saferlhf", "helpsteer", "beavertails")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One input record and where it came from (line for text formats, row index otherwise)."""

    data: dict[str, Any]
    line: int


@dataclass
class FileDigest:
    """The sha256 and size of the bytes a reader read, gathered as it reads (one pass, a pipe too)."""

    sha: Any = field(default_factory=hashlib.sha256)
    bytes: int = 0

    def update(self, data: bytes | memoryview) -> None:
        self.sha.update(data)
        self.bytes += len(data)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


class _Hashing(io.RawIOBase):
    """A file whose reads also go to a digest."""

    def __init__(self, raw: IO[bytes], digest: FileDigest):
        super().__init__()
        self._raw, self._digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self._digest.update(memoryview(buffer)[:n])
        return n


@contextmanager
def _open_bytes(path: Path, digest: FileDigest | None) -> Iterator[IO[bytes]]:
    """The file's bytes, decompressed when its name ends in .gz; what is read of the file itself goes to ``digest``."""
    with open(path, "rb") as raw:
        src: IO[bytes] = io.BufferedReader(_Hashing(raw, digest)) if digest is not None else raw
        if path.suffix == ".gz":
            with gzip.GzipFile(fileobj=src, mode="rb") as gz:
                yield gz
        else:
            yield src


@contextmanager
def _open_text(path: Path, digest: FileDigest | None) -> Iterator[io.TextIOBase]:
    with _open_bytes(path, digest) as raw:
        yield io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


def hash_files(path: Path, digest: FileDigest) -> None:
    """Hash a file, or a folder's files in the order of their paths (each path, then its bytes)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.sha.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)


def container_format(path: Path) -> str:
    """The file's container: jsonl, json, csv, parquet or hf (a folder saved with ``save_to_disk``)."""
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf"
        raise InputError("folder is not a HF datasets folder (no dataset_info.json or dataset_dict.json)",
                         file=str(path))
    name = path.name.lower().removesuffix(".gz")
    for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv"),
                     (".parquet", "parquet")):
        if name.endswith(ext):
            return fmt
    raise InputError("unknown file type; use --format jsonl|json|csv|parquet|hf", file=str(path))


def _check_sizes(rec: dict[str, Any], path: Path, line: int) -> None:
    for key, value in rec.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_BYTES // 4 and len(value.encode()) > MAX_FIELD_BYTES:
            raise InputError(f"value is {len(value.encode()):,} bytes (limit {MAX_FIELD_BYTES:,})",
                             file=str(path), line=line, field=key)


def read_records(path: Path, container: str, digest: FileDigest | None = None) -> Iterator[RawRecord | InputError]:
    """Yield records in file order; a malformed record of a line-based file is yielded as its InputError
    (so the caller can skip it), a file that cannot be read at all raises InputError (a damaged .gz too, at
    whatever record it breaks: the caller has written nothing by then).

    Args:
        digest: gathers the sha256 and size of the file's bytes as they are read (of a folder's files, first).
    """
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet, "hf": _read_hf}
    if container not in readers:
        raise InputError(f"unknown container format {container!r}", file=str(path))
    if container in ("parquet", "hf"):  # read by random access: hashed on their own first
        if digest is not None:
            hash_files(path, digest)
        digest = None
    try:
        yield from readers[container](path, digest)
    except EOFError:  # click would print a bare "Aborted!" for it
        raise InputError("the gzip data ends early (a truncated or unfinished file)", file=str(path)) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        what = ("not gzip data, though the name ends in .gz" if str(exc).startswith("Not a gzipped file")
                else f"corrupt gzip data ({exc})")
        raise InputError(what, file=str(path)) from None


def _read_jsonl(path: Path, digest: FileDigest | None) -> Iterator[RawRecord | InputError]:
    with _open_bytes(path, digest) as raw:
        for lineno, blob in enumerate(raw, start=1):
            if len(blob) > MAX_FIELD_BYTES * 2:
                yield InputError(f"line is {len(blob):,} bytes (limit {MAX_FIELD_BYTES * 2:,})", file=str(path),
                                 line=lineno)
                continue
            try:
                line = blob.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield InputError(f"invalid UTF-8 ({exc.reason} at byte {exc.start})", file=str(path), line=lineno)
                continue
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                yield InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=str(path), line=lineno)
                continue
            if not isinstance(rec, dict):
                yield InputError(f"expected a JSON object, got {type(rec).__name__}", file=str(path), line=lineno)
                continue
            try:
                _check_sizes(rec, path, lineno)
            except InputError as exc:
                yield exc
                continue
            yield RawRecord(rec, lineno)


def _read_json(path: Path, digest: FileDigest | None) -> Iterator[RawRecord]:
    try:
        with _open_text(path, digest) as fh:
            data = json.load(fh)
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid UTF-8 ({exc.reason} at byte {exc.start})", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON: {exc.msg} (column {exc.colno})", file=str(path), line=exc.lineno) from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    if not isinstance(data, list):
        raise InputError("expected a JSON array of objects", file=str(path))
    for i, rec in enumerate(data, start=1):
        if not isinstance(rec, dict):
            raise InputError(f"record {i} is a {type(rec).__name__}, expected an object", file=str(path))
        _check_sizes(rec, path, i)
        yield RawRecord(rec, i)


def _read_csv(path: Path, digest: FileDigest | None) -> Iterator[RawRecord]:
    """Records of a CSV file with a header, read strictly: an unterminated quote is an error at the line where its
    record starts, not a prompt that swallows the rest of the file; a value over MAX_FIELD_BYTES is one too, with
    the same limit as the other formats (the csv module's own is 131,072 characters and names no line)."""
    limit = csv.field_size_limit(MAX_FIELD_BYTES)  # characters: more than MAX_FIELD_BYTES of them is more bytes too
    try:
        with _open_text(path, digest) as fh:
            reader = csv.DictReader(fh, strict=True)
            line = 1
            try:
                reader.fieldnames  # noqa: B018  (reads the header, so line_num counts from it)
                while True:
                    line = reader.line_num + 1  # where the next record starts
                    try:
                        rec = next(reader)
                    except StopIteration:
                        return
                    if None in rec:
                        raise InputError("more values than header columns", file=str(path), line=line)
                    _check_sizes(rec, path, line)
                    yield RawRecord({k: v for k, v in rec.items() if v is not None}, line)
            except csv.Error as exc:
                raise InputError(_csv_problem(exc), file=str(path), line=line) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid UTF-8 ({exc.reason} at byte {exc.start})", file=str(path)) from None
    finally:
        csv.field_size_limit(limit)


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if text == "unexpected end of data":
        return "a quoted value that starts in this record is never closed (the file ends inside its quotes)"
    if text.startswith("field larger than field limit"):
        return f"a value is over {MAX_FIELD_BYTES:,} bytes (limit {MAX_FIELD_BYTES:,})"
    return f"malformed CSV: {text}"


def _read_parquet(path: Path, _digest: None = None) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError; unreadable files raise OSError
        raise InputError(f"not a readable Parquet file ({exc})", file=str(path)) from None
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            row += 1
            _check_sizes(rec, path, row)
            yield RawRecord(rec, row)


def _read_hf(path: Path, _digest: None = None) -> Iterator[RawRecord]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        parts = list(ds.items())
    else:
        parts = [(None, ds)]
    row = 0
    for split, part in parts:
        for rec in part:
            row += 1
            if split is not None and "split" not in rec:
                rec = {**rec, "split": split}
            _check_sizes(rec, path, row)
            yield RawRecord(rec, row)
