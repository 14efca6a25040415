"""What both SMS providers share: limits, number checks, configuration."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from pydantic import Field

from warnd.channel import ChannelConfig
from warnd.limits import LengthUnit, MessageLimits

SMS_LIMITS = MessageLimits(
    LengthUnit.UCS2, max_length=5 * 67, sms_single=70, sms_part=67, max_parts=5
)
"""Chinese text travels as UCS-2: 70 units in one SMS, 67 per concatenated part."""

_NUMBER = re.compile(r"\+?[1-9][0-9]{6,14}")
r"""ASCII digits only (``\d`` would take fullwidth ones), the whole text (``$``
would let a trailing line break through)."""


class SmsConfig(ChannelConfig):
    sender: str = ""
    """Sender id / number shown to recipients (``from``), when the gateway allows."""
    max_parts: int = Field(default=5, ge=1, le=10)
    """Most parts of a concatenated SMS; rendering cuts longer text."""


def limits_for(config: SmsConfig) -> MessageLimits:
    return replace(SMS_LIMITS, max_parts=config.max_parts, max_length=config.max_parts * 67)


def valid_number(address: str) -> bool:
    """E.164 with or without ``+``, or a national number (China: 11 digits from 1)."""
    return bool(_NUMBER.fullmatch(address.replace(" ", "").replace("-", "")))


_DIGITS_PLUS_NEWLINE = b"0123456789+\n"


def plain_numbers(numbers: Sequence[str]) -> bool:
    """Whether every number is ``+?[1-9]`` and 6 to 14 more digits (as
    :func:`valid_number` accepts it without cleaning), none holding a line
    break: checked on the bytes with numpy, a thousand numbers at a time."""
    joined = "\n".join(numbers)
    if not numbers or not joined.isascii():
        return False
    raw = joined.encode()
    if raw.translate(None, _DIGITS_PLUS_NEWLINE):
        return False  # a character that is none of these
    b = np.frombuffer(raw, np.uint8)
    breaks = np.flatnonzero(b == 10)
    if len(breaks) != len(numbers) - 1:
        return False  # a number holding a line break
    starts = np.concatenate(([0], breaks + 1))
    lengths = np.concatenate((breaks, [len(b)])) - starts
    if int(lengths.min()) < 7:
        return False
    plus = b[starts] == 43
    digits = lengths - plus
    if int(digits.min()) < 7 or int(digits.max()) > 15:
        return False
    first = b[starts + plus]
    if bool(((first == 48) | (first == 43)).any()):
        return False  # a leading 0, or a second +
    return int(np.count_nonzero(b == 43)) == int(np.count_nonzero(plus))  # + only in front


def ucs2_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
