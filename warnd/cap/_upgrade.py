"""CAP 1.1 → 1.2, done on the element tree so 1.2 rules then apply unchanged.

What differs between the two schemas and the spec texts:

* the namespace;
* certainty "Very Likely" (deprecated in 1.1, gone in 1.2) means "Likely";
* ``mimeType`` is optional in 1.1, required in 1.2;
* 1.1 dateTimes are plain ``xs:dateTime`` (``Z``, fractions allowed), 1.2
  requires ``±hh:mm`` and whole seconds;
* ``altitude``/``ceiling`` are strings in 1.1 and decimals in 1.2 (no fix:
  a non-number there is an error in either reading).

``responseType`` only gained values, so 1.1 values are all valid 1.2.
"""

from __future__ import annotations

import mimetypes
from datetime import datetime

from lxml import etree

from warnd.model import CAP11_NS, CAP12_NS, format_cap_datetime

_CAP11 = "{" + CAP11_NS + "}"
_CAP12 = "{" + CAP12_NS + "}"
_TIMES = frozenset({"sent", "effective", "onset", "expires"})
_FALLBACK_MIME = "application/octet-stream"


def _elements(root: etree._Element) -> list[etree._Element]:
    return [el for el in root.iter() if isinstance(el.tag, str)]


def fix_deprecated_cap11(root: etree._Element, warnings: list[str]) -> None:
    """Map values CAP 1.1 deprecated but its XSD rejects; runs before validation."""
    for el in _elements(root):
        if el.tag == _CAP11 + "certainty" and (el.text or "").strip() == "Very Likely":
            el.text = "Likely"
            warnings.append(
                f"line {el.sourceline}: certainty 'Very Likely' (deprecated in CAP 1.1)"
                " read as 'Likely'"
            )


def _cap12_time(text: str) -> str | None:
    """The 1.2 form of a 1.1 dateTime, or None when it cannot be converted."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        return None  # the 1.2 schema reports the missing offset
    return format_cap_datetime(value)


def _upgrade_references(el: etree._Element, warnings: list[str]) -> None:
    triples = (el.text or "").split()
    fixed: list[str] = []
    for triple in triples:
        parts = triple.split(",")
        if len(parts) == 3:
            sent = _cap12_time(parts[2])
            if sent is not None:
                parts[2] = sent
        fixed.append(",".join(parts))
    if fixed != triples:
        el.text = " ".join(fixed)
        warnings.append(f"line {el.sourceline}: references times rewritten in CAP 1.2 form")


def upgrade_cap11(root: etree._Element, warnings: list[str]) -> None:
    """Rewrite a schema-valid CAP 1.1 tree in place into CAP 1.2."""
    for el in _elements(root):
        if not el.tag.startswith(_CAP11):
            continue
        name = el.tag[len(_CAP11) :]
        el.tag = _CAP12 + name
        text = (el.text or "").strip()
        if name in _TIMES:
            fixed = _cap12_time(text)
            if fixed is not None and fixed != text:
                el.text = fixed
                warnings.append(
                    f"line {el.sourceline}: {name} {text!r} written as {fixed!r}"
                    " (CAP 1.2 needs a ±hh:mm offset and whole seconds)"
                )
        elif name == "references":
            _upgrade_references(el, warnings)
        elif name == "resource" and el.find(_CAP11 + "mimeType") is None:
            _add_mime_type(el, warnings)
    warnings.insert(0, "CAP 1.1 upgraded to 1.2")


def _add_mime_type(resource: etree._Element, warnings: list[str]) -> None:
    uri = resource.find(_CAP11 + "uri")
    guessed = mimetypes.guess_type((uri.text or "").strip())[0] if uri is not None else None
    mime = guessed or _FALLBACK_MIME
    el = etree.Element(_CAP12 + "mimeType")
    el.text = mime
    # resourceDesc is required in both versions; mimeType follows it in 1.2.
    desc = resource.find(_CAP11 + "resourceDesc")
    if desc is None:
        resource.insert(0, el)
    else:
        desc.addnext(el)
    warnings.append(
        f"line {resource.sourceline}: resource without mimeType (allowed in CAP 1.1) given {mime!r}"
    )
