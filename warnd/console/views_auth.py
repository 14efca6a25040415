"""Login with an API token, logout, and the language switch."""

from __future__ import annotations

import structlog
from aiohttp import web

from warnd.auth import token_digest
from warnd.console.core import (
    LANG_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    ctx_of,
    page,
    redirect,
    render,
    safe_next,
)
from warnd.console.i18n import pick_language
from warnd.errors import Unauthorized

log = structlog.get_logger("warnd.console")

routes = web.RouteTableDef()


@routes.get("/")
@routes.get("")
@page(None)
async def home(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    raise redirect(f"{PREFIX}/alerts" if ctx.principal else f"{PREFIX}/login")


@routes.get("/login")
@page(None)
async def login_form(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    target = safe_next(request.query.get("next"))
    if ctx.principal is not None:
        raise redirect(target)
    if ctx.session is None:
        # The login form needs a CSRF token too: an anonymous session holds it.
        ctx.session = await ctx.console.sessions.create()
        ctx.set_cookies[SESSION_COOKIE] = ctx.session.sid
    return render(ctx, "login.html", next=target, error=None)


@routes.post("/login")
@page(None)
async def login(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    form = await request.post()
    nxt = form.get("next")
    target = safe_next(nxt if isinstance(nxt, str) else None)
    raw = form.get("token")
    token = raw.strip() if isinstance(raw, str) else ""
    try:
        principal = await ctx.svc.tokens.authenticate(token)
    except Unauthorized as exc:
        log.info("console.login_refused", reason=exc.detail)
        return render(ctx, "login.html", status=401, next=target, error=ctx.t("login.refused"))
    sessions = ctx.console.sessions
    if ctx.session is not None:
        await sessions.delete(ctx.session.sid)
    # A new session id at login: a cookie planted before it is worth nothing.
    ctx.session = await sessions.create(token_digest(token))
    ctx.principal = principal
    ctx.set_cookies[SESSION_COOKIE] = ctx.session.sid
    await ctx.svc.audit.record("console.login", actor=principal.actor, role=principal.role.value)
    log.info("console.login", token=principal.name)
    raise redirect(target)


@routes.post("/logout")
@page(None)
async def logout(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    if ctx.session is not None:
        await ctx.console.sessions.delete(ctx.session.sid)
        if ctx.principal is not None:
            await ctx.svc.audit.record("console.logout", actor=ctx.principal.actor)
    ctx.set_cookies[SESSION_COOKIE] = None
    raise redirect(f"{PREFIX}/login")


@routes.post("/lang")
@page(None)
async def switch_language(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    form = await request.post()
    lang = form.get("lang")
    ctx.set_cookies[LANG_COOKIE] = pick_language(lang if isinstance(lang, str) else None)
    nxt = form.get("next")
    raise redirect(safe_next(nxt if isinstance(nxt, str) else None))
