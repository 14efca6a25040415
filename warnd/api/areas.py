"""Area endpoints and the registry's lifecycle in the app.

``GET /v1/areas/{code}``
    One area (any padding of its code: ``371700`` is 菏泽市 ``3717``): name,
    level, parent, ancestors, children, whether it has a boundary, and
    subscriber counts from the hook the subscriber registry installs with
    :meth:`~warnd.areas.AreaRegistry.set_subscriber_counter` (``null`` until
    one is installed). Unknown codes are 404, malformed ones 400.
``GET /v1/areas?prefix=…&level=…&limit=…&cursor=…``
    Registered areas under a code prefix, by code, in pages.

:func:`setup_areas` adds the ``cleanup_ctx`` entry that imports the
``[areas] import`` files (unchanged ones are skipped), loads the registry
and then checks every ``[areas] reload_seconds`` whether an import (by any
process, e.g. ``warnd areas import``) bumped the version, reloading if so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from warnd.adcodes import AreaLevel, normalise_code
from warnd.api.context import SERVICES
from warnd.api.routes import Param, Response, route
from warnd.area_import import import_configured
from warnd.areas import AdminArea, AreaRegistry
from warnd.auth import Role
from warnd.errors import BadRequest, NotFound
from warnd.settings import Settings

log = structlog.get_logger("warnd.api.areas")

MAX_PAGE = 1000


class AreaBrief(BaseModel):
    code: str = Field(description="Canonical code: 2, 4, 6, 9 or 12 digits")
    name: str
    level: AreaLevel
    parent: str | None
    has_boundary: bool


class AreaView(AreaBrief):
    ancestors: list[AreaBrief] = Field(description="Nearest first")
    children: list[AreaBrief]
    geometry_from: str | None = Field(
        description="Code whose boundary stands for this area (itself or the nearest"
        " ancestor with a boundary); null when none has one"
    )
    subscribers: dict[str, int] | None = Field(
        description="Subscriber counts (`total` covers the area and everything below it);"
        " null while no subscriber registry is attached"
    )


class AreaPage(BaseModel):
    items: list[AreaBrief]
    total: int = Field(description="Areas under the prefix (before the level filter)")
    next: str | None = Field(description="URL of the next page, or null")


def _brief(area: AdminArea) -> AreaBrief:
    return AreaBrief(
        code=area.code,
        name=area.name,
        level=area.level,
        parent=area.parent,
        has_boundary=area.has_boundary,
    )


def _json(model: BaseModel) -> web.Response:
    return web.Response(text=model.model_dump_json(), content_type="application/json")


@route(
    "GET",
    "/v1/areas/{code}",
    summary="One administrative area: hierarchy, boundary, subscriber counts",
    role=Role.VIEWER,
    tag="areas",
    responses={200: Response("The area", AreaView), 404: Response("No such area")},
)
async def get_area(request: web.Request) -> web.Response:
    registry = request.app[SERVICES].areas
    raw = request.match_info["code"]
    try:
        code = normalise_code(raw)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    area = registry.get(code)
    if area is None:
        raise NotFound(
            f"no area {code} is registered (import code lists with `warnd areas import`)"
        )
    source = next(
        (a.code for a in (area, *registry.ancestors(code)) if a.has_boundary),
        None,
    )
    counts = await registry.subscriber_counts(code)
    view = AreaView(
        **_brief(area).model_dump(),
        ancestors=[_brief(a) for a in registry.ancestors(code)],
        children=[_brief(a) for a in registry.children(code)],
        geometry_from=source,
        subscribers=dict(counts) if counts is not None else None,
    )
    return _json(view)


@route(
    "GET",
    "/v1/areas",
    summary="Registered areas under a code prefix, by code",
    role=Role.VIEWER,
    tag="areas",
    params=(
        Param("prefix", "Code prefix (digits; padded codes such as 371700 are normalised)"),
        Param("level", "Only this level", {"enum": [lv.value for lv in AreaLevel]}),
        Param("limit", f"Page size, 1 to {MAX_PAGE} (default 100)", {"type": "integer"}),
        Param("cursor", "Continue after this code (from `next`)"),
    ),
    responses={200: Response("A page of areas", AreaPage)},
)
async def list_areas(request: web.Request) -> web.Response:
    registry = request.app[SERVICES].areas
    q = request.query
    prefix = q.get("prefix", "").strip()
    if prefix and not (prefix.isascii() and prefix.isdigit() and len(prefix) <= 12):
        raise BadRequest(f"prefix={prefix!r} must be up to 12 digits")
    if len(prefix) in (6, 9, 12):
        try:
            prefix = normalise_code(prefix)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    try:
        limit = int(q.get("limit", "100"))
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError
    except ValueError:
        raise BadRequest(f"limit must be an integer between 1 and {MAX_PAGE}") from None
    level: AreaLevel | None = None
    if q.get("level"):
        try:
            level = AreaLevel(q["level"])
        except ValueError:
            allowed = ", ".join(lv.value for lv in AreaLevel)
            raise BadRequest(f"level={q['level']!r} is not one of {allowed}") from None
    cursor = q.get("cursor") or None
    if cursor is not None and not (cursor.isascii() and cursor.isdigit()):
        raise BadRequest(f"cursor={cursor!r} is not an area code")
    items: list[AdminArea] = []
    more = False
    for area in registry.with_prefix(prefix, after=cursor):
        if level is not None and area.level is not level:
            continue
        if len(items) == limit:
            more = True
            break
        items.append(area)
    nxt = None
    if more:
        params: dict[str, Any] = {"prefix": prefix, "limit": limit, "cursor": items[-1].code}
        if level is not None:
            params["level"] = level.value
        nxt = "/v1/areas?" + "&".join(f"{k}={v}" for k, v in params.items())
    page = AreaPage(items=[_brief(a) for a in items], total=registry.count_prefix(prefix), next=nxt)
    return _json(page)


# --------------------------------------------------------------- lifecycle


def setup_areas(app: web.Application, settings: Settings) -> None:
    """Add the registry's cleanup_ctx entry (after the services entry)."""

    async def areas_ctx(app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]
        if settings.areas.import_files:
            for summary in await import_configured(
                svc.redis, svc.keys, settings.areas.import_files
            ):
                for issue in summary.rejected[:20]:
                    log.warning("areas.row_rejected", file=summary.file, issue=str(issue))
        await svc.areas.reload(force=True)
        stop = asyncio.Event()
        task = asyncio.create_task(_watch(svc.areas, settings.areas.reload_seconds, stop))
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(areas_ctx)


async def _watch(registry: AreaRegistry, every: float, stop: asyncio.Event) -> None:
    """Reload the registry when an import bumped the version."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
        if stop.is_set():
            return
        try:
            await registry.reload()
        except (RedisError, OSError) as exc:
            log.warning("areas.reload_failed", error=str(exc))
