"""Channel workers: take batches from the lanes, send them, record the outcome.

One :class:`ChannelWorker` per configured channel in each ``warnd serve``
process. It keeps at most ``concurrency`` batches in flight (a full pool
reads nothing more: backpressure) and reads the ``hi`` lane before ``lo``.

For one lane entry:

1. **Claim** (one script): the batch's deliveries still ``queued`` become
   ``sending`` — or ``cancelled``/``expired`` if the alert was halted or has
   expired. Deliveries in any other state are left alone, so a redelivered
   entry, a duplicate entry or a second process never sends twice.
2. Deliveries found ``sending`` in an entry taken over from a dead
   consumer may or may not have gone out: they are **reconciled**
   (:meth:`Channel.reconcile`) before anything is resent; still in doubt,
   they are resent only through a channel whose provider deduplicates
   (``idempotent``), else they stay ``uncertain`` for receipts to settle.
3. **Rate**: the batch waits for its tokens in the channel's shared bucket.
4. **Send**, then **record** every receipt (one script per outcome):
   ``sent``/``delivered``; ``failed`` → dead letter; ``retry`` → back to
   ``queued`` and rescheduled with exponential backoff and jitter (at least
   ``retry_after``; throttling does not use up an attempt), dead-lettered
   once the channel's attempts are used up; ``uncertain`` stays in doubt —
   on a channel with a status-query API it is put on the reconcile schedule
   (:mod:`warnd.dispatch.reconcile`), which resends only what the provider
   says it never took.
5. Acknowledge and delete the entry: with the worker's next round trip to
   Redis (the next claim or record), or on its own within 20 ms when none
   comes. An entry whose acknowledgement is lost is read again and its
   claim finds nothing left to send.

Per batch that is three round trips in all: the read (shared by the
entries read together), the claim with its rate tokens, the record with
its receipt correlation.

A Redis outage before the send abandons the entry (it is retried); after
the send, recording is retried until Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast, overload

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from warnd.channel import (
    Batch,
    Channel,
    DeliveryIds,
    Outcome,
    Receipt,
    Receipts,
    Target,
    Targets,
    mask_address,
)
from warnd.dispatch.config import DispatchSettings
from warnd.dispatch.correlate import ReceiptColumns, receipt_ids
from warnd.dispatch.lanes import PRIORITIES, WORKERS, Entry, Lanes
from warnd.dispatch.meter import Meter
from warnd.dispatch.ratelimit import RateLimiter
from warnd.dispatch.reconcile import Reconciler
from warnd.dispatch.states import DeliveryState
from warnd.dispatch.store import BatchRecord, DeliveryStore, Moved
from warnd.model import Level, MsgType
from warnd.wire import Wire, raise_errors

log = structlog.get_logger("warnd.dispatch.worker")

OUTAGE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
"""Errors of a Redis that is restarting or unreachable: wait and try again."""

_T = TypeVar("_T")

AckHook = Callable[[BatchRecord, list[int], dict[str, str]], Awaitable[None]]
"""Called with the offsets of an acknowledgement batch that were sent."""
AckLines = Callable[[BatchRecord, Sequence[int], str], Awaitable[list[str]]]
"""The confirmation lines appended for recipients of an acknowledgement batch, one each."""


async def persist(op: Callable[[], Awaitable[_T]], what: str, *, within: float = 120.0) -> _T:
    """Run ``op`` until Redis answers (a restart, a failover), for ``within`` seconds."""
    deadline = time.monotonic() + within
    pause = 0.1
    while True:
        try:
            return await op()
        except OUTAGE as exc:
            if time.monotonic() > deadline:
                raise
            log.warning(
                "dispatch.redis_unavailable", during=what, error=str(exc) or type(exc).__name__
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


class ChannelWorker:
    def __init__(
        self,
        channel: Channel,
        store: DeliveryStore,
        lanes: Lanes,
        limiter: RateLimiter,
        settings: DispatchSettings,
        *,
        on_ack_sent: AckHook | None = None,
        ack_lines: AckLines | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.channel = channel
        self.meter = meter
        self.name = channel.name
        self.store = store
        self.lanes = lanes
        self.limiter = limiter
        self.settings = settings
        self.on_ack_sent = on_ack_sent
        self.ack_lines = ack_lines
        self.streams = [lanes.lane(self.name, p) for p in PRIORITIES]
        self.concurrency = settings.concurrency_for(self.name)
        self.slots = asyncio.Semaphore(self.concurrency)
        self.local: deque[Entry] = deque()
        self._acks: list[Entry] = []
        """Entries handled and recorded, to acknowledge with the next round trip."""
        self._ack_wanted = asyncio.Event()
        self.inflight: dict[str, Entry] = {}
        self._batches: OrderedDict[tuple[str, int], BatchRecord] = OrderedDict()
        self._messages: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._plans: dict[str, tuple[float, dict[str, str]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        # Asks the provider about deliveries left uncertain (a channel with a query API).
        self.reconciler = (
            Reconciler(channel, store, lanes, settings, on_sent=on_ack_sent)
            if channel.reconciles
            else None
        )

    # ------------------------------------------------------------ the loops
    async def run(self, stop: asyncio.Event) -> None:
        """Read and process entries until ``stop``; in-flight batches are finished."""
        await persist(self._own_pending, "own pending entries")
        helpers = [
            asyncio.create_task(self._reclaim_loop(stop)),
            asyncio.create_task(self._renew_loop(stop)),
            asyncio.create_task(self._ack_loop()),
        ]
        try:
            while not stop.is_set():
                await self.slots.acquire()
                try:
                    entry = await self._next(stop)
                except OUTAGE as exc:
                    self.slots.release()
                    log.warning(
                        "dispatch.redis_unavailable",
                        during="read",
                        channel=self.name,
                        error=str(exc),
                    )
                    await _pause(stop, 0.5)
                    continue
                except RedisError as exc:
                    self.slots.release()
                    log.warning("dispatch.read_failed", channel=self.name, error=str(exc))
                    self.lanes.forget_groups()
                    await _pause(stop, 0.5)
                    continue
                if entry is None:
                    self.slots.release()
                    continue
                self.inflight[entry.id] = entry
                task = asyncio.create_task(self._process(entry))
                self._tasks.add(task)
                task.add_done_callback(self._finished)
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=30)
            try:
                await self._flush_acks()
            except (*OUTAGE, RedisError) as exc:
                # Left pending: read again by the next consumer, nothing resent.
                log.warning("dispatch.ack_failed", channel=self.name, error=str(exc))
        finally:
            for h in helpers:
                h.cancel()
            for h in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await h

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("dispatch.worker_crashed", channel=self.name, error=repr(task.exception()))

    async def _next(self, stop: asyncio.Event) -> Entry | None:
        if self.local:
            return self.local.popleft()
        got = await self.lanes.read(self.streams, WORKERS, block_ms=500, count=self.concurrency)
        if not got:
            return None
        self.local.extend(got[1:])
        return got[0]

    async def _own_pending(self) -> None:
        """Entries this consumer already held (a restart under the same name) come first."""
        redis = self.lanes.redis
        for stream in self.streams:
            await self.lanes.ensure_group(stream, WORKERS)
            rows = await redis.xpending_range(
                stream, WORKERS, min="-", max="+", count=1000, consumername=self.lanes.consumer
            )
            ids: list[Any] = [r["message_id"] for r in rows]
            if ids:
                claimed = cast(
                    list[tuple[str, dict[str, str]]],
                    await redis.xclaim(stream, WORKERS, self.lanes.consumer, 0, ids),
                )
                self.local.extend(
                    Entry(stream, eid, dict(f), reclaimed=True) for eid, f in claimed if f
                )

    async def _reclaim_loop(self, stop: asyncio.Event) -> None:
        idle = int(self.settings.reclaim_idle * 1000)
        while not stop.is_set():
            await _pause(stop, min(self.settings.sweep_interval, self.settings.reclaim_idle / 2))
            if len(self.local) > 10:
                continue
            try:
                for stream in self.streams:
                    found = await self.lanes.reclaim(stream, WORKERS, idle)
                    for e in found:
                        log.info(
                            "dispatch.reclaimed",
                            channel=self.name,
                            entry=e.id,
                            alert_id=e.fields.get("a"),
                        )
                    self.local.extend(found)
                    await self.lanes.forget_dead_consumers(stream, WORKERS, idle * 10)
            except RedisError as exc:
                log.warning("dispatch.reclaim_failed", channel=self.name, error=str(exc))

    async def _renew_loop(self, stop: asyncio.Event) -> None:
        """Keep the entries being worked on from looking abandoned."""
        idle = int(self.settings.reclaim_idle * 1000)
        while not stop.is_set():
            await _pause(stop, self.settings.reclaim_idle / 4)
            by_stream: dict[str, list[str]] = {}
            for e in [*self.inflight.values(), *self.local]:
                by_stream.setdefault(e.stream, []).append(e.id)
            try:
                for stream, ids in by_stream.items():
                    await self.lanes.renew(stream, WORKERS, ids, idle // 5)
            except RedisError as exc:
                log.warning("dispatch.renew_failed", channel=self.name, error=str(exc))

    async def _process(self, entry: Entry) -> None:
        try:
            try:
                await self.handle(entry)
            except OUTAGE as exc:
                # Nothing was sent (or it was recorded): try the entry again later.
                log.warning(
                    "dispatch.entry_deferred", channel=self.name, entry=entry.id, error=str(exc)
                )
                await asyncio.sleep(1.0)
                self.local.append(entry)
                return
            self._acks.append(entry)
            self._ack_wanted.set()
        finally:
            self.inflight.pop(entry.id, None)

    # ------------------------------------------------------------ acknowledgements
    def _wire(self) -> tuple[Wire, list[Entry]]:
        """A round trip that starts with the acknowledgements due; and those
        (to put back with :meth:`_unsent` if the round trip fails)."""
        wire = Wire()
        acks, self._acks = self._acks, []
        if acks:
            Lanes.done_on(wire, acks, WORKERS)
        return wire, acks

    def _unsent(self, acks: list[Entry]) -> None:
        self._acks[:0] = acks
        if acks:
            self._ack_wanted.set()

    async def _flush_acks(self) -> None:
        wire, acks = self._wire()
        if not acks:
            return
        try:
            await wire.execute(self.lanes.redis)
        except BaseException:
            self._unsent(acks)
            raise

    async def _ack_loop(self) -> None:
        """Acknowledge what no other round trip took along within 20 ms."""
        while True:
            await self._ack_wanted.wait()
            await asyncio.sleep(0.02)
            self._ack_wanted.clear()
            try:
                await self._flush_acks()
            except (*OUTAGE, RedisError) as exc:
                log.warning("dispatch.ack_failed", channel=self.name, error=str(exc))
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------ caches
    async def _claim(
        self, aid: str, k: int, offsets: list[int] | None, reclaimed: bool, wire: Wire
    ) -> tuple[BatchRecord | None, Moved]:
        """Batch ``k`` (read with the claim unless cached: a retry's batch) and its
        claim, sent with the commands on ``wire``."""
        hit = self._batches.get((aid, k))
        if hit is not None:
            self._batches.move_to_end((aid, k))
        batch, claim = await self.store.claim(
            aid, k, offsets, reclaimed=reclaimed, known=hit, wire=wire
        )
        if batch is not None and hit is None:
            self._batches[(aid, k)] = batch
            if len(self._batches) > 64:
                self._batches.popitem(last=False)
        return batch, claim

    async def _message(self, aid: str, v: int) -> dict[str, Any]:
        hit = self._messages.get((aid, v))
        if hit is None:
            hit = await self.store.message(aid, v) or {}
            self._messages[(aid, v)] = hit
            if len(self._messages) > 256:
                self._messages.popitem(last=False)
        return hit

    async def _plan(self, aid: str) -> dict[str, str]:
        hit = self._plans.get(aid)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        plan = await self.store.plan(aid)
        self._plans[aid] = (time.monotonic() + 5.0, plan)
        if len(self._plans) > 256:
            self._plans.pop(next(iter(self._plans)))
        return plan

    # ------------------------------------------------------------ one entry
    async def handle(self, entry: Entry) -> None:
        aid = entry.fields.get("a", "")
        try:
            k = int(entry.fields.get("k", ""))
        except ValueError:
            log.error("dispatch.bad_entry", channel=self.name, entry=entry.id, fields=entry.fields)
            return
        raw = entry.fields.get("o", "")
        offsets = [int(x) for x in raw.split(",") if x] if raw else None
        size = len(offsets) if offsets is not None else _int(entry.fields.get("n"))
        # The acknowledgements due, the rate tokens (when the entry says how
        # many it holds) and the claim: one round trip.
        wire, acks = self._wire()
        tokens = self.limiter.reserve_on(wire, self.channel, size)
        try:
            batch, claim = await self._claim(aid, k, offsets, entry.reclaimed, wire)
        except BaseException:
            self._unsent(acks)
            raise
        if (batch is None or claim.to is not DeliveryState.SENDING) and tokens is not None:
            await tokens.wait(wire.replies, 0)  # gives them back
        if batch is None:
            log.error("dispatch.unknown_batch", channel=self.name, alert_id=aid, batch=k)
            return
        if claim.to is not DeliveryState.SENDING:
            if claim.offsets:
                log.info(
                    f"delivery.{claim.to.value}",
                    channel=self.name,
                    alert_id=aid,
                    batch=k,
                    deliveries=len(claim.offsets),
                )
            return
        send: Sequence[int] = claim.offsets  # the whole batch: a range, not copied
        settled: list[tuple[int, Receipt]] = []
        if claim.stale:
            more, settled = await self._reconcile(batch, claim.stale)
            send = [*send, *more]
        if not send and not settled:
            if tokens is not None:
                await tokens.wait(wire.replies, 0)
            return
        receipts: Sequence[Receipt] = ()
        if tokens is not None:
            wait = await tokens.wait(wire.replies, len(send))
        elif send:
            wait = await self.limiter.reserve(self.channel, len(send))
        else:
            wait = 0.0
        if send:
            if wait > 0:
                await asyncio.sleep(wait)
            plan = await self._plan(aid)
            message = await self._message(aid, batch.variant)
            receipts = await self._send(batch, send, message, plan)
        at: Sequence[int] = send
        if settled:
            receipts = [r for _, r in settled] + list(receipts)
            at = [j for j, _ in settled] + list(send)
        await persist(lambda: self.record(batch, receipts, at), "record outcomes")

    async def _reconcile(
        self, batch: BatchRecord, offsets: list[int]
    ) -> tuple[list[int], list[tuple[int, Receipt]]]:
        """Deliveries a dead consumer was sending: which to send now, which are
        settled (with their offsets)."""
        targets = [Target(batch.delivery_id(j), batch.addresses[j]) for j in offsets]
        try:
            answers = await self.channel.reconcile(targets)
        except Exception as exc:  # a channel's query API failing must not lose the batch
            log.warning("dispatch.reconcile_failed", channel=self.name, error=repr(exc))
            answers = [
                Receipt.uncertain(t.delivery_id, f"reconcile failed: {exc}") for t in targets
            ]
        by_id = {r.delivery_id: r for r in answers}
        send: list[int] = []
        settled: list[tuple[int, Receipt]] = []
        for j, t in zip(offsets, targets, strict=True):
            r = by_id.get(t.delivery_id) or Receipt.uncertain(t.delivery_id, "not reconciled")
            if r.outcome is Outcome.RETRY or (
                r.outcome is Outcome.UNCERTAIN and self.channel.idempotent
            ):
                send.append(j)
            else:
                settled.append((j, r))
        log.info(
            "dispatch.reconciled",
            channel=self.name,
            alert_id=batch.alert_id,
            batch=batch.index,
            resend=len(send),
            settled=len(settled),
        )
        return send, settled

    def _batch_of(
        self,
        batch: BatchRecord,
        targets: Sequence[Target],
        message: dict[str, Any],
        plan: dict[str, str],
        text: str | None = None,
    ) -> Batch:
        level = plan.get("level") or ""
        exp = int(plan.get("exp") or 0)
        return Batch(
            targets=targets,
            text=text if text is not None else str(message.get("text", "")),
            subject=str(message.get("subject") or ""),
            html=message.get("html"),
            lines=tuple(message.get("lines") or ()),
            markdown=bool(message.get("markdown")),
            level=Level(level) if level else None,
            alert_id=batch.alert_id,
            identifier=plan.get("identifier", ""),
            msg_type=MsgType(plan.get("msg_type") or "Alert"),
            expires=datetime.fromtimestamp(exp / 1000, UTC) if exp else None,
            language=str(message.get("language") or "zh-Hans"),
            shortened=bool(message.get("shortened")),
        )

    async def _send(
        self,
        batch: BatchRecord,
        offsets: Sequence[int],
        message: dict[str, Any],
        plan: dict[str, str],
    ) -> Sequence[Receipt]:
        """Send to ``offsets``; one receipt each, in the same order."""
        addresses = batch.addresses
        whole = range(len(addresses))
        if offsets == whole or (len(offsets) == len(addresses) and list(offsets) == list(whole)):
            offsets = whole  # the whole batch, in order: no copy of the addresses
        ids = DeliveryIds(f"{batch.alert_id}.{batch.index}.", offsets)
        targets = Targets(ids, addresses if offsets is whole else [addresses[j] for j in offsets])
        if batch.group and self.ack_lines is not None:
            # Each recipient gets its own confirmation code: one message each,
            # as many at once as the channel has connections (a batch can hold
            # a thousand recipients; neither the provider nor Redis's pool
            # should see them all at once).
            lines = await self.ack_lines(batch, offsets, str(message.get("language") or "zh-Hans"))
            base_text = str(message.get("text", ""))
            sem = asyncio.Semaphore(self.channel.config.max_connections)

            async def one(t: Target, line: str) -> Sequence[Receipt]:
                async with sem:
                    return await self._call(
                        self._batch_of(batch, (t,), message, plan, base_text + line)
                    )

            parts = await asyncio.gather(
                *(one(t, ln) for t, ln in zip(targets, lines, strict=True))
            )
            receipts: Sequence[Receipt] = [r for p in parts for r in p]
        else:
            receipts = await self._call(self._batch_of(batch, targets, message, plan))
        got = receipts.delivery_ids if isinstance(receipts, Receipts) else None
        if got is None:
            got = [r.delivery_id for r in receipts]
        if len(receipts) == len(ids) and got == ids:
            return receipts  # the usual answer: one per target, in their order
        by_id = {r.delivery_id: r for r in receipts}
        out = []
        for t in targets:
            r = by_id.get(t.delivery_id)
            if r is None:
                r = Receipt.uncertain(t.delivery_id, f"{self.name}: no receipt for this target")
            out.append(r)
        return out

    async def _call(self, b: Batch) -> Sequence[Receipt]:
        started = time.perf_counter()
        try:
            return await self.channel.send(b)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a channel fault must not lose the deliveries
            log.error("dispatch.channel_error", channel=self.name, error=repr(exc))
            err = f"{self.name}: {type(exc).__name__}: {exc}"
            if self.channel.idempotent:
                return [Receipt.retry(t.delivery_id, err, after=1.0) for t in b.targets]
            return [Receipt.uncertain(t.delivery_id, err) for t in b.targets]
        finally:
            if self.meter is not None:
                self.meter.batch_sent(self.name, time.perf_counter() - started)

    # ------------------------------------------------------------ outcomes
    async def record(
        self,
        batch: BatchRecord,
        receipts: Sequence[Receipt],
        offsets: Sequence[int] | None = None,
    ) -> None:
        """Write each receipt's outcome; reschedule retries; dead-letter failures.

        ``offsets``: the offset in the batch of each receipt's delivery, when
        the caller knows them (else found from the delivery ids).
        """
        pairs: Sequence[tuple[int, Receipt]]
        if isinstance(receipts, Receipts) and offsets is not None and len(offsets) == len(receipts):
            # One outcome for all, in columns: no object per delivery.
            pairs = _Pairs(offsets, receipts)
            kinds = {(receipts.outcome, receipts.counts_attempt)}
        else:
            if offsets is not None and len(offsets) == len(receipts):
                pairs = list(zip(offsets, receipts, strict=True))
            else:
                offset_of = {batch.delivery_id(j): j for j in range(batch.size)}
                pairs = [
                    (offset_of[r.delivery_id], r) for r in receipts if r.delivery_id in offset_of
                ]
            kinds = {(r.outcome, r.counts_attempt) for _, r in pairs}
        groups: dict[tuple[Outcome, bool], Sequence[tuple[int, Receipt]]] = {}
        if len(kinds) == 1:
            groups[kinds.pop()] = pairs  # the usual case: one outcome for all
        else:
            split: dict[tuple[Outcome, bool], list[tuple[int, Receipt]]] = {}
            for j, r in pairs:
                split.setdefault((r.outcome, r.counts_attempt), []).append((j, r))
            groups.update(split)
        if self.meter is not None:
            tally: dict[str, int] = {}
            for (outcome, _), items in groups.items():
                tally[outcome.value] = tally.get(outcome.value, 0) + len(items)
            self.meter.outcomes(self.name, tally)
        all_sent = len(groups) == 1 and len(pairs) == batch.size
        events: list[tuple[int, dict[str, Any]]] = []
        for (outcome, counts), items in groups.items():
            offsets = None if all_sent else [j for j, _ in items]
            if outcome in (Outcome.SENT, Outcome.DELIVERED):
                to = DeliveryState.SENT if outcome is Outcome.SENT else DeliveryState.DELIVERED
                moved = await self._sent(batch, offsets, to, items)
                self.sent += len(moved.offsets)
                started = list(moved.offsets)
                if len(moved.offsets) < len(items):
                    started += await self._overtaken(batch, items, moved.offsets)
                if batch.group and self.on_ack_sent is not None and started:
                    await self.on_ack_sent(batch, started, {})
            elif outcome is Outcome.FAILED:
                moved = await self.store.move(batch, offsets, "s", DeliveryState.FAILED, bump="1")
                done = set(moved.offsets)
                for j, r in items:
                    if j in done:
                        events.append((batch.base + j, _event("failed", r)))
                        await self._dead(batch, j, r.error or "failed", attempts=None)
            elif outcome is Outcome.UNCERTAIN:
                moved = await self.store.move(
                    batch, offsets, "s", DeliveryState.UNCERTAIN, bump="1"
                )
                done = set(moved.offsets)
                events += [(batch.base + j, _event("uncertain", r)) for j, r in items if j in done]
                if self.reconciler is not None:
                    await self.reconciler.schedule(batch, moved.offsets)
            else:
                await self._retry(batch, items, counts, events)
        if events:
            await self.store.add_events(batch.alert_id, events)

    async def _sent(
        self,
        batch: BatchRecord,
        offsets: list[int] | None,
        to: DeliveryState,
        items: Sequence[tuple[int, Receipt]],
    ) -> Moved:
        """Move sent deliveries on and keep what their receipts will be matched
        by, in one round trip (with the acknowledgements due)."""
        wire, acks = self._wire()
        move = self.store.move_on(wire, batch, offsets, "s", to, bump="1")
        self.store.provider_ids_on(
            wire, self.name, receipt_ids(self.channel, batch.alert_id, batch.index, items)
        )
        try:
            await wire.execute(self.store.redis, raise_on_error=False)
        except BaseException:
            self._unsent(acks)
            raise
        moved = await move.result(wire.replies)
        raise_errors(wire.replies, besides=(move.at,))
        return moved

    async def _overtaken(
        self, batch: BatchRecord, items: Sequence[tuple[int, Receipt]], moved: Sequence[int]
    ) -> list[int]:
        """Sent deliveries whose asynchronous receipt arrived before this record
        (a fast gateway's delivery report): their attempt still counts, and a
        delivered one still waits for its acknowledgement. Returns those."""
        rest = sorted({j for j, _ in items} - set(moved))
        delivered: list[int] = []
        for state in (DeliveryState.DELIVERED, DeliveryState.ACKNOWLEDGED, DeliveryState.FAILED):
            if not rest:
                break
            got = await self.store.move(batch, rest, state.code, state, bump="1")
            if state is DeliveryState.DELIVERED:
                delivered = list(got.offsets)
            rest = sorted(set(rest) - set(got.offsets))
        return delivered

    async def _retry(
        self,
        batch: BatchRecord,
        items: Sequence[tuple[int, Receipt]],
        counts: bool,
        events: list[tuple[int, dict[str, Any]]],
    ) -> None:
        moved = await self.store.move(
            batch,
            [j for j, _ in items],
            "s",
            DeliveryState.QUEUED,
            bump="1" if counts else "",
            want_attempts=True,
        )
        attempts = dict(zip(moved.offsets, moved.attempts, strict=True))
        by_offset = dict(items)
        limit = self.settings.attempts_for(self.name)
        again: list[int] = []
        dead: list[int] = []
        for j in moved.offsets:
            r = by_offset[j]
            events.append((batch.base + j, _event("retry", r)))
            (dead if counts and attempts[j] >= limit else again).append(j)
        if dead:
            gone = await self.store.move(batch, dead, "q", DeliveryState.FAILED)
            for j in gone.offsets:
                reason = f"{attempts[j]} attempts used up; last: {by_offset[j].error}"
                events.append((batch.base + j, {"event": "failed", "error": reason}))
                await self._dead(batch, j, reason, attempts=attempts[j])
        if again:
            after = max((by_offset[j].retry_after or 0.0) for j in again)
            if counts:
                n = max(attempts[j] for j in again)
                backoff = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (n - 1))
                delay = max(after, backoff / 2 + random.uniform(0, backoff / 2))  # noqa: S311
            else:
                delay = after * (1 + random.uniform(0, 0.1))  # noqa: S311 - jitter, not crypto
            await self.lanes.later(
                self.name,
                batch.priority,
                batch.alert_id,
                batch.index,
                ",".join(map(str, again)),
                time.time() + delay,
            )
            log.info(
                "delivery.retry_scheduled",
                channel=self.name,
                alert_id=batch.alert_id,
                batch=batch.index,
                deliveries=len(again),
                after=round(delay, 2),
                counted=counts,
            )

    async def _dead(self, batch: BatchRecord, j: int, reason: str, *, attempts: int | None) -> None:
        fields = {
            "delivery_id": batch.delivery_id(j),
            "alert_id": batch.alert_id,
            "channel": self.name,
            "address": mask_address(batch.addresses[j]),
            "reason": reason,
        }
        if attempts is not None:
            fields["attempts"] = str(attempts)
        await self.lanes.dead_letter(fields)
        log.warning(
            "delivery.failed", channel=self.name, delivery_id=batch.delivery_id(j), reason=reason
        )


class _Pairs(Sequence[tuple[int, Receipt]], ReceiptColumns):
    """``(offset, receipt)`` of each delivery of a :class:`Receipts`, made only
    when looked at (recording an all-sent batch looks at none)."""

    __slots__ = ("offsets", "receipts")

    def __init__(self, offsets: Sequence[int], receipts: Receipts) -> None:
        self.offsets = offsets
        self.receipts = receipts

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, i: int) -> tuple[int, Receipt]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[int, Receipt]]: ...
    def __getitem__(self, i: int | slice) -> tuple[int, Receipt] | list[tuple[int, Receipt]]:
        if isinstance(i, slice):
            return list(self)[i]
        return self.offsets[i], self.receipts[i]

    def __iter__(self) -> Iterator[tuple[int, Receipt]]:
        return zip(self.offsets, self.receipts, strict=True)


def _int(text: str | None) -> int:
    """A lane entry's number field (0 when missing or not a number)."""
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _event(name: str, r: Receipt) -> dict[str, Any]:
    out: dict[str, Any] = {"event": name}
    if r.error:
        out["error"] = r.error
    if r.provider_status:
        out["status"] = r.provider_status
    if r.retry_after is not None and name == "retry":
        out["retry_after"] = r.retry_after
        out["counted"] = r.counts_attempt
    if name == "uncertain" and r.provider_id:
        out["ref"] = r.provider_id  # what the provider's query API knows the send by
    return out


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
