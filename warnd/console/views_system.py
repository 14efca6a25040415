"""Feed health and the audit trail."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from warnd.auth import Role
from warnd.console.core import ctx_of, page, render
from warnd.feeds.poller import FEEDS

routes = web.RouteTableDef()

REJECTS_SHOWN = 5
AUDIT_PAGE = 100


@routes.get("/feeds")
@page(Role.VIEWER)
async def feeds(request: web.Request) -> web.StreamResponse:
    """Every feed as ``GET /v1/feeds`` shows it, with its latest quarantined items."""
    ctx = ctx_of(request)
    hub = request.config_dict.get(FEEDS)
    items: list[dict[str, Any]] = []
    if hub is not None:
        for health in await hub.healths():
            rejects, total = await hub.ingests[health["name"]].state.rejects(limit=REJECTS_SHOWN)
            items.append({**health, "rejects": rejects, "rejects_total": total})
    return render(ctx, "feeds.html", feeds=items)


@routes.get("/audit")
@page(Role.ADMIN)
async def audit(request: web.Request) -> web.StreamResponse:
    """The audit trail, newest first (``GET /v1/audit`` needs the same admin role)."""
    ctx = ctx_of(request)
    before = request.query.get("before") or None
    if before is not None and not _is_stream_id(before):
        before = None
    event = request.query.get("event") or None
    entries = await ctx.svc.audit.latest(before=before, limit=AUDIT_PAGE, event=event)
    older = entries[-1].id if len(entries) == AUDIT_PAGE else None
    return render(ctx, "audit.html", entries=entries, older=older, event=event or "")


def _is_stream_id(text: str) -> bool:
    ms, _, seq = text.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())
