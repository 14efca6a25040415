"""Counting, cutting and wrapping text the way channels count it.

Every cut here falls between grapheme clusters (Unicode extended grapheme
clusters, ``regex``'s ``\\X``): a surrogate pair, a character with its
combining marks, a flag or an emoji ZWJ sequence is kept whole or dropped
whole, never split.

SMS parts are counted as handsets and gateways split a UCS-2 message: up to
``single`` UTF-16 code units fit one SMS; a longer text goes out in parts of
``part`` units each (the concatenation header takes the rest), filled in
order, and a character outside the BMP (two code units) is never split
across two parts, so it moves to the next part whole.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable

import regex

from warnd.limits import LengthUnit

__all__ = [
    "ELLIPSIS",
    "cut_to_fit",
    "graphemes",
    "length",
    "sms_parts",
    "sms_segments",
    "ucs2_units",
    "utf8_bytes",
    "wrap",
]

ELLIPSIS = "…"

_GRAPHEME = regex.compile(r"\X")
# Closing punctuation that must not begin a line (禁则): it stays with the
# character before it.
_NO_LINE_START = frozenset("，。、；：！？）》」』】〕’”…%,.;:!?)]}")


def graphemes(text: str) -> list[str]:
    """The extended grapheme clusters of ``text``, in order."""
    found: list[str] = _GRAPHEME.findall(text)
    return found


def ucs2_units(text: str) -> int:
    """UTF-16 code units: a character outside the BMP counts two."""
    return len(text.encode("utf-16-le")) // 2


def utf8_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def length(text: str, unit: LengthUnit) -> int:
    """``text``'s length as a channel of ``unit`` counts it."""
    if unit is LengthUnit.UCS2:
        return ucs2_units(text)
    if unit is LengthUnit.UTF8_BYTES:
        return utf8_bytes(text)
    return len(graphemes(text))


def sms_segments(text: str, single: int = 70, part: int = 67) -> list[str]:
    """The parts ``text`` is sent in (one part when it fits ``single`` units)."""
    if not text:
        return []
    if ucs2_units(text) <= single:
        return [text]
    segments: list[str] = []
    start = used = 0
    for i, ch in enumerate(text):
        width = 2 if ord(ch) > 0xFFFF else 1
        if used + width > part:
            segments.append(text[start:i])
            start, used = i, 0
        used += width
    segments.append(text[start:])
    return segments


def sms_parts(text: str, single: int = 70, part: int = 67) -> int:
    """How many SMS parts ``text`` takes (0 for an empty text)."""
    units = ucs2_units(text)
    if units == 0:
        return 0
    if units <= single:
        return 1
    if units == len(text):  # no character outside the BMP: plain arithmetic
        return -(-units // part)
    return len(sms_segments(text, single, part))


def cut_to_fit(text: str, fits: Callable[[str], bool], *, ellipsis: str = ELLIPSIS) -> str:
    """The longest grapheme prefix of ``text`` that, with ``ellipsis``, fits.

    Returns ``text`` itself when it fits whole, and ``""`` when not even the
    ellipsis alone fits. Trailing whitespace and separators before the
    ellipsis are dropped; a Latin word is not cut in the middle when a word
    boundary lies within the last 16 characters.
    """
    if fits(text):
        return text
    clusters = graphemes(text)
    lo, hi = 0, len(clusters) - 1  # the answer keeps lo..hi clusters
    if not fits(ellipsis):
        return ""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(_with_ellipsis(clusters[:mid], ellipsis)):
            lo = mid
        else:
            hi = mid - 1
    kept = clusters[:lo]
    if kept and kept[-1].isascii() and kept[-1].isalnum() and lo < len(clusters):
        following = clusters[lo]
        if following.isascii() and following.isalnum():
            for back in range(len(kept) - 1, max(len(kept) - 17, 0), -1):
                if kept[back].isspace():
                    kept = kept[:back]
                    break
    return _with_ellipsis(kept, ellipsis)


def _with_ellipsis(clusters: list[str], ellipsis: str) -> str:
    return "".join(clusters).rstrip(" \t\n,，、;；:：") + ellipsis


@functools.lru_cache(maxsize=8192)
def _wide(cluster: str) -> bool:
    """CJK and other full-width clusters: wrapped one by one, like words."""
    return unicodedata.east_asian_width(cluster[0]) in ("W", "F")


def _tokens(paragraph: str) -> list[list[str]]:
    """Words, spaces and single wide clusters, in order, as lists of clusters."""
    tokens: list[list[str]] = []
    word: list[str] = []
    for cluster in graphemes(paragraph):
        if cluster.isspace():
            if word:
                tokens.append(word)
                word = []
            tokens.append([" "])
        elif _wide(cluster):
            if word:
                tokens.append(word)
                word = []
            tokens.append([cluster])
        else:
            word.append(cluster)
    if word:
        tokens.append(word)
    return tokens


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` grapheme clusters for a display board.

    CJK wraps between any two characters, Latin text between words (a word
    longer than a line is split); a closing punctuation mark never starts a
    line, it takes the last character of the line before along. Each
    newline in ``text`` starts a new line; blank lines are dropped.
    """
    if width < 1:
        raise ValueError("width must be at least 1")
    lines: list[str] = []
    for paragraph in text.splitlines():
        current: list[str] = []  # clusters of the line being filled
        for clusters in _tokens(paragraph):
            if clusters == [" "]:
                if current and len(current) < width:
                    current.append(" ")
                continue
            while len(clusters) > width:  # a word longer than a line
                if current:
                    lines.append("".join(current).rstrip())
                    current = []
                lines.append("".join(clusters[:width]))
                clusters = clusters[width:]
            if len(current) + len(clusters) <= width:
                current.extend(clusters)
                continue
            carried: list[str] = []
            if (
                clusters[0] in _NO_LINE_START
                and len(current) > 1
                and not current[-1].isspace()
                and len(clusters) < width
            ):
                carried = [current.pop()]
            lines.append("".join(current).rstrip())
            current = carried + clusters
        if current and "".join(current).strip():
            lines.append("".join(current).rstrip())
    return [line for line in lines if line]
