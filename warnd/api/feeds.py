"""Feed endpoints: health, quarantine, and the push door for upstreams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from warnd.api.context import SERVICES, read_body
from warnd.api.routes import Param, Response, route
from warnd.auth import Role
from warnd.errors import BadRequest, UnsupportedMediaType
from warnd.feeds.poller import FEEDS, FeedHub

NAME = "{name}"
_PUSH_TYPES = ("application/cap+xml", "application/xml", "text/xml")


class FeedHealth(BaseModel):
    """One feed's definition summary and health."""

    name: str
    kind: str
    enabled: bool
    url: str | None = Field(description="The polled URL (query string elided)")
    interval: float | None
    polled_by: str | None = Field(description="The warnd process holding the feed's lease")
    status: str = Field(description="ok, failing, or pending (never polled successfully)")
    last_poll_at: float | None
    last_success_at: float | None
    last_error: str | None
    last_error_at: float | None
    consecutive_failures: int
    next_poll_at: float | None
    last_reject: str | None
    last_reject_at: float | None
    poller: str | None = Field(description="The process that polled last")
    polls: int
    accepted: int = Field(description="Items that became new alerts")
    duplicates: int = Field(description="Items already known (same sender and identifier)")
    rejected: int = Field(description="Items quarantined (each broken body counted once)")
    failures: int = Field(description="Failed polls, in all")


class FeedList(BaseModel):
    items: list[FeedHealth]


class FeedReject(BaseModel):
    at: float
    item: str
    reason: str
    errors: list[dict[str, Any]]
    body_sha256: str
    body_bytes: int
    body: str = Field(description="The start of the body as received (UTF-8, lossy)")


class FeedRejectPage(BaseModel):
    items: list[FeedReject]
    total: int = Field(description="Quarantined items kept for this feed")
    next: str | None


class PushItem(BaseModel):
    item: str
    id: str | None = None
    created: bool | None = None
    state: str | None = None
    warnings: list[str] = Field(default_factory=list)
    rejected: bool = False
    reason: str | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)


class PushResult(BaseModel):
    items: list[PushItem]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False), status=status, content_type="application/json"
    )


@route(
    "GET",
    "/v1/feeds",
    summary="Every configured feed with its health",
    role=Role.VIEWER,
    tag="feeds",
    responses={200: Response("Feeds", FeedList)},
)
async def list_feeds(request: web.Request) -> web.Response:
    return _json({"items": await request.app[FEEDS].healths()})


@route(
    "GET",
    f"/v1/feeds/{NAME}",
    summary="One feed's health",
    role=Role.VIEWER,
    tag="feeds",
    responses={200: Response("The feed", FeedHealth), 404: Response("No such feed")},
)
async def get_feed(request: web.Request) -> web.Response:
    return _json(await request.app[FEEDS].health(request.match_info["name"]))


@route(
    "GET",
    f"/v1/feeds/{NAME}/rejects",
    summary="Items of a feed that were quarantined, newest first, with the reason",
    role=Role.VIEWER,
    tag="feeds",
    params=(
        Param("offset", "Skip this many (from `next`)", {"type": "integer"}),
        Param("limit", "Page size, 1 to 200", {"type": "integer"}),
    ),
    responses={200: Response("Quarantined items", FeedRejectPage), 404: Response("No such feed")},
)
async def feed_rejects(request: web.Request) -> web.Response:
    hub = request.app[FEEDS]
    name = request.match_info["name"]
    hub.feed(name)
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "50"))
        if offset < 0 or not 1 <= limit <= 200:
            raise ValueError
    except ValueError:
        raise BadRequest("offset must be 0 or more and limit between 1 and 200") from None
    rejects, total = await hub.ingests[name].state.rejects(offset=offset, limit=limit)
    nxt = None
    if offset + len(rejects) < total:
        nxt = f"/v1/feeds/{name}/rejects?offset={offset + len(rejects)}&limit={limit}"
    return _json({"items": [r.as_dict() for r in rejects], "total": total, "next": nxt})


@route(
    "POST",
    f"/v1/feeds/{NAME}",
    summary="Push CAP to a push feed (authenticated with that feed's own token)",
    role=None,
    tag="feeds",
    body={"application/cap+xml": "A CAP 1.2/1.1 alert, or an <alerts> wrapper of several"},
    responses={
        202: Response("At least one new alert", PushResult),
        200: Response("Every alert already known", PushResult),
        401: Response("Missing or wrong feed token"),
        404: Response("No such push feed"),
        413: Response("Body larger than the configured limit"),
    },
)
async def push_to_feed(request: web.Request) -> web.Response:
    """Send `Authorization: Bearer <feed token>`: the token configured for this
    feed (token_env / token_file), not an operator token. Broken alerts are
    quarantined and answered with problem+json; an `<alerts>` wrapper is
    answered per alert."""
    hub = request.app[FEEDS]
    name = request.match_info["name"]
    ingest = hub.push_ingest(name, request.headers.get("Authorization", ""))
    if request.content_type.lower() not in _PUSH_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {request.content_type!r}: push CAP as application/cap+xml"
        )
    settings = request.app[SERVICES].settings
    body = await read_body(request, min(settings.http.max_body_bytes, ingest.feed.max_bytes))
    tally = await ingest.cap_document(
        body, item=f"push from {request.remote}", audit_duplicates=True
    )
    await ingest.state.count(accepted=tally.accepted, duplicates=tally.duplicates)
    errors = [r.error for r in tally.results if r.error is not None]
    if errors and len(errors) == len(tally.results):
        raise errors[0]
    status = 202 if tally.accepted else 200
    return _json({"items": [r.as_dict() for r in tally.results]}, status=status)


def setup_feeds(app: web.Application, *, poll: bool = True) -> None:
    """Add the feeds cleanup_ctx entry (after services_ctx): the hub, its
    HTTP session and, with ``poll``, one supervised polling task per feed.

    Tests pass ``poll=False`` and drive polls with ``FeedPoller.poll_once``.
    """

    async def feeds_ctx(app: web.Application) -> AsyncIterator[None]:
        hub = FeedHub(app[SERVICES])
        app[FEEDS] = hub
        await hub.start(poll=poll)
        try:
            yield
        finally:
            await hub.stop()

    app.cleanup_ctx.append(feeds_ctx)
