"""Coverage reports and period statistics.

========================================  ======  ==========================================
``GET /v1/alerts/{id}/coverage``          viewer  per area: targeted, reached, per channel
                                                  state counts, time to reach, flags
                                                  (``format=json|csv|html``, ``level``,
                                                  ``chain``)
``GET /v1/reports/summary``               viewer  alerts of a period by hazard, level, area
                                                  and issuer; deliveries and reach by
                                                  channel; median time to reach
                                                  (``from``, ``to``, ``format=json|csv``)
========================================  ======  ==========================================
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from warnd.api.context import SERVICES, principal_of
from warnd.api.deliveries import alert_in_scope
from warnd.api.routes import Param, Response, route
from warnd.auth import Role
from warnd.coverage.models import LEVELS, CoverageReport, SummaryReport
from warnd.coverage.render import summary_csv, to_csv, to_html
from warnd.errors import BadRequest

ID = "{id:[a-z2-7]{16}}"
DEFAULT_DAYS = 30
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "")


def _choice(request: web.Request, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query.get(name, default) or default
    if value not in allowed:
        raise BadRequest(f"{name}={value!r}: one of {', '.join(allowed)}")
    return value


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"{name}={request.query[name]!r}: true or false")


def _csv_response(text: str, filename: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@route(
    "GET",
    f"/v1/alerts/{ID}/coverage",
    summary="An alert's coverage per area: who was targeted and reached, per channel, how fast",
    role=Role.VIEWER,
    tag="coverage",
    params=(
        Param(
            "format",
            "json (default), csv or html (a standalone page)",
            {"type": "string", "enum": ["json", "csv", "html"]},
        ),
        Param(
            "level",
            "Only areas of this level",
            {"type": "string", "enum": list(LEVELS)},
        ),
        Param(
            "chain",
            "Report the alert's chain (Alert → Updates → Cancel) as one event",
            {"type": "boolean"},
        ),
    ),
    responses={
        200: Response("The coverage report (JSON; or CSV, or HTML)", CoverageReport),
        404: Response("No such alert"),
    },
)
async def alert_coverage(request: web.Request) -> web.Response:
    """Live while the fan-out runs (`final` is false until nothing is queued or
    being sent), final afterwards. Read from counters dispatch keeps as
    deliveries change state: the cost does not grow with the audience."""
    principal = principal_of(request)
    fmt = _choice(request, "format", ("json", "csv", "html"), "json")
    level = request.query.get("level") or None
    if level is not None and level not in LEVELS:
        raise BadRequest(f"level={level!r}: one of {', '.join(LEVELS)}")
    chain = _flag(request, "chain")
    alert_id = request.match_info["id"]
    await alert_in_scope(request.app[SERVICES], principal, alert_id)
    report = await request.app[SERVICES].coverage.report(alert_id, level=level, chain=chain)
    if fmt == "csv":
        return _csv_response(to_csv(report, bom=True), f"coverage-{alert_id}.csv")
    if fmt == "html":
        return web.Response(text=to_html(report), content_type="text/html", charset="utf-8")
    return web.Response(text=report.model_dump_json(), content_type="application/json")


def parse_when(value: str, name: str, tz: ZoneInfo, *, end: bool) -> datetime:
    """An ISO 8601 date or date-time; a date is the start (or, for ``end``, the
    end) of that day, and a time without an offset is in ``tz``."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if end else time.min, tzinfo=tz)
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{name}={value!r} is not a date (2025-07-01) or date-time (2025-07-01T08:00:00+08:00)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


@route(
    "GET",
    "/v1/reports/summary",
    summary="Period statistics: alerts by hazard, level, area and issuer; reach by channel",
    role=Role.VIEWER,
    tag="coverage",
    params=(
        Param(
            "from",
            "Start: a date (its first moment) or date-time; default 30 days before `to`",
            {"type": "string", "format": "date-time"},
        ),
        Param(
            "to",
            "End: a date (its last moment) or date-time; default now",
            {"type": "string", "format": "date-time"},
        ),
        Param("format", "json (default) or csv", {"type": "string", "enum": ["json", "csv"]}),
    ),
    responses={200: Response("Statistics of the alerts accepted in the period", SummaryReport)},
)
async def summary_report(request: web.Request) -> web.Response:
    """Dates without a time zone are read in `[render] timezone` (Beijing time by
    default). A token limited to areas sees only alerts inside them."""
    principal = principal_of(request)
    svc = request.app[SERVICES]
    fmt = _choice(request, "format", ("json", "csv"), "json")
    tz = ZoneInfo(svc.settings.render.timezone)
    q = request.query
    end = parse_when(q["to"], "to", tz, end=True) if q.get("to") else datetime.now(UTC)
    start = (
        parse_when(q["from"], "from", tz, end=False)
        if q.get("from")
        else end - timedelta(days=DEFAULT_DAYS)
    )
    if start > end:
        raise BadRequest(f"from ({start.isoformat()}) is after to ({end.isoformat()})")
    summary = await svc.coverage.summary(start, end, scope=principal.areas)
    if fmt == "csv":
        stamp = f"{start.date().isoformat()}_{end.date().isoformat()}"
        return _csv_response(summary_csv(summary, bom=True), f"summary-{stamp}.csv")
    return web.Response(text=summary.model_dump_json(), content_type="application/json")
