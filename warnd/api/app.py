"""The aiohttp application: ``create_app(settings)`` and its lifecycle.

Each long-lived resource is one ``cleanup_ctx`` entry: the Redis
connection (and the embedded server when warnd owns it), the services,
the expiry sweeper. Failures become problem+json in one middleware;
authentication is one middleware driven by the route table.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import structlog
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from warnd.api import alerts as _alerts  # noqa: F401 - registers the alert routes
from warnd.api import coverage as _coverage  # noqa: F401 - registers its routes
from warnd.api import deliveries as _deliveries  # noqa: F401 - registers its routes
from warnd.api.areas import setup_areas
from warnd.api.context import PRINCIPAL, SERVICES, Services, principal_of
from warnd.api.feeds import setup_feeds
from warnd.api.metrics import metrics_middleware, setup_metrics
from warnd.api.problems import Handler, problem_middleware
from warnd.api.receipts import setup_channels
from warnd.api.routes import Param, Response, openapi_document, route, setup_routes, spec_for
from warnd.api.schemas import AuditPage, Health
from warnd.api.subscribers import setup_subscribers
from warnd.auth import Role
from warnd.channel import Channel
from warnd.console import setup_console
from warnd.dispatch.service import setup_dispatch
from warnd.errors import BadRequest, Unauthorized
from warnd.redis_server import open_redis
from warnd.settings import Settings
from warnd.taxonomy import Taxonomy

log = structlog.get_logger("warnd.api")

SETTINGS = web.AppKey("settings", Settings)
OPENAPI = web.AppKey("openapi", dict)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate the bearer token and check the role the route declares."""
    spec = spec_for(request.match_info.handler)
    if spec is None or spec.role is None:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "send 'Authorization: Bearer <token>' (create one with `warnd token create`)"
        )
    principal = await request.app[SERVICES].tokens.authenticate(token.strip())
    principal.require(spec.role)
    request[PRINCIPAL] = principal
    structlog.contextvars.bind_contextvars(token=principal.name)
    try:
        return await handler(request)
    finally:
        structlog.contextvars.unbind_contextvars("token")


# ------------------------------------------------------------------ system


@route(
    "GET",
    "/healthz",
    summary="The process is up",
    role=None,
    tag="system",
    responses={200: Response("Up", Health)},
)
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@route(
    "GET",
    "/readyz",
    summary="Redis is reachable",
    role=None,
    tag="system",
    responses={200: Response("Ready", Health), 503: Response("Redis unreachable", Health)},
)
async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[SERVICES].redis.ping(), timeout=2.0)
    except (RedisError, OSError, TimeoutError) as exc:
        return web.json_response(
            {"status": "unavailable", "detail": f"Redis: {exc or type(exc).__name__}"},
            status=503,
        )
    return web.json_response({"status": "ok"})


@route(
    "GET",
    "/v1/openapi.json",
    summary="This API's OpenAPI 3.1 document",
    role=None,
    tag="system",
    responses={200: Response("OpenAPI document")},
)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


@route(
    "GET",
    "/v1/audit",
    summary="Read the audit trail, oldest first",
    role=Role.ADMIN,
    tag="system",
    params=(
        Param("after", "Return entries after this entry id (from `next`)"),
        Param("event", "Only this event, e.g. alert.refused"),
        Param("limit", "Page size, 1 to 1000", {"type": "integer"}),
    ),
    responses={200: Response("A page of audit entries", AuditPage)},
)
async def read_audit(request: web.Request) -> web.Response:
    principal_of(request)
    q = request.query
    try:
        limit = int(q.get("limit", "100"))
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        raise BadRequest("limit must be an integer between 1 and 1000") from None
    after = q.get("after") or None
    if after is not None and not _is_stream_id(after):
        raise BadRequest(f"after={after!r} is not an audit entry id like 1718000000000-0")
    entries = await request.app[SERVICES].audit.read(
        after=after, limit=limit, event=q.get("event") or None
    )
    nxt = None
    if len(entries) == limit:
        params = f"after={entries[-1].id}&limit={limit}"
        if q.get("event"):
            params += f"&event={q['event']}"
        nxt = f"/v1/audit?{params}"
    page = AuditPage(items=entries, next=nxt)
    return web.Response(text=page.model_dump_json(), content_type="application/json")


def _is_stream_id(text: str) -> bool:
    ms, _, seq = text.partition("-")
    return ms.isdigit() and (seq == "" or seq.isdigit())


# --------------------------------------------------------------- lifecycle


def create_app(
    settings: Settings,
    *,
    redis: Redis | None = None,
    taxonomy: Taxonomy | None = None,
    channels: Mapping[str, Channel] | None = None,
    poll_feeds: bool = True,
) -> web.Application:
    """Build the application. With ``redis`` given (tests, embedding), use it;
    otherwise connect as configured (starting the embedded server if needed).
    ``poll_feeds=False`` builds the feeds without starting their polling tasks."""
    app = web.Application(middlewares=[metrics_middleware, problem_middleware, auth_middleware])
    app[SETTINGS] = settings
    app[OPENAPI] = openapi_document()
    tax = taxonomy if taxonomy is not None else Taxonomy.load(settings.taxonomy_file)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        if redis is not None:
            app[SERVICES] = Services.build(settings, redis, tax)
            yield
            return
        handle = await open_redis(settings)
        app[SERVICES] = Services.build(settings, handle.client, tax)
        try:
            yield
        finally:
            await handle.aclose()

    async def sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(
            _sweep_expired(app[SERVICES], settings.expiry_sweep_seconds, stop)
        )
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(sweeper_ctx)
    setup_channels(app, settings, channels=channels)
    setup_areas(app, settings)  # after services_ctx: loads the area registry
    setup_subscribers(app, settings)  # loads the subscriber index; registers routes
    setup_feeds(app, poll=poll_feeds)  # after services_ctx: feed pollers and push
    setup_dispatch(app, settings)  # after channels, areas, subscribers: fan-out
    setup_console(app, settings)  # after services: the duty officer's pages (/console/)
    setup_metrics(app, settings)  # after services: counts accepted alerts
    setup_routes(app)
    return app


async def _sweep_expired(svc: Services, every: float, stop: asyncio.Event) -> None:
    """Persist expiries so the audit trail and logs show them as they happen.

    Reads never depend on this: a record's effective state already says
    expired once its time has passed. The loop watches ``stop`` as well as
    cancellation because redis-py can swallow a cancel that lands while it
    is connecting.
    """
    while not stop.is_set():
        try:
            await svc.intake.expire_due()
        except (RedisError, OSError) as exc:
            log.warning("alert.expiry_sweep_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
