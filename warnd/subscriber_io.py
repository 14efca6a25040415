"""Bulk subscriber import and export: CSV and NDJSON, streamed.

CSV: UTF-8 (a BOM is ignored), a header row naming the columns, in any
order; only ``id`` and ``area`` are required:

============  =================================================================
``id``        unique id (1–64 of ``A-Z a-z 0-9 _ . : @ -``); the upsert key
``name``      display name (村委会主任张三, 曹县政府广场屏…)
``area``      administrative code, padded or not (``371721``, ``371721000000``)
``lon``       WGS-84 longitude (with ``lat``; both or neither)
``lat``       WGS-84 latitude
``language``  BCP 47 tag; default ``zh-Hans`` (``zh-Hant``, ``en``, ``ug``, ``bo``…)
``groups``    group keys separated by ``;`` (``village_officers;schools``)
``sms``       mobile number (E.164, or a mainland number without +86)
``email``     mailbox
``wechat``    name of a robot webhook configured in ``[channels.wechat]``
``board``     display-board id
============  =================================================================

NDJSON: one JSON object per line, the API's subscriber form
(``{"id": …, "area": …, "point": {"lon": …, "lat": …}, "groups": […],
"endpoints": {"sms": …}}``). Blank lines are skipped in both.

Rows are validated one by one and written in pipelined batches; a bad row
is reported with its line number and every reason, and never stops the
good rows around it. Importing the same file twice changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from pydantic import ValidationError

from warnd.errors import BadRequest, FieldError
from warnd.subscribers import (
    Packed,
    Row,
    Subscriber,
    SubscriberContext,
    SubscriberStore,
    WriteResult,
    fast_row,
    row_of,
)

log = structlog.get_logger("warnd.subscribers")

CSV_COLUMNS = (
    *("id", "name", "area", "lon", "lat", "language", "groups"),
    *("sms", "email", "wechat", "board"),
)
REQUIRED_COLUMNS = ("id", "area")
CSV_TYPES = ("text/csv", "application/csv")
NDJSON_TYPES = (
    *("application/x-ndjson", "application/ndjson"),
    *("application/jsonl", "application/x-jsonlines"),
)
MAX_LINE_BYTES = 64 * 1024
_ENDPOINT_COLUMNS = ("sms", "email", "wechat", "board")
_JSON_KEYS = frozenset({"id", "name", "area", "point", "language", "groups", "endpoints"})
_PLAIN_CSV = re.compile(r'["\r\n\x00]').search
"""Finds what makes a CSV line need the csv module (quoting, stray line breaks, NUL)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    id: str | None
    errors: list[FieldError]

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "id": self.id, "errors": [e.as_dict() for e in self.errors]}


@dataclass(slots=True)
class ImportSummary:
    rows: int = 0
    accepted: int = 0
    rejected: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    rejections_truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejections": [r.as_dict() for r in self.rejections],
            "rejections_truncated": self.rejections_truncated,
        }


# ------------------------------------------------------------ row shapes


def csv_input(row: dict[str, Any]) -> dict[str, Any]:
    """A flat row (CSV columns; ``groups`` a list) as the subscriber model's input."""
    out: dict[str, Any] = {k: row[k] for k in ("id", "name", "area", "language") if k in row}
    if "lon" in row or "lat" in row:
        out["point"] = {"lon": row.get("lon"), "lat": row.get("lat")}
    if "groups" in row:
        out["groups"] = row["groups"]
    out["endpoints"] = {k: row[k] for k in _ENDPOINT_COLUMNS if k in row}
    return out


def _flat(obj: dict[str, Any]) -> dict[str, Any] | None:
    """An NDJSON object (the API form) as a flat row, when it has that simple shape."""
    if not obj.keys() <= _JSON_KEYS:
        return None
    point = obj.get("point")
    endpoints = obj.get("endpoints") or {}
    if not isinstance(endpoints, dict) or not endpoints.keys() <= set(_ENDPOINT_COLUMNS):
        return None
    row = {
        k: obj[k] for k in ("id", "name", "area", "language", "groups") if obj.get(k) is not None
    }
    if point is not None:
        if not isinstance(point, dict) or point.keys() != {"lon", "lat"}:
            return None
        row["lon"], row["lat"] = point["lon"], point["lat"]
    if not all(isinstance(row.get(k, ""), str) for k in ("id", "name", "area", "language")):
        return None
    if not isinstance(row.get("groups", []), list):
        return None
    row.update({k: v for k, v in endpoints.items() if v is not None})
    return row


def _csv_loc(loc: str) -> str:
    parts = [p for p in loc.split("/") if p]
    if not parts:
        return "row"
    if parts[0] in ("endpoints", "point") and len(parts) > 1:
        return parts[1]
    return parts[0]


def csv_row(p: Packed) -> list[str]:
    def text(v: object) -> str:
        return "" if v is None else str(v)

    return [
        p.id,
        p.name,
        p.area,
        text(p.lon),
        text(p.lat),
        p.language,
        ";".join(p.groups),
        text(p.sms),
        text(p.email),
        text(p.wechat),
        text(p.board),
    ]


# -------------------------------------------------------------- parsers

Parsed = tuple[int, dict[str, Any] | None, list[FieldError]]
"""(first line of the record, model input or None, errors)."""


class _One:
    """Feeds one record at a time to a long-lived csv.reader."""

    def __init__(self) -> None:
        self.text: str | None = None

    def __iter__(self) -> _One:
        return self

    def __next__(self) -> str:
        text, self.text = self.text, None
        if text is None:
            raise StopIteration
        return text


class CsvRecords:
    """Turns numbered text lines into CSV records, quoted newlines included.

    A record's values come out as the flat row :func:`fast_subscriber`
    takes (column → text, empty cells left out, ``groups`` split on ``;``).
    """

    def __init__(self) -> None:
        self._columns: list[str] | None = None
        self._pending: list[str] = []
        self._start = 0
        self._quotes = 0
        self._one = _One()
        self._reader = csv.reader(self._one, strict=True)

    def feed(self, line_no: int, text: str) -> Parsed | None:
        if not self._pending:
            if not text.strip():
                return None
            if '"' not in text:  # the usual record: one line, nothing quoted
                return self._record(line_no, text)
            self._start = line_no
        self._pending.append(text)
        self._quotes += text.count('"')
        if self._quotes % 2:
            return None  # inside a quoted field: the record goes on
        record = "".join(self._pending) if len(self._pending) > 1 else text
        self._pending.clear()
        self._quotes = 0
        return self._record(self._start, record)

    def close(self) -> Parsed | None:
        if self._pending:
            start = self._start
            self._pending.clear()
            return (start, None, [FieldError("row", "unterminated quoted field at end of file")])
        if self._columns is None:
            raise BadRequest("the CSV file is empty: it needs a header row")
        return None

    def _record(self, start: int, record: str) -> Parsed | None:
        body = record[:-2] if record.endswith("\r\n") else record.removesuffix("\n")
        if _PLAIN_CSV(body) is None:
            # No quote, line break or NUL: the csv module would only split on commas.
            values = body.split(",")
        else:
            self._one.text = record
            try:
                values = next(self._reader)
            except csv.Error as exc:
                self._reader = csv.reader(self._one, strict=True)
                return (start, None, [FieldError("row", f"not valid CSV: {exc}")])
        if self._columns is None:
            self._columns = _header(values, start)
            return None
        if len(values) != len(self._columns):
            known = dict(zip(self._columns, values, strict=False))
            wrong = FieldError("row", f"{len(values)} fields, the header has {len(self._columns)}")
            return (start, {"id": known.get("id") or None}, [wrong])
        row: dict[str, Any] = {
            column: value
            for column, text in zip(self._columns, values, strict=True)
            if (value := text.strip())
        }
        if "groups" in row:
            row["groups"] = [g for g in row["groups"].split(";") if g.strip()]
        return (start, row, [])


def _header(values: list[str], line: int) -> list[str]:
    columns = [v.strip().lower() for v in values]
    errors: list[FieldError] = []
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        errors.append(
            FieldError(
                "header",
                f"unknown column(s) {', '.join(map(repr, unknown))};"
                f" the columns are {', '.join(CSV_COLUMNS)}",
                line,
            )
        )
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        errors.append(FieldError("header", f"column(s) named twice: {', '.join(dupes)}", line))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        errors.append(FieldError("header", f"missing column(s): {', '.join(missing)}", line))
    if errors:
        raise BadRequest("the CSV header is not usable", errors=errors)
    return columns


class NdjsonRecords:
    """One JSON object per line."""

    def feed(self, line_no: int, text: str) -> Parsed | None:
        if not text.strip():
            return None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            return (line_no, None, [FieldError("/", f"not valid JSON: {exc.msg}")])
        if not isinstance(obj, dict):
            kind = type(obj).__name__
            return (line_no, None, [FieldError("/", f"expected an object, got {kind}")])
        return (line_no, obj, [])

    def close(self) -> Parsed | None:
        return None


# -------------------------------------------------------------- importer


class Importer:
    """Validates records and writes the good ones in batches."""

    def __init__(
        self,
        store: SubscriberStore,
        context: SubscriberContext,
        *,
        csv_locs: bool,
        batch_size: int = 5000,
        max_rejections: int = 10_000,
        on_reject: Callable[[Rejection], None] | None = None,
    ) -> None:
        self._store = store
        self._ctx = context
        self._csv = csv_locs
        self._batch: list[tuple[str, Row]] = []
        self._batch_size = batch_size
        self._max_rejections = max_rejections
        self._on_reject = on_reject
        self.summary = ImportSummary()
        self._writing: asyncio.Future[WriteResult] | None = None

    async def add(self, parsed: Parsed) -> None:
        if self.take(parsed):
            await self._flush()

    def take(self, parsed: Parsed) -> bool:
        """:meth:`add` without the write: true when a full batch waits for :meth:`flush`."""
        line, data, errors = parsed
        self.summary.rows += 1
        sub_id = data.get("id") if isinstance(data, dict) else None
        if data is not None and not errors:
            flat = data if self._csv else _flat(data)
            row = fast_row(flat, self._ctx) if flat is not None else None
            if row is None:  # not plainly valid: the model says exactly what is wrong
                try:
                    sub = Subscriber.model_validate(
                        csv_input(data) if self._csv else data, context=self._ctx
                    )
                except ValidationError as exc:
                    errors = [self._loc(e) for e in validation_errors(exc)]
                else:
                    row = row_of(sub)
            if row is not None:
                self.summary.accepted += 1
                self._batch.append((cast(str, data["id"]), row))
                return len(self._batch) >= self._batch_size
        self._reject(Rejection(line, sub_id if isinstance(sub_id, str) else None, errors))
        return False

    async def flush(self) -> None:
        """Start writing the batch taken so far (after the write in flight)."""
        await self._flush()

    @property
    def writing(self) -> bool:
        """Whether a batch is being written."""
        return self._writing is not None and not self._writing.done()

    def _loc(self, err: FieldError) -> FieldError:
        return FieldError(_csv_loc(err.loc) if self._csv else err.loc, err.msg)

    def _reject(self, rejection: Rejection) -> None:
        self.summary.rejected += 1
        if len(self.summary.rejections) < self._max_rejections:
            self.summary.rejections.append(rejection)
        else:
            self.summary.rejections_truncated = True
        if self._on_reject is not None:
            self._on_reject(rejection)

    async def _flush(self) -> None:
        """Write the batch while the next one is parsed (one write in flight)."""
        await self._settle()
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self._writing = asyncio.ensure_future(self._store.upsert_rows(batch))

    async def drain(self) -> None:
        """Wait for the write in flight, ignoring its outcome (the import is failing)."""
        with contextlib.suppress(Exception):
            await self._settle()

    async def _settle(self) -> None:
        if self._writing is None:
            return
        writing, self._writing = self._writing, None
        result = await writing
        self.summary.created += result.created
        self.summary.updated += result.updated
        self.summary.unchanged += result.unchanged

    async def finish(self) -> ImportSummary:
        await self._flush()
        await self._settle()
        log.info(
            "subscribers.imported",
            rows=self.summary.rows,
            accepted=self.summary.accepted,
            rejected=self.summary.rejected,
            created=self.summary.created,
            updated=self.summary.updated,
        )
        return self.summary


def validation_errors(exc: ValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        path = "/".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append(FieldError(loc=f"/{path}", msg=msg))
    return out


def parser_for(fmt: str) -> CsvRecords | NdjsonRecords:
    if fmt == "csv":
        return CsvRecords()
    if fmt == "ndjson":
        return NdjsonRecords()
    raise BadRequest(f"unknown format {fmt!r}: csv or ndjson")


def format_of_path(name: str) -> str:
    lower = name.lower()
    if lower.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    return "csv"


async def import_lines(
    lines: AsyncIterable[bytes] | Iterable[bytes], fmt: str, importer: Importer
) -> ImportSummary:
    """Feed raw lines (bytes, with or without their newline) through a parser into ``importer``."""
    parser = parser_for(fmt)
    line_no = 0

    # The loop is written out twice (async and plain iterables): it runs once a row.
    # Now and then it lets the batch being written go on (read its replies, send
    # the next commands) so that Redis works while the next batch is parsed.
    try:
        if isinstance(lines, AsyncIterable):
            async for raw in lines:
                line_no += 1
                parsed = _parse_line(parser, line_no, raw)
                if parsed is not None and importer.take(parsed):
                    await importer.flush()
                if not line_no % _YIELD_EVERY and importer.writing:
                    await asyncio.sleep(0)
        else:
            for raw in lines:
                line_no += 1
                parsed = _parse_line(parser, line_no, raw)
                if parsed is not None and importer.take(parsed):
                    await importer.flush()
                if not line_no % _YIELD_EVERY and importer.writing:
                    await asyncio.sleep(0)
        tail = parser.close()
        if tail is not None:
            await importer.add(tail)
        return await importer.finish()
    except BaseException:
        await importer.drain()  # the batch in flight is written (or fails) before we leave
        raise


_YIELD_EVERY = 256
"""Lines parsed between chances for the write in flight to read its replies and go on."""


def _parse_line(parser: CsvRecords | NdjsonRecords, line_no: int, raw: bytes) -> Parsed | None:
    if len(raw) > MAX_LINE_BYTES:
        return (line_no, None, [FieldError("row", f"line longer than {MAX_LINE_BYTES} bytes")])
    if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (line_no, None, [FieldError("row", f"not UTF-8: {exc.reason}")])
    if not text.endswith("\n"):
        text += "\n"
    return parser.feed(line_no, text)


# ---------------------------------------------------------------- export


async def export_chunks(store: SubscriberStore, fmt: str) -> AsyncIterator[str]:
    """The whole registry as CSV (with header) or NDJSON text, a chunk per scan batch."""
    parser_for(fmt)  # validates fmt
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        yield buf.getvalue()
    async for batch in store.scan():
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerows(csv_row(p) for p in batch)
            yield buf.getvalue()
        else:
            yield "".join(p.subscriber().model_dump_json(exclude_none=True) + "\n" for p in batch)
