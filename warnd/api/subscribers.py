"""Subscriber endpoints and the match preview.

Roles (each token's area prefixes apply throughout):

==================================  ========  ====================================
``GET /v1/subscribers/{id}``        viewer    one subscriber, if its area is in scope
``PUT /v1/subscribers/{id}``        operator  create or replace (old and new area in scope)
``DELETE /v1/subscribers/{id}``     operator  remove from the records and every index
``POST /v1/subscribers/import``     admin     CSV or NDJSON, streamed; rows out of scope rejected
``GET /v1/subscribers/export``      admin     the registry as CSV or NDJSON, streamed
``POST /v1/match/preview``          operator  who an alert would reach; sends and stores nothing
==================================  ========  ====================================

Bulk import is an admin task because it rewrites many areas at once and
its files usually come from another system (the 网格化 roster, the school
list); operators keep individual entries current.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from warnd.api.bodies import parse_alert_body, parse_json
from warnd.api.context import SERVICES, Services, principal_of, read_body
from warnd.api.routes import Param, Response, route
from warnd.auth import Principal, Role
from warnd.errors import (
    AlertInvalid,
    BadRequest,
    FieldError,
    Forbidden,
    NotFound,
    UnsupportedMediaType,
    WarndError,
)
from warnd.model import Alert
from warnd.settings import Settings
from warnd.subscriber_files import import_configured
from warnd.subscriber_io import (
    CSV_TYPES,
    NDJSON_TYPES,
    Importer,
    export_chunks,
    import_lines,
    validation_errors,
)
from warnd.subscribers import Subscriber, SubscriberContext

log = structlog.get_logger("warnd.api.subscribers")

SUB_ID = "{id:[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}}"


class RejectedRow(BaseModel):
    line: int
    id: str | None
    errors: list[dict[str, Any]]


class ImportResult(BaseModel):
    """Summary of a bulk import: counts and every rejected row (up to 10,000)."""

    rows: int
    accepted: int
    rejected: int
    created: int
    updated: int
    unchanged: int
    rejections: list[RejectedRow]
    rejections_truncated: bool = Field(description="More rows were rejected than listed")


class MatchPreview(BaseModel):
    """Who an alert would reach (nothing is sent or stored)."""

    identifier: str
    subscribers: int
    deliveries: int
    no_endpoint: int = Field(description="Selected subscribers with no endpoint their group uses")
    areas: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    channels: dict[str, int]
    levels: dict[str, int]
    languages: dict[str, int]
    blind_spots: list[dict[str, Any]] = Field(description="Affected areas with no subscriber")
    unknown_geocodes: list[dict[str, Any]]
    unregistered_codes: list[str]


def _context(svc: Services, principal: Principal | None) -> SubscriberContext:
    return SubscriberContext(
        registry=svc.areas,
        groups=svc.matcher.groups,
        scope=principal.areas if principal is not None else (),
    )


def _json_response(data: Any, status: int = 200) -> web.Response:
    text = data.model_dump_json(exclude_none=True) if isinstance(data, BaseModel) else data
    return web.Response(text=text, status=status, content_type="application/json")


async def _existing(svc: Services, principal: Principal, sub_id: str) -> Subscriber:
    rec = await svc.subscribers.get(sub_id)
    if rec is None or not principal.covers(rec.area):
        # Out of scope reads as absent: a token learns nothing about other areas.
        raise NotFound(f"no subscriber {sub_id}")
    return rec.subscriber()


@route(
    "GET",
    f"/v1/subscribers/{SUB_ID}",
    summary="One subscriber",
    role=Role.VIEWER,
    tag="subscribers",
    responses={200: Response("The subscriber", Subscriber), 404: Response("No such subscriber")},
)
async def get_subscriber(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    sub = await _existing(svc, principal_of(request), request.match_info["id"])
    return _json_response(sub)


@route(
    "PUT",
    f"/v1/subscribers/{SUB_ID}",
    summary="Create or replace a subscriber",
    role=Role.OPERATOR,
    tag="subscribers",
    body={"application/json": Subscriber},
    responses={
        201: Response("Created", Subscriber),
        200: Response("Replaced (or unchanged)", Subscriber),
    },
)
async def put_subscriber(request: web.Request) -> web.Response:
    """The body is the whole subscriber; ``id`` may be left out (the path gives it)."""
    svc = request.app[SERVICES]
    principal = principal_of(request)
    sub_id = request.match_info["id"]
    data = parse_json(await read_body(request, svc.settings.http.max_body_bytes))
    if not isinstance(data, dict):
        raise SubscriberInvalid(
            "the subscriber must be a JSON object",
            errors=[FieldError("/", f"expected an object, got {type(data).__name__}")],
        )
    if data.setdefault("id", sub_id) != sub_id:
        raise BadRequest(
            "the id in the body differs from the path",
            errors=[FieldError("/id", f"{data['id']!r} is not {sub_id!r}")],
        )
    before = await svc.subscribers.get(sub_id)
    if before is not None and not principal.covers(before.area):
        raise Forbidden(f"subscriber {sub_id} is in area {before.area}, outside your scope")
    try:
        sub = Subscriber.model_validate(data, context=_context(svc, principal))
    except ValidationError as exc:
        raise _invalid("the subscriber is not valid", exc) from None
    result = await svc.subscribers.upsert_many([sub])
    if result.change_id is not None:
        await svc.audit.record(
            "subscriber.created" if result.created else "subscriber.updated",
            actor=principal.actor,
            subscriber=sub_id,
            area=sub.area,
        )
    return _json_response(sub, status=201 if result.created else 200)


class SubscriberInvalid(WarndError, ValueError):
    status = 422
    slug = "subscriber-invalid"
    title = "Subscriber is not valid"


def _invalid(detail: str, exc: ValidationError) -> SubscriberInvalid:
    return SubscriberInvalid(detail, errors=validation_errors(exc))


@route(
    "DELETE",
    f"/v1/subscribers/{SUB_ID}",
    summary="Delete a subscriber (from its record and every index)",
    role=Role.OPERATOR,
    tag="subscribers",
    responses={204: Response("Deleted"), 404: Response("No such subscriber")},
)
async def delete_subscriber(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    principal = principal_of(request)
    sub = await _existing(svc, principal, request.match_info["id"])
    await svc.subscribers.delete_many([sub.id])
    await svc.audit.record(
        "subscriber.deleted", actor=principal.actor, subscriber=sub.id, area=sub.area
    )
    return web.Response(status=204)


@route(
    "POST",
    "/v1/subscribers/import",
    summary="Bulk import (upsert by id) from CSV or NDJSON, streamed",
    role=Role.ADMIN,
    tag="subscribers",
    body={
        "text/csv": "Header row, then one subscriber per row (columns in the README)",
        "application/x-ndjson": "One subscriber JSON object per line",
    },
    responses={200: Response("What was accepted and what was rejected, by line", ImportResult)},
)
async def import_subscribers(request: web.Request) -> web.Response:
    """The body is read as a stream, a line at a time, and written in
    pipelined batches, so its size is not limited by ``max_body_bytes``.
    Good rows are kept whatever else is in the file."""
    svc = request.app[SERVICES]
    principal = principal_of(request)
    ctype = request.content_type.lower()
    if ctype in CSV_TYPES:
        fmt = "csv"
    elif ctype in NDJSON_TYPES:
        fmt = "ndjson"
    else:
        raise UnsupportedMediaType(
            f"Content-Type {request.content_type!r}: send text/csv or application/x-ndjson"
        )
    importer = Importer(svc.subscribers, _context(svc, principal), csv_locs=fmt == "csv")
    try:
        summary = await import_lines(request.content, fmt, importer)
    except ValueError as exc:  # aiohttp: a line beyond its buffer limit
        if isinstance(exc, BadRequest):
            raise
        raise BadRequest(f"the body cannot be read line by line: {exc}") from None
    await svc.audit.record(
        "subscribers.imported",
        actor=principal.actor,
        format=fmt,
        rows=summary.rows,
        accepted=summary.accepted,
        rejected=summary.rejected,
        created=summary.created,
        updated=summary.updated,
    )
    return web.json_response(summary.as_dict(), dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


@route(
    "GET",
    "/v1/subscribers/export",
    summary="Every subscriber as CSV or NDJSON (streamed)",
    role=Role.ADMIN,
    tag="subscribers",
    params=(Param("format", "csv (default) or ndjson", {"enum": ["csv", "ndjson"]}),),
    responses={200: Response("The registry", content_type="text/csv")},
)
async def export_subscribers(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    principal = principal_of(request)
    fmt = request.query.get("format", "csv")
    if fmt not in ("csv", "ndjson"):
        raise BadRequest(f"format={fmt!r}: csv or ndjson")
    if principal.areas:
        raise Forbidden("export covers every area: it needs an admin token without area limits")
    resp = web.StreamResponse(
        headers={"Content-Type": "text/csv; charset=utf-8" if fmt == "csv" else NDJSON_TYPES[0]}
    )
    await resp.prepare(request)
    async for chunk in export_chunks(svc.subscribers, fmt):
        await resp.write(chunk.encode())
    await resp.write_eof()
    return resp


# ------------------------------------------------------------------ preview


async def no_seq(stamp: str) -> int:
    """Preview numbers a JSON alert's identifier without touching Redis."""
    return 0


@route(
    "POST",
    "/v1/match/preview",
    summary="Who an alert would reach: areas, groups, channels, blind spots",
    role=Role.OPERATOR,
    tag="alerts",
    body={"application/cap+xml": "A CAP 1.2 (or 1.1) alert message", "application/json": Alert},
    responses={200: Response("The audience, counted", MatchPreview)},
)
async def preview_match(request: web.Request) -> web.Response:
    """Duty officers check this before issuing: it resolves the alert's areas
    and audience exactly as dispatch will, and sends and stores nothing."""
    svc = request.app[SERVICES]
    body = await read_body(request, svc.settings.http.max_body_bytes)
    alert, _ = await parse_alert_body(request, svc, body, next_seq=no_seq)
    return web.json_response(await preview_audience(svc, alert), dumps=_dumps)


async def preview_audience(svc: Services, alert: Alert) -> dict[str, Any]:
    """Classify ``alert`` as ingest does and count who it would reach
    (:meth:`warnd.match.Audience.summary`); sends and stores nothing."""
    errors: list[FieldError] = []
    for i, info in enumerate(alert.infos):
        try:
            info.hazard, info.level = svc.taxonomy.classify(info)
        except ValueError as exc:
            errors.append(FieldError(loc=f"/infos/{i}/hazard", msg=str(exc)))
    if errors:
        raise AlertInvalid("the alert names a hazard warnd does not know", errors=errors)
    audience = await svc.matcher.match(alert)
    return audience.summary()


# ---------------------------------------------------------------- lifecycle


def setup_subscribers(app: web.Application, settings: Settings) -> None:
    """Load the subscriber index at start and give the area registry its counts."""

    async def subscribers_ctx(app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]
        if settings.subscribers.import_files:
            context = SubscriberContext(registry=svc.areas, groups=svc.matcher.groups)
            await import_configured(
                svc.redis, svc.keys, svc.subscribers, context, settings.subscribers.import_files
            )
        await svc.matcher.load()
        svc.areas.set_subscriber_counter(svc.matcher.counts)
        yield
        svc.areas.set_subscriber_counter(None)

    app.cleanup_ctx.append(subscribers_ctx)
