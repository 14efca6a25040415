"""The console's plumbing: the sub-application, sessions, CSRF, roles, pages.

The console is an aiohttp sub-application mounted at ``/console``. Its
routes are not in the API's route table, so the bearer-token middleware
lets them through and the OpenAPI document does not list them; this
module's middleware does their authentication instead:

* the session cookie (``warnd_session``: HttpOnly, SameSite=Strict, Secure
  over https, path ``/console``) names a server-side session
  (:mod:`warnd.console.sessions`) whose API token is checked on every
  request — a revoked token ends the session;
* every POST must carry the session's CSRF token (form field ``csrf`` or
  header ``X-CSRF-Token``), compared in constant time;
* each page declares the role it needs (:func:`page`), checked exactly as
  the API checks its routes (:meth:`warnd.auth.Principal.require`);
* errors become readable pages in the officer's language, never
  problem+json.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import structlog
from aiohttp import web
from markupsafe import Markup

from warnd import __version__
from warnd.api.context import Services
from warnd.auth import Principal, Role
from warnd.console.i18n import LANGUAGE_NAMES, LANGUAGES, Translator, pick_language
from warnd.console.mapsvg import MapMaker
from warnd.console.sessions import Session, SessionStore
from warnd.errors import FieldError, Forbidden, NotFound, Unauthorized, WarndError
from warnd.model import Level
from warnd.settings import Settings

log = structlog.get_logger("warnd.console")

PREFIX = "/console"
SESSION_COOKIE = "warnd_session"
LANG_COOKIE = "warnd_lang"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

LEVEL_COLOURS = {
    Level.BLUE: "#1f5fbf",
    Level.YELLOW: "#e6b800",
    Level.ORANGE: "#f28c00",
    Level.RED: "#d7191c",
}


class CsrfRejected(Forbidden):
    title = "Form rejected"


# ------------------------------------------------------------------ state


@dataclass(slots=True)
class Console:
    """What the console keeps for the life of the app (built after the services)."""

    settings: Settings
    svc: Services
    sessions: SessionStore
    zone: ZoneInfo
    maps: MapMaker


CONSOLE = web.AppKey("console", Console)


@dataclass(slots=True)
class Ctx:
    """One request as the pages see it."""

    request: web.Request
    console: Console
    session: Session | None
    principal: Principal | None
    t: Translator
    set_cookies: dict[str, str | None] = field(default_factory=dict)
    """Cookies to set on the response (``None``: delete)."""

    @property
    def svc(self) -> Services:
        return self.console.svc

    @property
    def lang(self) -> str:
        return self.t.language

    @property
    def user(self) -> Principal:
        if self.principal is None:
            raise Unauthorized("log in first")
        return self.principal

    def can(self, role: str) -> bool:
        return self.principal is not None and self.principal.role.allows(Role(role))


CTX = web.RequestKey("console_ctx", Ctx)


def ctx_of(request: web.Request) -> Ctx:
    return request[CTX]


# ------------------------------------------------------------------ roles

_ROLES: dict[Handler, Role | None] = {}


def page(role: Role | None) -> Callable[[Handler], Handler]:
    """Declare the role a console handler needs (``None``: anyone, logged in or not)."""

    def mark(handler: Handler) -> Handler:
        _ROLES[handler] = role
        return handler

    return mark


def _role_for(handler: object) -> Role | None:
    # Anything not declared (a new handler someone forgot to mark) needs a login.
    return _ROLES.get(handler, Role.VIEWER) if callable(handler) else Role.VIEWER


# -------------------------------------------------------------- templates


def _fmt_time(zone: ZoneInfo, value: datetime | float | None, with_date: bool = True) -> str:
    if value is None or value == "":
        return "—"
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(float(value), zone)
    local = when.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def _percent(rate: float | None) -> str:
    if rate is None:
        return "—"
    pct = rate * 100
    if 99.95 <= pct < 100:
        return "99.9%"  # never show 100 % while someone is still unreached
    return f"{pct:.0f}%" if pct in (0, 100) else f"{pct:.1f}%"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("warnd.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["percent"] = _percent
    env.globals["version"] = __version__
    env.globals["level_colours"] = {k.value: v for k, v in LEVEL_COLOURS.items()}
    env.globals["languages"] = [(lang, LANGUAGE_NAMES[lang]) for lang in LANGUAGES]
    return env


def render(ctx: Ctx, template: str, status: int = 200, **values: Any) -> web.Response:
    """A whole page (or, for ``_partial`` templates, a fragment) in the officer's language."""
    zone = ctx.console.zone
    session = ctx.session
    text = (
        environment()
        .get_template(template)
        .render(
            _=ctx.t,
            t=ctx.t,
            ctx=ctx,
            lang=ctx.lang,
            user=ctx.principal,
            csrf=session.csrf if session is not None else "",
            csrf_field=Markup('<input type="hidden" name="csrf" value="{}">').format(
                session.csrf if session is not None else ""
            ),
            path=ctx.request.path_qs,
            request_path=ctx.request.path,
            time=functools.partial(_fmt_time, zone),
            refresh_seconds=ctx.console.settings.console.refresh_seconds,
            **values,
        )
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def safe_next(target: str | None, default: str = f"{PREFIX}/alerts") -> str:
    """A redirect target inside the console (never another site: no open redirect)."""
    if (
        not target
        or not target.startswith(PREFIX + "/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 32 for c in target)
    ):
        return default
    return target


def redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location=location)


# ------------------------------------------------------------- middleware


def _is_https(request: web.Request) -> bool:
    # Behind a TLS-terminating proxy the header says so; trusting it can only
    # make the cookie stricter.
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def _apply_cookies(request: web.Request, resp: web.StreamResponse, ctx: Ctx | None) -> None:
    if ctx is None:
        return
    secure = _is_https(request)
    for name, value in ctx.set_cookies.items():
        if value is None:
            resp.del_cookie(name, path=PREFIX, secure=secure, httponly=True, samesite="Strict")
        else:
            resp.set_cookie(
                name,
                value,
                path=PREFIX,
                httponly=True,
                samesite="Strict",
                secure=secure,
                max_age=365 * 24 * 3600 if name == LANG_COOKIE else None,
            )


def _headers(resp: web.StreamResponse, *, static: bool = False) -> None:
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    if not static:
        resp.headers.setdefault("Cache-Control", "no-store")


def error_page(ctx: Ctx, err: WarndError) -> web.Response:
    return render(
        ctx,
        "error.html",
        status=err.status,
        error=err,
        errors=[e.as_dict() for e in err.errors],
    )


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    console = request.config_dict[CONSOLE]
    if isinstance(request.match_info.route.resource, web.StaticResource):
        resp = await handler(request)
        _headers(resp, static=True)
        return resp
    t = Translator(pick_language(request.cookies.get(LANG_COOKIE)))
    ctx = Ctx(request, console, None, None, t)
    request[CTX] = ctx
    try:
        ctx.session = await console.sessions.load(request.cookies.get(SESSION_COOKIE))
        if ctx.session is not None and ctx.session.token_digest is not None:
            try:
                ctx.principal = await console.svc.tokens.by_digest(ctx.session.token_digest)
            except Unauthorized:
                await console.sessions.delete(ctx.session.sid)
                ctx.session = None
                ctx.set_cookies[SESSION_COOKIE] = None
        if ctx.session is None and request.cookies.get(SESSION_COOKIE):
            ctx.set_cookies[SESSION_COOKIE] = None
        role = _role_for(request.match_info.handler)
        if role is not None and ctx.principal is None:
            if request.method == "GET":
                raise redirect(f"{PREFIX}/login?next={quote(request.path_qs, safe='/')}")
            raise Unauthorized(t("error.login_first"))
        if request.method == "POST":
            form = await request.post()
            sent = form.get("csrf")
            token = sent if isinstance(sent, str) else request.headers.get("X-CSRF-Token")
            if ctx.session is None or not ctx.session.csrf_ok(token):
                raise CsrfRejected(t("error.csrf"))
        if role is not None and ctx.principal is not None and not ctx.principal.role.allows(role):
            have = ctx.principal.role.value
            raise Forbidden(t("error.role", needed=t(f"role.{role.value}"), role=t(f"role.{have}")))
        resp = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            _apply_cookies(request, exc, ctx)
            _headers(exc)
            raise
        resp = error_page(ctx, _http_error(ctx.t, exc, request))
    except WarndError as err:
        if isinstance(err, Unauthorized) and request.method == "GET":
            to_login = redirect(f"{PREFIX}/login?next={quote(request.path_qs, safe='/')}")
            _apply_cookies(request, to_login, ctx)
            raise to_login from None
        resp = error_page(ctx, err)
    except Exception:
        log.exception("console.unhandled", path=request.path, method=request.method)
        resp = error_page(ctx, WarndError(t("error.internal")))
    _apply_cookies(request, resp, ctx)
    _headers(resp)
    return resp


def _http_error(t: Translator, exc: web.HTTPException, request: web.Request) -> WarndError:
    err = WarndError(
        t("error.not_found", path=request.path) if exc.status == 404 else (exc.reason or "")
    )
    err.status = exc.status
    err.title = exc.reason
    return err


@page(None)
async def not_found(request: web.Request) -> web.Response:
    """Any other path under /console/: a 404 page, not the API's problem+json."""
    raise NotFound(ctx_of(request).t("error.not_found", path=request.path))


# ------------------------------------------------------------------ forms


def field_errors_by_name(
    errors: list[FieldError], field_of: Callable[[str], str | None]
) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Errors grouped by form field, and every error with its field for the summary."""
    by_field: dict[str, list[str]] = {}
    listed: list[dict[str, Any]] = []
    for e in errors:
        name = field_of(e.loc)
        if name:
            by_field.setdefault(name, []).append(e.msg)
        listed.append({"field": name, "loc": e.loc, "msg": e.msg})
    return by_field, listed


def zone_of(settings: Settings) -> ZoneInfo:
    try:
        return ZoneInfo(settings.render.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")
