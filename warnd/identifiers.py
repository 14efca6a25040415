"""Identifiers: warnd's alert ids and GB/T 35965.1-style CAP identifiers."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")


def alert_id(sender: str, identifier: str) -> str:
    """warnd's id for a CAP message: derived from sender and identifier.

    CAP makes (sender, identifier) unique, so deriving the id from it makes
    deduplication a property of the key space: the same message arriving
    twice, from two feeds or after a restart, lands on the same key. The
    id is URL-safe and short enough to read out over the phone.
    """
    digest = hashlib.sha256(f"{sender}\n{identifier}".encode()).digest()
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def cap_identifier(area_code: str, unit_code: str, when: datetime, seq: int) -> str:
    """A CAP identifier in the GB/T 35965.1 style.

    ``<6-digit area code><unit code>_<YYYYMMDDhhmmss>_<n>`` with the time in
    Beijing time, as the national early-warning release system writes them.
    ``seq`` disambiguates messages issued by one unit in the same second.
    """
    stamp = when.astimezone(BEIJING).strftime("%Y%m%d%H%M%S")
    return f"{area_code}{unit_code}_{stamp}_{seq}"


def beijing_now() -> datetime:
    return datetime.now(BEIJING).replace(microsecond=0)
