"""Fixtures shared by the whole suite.

``redis_server``
    (session) URL ``redis://127.0.0.1:PORT/0`` of one real redis-server,
    found like production does (:func:`warnd.redis_server.find_redis_server`)
    and run by :class:`~warnd.redis_server.EmbeddedRedis` in a temp dir on a
    free TCP port. Never the machine's shared Redis.
``redis_url``
    (function) the same URL, after FLUSHALL: request it (directly or through
    ``redis`` / ``settings``) and the test starts from an empty store.
``redis``
    (function, async) a ``redis.asyncio.Redis`` with ``decode_responses=True``
    on that server, built like production's; closed after the test.
``make_settings``
    (function) ``make_settings(**overrides) -> Settings``: ``data_dir`` is the
    test's ``tmp_path``, ``redis.url`` the session server, ``http.port`` 0,
    ``taxonomy_file`` the repository's ``config/taxonomy.toml``. Overrides
    are merged into that raw mapping section by section
    (``make_settings(redis={"url": None})`` means "embedded Redis").
``settings``
    (function) ``make_settings()``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from warnd.errors import StoreUnavailable
from warnd.redis_server import EmbeddedRedis, find_redis_server, redis_client
from warnd.settings import Settings

# Real peers for the channel tests (Kannel, mosquitto, HTTP gateways): tests/peers.py.
pytest_plugins = ["peers", "feedkit", "dispatch_data"]

REPO_ROOT = Path(__file__).resolve().parent.parent
TAXONOMY_FILE = REPO_ROOT / "config" / "taxonomy.toml"


def _free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_session_server(data_dir: Path) -> EmbeddedRedis:
    # Started and stopped with asyncio.run: EmbeddedRedis is not bound to an
    # event loop, so the session server needs no session-scoped loop and the
    # tests keep pytest-asyncio's per-test loops.
    executable = find_redis_server()
    last: StoreUnavailable | None = None
    for _ in range(3):  # another process may grab the free port before Redis binds it
        server = EmbeddedRedis(data_dir, port=_free_tcp_port(), executable=executable)
        try:
            asyncio.run(server.start())
        except StoreUnavailable as exc:
            last = exc
            continue
        return server
    assert last is not None
    raise last


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server private to this test session."""
    server = _start_session_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        asyncio.run(server.stop())


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session server's URL, emptied for this test."""
    # Synchronous client: flushing needs no event loop, so sync tests that only
    # want ``settings`` get a clean store too.
    with redis_sync.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the (flushed) session server, configured like production's."""
    client = redis_client(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_settings(tmp_path: Path, redis_url: str) -> Callable[..., Settings]:
    """Factory of test Settings; keyword overrides merge into each section."""

    def make(**overrides: Any) -> Settings:
        raw: dict[str, Any] = {
            "data_dir": tmp_path,
            "redis": {"url": redis_url},
            "http": {"port": 0},
            "taxonomy_file": TAXONOMY_FILE,
        }
        return Settings.model_validate(_merge(raw, overrides))

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings on ``tmp_path`` and the session Redis, HTTP on a free port."""
    return make_settings()
