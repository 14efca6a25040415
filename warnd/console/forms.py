"""The console's forms: what the officer typed, turned into the API's JSON alert.

A form never builds an :class:`~warnd.model.Alert` itself: it produces the
same JSON body an operator would POST to ``/v1/alerts`` (or to
``/update``), which then goes through :func:`warnd.jsonform.alert_from_json`
and ingest exactly as the API's does. What is checked here is only what the
JSON cannot say (a date typed without a zone, a polygon that is not
``lat,lon`` pairs); the rest of the validation is the API's, and its errors
are mapped back onto the form's fields.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from multidict import MultiDictProxy

from warnd.adcodes import normalise_code
from warnd.areas import AreaRegistry
from warnd.errors import AlertInvalid, ConfigError, FieldError
from warnd.guidelines import language_chain
from warnd.identifiers import beijing_now
from warnd.limits import LengthUnit, MessageLimits
from warnd.model import Alert, Area, Info, Level
from warnd.render import Renderer
from warnd.settings import IssuerSettings
from warnd.store import AlertRecord
from warnd.taxonomy import Taxonomy

LOCAL_FORMAT = "%Y-%m-%dT%H:%M"
"""``<input type=datetime-local>``: no zone; read in ``[render] timezone``."""

INFO_LANGUAGES = ("zh-CN", "en-US")
STATUSES = ("Actual", "Exercise")
_CODE_SPLIT = re.compile(r"[\s,，、;；]+")


class FormInvalid(AlertInvalid):
    """The form cannot even be turned into an alert body (locations are form fields)."""


def local_input(when: datetime, zone: ZoneInfo) -> str:
    return when.astimezone(zone).strftime(LOCAL_FORMAT)


def _parse_local(text: str, name: str, zone: ZoneInfo, errors: list[FieldError]) -> str | None:
    text = text.strip()
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        errors.append(FieldError(name, f"{text!r} is not a date and time (YYYY-MM-DDTHH:MM)"))
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.isoformat()


def parse_polygons(text: str) -> tuple[list[list[tuple[float, float]]], list[FieldError]]:
    """CAP polygons, one per line: ``lat,lon lat,lon …`` (WGS-84), as the API's points."""
    polygons: list[list[tuple[float, float]]] = []
    errors: list[FieldError] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        points: list[tuple[float, float]] = []
        for i, pair in enumerate(line.split(), 1):
            lat_text, sep, lon_text = pair.partition(",")
            try:
                if not sep:
                    raise ValueError
                points.append((float(lat_text), float(lon_text)))
            except ValueError:
                errors.append(
                    FieldError("polygon", f"line {n}, point {i}: {pair!r} is not 'lat,lon'")
                )
        polygons.append(points)
    return polygons, errors


@dataclass(slots=True)
class IssueForm:
    """The issue-a-warning form, as typed (kept whole to show it again)."""

    hazard: str = "rainstorm"
    level: str = "blue"
    language: str = "zh-CN"
    status: str = "Actual"
    areas: list[str] = field(default_factory=list)
    codes: str = ""
    polygon: str = ""
    polygon_desc: str = ""
    onset: str = ""
    expires: str = ""
    headline: str = ""
    description: str = ""
    instruction: str = ""
    form_id: str = ""
    previewed: str = ""

    @classmethod
    def from_post(cls, data: MultiDictProxy[Any]) -> IssueForm:
        form = cls()
        for f in fields(cls):
            if f.name == "areas":
                form.areas = [str(v) for v in data.getall("areas", []) if isinstance(v, str)]
            elif isinstance(data.get(f.name), str):
                setattr(form, f.name, str(data[f.name]).replace("\r\n", "\n"))
        return form

    def area_codes(self, errors: list[FieldError]) -> list[str]:
        out: list[str] = []
        for raw in [*self.areas, *_CODE_SPLIT.split(self.codes)]:
            if not raw.strip():
                continue
            try:
                out.append(normalise_code(raw))
            except ValueError as exc:
                errors.append(FieldError("codes", str(exc)))
        return list(dict.fromkeys(out))

    def body(self, registry: AreaRegistry, zone: ZoneInfo) -> dict[str, Any]:
        """The JSON alert of this form, as ``POST /v1/alerts`` takes it.

        Raises :class:`FormInvalid` for what only the form can get wrong.
        """
        errors: list[FieldError] = []
        areas: list[dict[str, Any]] = []
        for code in self.area_codes(errors):
            known = registry.get(code)
            scheme = "GB/T 2260" if len(code) <= 6 else "统计用区划代码"
            areas.append(
                {
                    "area_desc": known.name if known else code,
                    "geocodes": [{"value_name": scheme, "value": code}],
                }
            )
        polygons, problems = parse_polygons(self.polygon)
        errors += problems
        if polygons and not problems:
            desc = self.polygon_desc.strip() or (
                "多边形区域" if self.language.startswith("zh") else "Polygon area"
            )
            areas.append({"area_desc": desc, "polygons": [{"points": p} for p in polygons]})
        if not areas and not errors:
            errors.append(FieldError("areas", "choose at least one area or paste a polygon"))
        info: dict[str, Any] = {
            "hazard": self.hazard,
            "level": self.level,
            "language": self.language,
            "areas": areas,
        }
        for name in ("onset", "expires"):
            value = _parse_local(getattr(self, name), name, zone, errors)
            if value is not None:
                info[name] = value
        for name in ("headline", "description", "instruction"):
            text = getattr(self, name).strip()
            if text:
                info[name] = text
        if errors:
            raise FormInvalid("the form is not complete", errors=errors)
        return {"status": self.status, "infos": [info]}

    def digest(self, body: dict[str, Any]) -> str:
        """What the preview showed: sending anything else needs a new preview."""
        text = json.dumps(body, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(slots=True)
class UpdateForm:
    """The Update form of an alert page: the first info block's changeable parts."""

    level: str = ""
    headline: str = ""
    description: str = ""
    instruction: str = ""
    expires: str = ""

    @classmethod
    def of(cls, rec: AlertRecord, zone: ZoneInfo) -> UpdateForm:
        info = rec.alert.infos[0] if rec.alert.infos else None
        if info is None:
            return cls()
        return cls(
            level=info.level.value if info.level else "",
            headline=info.headline or "",
            description=info.description or "",
            instruction=info.instruction or "",
            expires=local_input(info.expires, zone) if info.expires else "",
        )

    @classmethod
    def from_post(cls, data: MultiDictProxy[Any]) -> UpdateForm:
        form = cls()
        for f in fields(cls):
            if isinstance(data.get(f.name), str):
                setattr(form, f.name, str(data[f.name]).replace("\r\n", "\n"))
        return form

    def body(self, rec: AlertRecord, zone: ZoneInfo) -> dict[str, Any]:
        """The JSON alert of ``POST /v1/alerts/{id}/update``: the record's content
        with this form's changes (other info blocks as they were)."""
        errors: list[FieldError] = []
        if not rec.alert.infos:
            raise FormInvalid(
                "this message has no content to update", errors=[FieldError("level", "no info")]
            )
        first, *rest = rec.alert.infos
        info: dict[str, Any] = {
            "hazard": first.hazard,
            "language": first.language,
            "areas": [a.model_dump(mode="json", exclude_none=True) for a in first.areas],
        }
        if self.level:
            info["level"] = self.level
        if first.onset is not None:
            info["onset"] = first.onset.isoformat()
        expires = _parse_local(self.expires, "expires", zone, errors)
        if expires is not None:
            info["expires"] = expires
        for name in ("headline", "description", "instruction"):
            text = getattr(self, name).strip()
            if text:
                info[name] = text
        if errors:
            raise FormInvalid("the form is not complete", errors=errors)
        others = [i.model_dump(mode="json", exclude_none=True) for i in rest]
        return {"status": rec.alert.status.value, "infos": [info, *others]}


_FIELD_OF_LOC = (
    (re.compile(r"^/infos/\d+/areas/\d+/(polygons|circles)"), "polygon"),
    (re.compile(r"^/infos/\d+/areas"), "areas"),
    (re.compile(r"^/infos/\d+/(\w+)"), ""),
)


def field_of(loc: str) -> str | None:
    """The form field an error location is about (API paths or form names)."""
    if not loc.startswith("/"):
        return loc or None
    for pattern, name in _FIELD_OF_LOC:
        m = pattern.match(loc)
        if m:
            return name or m.group(1)
    return None


def default_times(zone: ZoneInfo, hours: int = 6) -> tuple[str, str]:
    now = datetime.now(zone).replace(second=0, microsecond=0)
    return now.strftime(LOCAL_FORMAT), (now + timedelta(hours=hours)).strftime(LOCAL_FORMAT)


@dataclass(frozen=True, slots=True)
class Prefill:
    headline: str
    description: str
    guide: tuple[str, ...]
    """The 防御指南 items messages will carry (templates add them on their own)."""


def prefill(
    renderer: Renderer | None,
    taxonomy: Taxonomy,
    issuer: IssuerSettings,
    hazard_code: str,
    level_code: str,
    language: str,
    area_names: list[str],
) -> Prefill | None:
    """Headline from the message templates (the email subject: 「…发布暴雨红色预警」)
    and description from the guideline table (the signal's criterion, 标准)."""
    if hazard_code not in taxonomy:
        return None
    hazard = taxonomy.get(hazard_code)
    try:
        level: Level | None = hazard.nearest_level(Level.parse(level_code))
    except ValueError:
        level = None
    zh = language.lower().startswith("zh")
    name = hazard.name(language)
    event = (
        f"{name}{level.zh}预警"
        if zh and level
        else f"{name} {level.value} warning"
        if level
        else name
    )
    info = Info(
        language=language,
        categories=[hazard.category],
        event=event,
        urgency="Immediate",
        severity=level.severity if level else "Unknown",
        certainty="Likely",
        sender_name=issuer.sender_name,
        hazard=hazard.code,
        level=level,
        areas=[Area(area_desc=n) for n in area_names] or [Area(area_desc=issuer.sender_name)],
    )
    alert = Alert(
        identifier="console-prefill",
        sender=issuer.sender,
        sent=beijing_now(),
        status="Actual",
        msg_type="Alert",
        scope="Public",
        infos=[info],
    )
    headline = ""
    if renderer is not None:
        try:
            rendered = renderer.render(
                alert, info, "email", MessageLimits(LengthUnit.CHARS), language
            )
            headline = rendered.subject or ""
        except ConfigError:
            headline = ""
    if not headline:
        headline = f"{issuer.sender_name}发布{event}" if zh else f"{event} – {issuer.sender_name}"
    guideline = renderer.guidelines.lookup(hazard.code, level, language) if renderer else None
    if guideline is not None and guideline.language != language_chain(language)[0]:
        guideline = None  # a Chinese criterion does not prefill an English warning
    return Prefill(
        headline=headline,
        description=guideline.standard or "" if guideline else "",
        guide=guideline.items if guideline else (),
    )
