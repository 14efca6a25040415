"""Hostile-input-safe XML parsing.

CAP arrives from the network, so the parser must never fetch, include or
expand anything the document asks for. Two independent layers enforce it:

1. a scan of the prolog (before the root element) refuses any DOCTYPE before
   lxml sees a byte, so DTDs, external entities and parameter entities are
   never even declared to libxml2;
2. lxml itself runs with DTD loading, entity resolution and network access
   off and ``huge_tree`` off, and the parsed tree is checked again for a
   DOCTYPE in case a byte layout fooled the scan.

XInclude is never processed because nothing here calls ``xinclude()``.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

from lxml import etree

from warnd.errors import FieldError, MalformedDocument

# BOMs whose encodings are not ASCII-compatible: the prolog scan has to
# decode these to see markup. Longest first, UTF-32-LE starts like UTF-16-LE.
_WIDE_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_HTML_HINT = re.compile(rb"<\s*html[\s>]|<\s*!doctype\s+html", re.IGNORECASE)


def _fail(detail: str, *, loc: str = "/", line: int | None = None) -> MalformedDocument:
    return MalformedDocument(detail, errors=[FieldError(loc=loc, msg=detail, line=line)])


def _prolog_text(data: bytes) -> str:
    """The document as text good enough to scan ASCII markup in the prolog.

    Latin-1 maps every byte to one character, so for UTF-8, ISO-8859-x, Big5,
    GBK and the like ``<``, ``!``, ``?``, ``-`` and ``>`` are found where they
    are: none of those encodings uses these bytes inside a multi-byte
    character.
    """
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    if data.startswith(b"<\x00") or data.startswith(b"\x00<"):
        # UTF-16 without a BOM, as the XML spec's appendix F allows.
        encoding = "utf-16-le" if data[0] == 0x3C else "utf-16-be"
        return data.decode(encoding, errors="replace")
    return data.removeprefix(codecs.BOM_UTF8).decode("latin-1")


def _line(el: etree._Element) -> int | None:
    line: Any = el.sourceline
    return line if isinstance(line, int) else None


def _line_at(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def check_prolog(data: bytes) -> None:
    """Refuse a DOCTYPE, or anything that does not start like XML.

    Only the prolog is scanned (XML declaration, comments, processing
    instructions), so a ``<!DOCTYPE`` inside a CDATA section of the body is
    not mistaken for one.
    """
    text = _prolog_text(data)
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if text.startswith("<?", i):
            opening, closing = "<?", "?>"
        elif text.startswith("<!--", i):
            opening, closing = "<!--", "-->"
        else:
            break
        end = text.find(closing, i + len(opening))
        if end < 0:
            return  # unterminated: lxml reports it with a proper message
        i = end + len(closing)
    if i >= n:
        raise _fail("the document has no root element (it is empty or only a prolog)")
    if text[i : i + 9].upper() == "<!DOCTYPE":
        name = text[i + 9 : i + 40].split(maxsplit=1)[:1]
        line = _line_at(text, i)
        if name and name[0].lower().rstrip(">[") == "html":
            raise _fail(
                f"this is an HTML page (DOCTYPE html on line {line}), not a CAP alert;"
                " DTDs are not allowed",
                line=line,
            )
        raise _fail(
            f"DTDs are not allowed: the document declares a DOCTYPE on line {line}",
            line=line,
        )
    if text[i] != "<":
        snippet = text[i : i + 20]
        raise _fail(
            f"not XML: the document starts with {snippet!r} instead of '<'",
            line=_line_at(text, i),
        )


class _RefuseAll(etree.Resolver):
    """Answers every external load (DTD, entity, XInclude) with nothing.

    With entity resolution off libxml2 should not ask, but for external
    parameter entities it does try (and ``no_network`` then stops HTTP); this
    makes ``file:`` and any other scheme equally inert.
    """

    # lxml-stubs give resolve() no ``context``; lxml passes one and needs it.
    def resolve(self, system_url: str, public_id: str, context: object) -> Any:  # type: ignore[override]
        base: Any = self
        return base.resolve_string("", context)


def _parser() -> etree.XMLParser:
    # A fresh parser per call: XMLParser objects keep state and an error log,
    # so sharing one between threads is unsafe; creating one is cheap.
    parser = etree.XMLParser(
        resolve_entities=False,
        load_dtd=False,
        dtd_validation=False,
        no_network=True,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )
    parser.resolvers.add(_RefuseAll())
    return parser


def parse_lxml(data: bytes) -> etree._ElementTree:
    """Parse with lxml's hardened options; no prolog scan (see ``parse_safely``)."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else None
        head = data[:2048]
        if _HTML_HINT.search(head):
            raise _fail(
                f"this looks like an HTML page, not a CAP alert (not well-formed XML: {exc.msg})",
                line=line,
            ) from None
        raise _fail(f"not well-formed XML: {exc.msg}", line=line) from None
    tree = root.getroottree()
    # lxml-stubs lack DocInfo.doctype; it is '' when there is no DOCTYPE.
    if getattr(tree.docinfo, "doctype", ""):
        raise _fail("DTDs are not allowed: the document declares a DOCTYPE", line=1)
    if isinstance(root.tag, str) and etree.QName(root).localname.lower() == "html":
        raise _fail("this is an HTML page, not a CAP alert", loc="/html", line=_line(root))
    return tree


def parse_safely(data: bytes, *, max_bytes: int) -> etree._ElementTree:
    """Parse untrusted bytes into a tree, or raise MalformedDocument.

    The size limit is checked first so an oversized body is never handed to
    the parser. The encoding comes from the BOM or XML declaration.
    """
    if len(data) > max_bytes:
        raise _fail(f"the document is {len(data)} bytes, over the limit of {max_bytes} bytes")
    if not data.strip():
        raise _fail("the document is empty")
    check_prolog(data)
    return parse_lxml(data)
