"""One middleware turns every failure into RFC 9457 problem+json."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from warnd.errors import PROBLEM_BASE, WarndError

log = structlog.get_logger("warnd.api")

PROBLEM_TYPE = "application/problem+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def from_error(err: WarndError, instance: str | None = None) -> web.Response:
    body = err.problem()
    headers = {"WWW-Authenticate": 'Bearer realm="warnd"'} if err.status == 401 else None
    return problem_response(
        err.status,
        body["title"],
        body["detail"],
        slug=err.slug,
        instance=instance,
        errors=body.get("errors"),
        headers=headers,
    )


_HTTP_SLUGS = {
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except WarndError as err:
        return from_error(err, instance=request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        slug, title = _HTTP_SLUGS.get(exc.status, ("http-error", exc.reason))
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 404:
            detail = f"no such resource: {request.method} {request.path}"
        elif exc.status == 405:
            detail = f"{request.method} is not allowed on {request.path}"
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem_response(
            exc.status, title, detail, slug=slug, instance=request.path, headers=headers
        )
    except Exception:
        log.exception("api.unhandled", path=request.path, method=request.method)
        return problem_response(
            500,
            "Internal error",
            "warnd failed to handle this request; see its log",
            slug="internal",
            instance=request.path,
        )
