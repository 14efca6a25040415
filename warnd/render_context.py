"""What a message template sees: the variables built from an alert and info.

:func:`base_context` builds everything from the alert once per variant;
:func:`compose` turns it into the template's variables for one *cut*
(:class:`Cut`), the state of shortening: which sections are still whole.
The names are listed in :data:`VARIABLES` (and in ``templates/README.md``);
a template using any other name fails to load.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from warnd.guidelines import Guideline
from warnd.model import Alert, Info, Level, MsgType, Status
from warnd.taxonomy import Taxonomy
from warnd.textfit import ELLIPSIS, graphemes

__all__ = ["AREA_VARIABLES", "VARIABLES", "Cut", "base_context", "compose"]

VARIABLES = frozenset(
    {
        "office", "sender", "identifier", "status", "status_tag", "msg_type",
        "is_alert", "is_update", "is_cancel", "hazard", "hazard_code", "level",
        "level_name", "title", "event", "headline", "description", "instruction",
        "areas", "area_text", "area_count", "sent", "onset", "expires", "valid",
        "guide", "standard", "url", "web", "contact", "language", "shortened",
    }
)  # fmt: skip
"""Every variable a template may use."""

AREA_VARIABLES = frozenset({"areas", "area_text", "area_count"})
"""Templates that use none of these render once for all areas."""

_LEVEL_NAMES: dict[str, dict[Level, str]] = {
    "zh-Hans": {Level.BLUE: "蓝色", Level.YELLOW: "黄色", Level.ORANGE: "橙色", Level.RED: "红色"},
    "zh-Hant": {Level.BLUE: "藍色", Level.YELLOW: "黃色", Level.ORANGE: "橙色", Level.RED: "紅色"},
    "en": {Level.BLUE: "Blue", Level.YELLOW: "Yellow", Level.ORANGE: "Orange", Level.RED: "Red"},
}
_STATUS_TAGS: dict[str, dict[Status, str]] = {
    "zh-Hans": {Status.EXERCISE: "【演练】", Status.TEST: "【测试】", Status.SYSTEM: "【系统】",
                Status.DRAFT: "【草稿】"},
    "zh-Hant": {Status.EXERCISE: "【演練】", Status.TEST: "【測試】", Status.SYSTEM: "【系統】",
                Status.DRAFT: "【草稿】"},
    "en": {Status.EXERCISE: "[EXERCISE] ", Status.TEST: "[TEST] ", Status.SYSTEM: "[SYSTEM] ",
           Status.DRAFT: "[DRAFT] "},
}  # fmt: skip
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _family(language: str) -> str:
    """The wording family of a template language: zh-Hans, zh-Hant or en."""
    if language.startswith("zh"):
        return "zh-Hant" if language == "zh-Hant" else "zh-Hans"
    return "en"


@dataclass(frozen=True, slots=True)
class Cut:
    """How far a message has been shortened (``Cut()`` is the whole message)."""

    standard: bool = True
    guide: int | None = None
    """Guideline items kept (``None``: all)."""
    instruction: bool = True
    description: int | None = None
    """Grapheme clusters of the description kept (``None``: all, 0: none)."""
    headline: bool = True
    areas: int | None = None
    """Area names listed before "and N more" (``None``: all)."""

    @property
    def whole(self) -> bool:
        return self == Cut()


def _clean(text: str | None) -> str:
    """One paragraph: lines stripped and joined (no space between CJK lines)."""
    if not text:
        return ""
    out = ""
    for line in (ln.strip() for ln in text.splitlines()):
        if not line:
            continue
        if out and not (_wide(out[-1]) or _wide(line[0])):
            out += " "
        out += line
    return out


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _time(value: datetime, family: str, zone: ZoneInfo) -> str:
    local = value.astimezone(zone)
    if family.startswith("zh"):
        return f"{local.month}月{local.day}日{local:%H:%M}"
    return f"{local.day} {_MONTHS[local.month - 1]} {local:%H:%M}"


def _offset(zone: ZoneInfo, when: datetime) -> str:
    """``UTC+8``, ``UTC-3:30``: the zone's offset at ``when``."""
    offset = when.astimezone(zone).strftime("%z")
    sign, hours, minutes = offset[0], int(offset[1:3]), offset[3:5]
    return f"UTC{sign}{hours}" + (f":{minutes}" if minutes != "00" else "")


def _valid(start: datetime, end: datetime | None, family: str, zone: ZoneInfo) -> str:
    first = _time(start, family, zone)
    if family.startswith("zh"):
        if end is None:
            return f"{first}起，直至解除"
        same_day = start.astimezone(zone).date() == end.astimezone(zone).date()
        last = f"{end.astimezone(zone):%H:%M}" if same_day else _time(end, family, zone)
        return f"{first}至{last}"
    tz = _offset(zone, start)
    if end is None:
        return f"from {first} ({tz}) until further notice"
    same_day = start.astimezone(zone).date() == end.astimezone(zone).date()
    last = f"{end.astimezone(zone):%H:%M}" if same_day else _time(end, family, zone)
    return f"{first} to {last} ({tz})"


def _title(family: str, hazard_name: str, level_name: str, classified: bool) -> str:
    if not classified:
        return hazard_name
    if family == "zh-Hans":
        return f"{hazard_name}{level_name}预警"
    if family == "zh-Hant":
        return f"{hazard_name}{level_name}預警"
    return f"{hazard_name} {level_name} Warning".replace("  ", " ")


def _area_text(names: Sequence[str], keep: int | None, family: str) -> str:
    if keep is None or keep >= len(names):
        return ("、" if family.startswith("zh") else ", ").join(names)
    listed = names[:keep]
    if family == "zh-Hans":
        return "、".join(listed) + f"等{len(names)}个地区"
    if family == "zh-Hant":
        return "、".join(listed) + f"等{len(names)}個地區"
    more = len(names) - keep
    return ", ".join(listed) + f" and {more} more area{'s' if more != 1 else ''}"


def base_context(
    alert: Alert,
    info: Info,
    language: str,
    area_names: Sequence[str],
    guideline: Guideline | None,
    url: str,
    taxonomy: Taxonomy,
    zone: ZoneInfo,
) -> dict[str, Any]:
    """The whole message's variables, before any cut."""
    family = _family(language)
    hazard = taxonomy.get(info.hazard) if info.hazard and info.hazard in taxonomy else None
    hazard_name = hazard.name(language) if hazard else _clean(info.event)
    if hazard is not None and hazard.code == "other" and info.event.strip():
        hazard_name = _clean(info.event)  # the catch-all: its own event names it
    level_name = _LEVEL_NAMES[family][info.level] if info.level is not None else ""
    names = list(dict.fromkeys(n.strip() for n in area_names if n.strip()))
    if not names:
        names = list(dict.fromkeys(a.area_desc.strip() for a in info.areas if a.area_desc.strip()))
    start = info.onset or info.effective or alert.sent
    return {
        "office": _clean(info.sender_name) or alert.sender,
        "sender": alert.sender,
        "identifier": alert.identifier,
        "status": alert.status.value,
        "status_tag": _STATUS_TAGS[family].get(alert.status, ""),
        "msg_type": alert.msg_type.value,
        "is_alert": alert.msg_type not in (MsgType.UPDATE, MsgType.CANCEL),
        "is_update": alert.msg_type is MsgType.UPDATE,
        "is_cancel": alert.msg_type is MsgType.CANCEL,
        "hazard": hazard_name,
        "hazard_code": info.hazard or "",
        "level": info.level.value if info.level is not None else "",
        "level_name": level_name,
        "title": _title(family, hazard_name, level_name, hazard is not None),
        "event": _clean(info.event),
        "headline": _clean(info.headline),
        "description": _clean(info.description),
        "instruction": _clean(info.instruction),
        "areas": names,
        "area_count": len(names),
        "sent": _time(alert.sent, family, zone),
        "onset": _time(start, family, zone),
        "expires": _time(info.expires, family, zone) if info.expires else "",
        "valid": _valid(start, info.expires, family, zone),
        "guide": list(guideline.items) if guideline else [],
        "standard": guideline.standard or "" if guideline else "",
        "url": url,
        "web": (info.web or "").strip(),
        "contact": _clean(info.contact),
        "language": language,
        "_family": family,
    }


def compose(base: dict[str, Any], cut: Cut) -> dict[str, Any]:
    """The template variables of ``base`` with ``cut`` applied."""
    ctx = {k: v for k, v in base.items() if not k.startswith("_")}
    ctx["shortened"] = not cut.whole
    ctx["area_text"] = _area_text(base["areas"], cut.areas, base["_family"])
    if cut.areas is not None and cut.areas < len(base["areas"]):
        ctx["areas"] = base["areas"][: cut.areas]
    if not cut.standard:
        ctx["standard"] = ""
    if cut.guide is not None:
        ctx["guide"] = base["guide"][: cut.guide]
    if not cut.instruction:
        ctx["instruction"] = ""
    if not cut.headline:
        ctx["headline"] = ""
    if cut.description is not None:
        clusters = graphemes(base["description"])
        if cut.description <= 0:
            ctx["description"] = ""
        elif cut.description < len(clusters):
            kept = "".join(clusters[: cut.description]).rstrip(" ，、；,;：:")
            ctx["description"] = kept + ELLIPSIS
    return ctx
