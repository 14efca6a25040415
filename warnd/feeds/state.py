"""What warnd remembers about each feed, in Redis.

Per feed (keys under the hash tag ``{f:<name>}``): a state hash with the
health an operator reads at ``GET /v1/feeds`` (last success, last error,
consecutive failures, counters), the shared poll schedule, the HTTP
validators and the digest of the last fully processed body; the index
entries already handled; the quarantine of broken items. Per sender of a
met-warning feed: the signal currently in force per area and hazard, so a
relieve (解除) finds the warning it ends whichever feed carries it.

Everything here survives a restart and is shared by every warnd process,
so the process that takes over a feed continues where the last one left.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis

from warnd.errors import FieldError
from warnd.keys import Keys

MAX_REJECTS = 1000
"""Quarantined items kept per feed (newest first); older ones are trimmed."""
REJECT_BODY_CHARS = 16 * 1024
SEEN_DAYS = 30
"""Entries unlisted for this long are forgotten (re-listing them only re-dedupes)."""

_COUNTERS = ("polls", "accepted", "duplicates", "rejected", "failures")


@dataclass(frozen=True, slots=True)
class Reject:
    at: float
    item: str
    reason: str
    errors: list[dict[str, Any]]
    body_sha256: str
    body_bytes: int
    body: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "item": self.item,
            "reason": self.reason,
            "errors": self.errors,
            "body_sha256": self.body_sha256,
            "body_bytes": self.body_bytes,
            "body": self.body,
        }


def _num(value: str | None) -> float | None:
    return float(value) if value else None


class FeedState:
    """One feed's state hash, seen entries and quarantine."""

    def __init__(self, redis: Redis, keys: Keys, name: str) -> None:
        self._redis = redis
        self.name = name
        self._state = keys.feed_state(name)
        self._seen = keys.feed_seen(name)
        self._attempts = keys.feed_attempts(name)
        self._rejects = keys.feed_rejects(name)
        self._digests = keys.feed_reject_digests(name)

    # ----------------------------------------------------------- health

    async def raw(self) -> dict[str, str]:
        return cast(dict[str, str], await self._redis.hgetall(self._state))

    async def health(self) -> dict[str, Any]:
        raw = await self.raw()
        failures = int(raw.get("consecutive_failures", 0))
        return {
            "status": _status(raw, failures),
            "last_poll_at": _num(raw.get("last_poll_at")),
            "last_success_at": _num(raw.get("last_success_at")),
            "last_error": raw.get("last_error") or None,
            "last_error_at": _num(raw.get("last_error_at")),
            "consecutive_failures": failures,
            "next_poll_at": _num(raw.get("next_poll_at")),
            "last_reject": raw.get("last_reject") or None,
            "last_reject_at": _num(raw.get("last_reject_at")),
            "poller": raw.get("poller") or None,
            **{name: int(raw.get(name, 0)) for name in _COUNTERS},
        }

    async def next_poll_at(self) -> float | None:
        return _num(cast(str | None, await self._redis.hget(self._state, "next_poll_at")))

    async def set_next_poll_at(self, when: float) -> None:
        await self._redis.hset(self._state, "next_poll_at", f"{when:.3f}")

    async def polled(
        self,
        *,
        poller: str,
        accepted: int,
        duplicates: int,
        error: str | None,
        next_at: float,
        now: float | None = None,
    ) -> int:
        """Record one poll; returns the consecutive failures after it."""
        now = time.time() if now is None else now
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(self._state, "polls", 1)
        pipe.hincrby(self._state, "accepted", accepted)
        pipe.hincrby(self._state, "duplicates", duplicates)
        mapping: dict[str, str] = {
            "last_poll_at": f"{now:.3f}",
            "poller": poller,
            "next_poll_at": f"{next_at:.3f}",
        }
        if error is None:
            mapping |= {"last_success_at": f"{now:.3f}", "consecutive_failures": "0"}
        else:
            mapping |= {"last_error": error, "last_error_at": f"{now:.3f}"}
            pipe.hincrby(self._state, "failures", 1)
            pipe.hincrby(self._state, "consecutive_failures", 1)
        pipe.hset(self._state, mapping=cast(dict[Any, Any], mapping))
        pipe.hget(self._state, "consecutive_failures")
        out = await pipe.execute()
        return int(out[-1] or 0)

    async def count(self, *, accepted: int = 0, duplicates: int = 0) -> None:
        """Counters for items that arrived outside a poll (push)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(self._state, "accepted", accepted)
        pipe.hincrby(self._state, "duplicates", duplicates)
        await pipe.execute()

    async def consecutive_failures(self) -> int:
        value = await self._redis.hget(self._state, "consecutive_failures")
        return int(cast(str | None, value) or 0)

    # ------------------------------------------------- validators, digest

    async def validators(self) -> tuple[str | None, str | None, str | None]:
        """(ETag, Last-Modified, SHA-256 of the last fully processed body)."""
        etag, modified, digest = cast(
            list[str | None],
            await self._redis.hmget(self._state, ["etag", "last_modified", "body_sha256"]),
        )
        return etag or None, modified or None, digest or None

    async def set_validators(self, etag: str | None, modified: str | None, digest: str) -> None:
        await self._redis.hset(
            self._state,
            mapping={"etag": etag or "", "last_modified": modified or "", "body_sha256": digest},
        )

    async def forget_validators(self) -> None:
        await self._redis.hdel(self._state, "etag", "last_modified", "body_sha256")

    # --------------------------------------------------------- entries

    async def unseen(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        scores = await self._redis.zmscore(self._seen, keys)
        return {k for k, s in zip(keys, scores, strict=True) if s is None}

    async def mark_seen(self, key: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self._seen, {key: now})
        pipe.hdel(self._attempts, key)
        await pipe.execute()

    async def still_listed(self, keys: list[str], now: float | None = None) -> None:
        """Refresh entries the index still lists; forget long-unlisted ones."""
        now = time.time() if now is None else now
        pipe = self._redis.pipeline(transaction=False)
        if keys:
            pipe.zadd(self._seen, dict.fromkeys(keys, now), xx=True)
        pipe.zremrangebyscore(self._seen, "-inf", now - SEEN_DAYS * 86400)
        await pipe.execute()

    async def failed_attempt(self, key: str) -> int:
        return int(await self._redis.hincrby(self._attempts, key, 1))

    # ------------------------------------------------------- quarantine

    async def quarantine(
        self, *, item: str, reason: str, errors: list[FieldError], body: bytes
    ) -> bool:
        """Store a broken item with its reason; False if this body was already stored."""
        digest = hashlib.sha256(body).hexdigest()
        if not await self._redis.sadd(self._digests, digest):
            return False
        now = time.time()
        entry = Reject(
            at=now,
            item=item,
            reason=reason,
            errors=[e.as_dict() for e in errors[:50]],
            body_sha256=digest,
            body_bytes=len(body),
            body=body[: REJECT_BODY_CHARS * 4].decode("utf-8", "replace")[:REJECT_BODY_CHARS],
        )
        pipe = self._redis.pipeline(transaction=True)
        pipe.lpush(self._rejects, json.dumps(entry.as_dict(), ensure_ascii=False))
        pipe.ltrim(self._rejects, 0, MAX_REJECTS - 1)
        pipe.hincrby(self._state, "rejected", 1)
        pipe.hset(
            self._state,
            mapping={"last_reject": f"{item}: {reason}", "last_reject_at": f"{now:.3f}"},
        )
        await pipe.execute()
        return True

    async def rejects(self, *, offset: int = 0, limit: int = 50) -> tuple[list[Reject], int]:
        """A page of quarantined items, newest first, and how many are kept."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.lrange(self._rejects, offset, offset + limit - 1)
        pipe.llen(self._rejects)
        rows, total = await pipe.execute()
        return [Reject(**json.loads(r)) for r in rows], int(total)


def _status(raw: dict[str, str], failures: int) -> str:
    if failures:
        return "failing"
    if raw.get("last_success_at"):
        return "ok"
    return "pending"


# ------------------------------------------------------- met signals in force

_SET_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and tonumber(doc['issued']) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

_CLEAR_IF = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local ok, doc = pcall(cjson.decode, cur)
if ok and doc['identifier'] == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Current:
    """The signal in force for one area and hazard of one met sender."""

    identifier: str
    sent: datetime
    expires: datetime | None

    @property
    def issued(self) -> float:
        return self.sent.timestamp()


class MetSignals:
    """Signals in force per sender, area and hazard (for Update and 解除 linking)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def current(self, sender: str, slot: str) -> Current | None:
        raw = cast(str | None, await self._redis.hget(self._keys.cma_active(sender), slot))
        if not raw:
            return None
        doc = json.loads(raw)
        return Current(
            identifier=doc["identifier"],
            sent=datetime.fromisoformat(doc["sent"]),
            expires=datetime.fromisoformat(doc["expires"]) if doc.get("expires") else None,
        )

    async def set_current(self, sender: str, slot: str, cur: Current) -> bool:
        """Make ``cur`` the signal in force unless a later one already is."""
        doc = {
            "identifier": cur.identifier,
            "sent": cur.sent.isoformat(),
            "expires": cur.expires.isoformat() if cur.expires else None,
            "issued": cur.issued,
        }
        done = await self._redis.eval(
            _SET_IF_NEWER,
            1,
            self._keys.cma_active(sender),
            slot,
            json.dumps(doc),
            f"{cur.issued:.3f}",
        )
        return bool(done)

    async def clear(self, sender: str, slot: str, identifier: str) -> bool:
        """End the signal in force if it is still ``identifier``."""
        done = await self._redis.eval(_CLEAR_IF, 1, self._keys.cma_active(sender), slot, identifier)
        return bool(done)
