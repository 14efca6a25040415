"""Polling: one supervised task per feed, one poller per feed across processes.

:meth:`FeedPoller.poll_once` does one poll of one feed, whatever its kind,
and records the outcome (health, counters, next poll time) in Redis; tests
and the CLI call it directly. :meth:`FeedPoller.run` is the loop ``warnd
serve`` runs per feed: it holds the feed's lease, polls when the shared
schedule says the feed is due, and backs off exponentially with jitter
while the feed fails. :class:`FeedHub` owns the HTTP session, the pollers
and their tasks; it is one ``cleanup_ctx`` entry of the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from warnd.api.context import Services
from warnd.errors import (
    AlertInvalid,
    ConfigError,
    FieldError,
    NotFound,
    Unauthorized,
    WarndError,
)
from warnd.feeds.config import FeedKind, FeedSettings, check_feeds
from warnd.feeds.fetch import Fetched, FetchFailed, fetch, new_session
from warnd.feeds.index import Entry, parse_index
from warnd.feeds.items import FeedIngest, Tally
from warnd.feeds.lease import Lease, process_id

log = structlog.get_logger("warnd.feeds")

MAX_ENTRY_ATTEMPTS = 5
"""Failed fetches of one index entry before it is quarantined as unreachable."""
ENTRY_FETCH_CONCURRENCY = 4
STOP_GRACE = 2.0
"""Seconds a poll in progress may take to finish at shutdown before it is cancelled."""

CAP_ACCEPT = "application/cap+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.1"


def backoff_delay(
    failures: int,
    interval: float,
    cap: float,
    *,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures ("equal jitter").

    The ceiling doubles per failure from twice the interval up to ``cap``;
    the wait is between half the ceiling and the ceiling, so processes that
    failed together do not retry together. A Retry-After the upstream sent
    is honoured (up to ``cap``).
    """
    ceiling = min(cap, interval * 2 ** min(failures, 32))
    delay: float = ceiling / 2 + rand() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, min(cap, retry_after))
    return delay


@dataclass(frozen=True, slots=True)
class PollResult:
    feed: str
    outcome: str
    """``processed``, ``not_modified`` (304), ``unchanged`` (same body) or ``failed``."""
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    pending: int = 0
    """Index entries left for the next poll (fetch failed, or over ``max_entries``)."""
    error: str | None = None
    next_poll_at: float = 0.0


class _PollError(Exception):
    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class FeedPoller:
    """Polls one feed."""

    def __init__(
        self, ingest: FeedIngest, session: aiohttp.ClientSession, owner: str, lease: Lease
    ) -> None:
        self.ingest = ingest
        self.name = ingest.name
        self.feed = ingest.feed
        self.state = ingest.state
        self.session = session
        self.owner = owner
        self.lease = lease
        self.polls = 0
        """Polls this process made (the shared count is in the feed's state)."""

    # ---------------------------------------------------------------- one poll

    async def poll_once(self) -> PollResult:
        """Poll the feed now and record the outcome; never raises for upstream faults."""
        self.polls += 1
        tally = Tally()
        pending = 0
        error: str | None = None
        retry_after: float | None = None
        outcome = "processed"
        try:
            outcome, pending = await self._poll(tally)
        except FetchFailed as exc:
            error, retry_after = exc.detail, exc.retry_after
        except _PollError as exc:
            error, retry_after = exc.detail, exc.retry_after
        if error is not None:
            outcome = "failed"
        failures = await self.state.consecutive_failures() + 1 if error else 0
        now = time.time()
        delay = (
            backoff_delay(
                failures, self.feed.interval, self.feed.backoff_max, retry_after=retry_after
            )
            if error
            else self.feed.interval
        )
        await self.state.polled(
            poller=self.owner,
            accepted=tally.accepted,
            duplicates=tally.duplicates,
            error=error,
            next_at=now + delay,
            now=now,
        )
        result = PollResult(
            feed=self.name,
            outcome=outcome,
            accepted=tally.accepted,
            duplicates=tally.duplicates,
            rejected=tally.rejected,
            pending=pending,
            error=error,
            next_poll_at=now + delay,
        )
        if error:
            log.warning(
                "feed.poll_failed",
                feed=self.name,
                error=error,
                consecutive_failures=failures,
                retry_in=round(delay, 1),
            )
        else:
            log.info(
                "feed.polled",
                feed=self.name,
                outcome=outcome,
                accepted=tally.accepted,
                duplicates=tally.duplicates,
                rejected=tally.rejected,
                pending=pending,
            )
        return result

    async def _get(self, url: str, *, conditional: bool, accept: str = "*/*") -> Fetched:
        etag = modified = None
        if conditional:
            etag, modified, _ = await self.state.validators()
        return await fetch(
            self.session,
            url,
            time_limit=self.feed.timeout,
            max_bytes=self.feed.max_bytes,
            etag=etag,
            last_modified=modified,
            accept=accept,
        )

    async def _poll(self, tally: Tally) -> tuple[str, int]:
        url = self.feed.url
        assert url is not None  # noqa: S101 - polled kinds require a url
        accept = CAP_ACCEPT if self.feed.kind.carries_cap else "*/*"
        if self.feed.kind is FeedKind.CAP_INDEX:
            accept = "application/atom+xml, application/rss+xml, application/xml;q=0.9, */*;q=0.1"
        got = await self._get(url, conditional=True, accept=accept)
        if got.not_modified:
            return "not_modified", 0
        digest = hashlib.sha256(got.body).hexdigest()
        _, _, last_digest = await self.state.validators()
        if digest == last_digest:
            await self.state.set_validators(got.etag, got.last_modified, digest)
            return "unchanged", 0
        pending = 0
        if self.feed.kind is FeedKind.CAP:
            tally.extend(await self.ingest.cap_document(got.body, item=url))
        elif self.feed.kind is FeedKind.CAP_INDEX:
            pending = await self._index(got, tally)
        else:
            try:
                tally.extend(await self.ingest.met_document(got.body, item=url))
            except WarndError as err:
                await self.ingest.reject(f"{url} (document)", err, got.body)
                raise _PollError(f"{url}: {err.detail}") from None
        if pending:
            # Entries are waiting: the next poll must read the index again
            # even if it has not changed.
            await self.state.forget_validators()
        else:
            await self.state.set_validators(got.etag, got.last_modified, digest)
        return "processed", pending

    async def _index(self, got: Fetched, tally: Tally) -> int:
        try:
            entries = parse_index(got.body, got.url, max_bytes=self.feed.max_bytes)
        except WarndError as err:
            await self.ingest.reject(f"{got.url} (index)", err, got.body)
            raise _PollError(f"{got.url}: {err.detail}") from None
        keys = [e.key for e in entries]
        unseen = await self.state.unseen(keys)
        # Indexes list newest first: handle the oldest new entries first so
        # Updates usually arrive after what they update.
        todo = [e for e in reversed(entries) if e.key in unseen]
        waiting = max(0, len(todo) - self.feed.max_entries)
        todo = todo[: self.feed.max_entries]
        gate = asyncio.Semaphore(ENTRY_FETCH_CONCURRENCY)

        async def load(entry: Entry) -> Fetched | FetchFailed | None:
            if entry.inline is not None or entry.url is None:
                return None
            async with gate:
                try:
                    return await self._get(entry.url, conditional=False, accept=CAP_ACCEPT)
                except FetchFailed as exc:
                    return exc

        loaded = await asyncio.gather(*(load(e) for e in todo))
        failed: list[str] = []
        for entry, res in zip(todo, loaded, strict=True):
            if entry.inline is not None:
                tally.extend(await self.ingest.cap_document(entry.inline, item=entry.label))
            elif entry.url is None:
                nothing = AlertInvalid(
                    f"index entry {entry.id!r} names no CAP document",
                    errors=[FieldError(loc="entry", msg="no link and no inline <alert>")],
                )
                tally.add(await self.ingest.reject(entry.label, nothing, entry.id.encode()))
            elif isinstance(res, FetchFailed):
                attempts = await self.state.failed_attempt(entry.key)
                if attempts < MAX_ENTRY_ATTEMPTS:
                    failed.append(res.detail)
                    continue
                res.detail = f"gave up after {attempts} attempts: {res.detail}"
                tally.add(await self.ingest.reject(entry.label, res, entry.url.encode()))
            elif res is not None:
                tally.extend(await self.ingest.cap_document(res.body, item=entry.label))
            await self.state.mark_seen(entry.key)
        await self.state.still_listed(keys)
        if failed:
            raise _PollError(
                f"{len(failed)} of {len(todo)} new index entries could not be fetched"
                f" (retried next poll): {failed[0]}"
            )
        return waiting

    # -------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Poll whenever this process holds the feed's lease and the feed is due."""
        while not stop.is_set():
            delay = self.lease.renew_every
            try:
                if await self.lease.hold():
                    due = await self.state.next_poll_at()
                    now = time.time()
                    if due is None or due <= now:
                        async with self.lease.kept():
                            await self.poll_once()
                        continue
                    delay = min(delay, due - now)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one feed's fault must not end its loop
                log.exception("feed.loop_error", feed=self.name, error=str(exc))
                delay = min(self.feed.interval, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(delay, 0.01))


class FeedHub:
    """Every feed of one process: ingest per feed, pollers, push tokens, tasks."""

    def __init__(self, services: Services, *, env: dict[str, str] | None = None) -> None:
        self.svc = services
        self.feeds: dict[str, FeedSettings] = dict(services.settings.feeds)
        problems = check_feeds(self.feeds, {h.code for h in services.taxonomy}, env)
        if problems:
            raise ConfigError(problems[0], problems=problems)
        self.owner = process_id()
        self.ingests = {name: FeedIngest(name, f, services) for name, f in self.feeds.items()}
        self._push_digests: dict[str, bytes] = {
            name: _digest(f.push_token(env).get_secret_value())
            for name, f in self.feeds.items()
            if f.kind is FeedKind.PUSH and f.enabled
        }
        self.pollers: dict[str, FeedPoller] = {}
        self._session: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, *, poll: bool = True) -> None:
        """Open the HTTP session; with ``poll``, start one task per enabled polled feed."""
        self._session = new_session()
        for name, feed in self.feeds.items():
            if not (feed.enabled and feed.kind.polled):
                continue
            lease = Lease(
                self.svc.redis, self.svc.keys.feed_lease(name), self.owner, feed.lease_seconds
            )
            self.pollers[name] = FeedPoller(self.ingests[name], self._session, self.owner, lease)
        if poll:
            for name, poller in self.pollers.items():
                self._tasks[name] = asyncio.create_task(
                    self._supervise(poller), name=f"warnd-feed-{name}"
                )
        log.info(
            "feeds.started",
            feeds=sorted(self.feeds),
            polling=sorted(self._tasks),
            owner=self.owner,
        )

    async def _supervise(self, poller: FeedPoller) -> None:
        """Restart a feed loop that died of a bug; other feeds never notice."""
        while not self._stop.is_set():
            try:
                await poller.run(self._stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("feed.crashed", feed=poller.name, error=str(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=5.0)

    async def stop(self) -> None:
        """Stop polling (a poll in progress gets a short grace), free leases, close."""
        self._stop.set()
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, timeout=STOP_GRACE)
        self._tasks.clear()
        for poller in self.pollers.values():
            await poller.lease.release()
        if self._session is not None:
            await self._session.close()
            self._session = None
        log.info("feeds.stopped", owner=self.owner)

    # -------------------------------------------------------------- lookups

    def poller(self, name: str) -> FeedPoller:
        try:
            return self.pollers[name]
        except KeyError:
            raise NotFound(f"no enabled polled feed named {name!r}") from None

    def feed(self, name: str) -> FeedSettings:
        try:
            return self.feeds[name]
        except KeyError:
            known = ", ".join(sorted(self.feeds)) or "none configured"
            raise NotFound(f"no feed named {name!r} (feeds: {known})") from None

    def push_ingest(self, name: str, authorization: str) -> FeedIngest:
        """The ingest of push feed ``name`` if ``authorization`` carries its token."""
        feed = self.feed(name)
        if feed.kind is not FeedKind.PUSH:
            raise NotFound(f"feed {name!r} is a {feed.kind.value} feed, not a push feed")
        if not feed.enabled:
            raise NotFound(f"push feed {name!r} is disabled")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(f"send 'Authorization: Bearer <the token of feed {name}>'")
        if not hmac.compare_digest(_digest(token.strip()), self._push_digests[name]):
            raise Unauthorized(f"wrong token for feed {name!r}")
        return self.ingests[name]

    async def health(self, name: str) -> dict[str, Any]:
        feed = self.feed(name)
        state = await self.ingests[name].state.health()
        lease = await self.svc.redis.get(self.svc.keys.feed_lease(name))
        return {
            "name": name,
            "kind": feed.kind.value,
            "enabled": feed.enabled,
            "url": feed.public_url(),
            "interval": feed.interval if feed.kind.polled else None,
            "polled_by": str(lease) if lease else None,
            **state,
        }

    async def healths(self) -> list[dict[str, Any]]:
        return [await self.health(name) for name in sorted(self.feeds)]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


FEEDS = web.AppKey("feeds", FeedHub)
