"""The OASIS CAP XSDs, loaded once, and XSD errors as FieldErrors.

The schemas ship in ``warnd/data`` (verbatim OASIS copies) so validation
never touches the network or the working directory.
"""

from __future__ import annotations

import functools
import threading
from importlib import resources
from typing import Any

from lxml import etree

from warnd.errors import FieldError
from warnd.model import CAP11_NS, CAP12_NS

from ._safe import parse_lxml

_SCHEMA_FILES = {CAP12_NS: "cap12.xsd", CAP11_NS: "cap11.xsd"}

# lxml validators keep their error log on the instance, so two threads
# validating with the same compiled schema would read each other's errors.
# Validation is a few milliseconds; a lock is simpler than per-thread copies.
_VALIDATE_LOCK = threading.Lock()


@functools.cache
def load_schema(namespace: str) -> etree.XMLSchema:
    """The compiled XSD for a CAP namespace (1.2 or 1.1), compiled once."""
    name = _SCHEMA_FILES[namespace]
    data = resources.files("warnd").joinpath("data", name).read_bytes()
    return etree.XMLSchema(parse_lxml(data))


def line_of(el: etree._Element) -> int | None:
    """The source line of an element; None for elements built in memory."""
    line: Any = el.sourceline
    return line if isinstance(line, int) else None


def local_name(el: etree._Element) -> str:
    return etree.QName(el).localname


def xml_path(el: etree._Element) -> str:
    """A readable path such as ``/alert/info[2]/area/polygon[3]``.

    Positions are 1-based and only written where siblings share the name,
    so the path reads like the CAP element names.
    """
    parts: list[str] = []
    node: etree._Element | None = el
    while node is not None:
        if not isinstance(node.tag, str):
            node = node.getparent()
            continue
        name = local_name(node)
        parent = node.getparent()
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag]
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))


def _readable(message: str) -> str:
    # libxml2 writes names as {urn:oasis:...:cap:1.2}info; CAP names alone
    # are what an alert author recognises.
    for ns in (CAP12_NS, CAP11_NS):
        message = message.replace("{" + ns + "}", "")
    return message


def validate(tree: etree._ElementTree, namespace: str) -> list[FieldError]:
    """XSD errors of ``tree`` against the schema for ``namespace``, as FieldErrors."""
    schema = load_schema(namespace)
    with _VALIDATE_LOCK:
        if schema.validate(tree):
            return []
        # lxml-stubs type the log as opaque; its entries are _LogEntry.
        log: Any = schema.error_log
        entries: list[Any] = list(log)
    errors: list[FieldError] = []
    for entry in entries:
        loc = entry.path or "/"
        try:
            found = tree.xpath(entry.path) if entry.path else []
        except etree.XPathError:
            found = []
        if isinstance(found, list) and found and isinstance(found[0], etree._Element):
            loc = xml_path(found[0])
        errors.append(FieldError(loc=loc, msg=_readable(entry.message), line=entry.line or None))
    return errors
