"""What handlers share: the services object, the caller, the bounded body."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from redis.asyncio import Redis

from warnd.areas import AreaRegistry
from warnd.audit import Audit
from warnd.auth import Principal, TokenStore
from warnd.coverage.service import CoverageService
from warnd.errors import PayloadTooLarge, Unauthorized
from warnd.groups import GroupTable
from warnd.ingest import Intake
from warnd.keys import Keys
from warnd.match import Matcher
from warnd.settings import Settings
from warnd.store import AlertStore
from warnd.subscribers import SubscriberStore
from warnd.taxonomy import Taxonomy


@dataclass(slots=True)
class Services:
    """The long-lived objects of one warnd process, built once at start."""

    settings: Settings
    redis: Redis
    keys: Keys
    taxonomy: Taxonomy
    store: AlertStore
    tokens: TokenStore
    audit: Audit
    intake: Intake
    areas: AreaRegistry
    """Administrative areas; empty until the ``areas`` cleanup_ctx entry loads it."""
    subscribers: SubscriberStore
    matcher: Matcher
    """The in-memory subscriber index; loaded by the ``subscribers`` cleanup_ctx entry."""
    coverage: CoverageService
    """Coverage reports and period statistics (warnd/coverage/)."""

    @classmethod
    def build(cls, settings: Settings, redis: Redis, taxonomy: Taxonomy) -> Services:
        keys = Keys(settings.redis.key_prefix)
        store = AlertStore(redis, keys)
        audit = Audit(redis, keys)
        areas = AreaRegistry(redis, keys)
        subscribers = SubscriberStore(redis, keys)
        groups = GroupTable.build(settings.groups, taxonomy)
        return cls(
            settings=settings,
            redis=redis,
            keys=keys,
            taxonomy=taxonomy,
            store=store,
            tokens=TokenStore(redis, keys, audit),
            audit=audit,
            intake=Intake(redis, store, audit, taxonomy, keys),
            areas=areas,
            subscribers=subscribers,
            matcher=Matcher(subscribers, areas, groups),
            coverage=CoverageService(redis, keys, areas, store, settings.coverage),
        )

    async def next_identifier_seq(self, stamp: str) -> int:
        """A number unique per second-stamp across every warnd process."""
        key = self.keys.identifier_seq(stamp)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, 120)
        seq, _ = await pipe.execute()
        return int(seq)


SERVICES = web.AppKey("services", Services)
PRINCIPAL = web.RequestKey("principal", Principal)


def principal_of(request: web.Request) -> Principal:
    principal = request.get(PRINCIPAL)
    if not isinstance(principal, Principal):
        raise Unauthorized("this endpoint needs a bearer token")
    return principal


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the request body, refusing it unread when it is larger than ``limit``.

    A declared Content-Length over the limit is refused before a byte is
    read; a chunked body is read only up to the limit.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
