"""The JSON form of an alert, as operators post it.

It is the CAP model (:class:`warnd.model.Alert`) field for field, with the
parts a duty officer should not have to type filled in: identifier (GB/T
35965.1 style), sender, sent (Beijing time), status, scope and msgType;
and per info block, when ``hazard`` and ``level`` are given, the CAP
category, event, severity, urgency, certainty, language and sender name.
Anything the body does say is kept as said.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from warnd.errors import AlertInvalid, FieldError, field_errors
from warnd.identifiers import beijing_now, cap_identifier
from warnd.model import Alert, Level, format_cap_datetime
from warnd.settings import IssuerSettings
from warnd.taxonomy import Taxonomy

NextSeq = Callable[[str], Awaitable[int]]
"""Returns a sequence number unique within one second-stamp (e.g. Redis INCR)."""


async def alert_from_json(
    data: Any, *, issuer: IssuerSettings, taxonomy: Taxonomy, next_seq: NextSeq
) -> Alert:
    if not isinstance(data, dict):
        raise AlertInvalid(
            "the alert body must be a JSON object",
            errors=[FieldError(loc="/", msg=f"expected an object, got {type(data).__name__}")],
        )
    body = dict(data)
    body.setdefault("status", "Actual")
    body.setdefault("scope", "Public")
    body.setdefault("msg_type", "Alert")
    body.setdefault("sender", issuer.sender)
    if "sent" not in body:
        sent = beijing_now()
        body["sent"] = format_cap_datetime(sent)
        if "identifier" not in body:
            stamp = sent.strftime("%Y%m%d%H%M%S")
            seq = await next_seq(stamp)
            body["identifier"] = cap_identifier(issuer.area_code, issuer.unit_code, sent, seq)
    elif "identifier" not in body:
        raise AlertInvalid(
            "an alert that gives its own sent time must give its identifier too",
            errors=[FieldError(loc="/identifier", msg="Field required")],
        )
    infos = body.get("infos")
    if isinstance(infos, list):
        body["infos"] = [
            _fill_info(info, issuer, taxonomy) if isinstance(info, dict) else info for info in infos
        ]
    try:
        return Alert.model_validate(body)
    except ValidationError as exc:
        raise AlertInvalid("the alert is not valid", errors=field_errors(exc)) from None


def _fill_info(info: dict[str, Any], issuer: IssuerSettings, taxonomy: Taxonomy) -> dict[str, Any]:
    info = dict(info)
    code = info.get("hazard")
    level: Level | None = None
    raw_level = info.get("level")
    if isinstance(raw_level, str):
        try:
            level = Level.parse(raw_level)
            info["level"] = level.value
        except ValueError:
            pass  # the model reports the bad level with its location
    if not isinstance(code, str) or code not in taxonomy:
        return info  # the model (or ingest) reports the unknown hazard
    hazard = taxonomy.get(code)
    language = info.setdefault("language", "zh-CN")
    info.setdefault("categories", [hazard.category.value])
    name = hazard.name(language)
    if level is not None:
        if language.lower().startswith("zh"):
            info.setdefault("event", f"{name}{level.zh}预警")
        else:
            info.setdefault("event", f"{name} {level.value} warning")
        info.setdefault("severity", level.severity.value)
        info.setdefault("urgency", "Immediate" if level.rank >= 3 else "Expected")
    else:
        info.setdefault("event", f"{name}预警" if language.lower().startswith("zh") else name)
    info.setdefault("certainty", "Likely")
    info.setdefault("sender_name", issuer.sender_name)
    return info
