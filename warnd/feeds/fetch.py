"""The feed HTTP client: one shared session, conditional GETs, hard limits.

Every request carries the feed's validators (``If-None-Match`` /
``If-Modified-Since``) when warnd has them, accepts gzip (aiohttp decodes
it), is bounded in time (the feed's ``timeout``, body included) and in
size (counted after decoding, so a gzip bomb stops at the limit). Every
way a fetch can fail becomes one :class:`FetchFailed` with a sentence an
operator can act on.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from dataclasses import dataclass

import aiohttp

from warnd import __version__
from warnd.errors import WarndError

USER_AGENT = f"warnd/{__version__} (+https://warnd.dev/feeds)"


class FetchFailed(WarndError):
    """The upstream could not be read: DNS, connect, timeout, HTTP error, truncation."""

    status = 502
    slug = "feed-fetch-failed"
    title = "Feed fetch failed"

    def __init__(self, detail: str, *, retry_after: float | None = None, http_status: int = 0):
        super().__init__(detail)
        self.retry_after = retry_after
        self.http_status = http_status


@dataclass(frozen=True, slots=True)
class Fetched:
    url: str
    status: int
    body: bytes
    content_type: str
    etag: str | None
    last_modified: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def new_session() -> aiohttp.ClientSession:
    """The one client session all feeds of a process share (pooled connections)."""
    return aiohttp.ClientSession(
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        timeout=aiohttp.ClientTimeout(total=60),
        connector=aiohttp.TCPConnector(limit=32, limit_per_host=4),
        auto_decompress=True,
        raise_for_status=False,
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    *,
    time_limit: float,
    max_bytes: int,
    etag: str | None = None,
    last_modified: str | None = None,
    accept: str = "*/*",
) -> Fetched:
    """GET ``url``; a 304 comes back as ``Fetched(status=304, body=b"")``."""
    headers = {"Accept": accept}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        async with asyncio.timeout(time_limit):
            async with session.get(
                url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=time_limit),
                max_redirects=5,
            ) as resp:
                if resp.status == 304:
                    return Fetched(url, 304, b"", "", etag, last_modified)
                if resp.status >= 400 or resp.status < 200:
                    raise FetchFailed(
                        f"{url}: HTTP {resp.status} {resp.reason or ''}".rstrip(),
                        retry_after=_retry_after(resp.headers.get("Retry-After")),
                        http_status=resp.status,
                    )
                declared = resp.headers.get("Content-Length")
                encoded = resp.headers.get("Content-Encoding", "identity") != "identity"
                if declared and declared.isdigit() and int(declared) > max_bytes and not encoded:
                    raise FetchFailed(
                        f"{url}: the response is {declared} bytes, over the feed's limit"
                        f" of {max_bytes} bytes"
                    )
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    total += len(chunk)
                    if total > max_bytes:
                        raise FetchFailed(
                            f"{url}: the response is over the feed's limit of {max_bytes} bytes"
                        )
                    chunks.append(chunk)
                return Fetched(
                    url=str(resp.url),
                    status=resp.status,
                    body=b"".join(chunks),
                    content_type=resp.content_type,
                    etag=resp.headers.get("ETag"),
                    last_modified=resp.headers.get("Last-Modified"),
                )
    except TimeoutError:
        raise FetchFailed(f"{url}: no complete answer within {time_limit:g} s") from None
    except aiohttp.ClientPayloadError as exc:
        raise FetchFailed(f"{url}: truncated or corrupt response body ({exc})") from None
    except aiohttp.ClientConnectorDNSError as exc:
        raise FetchFailed(f"{url}: cannot resolve host ({exc.os_error})") from None
    except aiohttp.ClientConnectorError as exc:
        raise FetchFailed(f"{url}: cannot connect ({exc.os_error})") from None
    except aiohttp.TooManyRedirects:
        raise FetchFailed(f"{url}: more than 5 redirects") from None
    except aiohttp.ClientError as exc:
        raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from None
