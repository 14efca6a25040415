"""A lean HTTP/1.1 client for many small requests to one origin.

A channel that posts one message per request (a WeChat Work robot is its
own webhook) spends most of its CPU in the HTTP client: aiohttp's
``ClientSession`` builds a request object, a multidict of headers, a
payload, a timer and a response object for every request, ~0.1 ms each
on a server core. :class:`OriginPool` does only what such a request
needs: pre-encoded headers, one ``write`` per request, keep-alive
connections reused last-in first-out, the answer parsed by llhttp
(``httptools``), and one timer for the whole exchange.

What it does not do, because the providers it serves do not need it:
redirects, cookies, proxies, compression, request streaming. Answers are
held whole in memory up to ``max_answer`` bytes.

Errors say whether the request can have reached the provider:
:class:`ConnectFailed` (refused, unreachable, TLS handshake, connect
timeout) certainly did not; :class:`Disconnected`, :class:`BadAnswer` and
``TimeoutError`` may have.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

__all__ = ["Answer", "BadAnswer", "ConnectFailed", "Disconnected", "HttpError", "OriginPool"]


class HttpError(OSError):
    """A request that did not get a complete answer."""


class ConnectFailed(HttpError):
    """No connection to the origin: the request was certainly not sent."""


class Disconnected(HttpError):
    """The origin closed the connection before its answer was complete."""


class BadAnswer(HttpError):
    """The answer is not HTTP/1.1 this client can read (or is too large)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Header names in lower case; a repeated header keeps its last value."""
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    __slots__ = (
        "_body",
        "_done",
        "_framed",
        "_headed",
        "_headers",
        "_keep_alive",
        "_max",
        "_parser",
        "_size",
        "_status",
        "_waiter",
        "closed",
        "idle_since",
        "transport",
    )

    def __init__(self, max_answer: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._max = max_answer
        self._waiter: asyncio.Future[Answer] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._framed = False
        self._headed = False
        self._keep_alive = False
        self._done = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # nothing asked: the origin is out of step
            self._fail(BadAnswer(f"{len(data)} bytes the origin sent unasked"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadAnswer("the origin switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(BadAnswer(f"unreadable HTTP answer: {exc}"))

    def eof_received(self) -> bool | None:
        self.closed = True  # never handed out again, though connection_lost is still to come
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headed and not self._framed and not self._done:
            # Neither Content-Length nor chunked: the body runs to the close.
            self._complete(keep_alive=False)
            return
        why = f": {exc}" if exc else ""
        waiter.set_exception(Disconnected(f"the origin closed the connection{why}"))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if key in ("content-length", "transfer-encoding"):
            self._framed = True
        self._headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        # Here, not in on_status: llhttp calls that one only for a reason phrase.
        self._status = self._parser.get_status_code() if self._parser else 0
        self._headed = True

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max:
            self._fail(BadAnswer(f"answer larger than {self._max} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._status < 200:  # an interim answer: the final one follows
            self._status, self._headers, self._body, self._size = 0, {}, [], 0
            self._framed = self._headed = False
            return
        self._complete(keep_alive=bool(self._parser and self._parser.should_keep_alive()))

    # -- the client side

    def send(self, request: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Answer]:
        if self.transport is None:
            raise RuntimeError("send on a connection not yet made")
        self._waiter = waiter = loop.create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._status, self._headers, self._body, self._size = 0, {}, [], 0
        self._framed = self._headed = self._keep_alive = self._done = False
        self.transport.write(request)
        return waiter

    @property
    def reusable(self) -> bool:
        return self._done and self._keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _complete(self, *, keep_alive: bool) -> None:
        self._done = True
        self._keep_alive = keep_alive
        self._parser = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            waiter.set_result(Answer(self._status, self._headers, body))

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()


class OriginPool:
    """Keep-alive HTTP/1.1 connections to one ``http(s)://host[:port]``.

    At most ``limit`` requests are in flight (and as many connections
    open). ``timeout`` bounds a whole exchange, ``connect_timeout`` the
    connection (and TLS handshake) within it. A connection idle for more
    than ``keepalive`` seconds is closed rather than reused: origins close
    idle connections, and one closed under a request in flight would make
    that request's fate unknown.
    """

    def __init__(
        self,
        origin: str,
        *,
        limit: int,
        timeout: float,
        connect_timeout: float | None = None,
        keepalive: float = 15.0,
        ssl: ssl_module.SSLContext | None = None,
        user_agent: str = "warnd",
        max_answer: int = 1 << 20,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        if parts.path.strip("/") or parts.query:
            raise ValueError(f"an origin has no path or query: {origin!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        default = 443 if self.scheme == "https" else 80
        self.port = parts.port or default
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if self.port == default else f"{host}:{self.port}"
        self._ssl: ssl_module.SSLContext | None = None
        if self.scheme == "https":
            self._ssl = ssl or ssl_module.create_default_context()
        self.timeout = timeout
        self.connect_timeout = min(timeout, connect_timeout or timeout)
        self.keepalive = keepalive
        self._max_answer = max_answer
        self._user_agent = user_agent
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[_Connection] = deque()
        self._busy: set[_Connection] = set()
        self._closed = False

    def head(self, method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
        """The request line and headers of a request, without its length and body.

        Build it once and pass it to :meth:`request` for every request of the
        same shape.
        """
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.authority}"]
        lines.append(f"User-Agent: {self._user_agent}")
        for name, value in (headers or {}).items():
            if "\r" in name + value or "\n" in name + value:
                raise ValueError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def request(self, head: bytes, body: bytes = b"") -> Answer:
        """Send one request (``head`` from :meth:`head`) and read its whole answer."""
        if self._closed:
            raise RuntimeError("request on a closed OriginPool")
        request = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        loop = asyncio.get_running_loop()
        async with self._slots:
            started = loop.time()
            conn = self._reuse()
            if conn is None:
                conn = await self._connect(loop)
            self._busy.add(conn)
            try:
                waiter = conn.send(request, loop)
                left = self.timeout - (loop.time() - started)
                timer = loop.call_later(left, _expire, waiter, self.timeout)
                try:
                    answer = await waiter
                finally:
                    timer.cancel()
            except BaseException:
                conn.close()  # its answer is unread: never reused
                raise
            finally:
                self._busy.discard(conn)
            if conn.reusable and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()
            return answer

    def _reuse(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        stale = time.monotonic() - self.keepalive
        while idle and idle[0].idle_since < stale:  # oldest first
            idle.popleft().close()
        while idle:
            conn = idle.pop()  # the most recently used: warm, least likely closed
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
            conn.close()
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        max_answer = self._max_answer
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: _Connection(max_answer),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except TimeoutError as exc:
            raise ConnectFailed(
                f"no connection to {self.authority} within {self.connect_timeout:g} s"
            ) from exc
        except OSError as exc:  # refused, unreachable, name unknown, TLS refused
            raise ConnectFailed(f"no connection to {self.authority}: {exc}") from exc
        return proto

    @property
    def connections(self) -> int:
        """Connections open now (idle and busy)."""
        return sum(not c.closed for c in self._idle) + len(self._busy)

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        for conn in list(self._busy):
            conn.close()
        await asyncio.sleep(0)  # let the transports' connection_lost run


def _expire(waiter: asyncio.Future[Answer], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no complete answer within {timeout:g} s"))
