"""Deliveries in doubt: ask the provider before anything is resent.

A send that timed out at a provider that does not deduplicate (a cloud SMS
API) leaves its deliveries ``uncertain``: resending could warn someone
twice, not resending could leave them unwarned. For a channel whose
provider has a status-query API (:attr:`~warnd.channel.Channel.reconciles`)
the worker puts them on a schedule (``{d}:reconcile:<channel>``, due
``reconcile_after`` seconds later, since providers record a message with
some delay). Any process takes due ones — one script moves their due time a
lease ahead, so no other process takes them meanwhile and a crash gives
them back — asks :meth:`~warnd.channel.Channel.reconcile`, and:

=================  ===========================================================
``sent``           the provider has it: uncertain → sent (its message id kept
``delivered``      for later receipts) / delivered
``failed``         it has it, and it failed: → failed (a dead letter)
``retry``          it never took it: → queued and sent again — once, since only
                   a delivery still ``uncertain`` moves, in one script
``uncertain``      the query could not tell (failed, unknown status): asked
                   again after a doubling pause, at most ``reconcile_tries``
                   times; then it stays ``uncertain`` for an operator
=================  ===========================================================

A receipt (or an operator's retry) that settles a delivery first takes it
off the schedule: the provider is only asked about deliveries still
``uncertain``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import structlog

from warnd.channel import Channel, Outcome, Receipt, Target, mask_address
from warnd.dispatch.config import DispatchSettings
from warnd.dispatch.correlate import receipt_ids
from warnd.dispatch.lanes import Lanes
from warnd.dispatch.states import DeliveryState
from warnd.dispatch.store import BatchRecord, DeliveryRef, DeliveryStore

log = structlog.get_logger("warnd.dispatch.reconcile")

SentHook = Callable[[BatchRecord, list[int], dict[str, str]], Awaitable[None]]
"""Called with the offsets of an acknowledgement batch found sent."""

CLAIM = """
-- KEYS[1] schedule (zset), KEYS[2] tries (hash). ARGV: now, limit, lease.
-- Due members get a due time a lease ahead (no other process takes them
-- meanwhile; a crash gives them back) and are returned with their tries.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, m in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), m)
  out[#out + 1] = m
  out[#out + 1] = redis.call('HGET', KEYS[2], m) or '0'
end
return out
"""

_UNCERTAIN = DeliveryState.UNCERTAIN.code


class Reconciler:
    """One channel's schedule of deliveries in doubt, and the queries that settle them."""

    def __init__(
        self,
        channel: Channel,
        store: DeliveryStore,
        lanes: Lanes,
        settings: DispatchSettings,
        *,
        on_sent: SentHook | None = None,
    ) -> None:
        self.channel = channel
        self.name = channel.name
        self.store = store
        self.lanes = lanes
        self.settings = settings
        self.on_sent = on_sent
        keys = store.keys
        self.key = keys.dispatch_reconcile(channel.name)
        self.tries_key = keys.dispatch_reconcile_tries(channel.name)
        self._claim = store.redis.register_script(CLAIM)
        # Longer than one round of queries can take (each call is bounded by
        # the channel's timeout): a live process never loses its claim.
        self.lease = max(60.0, settings.reclaim_idle, 4 * channel.timeout)

    # ------------------------------------------------------------ schedule
    async def schedule(self, batch: BatchRecord, offsets: Sequence[int]) -> None:
        """Deliveries of ``batch`` just became ``uncertain``: ask about them later."""
        if not offsets:
            return
        due = time.time() + self.settings.reconcile_after
        ids = [batch.delivery_id(j) for j in offsets]
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.zadd(self.key, dict.fromkeys(ids, due))
        pipe.hdel(self.tries_key, *ids)
        await pipe.execute()

    async def pending(self) -> int:
        """Deliveries on the schedule (due or not)."""
        return int(await self.store.redis.zcard(self.key))

    def pause(self, tries: int) -> float:
        """Seconds before asking again after ``tries`` queries that could not tell."""
        return float(min(self.settings.backoff_max, self.settings.reconcile_after * 2**tries))

    # ------------------------------------------------------------ queries
    async def run_due(self, now: float | None = None, limit: int = 200) -> int:
        """Ask the provider about due deliveries; returns how many were asked about."""
        now = time.time() if now is None else now
        raw = cast(
            list[str],
            await self._claim(keys=[self.key, self.tries_key], args=[now, limit, self.lease]),
        )
        groups: dict[tuple[str, int], list[tuple[int, int]]] = {}
        junk: list[str] = []
        for i in range(0, len(raw), 2):
            ref = DeliveryRef.parse(str(raw[i]))
            if ref is None:
                junk.append(str(raw[i]))
                continue
            tries = int(raw[i + 1]) if str(raw[i + 1]).isdigit() else 0
            groups.setdefault((ref.alert_id, ref.batch), []).append((ref.offset, tries))
        if junk:
            await self._forget(junk)
        asked = 0
        for (aid, k), items in groups.items():
            asked += await self._batch(aid, k, items, now)
        return asked

    async def _batch(self, aid: str, k: int, items: list[tuple[int, int]], now: float) -> int:
        batch = (await self.store.batches(aid, [k])).get(k)
        if batch is None:
            await self._forget([f"{aid}.{k}.{j}" for j, _ in items])
            return 0
        items = [(j, tries) for j, tries in items if j < batch.size]
        numbers = [batch.base + j for j, _ in items]
        slots = await self.store.slots(aid, numbers)
        events = await self.store.events(aid, numbers)
        todo: list[tuple[int, int, int]] = []
        settled: list[str] = []
        for (j, tries), (code, attempts, _, _) in zip(items, slots, strict=True):
            if code == _UNCERTAIN:
                todo.append((j, tries, attempts))
            else:  # a receipt or an operator settled it meanwhile
                settled.append(batch.delivery_id(j))
        if settled:
            await self._forget(settled)
        if not todo:
            return 0
        targets = [
            Target(
                batch.delivery_id(j),
                batch.addresses[j],
                reference=_reference(events.get(batch.base + j, [])),
            )
            for j, _, _ in todo
        ]
        try:
            answers = await self.channel.reconcile(targets)
        except Exception as exc:  # a broken query must not lose the deliveries
            log.warning("dispatch.reconcile_failed", channel=self.name, error=repr(exc))
            answers = [
                Receipt.uncertain(t.delivery_id, f"reconcile failed: {exc}") for t in targets
            ]
        by_id = {r.delivery_id: r for r in answers}
        await self._apply(batch, todo, by_id, now)
        return len(todo)

    async def _apply(
        self,
        batch: BatchRecord,
        todo: list[tuple[int, int, int]],
        by_id: dict[str, Receipt],
        now: float,
    ) -> None:
        limit = self.settings.attempts_for(self.name)
        events: list[tuple[int, dict[str, Any]]] = []
        have: dict[DeliveryState, list[tuple[int, Receipt]]] = {}
        resend: list[tuple[int, Receipt]] = []
        dead: list[tuple[int, str]] = []
        again: list[tuple[int, int, Receipt]] = []
        done: list[str] = []
        for j, tries, attempts in todo:
            did = batch.delivery_id(j)
            r = by_id.get(did) or Receipt.uncertain(did, f"{self.name}: no answer for it")
            if r.outcome is Outcome.UNCERTAIN:
                again.append((j, tries + 1, r))
                continue
            done.append(did)
            if r.outcome is Outcome.SENT:
                have.setdefault(DeliveryState.SENT, []).append((j, r))
            elif r.outcome is Outcome.DELIVERED:
                have.setdefault(DeliveryState.DELIVERED, []).append((j, r))
            elif r.outcome is Outcome.FAILED:
                dead.append((j, r.error or "failed"))
            elif attempts >= limit:
                dead.append((j, f"{attempts} attempts used up; last: {r.error}"))
            else:
                resend.append((j, r))
        for to, items in have.items():
            moved = await self.store.move(batch, [j for j, _ in items], _UNCERTAIN, to)
            ok = set(moved.offsets)
            events += [
                (batch.base + j, _event("reconciled", r, to.value)) for j, r in items if j in ok
            ]
            sent = [(j, r) for j, r in items if j in ok]
            ids = receipt_ids(self.channel, batch.alert_id, batch.index, sent)
            await self.store.remember_provider_ids(self.name, ids)
            if batch.group and self.on_sent is not None and moved.offsets:
                await self.on_sent(batch, list(moved.offsets), {})
        if dead:
            reasons = dict(dead)
            moved = await self.store.move(batch, list(reasons), _UNCERTAIN, DeliveryState.FAILED)
            for j in moved.offsets:
                events.append((batch.base + j, {"event": "failed", "error": reasons[j]}))
                await self._dead(batch, j, reasons[j])
        if resend:
            offsets = [j for j, _ in resend]
            moved = await self.store.move(batch, offsets, _UNCERTAIN, DeliveryState.QUEUED)
            if moved.offsets:
                ok = set(moved.offsets)
                events += [
                    (batch.base + j, _event("reconciled", r, "not sent"))
                    for j, r in resend
                    if j in ok
                ]
                after = max(r.retry_after or 0.0 for j, r in resend if j in ok)
                which = ",".join(map(str, moved.offsets))
                if after > 0:
                    await self.lanes.later(
                        self.name, batch.priority, batch.alert_id, batch.index, which, now + after
                    )
                else:
                    await self.lanes.push(
                        self.name, batch.priority, batch.alert_id, batch.index, which
                    )
        await self._forget(done)
        if again:
            await self._again(batch, again, now, events)
        await self.store.add_events(batch.alert_id, events)
        log.info(
            "delivery.reconciled",
            channel=self.name,
            alert_id=batch.alert_id,
            batch=batch.index,
            found=sum(len(v) for v in have.values()),
            failed=len(dead),
            resend=len(resend),
            in_doubt=len(again),
        )

    async def _again(
        self,
        batch: BatchRecord,
        again: list[tuple[int, int, Receipt]],
        now: float,
        events: list[tuple[int, dict[str, Any]]],
    ) -> None:
        """Still in doubt: ask again later, or leave it to an operator."""
        pipe = self.store.redis.pipeline(transaction=False)
        gave_up: list[str] = []
        for j, tries, r in again:
            did = batch.delivery_id(j)
            if tries >= self.settings.reconcile_tries:
                gave_up.append(did)
                event = {"event": "reconcile_gave_up", "tries": tries, "error": r.error}
                events.append((batch.base + j, event))
                continue
            pipe.zadd(self.key, {did: now + self.pause(tries)})
            pipe.hset(self.tries_key, did, str(tries))
            events.append((batch.base + j, {"event": "reconcile", "error": r.error}))
        await pipe.execute()
        if gave_up:
            await self._forget(gave_up)
            log.warning(
                "delivery.reconcile_gave_up",
                channel=self.name,
                alert_id=batch.alert_id,
                deliveries=len(gave_up),
            )

    async def _forget(self, ids: Sequence[str]) -> None:
        if ids:
            pipe = self.store.redis.pipeline(transaction=False)
            pipe.zrem(self.key, *ids)
            pipe.hdel(self.tries_key, *ids)
            await pipe.execute()

    async def _dead(self, batch: BatchRecord, j: int, reason: str) -> None:
        await self.lanes.dead_letter(
            {
                "delivery_id": batch.delivery_id(j),
                "alert_id": batch.alert_id,
                "channel": self.name,
                "address": mask_address(batch.addresses[j]),
                "reason": reason,
            }
        )
        log.warning(
            "delivery.failed", channel=self.name, delivery_id=batch.delivery_id(j), reason=reason
        )


def _reference(events: Sequence[dict[str, Any]]) -> str | None:
    """The request id the last ``uncertain`` outcome recorded, if any."""
    for e in reversed(events):
        if e.get("event") == "uncertain":
            ref = e.get("ref")
            return str(ref) if ref else None
    return None


def _event(name: str, r: Receipt, found: str) -> dict[str, Any]:
    out: dict[str, Any] = {"event": name, "found": found}
    if r.provider_status:
        out["status"] = r.provider_status
    if r.error and found == "not sent":
        out["error"] = r.error
    return out


__all__ = ["Reconciler"]
