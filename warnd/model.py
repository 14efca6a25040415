"""The alert model: OASIS CAP 1.2, plus warnd's hazard and level.

Field names are the CAP element names in snake case; list-valued CAP
elements (``category``, ``responseType``, ``area``, ``info``…) are plural
lists here. ``hazard`` and ``level`` are warnd's own: a code from the
taxonomy (``config/taxonomy.toml``) and a colour level. In CAP XML they
travel as ``eventCode``/``parameter`` entries named ``warnd:hazard`` and
``warnd:level`` so an alert that leaves warnd comes back with them.

The JSON form of this model is the API's alert body. Semantic rules that
CAP states in prose (closed polygons, lat/lon ranges, expires after sent…)
are checked here, so an alert is valid whichever way it arrived.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

CAP12_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP11_NS = "urn:oasis:names:tc:emergency:cap:1.1"

# CAP forbids whitespace, commas and the XML-reserved < and & in identifiers
# and senders, because references are comma- and space-separated.
CAP_TOKEN_PATTERN = r"^[^\s,<&]+$"  # noqa: S105 - a regex, not a secret
_CAP_TOKEN = re.compile(CAP_TOKEN_PATTERN)


def is_cap_token(value: str) -> bool:
    """Can ``value`` stand as a CAP identifier or sender (1 to 256 characters)?"""
    return 0 < len(value) <= 256 and _CAP_TOKEN.match(value) is not None


def _cap_token(value: str) -> str:
    if not _CAP_TOKEN.match(value):
        raise ValueError("must not contain spaces, commas, '<' or '&'")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a time-zone offset (e.g. +08:00)")
    return value


CapToken = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_cap_token)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class Status(StrEnum):
    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"
    DRAFT = "Draft"


class MsgType(StrEnum):
    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"
    ACK = "Ack"
    ERROR = "Error"


class Scope(StrEnum):
    PUBLIC = "Public"
    RESTRICTED = "Restricted"
    PRIVATE = "Private"


class Category(StrEnum):
    GEO = "Geo"
    MET = "Met"
    SAFETY = "Safety"
    SECURITY = "Security"
    RESCUE = "Rescue"
    FIRE = "Fire"
    HEALTH = "Health"
    ENV = "Env"
    TRANSPORT = "Transport"
    INFRA = "Infra"
    CBRNE = "CBRNE"
    OTHER = "Other"


class ResponseType(StrEnum):
    SHELTER = "Shelter"
    EVACUATE = "Evacuate"
    PREPARE = "Prepare"
    EXECUTE = "Execute"
    AVOID = "Avoid"
    MONITOR = "Monitor"
    ASSESS = "Assess"
    ALL_CLEAR = "AllClear"
    NONE = "None"


class Urgency(StrEnum):
    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class Severity(StrEnum):
    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Certainty(StrEnum):
    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


class Level(StrEnum):
    """China's four warning colours, lowest to highest (IV → I)."""

    BLUE = "blue"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"

    @property
    def rank(self) -> int:
        """1 for blue … 4 for red, so levels compare numerically."""
        return _LEVEL_RANK[self]

    @property
    def roman(self) -> str:
        """The national grade: red is Ⅰ级 (I), blue is Ⅳ级 (IV)."""
        return _LEVEL_ROMAN[self]

    @property
    def zh(self) -> str:
        return _LEVEL_ZH[self]

    @property
    def severity(self) -> Severity:
        """The CAP severity a warning of this colour is published with."""
        return _LEVEL_SEVERITY[self]

    @classmethod
    def from_severity(cls, severity: Severity) -> Level | None:
        """The colour for a CAP severity; ``None`` for Unknown."""
        return _SEVERITY_LEVEL.get(severity)

    @classmethod
    def parse(cls, text: str) -> Level:
        """Accept ``red``, ``红``, ``红色``, ``I``, ``Ⅰ`` or CMA code ``04``."""
        key = text.strip().lower().removesuffix("级").removesuffix("色")
        try:
            return _LEVEL_ALIASES[key]
        except KeyError:
            raise ValueError(f"unknown level {text!r}: use blue, yellow, orange or red") from None


_LEVEL_RANK = {Level.BLUE: 1, Level.YELLOW: 2, Level.ORANGE: 3, Level.RED: 4}
_LEVEL_ROMAN = {Level.BLUE: "IV", Level.YELLOW: "III", Level.ORANGE: "II", Level.RED: "I"}
_LEVEL_ZH = {Level.BLUE: "蓝色", Level.YELLOW: "黄色", Level.ORANGE: "橙色", Level.RED: "红色"}
_LEVEL_SEVERITY = {
    Level.BLUE: Severity.MINOR,
    Level.YELLOW: Severity.MODERATE,
    Level.ORANGE: Severity.SEVERE,
    Level.RED: Severity.EXTREME,
}
_SEVERITY_LEVEL = {v: k for k, v in _LEVEL_SEVERITY.items()}
_LEVEL_ALIASES: dict[str, Level] = {}
for _lvl, _names in {
    Level.BLUE: ("blue", "蓝", "藍", "iv", "Ⅳ".lower(), "01"),
    Level.YELLOW: ("yellow", "黄", "黃", "iii", "Ⅲ".lower(), "02"),
    Level.ORANGE: ("orange", "橙", "ii", "Ⅱ".lower(), "03"),
    Level.RED: ("red", "红", "紅", "i", "Ⅰ".lower(), "04"),
}.items():
    for _n in _names:
        _LEVEL_ALIASES[_n] = _lvl


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=False)


class ValuePair(_Model):
    """A CAP ``valueName``/``value`` pair (eventCode, parameter, geocode)."""

    value_name: str = Field(min_length=1)
    value: str


class Reference(_Model):
    """One entry of CAP ``references``: ``sender,identifier,sent``."""

    sender: CapToken
    identifier: CapToken
    sent: AwareDatetime

    @classmethod
    def parse(cls, triple: str) -> Reference:
        parts = triple.split(",")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"reference {triple!r} is not 'sender,identifier,sent'")
        return cls.model_validate({"sender": parts[0], "identifier": parts[1], "sent": parts[2]})


class Circle(_Model):
    """A CAP circle: WGS-84 centre and radius in kilometres."""

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    radius_km: float = Field(ge=0)


Point = tuple[float, float]
"""A WGS-84 point as CAP writes it: (latitude, longitude)."""


class Polygon(_Model):
    """A CAP polygon: a closed ring of (lat, lon) points, at least four."""

    points: list[Point]

    @field_validator("points")
    @classmethod
    def _ring(cls, points: list[Point]) -> list[Point]:
        if len(points) < 4:
            raise ValueError(f"a polygon needs at least 4 points, got {len(points)}")
        for i, (lat, lon) in enumerate(points):
            if not -90 <= lat <= 90:
                raise ValueError(f"point {i + 1}: latitude {lat} outside -90..90")
            if not -180 <= lon <= 180:
                raise ValueError(f"point {i + 1}: longitude {lon} outside -180..180")
        if points[0] != points[-1]:
            raise ValueError("polygon is not closed: the first and last points differ")
        return points


class Area(_Model):
    area_desc: str = Field(min_length=1)
    polygons: list[Polygon] = Field(default_factory=list)
    circles: list[Circle] = Field(default_factory=list)
    geocodes: list[ValuePair] = Field(default_factory=list)
    altitude: float | None = None
    ceiling: float | None = None

    @model_validator(mode="after")
    def _ceiling_needs_altitude(self) -> Self:
        if self.ceiling is not None and self.altitude is None:
            raise ValueError("ceiling is only allowed together with altitude")
        return self


class Resource(_Model):
    resource_desc: str = Field(min_length=1)
    mime_type: str = Field(min_length=1)
    size: int | None = Field(default=None, ge=0)
    uri: str | None = None
    deref_uri: str | None = None
    digest: str | None = None


class Info(_Model):
    language: str = "en-US"
    categories: list[Category] = Field(min_length=1)
    event: str = Field(min_length=1)
    response_types: list[ResponseType] = Field(default_factory=list)
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    audience: str | None = None
    event_codes: list[ValuePair] = Field(default_factory=list)
    effective: AwareDatetime | None = None
    onset: AwareDatetime | None = None
    expires: AwareDatetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: list[ValuePair] = Field(default_factory=list)
    resources: list[Resource] = Field(default_factory=list)
    areas: list[Area] = Field(default_factory=list)
    # warnd's own classification (see config/taxonomy.toml).
    hazard: str | None = Field(default=None, description="Hazard code from the taxonomy")
    level: Level | None = Field(default=None, description="Warning colour level")

    @model_validator(mode="after")
    def _times(self) -> Self:
        if self.expires is not None:
            for name in ("effective", "onset"):
                start = getattr(self, name)
                # Equal is allowed: real cancellations expire the moment they
                # take effect (NTWC tsunami cancellation, onset == expires).
                if start is not None and self.expires < start:
                    raise ValueError(f"expires ({self.expires}) is before {name} ({start})")
        return self


class Alert(_Model):
    """One CAP message. Updates and cancels link to earlier ones by ``references``."""

    identifier: CapToken
    sender: CapToken
    sent: AwareDatetime
    status: Status
    msg_type: MsgType
    source: str | None = None
    scope: Scope
    restriction: str | None = None
    addresses: str | None = None
    codes: list[str] = Field(default_factory=list)
    note: str | None = None
    references: list[Reference] = Field(default_factory=list)
    incidents: str | None = None
    infos: list[Info] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> Self:
        problems: list[str] = []
        if self.msg_type in (MsgType.ALERT, MsgType.UPDATE) and not self.infos:
            problems.append(f"a msgType {self.msg_type.value} needs at least one info block")
        if (
            self.msg_type in (MsgType.UPDATE, MsgType.CANCEL, MsgType.ACK, MsgType.ERROR)
            and not self.references
        ):
            problems.append(f"a msgType {self.msg_type.value} must list references")
        if self.scope is Scope.RESTRICTED and not self.restriction:
            problems.append("scope Restricted needs a restriction")
        if self.scope is Scope.PRIVATE and not self.addresses:
            problems.append("scope Private needs addresses")
        for ref in self.references:
            if ref.sender == self.sender and ref.identifier == self.identifier:
                problems.append(f"references itself ({ref.sender},{ref.identifier})")
        for i, info in enumerate(self.infos):
            # Equal is allowed, as above: CAP sets no order between the times.
            if info.expires is not None and info.expires < self.sent:
                problems.append(
                    f"info {i + 1}: expires ({info.expires.isoformat()}) is before"
                    f" sent ({self.sent.isoformat()})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ------------------------------------------------------------------ views

    @property
    def expires(self) -> datetime | None:
        """When the whole message stops being in effect: the latest info expiry.

        ``None`` when any info block has no expiry (it stays in effect until
        updated or cancelled) or there are no info blocks.
        """
        if not self.infos or any(i.expires is None for i in self.infos):
            return None
        return max(i.expires for i in self.infos if i.expires is not None)

    @property
    def level(self) -> Level | None:
        """The highest level among the info blocks."""
        levels = [i.level for i in self.infos if i.level is not None]
        return max(levels, key=lambda lv: lv.rank) if levels else None

    @property
    def hazards(self) -> list[str]:
        """Distinct hazard codes of the info blocks, in order of appearance."""
        return list(dict.fromkeys(i.hazard for i in self.infos if i.hazard))

    @property
    def languages(self) -> list[str]:
        return list(dict.fromkeys(i.language for i in self.infos))

    def geocodes(self) -> list[ValuePair]:
        return [g for i in self.infos for a in i.areas for g in a.geocodes]

    def reference_line(self) -> str:
        """This alert as it appears in another's ``references``."""
        return f"{self.sender},{self.identifier},{format_cap_datetime(self.sent)}"


def format_cap_datetime(value: datetime) -> str:
    """CAP's dateTime form: seconds, a ``±hh:mm`` offset, never ``Z``.

    UTC is written ``-00:00`` as CAP 1.2 §3.3.2 requires; fractions of a
    second are dropped because the CAP XSD pattern has none.
    """
    value = _aware(value).replace(microsecond=0)
    offset = value.utcoffset()
    assert offset is not None  # noqa: S101 - guaranteed by _aware
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        sign, minutes = "-", 0
    else:
        sign = "+" if minutes > 0 else "-"
        minutes = abs(minutes)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def model_json_schema_refs() -> dict[str, Any]:
    """JSON Schemas of the API-facing models, for the OpenAPI document."""
    return Alert.model_json_schema(ref_template="#/components/schemas/{model}")
