"""The lean HTTP/1.1 client of one-message-per-request channels, against real servers.

aiohttp's web server for well-behaved origins (keep-alive, chunked answers,
TLS with a private CA), and raw asyncio servers for the ones that are not:
an answer that runs to the close, a close in the middle of an answer, an
interim ``100 Continue``, an answer larger than allowed, bytes that are not
HTTP, a server that never answers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from peers import TlsFiles
from warnd_channels._http import not_sent
from warnd_channels._http1 import BadAnswer, ConnectFailed, Disconnected, OriginPool

HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class Origin:
    """An aiohttp origin that echoes requests and counts its connections."""

    def __init__(self) -> None:
        self.transports: set[int] = set()
        self.seen: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/echo", self.echo)
        app.router.add_post("/chunked", self.chunked)
        app.router.add_post("/close", self.close)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        self.transports.add(id(request.transport))
        body = await request.read()
        self.seen.append({"path": request.path_qs, "headers": dict(request.headers), "body": body})
        return web.Response(body=body, headers={"X-Echo": "yes"})

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self.transports.add(id(request.transport))
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b'{"errcode":', b"0,", b'"errmsg":"ok"}'):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def close(self, request: web.Request) -> web.Response:
        self.transports.add(id(request.transport))
        return web.Response(text="bye", headers={"Connection": "close"})


async def serve(app: web.Application, **tls: Any) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, **tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


@pytest.fixture
async def origin() -> AsyncIterator[tuple[Origin, int]]:
    o = Origin()
    runner, port = await serve(o.app())
    yield o, port
    await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: Handler) -> tuple[asyncio.Server, int, list[int]]:
    """An asyncio server that hands each connection to ``handler``; counts connections."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


def pool_for(port: int, **kw: Any) -> OriginPool:
    kw.setdefault("limit", 4)
    kw.setdefault("timeout", 5.0)
    return OriginPool(f"http://127.0.0.1:{port}", **kw)


async def test_requests_reuse_keep_alive_connections_up_to_the_limit(
    origin: tuple[Origin, int],
) -> None:
    o, port = origin
    pool = pool_for(port, limit=3)
    head = pool.head("POST", "/echo?key=robot-1", HEADERS)
    answers = await asyncio.gather(
        *(pool.request(head, f'{{"n":{i}}}'.encode()) for i in range(200))
    )
    assert [a.body for a in answers] == [f'{{"n":{i}}}'.encode() for i in range(200)]
    assert all(a.status == 200 and a.headers["x-echo"] == "yes" for a in answers)
    # 200 requests, never more than three at once: three connections at most.
    assert 1 <= len(o.transports) <= 3 and pool.connections == len(o.transports)
    first = o.seen[0]
    assert first["path"] == "/echo?key=robot-1"
    assert first["headers"]["Host"] == f"127.0.0.1:{port}"
    assert first["headers"]["Content-Type"] == HEADERS["Content-Type"]
    assert first["headers"]["User-Agent"] == "warnd"
    await pool.close()
    assert pool.connections == 0
    with pytest.raises(RuntimeError, match="closed"):
        await pool.request(head, b"{}")


async def test_a_chunked_answer_is_read_whole_and_the_connection_kept(
    origin: tuple[Origin, int],
) -> None:
    o, port = origin
    pool = pool_for(port, limit=1)
    for _ in range(3):
        answer = await pool.request(pool.head("POST", "/chunked"), b"{}")
        assert answer.status == 200 and answer.body == b'{"errcode":0,"errmsg":"ok"}'
    assert len(o.transports) == 1
    await pool.close()


async def test_connection_close_is_honoured(origin: tuple[Origin, int]) -> None:
    o, port = origin
    pool = pool_for(port, limit=1)
    for _ in range(3):
        answer = await pool.request(pool.head("POST", "/close"), b"")
        assert answer.body == b"bye"
    assert len(o.transports) == 3  # a new connection after each close
    await pool.close()


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200 OK", b"HTTP/1.1 200"])
async def test_an_answer_without_length_runs_to_the_close(status_line: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(status_line + b'\r\nContent-Type: application/json\r\n\r\n{"errcode":')
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b'0,"errmsg":"ok"}')
        await writer.drain()

    server, port, connections = await raw_server(handler)
    pool = pool_for(port)
    for _ in range(2):
        answer = await pool.request(pool.head("POST", "/"), b"{}")
        assert answer.status == 200 and answer.body == b'{"errcode":0,"errmsg":"ok"}'
    assert len(connections) == 2  # such a connection is never reused
    await pool.close()
    server.close()


async def test_an_interim_100_continue_is_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()  # keep the connection open until the client closes

    server, port, _ = await raw_server(handler)
    pool = pool_for(port)
    answer = await pool.request(pool.head("POST", "/"), b"{}")
    assert (answer.status, answer.body) == (201, b"ok")
    await pool.close()
    server.close()


async def test_a_close_in_the_middle_of_an_answer_may_have_been_sent() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()

    server, port, _ = await raw_server(handler)
    pool = pool_for(port)
    with pytest.raises(Disconnected) as err:
        await pool.request(pool.head("POST", "/"), b"{}")
    assert not not_sent(err.value)  # the provider may have acted on it
    assert pool.connections == 0
    await pool.close()
    server.close()


@pytest.mark.parametrize(
    "partial", [b"", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Type: appl"]
)
async def test_a_close_before_the_answer_s_headers_end_is_a_disconnect(partial: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(partial)
        await writer.drain()

    server, port, _ = await raw_server(handler)
    pool = pool_for(port)
    with pytest.raises(Disconnected, match="closed the connection"):
        await pool.request(pool.head("POST", "/"), b"{}")
    await pool.close()
    server.close()


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"SMTP ready\r\n\r\n", "unreadable HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000, "larger than 4096"),
    ],
)
async def test_an_answer_that_cannot_be_read_is_refused(answer: bytes, why: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()

    server, port, _ = await raw_server(handler)
    pool = pool_for(port, max_answer=4096)
    with pytest.raises(BadAnswer, match=why):
        await pool.request(pool.head("POST", "/"), b"{}")
    assert pool.connections == 0
    await pool.close()
    server.close()


async def test_no_answer_within_the_timeout_closes_the_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers; returns when the client closes
        closed.set()

    server, port, connections = await raw_server(handler)
    pool = pool_for(port, timeout=0.3)
    with pytest.raises(TimeoutError, match=r"within 0\.3 s") as err:
        await pool.request(pool.head("POST", "/"), b"{}")
    assert not not_sent(err.value)
    await asyncio.wait_for(closed.wait(), 5)
    assert pool.connections == 0 and len(connections) == 1
    await pool.close()
    server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_connection_was_certainly_not_sent() -> None:
    pool = pool_for(free_port())
    with pytest.raises(ConnectFailed, match=r"no connection to 127\.0\.0\.1") as err:
        await pool.request(pool.head("POST", "/"), b"{}")
    assert not_sent(err.value)
    await pool.close()


async def test_idle_connections_past_keepalive_are_not_reused(
    origin: tuple[Origin, int],
) -> None:
    o, port = origin
    pool = pool_for(port, limit=1, keepalive=0.05)
    head = pool.head("POST", "/echo")
    await pool.request(head, b"1")
    await pool.request(head, b"2")
    assert len(o.transports) == 1
    await asyncio.sleep(0.15)
    await pool.request(head, b"3")
    assert len(o.transports) == 2 and pool.connections == 1
    await pool.close()


async def test_a_connection_the_origin_closed_while_idle_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # Closes right after answering, without saying so (an origin's idle timeout).

    server, port, connections = await raw_server(handler)
    pool = pool_for(port, limit=1)
    head = pool.head("POST", "/")
    assert (await pool.request(head, b"{}")).body == b"ok"
    await asyncio.sleep(0.1)  # the close arrives while the connection is idle
    assert (await pool.request(head, b"{}")).body == b"ok"
    assert len(connections) == 2
    await pool.close()
    server.close()


async def test_https_with_a_private_ca(tls_files: TlsFiles) -> None:
    o = Origin()
    runner, port = await serve(o.app(), ssl_context=tls_files.server_context())
    try:
        trusted = OriginPool(
            f"https://localhost:{port}", limit=2, timeout=5.0, ssl=tls_files.client_context()
        )
        answer = await trusted.request(trusted.head("POST", "/echo"), b"secret")
        assert answer.body == b"secret" and o.seen[0]["headers"]["Host"] == f"localhost:{port}"
        await trusted.close()
        # The system's trust store does not know the private CA: refused, never sent.
        untrusted = OriginPool(f"https://localhost:{port}", limit=2, timeout=5.0)
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED") as err:
            await untrusted.request(untrusted.head("POST", "/echo"), b"secret")
        assert not_sent(err.value) and len(o.seen) == 1
        await untrusted.close()
    finally:
        await runner.cleanup()


def test_origins_and_headers_are_checked() -> None:
    for bad in ("ftp://host", "http://", "http://host/path", "http://host?q=1"):
        with pytest.raises(ValueError, match="origin"):
            OriginPool(bad, limit=1, timeout=1.0)
    pool = OriginPool("https://qyapi.weixin.qq.com", limit=1, timeout=1.0)
    assert pool.authority == "qyapi.weixin.qq.com" and pool.port == 443
    assert OriginPool("http://[::1]:8080", limit=1, timeout=1.0).authority == "[::1]:8080"
    with pytest.raises(ValueError, match="line break"):
        pool.head("POST", "/", {"X-Key": "a\r\nInjected: 1"})
