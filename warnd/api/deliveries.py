"""Deliveries of an alert, operator retry, and acknowledgement (叫应).

==========================================  ========  ======================================
``GET /v1/alerts/{id}/deliveries``          viewer    plan, counts and a page of deliveries
``POST /v1/alerts/{id}/retry``              operator  re-queue failed (and uncertain) deliveries
``POST /v1/ack/{token}``                    —         the recipient confirms (the token is the key)
``GET /v1/ack/{token}``                     —         a page with the confirm button (link previews
                                                      must not acknowledge on their own)
==========================================  ========  ======================================
"""

from __future__ import annotations

import bisect
import html
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from warnd.api.bodies import parse_json
from warnd.api.context import SERVICES, Services, principal_of, read_body
from warnd.api.routes import Param, Response, route
from warnd.auth import Principal, Role
from warnd.dispatch.service import DISPATCH, Dispatcher
from warnd.dispatch.states import DeliveryState
from warnd.errors import AlertInvalid, BadRequest, Forbidden, NotFound, field_errors
from warnd.store import AlertRecord

ID = "{id:[a-z2-7]{16}}"
TOKEN = "{token:[A-Za-z2-7]{12}}"  # noqa: S105 - a route pattern, not a secret


class DeliveryOut(BaseModel):
    id: str
    channel: str
    address: str
    area: str
    state: DeliveryState
    attempts: int
    updated_at: float | None = Field(description="Epoch seconds of the last state change")
    kind: str = Field(description="alert, notice (解除/更新), escalation or supervisor")
    subscriber: str | None = None
    group: str | None = Field(default=None, description="Group that must acknowledge")
    last_error: str | None = None
    events: list[dict[str, Any]] = Field(default_factory=list)


class DeliveryPage(BaseModel):
    alert_id: str
    plan: dict[str, Any]
    counts: dict[str, int] = Field(description="Deliveries per state")
    by_channel: dict[str, dict[str, int]] = Field(description="Channel → state → deliveries")
    items: list[DeliveryOut]
    next: str | None


class RetryBody(BaseModel):
    states: list[DeliveryState] = Field(default_factory=lambda: [DeliveryState.FAILED])
    """Which deliveries to send again: failed (default) and/or uncertain."""


class RetryResult(BaseModel):
    alert_id: str
    requeued: int


class AckResult(BaseModel):
    delivery_id: str
    acknowledged: bool
    first: bool = Field(description="False when it had already been acknowledged")


def _dispatcher(request: web.Request) -> Dispatcher:
    d = request.app.get(DISPATCH)
    if d is None:
        raise NotFound("dispatch is not running in this warnd")
    return d


async def _alert(request: web.Request, principal: Principal) -> AlertRecord:
    return await alert_in_scope(request.app[SERVICES], principal, request.match_info["id"])


async def alert_in_scope(svc: Services, principal: Principal, alert_id: str) -> AlertRecord:
    """The alert, if the caller's area scope covers it (its deliveries name addresses)."""
    rec = await svc.store.get(alert_id)
    if rec is None:
        raise NotFound(f"no alert {alert_id}")
    outside = [c for c in rec.areas if not principal.covers(c)]
    if principal.areas and (outside or not rec.areas):
        raise Forbidden(
            f"alert {rec.id} is outside this token's areas {', '.join(principal.areas)}"
        )
    return rec


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError
    except ValueError:
        raise BadRequest(f"{name} must be an integer from {lo} to {hi}, not {raw!r}") from None
    return value


@route(
    "GET",
    f"/v1/alerts/{ID}/deliveries",
    summary="An alert's deliveries: plan, counts per state and channel, and a page of records",
    role=Role.VIEWER,
    tag="deliveries",
    params=(
        Param(
            "state",
            "Only deliveries in this state (queued, sending, sent, delivered, failed, "
            "expired, cancelled, acknowledged, uncertain); comma-separated for several",
        ),
        Param("cursor", "Where the previous page ended (from `next`)", {"type": "integer"}),
        Param("limit", "Page size, 1 to 1000 (default 100)", {"type": "integer"}),
    ),
    responses={200: Response("A page of deliveries", DeliveryPage), 404: Response("No such alert")},
)
async def list_deliveries(request: web.Request) -> web.Response:
    principal = principal_of(request)
    rec = await _alert(request, principal)
    d = _dispatcher(request)
    states = list(DeliveryState)
    if request.query.get("state"):
        try:
            states = [DeliveryState(s.strip()) for s in request.query["state"].split(",")]
        except ValueError:
            raise BadRequest(
                f"state={request.query['state']!r}: one or more of "
                + ", ".join(s.value for s in DeliveryState)
            ) from None
    cursor = _int(request, "cursor", 0, 0, 2**31)
    limit = _int(request, "limit", 100, 1, 1000)
    items, nxt = await delivery_items(d, rec.id, states, cursor, limit)
    plan = await d.store.plan(rec.id)
    counts, by_channel = await delivery_counts(d, rec.id)
    link = None
    if nxt is not None:
        link = f"/v1/alerts/{rec.id}/deliveries?cursor={nxt}&limit={limit}"
        if request.query.get("state"):
            link += f"&state={request.query['state']}"
    page = DeliveryPage(
        alert_id=rec.id,
        plan={k: (int(v) if v.lstrip("-").isdigit() else v) for k, v in plan.items()},
        counts=counts,
        by_channel=by_channel,
        items=items,
        next=link,
    )
    return web.Response(text=page.model_dump_json(), content_type="application/json")


@route(
    "POST",
    f"/v1/alerts/{ID}/retry",
    summary="Send failed (or uncertain) deliveries of an alert again",
    role=Role.OPERATOR,
    tag="deliveries",
    body={"application/json": RetryBody},
    responses={200: Response("Deliveries re-queued", RetryResult), 404: Response("No such alert")},
)
async def retry_deliveries(request: web.Request) -> web.Response:
    """Re-queues the deliveries (with a fresh attempt budget) unless the alert
    was cancelled, superseded or has expired: those become cancelled/expired."""
    principal = principal_of(request)
    rec = await _alert(request, principal)
    d = _dispatcher(request)
    body = await read_body(request, 64 * 1024)
    try:
        opts = RetryBody.model_validate(parse_json(body) if body.strip() else {})
    except ValidationError as exc:
        raise AlertInvalid("the retry body is not valid", errors=field_errors(exc)) from None
    n = await retry(request.app[SERVICES], d, principal, rec, opts.states)
    out = RetryResult(alert_id=rec.id, requeued=n)
    return web.Response(text=out.model_dump_json(), content_type="application/json")


async def delivery_items(
    d: Dispatcher, alert_id: str, states: list[DeliveryState], cursor: int, limit: int
) -> tuple[list[DeliveryOut], int | None]:
    """A page of an alert's deliveries in ``states`` and where the next page starts."""
    store = d.store
    numbers, nxt = await store.find(alert_id, states, cursor, limit)
    table = await store.batch_table(alert_id)
    bases = [b for b, _, _ in table]
    where = [(n, bisect.bisect_right(bases, n) - 1) for n in numbers]
    batches = await store.batches(alert_id, sorted({k for _, k in where if k >= 0}))
    slots = await store.slots(alert_id, numbers)
    events = await store.events(alert_id, numbers)
    plan = await store.plan(alert_id)
    t0 = int(plan.get("t0") or 0)
    items: list[DeliveryOut] = []
    for (n, k), (code, attempts, tm, area) in zip(where, slots, strict=True):
        b = batches.get(k)
        if b is None:
            continue
        j = n - b.base
        evs = events.get(n, [])
        errors = [e["error"] for e in evs if e.get("error")]
        items.append(
            DeliveryOut(
                id=b.delivery_id(j),
                channel=b.channel,
                address=b.addresses[j],
                area=area,
                state=DeliveryState.of(code),
                attempts=attempts,
                updated_at=(t0 + tm) / 1000 if t0 else None,
                kind=b.kind,
                subscriber=b.subscribers[j] if j < len(b.subscribers) else None,
                group=b.group or None,
                last_error=errors[-1] if errors else None,
                events=evs,
            )
        )
    return items, nxt


async def delivery_counts(
    d: Dispatcher, alert_id: str
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Deliveries per state, and per channel and state (the exact counters)."""
    counts: dict[str, int] = {}
    by_channel: dict[str, dict[str, int]] = {}
    for key, n in (await d.store.counters(alert_id)).items():
        _area, channel, state = key.rsplit("|", 2)
        counts[state] = counts.get(state, 0) + n
        row = by_channel.setdefault(channel, {})
        row[state] = row.get(state, 0) + n
    return counts, by_channel


async def retry(
    svc: Services,
    d: Dispatcher,
    principal: Principal,
    rec: AlertRecord,
    states: list[DeliveryState],
) -> int:
    """Re-queue an alert's failed (and/or uncertain) deliveries, audited; how many."""
    principal.require(Role.OPERATOR)
    allowed = {DeliveryState.FAILED, DeliveryState.UNCERTAIN}
    if not set(states) <= allowed:
        raise BadRequest("only failed and uncertain deliveries can be sent again")
    n = await d.requeue(rec.id, states)
    await svc.audit.record(
        "deliveries.retried",
        actor=principal.actor,
        alert_id=rec.id,
        requeued=n,
        states=[s.value for s in states],
    )
    return n


@route(
    "POST",
    f"/v1/ack/{TOKEN}",
    summary="Acknowledge a warning (叫应): the confirmation code from the message",
    role=None,
    tag="deliveries",
    responses={200: Response("Acknowledged", AckResult), 404: Response("Unknown or expired code")},
)
async def acknowledge(request: web.Request) -> web.Response:
    d = _dispatcher(request)
    got = await d.acks.acknowledge(request.match_info["token"], via="link")
    if got is None:
        raise NotFound("this confirmation code is unknown or has expired")
    out = AckResult(delivery_id=got[0], acknowledged=True, first=got[1])
    return web.Response(text=out.model_dump_json(), content_type="application/json")


@route(
    "GET",
    f"/v1/ack/{TOKEN}",
    summary="The confirmation page behind the link in a message",
    role=None,
    tag="deliveries",
    responses={200: Response("An HTML page with a confirm button", None, "text/html")},
)
async def acknowledge_page(request: web.Request) -> web.Response:
    token = html.escape(request.match_info["token"])
    page = (
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        "<title>确认收到预警</title><form method=post>"
        f"<p>确认码 {token}</p><button type=submit>确认收到 / Confirm</button></form>"
    )
    return web.Response(text=page, content_type="text/html")
