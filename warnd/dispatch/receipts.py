"""Asynchronous receipts applied to deliveries (the receipts endpoint's sink).

``POST /v1/receipts/{channel}`` parses a gateway's callback into
:class:`~warnd.channel.CallbackReceipt` values and hands them here:

``delivered``     sending / sent / uncertain → delivered
``failed``        sending / sent / uncertain → failed (and a dead letter)
``acknowledged``  → acknowledged (a board's ack, an SMS reply)
``accepted``      interim (the carrier took it): an event, no state change

A receipt names its delivery by warnd's delivery id, by the request that
carried it and its number (one entry per request recorded when it was sent,
see :mod:`warnd.dispatch.correlate`), or by the provider's message id
recorded when it was sent; an SMS reply carrying a confirmation
code acknowledges that code's delivery. Receipts for no known delivery, and
repeats of one already applied, go to the ``receipts:unmatched`` stream with
the reason — recorded, never an error to the gateway.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import structlog
from redis.asyncio import Redis

from warnd.channel import CallbackReceipt, CallbackState
from warnd.dispatch.ack import Acks
from warnd.dispatch.correlate import REQUEST_PREFIX, parse_request_entry
from warnd.dispatch.lanes import Lanes
from warnd.dispatch.meter import Meter
from warnd.dispatch.states import DeliveryState
from warnd.dispatch.store import DeliveryRef, DeliveryStore
from warnd.keys import Keys

log = structlog.get_logger("warnd.dispatch.receipts")

UNMATCHED_MAXLEN = 100_000
_TOKEN = re.compile(r"\b([a-z2-7]{12})\b", re.IGNORECASE)
_NOT_DIGIT = re.compile(r"\D")
_MOVES = {
    CallbackState.DELIVERED: ("sSU", DeliveryState.DELIVERED),
    CallbackState.FAILED: ("sSU", DeliveryState.FAILED),
    CallbackState.ACKNOWLEDGED: ("sSDU", DeliveryState.ACKNOWLEDGED),
}


class ReceiptApplier:
    def __init__(
        self, redis: Redis, keys: Keys, store: DeliveryStore, lanes: Lanes, acks: Acks
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.lanes = lanes
        self.acks = acks
        self.applied = 0
        self.unmatched = 0
        self.meter: Meter | None = None

    async def __call__(self, channel: str, receipts: Sequence[CallbackReceipt]) -> None:
        for r in receipts:
            result = await self.apply_one(channel, r)
            if self.meter is not None:
                self.meter.receipt(channel, result)

    async def apply_one(self, channel: str, r: CallbackReceipt) -> str:
        """Apply one receipt; returns what happened (``applied``, ``duplicate``, ``unknown`` …)."""
        if r.delivery_id is None and r.provider_id is None and r.reply:
            found = _TOKEN.search(r.reply)
            got = (
                await self.acks.acknowledge(found.group(1), via=f"{channel} reply")
                if found
                else None
            )
            if got is None:
                return await self._unmatched(channel, r, "reply names no confirmation code")
            return "applied" if got[1] else await self._unmatched(channel, r, "duplicate")
        if r.delivery_id:
            did: str | None = r.delivery_id
        elif r.request_id:
            did = await self._by_request(channel, r.request_id, r.address)
            if did is None:
                return await self._unmatched(channel, r, "no such request or number in it")
        else:
            did = await self._by_provider_id(channel, r.provider_id)
        ref = DeliveryRef.parse(did) if did else None
        if ref is None:
            return await self._unmatched(channel, r, "no such delivery")
        batch = (await self.store.batches(ref.alert_id, [ref.batch])).get(ref.batch)
        if batch is None or ref.offset >= batch.size or batch.channel != channel:
            return await self._unmatched(channel, r, "no such delivery on this channel")
        number = batch.base + ref.offset
        event: dict[str, Any] = {"event": f"receipt.{r.state.value}"}
        if r.provider_status:
            event["status"] = r.provider_status
        if r.error:
            event["error"] = r.error
        move = _MOVES.get(r.state)
        if move is None:
            await self.store.add_events(ref.alert_id, [(number, event)])
            return "interim"
        if r.state is CallbackState.ACKNOWLEDGED:
            first = await self.acks.mark(str(ref), via=f"{channel} receipt")
            if not first:
                return await self._unmatched(channel, r, "duplicate")
            self.applied += 1
            return "applied"
        moved = await self.store.move(batch, [ref.offset], move[0], move[1])
        if not moved.offsets:
            return await self._unmatched(channel, r, "duplicate or out of order")
        await self.store.add_events(ref.alert_id, [(number, event)])
        if r.state is CallbackState.FAILED:
            await self.lanes.dead_letter(
                {
                    "delivery_id": str(ref),
                    "alert_id": ref.alert_id,
                    "channel": channel,
                    "reason": f"receipt: {r.error or r.provider_status or 'failed'}",
                }
            )
        self.applied += 1
        return "applied"

    async def _by_provider_id(self, channel: str, provider_id: str | None) -> str | None:
        if not provider_id:
            return None
        return await self._lookup(channel, provider_id)

    async def _by_request(self, channel: str, request_id: str, address: str | None) -> str | None:
        """The delivery of ``address`` among the request's: the request entry names
        the batch and offsets, the batch record their numbers."""
        found = await self._lookup(channel, REQUEST_PREFIX + request_id)
        entry = parse_request_entry(found) if found and address else None
        if entry is None or address is None:
            return None
        alert_id, index, offsets = entry
        batch = (await self.store.batches(alert_id, [index])).get(index)
        if batch is None or batch.channel != channel:
            return None
        want = _digits(address)
        for j in offsets:
            if j < batch.size and _digits(batch.addresses[j]) == want:
                return batch.delivery_id(j)
        return None

    async def _lookup(self, channel: str, field: str) -> str | None:
        now = time.time()
        for days in range(3):
            day = time.strftime("%Y%m%d", time.gmtime(now - days * 86400))
            found = await self.redis.hget(self.keys.provider_ids(channel, day), field)
            if found:
                return str(found)
        return None

    async def _unmatched(self, channel: str, r: CallbackReceipt, reason: str) -> str:
        fields: dict[Any, Any] = {
            "channel": channel,
            "reason": reason,
            **{k: str(v) for k, v in r.as_dict().items()},
        }
        await self.redis.xadd(
            self.keys.receipts_unmatched,
            fields,
            maxlen=UNMATCHED_MAXLEN,
            approximate=True,
        )
        self.unmatched += 1
        log.info("receipt.unmatched", channel=channel, reason=reason, delivery_id=r.delivery_id)
        return "duplicate" if reason.startswith("duplicate") else "unknown"


def _digits(number: str) -> str:
    """A number as digits only: ``+8613800138000`` and ``8613800138000`` match."""
    return _NOT_DIGIT.sub("", number)
