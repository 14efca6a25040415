"""The duty officer's console: server-rendered pages under ``/console/``.

============================  ========  ===========================================
``/console/login``            —         log in with an API token (a session cookie)
``/console/alerts``           viewer    alert list: state, hazard, level, issuer, reach
``/console/alerts/{id}``      viewer    map by reach rate, per-area table, failures;
                                        Update, Cancel and retry (operator)
``/console/issue``            operator  issue a warning: areas or polygon, text, preview
``/console/feeds``            viewer    feed health and quarantined items
``/console/audit``            admin     the audit trail
============================  ========  ===========================================

jinja2 templates (autoescaped), one message catalogue per language
(Chinese by default, English), a little plain JavaScript that the pages do
not need (auto-refresh, text prefill, a polygon sketch). See
:mod:`warnd.console.core` for sessions, CSRF and roles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from aiohttp import web

from warnd.api.context import SERVICES
from warnd.console import views_alerts, views_auth, views_issue, views_system
from warnd.console.core import CONSOLE, PREFIX, Console, console_middleware, not_found, zone_of
from warnd.console.mapsvg import MapMaker
from warnd.console.sessions import SessionStore
from warnd.settings import Settings

__all__ = ["setup_console"]


def _static_dir() -> Path:
    return Path(str(resources.files("warnd.console").joinpath("static")))


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(location=f"{PREFIX}/")


def setup_console(app: web.Application, settings: Settings) -> None:
    """Mount the console at ``/console`` (after services_ctx: it reads the services)."""
    if not settings.console.enabled:
        return

    async def console_ctx(app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]
        app[CONSOLE] = Console(
            settings=settings,
            svc=svc,
            sessions=SessionStore(svc.redis, svc.keys, settings.console),
            zone=zone_of(settings),
            maps=MapMaker(svc.areas),
        )
        yield

    app.cleanup_ctx.append(console_ctx)
    sub = web.Application(middlewares=[console_middleware])
    sub.router.add_static("/static", _static_dir(), name="static", append_version=False)
    for table in (views_auth.routes, views_alerts.routes, views_issue.routes, views_system.routes):
        sub.router.add_routes(table)
    sub.router.add_route("*", "/{tail:.*}", not_found)
    app.add_subapp(PREFIX, sub)
    app.router.add_get(PREFIX, _to_console)
    app.router.add_get("/", _to_console)
