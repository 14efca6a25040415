"""The route table: each endpoint declared once, served and documented from it.

Handlers register with :func:`route`; the same declaration gives aiohttp
its route, the auth middleware the role an endpoint needs, and the
OpenAPI document its operation (with schemas generated from the pydantic
models), so the API is never described twice.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from warnd import __version__
from warnd.api.schemas import Problem
from warnd.auth import Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CAP_TYPES = ("application/cap+xml", "application/xml", "text/xml")


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    where: str = "query"


@dataclass(frozen=True, slots=True)
class Response:
    description: str
    model: type[BaseModel] | None = None
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    summary: str
    role: Role | None
    """Role needed; ``None`` means no authentication (health, OpenAPI)."""
    body: dict[str, type[BaseModel] | str] = field(default_factory=dict)
    """Content type → model, or a description for non-JSON bodies."""
    params: tuple[Param, ...] = ()
    responses: dict[int, Response] = field(default_factory=dict)
    tag: str = "alerts"


ROUTES: list[RouteSpec] = []
_BY_HANDLER: dict[Handler, RouteSpec] = {}


def route(
    method: str,
    path: str,
    *,
    summary: str,
    role: Role | None,
    body: dict[str, type[BaseModel] | str] | None = None,
    params: tuple[Param, ...] = (),
    responses: dict[int, Response] | None = None,
    tag: str = "alerts",
) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        spec = RouteSpec(
            method, path, handler, summary, role, body or {}, params, responses or {}, tag
        )
        ROUTES.append(spec)
        _BY_HANDLER[handler] = spec
        return handler

    return register


def spec_for(handler: object) -> RouteSpec | None:
    return _BY_HANDLER.get(handler) if callable(handler) else None


def setup_routes(app: web.Application) -> None:
    for spec in ROUTES:
        app.router.add_route(spec.method, spec.path, spec.handler)


def openapi_path(path: str) -> str:
    """aiohttp's ``{id:regex}`` becomes OpenAPI's ``{id}``.

    The regex may itself contain braces (``[a-z2-7]{16}``), so the closing
    brace is found by counting, not by the first ``}``.
    """
    out: list[str] = []
    i = 0
    while i < len(path):
        if path[i] != "{":
            out.append(path[i])
            i += 1
            continue
        depth, j = 1, i + 1
        while depth:
            depth += {"{": 1, "}": -1}.get(path[j], 0)
            j += 1
        out.append("{" + path[i + 1 : j - 1].split(":", 1)[0] + "}")
        i = j
    return "".join(out)


def _path_params(path: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", openapi_path(path))


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every registered route."""
    models: set[type[BaseModel]] = {Problem}
    for spec in ROUTES:
        models.update(m for m in spec.body.values() if isinstance(m, type))
        models.update(r.model for r in spec.responses.values() if r.model is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, defs = models_json_schema(
        [(m, "serialization") for m in ordered], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = defs.get("$defs", {})

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, dict[str, Any]] = {}
    for spec in ROUTES:
        op: dict[str, Any] = {
            "summary": spec.summary,
            "operationId": spec.handler.__name__,
            "tags": [spec.tag],
        }
        if spec.handler.__doc__:
            op["description"] = spec.handler.__doc__.strip()
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in _path_params(spec.path)
        ]
        params += [
            {"name": p.name, "in": p.where, "description": p.description, "schema": p.schema}
            for p in spec.params
        ]
        if params:
            op["parameters"] = params
        if spec.body:
            content: dict[str, Any] = {}
            for ctype, model in spec.body.items():
                if isinstance(model, str):
                    content[ctype] = {"schema": {"type": "string", "description": model}}
                else:
                    content[ctype] = {"schema": ref(model)}
            op["requestBody"] = {"required": True, "content": content}
        responses: dict[str, Any] = {}
        for status, resp in sorted(spec.responses.items()):
            entry: dict[str, Any] = {"description": resp.description}
            if resp.model is not None:
                entry["content"] = {resp.content_type: {"schema": ref(resp.model)}}
            elif resp.content_type != "application/json":
                entry["content"] = {resp.content_type: {"schema": {"type": "string"}}}
            responses[str(status)] = entry
        problem = {"application/problem+json": {"schema": ref(Problem)}}
        errors = {"400": "Malformed request", "422": "Invalid content"}
        if spec.role is not None:
            op["security"] = [{"bearer": []}]
            errors |= {"401": "Missing or unknown token", "403": "Role or area not allowed"}
        for status_text, text in errors.items():
            responses.setdefault(status_text, {"description": text, "content": problem})
        op["responses"] = responses
        paths.setdefault(openapi_path(spec.path), {})[spec.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "warnd",
            "version": __version__,
            "description": "Early-warning dissemination engine: operator and feed API.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
