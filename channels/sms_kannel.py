"""SMS through Kannel's HTTP ``sendsms`` interface (smsbox).

Credentials: a ``sendsms-user`` group in the office's ``kannel.conf``
(see :mod:`warnd_channels.sms`). Text goes as UTF-8 with ``coding=2``
(UCS-2 on the air interface); ``dlr-mask`` asks for the final states and
``dlr-url`` points at warnd's ``/v1/receipts/sms`` with the delivery id.
Replies (MO messages) reach the same endpoint through a Kannel
``sms-service`` whose ``get-url`` is :meth:`KannelSms.mo_url`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, Literal, cast

import structlog
from pydantic import Field, SecretStr

from warnd.channel import (
    Batch,
    CallbackReceipt,
    CallbackState,
    ChannelConfig,
    ChannelContext,
    ChannelHealth,
    RateLimit,
    Receipt,
    Target,
    mask_address,
)
from warnd.errors import BadRequest
from warnd.limits import MessageLimits
from warnd.model import Level

from ._http import TRANSPORT_ERRORS, HttpChannel, gather_limited, transport_receipts
from ._sms import SMS_LIMITS, SmsConfig, limits_for, valid_number

if TYPE_CHECKING:
    from aiohttp import web

log = structlog.get_logger("warnd.channels.sms")

# Kannel delivery report types (the %d escape of dlr-url).
DLR_DELIVERED = 1
DLR_FAILED = 2
DLR_BUFFERED = 4
DLR_SMSC_SUCCESS = 8
DLR_SMSC_REJECT = 16
_DLR_STATES = {
    DLR_DELIVERED: CallbackState.DELIVERED,
    DLR_FAILED: CallbackState.FAILED,
    DLR_BUFFERED: CallbackState.ACCEPTED,
    DLR_SMSC_SUCCESS: CallbackState.ACCEPTED,
    DLR_SMSC_REJECT: CallbackState.FAILED,
}


class KannelConfig(SmsConfig):
    provider: Literal["kannel"] = "kannel"
    url: str = Field(pattern=r"^https?://")
    """smsbox's sendsms URL, e.g. ``http://127.0.0.1:13013/cgi-bin/sendsms``."""
    username: str
    password: SecretStr
    smsc: str | None = None
    """Route through this SMSC id (Kannel's ``smsc`` parameter)."""
    dlr_mask: int = Field(default=DLR_DELIVERED | DLR_FAILED | DLR_SMSC_SUCCESS | DLR_SMSC_REJECT)
    rate_count: int | None = Field(default=None, ge=1)


class KannelSms(HttpChannel):
    name = "sms"
    provider = "kannel"
    Config: ClassVar[type[ChannelConfig]] = KannelConfig
    limits = SMS_LIMITS
    batch_size = 100
    rate = RateLimit(50, 1.0)
    async_receipts = True
    idempotent = False  # Kannel queues a resent request as a second message

    def __init__(self, config: ChannelConfig, context: ChannelContext | None = None) -> None:
        super().__init__(config, context)
        self.cfg = cast(KannelConfig, config)
        self.limits = limits_for(self.cfg)

    def limits_for(self, level: Level | None) -> MessageLimits:
        return self.limits

    def dlr_url(self, delivery_id: str) -> str | None:
        base = self.callback_url(d=delivery_id)
        if base is None:
            return None
        # Kannel fills these escapes in when it calls back: type, SMSC answer,
        # time, SMSC message id.
        return base + "&status=%d&answer=%A&ts=%T&fid=%F"

    def mo_url(self) -> str | None:
        """``get-url`` for a Kannel ``sms-service`` that forwards replies to warnd."""
        base = self.callback_url(kind="mo")
        return None if base is None else base + "&from=%p&to=%P&text=%a&ts=%T"

    async def send(self, batch: Batch) -> list[Receipt]:
        if self._session is None:
            raise RuntimeError("KannelSms.send before start()")
        return await gather_limited(
            batch.targets, lambda t: self._send_one(batch, t), self.config.max_connections
        )

    async def _send_one(self, batch: Batch, target: Target) -> list[Receipt]:
        did = target.delivery_id
        if not valid_number(target.address):
            return [Receipt.failed(did, "not a phone number")]
        if self._session is None:
            raise RuntimeError("send before start()")
        params: dict[str, str] = {
            "username": self.cfg.username,
            "password": self.cfg.password.get_secret_value(),
            "to": target.address,
            "text": batch.text,
            "charset": "UTF-8",
            "coding": "2",
        }
        if self.cfg.sender:
            params["from"] = self.cfg.sender
        if self.cfg.smsc:
            params["smsc"] = self.cfg.smsc
        dlr = self.dlr_url(did)
        if dlr is not None and self.cfg.dlr_mask:
            params["dlr-mask"] = str(self.cfg.dlr_mask)
            params["dlr-url"] = dlr
        try:
            async with self._session.get(self.cfg.url, params=params) as resp:
                body = (await resp.text(errors="replace")).strip()
                status = resp.status
        except TRANSPORT_ERRORS as exc:
            log.warning(
                "channel.send_failed",
                channel=self.name,
                delivery_id=did,
                to=mask_address(target.address),
                error=type(exc).__name__,
            )
            return transport_receipts([target], exc, idempotent=self.idempotent, who="kannel")
        receipt = self._classify(did, status, body)
        log.info(
            "channel.sent" if receipt.outcome.value == "sent" else "channel.refused",
            channel=self.name,
            delivery_id=did,
            to=mask_address(target.address),
            status=status,
            answer=body[:120],
        )
        return [receipt]

    @staticmethod
    def _classify(did: str, status: int, body: str) -> Receipt:
        # smsbox: 202 "0: Accepted for delivery" / "3: Queued for later delivery";
        # 403 "Authorization failed"; 400 for bad parameters; 503 when bearerbox
        # is down or the queue is full.
        code = str(status)
        if 200 <= status < 300:
            return Receipt.sent(did, None, status=code)
        if status in (401, 403):
            return Receipt.retry(
                did, f"kannel refused the credentials: {body}", after=60.0, status=code
            )
        if status == 429 or status >= 500:
            return Receipt.retry(
                did,
                f"kannel: {status} {body}",
                after=5.0,
                counts_attempt=status != 429,
                status=code,
            )
        return Receipt.failed(did, f"kannel: {status} {body}", status=code)

    async def health(self) -> ChannelHealth:
        if self._session is None:
            return ChannelHealth(False, "not started")
        try:
            async with self._session.get(self.cfg.url) as resp:
                await resp.read()
                # sendsms without parameters answers 4xx: smsbox is up.
                return ChannelHealth(resp.status < 500, f"smsbox answered {resp.status}")
        except TRANSPORT_ERRORS as exc:
            return ChannelHealth(False, f"smsbox unreachable: {type(exc).__name__}")

    async def parse_callback(self, request: web.Request, body: bytes) -> list[CallbackReceipt]:
        q = request.query
        raw = {k: v for k, v in q.items() if k != "secret"}
        at = _kannel_time(q.get("ts", ""))
        if q.get("kind") == "mo":
            sender = q.get("from", "")
            if not sender:
                raise BadRequest("an SMS reply needs from=%p")
            text = q.get("text", "") or body.decode("utf-8", "replace")
            return [
                CallbackReceipt(
                    state=CallbackState.ACKNOWLEDGED,
                    provider_status="mo",
                    sender=sender,
                    reply=text.strip(),
                    at=at,
                    raw=raw,
                )
            ]
        did = q.get("d", "")
        status = q.get("status", "")
        if not did or not status.isdigit():
            raise BadRequest("a Kannel delivery report needs d=<delivery id> and status=%d")
        state = _DLR_STATES.get(int(status))
        if state is None:
            raise BadRequest(f"unknown Kannel delivery report type {status}")
        answer = q.get("answer", "")
        return [
            CallbackReceipt(
                state=state,
                delivery_id=did,
                provider_id=q.get("fid") or None,
                provider_status=status,
                error=answer or None if state is CallbackState.FAILED else None,
                at=at,
                raw=raw,
            )
        ]


def _kannel_time(ts: str) -> datetime | None:
    return datetime.fromtimestamp(int(ts), UTC) if ts.isdigit() else None
