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

from typing import cast

from redis.asyncio import Redis

from warnd.channel import Channel
from warnd.dispatch import lua
from warnd.keys import Keys


class RateLimiter:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._bucket = redis.register_script(lua.BUCKET)

    async def reserve(self, channel: Channel, n: int) -> float:
        """Take ``n`` sends from the channel's bucket; seconds to wait before sending."""
        rate = channel.rate
        if rate.scope != "channel" or n <= 0:
            return 0.0
        wait_ms = await self._bucket(
            keys=[self.keys.rate_bucket(channel.name)],
            args=[rate.per_second, max(rate.count, 1), channel.rate_cost(n)],
        )
        return int(cast(int, wait_ms)) / 1000.0
