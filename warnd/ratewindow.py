"""Sliding-window rate limits shared across processes (a sorted set in Redis).

"At most ``count`` messages in any ``per`` seconds" is how providers state
their limits (a WeChat Work robot: 20 per minute). A token bucket allows a
burst at a window's edge that such a provider refuses; a sliding log of
send times does not. The clock is Redis's own (``TIME``), so processes on
several machines agree. Without Redis (``warnd channels test``) the same
rule holds within the process.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis

from warnd.wire import Wire, script_reply

# KEYS[1] window zset; ARGV: count, per_ms, member. Returns 0 when the send
# may go now (and records it), else the milliseconds until a slot frees.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local count = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per)
if redis.call('ZCARD', KEYS[1]) < count then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], per)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + per - now)
"""


class RateWindow:
    """``acquire(key)`` → 0.0 when a send may go now, else seconds to wait."""

    def __init__(self, count: int, per: float, redis: Redis | None = None) -> None:
        self.count = count
        self.per = per
        self.redis = redis
        self._local: dict[str, deque[float]] = {}
        self._script = redis.register_script(_ACQUIRE) if redis is not None else None

    async def acquire(self, key: str) -> float:
        if self._script is None:
            return self._acquire_local(key)
        wait_ms = await self._script(
            keys=[key], args=[self.count, int(self.per * 1000), uuid.uuid4().hex]
        )
        return int(cast(int, wait_ms)) / 1000.0

    async def acquire_many(self, keys: Sequence[str]) -> list[float]:
        """``acquire`` for each key in turn, in one round trip to Redis.

        A pipeline of script calls rather than one script over every key:
        the keys (one per robot) need not share a Redis Cluster slot.
        """
        if self._script is None:
            return [self._acquire_local(k) for k in keys]
        if not keys:
            return []
        per_ms, tag = int(self.per * 1000), uuid.uuid4().hex
        wire = Wire()  # packed here: redis-py's pipeline asks SCRIPT EXISTS every time
        calls: list[tuple[list[str], list[str | int]]] = [
            ([key], [self.count, per_ms, f"{tag}.{i}"]) for i, key in enumerate(keys)
        ]
        for call_keys, args in calls:
            wire.script(self._script, call_keys, args)
        await wire.execute(cast(Redis, self.redis), raise_on_error=False)
        waits = [
            await script_reply(reply, self._script, call_keys, args)
            for reply, (call_keys, args) in zip(wire.replies, calls, strict=True)
        ]
        return [int(cast(int, w)) / 1000.0 for w in waits]

    async def release(self, key: str) -> None:
        """Forget the newest slot: the send it was taken for never went out."""
        if self.redis is None:
            q = self._local.get(key)
            if q:
                q.pop()
            return
        await self.redis.zpopmax(key)

    def _acquire_local(self, key: str) -> float:
        now = time.monotonic()
        q = self._local.setdefault(key, deque())
        while q and q[0] <= now - self.per:
            q.popleft()
        if len(q) < self.count:
            q.append(now)
            return 0.0
        return max(0.001, q[0] + self.per - now)
