"""Alert endpoints: submit (CAP or JSON), update, cancel, list, read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import ValidationError

from warnd.api.bodies import parse_alert_body as _parse_body
from warnd.api.bodies import parse_json as _json
from warnd.api.context import SERVICES, Services, principal_of, read_body
from warnd.api.routes import Param, Response, route
from warnd.api.schemas import (
    AlertAccepted,
    AlertLinks,
    AlertPage,
    AlertSummary,
    AlertView,
    CancelBody,
)
from warnd.auth import Principal, Role
from warnd.cap import to_cap_xml
from warnd.errors import (
    AlertInvalid,
    BadRequest,
    FieldError,
    NotFound,
    UnsupportedMediaType,
    WarndError,
    field_errors,
)
from warnd.identifiers import beijing_now, cap_identifier
from warnd.ingest import Accepted, Idempotency
from warnd.jsonform import alert_from_json
from warnd.model import Alert, Level, MsgType, Reference
from warnd.store import AlertQuery, AlertRecord, AlertState

ID = "{id:[a-z2-7]{16}}"

_ACCEPTED = {
    202: Response("Accepted: a new alert", AlertAccepted),
    200: Response("Already known: the existing alert (same sender and identifier)", AlertAccepted),
    409: Response("Idempotency-Key reused for a different alert"),
    413: Response("Body larger than the configured limit"),
    415: Response("Not CAP XML or JSON"),
}


def _links(alert_id: str) -> AlertLinks:
    return AlertLinks(self=f"/v1/alerts/{alert_id}", cap=f"/v1/alerts/{alert_id}.cap")


def _accepted_response(acc: Accepted) -> web.Response:
    rec = acc.record
    body = AlertAccepted(
        id=rec.id,
        identifier=rec.identifier,
        sender=rec.sender,
        state=rec.effective_state().value,
        created=acc.created,
        warnings=rec.warnings,
        changed={aid: state.value for aid, state in acc.changed},
        links=_links(rec.id),
    )
    return web.Response(
        status=202 if acc.created else 200,
        text=body.model_dump_json(),
        content_type="application/json",
        headers={"Location": f"/v1/alerts/{rec.id}"},
    )


def _media_type(request: web.Request) -> str:
    return request.content_type.lower()


Build = Callable[[], Awaitable[tuple[Alert, list[str]]]]
"""Parses or builds the alert of a submission: the alert and its parse warnings."""


async def intake_alert(
    svc: Services,
    principal: Principal,
    body: bytes,
    build: Build,
    *,
    idempotency: Idempotency | None = None,
) -> Accepted:
    """Submit an alert through ingest as the operator API does.

    Every door of an operator (the API, the console) comes through here, so
    authorisation, idempotency, audit of refusals and dispatch are the same.
    ``body`` is what the operator sent (hashed into the refusal's audit entry).
    """
    principal.require(Role.OPERATOR)
    if idempotency is not None:
        # Before parsing: a replayed JSON alert must not draw a new identifier.
        earlier = await svc.intake.replay(principal, idempotency)
        if earlier is not None:
            return earlier
    try:
        alert, warnings = await build()
        return await svc.intake.accept(
            alert,
            principal=principal,
            source=principal.actor,
            warnings=warnings,
            idempotency=idempotency,
        )
    except WarndError as err:
        if err.status in (400, 403, 422):
            await svc.intake.refuse(err, source=principal.actor, body=body)
        raise


async def _submit(request: web.Request, build: Any = None) -> web.Response:
    svc = request.app[SERVICES]
    principal = principal_of(request)
    principal.require(Role.OPERATOR)
    body = await read_body(request, svc.settings.http.max_body_bytes)
    idem = Idempotency.of(request.headers.get("Idempotency-Key"), request.path.encode() + body)

    async def parse() -> tuple[Alert, list[str]]:
        if build is None:
            return await _parse_body(request, svc, body)
        return await build(svc, principal, body), []

    return _accepted_response(await intake_alert(svc, principal, body, parse, idempotency=idem))


@route(
    "POST",
    "/v1/alerts",
    summary="Submit an alert (CAP 1.2/1.1 XML or warnd JSON)",
    role=Role.OPERATOR,
    body={
        "application/cap+xml": "A CAP 1.2 (or 1.1) alert message",
        "application/json": Alert,
    },
    params=(Param("Idempotency-Key", "Replays return the first answer", where="header"),),
    responses=_ACCEPTED,
)
async def submit_alert(request: web.Request) -> web.Response:
    """Accept a warning. The same sender and identifier again returns the
    existing alert; Update and Cancel messages supersede or cancel the
    alerts they reference."""
    return await _submit(request)


async def _target(svc: Services, alert_id: str) -> AlertRecord:
    rec = await svc.store.get(alert_id)
    if rec is None:
        raise NotFound(f"no alert {alert_id}")
    return rec


def _reference_to(rec: AlertRecord) -> dict[str, str]:
    return {"sender": rec.sender, "identifier": rec.identifier, "sent": rec.sent.isoformat()}


@route(
    "POST",
    f"/v1/alerts/{ID}/update",
    summary="Issue an Update of an alert (JSON body: the new alert content)",
    role=Role.OPERATOR,
    body={"application/json": Alert},
    responses=_ACCEPTED | {404: Response("No such alert")},
)
async def update_alert(request: web.Request) -> web.Response:
    """The body is a JSON alert; msgType and references are set to update
    the alert in the path, which becomes superseded."""
    target = await _target(request.app[SERVICES], request.match_info["id"])
    if _media_type(request) != "application/json":
        raise UnsupportedMediaType("an update is sent as application/json")

    async def build(svc: Services, principal: Principal, body: bytes) -> Alert:
        return await update_message(svc, target, _json(body))

    return await _submit(request, build)


async def update_message(svc: Services, target: AlertRecord, data: Any) -> Alert:
    """The Update of ``target`` whose new content is the JSON alert ``data``."""
    if isinstance(data, dict):
        data = {**data, "msg_type": "Update", "references": [_reference_to(target)]}
        for key in ("identifier", "sent"):
            data.pop(key, None)
    return await alert_from_json(
        data,
        issuer=svc.settings.issuer,
        taxonomy=svc.taxonomy,
        next_seq=svc.next_identifier_seq,
    )


@route(
    "POST",
    f"/v1/alerts/{ID}/cancel",
    summary="Cancel (lift, 解除) an alert",
    role=Role.OPERATOR,
    body={"application/json": CancelBody},
    responses=_ACCEPTED | {404: Response("No such alert")},
)
async def cancel_alert(request: web.Request) -> web.Response:
    """Issues a CAP Cancel message referencing the alert in the path."""
    target = await _target(request.app[SERVICES], request.match_info["id"])

    async def build(svc: Services, principal: Principal, body: bytes) -> Alert:
        try:
            opts = CancelBody.model_validate(_json(body) if body.strip() else {})
        except ValidationError as exc:
            raise AlertInvalid("the cancel body is not valid", errors=field_errors(exc)) from None
        return await cancel_message(svc, target, opts.note)

    return await _submit(request, build)


async def cancel_message(svc: Services, target: AlertRecord, note: str | None) -> Alert:
    """The CAP Cancel of ``target`` (解除), with the operator's ``note``."""
    issuer = svc.settings.issuer
    sent = beijing_now()
    seq = await svc.next_identifier_seq(sent.strftime("%Y%m%d%H%M%S"))
    try:
        return Alert(
            identifier=cap_identifier(issuer.area_code, issuer.unit_code, sent, seq),
            sender=issuer.sender,
            sent=sent,
            status=target.alert.status,
            msg_type=MsgType.CANCEL,
            scope=target.alert.scope,
            restriction=target.alert.restriction,
            addresses=target.alert.addresses,
            note=note or f"Cancels {target.identifier}",
            references=[Reference.model_validate(_reference_to(target))],
        )
    except ValidationError as exc:
        raise AlertInvalid("cannot build the cancel message", errors=field_errors(exc)) from None


def _query(request: web.Request) -> AlertQuery:
    q = request.query
    errors: list[FieldError] = []

    def parse(name: str, conv: Any) -> Any:
        if name not in q or q[name] == "":
            return None
        try:
            return conv(q[name])
        except ValueError as exc:
            errors.append(FieldError(loc=f"?{name}", msg=str(exc)))
            return None

    def when(text: str) -> float:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            raise ValueError(f"{text!r} needs a time-zone offset, e.g. 2024-06-01T00:00:00+08:00")
        return dt.timestamp()

    def limit(text: str) -> int:
        n = int(text)
        if not 1 <= n <= 500:
            raise ValueError("limit must be between 1 and 500")
        return n

    def area(text: str) -> str:
        if not text.isdigit():
            raise ValueError("area must be an administrative code prefix (digits)")
        return text

    query = AlertQuery(
        state=parse("state", AlertState),
        hazard=parse("hazard", str),
        level=parse("level", Level.parse),
        area=parse("area", area),
        since=parse("since", when),
        until=parse("until", when),
        limit=parse("limit", limit) or 50,
        cursor=parse("cursor", str),
    )
    if errors:
        raise BadRequest("invalid query parameters", errors=errors)
    return query


def _summary(rec: AlertRecord) -> AlertSummary:
    headline = next((i.headline for i in rec.alert.infos if i.headline), None)
    return AlertSummary(
        id=rec.id,
        identifier=rec.identifier,
        sender=rec.sender,
        sent=rec.sent.isoformat(),
        msg_type=rec.msg_type.value,
        state=rec.effective_state().value,
        hazard=rec.hazard,
        level=rec.level.value if rec.level else None,
        areas=rec.areas,
        area_names=rec.area_names,
        headline=headline,
        expires=rec.expires.isoformat() if rec.expires else None,
        received_at=rec.received_at.isoformat(),
        chain=rec.chain,
        links=_links(rec.id),
    )


@route(
    "GET",
    "/v1/alerts",
    summary="List alerts, newest first",
    role=Role.VIEWER,
    params=(
        Param("state", "active, superseded, cancelled or expired"),
        Param("hazard", "Hazard code from the taxonomy"),
        Param("level", "blue, yellow, orange or red"),
        Param("area", "Administrative code prefix"),
        Param("since", "Accepted at or after (ISO 8601 with offset)"),
        Param("until", "Accepted at or before (ISO 8601 with offset)"),
        Param("limit", "Page size, 1 to 500", {"type": "integer"}),
        Param("cursor", "Opaque cursor from the previous page's `next`"),
    ),
    responses={200: Response("A page of alerts", AlertPage)},
)
async def list_alerts(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    query = _query(request)
    records, cursor = await svc.store.query(query)
    nxt = None
    if cursor is not None:
        params = {k: v for k, v in request.query.items() if k != "cursor"}
        params["cursor"] = cursor
        nxt = f"/v1/alerts?{urlencode(params)}"
    page = AlertPage(items=[_summary(r) for r in records], next=nxt)
    return web.Response(text=page.model_dump_json(), content_type="application/json")


@route(
    "GET",
    f"/v1/alerts/{ID}",
    summary="One alert with its record (state, chain, warnings)",
    role=Role.VIEWER,
    responses={200: Response("The alert", AlertView), 404: Response("No such alert")},
)
async def get_alert(request: web.Request) -> web.Response:
    rec = await _target(request.app[SERVICES], request.match_info["id"])
    rec.state = rec.effective_state()
    view = AlertView(record=rec, links=_links(rec.id))
    return web.Response(text=view.model_dump_json(), content_type="application/json")


@route(
    "GET",
    f"/v1/alerts/{ID}.cap",
    summary="One alert as CAP 1.2 XML",
    role=Role.VIEWER,
    responses={
        200: Response("CAP 1.2 XML", content_type="application/cap+xml"),
        404: Response("No such alert"),
    },
)
async def get_alert_cap(request: web.Request) -> web.Response:
    rec = await _target(request.app[SERVICES], request.match_info["id"])
    return web.Response(
        body=to_cap_xml(rec.alert), content_type="application/cap+xml", charset="utf-8"
    )
