"""Acknowledgement (叫应): confirmation codes, deadlines and escalation.

Members of a group with ``ack_required`` get their warning one message
each, ending with a confirmation code and link (``POST /v1/ack/<code>``;
an SMS reply containing the code works where the gateway forwards
replies). The code is derived from the delivery id with a key kept in
Redis, so a resend carries the same code.

When a delivery is sent, its deadline (the group's ``ack_deadline_minutes``,
else ``[dispatch] ack_deadline_minutes``) goes into a schedule. At the
deadline, if neither that delivery nor any other of the same subscriber for
this alert was acknowledged, warnd escalates: the warning goes out again
through the next channel of the group's preference order the subscriber has
an endpoint on (itself to be acknowledged, and escalated in turn), and on
the first escalation the group's ``escalate_to`` group is told — its members
nearest above the subscriber's area (same village, township, county …).
Each step is an event in the delivery's record.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

import structlog
from redis.asyncio import Redis

from warnd.channel import Channel, mask_address
from warnd.dispatch.config import DispatchSettings
from warnd.dispatch.lanes import Lanes
from warnd.dispatch.planner import PlanWriter
from warnd.dispatch.states import DeliveryState
from warnd.dispatch.store import NOSUB, BatchRecord, DeliveryRef, DeliveryStore
from warnd.groups import GroupTable
from warnd.keys import Keys
from warnd.subscribers import SubscriberStore

log = structlog.get_logger("warnd.dispatch.ack")

TOKEN_TTL = 7 * 86400
_ACKABLE = "sSDU"

VariantFor = Callable[[str, str, str, int], Awaitable[int]]
"""``variant_for(alert_id, channel, language, info_index)`` → variant number."""

_LINE = {
    "zh": "\n【请确认】收到请回复 {token}，或打开 {url}",
    "en": "\n[Please confirm] reply {token} or open {url}",
}
_SUPERVISOR = {
    "zh": "【叫应提醒】{who}（{address}）未在{minutes}分钟内确认收到预警：{what}。请督促落实。",
    "en": "[Acknowledgement overdue] {who} ({address}) has not confirmed the warning"
    " within {minutes} minutes: {what}.",
}


class Acks:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        store: DeliveryStore,
        lanes: Lanes,
        settings: DispatchSettings,
        groups: GroupTable,
        subscribers: SubscriberStore,
        channels: Mapping[str, Channel],
        variant_for: VariantFor,
        ack_url: str,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.lanes = lanes
        self.settings = settings
        self.groups = groups
        self.subscribers = subscribers
        self.channels = channels
        self.variant_for = variant_for
        self.ack_url = ack_url.rstrip("/")
        self._secret: bytes | None = None
        self._issued: set[str] = set()

    # ------------------------------------------------------------ tokens
    async def _key(self) -> bytes:
        if self._secret is None:
            await self.redis.set(self.keys.dispatch_secret, secrets.token_hex(32), nx=True)
            self._secret = str(await self.redis.get(self.keys.dispatch_secret)).encode()
        return self._secret

    async def tokens(self, delivery_ids: Sequence[str]) -> list[str]:
        """The confirmation tokens of deliveries, those not yet issued stored in one round trip."""
        key = await self._key()
        out = [
            base64.b32encode(hashlib.blake2b(d.encode(), key=key, digest_size=10).digest())
            .decode()
            .lower()[:12]
            for d in delivery_ids
        ]
        new = [(t, d) for t, d in zip(out, delivery_ids, strict=True) if t not in self._issued]
        if new:
            async with self.redis.pipeline(transaction=False) as pipe:
                for t, d in new:
                    pipe.set(self.keys.ack_token(t), d, ex=TOKEN_TTL)
                await pipe.execute()
            if len(self._issued) + len(new) > 100_000:
                self._issued.clear()
            self._issued.update(t for t, _ in new)
        return out

    async def lines(self, batch: BatchRecord, offsets: Sequence[int], language: str) -> list[str]:
        """The confirmation line of each recipient's message, in the order of ``offsets``."""
        tokens = await self.tokens([batch.delivery_id(j) for j in offsets])
        text = _LINE["zh" if language.startswith("zh") else "en"]
        return [text.format(token=t, url=f"{self.ack_url}/v1/ack/{t}") for t in tokens]

    # ------------------------------------------------------------ deadlines
    def deadline_minutes(self, group: str) -> int:
        g = self.groups.get(group)
        minutes = g.settings.ack_deadline_minutes if g is not None else None
        return minutes or self.settings.ack_deadline_minutes

    async def sent(self, batch: BatchRecord, offsets: list[int], _: dict[str, str]) -> None:
        """Acknowledgement deliveries went out: start their deadlines."""
        due = time.time() + 60 * self.deadline_minutes(batch.group)
        await self.redis.zadd(
            self.keys.dispatch_ack_due, {batch.delivery_id(j): due for j in offsets}
        )

    # ------------------------------------------------------------ acks
    async def acknowledge(self, token: str, *, via: str) -> tuple[str, bool] | None:
        """Record an acknowledgement: ``(delivery id, first time)``, or ``None`` if unknown."""
        did = await self.redis.get(self.keys.ack_token(token.strip().lower()))
        if not did:
            return None
        first = await self.mark(str(did), via=via)
        return str(did), first

    async def mark(self, delivery_id: str, *, via: str) -> bool:
        """Move a delivery to ``acknowledged``; ``False`` if it already was."""
        ref = DeliveryRef.parse(delivery_id)
        if ref is None:
            return False
        batch = (await self.store.batches(ref.alert_id, [ref.batch])).get(ref.batch)
        if batch is None:
            return False
        moved = await self.store.move(batch, [ref.offset], _ACKABLE, DeliveryState.ACKNOWLEDGED)
        if not moved.offsets:
            return False
        pipe = self.redis.pipeline(transaction=False)
        if batch.subscribers and ref.offset < len(batch.subscribers):
            pipe.hsetnx(
                self.store.key(ref.alert_id, "ack"), batch.subscribers[ref.offset], delivery_id
            )
        pipe.zrem(self.keys.dispatch_ack_due, delivery_id)
        await pipe.execute()
        await self.store.add_events(
            ref.alert_id, [(batch.base + ref.offset, {"event": "acknowledged", "via": via})]
        )
        log.info("delivery.acknowledged", delivery_id=delivery_id, via=via)
        return True

    # ------------------------------------------------------------ escalation
    async def escalate_due(self, now: float | None = None, limit: int = 100) -> int:
        """Escalate every acknowledgement overdue at ``now``; returns how many."""
        now = time.time() if now is None else now
        due = cast(
            list[str],
            await self.redis.zrangebyscore(self.keys.dispatch_ack_due, "-inf", now, 0, limit),
        )
        done = 0
        for did in due:
            if not await self.redis.zrem(self.keys.dispatch_ack_due, did):
                continue  # another process took it
            if await self._escalate(did):
                done += 1
        return done

    async def _escalate(self, did: str) -> bool:
        ref = DeliveryRef.parse(did)
        if ref is None:
            return False
        aid = ref.alert_id
        batch = (await self.store.batches(aid, [ref.batch])).get(ref.batch)
        if batch is None or not batch.subscribers:
            return False
        ((state, _, _, area),) = await self.store.slots(aid, [batch.base + ref.offset])
        sub_id = batch.subscribers[ref.offset]
        if state == DeliveryState.ACKNOWLEDGED.code or await self.redis.hexists(
            self.store.key(aid, "ack"), sub_id
        ):
            return False
        plan = await self.store.plan(aid)
        if plan.get("halt"):
            return False
        exp = int(plan.get("exp") or 0)
        if exp and time.time() * 1000 >= exp:
            return False
        number = batch.base + ref.offset
        events: list[tuple[int, dict[str, Any]]] = [
            (number, {"event": "ack_overdue", "minutes": self.deadline_minutes(batch.group)})
        ]
        group = self.groups.get(batch.group)
        sub = await self.subscribers.get(sub_id)
        msg = await self.store.message(aid, batch.variant) or {}
        language = str(msg.get("language") or "zh-Hans")
        info = int(msg.get("info") or 0)
        prio = plan.get("prio", "hi")
        if group is not None and sub is not None:
            prefs = [c.value for c in group.settings.channels]
            after = prefs[prefs.index(batch.channel) + 1 :] if batch.channel in prefs else []
            for ch in after:
                address = getattr(sub, ch, None)
                if address and ch in self.channels:
                    v = await self.variant_for(aid, ch, language, info)
                    same = await self.store.numbers(aid, number, 1)  # the same subscriber
                    writer = PlanWriter(self.store, self.lanes, aid, prio, self.channels)
                    await writer.add(
                        ch,
                        v,
                        address,
                        area,
                        kind="escalation",
                        group=batch.group,
                        subscriber=sub_id,
                        ref=did,
                        number=same[0] if same else NOSUB,
                    )
                    await writer.finish()
                    k, _base = writer.last[0]
                    new = f"{aid}.{k}.0"
                    events.append(
                        (number, {"event": "escalated", "channel": ch, "delivery_id": new})
                    )
                    log.info("delivery.escalated", delivery_id=did, to=new, channel=ch)
                    break
            else:
                events.append((number, {"event": "escalation_exhausted"}))
            if batch.kind == "alert" and group.settings.escalate_to:
                events += await self._supervise(
                    aid,
                    batch,
                    ref.offset,
                    area,
                    sub.name or sub_id,
                    group.settings.escalate_to,
                    language,
                    prio,
                    plan,
                )
        await self.store.add_events(aid, events)
        return True

    async def _supervise(
        self,
        aid: str,
        batch: BatchRecord,
        offset: int,
        area: str,
        who: str,
        sup_key: str,
        language: str,
        prio: str,
        plan: Mapping[str, str],
    ) -> list[tuple[int, dict[str, Any]]]:
        """Tell the members of ``sup_key`` nearest above ``area``."""
        sup = self.groups.get(sup_key)
        if sup is None:
            return []
        members: list[str] = []
        in_group = await self.subscribers.ids_in_group(sup_key)
        for code in _upwards(area):
            found = in_group & await self.subscribers.ids_in_area(code) if in_group else set()
            if found:
                members = sorted(found)
                break
        number = batch.base + offset
        if not members:
            return [(number, {"event": "supervisor_missing", "group": sup_key})]
        zh = language.startswith("zh")
        what = plan.get("identifier", aid)
        msg_for: dict[str, int] = {}
        writer = PlanWriter(self.store, self.lanes, aid, prio, self.channels)
        told: list[str] = []
        for sid in members:
            rec = await self.subscribers.get(sid)
            if rec is None:
                continue
            for ch in (c.value for c in sup.settings.channels):
                address = getattr(rec, ch, None)
                if not address or ch not in self.channels:
                    continue
                if ch not in msg_for:
                    text = _SUPERVISOR["zh" if zh else "en"].format(
                        who=who,
                        address=mask_address(batch.addresses[offset]),
                        minutes=self.deadline_minutes(batch.group),
                        what=what,
                    )
                    msg_for[ch] = await self.store.variant(
                        aid,
                        f"supervisor.{ch}.{batch.delivery_id(offset)}",
                        {"channel": ch, "language": language, "text": text, "subject": text[:60]},
                    )
                await writer.add(
                    ch,
                    msg_for[ch],
                    address,
                    area,
                    kind="supervisor",
                    subscriber=sid,
                    ref=batch.delivery_id(offset),
                )
                told.append(sid)
                break
        await writer.finish()
        log.info("delivery.supervisor_notified", delivery_id=batch.delivery_id(offset), told=told)
        return [(number, {"event": "supervisor_notified", "group": sup_key, "subscribers": told})]


def _upwards(code: str) -> list[str]:
    """The code and its ancestors, nearest first (371721001001, 371721001, 371721, 3717, 37)."""
    out = [code]
    for n in (9, 6, 4, 2):
        if len(code) > n:
            out.append(code[:n])
    return out
