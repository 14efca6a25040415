"""The one exception tree of warnd.

Delivery outcomes are values; these are faults. Each error knows the HTTP
status and RFC 9457 problem type it maps to, so the API turns any of them
into ``application/problem+json`` in a single middleware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_BASE = "https://warnd.dev/problems/"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One thing wrong with an input: where, and what.

    ``loc`` is a JSON-pointer-like path for JSON bodies (``/info/0/expires``)
    or an XML location (``line 12: /alert/info/area/polygon``).
    """

    loc: str
    msg: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loc": self.loc, "msg": self.msg}
        if self.line is not None:
            out["line"] = self.line
        return out


class WarndError(Exception):
    """Base of every fault warnd raises on purpose."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = errors or []

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
        return body


class ConfigError(WarndError, ValueError):
    """The configuration, taxonomy or a data file named by it is wrong."""

    slug = "config"
    title = "Invalid configuration"

    def __init__(self, detail: str, *, problems: list[str] | None = None) -> None:
        super().__init__(detail)
        self.problems: list[str] = problems or [detail]


class StoreUnavailable(WarndError, ConnectionError):
    """Redis cannot be reached or started."""

    status = 503
    slug = "store-unavailable"
    title = "Store unavailable"


class BadRequest(WarndError, ValueError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class AlertInvalid(WarndError, ValueError):
    """A CAP document or JSON alert was well-formed but is not a valid alert."""

    status = 422
    slug = "alert-invalid"
    title = "Alert is not valid"


class MalformedDocument(AlertInvalid):
    """The body could not be parsed at all (not XML, not JSON, hostile XML)."""

    status = 400
    slug = "malformed-document"
    title = "Document cannot be parsed"


class Unauthorized(WarndError, PermissionError):
    status = 401
    slug = "unauthorized"
    title = "Authentication required"


class Forbidden(WarndError, PermissionError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class NotFound(WarndError, LookupError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(WarndError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(WarndError, ValueError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(WarndError, ValueError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


@dataclass(slots=True)
class Warnings:
    """Non-fatal observations recorded with an accepted input."""

    items: list[str] = field(default_factory=list)

    def add(self, msg: str) -> None:
        self.items.append(msg)


def field_errors(exc: Exception, *, prefix: str = "") -> list[FieldError]:
    """Turn a pydantic ``ValidationError`` into FieldErrors with JSON-pointer paths.

    ``prefix`` is prepended to every path (e.g. an XML element path).
    """
    from pydantic import ValidationError  # local: errors.py stays import-light

    if not isinstance(exc, ValidationError):
        return [FieldError(loc=prefix or "/", msg=str(exc))]
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        path = "/".join(str(p) for p in err["loc"] if p not in ("function-after",))
        msg = err["msg"].removeprefix("Value error, ")
        out.append(FieldError(loc=f"{prefix}/{path}" if path else prefix or "/", msg=msg))
    return out
