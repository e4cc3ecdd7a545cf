"""Import a file into the warehouse: parse and filter it, then dedup and assign content ids, then write.

The file is read before the warehouse is opened for writing (``import_into``), so a long parse never holds the
warehouse's lock; the write is one transaction (``store.write_plan``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from alignloop.pipelines.intake import formats
from alignloop.pipelines.intake.dedup import NearDuplicateIndex
from alignloop.pipelines.intake.parsed import ParsedItem, Rejected
from alignloop.pipelines.intake.readers import FORMATS, FileDigest, RawRecord, container_format, read_records
from alignloop.pipelines.intake.store import TABLES, write_plan
from alignloop.warehouse import db
from alignloop.warehouse.errors import InputError
from alignloop.warehouse.records import (
    Comparison,
    Correction,
    ImportRecord,
    Model,
    Prompt,
    Ranking,
    Rating,
    Response,
    StepLabel,
    to_arrow,
)

OnError = Literal["fail", "skip"]


@dataclass(frozen=True)
class ImportOptions:
    format: str = "auto"
    """auto | jsonl | json | csv | parquet | hf | hh-rlhf | prm800k | qac | preference | unpaired |
    ultrafeedback | ranking | nectar | shp | pku-saferlhf | helpsteer | beavertails."""
    fields: formats.FieldMap = field(default_factory=formats.FieldMap)
    round: str = "import"
    """Round that imported responses and feedback belong to (created on first use)."""
    source: str | None = None
    """Source name stored with prompts; default: the file name."""
    feedback_source: str | None = None
    """Who gave the file's labels: ``human`` (people, as in HH-RLHF) or ``ai`` (a model, as UltraFeedback's
    GPT-4 ratings), stored with every comparison, ranking, rating, step label and correction it carries; None: the
    format's (``ai`` for ultrafeedback and nectar, else ``human``)."""
    aspect: str = "overall"
    """What the file's comparisons, rankings and corrections judged, where a record does not say (e.g. helpfulness for HH-RLHF's
    helpful-base, harmlessness for its harmless-base): builds select it with ``-o aspect=``."""
    tags: tuple[str, ...] = ()
    test_fraction: float = 0.1
    """Share of prompts put in the test split, chosen from the prompt id (deterministic)."""
    near_dup: float | None = None
    """Drop prompts whose 3-gram Jaccard similarity to an earlier one is at least this; None disables."""
    min_chars: int = 1
    max_chars: int = 100_000
    on_error: OnError = "fail"
    limit: int | None = None
    """Read at most this many records."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if not 0 <= self.test_fraction < 1:
            raise InputError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if self.feedback_source not in (None, "human", "ai"):
            raise InputError(f"--feedback-source must be human or ai, got {self.feedback_source!r}")
        if self.on_error not in ("fail", "skip"):
            raise InputError(f"--on-error must be fail or skip, got {self.on_error!r}")
        if self.near_dup is not None and not 0 < self.near_dup <= 1:
            raise InputError(f"--near-dup must be in (0, 1] (a Jaccard similarity), got {self.near_dup}")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit must be >= 1, got {self.limit}")
        if self.min_chars > self.max_chars:
            raise InputError(f"--min-chars {self.min_chars} exceeds --max-chars {self.max_chars}")
        if not self.round.strip():
            raise InputError("--round must not be empty")
        if not self.aspect.strip():
            raise InputError("--aspect must not be empty")


@dataclass
class ImportSummary:
    """What an import read and what it stored: records by outcome, rows per table new and already present."""

    file: str
    format: str
    read: int = 0
    imported: int = 0
    """Records that stored at least one row."""
    already_present: int = 0
    """Records all of whose rows were stored already (by an earlier import, or earlier in this file)."""
    near_duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_lines: list[tuple[int, str]] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    warnings: dict[str, int] = field(default_factory=dict)
    inserted: dict[str, int] = field(default_factory=dict)
    """New rows per table."""
    present: dict[str, int] = field(default_factory=dict)
    """Rows per table the file carried that were stored already (one per record that carried them)."""
    import_id: str | None = None
    """The ``imports`` row recording this file's import."""
    seen_before: bool = False
    """The same bytes under the same name were imported with the same options before."""

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "format": self.format, "read": self.read, "imported": self.imported,
                "already_present": self.already_present, "near_duplicates": self.near_duplicates,
                "rejected": dict(self.rejected), "rejected_lines": self.rejected_lines[:50],
                "skipped": len(self.skipped), "skipped_lines": self.skipped[:50], "warnings": dict(self.warnings),
                "inserted": self.inserted, "present": self.present, "import_id": self.import_id,
                "seen_before": self.seen_before}


@dataclass
class ParsedFile:
    """A file read and filtered, before anything in the warehouse is looked at."""

    path: Path
    source: str
    items: list[ParsedItem]
    prompts: list[Prompt]
    """Each item's prompt as it would be stored (split still to be set)."""
    summary: ImportSummary
    digest: FileDigest


@dataclass
class ImportPlan:
    summary: ImportSummary
    tables: dict[str, pa.Table]
    """Rows per table, each id once (its first occurrence)."""
    carried: list[tuple[tuple[str, str], ...]]
    """Per record kept, the (table, id) of every row it carries: what makes it new or already present."""
    model: Model | None
    record: ImportRecord
    stored_prompts: dict[str, str]
    """The stored prompts it was planned against (normalised-text key -> id)."""


def split_of(prompt_id: str, test_fraction: float) -> str:
    """Deterministic split from the id: the same prompt lands on the same side in every import."""
    return "test" if int(prompt_id[:8], 16) / 0x1_0000_0000 < test_fraction else "train"


def _records(path: Path, container: str, limit: int | None, digest: FileDigest
             ) -> Iterator[RawRecord | InputError]:
    for n, rec in enumerate(read_records(path, container, digest)):
        if limit is not None and n >= limit:
            return
        yield rec


def _resolve_parser(fmt: str, first: dict[str, Any], fields: formats.FieldMap
                    ) -> tuple[str, Callable[[RawRecord, str], ParsedItem]]:
    if fmt in formats.PARSERS:
        return fmt, formats.PARSERS[fmt]
    if fmt == "auto":
        detected = formats.detect(first)
        if detected in formats.PARSERS:
            return detected, formats.PARSERS[detected]
    return "generic", formats.generic_parser(fields)


def parse_file(path: str | Path, opts: ImportOptions) -> ParsedFile:
    """Read, parse and filter a file; touches no warehouse."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", file=str(path))
    if path.is_file() and path.stat().st_size == 0:
        raise InputError("file is empty", file=str(path))
    container = opts.format if opts.format in ("jsonl", "json", "csv", "parquet", "hf") else container_format(path)
    summary = ImportSummary(str(path), opts.format)
    digest = FileDigest()
    items: list[ParsedItem] = []
    parse = None
    for rec in _records(path, container, opts.limit, digest):
        summary.read += 1
        try:
            if isinstance(rec, InputError):
                raise rec
            if parse is None:
                summary.format, parse = _resolve_parser(opts.format, rec.data, opts.fields)
            item = parse(rec, str(path))
            text_len = sum(len(m["content"]) for m in item.messages)
            if text_len < opts.min_chars:
                raise Rejected(f"prompt shorter than {opts.min_chars} chars")
            if text_len > opts.max_chars:
                raise Rejected(f"prompt longer than {opts.max_chars} chars")
            items.append(item)
        except Rejected as rej:
            summary.rejected[rej.reason] = summary.rejected.get(rej.reason, 0) + 1
            summary.rejected_lines.append((rec.line, str(rej)))
        except InputError as err:
            if opts.on_error == "fail":
                raise
            summary.skipped.append((err.line or 0, str(err)))
    if summary.read == 0:
        raise InputError("no records found", file=str(path))
    if not items:  # --on-error skip of a file with no good record is not a successful import of nothing
        first = (summary.skipped or summary.rejected_lines)[0]
        raise InputError(f"no record to import: {len(summary.skipped):,} of {summary.read:,} skipped as errors, "
                         f"{sum(summary.rejected.values()):,} rejected; the first at line {first[0]}: {first[1]}",
                         file=str(path))
    source = opts.source or path.name
    prompts = [Prompt.create(it.messages, source, "train", it.reference, [*opts.tags, *it.tags], it.meta)
               for it in items]
    return ParsedFile(path, source, items, prompts, summary, digest)


def norm_keys(parsed: ParsedFile) -> list[str]:
    """The normalised-text keys of the file's prompts, to look up the stored prompts they duplicate."""
    return sorted({p.norm_hash for p in parsed.prompts})


def plan_import(parsed: ParsedFile, opts: ImportOptions, stored: dict[str, str]) -> ImportPlan:
    """Dedup the parsed file's prompts and give every row its content id; write nothing.

    Args:
        stored: normalised-text keys of ``norm_keys(parsed)`` -> ids of prompts already stored (exact dedup across
            imports).
    """
    summary = copy.deepcopy(parsed.summary)  # planned again, if need be, from the same parse
    prompts: dict[str, Prompt] = {}
    canon: dict[str, str] = {}  # norm hash -> prompt id kept
    near = NearDuplicateIndex(opts.near_dup) if opts.near_dup else None
    near_ids: list[str] = []
    kept_items: list[tuple[ParsedItem, str]] = []
    for it, p in zip(parsed.items, parsed.prompts):
        if p.id in prompts or p.norm_hash in canon or p.norm_hash in stored:
            # a prompt stored already or earlier in the file; feedback on it joins the kept prompt
            kept_items.append((it, prompts[p.id].id if p.id in prompts else canon.get(p.norm_hash)
                               or stored[p.norm_hash]))
            continue
        if near is not None:
            j = near.add(p.text)
            if j is not None:
                summary.near_duplicates += 1
                if it.responses:
                    kept_items.append((it, near_ids[j]))
                continue
            near_ids.append(p.id)
        split = it.split or split_of(p.id, opts.test_fraction)
        prompts[p.id] = Prompt(p.id, p.messages, p.text, p.norm_hash, p.source, split, p.reference, p.tags, p.meta)
        canon[p.norm_hash] = p.id
        kept_items.append((it, p.id))
    model = Model.create(f"dataset:{summary.format}:{parsed.source}", "dataset")
    rows, carried = _feedback_rows(kept_items, opts, model, parsed.source, summary)
    tables = {"prompts": to_arrow(list(prompts.values()))} if prompts else {}
    tables.update({name: to_arrow(rs) for name, rs in rows.items() if rs})
    options = asdict(opts)
    record = ImportRecord(ImportRecord.make_id(parsed.path.name, parsed.digest.hexdigest(), options),
                          str(parsed.path), parsed.path.name, parsed.source, parsed.digest.hexdigest(),
                          parsed.digest.bytes, summary.format, opts.round, options)
    return ImportPlan(summary, tables, carried, model if rows["responses"] else None, record, stored)


def _feedback_rows(kept_items: list[tuple[ParsedItem, str]], opts: ImportOptions, model: Model, source: str,
                   summary: ImportSummary) -> tuple[dict[str, list[Any]], list[tuple[tuple[str, str], ...]]]:
    """The responses and labels of each kept record, with ids from their content (not the file), and the rows each
    record carries."""
    feedback_source = opts.feedback_source or formats.FEEDBACK_SOURCE.get(summary.format, "human")
    rows: dict[str, list[Any]] = {t: [] for t in TABLES[1:]}
    carried = []
    for it, pid in kept_items:
        judge = it.judge or f"dataset:{source}"  # shown as who labelled it: the file's name, unless the record says
        labeller = it.judge or f"dataset:{feedback_source}"  # what the id hashes: never the file
        start = {t: len(rs) for t, rs in rows.items()}
        rid: dict[str, str] = {}
        for r in it.responses:  # parents come before children in every parser
            resp = Response.imported(pid, model.id, opts.round, r.text, r.origin, steps=r.steps,
                                     finish_reason=r.finish_reason,
                                     parent_id=rid.get(r.parent) if r.parent else None, meta=r.meta)
            rid[r.key] = resp.id
            rows["responses"].append(resp)
            if r.meta and r.meta.get("embedded_turns"):
                key = "response contains further Human:/Assistant: turns (kept whole)"
                summary.warnings[key] = summary.warnings.get(key, 0) + 1
        for a, b, winner, *named in it.comparisons:
            aspect = named[0] if named else opts.aspect
            prob_a = it.prob_a if it.prob_a is not None else {"a": 1.0, "b": 0.0, "tie": 0.5}[winner]
            rows["comparisons"].append(Comparison(
                Comparison.label_id(labeller, rid[a], rid[b], winner, prob_a, aspect), pid, rid[a], rid[b], winner,
                judge, feedback_source, opts.round, prob_a=prob_a, aspect=aspect))
        if it.ranking:
            order = [rid[key] for key in it.ranking]
            rows["rankings"].append(Ranking(Ranking.label_id(labeller, order, opts.aspect), pid, order, judge,
                                            feedback_source, opts.round, aspect=opts.aspect))
        for t in it.ratings:
            rows["ratings"].append(Rating(
                Rating.label_id(labeller, rid[t.response], t.aspect, t.score, t.scale_min, t.scale_max), pid,
                rid[t.response], t.score, t.scale_min, t.scale_max, judge, feedback_source, opts.round, t.aspect,
                t.rationale))
        for s in it.step_labels:
            rows["step_labels"].append(StepLabel(
                StepLabel.label_id(labeller, rid[s.response], s.index, s.label, s.flagged), pid, rid[s.response],
                s.index, s.label, judge, feedback_source, opts.round, s.flagged, it.step_finish_reason))
        for orig, corr in it.corrections:
            rows["corrections"].append(Correction(
                Correction.label_id(labeller, rid[orig], rid[corr], opts.aspect), pid, rid[orig], rid[corr], judge,
                feedback_source, opts.round, aspect=opts.aspect))
        carried.append((("prompts", pid), *((t, r.id) for t, rs in rows.items() for r in rs[start[t]:])))
    return rows, carried


def stored_prompts(con: duckdb.DuckDBPyConnection, keys: list[str]) -> dict[str, str]:
    """Normalised-text keys -> ids of the stored prompts among ``keys``."""
    if not keys:
        return {}
    return dict(con.execute(db.query("existing_prompts_by_norm"), {"keys": keys}).fetchall())


def import_file(con: duckdb.DuckDBPyConnection, path: str | Path, opts: ImportOptions | None = None
                ) -> ImportSummary:
    """Import ``path`` through an open connection; all rows in one transaction, so a failing import writes nothing."""
    opts = opts or ImportOptions()
    parsed = parse_file(path, opts)
    return write_plan(con, plan_import(parsed, opts, stored_prompts(con, norm_keys(parsed))))


def import_into(db_path: str, path: str | Path, opts: ImportOptions | None = None) -> ImportSummary:
    """Import ``path`` into the warehouse file ``db_path`` (created if missing).

    The file is parsed and its ids computed before the warehouse is opened for writing, so another command (a
    ``status``, a round) is not kept waiting for the parse; the write lock is held for the write only. A failed
    import into a new file leaves no file behind.
    """
    opts = opts or ImportOptions()
    exists = Path(db_path).exists()
    if exists:
        db.existing_path(db_path)  # a --db that is no warehouse, or of another schema, before a long parse
    parsed = parse_file(path, opts)
    keys = norm_keys(parsed)
    stored: dict[str, str] = {}
    if exists:
        with db.connect(db_path, read_only=True) as con:
            stored = stored_prompts(con, keys)
    plan = plan_import(parsed, opts, stored)
    with db.removed_on_failure(db_path), db.connect(db_path) as con:
        now = stored_prompts(con, keys)
        if now != plan.stored_prompts:  # another import stored some of these prompts meanwhile: plan again
            plan = plan_import(parsed, opts, now)
        return write_plan(con, plan)
