"""Bearer tokens: roles, area scopes, hashed storage, revocation.

A token is shown once, at creation; Redis keeps only its SHA-256. Tokens
carry 256 bits of randomness, so a fast hash is the right tool (a password
hash would only slow every request down without adding safety).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

from redis.asyncio import Redis

from warnd.audit import Audit
from warnd.errors import BadRequest, Forbidden, NotFound, Unauthorized
from warnd.keys import Keys

TOKEN_PREFIX = "wdt_"  # noqa: S105 - a format marker, not a secret


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.APPROVER: 2, Role.ADMIN: 3}


def _check_prefixes(areas: Iterable[str]) -> list[str]:
    out: list[str] = []
    for code in areas:
        code = code.strip()
        if not code.isdigit() or not 2 <= len(code) <= 12:
            raise BadRequest(
                f"area prefix {code!r} is not an administrative code prefix (2 to 12 digits)"
            )
        out.append(code)
    return sorted(set(out))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's identity, role and area scope."""

    token_id: str
    name: str
    role: Role
    areas: tuple[str, ...] = field(default=())
    """Administrative code prefixes this token may act on; empty = everywhere."""

    @property
    def actor(self) -> str:
        return f"token:{self.name}"

    def require(self, role: Role) -> None:
        if not self.role.allows(role):
            raise Forbidden(
                f"this needs the {role.value} role; token {self.name!r} is {self.role.value}"
            )

    def covers(self, code: str) -> bool:
        """Does this principal's area scope include administrative code ``code``?"""
        return not self.areas or any(code.startswith(p) for p in self.areas)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.token_id,
            "name": self.name,
            "role": self.role.value,
            "areas": list(self.areas),
        }


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    areas: tuple[str, ...]
    created_at: float
    revoked_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "areas": list(self.areas),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def token_digest(token: str) -> str:
    """The SHA-256 a token is stored under."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens in Redis; every creation and revocation is audited here."""

    def __init__(self, redis: Redis, keys: Keys, audit: Audit) -> None:
        self._redis = redis
        self._keys = keys
        self._audit = audit

    async def create(
        self, name: str, role: Role, areas: Iterable[str] = (), *, actor: str
    ) -> tuple[str, TokenInfo]:
        """Create a token; returns the secret (shown once) and its record."""
        if not name.strip():
            raise BadRequest("a token needs a name")
        prefixes = _check_prefixes(areas)
        token_id = secrets.token_hex(6)
        secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        digest = token_digest(secret)
        now = time.time()
        await self._redis.hset(
            self._keys.token(digest),
            mapping={
                "id": token_id,
                "name": name,
                "role": role.value,
                "areas": json.dumps(prefixes),
                "created_at": f"{now:.3f}",
            },
        )
        await self._redis.hset(self._keys.tokens, token_id, digest)
        info = TokenInfo(token_id, name, role, tuple(prefixes), now, None)
        await self._audit.record(
            "token.created",
            actor=actor,
            token_id=token_id,
            name=name,
            role=role.value,
            areas=prefixes,
        )
        return secret, info

    async def authenticate(self, secret: str) -> Principal:
        if not secret.startswith(TOKEN_PREFIX):
            raise Unauthorized("the bearer token is not a warnd token")
        return await self.by_digest(token_digest(secret))

    async def by_digest(self, digest: str) -> Principal:
        """The principal of the token with this SHA-256 (what a console session
        keeps instead of the token), as it is now: revoked tokens are refused."""
        fields = cast(dict[str, str], await self._redis.hgetall(self._keys.token(digest)))
        if not fields:
            raise Unauthorized("unknown bearer token")
        if fields.get("revoked_at"):
            raise Unauthorized(f"token {fields['name']!r} has been revoked")
        return Principal(
            token_id=fields["id"],
            name=fields["name"],
            role=Role(fields["role"]),
            areas=tuple(json.loads(fields.get("areas", "[]"))),
        )

    async def list(self) -> list[TokenInfo]:
        ids = cast(dict[str, str], await self._redis.hgetall(self._keys.tokens))
        out: list[TokenInfo] = []
        for digest in ids.values():
            info = await self._info(digest)
            if info is not None:
                out.append(info)
        return sorted(out, key=lambda t: t.created_at)

    async def revoke(self, id_or_name: str, *, actor: str) -> TokenInfo:
        """Revoke by token id, or by name when exactly one live token has it."""
        matches = [
            t
            for t in await self.list()
            if t.id == id_or_name or (t.name == id_or_name and t.revoked_at is None)
        ]
        if not matches:
            raise NotFound(f"no token with id or name {id_or_name!r}")
        if len(matches) > 1:
            raise BadRequest(
                f"{len(matches)} live tokens are named {id_or_name!r}; revoke one by id: "
                + ", ".join(t.id for t in matches)
            )
        token = matches[0]
        digest = cast(str | None, await self._redis.hget(self._keys.tokens, token.id))
        now = time.time()
        if digest and token.revoked_at is None:
            await self._redis.hset(self._keys.token(digest), "revoked_at", f"{now:.3f}")
            await self._audit.record(
                "token.revoked", actor=actor, token_id=token.id, name=token.name
            )
            return TokenInfo(token.id, token.name, token.role, token.areas, token.created_at, now)
        return token

    async def _info(self, digest: str) -> TokenInfo | None:
        f = cast(dict[str, str], await self._redis.hgetall(self._keys.token(digest)))
        if not f:
            return None
        return TokenInfo(
            id=f["id"],
            name=f["name"],
            role=Role(f["role"]),
            areas=tuple(json.loads(f.get("areas", "[]"))),
            created_at=float(f["created_at"]),
            revoked_at=float(f["revoked_at"]) if f.get("revoked_at") else None,
        )
