"""SMS through a configurable cloud-style HTTP API.

Credentials: see :mod:`warnd_channels.sms` (an API key in ``auth_value_env``
or a signing secret in ``sign_secret_env``).

One request carries up to ``numbers_per_request`` numbers with the same
text; the response maps to a result per number. These APIs do not
deduplicate: a request that timed out after it was sent makes every
number in it ``uncertain`` (never resent blindly), and a 200 whose body
cannot be read does too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import structlog
from pydantic import Field, SecretStr

from warnd.channel import (
    Batch,
    CallbackReceipt,
    CallbackState,
    ChannelConfig,
    ChannelContext,
    RateLimit,
    Receipt,
    Target,
)
from warnd.errors import BadRequest
from warnd.limits import MessageLimits
from warnd.model import Level

from ._http import (
    TRANSPORT_ERRORS,
    HttpChannel,
    gather_limited,
    retry_after,
    transport_receipts,
)
from ._sms import SMS_LIMITS, SmsConfig, limits_for, valid_number

if TYPE_CHECKING:
    from aiohttp import web

log = structlog.get_logger("warnd.channels.sms")


class HttpSmsConfig(SmsConfig):
    provider: Literal["http"] = "http"
    url: str = Field(pattern=r"^https?://")
    format: Literal["json", "form"] = "json"
    auth_header: str = "Authorization"
    auth_value: SecretStr | None = None
    """The whole header value, e.g. ``Bearer <key>`` (from ``auth_value_env``)."""
    sign_secret: SecretStr | None = None
    """HMAC-SHA256 signing: ``hex(hmac(secret, timestamp + "\\n" + nonce + "\\n" + body))``."""
    sign_header: str = "X-Signature"
    timestamp_header: str = "X-Timestamp"
    nonce_header: str = "X-Nonce"
    numbers_per_request: int = Field(default=1000, ge=1, le=10_000)
    numbers_field: str = "phones"
    numbers_join: str | None = None
    """``None``: a JSON list; else the numbers joined with this (e.g. ``","``)."""
    text_field: str = "content"
    sender_field: str = "sign_name"
    reference_field: str | None = "out_id"
    """A request id warnd makes up, for the provider's query API and support."""
    extra: dict[str, str] = Field(default_factory=dict)
    """Fixed fields of every request (template code, app id …)."""
    results_field: str = "results"
    result_number_field: str = "phone"
    result_code_field: str = "code"
    result_id_field: str = "msg_id"
    result_message_field: str = "message"
    success_codes: list[str] = Field(default_factory=lambda: ["0", "OK"])
    retry_codes: list[str] = Field(default_factory=list)
    """Per-number codes that mean "try later" (the rest are permanent failures)."""
    receipts_field: str | None = None
    """Webhook: the list of receipts in the body (``None``: the body is the list)."""
    receipt_id_field: str = "msg_id"
    receipt_status_field: str = "status"
    receipt_delivered: list[str] = Field(default_factory=lambda: ["DELIVRD", "DELIVERED", "0"])
    receipt_time_field: str | None = None


def _get(doc: Any, path: str) -> Any:
    for part in path.split(".") if path else []:
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


class HttpSms(HttpChannel):
    name = "sms"
    provider = "http"
    Config: ClassVar[type[ChannelConfig]] = HttpSmsConfig
    limits = SMS_LIMITS
    batch_size = 1000
    rate = RateLimit(20, 1.0)  # requests per second; each carries up to 1,000 numbers
    async_receipts = True
    idempotent = False

    def __init__(self, config: ChannelConfig, context: ChannelContext | None = None) -> None:
        super().__init__(config, context)
        self.cfg = cast(HttpSmsConfig, config)
        self.limits = limits_for(self.cfg)
        if config.batch_size is None:
            self.batch_size = self.cfg.numbers_per_request

    def limits_for(self, level: Level | None) -> MessageLimits:
        return self.limits

    # ---------------------------------------------------------------- send
    async def send(self, batch: Batch) -> list[Receipt]:
        if self._session is None:
            raise RuntimeError("HttpSms.send before start()")
        receipts: list[Receipt] = []
        good: list[Target] = []
        for t in batch.targets:
            if valid_number(t.address):
                good.append(t)
            else:
                receipts.append(Receipt.failed(t.delivery_id, "not a phone number"))
        # One request names each number once: a second delivery to the same
        # number goes in another request, so results map back unambiguously.
        chunks = _chunks_unique(good, self.cfg.numbers_per_request)
        receipts += await gather_limited(
            chunks, lambda c: self._send_chunk(batch, c), self.config.max_connections
        )
        return receipts

    def _body(self, batch: Batch, targets: Sequence[Target], ref: str) -> dict[str, Any]:
        cfg = self.cfg
        numbers = [t.address for t in targets]
        body: dict[str, Any] = dict(cfg.extra)
        body[cfg.numbers_field] = (
            numbers if cfg.numbers_join is None else cfg.numbers_join.join(numbers)
        )
        body[cfg.text_field] = batch.text
        if cfg.sender:
            body[cfg.sender_field] = cfg.sender
        if cfg.reference_field:
            body[cfg.reference_field] = ref
        return body

    def _headers(self, payload: bytes) -> dict[str, str]:
        cfg = self.cfg
        headers: dict[str, str] = {}
        if cfg.auth_value is not None:
            headers[cfg.auth_header] = cfg.auth_value.get_secret_value()
        if cfg.sign_secret is not None:
            ts, nonce = str(int(time.time())), secrets.token_hex(8)
            msg = ts.encode() + b"\n" + nonce.encode() + b"\n" + payload
            sig = hmac.new(cfg.sign_secret.get_secret_value().encode(), msg, hashlib.sha256)
            headers |= {
                cfg.timestamp_header: ts,
                cfg.nonce_header: nonce,
                cfg.sign_header: sig.hexdigest(),
            }
        return headers

    async def _send_chunk(self, batch: Batch, targets: list[Target]) -> list[Receipt]:
        if self._session is None:
            raise RuntimeError("send before start()")
        cfg = self.cfg
        ref = secrets.token_hex(8)
        body = self._body(batch, targets, ref)
        if cfg.format == "json":
            payload = json.dumps(body, ensure_ascii=False).encode()
            ctype = "application/json; charset=utf-8"
        else:
            from urllib.parse import urlencode

            payload = urlencode(body).encode()
            ctype = "application/x-www-form-urlencoded"
        headers = {"Content-Type": ctype, **self._headers(payload)}
        try:
            async with self._session.post(cfg.url, data=payload, headers=headers) as resp:
                status = resp.status
                text = await resp.text(errors="replace")
                wait = retry_after(resp.headers, 5.0)
        except TRANSPORT_ERRORS as exc:
            log.warning(
                "channel.send_failed",
                channel=self.name,
                numbers=len(targets),
                ref=ref,
                error=type(exc).__name__,
            )
            return transport_receipts(targets, exc, idempotent=False, who="sms gateway")
        log.info("channel.request", channel=self.name, numbers=len(targets), ref=ref, status=status)
        code = str(status)
        if status == 429:
            return [
                Receipt.retry(
                    t.delivery_id,
                    "gateway throttled (429)",
                    after=wait,
                    counts_attempt=False,
                    status=code,
                )
                for t in targets
            ]
        if status >= 500:
            return [
                Receipt.retry(
                    t.delivery_id, f"gateway error {status}: {text[:200]}", after=wait, status=code
                )
                for t in targets
            ]
        if status in (401, 403):
            return [
                Receipt.retry(
                    t.delivery_id,
                    f"gateway refused the credentials ({status})",
                    after=60.0,
                    status=code,
                )
                for t in targets
            ]
        if status >= 400:
            return [
                Receipt.failed(
                    t.delivery_id,
                    f"gateway refused the request ({status}): {text[:200]}",
                    status=code,
                )
                for t in targets
            ]
        return self._per_number(targets, text, ref)

    def _per_number(self, targets: list[Target], text: str, ref: str) -> list[Receipt]:
        cfg = self.cfg
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        results = _get(doc, cfg.results_field)
        if not isinstance(results, list):
            # The gateway said 200 but not what it did: it may have sent them all.
            return [
                Receipt.uncertain(
                    t.delivery_id, f"gateway answered 200 without per-number results (ref {ref})"
                )
                for t in targets
            ]
        by_number: dict[str, dict[str, Any]] = {}
        for item in results:
            if isinstance(item, dict) and item.get(cfg.result_number_field) is not None:
                by_number[str(item[cfg.result_number_field])] = item
        out: list[Receipt] = []
        for t in targets:
            item = by_number.get(t.address)
            if item is None:
                out.append(
                    Receipt.uncertain(t.delivery_id, f"no result for this number (ref {ref})")
                )
                continue
            rcode = str(item.get(cfg.result_code_field, ""))
            msg = str(item.get(cfg.result_message_field, "") or rcode)
            if rcode in cfg.success_codes:
                pid = item.get(cfg.result_id_field)
                out.append(
                    Receipt.sent(t.delivery_id, str(pid) if pid is not None else None, status=rcode)
                )
            elif rcode in cfg.retry_codes:
                out.append(
                    Receipt.retry(t.delivery_id, f"gateway: {msg}", after=30.0, status=rcode)
                )
            else:
                out.append(Receipt.failed(t.delivery_id, f"gateway: {msg}", status=rcode))
        return out

    # ------------------------------------------------------------ receipts
    async def parse_callback(self, request: web.Request, body: bytes) -> list[CallbackReceipt]:
        cfg = self.cfg
        try:
            doc = json.loads(body)
        except ValueError:
            raise BadRequest("the SMS gateway's status callback is not JSON") from None
        items = doc if cfg.receipts_field is None else _get(doc, cfg.receipts_field)
        if not isinstance(items, list):
            raise BadRequest(f"the status callback has no list at {cfg.receipts_field or '(body)'}")
        out: list[CallbackReceipt] = []
        for item in items:
            if not isinstance(item, dict) or item.get(cfg.receipt_id_field) is None:
                raise BadRequest(f"a status item without {cfg.receipt_id_field!r}: {item!r}"[:300])
            status = str(item.get(cfg.receipt_status_field, ""))
            ok = status in cfg.receipt_delivered
            out.append(
                CallbackReceipt(
                    state=CallbackState.DELIVERED if ok else CallbackState.FAILED,
                    provider_id=str(item[cfg.receipt_id_field]),
                    provider_status=status,
                    error=None if ok else status,
                    raw={k: str(v) for k, v in item.items() if k != cfg.result_number_field},
                )
            )
        return out


def _chunks_unique(targets: list[Target], size: int) -> list[list[Target]]:
    """Chunks of at most ``size`` targets, no number twice in one chunk."""
    chunks: list[list[Target]] = []
    numbers: list[set[str]] = []
    for t in targets:
        for chunk, nums in zip(chunks, numbers, strict=True):
            if len(chunk) < size and t.address not in nums:
                chunk.append(t)
                nums.add(t.address)
                break
        else:
            chunks.append([t])
            numbers.append({t.address})
    return chunks
