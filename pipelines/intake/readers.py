"""Read records from JSONL, JSON, CSV, Parquet and HF ``datasets`` folders, each with its location."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warehouse.errors import InputError

MAX_FIELD_BYTES = 1_000_000
"""A single value larger than this is bad input (a prompt of megabytes), not a prompt."""

FORMATS = ("auto", "jsonl", "json", "csv", "parquet", "hf", "hh-rlhf", "prm800k", "qac", "preference", "unpaired",
           "ultrafeedback", "ranking", "nectar", "shp", "pku-saferlhf", "helpsteer", "beavertails")


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One input record and where it came from (line for text formats, row index otherwise)."""

    data: dict[str, Any]
    line: int


def _open_text(path: Path) -> io.TextIOBase:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")


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


def read_records(path: Path, container: str) -> Iterator[RawRecord | InputError]:
    """Yield records in file order; a malformed record of a line-based file is yielded as its InputError
    (so the caller can skip it), a file that cannot be read at all raises InputError (a damaged .gz too, at
    whatever record it breaks: the caller has written nothing by then)."""
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet, "hf": _read_hf}
    if container not in readers:
        raise InputError(f"unknown container format {container!r}", file=str(path))
    try:
        yield from readers[container](path)
    except EOFError:  # click would print a bare "Aborted!" for it
        raise InputError("the gzip data ends early (a truncated or unfinished file)", file=str(path)) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        what = ("not gzip data, though the name ends in .gz" if str(exc).startswith("Not a gzipped file")
                else f"corrupt gzip data ({exc})")
        raise InputError(what, file=str(path)) from None


def _read_jsonl(path: Path) -> Iterator[RawRecord | InputError]:
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    with raw:
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


def _read_json(path: Path) -> Iterator[RawRecord]:
    try:
        with _open_text(path) as fh:
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


def _read_csv(path: Path) -> Iterator[RawRecord]:
    """Records of a CSV file with a header, read strictly: an unterminated quote is an error at the line where its
    record starts, not a prompt that swallows the rest of the file; a value over MAX_FIELD_BYTES is one too, with
    the same limit as the other formats (the csv module's own is 131,072 characters and names no line)."""
    limit = csv.field_size_limit(MAX_FIELD_BYTES)  # characters: more than MAX_FIELD_BYTES of them is more bytes too
    try:
        with _open_text(path) as fh:
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


def _read_parquet(path: Path) -> Iterator[RawRecord]:
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


def _read_hf(path: Path) -> Iterator[RawRecord]:
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
