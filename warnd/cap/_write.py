"""The Alert model → CAP 1.2 XML.

Elements come out in XSD sequence order because the writer walks the same
tables as the reader (``_layout``). Timestamps use ``format_cap_datetime``
(``±hh:mm``, UTC as ``-00:00``, no fractions). Numbers use the shortest
decimal that reads back as the same float, never an exponent, because
``xs:decimal`` has none.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar

from lxml import etree
from pydantic import BaseModel

from warnd.errors import AlertInvalid, FieldError
from warnd.model import (
    CAP12_NS,
    Alert,
    Area,
    Circle,
    Info,
    Polygon,
    Reference,
    ValuePair,
    format_cap_datetime,
)

from . import _layout as lay

_CAP = "{" + CAP12_NS + "}"


def format_number(value: float, where: str = "number") -> str:
    """The shortest decimal that reads back as ``value``, without exponent.

    ``38.47`` stays ``38.47``, ``0.0`` stays ``0.0``, ``1e-07`` becomes
    ``0.0000001``.
    """
    if not math.isfinite(value):
        raise AlertInvalid(
            f"{where}: {value} cannot be written in CAP",
            errors=[FieldError(loc=where, msg=f"{value} is not a finite number")],
        )
    text = repr(float(value))
    if "e" in text or "E" in text:
        # repr picks the shortest digits; Decimal writes them without exponent.
        text = format(Decimal(text), "f")
    return text


def _point(lat: float, lon: float, where: str) -> str:
    return f"{format_number(lat, where)},{format_number(lon, where)}"


class Writer:
    """Serialises one Alert; ``path`` tracks the element being written for errors."""

    def __init__(self) -> None:
        self.path: list[str] = []

    def _sub(self, parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
        el = etree.SubElement(parent, _CAP + name)
        if text is not None:
            try:
                el.text = text
            except ValueError:
                # lxml refuses control characters XML 1.0 cannot carry.
                where = "/" + "/".join([*self.path, name])
                raise AlertInvalid(
                    f"{where}: text contains characters XML cannot carry",
                    errors=[FieldError(loc=where, msg="contains characters XML cannot carry")],
                ) from None
        return el

    def _scalar(self, value: Any, kind: lay.Kind, name: str) -> str:
        where = "/" + "/".join([*self.path, name])
        if kind == "time":
            assert isinstance(value, datetime)  # noqa: S101 - model guarantees it
            return format_cap_datetime(value)
        if kind == "number":
            return format_number(value, where)
        if isinstance(value, Enum):
            return str(value.value)
        return str(value)

    def fields(self, parent: etree._Element, model: BaseModel, slots: tuple[lay.Slot, ...]) -> None:
        for name, attr, kind in slots:
            value = getattr(model, attr)
            if kind == "pairs" and isinstance(model, Info):
                value = self._with_own(model, attr, value)
            if value is None:
                continue
            if kind == "texts":
                for item in value:
                    self._sub(parent, name, self._scalar(item, "text", name))
            elif kind in lay.REPEATED:
                for i, item in enumerate(value):
                    self.path.append(f"{name}[{i + 1}]")
                    self._WRITERS[kind](self, self._sub(parent, name), item)
                    self.path.pop()
            elif kind == "refs":
                if value:
                    self._sub(parent, name, " ".join(_reference(r) for r in value))
            else:
                self._sub(parent, name, self._scalar(value, kind, name))

    @staticmethod
    def _with_own(info: Info, attr: str, pairs: list[ValuePair]) -> list[ValuePair]:
        """Event codes / parameters plus warnd's hazard / level entries.

        The ``hazard``/``level`` fields are the truth: a stray ``warnd:*``
        pair already in the list is dropped so the output never carries two.
        """
        if attr == "event_codes":
            own = [p for p in pairs if p.value_name != lay.HAZARD_NAME]
            if info.hazard:
                own.append(ValuePair(value_name=lay.HAZARD_NAME, value=info.hazard))
            return own
        own = [p for p in pairs if p.value_name != lay.LEVEL_NAME]
        if info.level is not None:
            own.append(ValuePair(value_name=lay.LEVEL_NAME, value=info.level.value))
        return own

    def _pair(self, el: etree._Element, pair: ValuePair) -> None:
        self.fields(el, pair, lay.PAIR)

    def _info(self, el: etree._Element, info: Info) -> None:
        self.fields(el, info, lay.INFO)

    def _resource(self, el: etree._Element, resource: BaseModel) -> None:
        self.fields(el, resource, lay.RESOURCE)

    def _area(self, el: etree._Element, area: Area) -> None:
        self.fields(el, area, lay.AREA)

    def _polygon(self, el: etree._Element, polygon: Polygon) -> None:
        where = "/" + "/".join(self.path)
        el.text = " ".join(_point(lat, lon, where) for lat, lon in polygon.points)

    def _circle(self, el: etree._Element, circle: Circle) -> None:
        where = "/" + "/".join(self.path)
        radius = format_number(circle.radius_km, where)
        el.text = f"{_point(circle.lat, circle.lon, where)} {radius}"

    _WRITERS: ClassVar[dict[str, Any]] = {
        "pairs": _pair,
        "info": _info,
        "resource": _resource,
        "area": _area,
        "polygon": _polygon,
        "circle": _circle,
    }


def _reference(ref: Reference) -> str:
    return f"{ref.sender},{ref.identifier},{format_cap_datetime(ref.sent)}"


def build_tree(alert: Alert) -> etree._ElementTree:
    """The CAP 1.2 element tree of ``alert``."""
    # lxml-stubs do not admit the None (default namespace) key.
    nsmap: Any = {None: CAP12_NS}
    root = etree.Element(_CAP + "alert", nsmap=nsmap)
    writer = Writer()
    writer.path.append("alert")
    writer.fields(root, alert, lay.ALERT)
    return root.getroottree()


def serialise(tree: etree._ElementTree) -> bytes:
    """UTF-8 bytes with an XML declaration; indentation only between elements."""
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8", pretty_print=True)
