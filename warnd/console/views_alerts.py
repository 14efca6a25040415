"""The alert list and the alert page (map, per-area reach, failures, Update, Cancel, retry)."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from warnd.api.alerts import cancel_message, update_message
from warnd.api.deliveries import alert_in_scope, delivery_counts, delivery_items, retry
from warnd.auth import Role
from warnd.console.core import (
    PREFIX,
    Ctx,
    ctx_of,
    field_errors_by_name,
    page,
    redirect,
    render,
)
from warnd.console.forms import UpdateForm, field_of
from warnd.console.mapsvg import AreaMap, Shade
from warnd.console.submit import body_bytes, new_form_id, submit
from warnd.coverage.models import AreaCoverage, CoverageReport
from warnd.dispatch.service import DISPATCH
from warnd.dispatch.states import DeliveryState
from warnd.errors import AlertInvalid, Forbidden, NotFound, WarndError
from warnd.model import Alert, Level, MsgType
from warnd.store import AlertQuery, AlertRecord, AlertState

log = structlog.get_logger("warnd.console")

routes = web.RouteTableDef()

ID = "{id:[a-z2-7]{16}}"
PAGE_SIZE = 30
FAILED_SHOWN = 50
REPORT_LEVELS = ("county", "township", "village")
NOTICES = ("cancelled", "updated", "retried", "issued")


# ------------------------------------------------------------------ list


def _list_query(request: web.Request) -> tuple[AlertQuery, dict[str, str]]:
    q = request.query
    chosen: dict[str, str] = {}
    state = level = None
    if q.get("state") in {s.value for s in AlertState}:
        state = AlertState(q["state"])
        chosen["state"] = state.value
    if q.get("level") in {lv.value for lv in Level}:
        level = Level(q["level"])
        chosen["level"] = level.value
    hazard = q.get("hazard") or None
    if hazard is not None:
        chosen["hazard"] = hazard
    cursor = q.get("cursor") or None
    if cursor is not None and not _cursor_ok(cursor):
        cursor = None
    return (
        AlertQuery(state=state, hazard=hazard, level=level, limit=PAGE_SIZE, cursor=cursor),
        chosen,
    )


def _cursor_ok(cursor: str) -> bool:
    score, sep, aid = cursor.partition(":")
    try:
        float(score)
    except ValueError:
        return False
    return bool(sep) and aid.isalnum()


async def _report(
    ctx: Ctx, alert_id: str, *, level: str | None = None, chain: bool = False
) -> CoverageReport | None:
    try:
        return await ctx.svc.coverage.report(alert_id, level=level, chain=chain)
    except WarndError as exc:
        log.info("console.coverage_unavailable", alert_id=alert_id, error=exc.detail)
        return None


@routes.get("/alerts")
@page(Role.VIEWER)
async def alert_list(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    query, chosen = _list_query(request)
    records, cursor = await ctx.svc.store.query(query)
    reports = await asyncio.gather(*(_report(ctx, r.id, level="county") for r in records))
    rows = [_row(ctx, rec, rep) for rec, rep in zip(records, reports, strict=True)]
    values: dict[str, Any] = {
        "rows": rows,
        "chosen": chosen,
        "next_cursor": cursor,
        "hazards": _hazard_choices(ctx),
        "states": [s.value for s in AlertState],
        "levels": [lv.value for lv in Level],
    }
    if request.query.get("partial"):
        resp = render(ctx, "_alerts_table.html", **values)
    else:
        resp = render(ctx, "alerts.html", **values)
    resp.headers["X-Console-Live"] = "1"  # new alerts may come at any time
    return resp


def _hazard_choices(ctx: Ctx) -> list[tuple[str, str]]:
    return [(h.code, h.name(ctx.lang)) for h in ctx.svc.taxonomy]


def _hazard_name(ctx: Ctx, code: str | None) -> str:
    if code and code in ctx.svc.taxonomy:
        return ctx.svc.taxonomy.get(code).name(ctx.lang)
    return code or "—"


def _row(ctx: Ctx, rec: AlertRecord, rep: CoverageReport | None) -> dict[str, Any]:
    info = rec.alert.infos[0] if rec.alert.infos else None
    return {
        "id": rec.id,
        "state": rec.effective_state().value,
        "msg_type": rec.msg_type.value,
        "hazard": _hazard_name(ctx, rec.hazard),
        "level": rec.level.value if rec.level else "",
        "headline": next((i.headline for i in rec.alert.infos if i.headline), None)
        or rec.alert.note
        or rec.identifier,
        "areas": rec.area_names,
        "issuer": (info.sender_name if info and info.sender_name else rec.sender),
        "source": rec.source,
        "received_at": rec.received_at,
        "reach_rate": rep.totals.reach_rate if rep else None,
        "reached": rep.totals.subscribers_reached if rep else None,
        "targeted": rep.totals.subscribers_targeted if rep else None,
        "final": rep.final if rep else None,
        "status": rep.status if rep else None,
    }


# ------------------------------------------------------------------ alert


async def _record(ctx: Ctx, alert_id: str) -> AlertRecord:
    rec = await ctx.svc.store.get(alert_id)
    if rec is None:
        raise NotFound(ctx.t("error.no_alert", id=alert_id))
    rec.state = rec.effective_state()
    return rec


def _affected_codes(ctx: Ctx, alert: Alert) -> list[str]:
    codes: list[str] = []
    for info in alert.infos:
        for area in info.areas:
            codes.extend(ctx.svc.areas.resolve(area).codes)
    return list(dict.fromkeys(codes))


def _map(ctx: Ctx, rec: AlertRecord, report: CoverageReport | None) -> AreaMap | None:
    codes = _affected_codes(ctx, rec.alert)
    if not codes:
        return None
    shades: dict[str, Shade] = {}
    if report is not None:
        rows = {a.code: a for a in report.areas}
        for code in {d for c in codes for d in ctx.console.maps.drawable(c)}:
            row = rows.get(code) or _covering_row(code, report)
            if row is not None:
                shades[code] = Shade(row.reach_rate, "no_subscribers" in row.flags)
    return ctx.console.maps.build(codes, shades, rec.alert)


def _covering_row(code: str, report: CoverageReport) -> AreaCoverage | None:
    """The row for a drawn area the report has no row of its own for: the
    report's totals when the drawn area holds the whole alert."""
    if all(a.code.startswith(code) for a in report.areas):
        return report.totals
    return None


DEPTH = {"county": 6, "township": 9, "village": 12}
"""The longest code shown for each choice of "down to"."""
_INDENT = {2: 0, 4: 0, 6: 1, 9: 2, 12: 3}


def _area_rows(report: CoverageReport, depth: int) -> list[dict[str, Any]]:
    """The report's areas down to codes of ``depth`` digits, indented by level."""
    top = min((_INDENT.get(len(a.code), 0) for a in report.areas), default=0)
    out: list[dict[str, Any]] = []
    for a in report.areas:
        if len(a.code) > depth:
            continue
        sums = {
            k: sum(getattr(c, k) for c in a.channels)
            for k in ("sent", "delivered", "failed", "pending", "acknowledged", "expired")
        }
        out.append(
            {
                "area": a,
                "indent": _INDENT.get(len(a.code), 0) - top,
                **sums,
            }
        )
    return out


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
    if value < 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


async def _alert_values(
    ctx: Ctx, rec: AlertRecord, *, update_form: UpdateForm | None = None, **extra: Any
) -> dict[str, Any]:
    request = ctx.request
    level = request.query.get("level", "township")
    if level not in REPORT_LEVELS:
        level = "township"
    chain = request.query.get("chain") == "1"
    report = await _report(ctx, rec.id, chain=chain)
    principal = ctx.user
    failed: list[Any] = []
    counts: dict[str, int] = {}
    scope_ok = True
    d = request.config_dict.get(DISPATCH)
    try:
        await alert_in_scope(ctx.svc, principal, rec.id)
    except Forbidden:
        scope_ok = False
    if d is not None and scope_ok:
        states = [DeliveryState.FAILED, DeliveryState.UNCERTAIN]
        failed, _ = await delivery_items(d, rec.id, states, 0, FAILED_SHOWN)
        counts, _ = await delivery_counts(d, rec.id)
    info = rec.alert.infos[0] if rec.alert.infos else None
    changeable = (
        rec.state is AlertState.ACTIVE
        and rec.msg_type is not MsgType.CANCEL
        and ctx.can("operator")
        and info is not None
    )
    notice = request.query.get("notice")
    values: dict[str, Any] = {
        "rec": rec,
        "info": info,
        "hazard_name": _hazard_name(ctx, rec.hazard),
        "report": report,
        "rows": _area_rows(report, DEPTH[level]) if report is not None else [],
        "area_map": _map(ctx, rec, report),
        "failed": failed,
        "counts": counts,
        "scope_ok": scope_ok,
        "dispatch": d is not None,
        "level": level,
        "levels": REPORT_LEVELS,
        "chain": chain,
        "seconds": _seconds,
        "changeable": changeable,
        "can_retry": ctx.can("operator") and scope_ok and d is not None,
        "update_form": update_form or UpdateForm.of(rec, ctx.console.zone),
        "update_levels": _levels_of(ctx, rec.hazard),
        "form_id": new_form_id(),
        "notice": notice if notice in NOTICES else None,
        "notice_n": request.query.get("n", ""),
        "errors_for": None,
        "errors": [],
        "field_errors": {},
        "live": rec.state is AlertState.ACTIVE and (report is None or not report.final),
    }
    values.update(extra)
    return values


def _levels_of(ctx: Ctx, hazard: str | None) -> list[str]:
    if hazard and hazard in ctx.svc.taxonomy:
        levels = ctx.svc.taxonomy.levels_of(hazard)
        if levels:
            return [lv.value for lv in levels]
    return [lv.value for lv in Level]


@routes.get(f"/alerts/{ID}")
@page(Role.VIEWER)
async def alert_page(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    rec = await _record(ctx, request.match_info["id"])
    values = await _alert_values(ctx, rec)
    if request.query.get("partial"):
        resp = render(ctx, "_alert_live.html", **values)
    else:
        resp = render(ctx, "alert.html", **values)
    resp.headers["X-Console-Live"] = "1" if values["live"] else "0"
    return resp


async def _refused(
    ctx: Ctx, rec: AlertRecord, which: str, err: WarndError, **extra: Any
) -> web.Response:
    by_field, listed = field_errors_by_name(err.errors, field_of)
    values = await _alert_values(
        ctx,
        rec,
        errors_for=which,
        error=err,
        errors=listed,
        field_errors=by_field,
        **extra,
    )
    return render(ctx, "alert.html", status=err.status, **values)


def _form_text(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


@routes.post(f"/alerts/{ID}/cancel")
@page(Role.OPERATOR)
async def cancel(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    rec = await _record(ctx, request.match_info["id"])
    form = await request.post()
    note = _form_text(form, "note").strip() or None
    body = body_bytes({"note": note} if note else {})

    async def build() -> tuple[Alert, list[str]]:
        return await cancel_message(ctx.svc, rec, note), []

    try:
        accepted = await submit(ctx, body, build, _form_text(form, "form_id"))
    except (AlertInvalid, Forbidden) as err:
        return await _refused(ctx, rec, "cancel", err, cancel_note=note or "")
    raise redirect(f"{PREFIX}/alerts/{rec.id}?notice=cancelled&n={accepted.record.id}")


@routes.post(f"/alerts/{ID}/update")
@page(Role.OPERATOR)
async def update(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    rec = await _record(ctx, request.match_info["id"])
    form = UpdateForm.from_post(await request.post())
    try:
        data = form.body(rec, ctx.console.zone)
        body = body_bytes(data)

        async def build() -> tuple[Alert, list[str]]:
            return await update_message(ctx.svc, rec, data), []

        accepted = await submit(ctx, body, build, _form_text(await request.post(), "form_id"))
    except (AlertInvalid, Forbidden) as err:
        return await _refused(ctx, rec, "update", err, update_form=form)
    raise redirect(f"{PREFIX}/alerts/{accepted.record.id}?notice=updated")


@routes.post(f"/alerts/{ID}/retry")
@page(Role.OPERATOR)
async def retry_failed(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    rec = await alert_in_scope(ctx.svc, ctx.user, request.match_info["id"])
    d = request.config_dict.get(DISPATCH)
    if d is None:
        raise NotFound(ctx.t("error.no_dispatch"))
    form = await request.post()
    states = [DeliveryState.FAILED]
    if _form_text(form, "uncertain") == "1":
        states.append(DeliveryState.UNCERTAIN)
    n = await retry(ctx.svc, d, ctx.user, rec, states)
    raise redirect(f"{PREFIX}/alerts/{rec.id}?notice=retried&n={n}")
