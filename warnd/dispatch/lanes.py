"""The work queues: Redis Streams shared by every warnd process.

``lane:<channel>:hi`` / ``lane:<channel>:lo``
    One entry per batch to send (``a`` alert id, ``k`` batch, ``o`` offsets
    for a partial retry, empty for all; ``n`` the batch's size when all, so
    its rate tokens can be taken with its claim). Red and orange alerts go to ``hi``,
    which a worker always empties before it reads ``lo``.
``accepted``
    One entry per alert accepted by ingest; planners consume it.
``delayed``
    Sorted set of lane entries waiting for a retry time; any process moves
    due ones to their lane (one script, so never twice).

Every stream is read through one consumer group, so each entry goes to
one consumer; an entry is acknowledged and deleted once handled. A
consumer that dies leaves its entries pending: after ``reclaim_idle``
without being renewed they are taken over by another process
(``XAUTOCLAIM``). A live consumer renews the entries it holds.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from warnd.dispatch import lua
from warnd.keys import Keys
from warnd.wire import Wire

WORKERS = "workers"
PLANNERS = "planners"
PRIORITIES = ("hi", "lo")
DEAD_MAXLEN = 1_000_000


def consumer_name() -> str:
    """``host:pid:random``: unique per process, also across machines."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    id: str
    fields: dict[str, str]
    reclaimed: bool = False
    """Taken over from another consumer (its sends may be in doubt)."""


class Lanes:
    def __init__(self, redis: Redis, keys: Keys, consumer: str | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer or consumer_name()
        self._promote = redis.register_script(lua.PROMOTE)
        self._groups: set[tuple[str, str]] = set()

    def lane(self, channel: str, priority: str) -> str:
        return self.keys.dispatch_lane(channel, priority)

    async def ensure_group(self, stream: str, group: str) -> None:
        if (stream, group) in self._groups:
            return
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add((stream, group))

    def forget_groups(self) -> None:
        """After Redis lost data (restarted without persistence): create them again."""
        self._groups.clear()

    # ------------------------------------------------------------- writing
    async def push(
        self,
        channel: str,
        priority: str,
        alert_id: str,
        batch: int,
        offsets: str = "",
        pipe: Any = None,
        *,
        size: int | None = None,
    ) -> Any:
        fields = {"a": alert_id, "k": str(batch), "o": offsets}
        if size is not None and not offsets:
            fields["n"] = str(size)
        target = pipe if pipe is not None else self.redis
        return await _maybe(target.xadd(self.lane(channel, priority), fields))  # type: ignore[arg-type]

    async def later(
        self, channel: str, priority: str, alert_id: str, batch: int, offsets: str, due: float
    ) -> None:
        """Queue a retry of these offsets for ``due`` (epoch seconds)."""
        member = json.dumps(
            {
                "l": f"{channel}:{priority}",
                "a": alert_id,
                "k": str(batch),
                "o": offsets,
                "n": secrets.token_hex(4),
            },
            separators=(",", ":"),
        )
        await self.redis.zadd(self.keys.dispatch_delayed, {member: due})

    async def promote_due(self, now: float, limit: int = 500) -> int:
        """Move due retries to their lanes."""
        prefix = self.keys.dispatch_lane("", "")[: -len(":")]  # "<prefix>:{d}:lane:"
        moved = await self._promote(keys=[self.keys.dispatch_delayed], args=[now, limit, prefix])
        return int(cast(int, moved))

    async def dead_letter(self, fields: dict[str, str], pipe: Any = None) -> None:
        target = pipe if pipe is not None else self.redis
        await _maybe(
            target.xadd(self.keys.dispatch_dead, fields, maxlen=DEAD_MAXLEN, approximate=True)  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------- reading
    async def read(
        self,
        streams: Sequence[str],
        group: str,
        *,
        block_ms: int | None,
        own: bool = False,
        count: int = 1,
    ) -> list[Entry]:
        """Up to ``count`` entries from each of ``streams``, those of the first first.

        All streams are read in one call without blocking; if all are empty
        and ``block_ms`` is given, waits on all of them. ``own``: re-read this
        consumer's own pending entries instead of new ones.
        """
        for stream in streams:
            await self.ensure_group(stream, group)
        order = {s: i for i, s in enumerate(streams)}
        start = "0" if own else ">"
        got = await self.redis.xreadgroup(
            group, self.consumer, {s: start for s in streams}, count=count
        )
        entries = _entries(got)
        if not entries and not own and block_ms is not None:
            got = await self.redis.xreadgroup(
                group, self.consumer, {s: ">" for s in streams}, count=count, block=block_ms
            )
            entries = _entries(got)
        entries.sort(key=lambda e: order.get(e.stream, 99))
        return entries

    async def reclaim(self, stream: str, group: str, idle_ms: int, count: int = 10) -> list[Entry]:
        """Entries idle past ``idle_ms`` with another (silent) consumer, now ours."""
        await self.ensure_group(stream, group)
        res = await self.redis.xautoclaim(stream, group, self.consumer, idle_ms, "0-0", count=count)
        claimed = res[1] if len(res) > 1 else []
        return [
            Entry(stream, eid, dict(fields), reclaimed=True)
            for eid, fields in claimed
            if fields is not None
        ]

    async def renew(self, stream: str, group: str, ids: Sequence[str], min_idle_ms: int) -> None:
        """Reset the idle time of entries this consumer is still working on."""
        if ids:
            await self.redis.xclaim(
                stream, group, self.consumer, min_idle_ms, list(ids), justid=True
            )

    async def done(self, entry: Entry, group: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(entry.stream, group, entry.id)
        pipe.xdel(entry.stream, entry.id)
        await pipe.execute()

    @staticmethod
    def done_on(wire: Wire, entries: Sequence[Entry], group: str) -> None:
        """Queue the acknowledgement and deletion of handled ``entries`` on ``wire``."""
        by_stream: dict[str, list[bytes]] = {}
        for e in entries:
            by_stream.setdefault(e.stream, []).append(e.id.encode())
        for stream, ids in by_stream.items():
            key = stream.encode()
            wire.add(b"XACK", key, group.encode(), *ids)
            wire.add(b"XDEL", key, *ids)

    async def forget_dead_consumers(self, stream: str, group: str, idle_ms: int) -> None:
        """Drop consumers of earlier processes that hold nothing any more."""
        try:
            consumers = await self.redis.xinfo_consumers(stream, group)
        except ResponseError:
            return
        for c in consumers:
            if c["name"] != self.consumer and int(c["pending"]) == 0 and int(c["idle"]) > idle_ms:
                await self.redis.xgroup_delconsumer(stream, group, c["name"])


def _entries(got: Any) -> list[Entry]:
    out: list[Entry] = []
    for stream, items in got or []:
        for eid, fields in items:
            if fields is not None:
                out.append(Entry(stream, eid, dict(fields)))
    return out


async def _maybe(value: Any) -> Any:
    """Await a client call; a pipeline's call returns the pipeline, not a coroutine."""
    if hasattr(value, "__await__"):
        return await value
    return value
