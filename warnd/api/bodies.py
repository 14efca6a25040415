"""Alert request bodies: CAP XML or warnd JSON, parsed the same way everywhere.

Used by the alert endpoints and by the match preview, so an alert body
that previews cleanly is one that submits cleanly.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from warnd.api.context import Services
from warnd.api.routes import CAP_TYPES
from warnd.cap import parse_cap
from warnd.errors import FieldError, MalformedDocument, UnsupportedMediaType
from warnd.jsonform import NextSeq, alert_from_json
from warnd.model import Alert


async def parse_alert_body(
    request: web.Request, svc: Services, body: bytes, *, next_seq: NextSeq | None = None
) -> tuple[Alert, list[str]]:
    """The alert in ``body`` by the request's content type, and parse warnings.

    ``next_seq`` numbers the identifier of a JSON alert that has none
    (default: the shared Redis counter).
    """
    ctype = request.content_type.lower()
    if ctype in CAP_TYPES:
        parsed = parse_cap(body, max_bytes=svc.settings.http.max_body_bytes)
        return parsed.alert, list(parsed.warnings)
    if ctype == "application/json":
        alert = await alert_from_json(
            parse_json(body),
            issuer=svc.settings.issuer,
            taxonomy=svc.taxonomy,
            next_seq=next_seq or svc.next_identifier_seq,
        )
        return alert, []
    raise UnsupportedMediaType(
        f"Content-Type {request.content_type!r} is not accepted: send CAP as"
        " application/cap+xml (or application/xml) or an alert as application/json"
    )


def parse_json(body: bytes) -> Any:
    """JSON from a request body, or MalformedDocument saying where it breaks."""
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise MalformedDocument(
            "the body is not UTF-8 JSON", errors=[FieldError(loc="/", msg=str(exc))]
        ) from None
    except json.JSONDecodeError as exc:
        raise MalformedDocument(
            "the body is not valid JSON",
            errors=[FieldError(loc="/", msg=exc.msg, line=exc.lineno)],
        ) from None
