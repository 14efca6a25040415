"""Response bodies of the HTTP API (the request bodies are the model's)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from warnd.audit import AuditEntry
from warnd.store import AlertRecord


class Problem(BaseModel):
    """RFC 9457 problem details, with every offending field listed."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)


class AlertLinks(BaseModel):
    self: str
    cap: str


class AlertAccepted(BaseModel):
    """Answer to a submitted alert: new (202) or already known (200)."""

    id: str
    identifier: str
    sender: str
    state: str
    created: bool
    warnings: list[str]
    changed: dict[str, str] = Field(
        default_factory=dict, description="Earlier alerts whose state this one changed"
    )
    links: AlertLinks


class AlertView(BaseModel):
    """An alert record with its state as of now."""

    record: AlertRecord
    links: AlertLinks


class AlertSummary(BaseModel):
    id: str
    identifier: str
    sender: str
    sent: str
    msg_type: str
    state: str
    hazard: str | None
    level: str | None
    areas: list[str]
    area_names: list[str]
    headline: str | None
    expires: str | None
    received_at: str
    chain: str
    links: AlertLinks


class AlertPage(BaseModel):
    items: list[AlertSummary]
    next: str | None = Field(description="URL of the next page, if there is one")


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next: str | None


class CancelBody(BaseModel):
    """Optional body of ``POST /v1/alerts/{id}/cancel``."""

    note: str | None = Field(default=None, description="Why the warning is lifted (解除原因)")


class Health(BaseModel):
    status: str
    detail: str | None = None
