"""``GET /metrics`` and the middleware that counts HTTP requests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from warnd.api.context import SERVICES
from warnd.api.problems import Handler
from warnd.api.routes import Response, route
from warnd.ingest import Accepted
from warnd.metrics import CONTENT_TYPE, Metrics
from warnd.settings import Settings

METRICS = web.AppKey("metrics", Metrics)


@route(
    "GET",
    "/metrics",
    summary="Prometheus metrics: this process's counters and the deployment's queues",
    role=None,
    tag="system",
    responses={200: Response("Prometheus text exposition format 0.0.4")},
)
async def metrics(request: web.Request) -> web.Response:
    app = request.app
    svc = app[SERVICES]
    body = await app[METRICS].render(
        svc.redis, svc.keys, list(svc.settings.channels), list(svc.settings.feeds)
    )
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp


def _route_of(request: web.Request) -> str:
    """The route template (``/v1/alerts/{id}``), never the concrete path."""
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        m = request.app.get(METRICS)
        if m is not None:
            path = _route_of(request)
            m.http_requests.labels(request.method, path, str(status)).inc()
            m.http_seconds.labels(path).observe(time.perf_counter() - started)


def setup_metrics(app: web.Application, settings: Settings) -> Metrics:
    """Create the application's metrics; count accepted alerts once services exist."""
    m = Metrics()
    app[METRICS] = m

    async def count_accepted(accepted: Accepted) -> None:
        rec = accepted.record
        level = rec.level.value if rec.level else ""
        m.alerts_accepted.labels(rec.msg_type.value, rec.hazard or "", level).inc()

    async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
        intake = app[SERVICES].intake
        intake.on_accepted.append(count_accepted)
        yield
        intake.on_accepted.remove(count_accepted)

    app.cleanup_ctx.append(metrics_ctx)
    return m
