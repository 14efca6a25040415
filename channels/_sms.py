"""What both SMS providers share: limits, number checks, configuration."""

from __future__ import annotations

import re
from dataclasses import replace

from pydantic import Field

from warnd.channel import ChannelConfig
from warnd.limits import LengthUnit, MessageLimits

SMS_LIMITS = MessageLimits(
    LengthUnit.UCS2, max_length=5 * 67, sms_single=70, sms_part=67, max_parts=5
)
"""Chinese text travels as UCS-2: 70 units in one SMS, 67 per concatenated part."""

_NUMBER = re.compile(r"^\+?[1-9]\d{6,14}$")


class SmsConfig(ChannelConfig):
    sender: str = ""
    """Sender id / number shown to recipients (``from``), when the gateway allows."""
    max_parts: int = Field(default=5, ge=1, le=10)
    """Most parts of a concatenated SMS; rendering cuts longer text."""


def limits_for(config: SmsConfig) -> MessageLimits:
    return replace(SMS_LIMITS, max_parts=config.max_parts, max_length=config.max_parts * 67)


def valid_number(address: str) -> bool:
    """E.164 with or without ``+``, or a national number (China: 11 digits from 1)."""
    return bool(_NUMBER.match(address.replace(" ", "").replace("-", "")))


def ucs2_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
