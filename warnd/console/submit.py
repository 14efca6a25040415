"""Console forms into the operator intake: the same path as ``POST /v1/alerts``."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from warnd.api.alerts import Build, intake_alert
from warnd.console.core import Ctx
from warnd.ingest import Accepted, Idempotency

_FORM_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_form_id() -> str:
    """A fresh id for one rendered form: submitting it twice makes one alert."""
    return secrets.token_urlsafe(16)


def body_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode()


async def submit(ctx: Ctx, body: bytes, build: Build, form_id: str) -> Accepted:
    """Submit through :func:`warnd.api.alerts.intake_alert` as the logged-in operator.

    The form id is the Idempotency-Key: a double click, or the browser
    re-posting the form, returns the alert the first post made.
    """
    idem = None
    if _FORM_ID.match(form_id):
        idem = Idempotency.of(f"console:{form_id}", ctx.request.path.encode() + body)
    return await intake_alert(ctx.svc, ctx.user, body, build, idempotency=idem)
