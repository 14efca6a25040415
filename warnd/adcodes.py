"""Chinese administrative division codes: levels, canonical form, geocode names.

This module is dependency-free so that the store and ingest can use it
without loading geometry; :mod:`warnd.areas` re-exports everything here.

Canonical codes drop the zero padding that GB/T 2260 and the 统计用区划代码
use, so that *prefix means containment*:

=============  ======  ==============  ==================
level          digits  example         padded forms
=============  ======  ==============  ==================
province       2       ``37``          ``370000``, ``370000000000``
prefecture     4       ``3717``        ``371700``, ``371700000000``
county         6       ``371721``      ``371721000``, ``371721000000``
township       9       ``371721001``   ``371721001000``
village        12      ``371721001001``
=============  ======  ==============  ==================

``normalise_code("371700") == "3717"``: a code stands for every area whose
canonical code starts with it (a county code covers its townships and
villages).
"""

from __future__ import annotations

from enum import StrEnum

ADMIN_GEOCODE_NAMES = frozenset(
    {
        "gb/t 2260",
        "gb/t2260",
        "gb2260",
        "adcode",
        "admin_code",
        "行政区划代码",
        "统计用区划代码",
        "cpeas geographic code",  # 国家突发事件预警信息发布系统 CAP profile
    }
)
"""Geocode valueNames (lower-cased, stripped) whose values are Chinese administrative codes."""


def is_admin_geocode(value_name: str) -> bool:
    """Whether a CAP geocode ``valueName`` names a Chinese administrative code scheme."""
    return value_name.strip().lower() in ADMIN_GEOCODE_NAMES


class AreaLevel(StrEnum):
    PROVINCE = "province"
    PREFECTURE = "prefecture"
    COUNTY = "county"
    TOWNSHIP = "township"
    VILLAGE = "village"

    @property
    def digits(self) -> int:
        """Length of a canonical code at this level."""
        return _DIGITS[self]

    @classmethod
    def of(cls, code: str) -> AreaLevel:
        """The level of a *canonical* code (by its length)."""
        try:
            return _BY_DIGITS[len(code)]
        except KeyError:
            raise ValueError(f"{code!r} is not a canonical administrative code") from None


_DIGITS = {
    AreaLevel.PROVINCE: 2,
    AreaLevel.PREFECTURE: 4,
    AreaLevel.COUNTY: 6,
    AreaLevel.TOWNSHIP: 9,
    AreaLevel.VILLAGE: 12,
}
_BY_DIGITS = {v: k for k, v in _DIGITS.items()}
CODE_LENGTHS = (2, 4, 6, 9, 12)
"""The canonical code lengths, broadest first."""


def normalise_code(code: str) -> str:
    """The canonical form of an administrative code (see the module docstring).

    Accepts 2, 4, 6, 9 or 12 ASCII digits, padded or not, with surrounding
    whitespace; strips zero padding level by level (``"371721000000"`` →
    ``"371721"``, ``"370000"`` → ``"37"``). Raises ``ValueError`` saying what
    is wrong for anything else, including the all-zero national code.
    """
    text = code.strip()
    if not text:
        raise ValueError("administrative code is empty")
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"administrative code {code!r} must contain only digits 0-9")
    if len(text) not in CODE_LENGTHS:
        raise ValueError(
            f"administrative code {code!r} has {len(text)} digits;"
            " expected 2, 4, 6, 9 or 12 (province, prefecture, county, township, village)"
        )
    # Strip padding from the finest level up: 12 → 9 → 6 → 4 → 2.
    while len(text) > 2:
        shorter = _PARENT_LENGTH[len(text)]
        if text[shorter:].strip("0"):
            break
        text = text[:shorter]
    if text == "00":
        raise ValueError(f"administrative code {code!r} names no province (all zeros)")
    return text


_PARENT_LENGTH = {12: 9, 9: 6, 6: 4, 4: 2}


def parent_code(code: str) -> str | None:
    """The canonical code one level up, or ``None`` for a province.

    ``code`` must be canonical. The result is canonical and may name an area that is not in
    any registry (e.g. a county directly under a province-level
    municipality still has a ``xx01``/``xx02`` prefecture code).
    """
    shorter = _PARENT_LENGTH.get(len(code))
    if shorter is None:
        return None
    # A township of a prefecture-level city without counties (东莞 4419,
    # 中山 4420, 儋州 4604) has county digits "00": its parent is the city.
    return normalise_code(code[:shorter])


def ancestor_codes(code: str) -> list[str]:
    """Canonical codes of every level above ``code``, nearest first."""
    out: list[str] = []
    cur = parent_code(code)
    while cur is not None:
        out.append(cur)
        cur = parent_code(cur)
    return out


def covers(prefix: str, code: str) -> bool:
    """Whether canonical ``prefix`` stands for canonical ``code`` (itself or an area below it)."""
    return code.startswith(prefix) and len(code) in CODE_LENGTHS
