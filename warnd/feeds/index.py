"""ATOM and RSS indexes of CAP documents.

National services publish CAP the same way: an ATOM (NWS, MeteoAlarm,
Google Public Alerts) or RSS 2.0 document whose entries link to one CAP
document each, or carry it inline. :func:`parse_index` turns such a
document into :class:`Entry` values; each entry has a stable ``key`` (its
id and update time) so a poller fetches only entries it has not handled.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urljoin

from lxml import etree

from warnd.cap._safe import parse_safely
from warnd.errors import FieldError, MalformedDocument
from warnd.model import CAP11_NS, CAP12_NS

ATOM_NS = "http://www.w3.org/2005/Atom"
_CAP_NAMESPACES = (CAP12_NS, CAP11_NS)


@dataclass(frozen=True, slots=True)
class Entry:
    """One index entry: where its CAP is, or the CAP itself."""

    id: str
    updated: str
    url: str | None
    inline: bytes | None = None
    """The CAP document when the entry embeds it instead of linking to it."""

    @property
    def key(self) -> str:
        """Stable across polls while the entry is unchanged; new when it is updated."""
        return hashlib.sha256(f"{self.id}\n{self.updated}".encode()).hexdigest()[:32]

    @property
    def label(self) -> str:
        return self.url or self.id


def _text(el: etree._Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _inline_cap(el: etree._Element) -> bytes | None:
    for ns in _CAP_NAMESPACES:
        found = el.find(f".//{{{ns}}}alert")
        if found is not None:
            return etree.tostring(found, encoding="utf-8", xml_declaration=True)
    return None


def _atom_link(entry: etree._Element, base: str) -> str | None:
    links = entry.findall(f"{{{ATOM_NS}}}link")

    def pick() -> etree._Element | None:
        for link in links:
            if "cap" in (link.get("type") or "").lower():
                return link
        for link in links:
            if (link.get("rel") or "alternate") == "alternate":
                return link
        return links[0] if links else None

    chosen = pick()
    href = chosen.get("href") if chosen is not None else None
    if not href:
        ident = _text(entry.find(f"{{{ATOM_NS}}}id"))
        href = ident if ident.startswith(("http://", "https://")) else None
    return urljoin(base, href) if href else None


def _rss_link(item: etree._Element, base: str) -> str | None:
    for enclosure in item.findall("enclosure"):
        if "cap" in (enclosure.get("type") or "").lower() and enclosure.get("url"):
            return urljoin(base, enclosure.get("url") or "")
    href = _text(item.find("link"))
    if not href:
        guid = item.find("guid")
        perma = guid is not None and (guid.get("isPermaLink") or "true").lower() == "true"
        href = _text(guid) if perma else ""
    return urljoin(base, href) if href else None


def parse_index(body: bytes, base_url: str, *, max_bytes: int) -> list[Entry]:
    """The entries of an ATOM feed or RSS 2.0 channel, in document order.

    Raises :class:`MalformedDocument` when the body is not XML or not an
    ATOM/RSS document (an HTML error page, a CAP document, JSON…).
    """
    tree = parse_safely(body, max_bytes=max_bytes)
    root = tree.getroot()
    qname = etree.QName(root)
    entries: list[Entry] = []
    if qname.namespace == ATOM_NS and qname.localname == "feed":
        for el in root.iter(f"{{{ATOM_NS}}}entry"):
            ident = _text(el.find(f"{{{ATOM_NS}}}id"))
            updated = _text(el.find(f"{{{ATOM_NS}}}updated")) or _text(
                el.find(f"{{{ATOM_NS}}}published")
            )
            inline = _inline_cap(el)
            url = _atom_link(el, base_url)
            entries.append(Entry(ident or url or "", updated, url, inline))
    elif qname.localname == "rss" or (
        qname.localname == "RDF" and root.find(".//item") is not None
    ):
        for el in root.iter("item"):
            url = _rss_link(el, base_url)
            ident = _text(el.find("guid")) or url or _text(el.find("title"))
            updated = _text(el.find("pubDate"))
            entries.append(Entry(ident, updated, url, _inline_cap(el)))
    else:
        what = f"<{qname.localname}>" + (f" in {qname.namespace}" if qname.namespace else "")
        raise MalformedDocument(
            f"not an ATOM or RSS index: the root element is {what}",
            errors=[FieldError(loc=f"/{qname.localname}", msg="expected an ATOM <feed> or <rss>")],
        )
    return entries
