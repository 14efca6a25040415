"""The CAP XML codec: parse, validate and write OASIS CAP alerts.

``parse_cap`` turns untrusted bytes into an :class:`~warnd.model.Alert`:
safe parsing (no DTDs, entities, network or XInclude), validation against
the OASIS XSD of the document's CAP version, CAP 1.1 upgraded to 1.2, then
the model's semantic rules. ``to_cap_xml`` writes CAP 1.2 that validates
against the same XSD and reads back to an equal Alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from warnd.errors import FieldError
from warnd.model import CAP11_NS, CAP12_NS, Alert

from ._read import build_alert, invalid
from ._safe import parse_safely
from ._schema import line_of, local_name, validate, xml_path
from ._upgrade import fix_deprecated_cap11, upgrade_cap11
from ._write import build_tree, serialise

__all__ = ["DEFAULT_MAX_BYTES", "ParsedCap", "parse_cap", "schema_errors", "to_cap_xml"]

DEFAULT_MAX_BYTES = 1_048_576
"""Largest CAP document accepted by default (1 MiB)."""

_VERSIONS = {CAP12_NS: "1.2", CAP11_NS: "1.1"}


@dataclass(frozen=True)
class ParsedCap:
    """A parsed alert with the CAP version it arrived in.

    ``version`` is ``"1.2"`` or ``"1.1"``; 1.1 input has been upgraded to
    the 1.2 model. ``warnings`` are non-fatal notes (upgrade, ignored empty
    polygons, dropped signatures).
    """

    alert: Alert
    version: str
    warnings: list[str] = field(default_factory=list)


def _check_root(root: etree._Element) -> str:
    """The CAP namespace of the root ``<alert>``, or raise AlertInvalid."""
    qname = etree.QName(root)
    ns = qname.namespace
    loc = xml_path(root)
    if ns not in _VERSIONS:
        got = f"namespace {ns!r}" if ns else "no namespace"
        raise invalid(
            [
                FieldError(
                    loc=loc,
                    msg=f"root <{qname.localname}> has {got}; a CAP alert uses namespace"
                    f" {CAP12_NS!r} (or {CAP11_NS!r})",
                    line=line_of(root),
                )
            ],
            "not a CAP alert",
        )
    if qname.localname != "alert":
        count = sum(1 for c in root if isinstance(c.tag, str) and local_name(c) == "alert")
        wraps = f"; it wraps {count} <alert> elements, send them one by one" if count else ""
        raise invalid(
            [
                FieldError(
                    loc=loc,
                    msg=f"root element is <{qname.localname}>, a CAP document has a single"
                    f" <alert> root{wraps}",
                    line=line_of(root),
                )
            ],
            "not a CAP alert",
        )
    return ns


def parse_cap(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ParsedCap:
    """Parse and validate one CAP 1.2 or 1.1 document.

    Raises :class:`~warnd.errors.MalformedDocument` for bytes that are too
    large, not XML, HTML, or carry a DOCTYPE, and
    :class:`~warnd.errors.AlertInvalid` for XML that is not a valid CAP
    alert: wrong root or namespace, XSD errors, model rule violations. Each
    problem is a FieldError with an XML path and, where known, a line.
    """
    tree = parse_safely(data, max_bytes=max_bytes)
    root = tree.getroot()
    ns = _check_root(root)
    warnings: list[str] = []
    if ns == CAP11_NS:
        fix_deprecated_cap11(root, warnings)
        errors = validate(tree, CAP11_NS)
        if errors:
            raise invalid(errors, "CAP 1.1 document fails the CAP 1.1 schema")
        upgrade_cap11(root, warnings)
    errors = validate(tree, CAP12_NS)
    if errors:
        raise invalid(errors, "CAP document fails the CAP 1.2 schema")
    alert = build_alert(root, warnings)
    return ParsedCap(alert=alert, version=_VERSIONS[ns], warnings=warnings)


def to_cap_xml(alert: Alert) -> bytes:
    """The alert as a UTF-8 CAP 1.2 document with an XML declaration.

    Element order follows the XSD; times are ``±hh:mm`` with whole seconds
    (UTC as ``-00:00``); warnd's hazard and level travel as ``warnd:hazard``
    eventCode and ``warnd:level`` parameter, so ``parse_cap`` restores them.

    The output is checked against the CAP 1.2 XSD; a model value CAP cannot
    carry (a ``language`` that is not a language tag, text with control
    characters, an infinite altitude) raises AlertInvalid naming the element.
    """
    tree = build_tree(alert)
    errors = validate(tree, CAP12_NS)
    if errors:
        raise invalid(errors, "alert cannot be written as valid CAP 1.2")
    return serialise(tree)


def schema_errors(xml: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[FieldError]:
    """XSD errors of a document against the CAP 1.2 schema; ``[]`` when valid.

    The bytes are parsed with the same safeguards as ``parse_cap``, so
    unparseable or hostile input raises MalformedDocument rather than
    returning errors.
    """
    tree = parse_safely(xml, max_bytes=max_bytes)
    return validate(tree, CAP12_NS)
