"""Channel rate limits shared by every process: a token bucket in Redis.

A channel declares :class:`~warnd.channel.RateLimit` (``count`` per ``per``
seconds). With ``scope = "channel"`` (an SMS account's TPS) every process
draws from one bucket per channel, so N processes together stay within it;
a batch takes as many tokens as it has targets (as many as it makes requests,
for a provider whose limit counts requests: ``Channel.rate_cost``), and the
caller waits out the debt before sending. ``scope = "address"`` limits (a WeChat Work robot's 20
per minute) are the channel's own to keep per address (its ``RateWindow``);
a full window comes back as a ``retry`` receipt that does not count as an
attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from warnd.channel import Channel
from warnd.dispatch import lua
from warnd.keys import Keys
from warnd.wire import Wire, script_reply


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens taken on a wire, before the batch's claim said how many it sends."""

    limiter: RateLimiter
    channel: Channel
    messages: int
    """The messages they were taken for."""
    at: int
    keys: list[str]
    args: list[str | int | float]

    async def wait(self, replies: Sequence[Any], sending: int) -> float:
        """Seconds to wait before sending ``sending`` messages. Tokens taken for
        messages the claim did not give (sent already, cancelled) go back;
        more are taken if it gave more."""
        reply = await script_reply(replies[self.at], self.limiter._bucket, self.keys, self.args)
        wait = int(reply) / 1000.0
        rest = self.channel.rate_cost(sending) - self.channel.rate_cost(self.messages)
        if rest:
            # The bucket's answer after the correction holds the whole debt.
            wait = await self.limiter.reserve(self.channel, 0, cost=rest)
        return wait


class RateLimiter:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._bucket = redis.register_script(lua.BUCKET)

    def _call(self, channel: Channel, cost: int) -> tuple[list[str], list[str | int | float]]:
        rate = channel.rate
        return [self.keys.rate_bucket(channel.name)], [rate.per_second, max(rate.count, 1), cost]

    async def reserve(self, channel: Channel, n: int, *, cost: int | None = None) -> float:
        """Take ``n`` sends from the channel's bucket; seconds to wait before sending.
        ``cost``: tokens to take instead (negative: give some back)."""
        if channel.rate.scope != "channel" or (n <= 0 and not cost):
            return 0.0
        keys, args = self._call(channel, channel.rate_cost(n) if cost is None else cost)
        wait_ms = await self._bucket(keys=keys, args=args)
        return int(cast(int, wait_ms)) / 1000.0

    def reserve_on(self, wire: Wire, channel: Channel, n: int) -> Reservation | None:
        """Queue the reservation of ``n`` sends on ``wire`` (``None``: the channel
        has no shared bucket, nothing queued)."""
        if channel.rate.scope != "channel" or n <= 0:
            return None
        keys, args = self._call(channel, channel.rate_cost(n))
        return Reservation(self, channel, n, wire.script(self._bucket, keys, args), keys, args)
