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
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import structlog
from redis.asyncio import Redis

from warnd.adcodes import normalise_code
from warnd.channel import Channel
from warnd.dispatch.config import DispatchSettings
from warnd.dispatch.lanes import Entry, Lanes
from warnd.dispatch.states import REACHED, DeliveryState
from warnd.dispatch.store import BatchRecord, DeliveryStore, now_ms
from warnd.ingest import Accepted
from warnd.keys import Keys
from warnd.match import Audience, EndpointColumns, Matcher
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
    """A batch being filled."""

    channel: str
    variant: int
    kind: str
    group: str
    addresses: list[str] = field(default_factory=list)
    areas: list[str] = field(default_factory=list)
    subscribers: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)


class PlanWriter:
    """Fills batches per variant and writes them, pushing each to its lane."""

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

    def size_of(self, channel: str) -> int:
        ch = self.channels.get(channel)
        return max(1, ch.batch_size) if ch is not None else 1000

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
    ) -> bool:
        """Add one endpoint; ``False`` when (channel, address) is already planned."""
        seen = self.seen.setdefault(channel, set())
        if address in seen:
            return False
        seen.add(address)
        key = (channel, variant, kind, group)
        cur = self.open.get(key)
        if cur is None:
            cur = self.open[key] = _Open(channel, variant, kind, group)
        cur.addresses.append(address)
        cur.areas.append(area)
        if group or kind != "alert":
            cur.subscribers.append(subscriber)
            cur.refs.append(ref)
        if len(cur.addresses) >= self.size_of(channel):
            del self.open[key]
            self.ready.append(cur)
            self.ready_count += len(cur.addresses)
            if self.flushes == 0 or self.ready_count >= _FLUSH:
                await self.flush()
        return True

    async def add_many(
        self,
        channel: str,
        variant: int,
        addresses: Sequence[str],
        areas: Sequence[str],
        *,
        group: str = "",
        subscribers: Sequence[str] = (),
    ) -> int:
        """Add endpoints of one variant (parallel columns; ``subscribers`` only
        with ``group``), skipping (channel, address) pairs already planned;
        returns how many were added."""
        seen = self.seen.setdefault(channel, set())
        fresh = set(addresses)
        if len(fresh) == len(addresses) and seen.isdisjoint(fresh):
            seen |= fresh  # the common case: all new, checked at C speed
        else:
            keep: list[int] = []
            for i, a in enumerate(addresses):
                if a not in seen:
                    seen.add(a)
                    keep.append(i)
            addresses = [addresses[i] for i in keep]
            areas = [areas[i] for i in keep]
            if group:
                subscribers = [subscribers[i] for i in keep]
        key = (channel, variant, "alert", group)
        size = self.size_of(channel)
        n = len(addresses)
        i = 0
        while i < n:
            cur = self.open.get(key)
            if cur is None:
                cur = self.open[key] = _Open(channel, variant, "alert", group)
            j = min(n, i + size - len(cur.addresses))
            cur.addresses.extend(addresses[i:j])
            cur.areas.extend(areas[i:j])
            if group:
                cur.subscribers.extend(subscribers[i:j])
                cur.refs.extend([""] * (j - i))
            i = j
            if len(cur.addresses) >= size:
                del self.open[key]
                self.ready.append(cur)
                self.ready_count += len(cur.addresses)
                if self.flushes == 0 or self.ready_count >= _FLUSH:
                    await self.flush()
        return n

    async def finish(self) -> None:
        self.ready.extend(self.open.values())
        self.ready_count += sum(len(o.addresses) for o in self.open.values())
        self.open.clear()
        await self.flush()

    async def flush(self) -> None:
        if not self.ready:
            return
        if self.still_mine is not None and not await self.still_mine():
            raise asyncio.CancelledError("plan lease lost")
        batches, self.ready, self.ready_count = self.ready, [], 0
        pipe = self.store.redis.pipeline(transaction=False)
        for b in batches:
            codes = list(dict.fromkeys(b.areas))
            index = {c: i for i, c in enumerate(codes)}
            record = BatchRecord.encode(
                b.channel,
                b.variant,
                b.addresses,
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
                codes,
                [index[a] for a in b.areas],
                state=state,
                pipe=pipe,
            )
        results = await pipe.execute()
        pipe = self.store.redis.pipeline(transaction=False)
        failed: list[tuple[int, dict[str, Any]]] = []
        for b, (k, base) in zip(batches, results, strict=True):
            self.last.append((int(k), int(base)))
            if b.channel in self.channels:
                await self.lanes.push(b.channel, self.priority, self.alert_id, int(k), pipe=pipe)
            else:
                for j in range(len(b.addresses)):
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
        self.written += sum(len(b.addresses) for b in batches)
        self.flushes += 1


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
        self._codes: dict[int, str] = {}
        self.me = lanes.consumer

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
        key = self.store.key(aid, "lock")
        if await self.redis.get(key) != self.me:
            return False
        await self.redis.pexpire(key, int(self.settings.reclaim_idle * 1000))
        halt = await self.redis.hget(self.store.key(aid, "plan"), "halt")
        return not halt

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
                if k >= enq and b.channel in self.channels:
                    await self.lanes.push(b.channel, b.priority, aid, k)
        await self.store.set_plan(aid, enq=nb)
        writer.flushes = 1

    def _code(self, key: int) -> str:
        code = self._codes.get(key)
        if code is None:
            code = self._codes[key] = normalise_code(str(key).zfill(12))
        return code

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
        for start, stop, step in _spans(len(audience)):
            async for columns in audience.endpoint_columns(
                self.subscribers, batch=step, start=start, stop=stop
            ):
                for col in columns:
                    await self._add_columns(alert, audience, col, writer, memo)
                await asyncio.sleep(0)  # let the workers run between steps

    async def _add_columns(
        self,
        alert: Alert,
        audience: Audience,
        col: EndpointColumns,
        writer: PlanWriter,
        memo: dict[Any, int],
    ) -> None:
        """One channel's endpoints of a step, split by variant, into the writer."""
        if not len(col):
            return
        infos = audience.infos[col.at]
        groups = audience.groups[col.at]
        ack = np.array(audience.group_ack, dtype=bool)
        acks = ack[groups] if ack.any() else np.zeros(len(col), dtype=bool)
        keys, inverse = np.unique(audience.area_keys[col.at], return_inverse=True)
        codes = [self._code(k) for k in keys.tolist()]
        areas = [codes[i] for i in inverse.tolist()]
        languages = col.languages
        first = languages[0]
        if (
            not acks.any()
            and int(infos.min()) == int(infos.max())
            and languages.count(first) == len(languages)
        ):
            # The common case: one variant for the whole step.
            parts: dict[tuple[str, int, int], list[int]] | None = None
        else:
            parts = {}
            for i, (lang, info, g, a) in enumerate(
                zip(languages, infos.tolist(), groups.tolist(), acks.tolist(), strict=True)
            ):
                parts.setdefault((lang, info, g if a else -1), []).append(i)
        channel = col.channel.value
        if parts is None:
            info = int(infos[0])
            v = await self._variant(alert, info, alert.infos[info], channel, first, memo)
            await writer.add_many(channel, v, col.addresses, areas)
            return
        for (lang, info, g), idx in parts.items():
            v = await self._variant(alert, info, alert.infos[info], channel, lang, memo)
            group = audience.group_keys[g] if g >= 0 else ""
            await writer.add_many(
                channel,
                v,
                [col.addresses[i] for i in idx],
                [areas[i] for i in idx],
                group=group,
                subscribers=[col.subscriber_ids[i] for i in idx] if group else (),
            )

    async def _notices(self, rec: AlertRecord, old: AlertRecord, writer: PlanWriter) -> None:
        """The Update/Cancel to everyone ``old`` reached, through the same endpoints."""
        await self._settle(old.id)
        states = await self.store.states(old.id)
        table = await self.store.batch_table(old.id)
        reached = "".join(s.code for s in REACHED) + DeliveryState.SENDING.code
        memo: dict[Any, int] = {}
        infos = rec.alert.infos or old.alert.infos
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
                msg = await self.store.message(old.id, b.variant) or {}
                info_index = min(int(msg.get("info", 0)), len(infos) - 1)
                language = str(msg.get("language", "zh-Hans"))
                v = await self._variant(
                    rec.alert, info_index, infos[info_index], b.channel, language, memo
                )
                areas = await self.store.areas_of(b)
                for j, address in enumerate(b.addresses):
                    if states[b.base + j : b.base + j + 1] in reached:
                        await writer.add(
                            b.channel, v, address, areas[j], kind="notice", ref=b.delivery_id(j)
                        )

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


def _spans(n: int) -> list[tuple[int, int, int]]:
    """``(start, stop, step)``: a small first span (its batch is sending while
    the rest is read), then the rest in big steps."""
    if n <= _FIRST_CHUNK:
        return [(0, n, _FIRST_CHUNK)]
    return [(0, _FIRST_CHUNK, _FIRST_CHUNK), (_FIRST_CHUNK, n, _CHUNK)]


__all__ = ["PlanWriter", "Planner", "priority_of"]
