"""Console sessions: server-side, in Redis, named by a random cookie value.

The cookie carries 256 random bits and nothing else; Redis keeps the
session under the SHA-256 of that value (a leaked Redis dump names no live
cookie), with the digest of the API token the officer logged in with —
never the token — and the session's CSRF synchronizer token.

A session is *anonymous* before login (the login form needs a CSRF token
too) and is replaced by a new one at login, so a cookie planted before
login is worth nothing after it. Sessions end after ``session_idle_minutes``
without a request, ``session_max_hours`` after login, at logout, and as soon
as their token is revoked (the token is checked on every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from warnd.keys import Keys
from warnd.settings import ConsoleSettings

ANONYMOUS_TTL = 30 * 60
"""Seconds an anonymous (login-form) session lives."""


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    """The cookie value (kept in memory for this request only)."""
    csrf: str
    token_digest: str | None
    """SHA-256 of the API token that logged in; ``None`` before login."""
    created: float

    @property
    def anonymous(self) -> bool:
        return self.token_digest is None

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), (sent or "").encode())


class SessionStore:
    def __init__(self, redis: Redis, keys: Keys, settings: ConsoleSettings) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings

    @property
    def idle_seconds(self) -> int:
        return self._settings.session_idle_minutes * 60

    def _ttl(self, token_digest: str | None) -> int:
        return self.idle_seconds if token_digest else ANONYMOUS_TTL

    async def create(self, token_digest: str | None = None) -> Session:
        sid = secrets.token_urlsafe(32)
        session = Session(sid, secrets.token_urlsafe(32), token_digest, time.time())
        key = self._keys.console_session(_digest(sid))
        mapping: dict[Any, Any] = {"csrf": session.csrf, "created": f"{session.created:.3f}"}
        if token_digest:
            mapping["token"] = token_digest
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self._ttl(token_digest))
        await pipe.execute()
        return session

    async def load(self, sid: str | None) -> Session | None:
        """The live session of this cookie value (its idle timer restarted), or ``None``."""
        if not sid or len(sid) > 128:
            return None
        key = self._keys.console_session(_digest(sid))
        fields = cast(dict[str, str], await self._redis.hgetall(key))
        if not fields or "csrf" not in fields:
            return None
        created = float(fields.get("created", "0"))
        token = fields.get("token") or None
        if token and time.time() - created > self._settings.session_max_hours * 3600:
            await self._redis.delete(key)
            return None
        if token:
            await self._redis.expire(key, self._ttl(token))
        return Session(sid, fields["csrf"], token, created)

    async def delete(self, sid: str) -> None:
        await self._redis.delete(self._keys.console_session(_digest(sid)))
