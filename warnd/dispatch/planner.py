"""Planning: an accepted alert → batches of deliveries in the lanes.

Ingest calls :meth:`Planner.on_accepted` for every new alert, whatever its
door (API, feed, CLI); that appends it to the durable ``accepted`` stream,
so an alert accepted just before a crash is still planned after restart
(and at start a process also plans recent alerts that have no plan).

Planning one alert:

1. An Update or Cancel first *halts* the alerts it changed: their queued
   deliveries become ``cancelled`` (workers also check the halt when they
   claim a batch, so nothing queued is sent after it).
2. The policy decides whether the alert is disseminated at all (see
   :meth:`Planner.policy`); if not, the plan records why.
3. For an Update or Cancel, everyone the old alert reached (``sent``,
   ``delivered``, ``acknowledged``, ``uncertain``) gets the new message
   (解除 / 更新) through the same endpoint, once the old alert's sends in
   flight have settled.
4. Except for a Cancel, the alert is matched (:class:`~warnd.match.Matcher`)
   and each endpoint gets a delivery; endpoints are deduplicated by
   (channel, address) — the idempotency key.
5. Deliveries are grouped by variant (channel × language × info, and the
   group when it must acknowledge); each variant is rendered once and its
   endpoints are cut into batches of the channel's ``batch_size``, written
   and pushed to the lane as soon as each is full, so the first batch is
   sending while the rest is planned.

A plan is resumable: one process plans an alert at a time (a lease), and a
process that takes over an unfinished plan keeps the batches written,
pushes those not yet pushed, and plans only endpoints not yet in them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import structlog
from redis.asyncio import Redis

from warnd.adcodes import normalise_code
from warnd.channel import Channel
from warnd.dispatch import lua
from warnd.dispatch.config import DispatchSettings
from warnd.dispatch.lanes import Entry, Lanes
from warnd.dispatch.states import REACHED, DeliveryState
from warnd.dispatch.store import (
    NOSUB,
    BatchRecord,
    DeliveryStore,
    JoinedAddresses,
    now_ms,
    pack_numbers,
)
from warnd.ingest import Accepted
from warnd.keys import Keys
from warnd.match import Audience, EndpointColumns, FirstEndpoints, Matcher, decode_packed
from warnd.model import Alert, Info, Level, MsgType
from warnd.render import Renderer
from warnd.store import AlertRecord, AlertState, AlertStore
from warnd.subscribers import SubscriberStore

log = structlog.get_logger("warnd.dispatch.planner")

HIGH = frozenset({Level.RED, Level.ORANGE})
_FIRST_CHUNK = 1000
_CHUNK = 20_000
_FLUSH = 5_000
"""Deliveries written per round trip (the first batch goes alone, at once)."""


def priority_of(*levels: Level | None) -> str:
    return "hi" if any(lv in HIGH for lv in levels) else "lo"


def message_of(rendered: Any, info_index: int) -> dict[str, Any]:
    return {
        "channel": rendered.channel,
        "language": rendered.language,
        "template": rendered.template,
        "subject": rendered.subject or "",
        "text": rendered.text,
        "html": rendered.html,
        "lines": list(rendered.lines or ()),
        "markdown": rendered.markdown,
        "shortened": rendered.shortened,
        "parts": rendered.parts,
        "info": info_index,
    }


@dataclass(slots=True)
class _Open:
    """A batch being filled: parallel columns, the per-delivery numbers as
    numpy chunks (one per call that added to it)."""

    channel: str
    variant: int
    kind: str
    group: str
    parts: list[Sequence[str] | npt.NDArray[Any]] = field(default_factory=list)
    """The addresses, in chunks: text, or as the index packs them (``S16``)."""
    size: int = 0
    """How many addresses the chunks hold."""
    areas: list[npt.NDArray[np.int64]] = field(default_factory=list)
    """Chunks of area numbers (indexes into :attr:`PlanWriter.codes`)."""
    numbers: list[npt.NDArray[np.int64]] = field(default_factory=list)
    """Chunks of each delivery's subscriber number (coverage)."""
    subscribers: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=200_000)
def code_of_key(key: int) -> str:
    """The canonical area code of an index area key (see :func:`warnd.match.area_key`)."""
    return normalise_code(str(key).zfill(12))


class PlanWriter:
    """Fills batches per variant and writes them, pushing each to its lane.

    Columns stay columns: addresses are kept as the chunks they come in
    (text, or packed bytes that are never made text when the plan
    deduplicates in numpy), areas and subscriber numbers as numpy arrays, and
    a batch's Redis arguments are built from them in one go (see
    :meth:`DeliveryStore.add_batch`).
    """

    def __init__(
        self,
        store: DeliveryStore,
        lanes: Lanes,
        alert_id: str,
        priority: str,
        channels: Mapping[str, Channel],
        *,
        still_mine: Callable[[], Any] | None = None,
    ) -> None:
        self.store = store
        self.lanes = lanes
        self.alert_id = alert_id
        self.priority = priority
        self.channels = channels
        self.still_mine = still_mine
        self.open: dict[tuple[str, int, str, str], _Open] = {}
        self.ready: list[_Open] = []
        self.ready_count = 0
        self.written = 0
        self.flushes = 0
        self.seen: dict[str, set[str]] = {}
        """Addresses planned so far, per channel (the idempotency key)."""
        self.last: list[tuple[int, int]] = []
        """``(batch, base)`` of every batch written, in order."""
        self.known: dict[str, dict[str, int]] = {}
        """Channel → address → subscriber number of deliveries planned outside the
        fresh audience (notices, a resumed plan): the audience's other endpoints
        of those subscribers get the same number, so coverage counts them once."""
        self.codes: list[str] = []
        """Area codes met so far; batches hold their index (an area number)."""
        self._code_number: dict[str, int] = {}
        self._key_number: dict[int, int] = {}
        self._writing: asyncio.Future[None] | None = None

    def size_of(self, channel: str) -> int:
        ch = self.channels.get(channel)
        return max(1, ch.batch_size) if ch is not None else 1000

    def _number_of(self, code: str) -> int:
        n = self._code_number.get(code)
        if n is None:
            n = self._code_number[code] = len(self.codes)
            self.codes.append(code)
        return n

    def area_numbers(self, area_keys: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Area numbers of index area keys (few distinct keys: converted once each)."""
        if not len(area_keys):
            return np.empty(0, np.int64)
        uniq, inverse = np.unique(area_keys, return_inverse=True)
        numbers = self._key_number
        table = np.empty(len(uniq), np.int64)
        for i, key in enumerate(uniq.tolist()):
            n = numbers.get(key)
            if n is None:
                n = numbers[key] = self._number_of(code_of_key(key))
            table[i] = n
        return table[inverse]

    async def add(
        self,
        channel: str,
        variant: int,
        address: str,
        area: str,
        *,
        kind: str = "alert",
        group: str = "",
        subscriber: str = "",
        ref: str = "",
        number: int = NOSUB,
    ) -> bool:
        """Add one endpoint; ``False`` when (channel, address) is already planned."""
        return bool(
            await self.add_many(
                channel,
                variant,
                [address],
                [area],
                kind=kind,
                group=group,
                subscribers=[subscriber],
                refs=[ref],
                numbers=np.array([number], np.int64),
            )
        )

    async def add_many(
        self,
        channel: str,
        variant: int,
        addresses: Sequence[str] | npt.NDArray[Any],
        areas: Sequence[str] = (),
        *,
        area_keys: npt.NDArray[np.int64] | None = None,
        kind: str = "alert",
        group: str = "",
        subscribers: Sequence[str] = (),
        refs: Sequence[str] = (),
        numbers: npt.NDArray[np.int64] | Sequence[int] = (),
        first: npt.NDArray[np.bool_] | None = None,
    ) -> int:
        """Add endpoints of one variant as parallel columns, skipping (channel,
        address) pairs already planned; returns how many were added.

        ``first``: which endpoints are the first of their address, when the
        caller knows (:class:`~warnd.match.FirstEndpoints`): the rest are
        skipped and the set of planned addresses is neither read nor kept.
        ``addresses`` may then be the index's packed bytes (UTF-8, an array
        of ``S<n>``), written as they are; without ``first`` they are made
        text for the set.

        Each endpoint's area is a code in ``areas`` or an index area key in
        ``area_keys``; ``numbers`` are the subscriber numbers (coverage; none:
        ``NOSUB``); ``subscribers`` and ``refs`` matter for acknowledgement
        groups and for kinds other than ``alert`` (kept only then).
        """
        if isinstance(addresses, np.ndarray) and (first is None or kind == "notice"):
            addresses = decode_packed(addresses)
        n = len(addresses)
        area = (
            self.area_numbers(area_keys)
            if area_keys is not None
            else np.fromiter((self._number_of(a) for a in areas), np.int64, len(areas))
        )
        nums = np.asarray(numbers, dtype=np.int64) if len(numbers) else np.full(n, NOSUB, np.int64)
        if len(area) != n or len(nums) != n:
            raise ValueError("add_many: one area and one number per address")
        keep_ids = bool(group) or kind != "alert"
        subs = list(subscribers) if keep_ids and len(subscribers) else [""] * n if keep_ids else []
        ref_col = list(refs) if keep_ids and len(refs) else [""] * n if keep_ids else []
        seen = self.seen.setdefault(channel, set())
        before = len(seen)
        keep: list[int] | None = None
        if first is not None:
            if len(first) != n:
                raise ValueError("add_many: one first flag per address")
            if not first.all():
                keep = np.flatnonzero(first).tolist()
        elif seen.isdisjoint(addresses):
            seen.update(addresses)  # the common case: all new, checked at C speed
            if len(seen) - before != n:  # the same address twice in this call
                once: set[str] = set()
                keep = []
                for i, a in enumerate(addresses):
                    if a not in once:
                        once.add(a)
                        keep.append(i)
        else:
            keep = []
            for i, a in enumerate(addresses):
                if a not in seen:
                    seen.add(a)
                    keep.append(i)
        if keep is not None:
            if isinstance(addresses, np.ndarray):
                addresses = addresses[keep]
            else:
                addresses = [addresses[i] for i in keep]
            area, nums = area[keep], nums[keep]
            if keep_ids:
                subs = [subs[i] for i in keep]
                ref_col = [ref_col[i] for i in keep]
            n = len(keep)
        if kind == "notice":
            known = self.known.setdefault(channel, {})
            for a, x in zip(cast(list[str], addresses), nums.tolist(), strict=True):
                if x != NOSUB:
                    known[a] = x
        key = (channel, variant, kind, group)
        size = self.size_of(channel)
        i = 0
        while i < n:
            cur = self.open.get(key)
            if cur is None:
                cur = self.open[key] = _Open(channel, variant, kind, group)
            j = min(n, i + size - cur.size)
            cur.parts.append(addresses[i:j])
            cur.size += j - i
            cur.areas.append(area[i:j])
            cur.numbers.append(nums[i:j])
            if keep_ids:
                cur.subscribers.extend(subs[i:j])
                cur.refs.extend(ref_col[i:j])
            i = j
            if cur.size >= size:
                del self.open[key]
                self.ready.append(cur)
                self.ready_count += cur.size
                if self.flushes == 0 or self.ready_count >= _FLUSH:
                    await self.flush()
        return n

    async def finish(self) -> None:
        """Write every batch still open and wait until all are in their lanes."""
        self.ready.extend(self.open.values())
        self.ready_count += sum(o.size for o in self.open.values())
        self.open.clear()
        await self.flush()
        await self.drain()

    async def flush(self) -> None:
        """Write the batches ready so far.

        The write (two round trips: the batches, then their lane entries) goes
        on while the caller fills the next batches; one write is in flight at
        a time, so batches reach their lanes in order and the plan's ``enq``
        (batches pushed) is never ahead of the lanes.
        """
        if not self.ready:
            return
        await self.drain()
        if self.still_mine is not None and not await self.still_mine():
            raise asyncio.CancelledError("plan lease lost")
        batches, self.ready, self.ready_count = self.ready, [], 0
        pipe = self.store.redis.pipeline(transaction=False)
        for b in batches:
            area = b.areas[0] if len(b.areas) == 1 else np.concatenate(b.areas)
            used, local = np.unique(area, return_inverse=True)
            nums = b.numbers[0] if len(b.numbers) == 1 else np.concatenate(b.numbers)
            record = BatchRecord.encode(
                b.channel,
                b.variant,
                JoinedAddresses.of(*b.parts),
                priority=self.priority,
                kind=b.kind,
                group=b.group,
                subscribers=b.subscribers if b.group else (),
                refs=b.refs if any(b.refs) else (),
            )
            state = DeliveryState.QUEUED if b.channel in self.channels else DeliveryState.FAILED
            await self.store.add_batch(
                self.alert_id,
                record,
                b.channel,
                [self.codes[i] for i in used.tolist()],
                local,
                state=state,
                pipe=pipe,
                numbers=pack_numbers(nums),
            )
        self._writing = asyncio.ensure_future(self._write(batches, pipe))
        # Its error is raised by the next drain; one abandoned with the plan is not news.
        self._writing.add_done_callback(lambda t: t.cancelled() or t.exception())
        self.flushes += 1

    async def drain(self) -> None:
        """Wait for the write in flight, if any (raising its error)."""
        task, self._writing = self._writing, None
        if task is not None:
            await task

    async def _write(self, batches: list[_Open], pipe: Any) -> None:
        results = await pipe.execute()
        pipe = self.store.redis.pipeline(transaction=False)
        failed: list[tuple[int, dict[str, Any]]] = []
        for b, (k, base) in zip(batches, results, strict=True):
            self.last.append((int(k), int(base)))
            if b.channel in self.channels:
                await self.lanes.push(
                    b.channel,
                    self.priority,
                    self.alert_id,
                    int(k),
                    pipe=pipe,
                    size=b.size,
                )
            else:
                for j in range(b.size):
                    failed.append(
                        (
                            int(base) + j,
                            {"event": "failed", "error": f"no channel {b.channel!r} is configured"},
                        )
                    )
        pipe.hset(self.store.key(self.alert_id, "plan"), "enq", int(results[-1][0]) + 1)
        await pipe.execute()
        if failed:
            await self.store.add_events(self.alert_id, failed)
        self.written += sum(b.size for b in batches)


class Planner:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: DispatchSettings,
        store: DeliveryStore,
        lanes: Lanes,
        alerts: AlertStore,
        subscribers: SubscriberStore,
        matcher: Matcher,
        renderer: Renderer,
        channels: Mapping[str, Channel],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.store = store
        self.lanes = lanes
        self.alerts = alerts
        self.subscribers = subscribers
        self.matcher = matcher
        self.renderer = renderer
        self.channels = channels
        self.me = lanes.consumer
        self._lease = redis.register_script(lua.LEASE)

    # ---------------------------------------------------------- intake
    async def on_accepted(self, accepted: Accepted) -> None:
        """The ingest hook: queue the alert for planning (durably)."""
        changed = json.dumps([[aid, state.value] for aid, state in accepted.changed])
        await self.redis.xadd(
            self.keys.dispatch_accepted, {"a": accepted.record.id, "changed": changed}
        )

    async def recover(self) -> int:
        """Queue recent alerts that have no plan (accepted while no planner recorded them)."""
        since = time.time() - self.settings.recover_hours * 3600
        ids = cast(
            list[str], await self.redis.zrangebyscore(self.keys.alerts_by_time, since, "+inf")
        )
        if not ids:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for aid in ids:
            pipe.exists(self.store.key(aid, "plan"))
        missing = [aid for aid, n in zip(ids, await pipe.execute(), strict=True) if not n]
        for aid in missing:
            await self.redis.xadd(self.keys.dispatch_accepted, {"a": aid, "changed": "[]"})
        if missing:
            log.info("dispatch.recovered_unplanned", alerts=len(missing))
        return len(missing)

    # ---------------------------------------------------------- the loop
    async def handle(self, entry: Entry) -> None:
        aid = entry.fields.get("a", "")
        try:
            changed = [(a, AlertState(s)) for a, s in json.loads(entry.fields.get("changed", "[]"))]
        except (ValueError, TypeError):
            changed = []
        await self.plan(aid, changed)

    # ---------------------------------------------------------- planning
    def policy(self, rec: AlertRecord) -> str | None:
        """Why an alert is not disseminated, or ``None`` when it is.

        Not sent: Ack and Error messages; statuses outside ``[dispatch]
        disseminate`` (default: only Actual — Exercise drills can be enabled,
        System/Test/Draft never); alerts already expired when received;
        alerts cancelled or superseded before they were planned.
        """
        alert = rec.alert
        if alert.msg_type in (MsgType.ACK, MsgType.ERROR):
            return f"msgType {alert.msg_type.value} messages are not disseminated"
        if alert.status.value not in self.settings.disseminate:
            return (
                f"status {alert.status.value} is not disseminated"
                f" ([dispatch] disseminate = {self.settings.disseminate})"
            )
        if rec.expires is not None and rec.expires <= rec.received_at:
            return "already expired when received"
        state = rec.effective_state()
        if state is AlertState.EXPIRED:
            return "expired before it was dispatched"
        if state in (AlertState.CANCELLED, AlertState.SUPERSEDED):
            return f"{state.value} before it was dispatched"
        return None

    async def _lock(self, aid: str) -> bool:
        key = self.store.key(aid, "lock")
        ttl = int(self.settings.reclaim_idle * 1000)
        if await self.redis.set(key, self.me, nx=True, px=ttl):
            return True
        return bool(await self.redis.get(key) == self.me)

    async def _still_mine(self, aid: str) -> bool:
        """Whether this process still holds the plan's lease (renewing it) and
        the alert is not halted; one round trip."""
        halt = await self._lease(
            keys=[self.store.key(aid, "lock"), self.store.key(aid, "plan")],
            args=[self.me, int(self.settings.reclaim_idle * 1000)],
        )
        return bool(halt == "")

    async def plan(self, aid: str, changed: list[tuple[str, AlertState]]) -> None:
        rec = await self.alerts.get(aid)
        if rec is None:
            log.warning("dispatch.unknown_alert", alert_id=aid)
            return
        for target, state in changed:
            if target != aid and state in (AlertState.CANCELLED, AlertState.SUPERSEDED):
                await self.halt(target, state, by=aid)
        if not await self._lock(aid):
            log.info("dispatch.plan_busy", alert_id=aid)
            return
        try:
            await self._plan(rec)
        finally:
            key = self.store.key(aid, "lock")
            if await self.redis.get(key) == self.me:
                await self.redis.delete(key)

    async def _plan(self, rec: AlertRecord) -> None:
        aid = rec.id
        refs = await self.alerts.get_many(rec.references)
        prio = priority_of(rec.level, *(r.level for r in refs))
        exp = int(rec.expires.timestamp() * 1000) if rec.expires else 0
        await self.store.start_plan(
            aid,
            {
                "status": "planning",
                "prio": prio,
                "exp": exp,
                "accepted_ms": int(rec.received_at.timestamp() * 1000),
                "msg_type": rec.msg_type.value,
                "level": rec.level.value if rec.level else "",
                "identifier": rec.identifier,
                # channels whose "sent" is not yet "reached" (coverage)
                "rx": ",".join(sorted(n for n, c in self.channels.items() if c.async_receipts)),
            },
        )
        plan = await self.store.plan(aid)
        if plan.get("status") in ("planned", "skipped"):
            return
        reason = self.policy(rec)
        if reason is not None:
            await self.store.set_plan(aid, status="skipped", reason=reason, deliveries=0)
            log.info("dispatch.not_disseminated", alert_id=aid, reason=reason)
            return
        await self.redis.zadd(self.keys.dispatch_plans, {aid: exp / 1000 if exp else 2**40})
        writer = PlanWriter(
            self.store,
            self.lanes,
            aid,
            plan.get("prio", prio),
            self.channels,
            still_mine=lambda: self._still_mine(aid),
        )
        await self._resume(aid, plan, writer)
        started = time.perf_counter()
        try:
            if rec.msg_type in (MsgType.UPDATE, MsgType.CANCEL):
                for old in refs:
                    await self._notices(rec, old, writer)
            if rec.msg_type is not MsgType.CANCEL:
                await self._fresh(rec, writer)
            await writer.finish()
        except asyncio.CancelledError:
            if await self.redis.hget(self.store.key(aid, "plan"), "halt"):
                await self.store.set_plan(aid, status="planned", stopped="halted")
                log.info("dispatch.plan_halted", alert_id=aid)
                return
            raise
        total = int(await self.redis.hget(self.store.key(aid, "plan"), "nd") or 0)
        await self.store.set_plan(aid, status="planned", deliveries=total, planned_ms=now_ms())
        log.info(
            "dispatch.planned",
            alert_id=aid,
            deliveries=total,
            batches=int(await self.redis.hget(self.store.key(aid, "plan"), "nb") or 0),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _resume(self, aid: str, plan: dict[str, str], writer: PlanWriter) -> None:
        """Take over an unfinished plan: know its endpoints, push what was not pushed."""
        nb = int(plan.get("nb", 0))
        if not nb:
            return
        enq = int(plan.get("enq", 0))
        log.info("dispatch.plan_resumed", alert_id=aid, batches=nb, pushed=enq)
        for k0 in range(0, nb, 200):
            got = await self.store.batches(aid, list(range(k0, min(nb, k0 + 200))))
            for k, b in got.items():
                writer.seen.setdefault(b.channel, set()).update(b.addresses)
                numbers = await self.store.numbers(aid, b.base, b.size)
                known = writer.known.setdefault(b.channel, {})
                pairs = zip(b.addresses, numbers, strict=False)  # none in an older plan
                known.update((a, x) for a, x in pairs if x != NOSUB)
                if k >= enq and b.channel in self.channels:
                    await self.lanes.push(b.channel, b.priority, aid, k, size=b.size)
        await self.store.set_plan(aid, enq=nb)
        writer.flushes = 1

    async def _variant(
        self,
        alert: Alert,
        info_index: int,
        info: Info,
        channel: str,
        language: str,
        memo: dict[Any, int],
    ) -> int:
        key = (channel, language, info_index)
        v = memo.get(key)
        if v is not None:
            return v
        ch = self.channels.get(channel)
        variants = memo.setdefault(("variants", info_index), self.renderer.variants(alert, info))  # type: ignore[arg-type]
        if ch is None:
            v = await self.store.variant(
                alert_id_of(alert), f"{channel}.unconfigured", {"channel": channel, "text": ""}
            )
        else:
            rendered = variants.get(channel, ch.limits_for(info.level), language)  # type: ignore[attr-defined]
            v = await self.store.variant(
                alert_id_of(alert), rendered.variant_key, message_of(rendered, info_index)
            )
        memo[key] = v
        return v

    async def variant_for(self, aid: str, channel: str, language: str, info_index: int) -> int:
        """The variant of ``aid`` for a channel and language (escalation), rendered if new."""
        rec = await self.alerts.get(aid)
        if rec is None or not rec.alert.infos:
            raise LookupError(f"alert {aid} has no info to render")
        info_index = min(info_index, len(rec.alert.infos) - 1)
        memo: dict[Any, Any] = {}
        return await self._variant(
            rec.alert, info_index, rec.alert.infos[info_index], channel, language, memo
        )

    async def _fresh(self, rec: AlertRecord, writer: PlanWriter) -> None:
        alert = rec.alert
        audience = await self.matcher.match(alert)
        log.info(
            "dispatch.matched",
            alert_id=rec.id,
            subscribers=len(audience),
            no_endpoint=audience.no_endpoint,
            seconds=round(audience.seconds, 3),
        )
        memo: dict[Any, int] = {}
        base = await self._coverage_start(rec.id, audience)
        # After the first step (its batch is out), the audience's duplicates
        # are found in one pass; a plan that already has endpoints (notices,
        # a resumed plan) deduplicates with its set.
        firsts = FirstEndpoints(audience) if not any(writer.seen.values()) else None
        for span, (start, stop, step) in enumerate(_spans(len(audience))):
            if span == 1 and firsts is not None:
                await asyncio.to_thread(firsts.prepare)  # the first batches go out meanwhile
            for columns in audience.endpoint_columns(
                batch=step, start=start, stop=stop, ids=any(audience.group_ack)
            ):
                numbers = subscriber_numbers(columns, base, writer.known)
                for col, nums in zip(columns, numbers, strict=True):
                    first = None
                    if firsts is not None and span > 0:
                        first = firsts.first(col, writer.seen)
                        if firsts.off:  # the index changed under the plan: a set from here
                            for channel, planned in firsts.planned().items():
                                writer.seen.setdefault(channel, set()).update(planned)
                            firsts = None
                    await self._add_columns(alert, audience, col, writer, memo, nums, first)
                # Writes by other processes since the match (the index is where
                # the next step's addresses come from); lets the workers run.
                await self.matcher.refresh()

    async def _add_columns(
        self,
        alert: Alert,
        audience: Audience,
        col: EndpointColumns,
        writer: PlanWriter,
        memo: dict[Any, int],
        numbers: npt.NDArray[np.int64],
        firsts: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """One channel's endpoints of a step, split by variant, into the writer
        (``firsts``: ``first`` of :meth:`PlanWriter.add_many`)."""
        if not len(col):
            return
        infos = audience.infos[col.at]
        groups = audience.groups[col.at]
        area_keys = audience.area_keys[col.at]
        ack = np.array(audience.group_ack, dtype=bool)
        acks = ack[groups] if ack.any() else np.zeros(len(col), dtype=bool)
        # One variant per (language, info, acknowledging group): a number each.
        combo = (
            (col.language_codes.astype(np.int64) << 32)
            | (infos.astype(np.int64) << 16)
            | np.where(acks, groups.astype(np.int64) + 1, 0)
        )
        channel = col.channel.value
        # Deduplicated in numpy (``firsts``): the packed addresses go as they are.
        packed = col.packed if firsts is not None else None
        if int(combo.min()) == int(combo.max()):  # the common case: one variant
            info = int(infos[0])
            v = await self._variant(alert, info, alert.infos[info], channel, col.language(0), memo)
            group = audience.group_keys[int(groups[0])] if acks[0] else ""
            await writer.add_many(
                channel,
                v,
                col.addresses if packed is None else packed,
                area_keys=area_keys,
                group=group,
                subscribers=col.subscriber_ids if group else (),
                numbers=numbers,
                first=firsts,
            )
            return
        kinds, which = np.unique(combo, return_inverse=True)
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(kinds) + 1)).tolist()
        for u in range(len(kinds)):
            idx = order[bounds[u] : bounds[u + 1]]
            first = int(idx[0])
            info = int(infos[first])
            v = await self._variant(
                alert, info, alert.infos[info], channel, col.language(first), memo
            )
            group = audience.group_keys[int(groups[first])] if acks[first] else ""
            await writer.add_many(
                channel,
                v,
                [col.addresses[i] for i in idx.tolist()] if packed is None else packed[idx],
                area_keys=area_keys[idx],
                group=group,
                subscribers=col.subscriber_ids_at(idx) if group else (),
                numbers=numbers[idx],
                first=None if firsts is None else firsts[idx],
            )

    async def _notices(self, rec: AlertRecord, old: AlertRecord, writer: PlanWriter) -> None:
        """The Update/Cancel to everyone ``old`` reached, through the same endpoints."""
        await self._settle(old.id)
        states = await self.store.states(old.id)
        table = await self.store.batch_table(old.id)
        reached = "".join(s.code for s in REACHED) + DeliveryState.SENDING.code
        memo: dict[Any, int] = {}
        messages: dict[int, dict[str, Any]] = {}
        infos = rec.alert.infos or old.alert.infos
        # Coverage: the old alert's subscriber numbers, shifted into this alert's.
        old_ns = int((await self.store.plan(old.id)).get("ns") or 0)
        shift = await self.redis.hincrby(self.store.key(rec.id, "plan"), "ns", old_ns) - old_ns
        for k0 in range(0, len(table), 100):
            wanted = [
                k
                for k in range(k0, min(len(table), k0 + 100))
                if any(c in reached for c in states[table[k][0] : table[k][0] + table[k][1]])
            ]
            got = await self.store.batches(old.id, wanted)
            for k in wanted:
                b = got.get(k)
                if b is None:
                    continue
                msg = messages.get(b.variant)
                if msg is None:
                    msg = messages[b.variant] = await self.store.message(old.id, b.variant) or {}
                info_index = min(int(msg.get("info", 0)), len(infos) - 1)
                language = str(msg.get("language", "zh-Hans"))
                v = await self._variant(
                    rec.alert, info_index, infos[info_index], b.channel, language, memo
                )
                sel = [j for j, c in enumerate(states[b.base : b.base + b.size]) if c in reached]
                if not sel:
                    continue
                areas = await self.store.areas_of(b)
                olds = await self.store.numbers(old.id, b.base, b.size)
                nums = np.full(b.size, NOSUB, np.int64)
                nums[: len(olds)] = olds[: b.size]
                nums = nums[sel]
                await writer.add_many(
                    b.channel,
                    v,
                    [b.addresses[j] for j in sel],
                    [areas[j] for j in sel],
                    kind="notice",
                    refs=[b.delivery_id(j) for j in sel],
                    numbers=np.where(nums == NOSUB, NOSUB, nums + shift),
                )

    async def _coverage_start(self, aid: str, audience: Audience) -> int:
        """Keep the audience's areas and blind spots with the plan (coverage) and
        reserve one subscriber number per audience entry; the first of them."""
        await self.store.set_plan(
            aid,
            areas=json.dumps([a.code for a in audience.affected]),
            blind=json.dumps([a.code for a in audience.blind_spots]),
        )
        n = len(audience)
        return int(await self.redis.hincrby(self.store.key(aid, "plan"), "ns", n)) - n

    async def _settle(self, aid: str) -> None:
        """Wait (bounded) until no delivery of ``aid`` is being sent."""
        deadline = time.monotonic() + self.settings.settle_timeout
        while time.monotonic() < deadline:
            if DeliveryState.SENDING.code not in await self.store.states(aid):
                return
            await asyncio.sleep(0.1)
        log.warning("dispatch.settle_timeout", alert_id=aid)

    async def halt(self, target: str, state: AlertState, *, by: str) -> int:
        """Stop ``target``'s queued deliveries: they become ``cancelled``."""
        await self.store.set_plan(target, halt=state.value, halt_by=by)
        n = await self.store.sweep(target, DeliveryState.QUEUED.code, DeliveryState.CANCELLED)
        log.info("dispatch.halted", alert_id=target, by=by, state=state.value, cancelled=n)
        return n


def alert_id_of(alert: Alert) -> str:
    from warnd.identifiers import alert_id

    return alert_id(alert.sender, alert.identifier)


def subscriber_numbers(
    columns: Sequence[EndpointColumns], base: int, known: Mapping[str, Mapping[str, int]]
) -> list[npt.NDArray[np.int64]]:
    """Per column, the subscriber number of each entry: ``base`` + its audience
    position, unless another endpoint of the same subscriber (same position)
    already has a number in ``known`` (a notice, a resumed plan)."""
    out = [col.at + base for col in columns]
    if not known:
        return out
    remap: dict[int, int] = {}
    for col in columns:
        seen = known.get(col.channel.value)
        if seen:
            for p, a in zip(col.at.tolist(), col.addresses, strict=True):
                x = seen.get(a)
                if x is not None:
                    remap[p] = x
    if remap:
        for col, nums in zip(columns, out, strict=True):
            for i, p in enumerate(col.at.tolist()):
                if p in remap:
                    nums[i] = remap[p]
    return out


def _spans(n: int) -> list[tuple[int, int, int]]:
    """``(start, stop, step)``: a small first span (its batch is sending while
    the rest is read), then the rest in big steps."""
    if n <= _FIRST_CHUNK:
        return [(0, n, _FIRST_CHUNK)]
    return [(0, _FIRST_CHUNK, _FIRST_CHUNK), (_FIRST_CHUNK, n, _CHUNK)]


__all__ = ["PlanWriter", "Planner", "priority_of"]
