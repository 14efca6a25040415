"""Importing administrative code lists and boundaries into Redis.

``warnd areas import FILE [--format F] [--crs wgs84|gcj02]`` and the
``[areas] import`` setting both end in :func:`import_file`.

Formats (``--format``, default ``auto``: by extension, then by content)
    ``csv``
        A header row with ``code`` and ``name`` columns (``adcode``/``代码``
        and ``名称`` are accepted too). Other columns that name an ancestor
        — ``provinceCode``, ``cityCode``, ``areaCode``, ``streetCode``,
        ``parent``/``pcode`` — are checked against the code's own prefix,
        and a row that contradicts them is rejected. Read as a stream, so
        file size does not matter. This is the format of the NBS lists
        (``cn-stats2023-{provinces,cities,areas,streets}.csv``, the
        ``villages`` lists).
    ``ndjson``
        One JSON object per line with the same fields; streamed.
    ``json``
        A JSON array of such objects, or a tree whose nodes carry
        ``children`` (``pca-code.json``; the 12-digit ``area_code`` tree
        with integer codes and ``pcode``). Read whole.
    ``geojson``
        A FeatureCollection whose features carry ``properties.adcode`` and
        ``name`` and a Polygon/MultiPolygon (Aliyun DataV GeoAtlas
        ``*_full.json``). Boundaries are converted to WGS-84 and stored as
        WKB; a feature whose area is not registered yet creates it with the
        feature's name. Read whole.

Datum (``--crs``)
    The datum of the file's coordinates. GeoJSON without ``--crs`` is taken
    as WGS-84 (RFC 7946) unless its features look like DataV/AutoNavi
    (``adcode`` plus ``acroutes``/``level``/``center``), which are GCJ-02; the
    summary says which was assumed. The datum is recorded with each boundary
    and in the import log.

Every input file may start with a UTF-8 byte-order mark.

Outcome
    An :class:`ImportSummary`: rows read, areas created / updated, boundaries
    stored, each rejected row with its line (or JSON location) and reason,
    and warnings (e.g. an orphan whose parent is not registered — the
    hierarchy is by prefix, so it is still imported). Re-importing a file
    is idempotent: areas are upserted by code. Each import bumps
    ``areas:version`` so running registries reload.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import shapely
import structlog
from redis.asyncio import Redis

from warnd.adcodes import ancestor_codes, normalise_code, parent_code
from warnd.errors import ConfigError
from warnd.geo import Datum, geojson_geometry, to_wgs84
from warnd.imported_files import changed_files
from warnd.keys import Keys

log = structlog.get_logger("warnd.area_import")

MAX_LISTED = 1000
"""Rejections and warnings listed in a summary (all are counted)."""
BATCH = 2000
IMPORT_LOG_LENGTH = 200
NATIONAL_ADCODE = "100000"
"""DataV's code for the whole country (a parent, never an area)."""


class AreaFormat(StrEnum):
    AUTO = "auto"
    CSV = "csv"
    NDJSON = "ndjson"
    JSON = "json"
    GEOJSON = "geojson"


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One rejected row or warning: where (line, or JSON location), which code, why."""

    loc: str
    reason: str
    code: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loc": self.loc, "reason": self.reason}
        if self.line is not None:
            out["line"] = self.line
        if self.code is not None:
            out["code"] = self.code
        return out

    def __str__(self) -> str:
        code = f" {self.code}" if self.code else ""
        return f"{self.loc}{code}: {self.reason}"


@dataclass(slots=True)
class ImportSummary:
    file: str
    format: AreaFormat
    datum: Datum | None
    rows: int = 0
    created: int = 0
    updated: int = 0
    boundaries: int = 0
    rejected_count: int = 0
    warning_count: int = 0
    rejected: list[RowIssue] = field(default_factory=list)
    warnings: list[RowIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    version: int = 0

    @property
    def accepted(self) -> int:
        return self.created + self.updated

    def reject(self, issue: RowIssue) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_LISTED:
            self.rejected.append(issue)

    def warn(self, issue: RowIssue) -> None:
        self.warning_count += 1
        if len(self.warnings) < MAX_LISTED:
            self.warnings.append(issue)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "format": self.format.value,
            "datum": self.datum.value if self.datum else None,
            "rows": self.rows,
            "accepted": self.accepted,
            "created": self.created,
            "updated": self.updated,
            "boundaries": self.boundaries,
            "rejected_count": self.rejected_count,
            "warning_count": self.warning_count,
            "rejected": [r.as_dict() for r in self.rejected],
            "warnings": [w.as_dict() for w in self.warnings],
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "version": self.version,
        }


@dataclass(slots=True)
class _Row:
    loc: str
    line: int | None
    code: str
    name: str
    geometry: Any = None  # shapely geometry in the file's datum, GeoJSON only


# ------------------------------------------------------------ readers

_CODE_COLUMNS = ("code", "adcode", "代码", "区划代码", "行政区划代码")
_NAME_COLUMNS = ("name", "名称", "区划名称")
# Ancestor columns seen in the NBS lists and JSON trees.
_ANCESTOR_COLUMNS = (
    "provincecode",
    "citycode",
    "areacode",
    "streetcode",
    "parent",
    "parentcode",
    "pcode",
)


@functools.lru_cache(maxsize=64)
def _columns(keys: tuple[str, ...]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(code key, name key, ancestor keys) of one record shape, resolved once."""
    lowered = {k: k.strip().lower() for k in keys}
    code = next((k for k in keys if lowered[k] in _CODE_COLUMNS), None)
    name = next((k for k in keys if lowered[k] in _NAME_COLUMNS), None)
    return code, name, tuple(k for k in keys if lowered[k] in _ANCESTOR_COLUMNS)


def _code_text(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueError(f"code {value!r} is not a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"code {value!r} is not a string or integer")


def _check_row(
    raw: dict[str, Any], loc: str, line: int | None, summary: ImportSummary
) -> _Row | None:
    """Validate one code-list record; reject it (with the reason) or return it."""
    code_key, name_key, ancestor_keys = _columns(tuple(k for k in raw if isinstance(k, str)))
    raw_code = raw.get(code_key) if code_key is not None else None
    if raw_code is None or raw_code == "":
        summary.reject(RowIssue(loc, "no code (expected a 'code' column/field)", line=line))
        return None
    try:
        code = normalise_code(_code_text(raw_code))
    except ValueError as exc:
        summary.reject(RowIssue(loc, str(exc), code=str(raw_code), line=line))
        return None
    name = raw.get(name_key) if name_key is not None else None
    if not isinstance(name, str) or not name.strip():
        summary.reject(RowIssue(loc, "name is empty", code=code, line=line))
        return None
    for key in ancestor_keys:
        value = raw[key]
        if value in (None, "", 0, "0"):
            continue
        try:
            anc = _code_text(value)
            if anc == NATIONAL_ADCODE:
                continue
            anc = normalise_code(anc)
        except ValueError as exc:
            summary.reject(RowIssue(loc, f"{key}: {exc}", code=code, line=line))
            return None
        if anc == code:
            # 441900 东莞市 (a city without counties) in a county list, or
            # 350527000 金门县 in a township list: the padded row names the
            # same area as the level above it.
            summary.warn(
                RowIssue(
                    loc,
                    f"{raw_code} is the same area as its {key} {anc} (zero padding)",
                    code=code,
                    line=line,
                )
            )
            continue
        # Canonical codes: a shorter canonical prefix is an ancestor.
        if not (len(anc) < len(code) and code.startswith(anc)):
            summary.reject(
                RowIssue(
                    loc,
                    f"{key} {anc} is not an ancestor of {code}: codes nest by prefix",
                    code=code,
                    line=line,
                )
            )
            return None
    return _Row(loc=loc, line=line, code=code, name=name.strip())


def _read_csv(path: Path, summary: ImportSummary) -> Iterator[_Row]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        dialect: type[csv.Dialect] | csv.Dialect = csv.excel
        sample = fh.read(4096)
        fh.seek(0)
        if "\t" in sample.partition("\n")[0] and "," not in sample.partition("\n")[0]:
            dialect = csv.excel_tab
        reader = csv.reader(fh, dialect)
        try:
            header = next(reader)
        except StopIteration:
            summary.notes.append("the file is empty")
            return
        keys = [h.strip() for h in header]
        lowered = {k.lower() for k in keys}
        if not lowered & set(_CODE_COLUMNS) or not lowered & set(_NAME_COLUMNS):
            raise ConfigError(
                f"{path}: line 1: the header {header!r} needs a 'code' and a 'name' column"
            )
        for values in reader:
            line = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            summary.rows += 1
            loc = f"line {line}"
            if len(values) != len(keys):
                summary.reject(
                    RowIssue(loc, f"{len(values)} fields, the header has {len(keys)}", line=line)
                )
                continue
            row = _check_row(dict(zip(keys, values, strict=True)), loc, line, summary)
            if row is not None:
                yield row


def _read_ndjson(path: Path, summary: ImportSummary) -> Iterator[_Row]:
    with path.open(encoding="utf-8-sig") as fh:
        for line_no, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            summary.rows += 1
            loc = f"line {line_no}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                summary.reject(RowIssue(loc, f"not JSON: {exc.msg}", line=line_no))
                continue
            if not isinstance(obj, dict):
                summary.reject(RowIssue(loc, "not a JSON object", line=line_no))
                continue
            row = _check_row(obj, loc, line_no, summary)
            if row is not None:
                yield row


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8: {exc}") from None


def _read_json_tree(doc: Any, summary: ImportSummary) -> Iterator[_Row]:
    """An array of records, or nested records with ``children``, depth first."""
    if isinstance(doc, dict):
        doc = [doc]
    if not isinstance(doc, list):
        raise ConfigError("a JSON code list must be an array of objects")
    stack: list[tuple[str, Any]] = [(f"/{i}", obj) for i, obj in reversed(list(enumerate(doc)))]
    while stack:
        loc, obj = stack.pop()
        summary.rows += 1
        if not isinstance(obj, dict):
            summary.reject(RowIssue(loc, "not a JSON object"))
            continue
        row = _check_row(obj, loc, None, summary)
        if row is not None:
            yield row
        kids = obj.get("children")
        if isinstance(kids, list):
            stack.extend((f"{loc}/children/{i}", k) for i, k in reversed(list(enumerate(kids))))


def _looks_datav(doc: dict[str, Any]) -> bool:
    for ft in doc.get("features", [])[:5]:
        props = ft.get("properties") if isinstance(ft, dict) else None
        if (
            isinstance(props, dict)
            and "adcode" in props
            and {"acroutes", "center", "level", "childrenNum"} & props.keys()
        ):
            return True
    return False


def _read_geojson(doc: Any, summary: ImportSummary) -> Iterator[_Row]:
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise ConfigError("GeoJSON must be a FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list):
        raise ConfigError("GeoJSON FeatureCollection has no 'features' array")
    for i, ft in enumerate(features):
        loc = f"/features/{i}"
        summary.rows += 1
        props = ft.get("properties") if isinstance(ft, dict) else None
        if not isinstance(props, dict):
            summary.reject(RowIssue(loc, "feature has no properties"))
            continue
        raw_code = props.get("adcode", props.get("code"))
        try:
            code = normalise_code(_code_text(raw_code))
        except ValueError as exc:
            summary.reject(RowIssue(loc, f"adcode: {exc}", code=str(raw_code)))
            continue
        name = props.get("name")
        if not isinstance(name, str) or not name.strip():
            summary.reject(RowIssue(loc, "name is empty", code=code))
            continue
        parent = props.get("parent")
        if isinstance(parent, dict) and parent.get("adcode") not in (None, ""):
            try:
                ptext = _code_text(parent["adcode"])
                if ptext != NATIONAL_ADCODE and normalise_code(ptext) not in ancestor_codes(code):
                    summary.reject(
                        RowIssue(
                            loc,
                            f"parent adcode {ptext} is not an ancestor of {code}",
                            code=code,
                        )
                    )
                    continue
            except ValueError as exc:
                summary.reject(RowIssue(loc, f"parent adcode: {exc}", code=code))
                continue
        geometry = ft.get("geometry")
        if not isinstance(geometry, dict):
            summary.reject(RowIssue(loc, "feature has no geometry", code=code))
            continue
        try:
            geom = geojson_geometry(geometry)
        except (ValueError, TypeError) as exc:
            summary.reject(RowIssue(loc, f"geometry: {exc}", code=code))
            continue
        yield _Row(loc=loc, line=None, code=code, name=name.strip(), geometry=geom)


def detect_format(path: Path) -> AreaFormat:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return AreaFormat.CSV
    if suffix in (".ndjson", ".jsonl"):
        return AreaFormat.NDJSON
    if suffix == ".geojson":
        return AreaFormat.GEOJSON
    with path.open("rb") as fh:
        head = fh.read(4096).decode("utf-8-sig", errors="replace").lstrip()
    if head.startswith("{") and '"FeatureCollection"' in head:
        return AreaFormat.GEOJSON
    if head.startswith(("[", "{")):
        return AreaFormat.JSON
    return AreaFormat.CSV


# ------------------------------------------------------------- writing


class _Writer:
    """Batched upserts of area records and boundaries."""

    def __init__(self, redis: Redis, keys: Keys, summary: ImportSummary, source: str) -> None:
        self._redis = redis
        self._keys = keys
        self._summary = summary
        self._source = source
        self._areas: list[_Row] = []
        self._seen: dict[str, str] = {}
        """code → where it was first seen in this file (duplicates warn)."""
        self.parents_needed: dict[str, tuple[str, str, int | None]] = {}

    async def add(self, row: _Row, datum: Datum | None) -> None:
        first = self._seen.get(row.code)
        if first is not None:
            self._summary.warn(
                RowIssue(
                    row.loc,
                    f"code repeated (first at {first}); the later row wins",
                    code=row.code,
                    line=row.line,
                )
            )
        else:
            self._seen[row.code] = row.loc
        parent = parent_code(row.code)
        if parent is not None and parent not in self._seen:
            self.parents_needed.setdefault(row.code, (parent, row.loc, row.line))
        if row.geometry is not None and datum is not None:
            row.geometry = to_wgs84(row.geometry, datum)
        self._areas.append(row)
        if len(self._areas) >= BATCH:
            await self.flush(datum)

    async def flush(self, datum: Datum | None) -> None:
        if not self._areas:
            return
        rows, self._areas = self._areas, []
        pipe = self._redis.pipeline(transaction=False)
        boundary_rows = [r for r in rows if r.geometry is not None]
        for r in rows:
            record = json.dumps({"name": r.name, "source": self._source}, ensure_ascii=False)
            if r.geometry is None:
                pipe.hset(self._keys.areas, r.code, record)
            else:
                # A boundary file names areas but does not own their names.
                pipe.hsetnx(self._keys.areas, r.code, record)
        if boundary_rows:
            hexes = shapely.to_wkb([r.geometry for r in boundary_rows], hex=True)
            tag = datum.value if datum else Datum.WGS84.value
            pipe.hset(
                self._keys.area_boundaries,
                mapping={r.code: f"{tag}|{h}" for r, h in zip(boundary_rows, hexes, strict=True)},
            )
        results = await pipe.execute()
        for created in results[: len(rows)]:
            if created:
                self._summary.created += 1
            else:
                self._summary.updated += 1
        self._summary.boundaries += len(boundary_rows)


async def _warn_orphans(redis: Redis, keys: Keys, writer: _Writer, summary: ImportSummary) -> None:
    """Warn about rows whose parent code is neither in the file nor registered."""
    pending = {
        code: info for code, info in writer.parents_needed.items() if info[0] not in writer._seen
    }
    if not pending:
        return
    parents = sorted({info[0] for info in pending.values()})
    pipe = redis.pipeline(transaction=False)
    for p in parents:
        pipe.hexists(keys.areas, p)
    exists = dict(zip(parents, await pipe.execute(), strict=True))
    for code, (parent, loc, line) in pending.items():
        if exists[parent]:
            continue
        known = next((a for a in ancestor_codes(parent) if a in writer._seen), None)
        tail = f"; it is placed under {known}" if known else ""
        summary.warn(
            RowIssue(
                loc,
                f"parent {parent} is not registered (hierarchy by prefix still applies{tail})",
                code=code,
                line=line,
            )
        )


async def import_file(
    redis: Redis,
    keys: Keys,
    path: Path,
    *,
    fmt: AreaFormat = AreaFormat.AUTO,
    datum: Datum | None = None,
) -> ImportSummary:
    """Import one code list or boundary file (see the module doc); upserts by code.

    Raises :class:`~warnd.errors.ConfigError` when the file as a whole
    cannot be read (missing, not JSON, no header); bad rows are listed in
    the summary instead and the good ones are imported.
    """
    started = time.perf_counter()
    if not await asyncio.to_thread(path.is_file):
        raise ConfigError(f"{path}: no such file")
    if fmt is AreaFormat.AUTO:
        fmt = detect_format(path)
    summary = ImportSummary(file=str(path), format=fmt, datum=datum)
    writer = _Writer(redis, keys, summary, path.name)
    rows: Iterator[_Row]
    try:
        if fmt is AreaFormat.CSV:
            rows = _read_csv(path, summary)
        elif fmt is AreaFormat.NDJSON:
            rows = _read_ndjson(path, summary)
        elif fmt is AreaFormat.JSON:
            rows = _read_json_tree(_load_json(path), summary)
        else:
            doc = _load_json(path)
            if datum is None:
                datum = Datum.GCJ02 if _looks_datav(doc) else Datum.WGS84
                summary.datum = datum
                summary.notes.append(
                    f"no --crs given: assumed {datum.value}"
                    + (
                        " (DataV/AutoNavi boundaries are GCJ-02)"
                        if datum is Datum.GCJ02
                        else " (GeoJSON default)"
                    )
                )
            rows = _read_geojson(doc, summary)
        for row in rows:
            await writer.add(row, datum)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: not readable as CSV: {exc}") from None
    await writer.flush(datum)
    await _warn_orphans(redis, keys, writer, summary)
    summary.version = int(await redis.incr(keys.areas_version))
    summary.seconds = time.perf_counter() - started
    entry = summary.as_dict()
    entry["at"] = time.time()
    entry["rejected"] = entry["rejected"][:20]
    entry["warnings"] = entry["warnings"][:20]
    pipe = redis.pipeline(transaction=False)
    pipe.lpush(keys.area_imports, json.dumps(entry, ensure_ascii=False))
    pipe.ltrim(keys.area_imports, 0, IMPORT_LOG_LENGTH - 1)
    await pipe.execute()
    log.info(
        "areas.imported",
        file=str(path),
        format=fmt.value,
        datum=summary.datum.value if summary.datum else None,
        rows=summary.rows,
        accepted=summary.accepted,
        boundaries=summary.boundaries,
        rejected=summary.rejected_count,
        warnings=summary.warning_count,
        seconds=round(summary.seconds, 3),
    )
    return summary


async def import_configured(
    redis: Redis, keys: Keys, files: list[Path], *, force: bool = False
) -> list[ImportSummary]:
    """Import the files named by ``[areas] import``, skipping unchanged ones.

    A file is skipped when its SHA-256 equals the one recorded at its last
    import, so restarts do not redo the work.
    """
    done: list[ImportSummary] = []
    digests = keys.area_import_digests
    async for f in changed_files(redis, digests, files, setting="[areas] import", force=force):
        done.append(await import_file(redis, keys, f.path))
        await f.mark_imported(redis, digests)
    return done
