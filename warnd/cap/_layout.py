"""Which CAP element maps to which model field, in XSD sequence order.

Reader and writer share these tables, so element order on output is the
schema's by construction and a new field cannot be read but never written.
"""

from __future__ import annotations

from typing import Final, Literal

Kind = Literal[
    "text",  # one simple element, any scalar (str, enum, number as text)
    "time",  # one CAP dateTime
    "texts",  # repeated simple element -> list
    "refs",  # references: space-separated sender,identifier,sent triples
    "pairs",  # repeated valueName/value pair -> list[ValuePair]
    "info",
    "resource",
    "area",
    "polygon",
    "circle",
    "number",  # xs:decimal
    "integer",  # xs:integer
]

Slot = tuple[str, str, Kind]
"""(CAP element name, model attribute, kind)."""

ALERT: Final[tuple[Slot, ...]] = (
    ("identifier", "identifier", "text"),
    ("sender", "sender", "text"),
    ("sent", "sent", "time"),
    ("status", "status", "text"),
    ("msgType", "msg_type", "text"),
    ("source", "source", "text"),
    ("scope", "scope", "text"),
    ("restriction", "restriction", "text"),
    ("addresses", "addresses", "text"),
    ("code", "codes", "texts"),
    ("note", "note", "text"),
    ("references", "references", "refs"),
    ("incidents", "incidents", "text"),
    ("info", "infos", "info"),
)

INFO: Final[tuple[Slot, ...]] = (
    ("language", "language", "text"),
    ("category", "categories", "texts"),
    ("event", "event", "text"),
    ("responseType", "response_types", "texts"),
    ("urgency", "urgency", "text"),
    ("severity", "severity", "text"),
    ("certainty", "certainty", "text"),
    ("audience", "audience", "text"),
    ("eventCode", "event_codes", "pairs"),
    ("effective", "effective", "time"),
    ("onset", "onset", "time"),
    ("expires", "expires", "time"),
    ("senderName", "sender_name", "text"),
    ("headline", "headline", "text"),
    ("description", "description", "text"),
    ("instruction", "instruction", "text"),
    ("web", "web", "text"),
    ("contact", "contact", "text"),
    ("parameter", "parameters", "pairs"),
    ("resource", "resources", "resource"),
    ("area", "areas", "area"),
)

RESOURCE: Final[tuple[Slot, ...]] = (
    ("resourceDesc", "resource_desc", "text"),
    ("mimeType", "mime_type", "text"),
    ("size", "size", "integer"),
    ("uri", "uri", "text"),
    ("derefUri", "deref_uri", "text"),
    ("digest", "digest", "text"),
)

AREA: Final[tuple[Slot, ...]] = (
    ("areaDesc", "area_desc", "text"),
    ("polygon", "polygons", "polygon"),
    ("circle", "circles", "circle"),
    ("geocode", "geocodes", "pairs"),
    ("altitude", "altitude", "number"),
    ("ceiling", "ceiling", "number"),
)

PAIR: Final[tuple[Slot, ...]] = (
    ("valueName", "value_name", "text"),
    ("value", "value", "text"),
)

# warnd's own fields travel inside eventCode / parameter under these names.
HAZARD_NAME: Final = "warnd:hazard"
LEVEL_NAME: Final = "warnd:level"

REPEATED: Final[frozenset[Kind]] = frozenset(
    {"texts", "pairs", "info", "resource", "area", "polygon", "circle"}
)

# Model attribute -> CAP element name, for turning model error paths into
# XML paths. hazard/level are found in eventCode/parameter.
ELEMENT_OF: Final[dict[str, str]] = {
    attr: name for table in (ALERT, INFO, RESOURCE, AREA, PAIR) for name, attr, _ in table
} | {"hazard": "eventCode", "level": "parameter", "points": "polygon", "radius_km": "circle"}
