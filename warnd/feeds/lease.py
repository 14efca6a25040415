"""One poller per feed across every warnd process: a Redis lease.

The lease is a key holding the owner's id with a time to live. A process
takes it with ``SET NX PX``, keeps it by extending it well before it
lapses, and gives it up on shutdown; both extend and release are Lua
compare-and-act scripts, so a process never extends or deletes a lease
another process has taken since. If the holder dies, its lease lapses
after ``ttl`` and the next process to try takes the feed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger("warnd.feeds")

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def process_id() -> str:
    """An owner id unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Lease:
    def __init__(self, redis: Redis, key: str, owner: str, ttl: float) -> None:
        self._redis = redis
        self.key = key
        self.owner = owner
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.held = False

    @property
    def renew_every(self) -> float:
        """Seconds between renewals: a third of the lease, so two may fail in a row."""
        return self.ttl_ms / 3000

    async def hold(self) -> bool:
        """Take the lease or extend it; True while this process holds it."""
        took = await self._redis.set(self.key, self.owner, nx=True, px=self.ttl_ms)
        if not took:
            took = bool(await self._redis.eval(_EXTEND, 1, self.key, self.owner, self.ttl_ms))
        if took and not self.held:
            log.info("feed.lease_taken", lease=self.key, owner=self.owner)
        elif self.held and not took:
            log.warning("feed.lease_lost", lease=self.key, owner=self.owner)
        self.held = bool(took)
        return self.held

    async def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(RedisError, OSError):
            await self._redis.eval(_RELEASE, 1, self.key, self.owner)
            log.info("feed.lease_released", lease=self.key, owner=self.owner)

    async def holder(self) -> str | None:
        value = await self._redis.get(self.key)
        return str(value) if value else None

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Keep extending the lease while the body runs (a poll may be slow)."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.renew_every)
                with contextlib.suppress(RedisError, OSError):
                    await self.hold()

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
