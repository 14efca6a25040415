"""Sandbox: a provider for every channel that sends nothing and records everything.

Credentials: none. Use it as ``[channels.sandbox]`` or as the provider of
any channel (``[channels.sms] provider = "sandbox"``), so ``make run``,
the benchmarks and the dispatch tests work with no gateway. It behaves as
configured — latency, failures, throttling, timeouts, asynchronous
receipts — and records each message it was asked to send, in memory
and/or in a Redis stream (``warnd:ch:<name>:sandbox``) that other
processes can read.

Which targets fail is decided by address (``fail_addresses`` …) or by a
stable hash of the delivery id (``fail_rate`` …), so a run is repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import aiohttp
import structlog
from pydantic import Field

from warnd.channel import (
    Batch,
    CallbackReceipt,
    CallbackState,
    Channel,
    ChannelConfig,
    ChannelContext,
    ChannelHealth,
    Outcome,
    RateLimit,
    Receipt,
    Receipts,
    Target,
    delivery_ids_of,
)
from warnd.errors import BadRequest
from warnd.keys import Keys
from warnd.limits import LengthUnit, MessageLimits
from warnd.model import Level

if TYPE_CHECKING:
    from aiohttp import web

log = structlog.get_logger("warnd.channels.sandbox")


class SandboxConfig(ChannelConfig):
    provider: Literal["sandbox"] = "sandbox"
    latency: float = Field(default=0.0, ge=0)
    """Seconds each send takes (longer than ``timeout``: the send times out)."""
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    retry_rate: float = Field(default=0.0, ge=0, le=1)
    throttle_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of targets answered ``retry`` that does not count as an attempt (a 429)."""
    retry_after: float = Field(default=1.0, ge=0)
    fail_addresses: list[str] = Field(default_factory=list)
    retry_addresses: list[str] = Field(default_factory=list)
    throttle_addresses: list[str] = Field(default_factory=list)
    timeout_addresses: list[str] = Field(default_factory=list)
    """These hang past ``timeout``: ``uncertain`` (``idempotent = false``) or ``retry``."""
    idempotent: bool = True
    synchronous: Literal["sent", "delivered"] = "sent"
    receipts: Literal["none", "delivered", "failed", "acknowledged"] = "none"
    """Asynchronous receipt posted to warnd's receipts endpoint after ``receipt_delay``."""
    receipt_delay: float = Field(default=0.0, ge=0)
    record: Literal["memory", "redis", "both", "none"] = "memory"
    memory_limit: int = Field(default=100_000, ge=0)
    batch_size: int | None = Field(default=None, ge=1, le=10_000)
    max_length: int | None = Field(default=None, ge=1)
    """Override the limits' ``max_length`` of the channel stood in for."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One target of one batch, as the sandbox saw it."""

    channel: str
    delivery_id: str
    address: str
    text: str
    subject: str
    alert_id: str
    level: str
    msg_type: str
    outcome: str
    pid: int

    def fields(self) -> dict[str, str]:
        return {
            "channel": self.channel,
            "delivery_id": self.delivery_id,
            "address": self.address,
            "text": self.text,
            "subject": self.subject,
            "alert_id": self.alert_id,
            "level": self.level,
            "msg_type": self.msg_type,
            "outcome": self.outcome,
            "pid": str(self.pid),
        }


def _share(delivery_id: str, salt: str) -> float:
    """A stable number in [0, 1) from a delivery id: repeatable failure choice."""
    digest = hashlib.blake2b(f"{salt}:{delivery_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class SandboxChannel(Channel):
    name = "sandbox"
    provider = "sandbox"
    Config: ClassVar[type[ChannelConfig]] = SandboxConfig
    limits = MessageLimits(LengthUnit.CHARS)
    batch_size = 1000
    rate = RateLimit(100_000, 1.0)
    async_receipts = False

    def __init__(self, config: ChannelConfig, context: ChannelContext | None = None) -> None:
        super().__init__(config, context)
        self.cfg = cast(SandboxConfig, config)
        self.idempotent = self.cfg.idempotent
        self.async_receipts = self.cfg.receipts != "none"
        self.sent: list[SentMessage] = []
        """In-memory record, oldest first (``record`` = memory or both)."""
        self.stood_in_for: type[Channel] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._apply_limit_override()

    @classmethod
    def standing_in_for(
        cls, family: type[Channel], config: ChannelConfig, context: ChannelContext | None
    ) -> SandboxChannel:
        """A sandbox with the name, limits and batch size of ``family``."""
        inst = cls(config, context)
        inst.name = family.name
        inst.stood_in_for = family
        inst.limits = family.limits
        inst.async_receipts = inst.cfg.receipts != "none"
        if config.batch_size is None:
            inst.batch_size = family.batch_size
        inst._apply_limit_override()
        return inst

    def _apply_limit_override(self) -> None:
        if self.cfg.max_length is not None:
            from dataclasses import replace

            self.limits = replace(self.limits, max_length=self.cfg.max_length)

    @property
    def record_key(self) -> str:
        keys = self.context.keys or Keys()
        return keys.sandbox_record(self.name)

    # ---------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self.async_receipts and self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=self.config.max_connections),
            )

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def health(self) -> ChannelHealth:
        return ChannelHealth(ok=True, detail="sandbox: sends nothing")

    def limits_for(self, level: Level | None) -> MessageLimits:
        return self.limits

    # ---------------------------------------------------------- sending
    def _outcomes(self, targets: Sequence[Target]) -> Sequence[Receipt]:
        """Each target's outcome, by address lists and stable hashes of delivery ids.

        A hash is computed only for a rate that is set (a share is never below
        0), and the address lists are looked up as sets: a plain sandbox
        answers a whole batch with one :class:`Receipts`.
        """
        cfg = self.cfg
        fail, throttle, retry = (
            frozenset(cfg.fail_addresses),
            frozenset(cfg.throttle_addresses),
            frozenset(cfg.retry_addresses),
        )
        ok = Outcome.DELIVERED if cfg.synchronous == "delivered" else Outcome.SENT
        if not (fail or throttle or retry or cfg.fail_rate or cfg.throttle_rate or cfg.retry_rate):
            ids = delivery_ids_of(targets)
            return Receipts(ids, ok, provider_ids=["sbx-" + i for i in ids])
        out: list[Receipt] = []
        for t in targets:
            did, addr = t.delivery_id, t.address
            if addr in fail or (cfg.fail_rate and _share(did, "fail") < cfg.fail_rate):
                out.append(Receipt.failed(did, "sandbox: permanent failure", status="sandbox-fail"))
            elif addr in throttle or (
                cfg.throttle_rate and _share(did, "throttle") < cfg.throttle_rate
            ):
                out.append(
                    Receipt.retry(
                        did,
                        "sandbox: throttled",
                        after=cfg.retry_after,
                        counts_attempt=False,
                        status="429",
                    )
                )
            elif addr in retry or (cfg.retry_rate and _share(did, "retry") < cfg.retry_rate):
                out.append(Receipt.retry(did, "sandbox: temporary failure", after=cfg.retry_after))
            else:
                out.append(Receipt(did, ok, f"sbx-{did}"))
        return out

    async def send(self, batch: Batch) -> Sequence[Receipt]:
        timeouts = frozenset(self.cfg.timeout_addresses)
        hanging = {t for t in batch.targets if t.address in timeouts} if timeouts else set[Target]()
        latency = self.cfg.latency
        if hanging or latency > 0:
            # A send that would outlast the timeout is cut at the timeout, as a
            # real client's would be.
            wait = self.timeout if hanging or latency >= self.timeout else latency
            await asyncio.sleep(wait)
        timed_out = latency >= self.timeout
        if timed_out or hanging:
            err = f"sandbox: no answer within {self.timeout:g} s"
            late = Receipt.retry if self.idempotent else Receipt.uncertain
            answered = self._outcomes(
                [t for t in batch.targets if not timed_out and t not in hanging]
            )
            by_id = {r.delivery_id: r for r in answered}
            receipts: Sequence[Receipt] = [
                by_id.get(t.delivery_id) or late(t.delivery_id, err) for t in batch.targets
            ]
        else:
            receipts = self._outcomes(batch.targets)
        await self._record(batch, receipts)
        if log.is_enabled_for(logging.DEBUG):  # one event per batch, not per target
            counts = Counter(r.outcome.value for r in receipts)
            log.debug("channel.sandbox.sent", channel=self.name, targets=len(receipts), **counts)
        if self.async_receipts:
            done = [r for r in receipts if r.outcome in (Outcome.SENT, Outcome.DELIVERED)]
            if done:
                task = asyncio.create_task(self._post_receipts(done))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return receipts

    async def reconcile(self, targets: Sequence[Target]) -> list[Receipt]:
        """Settle deliveries in doubt from the record (the sandbox's "query API").

        A target the record shows was taken gets its recorded outcome; one it
        does not show was never sent (``retry``). Without a record, the
        default: still uncertain.
        """
        if self.cfg.record == "none":
            return await super().reconcile(targets)
        wanted = {t.delivery_id for t in targets}
        seen: dict[str, str] = {
            m.delivery_id: m.outcome for m in self.sent if m.delivery_id in wanted
        }
        redis = self.context.redis
        if self.cfg.record in ("redis", "both") and redis is not None:
            for row in await read_record(redis, self.record_key):
                if row.get("delivery_id") in wanted:
                    seen[row["delivery_id"]] = row.get("outcome", "sent")
        out: list[Receipt] = []
        for t in targets:
            outcome = seen.get(t.delivery_id)
            if outcome is None:
                out.append(Receipt.retry(t.delivery_id, "sandbox: no record of a send", after=0))
            elif outcome in (Outcome.SENT.value, Outcome.DELIVERED.value):
                out.append(
                    Receipt(t.delivery_id, Outcome(outcome), provider_id=f"sbx-{t.delivery_id}")
                )
            else:
                out.append(Receipt.uncertain(t.delivery_id, f"sandbox: recorded {outcome}"))
        return out

    async def _record(self, batch: Batch, receipts: Sequence[Receipt]) -> None:
        mode = self.cfg.record
        if mode == "none":
            return
        pid = os.getpid()
        by_id = {r.delivery_id: r for r in receipts}
        rows = [
            SentMessage(
                channel=self.name,
                delivery_id=t.delivery_id,
                address=t.address,
                text=batch.text,
                subject=batch.subject,
                alert_id=batch.alert_id,
                level=batch.level.value if batch.level else "",
                msg_type=batch.msg_type.value,
                outcome=by_id[t.delivery_id].outcome.value,
                pid=pid,
            )
            for t in batch.targets
        ]
        if mode in ("memory", "both"):
            self.sent.extend(rows)
            overflow = len(self.sent) - self.cfg.memory_limit
            if overflow > 0:
                del self.sent[:overflow]
        redis = self.context.redis
        if mode in ("redis", "both") and redis is None:
            # `warnd channels test` runs without a store: keep the record in memory.
            if not self.sent or self.sent[-1] is not rows[-1]:
                self.sent.extend(rows)
        elif mode in ("redis", "both") and redis is not None:
            pipe = redis.pipeline(transaction=False)
            for row in rows:
                pipe.xadd(self.record_key, row.fields())  # type: ignore[arg-type]
            await pipe.execute()

    async def _post_receipts(self, receipts: Sequence[Receipt]) -> None:
        await asyncio.sleep(self.cfg.receipt_delay)
        url = self.callback_url()
        if url is None or self._session is None:
            log.warning("channel.sandbox.no_receipts_url", channel=self.name)
            return
        body = {
            "receipts": [
                {
                    "delivery_id": r.delivery_id,
                    "provider_id": r.provider_id,
                    "state": self.cfg.receipts,
                }
                for r in receipts
            ]
        }
        try:
            async with self._session.post(url, json=body) as resp:
                await resp.read()
                if resp.status >= 300:
                    log.warning(
                        "channel.sandbox.receipt_refused", channel=self.name, status=resp.status
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("channel.sandbox.receipt_failed", channel=self.name, error=str(exc))

    async def parse_callback(self, request: web.Request, body: bytes) -> list[CallbackReceipt]:
        try:
            doc: Any = json.loads(body)
            items = doc["receipts"]
            out = [
                CallbackReceipt(
                    state=CallbackState(item["state"]),
                    delivery_id=item.get("delivery_id"),
                    provider_id=item.get("provider_id"),
                    provider_status=str(item["state"]),
                    raw={k: str(v) for k, v in item.items()},
                )
                for item in items
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest(
                'sandbox receipts are JSON {"receipts": [{"delivery_id", "state"}]}: '
                f"{type(exc).__name__}: {exc}"
            ) from None
        return out


async def read_record(redis: Any, key: str, *, count: int | None = None) -> list[dict[str, str]]:
    """Every message a sandbox recorded in Redis (``record`` = redis or both)."""
    entries = await redis.xrange(key, count=count)
    return [dict(fields) for _, fields in entries]
