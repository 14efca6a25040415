"""What the HTTP-speaking channels share: one pooled session, outcome rules."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import aiohttp

from warnd.channel import Channel, ChannelConfig, ChannelHealth, Receipt, Target

from ._http1 import ConnectFailed, OriginPool

T = TypeVar("T")


def new_session(config: ChannelConfig) -> aiohttp.ClientSession:
    """One pooled session per channel instance (one provider account).

    Every request is bounded by ``config.timeout``; the connector caps the
    connections this account opens.
    """
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=config.timeout, connect=min(config.timeout, 10.0)),
        connector=aiohttp.TCPConnector(limit=config.max_connections),
        raise_for_status=False,
        # Gateways' cookies are not state warnd keeps: none stored, none sent.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def new_pool(origin: str, config: ChannelConfig) -> OriginPool:
    """The lean client's connections to ``origin`` for one channel instance,
    bounded as :func:`new_session` bounds aiohttp's."""
    return OriginPool(
        origin,
        limit=config.max_connections,
        timeout=config.timeout,
        connect_timeout=min(config.timeout, 10.0),
    )


class HttpChannel(Channel):
    """A channel that speaks HTTP through one pooled session per instance."""

    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = new_session(self.config)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def health(self) -> ChannelHealth:
        return ChannelHealth(self._session is not None, "" if self._session else "not started")


def retry_after(headers: Mapping[str, str], default: float) -> float:
    """Seconds from a Retry-After header (delta or HTTP date), else ``default``."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return default
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def not_sent(exc: BaseException) -> bool:
    """The request certainly never reached the provider (safe to resend)."""
    return isinstance(
        exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError | ConnectFailed
    )


def transport_receipts(
    targets: Iterable[Target],
    exc: BaseException,
    *,
    idempotent: bool,
    who: str,
    reference: str | None = None,
) -> list[Receipt]:
    """Receipts for targets whose request failed in transport.

    Not sent (refused, connect timeout): retry. Possibly sent (read
    timeout, disconnect) to a provider that does not deduplicate:
    uncertain (carrying ``reference``, the request id the provider's query
    API knows), so dispatch reconciles before resending.
    """
    detail = f"{who}: {type(exc).__name__}: {exc}".rstrip(": ")
    if not_sent(exc) or idempotent:
        return [Receipt.retry(t.delivery_id, detail, after=5.0) for t in targets]
    return [Receipt.uncertain(t.delivery_id, detail, provider_id=reference) for t in targets]


TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


async def gather_limited(
    items: Sequence[T], work: Callable[[T], Awaitable[Sequence[Receipt]]], limit: int
) -> list[Receipt]:
    """Run ``work`` on every item, at most ``limit`` at once; concatenate receipts."""
    sem = asyncio.Semaphore(limit)

    async def one(item: T) -> Sequence[Receipt]:
        async with sem:
            return await work(item)

    out: list[Receipt] = []
    for part in await asyncio.gather(*(one(i) for i in items)):
        out.extend(part)
    return out
