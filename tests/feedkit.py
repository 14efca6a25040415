"""A real upstream for feed tests: an aiohttp server on 127.0.0.1 serving
the files under ``../shared/data`` the way public feeds do (ETag and
Last-Modified, 304, gzip), and misbehaving on demand (500, 429, slow
answers, truncated bodies, HTML error pages). It counts every request per
path, so tests can see exactly what warnd fetched.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from warnd.api.app import create_app
from warnd.feeds.poller import FEEDS, FeedHub, PollResult
from warnd.settings import Settings
from warnd.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CAP = DATA / "cap"
CMA = DATA / "cma"


@dataclass
class Route:
    body: bytes
    content_type: str = "application/xml"
    mode: str = "ok"
    """ok, 500, 429, 404, slow (longer than any test feed's timeout), truncated."""
    etag: bool = True
    gzip: bool = False
    times: int | None = None
    """Misbehave this many times, then answer ``ok``; None means always."""
    last_modified: datetime = field(default_factory=lambda: datetime(2024, 4, 22, 6, 0, tzinfo=UTC))


class Upstream:
    """Holds the routes; ``hits`` counts requests per path, ``seen`` their headers."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.times: dict[str, list[float]] = {}
        """Arrival times (event-loop clock) of the requests per path."""
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def start(self) -> None:
        await self.server.start_server()

    async def close(self) -> None:
        self.release.set()
        await self.server.close()

    def url(self, path: str) -> str:
        return str(self.server.make_url("/" + path.lstrip("/")))

    def serve(self, path: str, body: bytes | Path, **kw: Any) -> str:
        data = body.read_bytes() if isinstance(body, Path) else body
        self.routes["/" + path.lstrip("/")] = Route(data, **kw)
        return self.url(path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        self.times.setdefault(path, []).append(asyncio.get_running_loop().time())
        self.seen.append((path, dict(request.headers)))
        route = self.routes.get(path)
        if route is None:
            return web.Response(status=404, text="no such file")
        mode = route.mode
        if route.times is not None:
            if route.times <= 0:
                mode = "ok"
            else:
                route.times -= 1
        if mode == "500":
            return web.Response(status=500, text="Internal Server Error")
        if mode == "429":
            return web.Response(status=429, headers={"Retry-After": "7"}, text="slow down")
        if mode == "404":
            return web.Response(status=404, text="Not Found")
        if mode == "slow":
            await asyncio.wait_for(self.release.wait(), timeout=10)
        tag = '"' + hashlib.sha256(route.body).hexdigest()[:16] + '"'
        headers = {"Last-Modified": format_datetime(route.last_modified, usegmt=True)}
        if route.etag:
            headers["ETag"] = tag
            if request.headers.get("If-None-Match") == tag:
                return web.Response(status=304, headers=headers)
        body = route.body
        if route.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        if mode == "truncated":
            # Promise the whole body, send half of it, hang up.
            resp = web.StreamResponse(headers={**headers, "Content-Length": str(len(body))})
            resp.content_type = route.content_type
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=body, headers=headers, content_type=route.content_type)


async def until(check: Any, within: float = 20.0, every: float = 0.05) -> None:
    """Wait until ``check()`` (sync or async) is true; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


def atom(*entries: tuple[str, str, str]) -> bytes:
    """An ATOM index, newest first: (id, updated, CAP url) per entry."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<feed xmlns="http://www.w3.org/2005/Atom">',
        "<id>urn:test:index</id><title>warnings</title>",
        "<updated>2024-04-22T21:13:00+08:00</updated>",
    ]
    for ident, updated, url in entries:
        parts.append(
            f"<entry><id>{ident}</id><title>{ident}</title><updated>{updated}</updated>"
            f'<link rel="alternate" type="application/cap+xml" href="{url}"/></entry>'
        )
    parts.append("</feed>")
    return "\n".join(parts).encode()


def rss(*items: tuple[str, str, str]) -> bytes:
    """An RSS 2.0 channel: (guid, pubDate, CAP url) per item."""
    parts = ['<?xml version="1.0"?>', "<rss version='2.0'><channel><title>w</title>"]
    for guid, date, url in items:
        parts.append(
            f"<item><title>{guid}</title><guid isPermaLink='false'>{guid}</guid>"
            f"<pubDate>{date}</pubDate><link>{url}</link></item>"
        )
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


# ------------------------------------------------------------------ fixtures
# Shared by the feed tests; registered in conftest.py through pytest_plugins.

StartWarnd = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return Taxonomy.load(REPO / "config" / "taxonomy.toml")


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    await up.start()
    try:
        yield up
    finally:
        await up.close()


@pytest.fixture
async def start_warnd(
    redis: Redis, make_settings: Callable[..., Settings], taxonomy: Taxonomy
) -> AsyncIterator[StartWarnd]:
    """Start a warnd app (feeds not polling by themselves); stopped at the end."""
    async with AsyncExitStack() as stack:

        async def start(feeds: dict[str, Any], *, poll: bool = False) -> TestClient[Any, Any]:
            app = create_app(
                make_settings(feeds=feeds), redis=redis, taxonomy=taxonomy, poll_feeds=poll
            )
            client: TestClient[Any, Any] = TestClient(TestServer(app))
            await client.start_server()
            stack.push_async_callback(client.close)
            return client

        yield start


def hub(client: TestClient[Any, Any]) -> FeedHub:
    return client.app[FEEDS]


async def poll(client: TestClient[Any, Any], name: str) -> PollResult:
    return await hub(client).poller(name).poll_once()
