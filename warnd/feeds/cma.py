"""Chinese met-warning feeds (JSON or XML) → CAP alerts.

The weather.com.cn national warning feed lists the signals in force, one
``Station`` per signal: the issuing station (``stationName``, ``areaId``),
``signalType`` and ``signalLevel`` (names such as 暴雨 / 黄色 in the public
snapshot, or the 2-digit CMA codes 01 台风 … 14 道路结冰 and level codes
01 blue … 04 red), ``issueTime``, ``relieveTime`` (when it lapses unless
renewed) and ``issueContent``. Other feeds differ only in field names, so
a :class:`~warnd.feeds.config.CmaMapping` in the configuration adapts one.

Such feeds carry no CAP identifier. An item's identifier is derived from
what makes it that signal — area, signal type, level and issue time — so
the same signal read again (next poll, another feed, after a restart) gets
the same identifier and deduplicates on sender + identifier. A relieve
(解除) item becomes a CAP Cancel of the signal it ends.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from lxml import etree
from pydantic import ValidationError

from warnd.cap._safe import parse_safely
from warnd.errors import AlertInvalid, FieldError, MalformedDocument, field_errors
from warnd.feeds.config import FeedKind, FeedSettings
from warnd.model import (
    Alert,
    Area,
    Certainty,
    Info,
    Level,
    MsgType,
    Reference,
    ResponseType,
    Scope,
    Status,
    Urgency,
    ValuePair,
    is_cap_token,
)
from warnd.taxonomy import Hazard, Taxonomy

GEOCODE_NAME = "GB/T 2260"

_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
_GUIDE = re.compile(r"防御指南\s*[:：]?\s*")
_SOURCE_NOTE = re.compile(r"[（(]\s*预警信息来源\s*[:：][^）)]*[）)]\s*$")
_FIRST_CLAUSE = re.compile(r"^[^：:，,。；;]*")

Item = dict[str, Any]


# ------------------------------------------------------------------ items


def _walk(node: Any, parts: list[str]) -> Iterator[Any]:
    if isinstance(node, list):
        for child in node:
            yield from _walk(child, parts)
        return
    if not parts:
        yield node
        return
    head, rest = parts[0], parts[1:]
    if not isinstance(node, dict):
        return
    if head == "*":
        for value in node.values():
            yield from _walk(value, rest)
    elif head in node:
        yield from _walk(node[head], rest)


def _xml_item(el: etree._Element) -> Item:
    item: Item = {str(k): str(v) for k, v in el.attrib.items()}
    for child in el:
        if isinstance(child.tag, str):
            item.setdefault(etree.QName(child).localname, (child.text or "").strip())
    return item


def extract_items(body: bytes, kind: FeedKind, path: str, *, max_bytes: int) -> list[Item]:
    """The items of a met-warning document; MalformedDocument if it is not one.

    An empty list is a valid answer: no signal is in force.
    """
    if kind is FeedKind.CMA_XML:
        root = parse_safely(body, max_bytes=max_bytes).getroot()
        name = path.split(".")[-1]
        return [
            _xml_item(el) for el in root.iter() if isinstance(el.tag, str) and _local(el) == name
        ]
    try:
        doc = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        head = body[:200].decode("utf-8", "replace").strip().lower()
        what = "an HTML page" if head.startswith(("<!doctype html", "<html")) else "JSON"
        raise MalformedDocument(
            f"not a met-warning JSON document: {'it is ' + what if what != 'JSON' else exc}",
            errors=[FieldError(loc="/", msg=str(exc))],
        ) from None
    parts = path.split(".")
    if isinstance(doc, dict) and parts[0] not in doc and parts[0] != "*":
        raise MalformedDocument(
            f"not the expected met-warning document: no {parts[0]!r} at the top"
            f" (the feed's items path is {path!r})",
            errors=[FieldError(loc="/", msg=f"keys: {', '.join(list(doc)[:10])}")],
        )
    return [i for i in _walk(doc, parts) if isinstance(i, dict)]


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _get(item: Item, path: str | None) -> str:
    if not path:
        return ""
    node: Any = item
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    return "" if node is None else str(node).strip()


# ----------------------------------------------------------------- signals


@dataclass(frozen=True, slots=True)
class Signal:
    """One met signal as the feed states it, mapped onto warnd's terms."""

    area_key: str
    area_desc: str
    area_code: str | None
    hazard: Hazard
    level: Level
    issued: datetime
    expires: datetime | None
    headline: str
    description: str
    instruction: str | None
    relieve: bool
    upstream_id: str | None

    @property
    def slot(self) -> str:
        """The place this signal occupies: one current signal per area and hazard."""
        return f"{self.area_key}|{self.hazard.code}"

    @property
    def code(self) -> str:
        """The alarm code: CMA type + level (``0203``), or hazard + level."""
        return f"{self.hazard.cma_code or self.hazard.code}{self.level.rank:02d}"

    def identifier(self) -> str:
        if self.upstream_id:
            return self.upstream_id
        stamp = self.issued.strftime("%Y%m%d%H%M%S")
        suffix = "-relieve" if self.relieve else ""
        return f"{self.area_key}-{self.code}-{stamp}{suffix}"


def split_guide(text: str) -> tuple[str, str | None]:
    """Content → (description, 防御指南 instruction or None).

    The source note that closes weather.com.cn items (（预警信息来源：…）)
    stays with the description.
    """
    m = _GUIDE.search(text)
    if m is None:
        return text, None
    description = text[: m.start()].strip()
    guide = text[m.end() :].strip()
    note = _SOURCE_NOTE.search(guide)
    if note is not None:
        description = f"{description}{note.group(0).strip()}"
        guide = guide[: note.start()].strip()
    return description or text, guide or None


class CmaMapper:
    """Reads items of one feed with its mapping, hazard and level tables."""

    def __init__(self, feed: FeedSettings, taxonomy: Taxonomy) -> None:
        self.feed = feed
        self.map = feed.cma_mapping
        self.taxonomy = taxonomy
        sign, hh, mm = self.map.utc_offset[0], self.map.utc_offset[1:3], self.map.utc_offset[4:]
        minutes = int(hh) * 60 + int(mm)
        self._tz = timezone(timedelta(minutes=minutes if sign == "+" else -minutes))

    def signal(self, item: Item) -> Signal:
        """The item as a Signal; AlertInvalid listing every field it cannot read."""
        m = self.map
        errors: list[FieldError] = []

        def bad(field: str | None, msg: str) -> None:
            errors.append(FieldError(loc=f"/{field or '?'}", msg=msg))

        alarm = _get(item, m.alarm_code)
        if not re.fullmatch(r"\d{4}", alarm):
            alarm = ""
        type_text = _get(item, m.signal_type) or alarm[:2]
        level_text = _get(item, m.signal_level) or alarm[2:]
        hazard = self._hazard(type_text, alarm)
        if hazard is None:
            bad(m.signal_type, f"unknown signal type {type_text or alarm!r}")
        level = self._level(level_text, alarm)
        if level is None and self.feed.level is not None:
            level = self.feed.level
        if level is None:
            bad(m.signal_level, f"unknown signal level {level_text!r} (use 01-04 or a colour)")
        issued = self._time(_get(item, m.issue_time))
        if issued is None:
            bad(m.issue_time, f"issue time {_get(item, m.issue_time)!r} is not a time")
        station = _get(item, m.station)
        parts = [_get(item, m.province), _get(item, m.city), station]
        area_desc = "".join(dict.fromkeys(p for p in parts if p))
        if not area_desc:
            bad(m.station, "the item names no station or area")
        if errors or hazard is None or level is None or issued is None:
            raise AlertInvalid(
                "met-warning item cannot be read: " + "; ".join(e.msg for e in errors),
                errors=errors,
            )
        expires = self._time(_get(item, m.expire_time))
        if expires is not None and expires <= issued:
            expires = None
        area_id = _get(item, m.area_id)
        code = _get(item, m.area_code)
        if not (code.isdigit() and 2 <= len(code) <= 12):
            code = self.feed.area_codes.get(area_id) or self.feed.area_codes.get(station) or ""
        if _SAFE_KEY.match(area_id):
            area_key = area_id
        elif code:
            area_key = code
        else:
            area_key = hashlib.sha256(area_desc.encode()).hexdigest()[:12]
        content = _get(item, m.content)
        relieve = self._is_relieve(item, content, type_text)
        headline = _get(item, m.headline) or (
            f"{station or area_desc}{'解除' if relieve else '发布'}"
            f"{hazard.name(self.feed.language)}{level.zh}预警信号"
        )
        description, instruction = split_guide(content) if content else (headline, None)
        upstream = _get(item, m.id)
        if upstream and not is_cap_token(upstream):
            upstream = hashlib.sha256(upstream.encode()).hexdigest()[:32]
        return Signal(
            area_key=area_key,
            area_desc=area_desc,
            area_code=code or None,
            hazard=hazard,
            level=level,
            issued=issued,
            expires=expires,
            headline=headline,
            description=description,
            instruction=instruction,
            relieve=relieve,
            upstream_id=upstream or None,
        )

    def _hazard(self, text: str, alarm: str) -> Hazard | None:
        for key in (text, text.removeprefix("解除")):
            code = self.feed.hazards.get(key)
            if code is not None and code in self.taxonomy:
                return self.taxonomy.get(code)
        candidates = [text]
        if alarm and alarm[:2].isdigit():
            candidates.append(alarm[:2])
        for value in candidates:
            if re.fullmatch(r"\d{2}|\d{4}", value):
                try:
                    return self.taxonomy.by_cma_code(value)
                except KeyError:
                    continue
        if text and not text.isdigit():
            found = self.taxonomy.match_event(text)
            if found is not None:
                return found
        if self.feed.hazard is not None and self.feed.hazard in self.taxonomy:
            return self.taxonomy.get(self.feed.hazard)
        return None

    def _level(self, text: str, alarm: str) -> Level | None:
        if text in self.feed.levels:
            return self.feed.levels[text]
        for value in (text, alarm[2:] if len(alarm) == 4 else ""):
            if value:
                try:
                    return Level.parse(value)
                except ValueError:
                    continue
        return None

    def _time(self, text: str) -> datetime | None:
        if not text:
            return None
        for fmt in self.map.time_formats:
            try:
                return datetime.strptime(text, fmt).replace(tzinfo=self._tz)
            except ValueError:
                continue
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
        return value if value.tzinfo is not None else value.replace(tzinfo=self._tz)

    def _is_relieve(self, item: Item, content: str, type_text: str) -> bool:
        if self.map.relieve:
            value = _get(item, self.map.relieve).casefold()
            return bool(value) and value in {v.casefold() for v in self.map.relieve_values}
        first = _FIRST_CLAUSE.match(content)
        return type_text.startswith("解除") or ("解除" in first.group(0) if first else False)


def build_alert(
    signal: Signal,
    feed: FeedSettings,
    *,
    msg_type: MsgType = MsgType.ALERT,
    references: list[Reference] | None = None,
) -> Alert:
    """The CAP alert for a signal (an Update or Cancel when ``references`` say so)."""
    assert feed.sender is not None  # noqa: S101 - FeedSettings requires it for cma kinds
    language = feed.language
    name = signal.hazard.name(language)
    zh = language.lower().startswith("zh")
    event = f"{name}{signal.level.zh}预警" if zh else f"{name} {signal.level.value} warning"
    geocodes = (
        [ValuePair(value_name=GEOCODE_NAME, value=signal.area_code)] if signal.area_code else []
    )
    event_codes = [ValuePair(value_name="CMA", value=signal.code)] if signal.hazard.cma_code else []
    try:
        info = Info(
            language=language,
            categories=[signal.hazard.category],
            event=event,
            response_types=[ResponseType.ALL_CLEAR] if signal.relieve else [],
            urgency=(
                Urgency.PAST
                if signal.relieve
                else Urgency.IMMEDIATE
                if signal.level.rank >= 3
                else Urgency.EXPECTED
            ),
            severity=signal.level.severity,
            certainty=Certainty.OBSERVED if signal.relieve else Certainty.LIKELY,
            event_codes=event_codes,
            effective=signal.issued,
            expires=None if signal.relieve else signal.expires,
            sender_name=signal.area_desc,
            headline=signal.headline,
            description=signal.description,
            instruction=signal.instruction,
            areas=[Area(area_desc=signal.area_desc, geocodes=geocodes)],
            hazard=signal.hazard.code,
            level=signal.level,
        )
        return Alert(
            identifier=signal.identifier(),
            sender=feed.sender,
            sent=signal.issued,
            status=Status.ACTUAL,
            msg_type=msg_type,
            scope=Scope.PUBLIC,
            references=references or [],
            infos=[info],
        )
    except ValidationError as exc:
        raise AlertInvalid(
            "met-warning item does not make a valid alert", errors=field_errors(exc)
        ) from None
