"""A validated CAP element tree → the Alert model.

The tree has passed the CAP 1.2 XSD when it gets here, so element names,
order and enumerations are right; this module maps them onto model fields
and leaves the semantic rules to the model. Every element read is recorded
against its model path so model errors come back with XML paths and lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from lxml import etree
from pydantic import ValidationError

from warnd.errors import AlertInvalid, FieldError, field_errors
from warnd.model import CAP12_NS, Alert, Level, Reference

from . import _layout as lay
from ._schema import line_of, xml_path

Loc = tuple[str | int, ...]
_CAP = "{" + CAP12_NS + "}"


def text_of(el: etree._Element) -> str:
    """Element text without outer whitespace, skipping comments and PIs."""
    chunks = [el.text or ""] + [child.tail or "" for child in el]
    return "".join(chunks).strip()


def invalid(errors: list[FieldError], what: str = "CAP alert is not valid") -> AlertInvalid:
    """An AlertInvalid whose detail names the first problem and its line."""
    first = errors[0]
    where = f" (line {first.line})" if first.line else ""
    more = f"; and {len(errors) - 1} more" if len(errors) > 1 else ""
    return AlertInvalid(f"{what}: {first.loc}{where}: {first.msg}{more}", errors=errors)


class Reader:
    """Builds the model input dict for one alert, collecting notes on the way."""

    def __init__(self, warnings: list[str]) -> None:
        self.warnings = warnings
        self.errors: list[FieldError] = []
        self.where: dict[Loc, etree._Element] = {}

    # ------------------------------------------------------------- plumbing

    def _error(self, el: etree._Element, msg: str) -> None:
        self.errors.append(FieldError(loc=xml_path(el), msg=msg, line=line_of(el)))

    def _fields(
        self,
        el: etree._Element,
        loc: Loc,
        slots: tuple[lay.Slot, ...],
    ) -> dict[str, Any]:
        """Read the CAP children of ``el`` that ``slots`` describes."""
        self.where[loc] = el
        by_name = {name: (attr, kind) for name, attr, kind in slots}
        out: dict[str, Any] = {}
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if not child.tag.startswith(_CAP):
                # The 1.2 XSD admits only xmldsig elements here.
                self.warnings.append(
                    f"line {child.sourceline}: {etree.QName(child).localname} in"
                    f" {etree.QName(child).namespace} ignored (signatures are neither"
                    " verified nor kept)"
                )
                continue
            attr, kind = by_name[child.tag[len(_CAP) :]]
            if kind in lay.REPEATED:
                items: list[Any] = out.setdefault(attr, [])
                item_loc = (*loc, attr, len(items))
                value = self._READERS[kind](self, child, item_loc)
                if value is not None:
                    self.where[item_loc] = child
                    items.append(value)
            else:
                self.where[(*loc, attr)] = child
                out[attr] = self._READERS[kind](self, child, (*loc, attr))
        return out

    def _text(self, el: etree._Element, loc: Loc) -> str:
        return text_of(el)

    def _pair(self, el: etree._Element, loc: Loc) -> dict[str, Any]:
        return self._fields(el, loc, lay.PAIR)

    # -------------------------------------------------------------- content

    def alert(self, root: etree._Element) -> dict[str, Any]:
        return self._fields(root, (), lay.ALERT)

    def _references(self, el: etree._Element, loc: Loc) -> list[Reference]:
        triples = text_of(el).split()
        if not triples:
            self._error(el, "references is empty: list at least one 'sender,identifier,sent'")
        refs: list[Reference] = []
        for i, triple in enumerate(triples):
            try:
                refs.append(Reference.parse(triple))
            except ValidationError as exc:
                msgs = "; ".join(f"{e.loc.rsplit('/', 1)[-1]} {e.msg}" for e in field_errors(exc))
                self._error(el, f"reference {i + 1} {triple!r}: {msgs}")
            except ValueError as exc:
                self._error(el, f"reference {i + 1}: {exc}")
        return refs

    def _info(self, el: etree._Element, loc: Loc) -> dict[str, Any]:
        info = self._fields(el, loc, lay.INFO)
        hazard = self._extract(info, loc, "event_codes", lay.HAZARD_NAME, "hazard")
        if hazard is not None:
            info["hazard"] = hazard or None
        level = self._extract(info, loc, "parameters", lay.LEVEL_NAME, "level")
        if level:
            try:
                info["level"] = Level.parse(level)
            except ValueError as exc:
                self._error(self.where[(*loc, "level")], str(exc))
        return info

    def _extract(
        self, info: dict[str, Any], loc: Loc, attr: str, name: str, field: str
    ) -> str | None:
        """Take warnd's own ``name`` entry out of a pair list; its value or None."""
        pairs: list[dict[str, Any]] = info.get(attr, [])
        hits = [i for i, p in enumerate(pairs) if p.get("value_name") == name]
        if not hits:
            return None
        elements = [self.where[(*loc, attr, i)] for i in range(len(pairs))]
        for extra in hits[1:]:
            self._error(elements[extra], f"{name} given more than once")
        self.where[(*loc, field)] = elements[hits[0]]
        value: str = pairs[hits[0]].get("value", "")
        keep = [i for i in range(len(pairs)) if i not in hits]
        info[attr] = [pairs[i] for i in keep]
        self._renumber((*loc, attr), keep)
        return value

    def _renumber(self, base: Loc, keep: list[int]) -> None:
        """Re-key recorded elements under ``base`` after list items were removed."""
        depth = len(base)
        moved = {k: v for k, v in self.where.items() if k[:depth] == base and len(k) > depth}
        for key in moved:
            del self.where[key]
        for new, old in enumerate(keep):
            for key, el in moved.items():
                if key[depth] == old:
                    self.where[(*base, new, *key[depth + 1 :])] = el

    def _resource(self, el: etree._Element, loc: Loc) -> dict[str, Any]:
        return self._fields(el, loc, lay.RESOURCE)

    def _area(self, el: etree._Element, loc: Loc) -> dict[str, Any]:
        return self._fields(el, loc, lay.AREA)

    def _polygon(self, el: etree._Element, loc: Loc) -> dict[str, Any] | None:
        pairs = text_of(el).split()
        if not pairs:
            self.warnings.append(f"line {el.sourceline}: empty polygon ignored ({xml_path(el)})")
            return None
        points: list[tuple[float, float]] = []
        for i, pair in enumerate(pairs):
            lat_lon = pair.split(",")
            try:
                if len(lat_lon) != 2:
                    raise ValueError(pair)
                points.append((float(lat_lon[0]), float(lat_lon[1])))
            except ValueError:
                self._error(el, f"polygon point {i + 1} {pair!r} is not 'lat,lon'")
                return None
        self.where[(*loc, "points")] = el
        return {"points": points}

    def _circle(self, el: etree._Element, loc: Loc) -> dict[str, Any] | None:
        text = text_of(el)
        if not text:
            self.warnings.append(f"line {el.sourceline}: empty circle ignored ({xml_path(el)})")
            return None
        parts = text.split()
        centre = parts[0].split(",") if parts else []
        if len(parts) != 2 or len(centre) != 2:
            self._error(el, f"circle {text!r} is not 'lat,lon radius'")
            return None
        for attr in ("lat", "lon", "radius_km"):
            self.where[(*loc, attr)] = el
        return {"lat": centre[0], "lon": centre[1], "radius_km": parts[1]}

    _READERS: ClassVar[dict[str, Callable[[Reader, etree._Element, Loc], Any]]] = {
        "text": _text,
        "time": _text,
        "number": _text,
        "integer": _text,
        "texts": _text,
        "refs": _references,
        "pairs": _pair,
        "info": _info,
        "resource": _resource,
        "area": _area,
        "polygon": _polygon,
        "circle": _circle,
    }

    # --------------------------------------------------------------- errors

    def model_errors(self, exc: ValidationError) -> list[FieldError]:
        """pydantic errors with XML paths and the line of the nearest element."""
        out: list[FieldError] = []
        for plain, raw in zip(field_errors(exc), exc.errors(include_url=False), strict=True):
            loc: Loc = tuple(p for p in raw["loc"] if p != "function-after")
            cut = len(loc)
            while cut > 0 and loc[:cut] not in self.where:
                cut -= 1
            el = self.where[loc[:cut]]
            path = xml_path(el)
            for part in loc[cut:]:
                if isinstance(part, int):
                    path += f"[{part + 1}]"
                else:
                    path += "/" + lay.ELEMENT_OF.get(part, part)
            out.append(FieldError(loc=path, msg=plain.msg, line=line_of(el)))
        return out


def build_alert(root: etree._Element, warnings: list[str]) -> Alert:
    """Map a schema-valid CAP 1.2 ``<alert>`` onto the model, or raise AlertInvalid."""
    reader = Reader(warnings)
    data = reader.alert(root)
    if reader.errors:
        raise invalid(reader.errors)
    try:
        return Alert.model_validate(data)
    except ValidationError as exc:
        raise invalid(reader.model_errors(exc)) from None
