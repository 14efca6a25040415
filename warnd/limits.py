"""What a channel can carry: the limits rendering must respect.

A channel plugin declares one :class:`MessageLimits`; rendering shapes
each message to it (and says when it had to shorten one). Lengths are
counted the way the channel's provider counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LengthUnit(StrEnum):
    UCS2 = "ucs2"
    """SMS: UTF-16 code units (a character outside the BMP counts two)."""
    UTF8_BYTES = "utf8_bytes"
    """WeChat Work and most HTTP APIs: bytes of the UTF-8 encoding."""
    CHARS = "chars"
    """Display boards and email: Unicode characters."""


@dataclass(frozen=True, slots=True)
class MessageLimits:
    unit: LengthUnit
    max_length: int | None = None
    """Longest body in ``unit``; ``None`` for no limit (email)."""
    sms_single: int = 70
    """UCS-2 units in a single-part SMS."""
    sms_part: int = 67
    """UCS-2 units per part of a concatenated SMS (the UDH takes the rest)."""
    max_parts: int | None = None
    """Most SMS parts to send; longer text is cut and links to the full text."""
    max_subject: int | None = None
    """Email subject length in characters, when the channel has one."""
    line_chars: int | None = None
    """Display boards: characters per line."""
    lines: int | None = None
    """Display boards: lines per screen (times pages, if the board pages)."""
    markdown: bool = False
    """The channel renders markdown (WeChat Work markdown messages)."""
