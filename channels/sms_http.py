"""SMS through a configurable cloud-style HTTP API.

Credentials: see :mod:`warnd_channels.sms` (an API key in ``auth_value_env``
or a signing secret in ``sign_secret_env``).

One request carries up to ``numbers_per_request`` numbers with the same
text; the response maps to a result per number. These APIs do not
deduplicate: a request that timed out after it was sent makes every
number in it ``uncertain`` (never resent blindly), and a 200 whose body
cannot be read does too.

With ``query_url`` set, :meth:`HttpSms.reconcile` asks the provider's
status-query API about such deliveries — by the request id warnd sent
(``reference_field``) and the numbers — and maps its answer per number:
the provider has it (sent, delivered, failed), never took it (sent again,
once), or cannot tell (still in doubt, asked again later).

Delivery reports (``receipt_match``) are matched per request: each names the
request id (warnd's ``reference_field``, or the provider's own from
``result_request_field``) and the number, so dispatch keeps one map entry
per request. ``message_id`` is for providers whose reports carry no request
id: they are matched by the per-number message id (one entry per number).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast
from urllib.parse import urlencode, urlsplit

import orjson
import structlog
from pydantic import Field, SecretStr, field_validator, model_validator

from warnd.channel import (
    Batch,
    CallbackReceipt,
    CallbackState,
    ChannelConfig,
    ChannelContext,
    ChannelHealth,
    Outcome,
    RateLimit,
    Receipt,
    Receipts,
    Target,
    addresses_of,
    delivery_ids_of,
)
from warnd.errors import BadRequest
from warnd.limits import MessageLimits
from warnd.model import Level

from ._answer import CODE, ID, NUMBER, AnswerShape
from ._http import (
    TRANSPORT_ERRORS,
    HttpChannel,
    gather_limited,
    new_pool,
    retry_after,
    transport_receipts,
)
from ._http1 import OriginPool
from ._sms import SMS_LIMITS, SmsConfig, limits_for, plain_numbers, valid_number

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
    result_request_field: str | None = None
    """Where the answer carries the provider's own id of the request (dotted,
    e.g. ``biz_id``), when its receipts name the request by that; ``None``:
    they name it by warnd's ``reference_field``."""
    success_codes: list[str] = Field(default_factory=lambda: ["0", "OK"])
    retry_codes: list[str] = Field(default_factory=list)
    """Per-number codes that mean "try later" (the rest are permanent failures)."""
    receipts_field: str | None = None
    """Webhook: the list of receipts in the body (``None``: the body is the list)."""
    receipt_match: Literal["request", "message_id"] = "request"
    """How a receipt finds its delivery: ``request`` — by the request id it
    carries (``receipt_request_field``) and its number (one map entry per
    request); ``message_id`` — by the per-number message id the send answer
    gave (``receipt_id_field``; one map entry per number), for providers
    whose receipts carry no request id."""
    receipt_request_field: str = "out_id"
    receipt_number_field: str = "phone"
    receipt_id_field: str = "msg_id"
    receipt_status_field: str = "status"
    receipt_delivered: list[str] = Field(default_factory=lambda: ["DELIVRD", "DELIVERED", "0"])
    receipt_time_field: str | None = None
    # -- status query: reconcile deliveries in doubt before any resend
    query_url: str | None = Field(default=None, pattern=r"^https?://")
    """The provider's status-query API; ``None``: deliveries in doubt wait for receipts."""
    query_method: Literal["GET", "POST"] = "POST"
    query_format: Literal["json", "form"] = "json"
    """Body of a POST query (a GET carries the parameters in its URL)."""
    query_reference_field: str | None = "out_id"
    """Parameter carrying the request id warnd sent (``reference_field``);
    ``None``: the provider is asked by numbers alone."""
    query_numbers_field: str | None = "phones"
    """Parameter carrying the numbers (a JSON list, else joined with
    ``numbers_join`` or ``","``); ``None``: by request id alone."""
    query_extra: dict[str, str] = Field(default_factory=dict)
    """Fixed parameters of every query (app id, date …)."""
    query_results_field: str = "results"
    """Where the per-number list is in the answer (dotted; ``""``: the body is the list)."""
    query_number_field: str = "phone"
    query_status_field: str = "status"
    query_id_field: str = "msg_id"
    query_sent: list[str] = Field(
        default_factory=lambda: ["SENT", "SUBMITTED", "ACCEPTED", "PENDING"]
    )
    """Statuses meaning the provider took it (no final report yet)."""
    query_delivered: list[str] = Field(default_factory=lambda: ["DELIVRD", "DELIVERED"])
    query_failed: list[str] = Field(
        default_factory=lambda: ["UNDELIV", "REJECTD", "EXPIRED", "FAILED"]
    )
    query_not_sent: list[str] = Field(default_factory=lambda: ["NOT_FOUND"])
    """Statuses meaning the provider has no such message: it is sent again, once."""
    query_missing: Literal["uncertain", "not_sent"] = "uncertain"
    """A number the answer leaves out: still in doubt (default), or never taken."""

    @field_validator("url")
    @classmethod
    def _send_url(cls, url: str) -> str:
        """What the lean client that posts the sends can reach: a host, a
        valid port, the path and query in ASCII, no credentials or fragment."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"url {url!r} has no host")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"url {url!r} has an invalid port") from None
        if parts.username is not None or parts.password is not None:
            raise ValueError("url holds credentials: give them as auth_value_env")
        if parts.fragment:
            raise ValueError(f"url {url!r} has a fragment (#…): a request sends none")
        if not url.isascii() or any(c in url for c in " \r\n\t"):
            raise ValueError(
                f"url {url!r}: percent-encode its path and query (non-ASCII or blank characters)"
            )
        return url

    @model_validator(mode="after")
    def _query(self) -> HttpSmsConfig:
        if (
            self.receipt_match == "request"
            and self.reference_field is None
            and self.result_request_field is None
        ):
            raise ValueError(
                'receipt_match = "request" needs reference_field or result_request_field'
                ' (the request id receipts name); else use receipt_match = "message_id"'
            )
        if self.query_url is None:
            return self
        if self.query_reference_field is None and self.query_numbers_field is None:
            raise ValueError("query_url needs query_reference_field or query_numbers_field")
        if self.query_reference_field is not None and self.reference_field is None:
            raise ValueError(
                "query_reference_field needs reference_field (the request id warnd sends)"
            )
        return self


_RANK = {Outcome.DELIVERED: 4, Outcome.SENT: 3, Outcome.FAILED: 2, Outcome.RETRY: 1}
"""When the answer lists a number more than once: the provider having it wins."""


def _loads(text: str | bytes) -> Any:
    """JSON by orjson (a send's answer lists up to 1,000 results), else the
    standard library for what orjson refuses but JSON allows (NaN)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _all_sent(
    targets: Sequence[Target], raw: list[Any], code: str, rid: str | None, exact: bool
) -> Receipts | None:
    """One ``Receipts`` for a request whose every number was accepted with
    ``code`` (``raw``: their message ids); ``None`` when an id came out a
    float and the answer must be decoded again, exactly."""
    kinds = set(map(type, raw))
    if float in kinds and not exact:
        return None
    pids = raw if kinds == {str} else [None if p is None else str(p) for p in raw]
    return Receipts(
        delivery_ids_of(targets),
        Outcome.SENT,
        provider_ids=pids,
        provider_status=code,
        request_id=rid,
    )


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
        self.reconciles = self.cfg.query_url is not None
        self.message_id_receipts = self.cfg.receipt_match == "message_id"
        parts = urlsplit(self.cfg.url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._pool: OriginPool | None = None
        self._head = b""
        """The sends' request head when it is the same for every send (no signing)."""
        self._answer = AnswerShape.of(
            self.cfg.results_field,
            self.cfg.result_number_field,
            self.cfg.result_code_field,
            self.cfg.result_id_field,
            self.cfg.result_request_field,
        )

    async def start(self) -> None:
        # Sends go through the lean client (one request of 1,000 numbers costs
        # aiohttp a request and a response object, a header multidict and a
        # timer); status queries keep aiohttp's session.
        await super().start()
        if self._pool is None:
            self._pool = new_pool(self._origin, self.config)
            if self.cfg.sign_secret is None:
                self._head = self._pool.head("POST", self._target, self._send_headers(b""))

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await super().stop()

    async def health(self) -> ChannelHealth:
        if self._pool is None:
            return ChannelHealth(False, "not started")
        return await super().health()

    def limits_for(self, level: Level | None) -> MessageLimits:
        return self.limits

    def rate_cost(self, messages: int) -> int:
        """The provider's limit counts requests, each of up to ``numbers_per_request``."""
        return -(-messages // self.cfg.numbers_per_request)

    # ---------------------------------------------------------------- send
    async def send(self, batch: Batch) -> Sequence[Receipt]:
        if self._session is None:
            raise RuntimeError("HttpSms.send before start()")
        numbers = batch.addresses
        if (
            len(numbers) <= self.cfg.numbers_per_request
            and plain_numbers(numbers)
            and len(set(numbers)) == len(numbers)
        ):
            # The usual batch: plain valid numbers, each once — one request.
            return await self._send_chunk(batch, batch.targets)
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
        numbers = addresses_of(targets)
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

    def _send_headers(self, payload: bytes) -> dict[str, str]:
        ctype = (
            "application/json; charset=utf-8"
            if self.cfg.format == "json"
            else "application/x-www-form-urlencoded"
        )
        return {"Content-Type": ctype, **self._headers(payload)}

    async def _send_chunk(self, batch: Batch, targets: Sequence[Target]) -> Sequence[Receipt]:
        pool = self._pool
        if pool is None:
            raise RuntimeError("send before start()")
        cfg = self.cfg
        ref = secrets.token_hex(8)
        body = self._body(batch, targets, ref)
        payload = orjson.dumps(body) if cfg.format == "json" else urlencode(body).encode()
        head = self._head or pool.head("POST", self._target, self._send_headers(payload))
        try:
            got = await pool.request(head, payload)
            status = got.status
            answer = got.body  # decoded as JSON from bytes; as text only to report
            wait = retry_after({"Retry-After": got.headers.get("retry-after", "")}, 5.0)
        except TRANSPORT_ERRORS as exc:
            log.warning(
                "channel.send_failed",
                channel=self.name,
                numbers=len(targets),
                ref=ref,
                error=type(exc).__name__,
            )
            return transport_receipts(
                targets, exc, idempotent=False, who="sms gateway", reference=ref
            )
        log.info("channel.request", channel=self.name, numbers=len(targets), ref=ref, status=status)
        code = str(status)
        text = answer.decode("utf-8", errors="replace") if status >= 400 else ""
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
        return self._per_number(targets, answer, ref)

    def _per_number(
        self, targets: Sequence[Target], text: str | bytes, ref: str, *, exact: bool = False
    ) -> Sequence[Receipt]:
        """Receipts from the send's answer (``text``).

        The usual answer (every number accepted, in the order sent) is read
        into the few fields it needs (:class:`AnswerShape`). Any other is
        decoded whole: by orjson, which turns an integer past 64 bits into a
        float, and some providers' message ids are that long: an id that
        comes out a float has the answer decoded again, ``exact``ly, by the
        standard library.
        """
        if not exact and self._answer is not None:
            usual = self._usual(targets, text, ref, self._answer)
            if usual is not None:
                return usual
        cfg = self.cfg
        try:
            doc = json.loads(text) if exact else _loads(text)
        except ValueError:
            doc = None
        results = _get(doc, cfg.results_field)
        if not isinstance(results, list):
            # The gateway said 200 but not what it did: it may have sent them all.
            return [
                Receipt.uncertain(
                    t.delivery_id,
                    f"gateway answered 200 without per-number results (ref {ref})",
                    provider_id=ref,
                )
                for t in targets
            ]
        rid: str | None = ref if cfg.reference_field else None
        if cfg.result_request_field is not None:
            got = _get(doc, cfg.result_request_field)
            if type(got) is float and not exact:
                return self._per_number(targets, text, ref, exact=True)
            rid = str(got) if got not in (None, "") else None
        numbers = addresses_of(targets)
        if len(results) == len(numbers):
            fields = (
                itemgetter(cfg.result_number_field),
                itemgetter(cfg.result_code_field),
                itemgetter(cfg.result_id_field),
            )
            fast = self._in_order(targets, results, rid, exact, fields)
            if isinstance(fast, Receipts):
                return fast
            if fast == "exact":
                return self._per_number(targets, text, ref, exact=True)
        by_number: dict[str, dict[str, Any]] = {}
        for item in results:
            if isinstance(item, dict) and item.get(cfg.result_number_field) is not None:
                by_number[str(item[cfg.result_number_field])] = item
        items = [by_number.get(a) for a in numbers]
        if None not in items:
            codes = {str(it.get(cfg.result_code_field, "")) for it in items if it is not None}
            if len(codes) == 1 and (code := codes.pop()) in cfg.success_codes:
                # Every number accepted with the same code: one Receipts for all.
                id_field = cfg.result_id_field
                raw = [None if it is None else it.get(id_field) for it in items]
                whole = _all_sent(targets, raw, code, rid, exact)
                return whole or self._per_number(targets, text, ref, exact=True)
        out: list[Receipt] = []
        for t in targets:
            item = by_number.get(t.address)
            if item is None:
                out.append(
                    Receipt.uncertain(
                        t.delivery_id, f"no result for this number (ref {ref})", provider_id=ref
                    )
                )
                continue
            rcode = str(item.get(cfg.result_code_field, ""))
            msg = str(item.get(cfg.result_message_field, "") or rcode)
            if rcode in cfg.success_codes:
                pid = item.get(cfg.result_id_field)
                if type(pid) is float and not exact:
                    return self._per_number(targets, text, ref, exact=True)
                out.append(
                    Receipt.sent(
                        t.delivery_id,
                        str(pid) if pid is not None else None,
                        status=rcode,
                        request_id=rid,
                    )
                )
            elif rcode in cfg.retry_codes:
                out.append(
                    Receipt.retry(t.delivery_id, f"gateway: {msg}", after=30.0, status=rcode)
                )
            else:
                out.append(Receipt.failed(t.delivery_id, f"gateway: {msg}", status=rcode))
        return out

    def _usual(
        self, targets: Sequence[Target], text: str | bytes, ref: str, shape: AnswerShape
    ) -> Receipts | None:
        """The usual answer's receipts, read through ``shape`` (see
        :meth:`_in_order`). ``None``: not that answer (read it the general way)."""
        cfg = self.cfg
        doc = shape.decode(text)
        if doc is None or not isinstance(doc.results, list) or len(doc.results) != len(targets):
            return None
        rid: str | None = ref if cfg.reference_field else None
        if cfg.result_request_field is not None:
            rid = str(doc.request) if doc.request not in (None, "") else None
        # Integers came out exact: a float id is one the provider wrote so.
        fast = self._in_order(targets, doc.results, rid, True, (NUMBER, CODE, ID))
        return fast if isinstance(fast, Receipts) else None

    def _in_order(
        self,
        targets: Sequence[Target],
        results: list[Any],
        rid: str | None,
        exact: bool,
        fields: tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[Any], Any]],
    ) -> Receipts | str | None:
        """The usual answer, read in one pass: one result per number, in the
        order sent, all accepted with one code. ``fields`` read a result's
        number, code and message id. ``"exact"``: an id came out a float
        (decode again); ``None``: not that answer, read it number by number."""
        number, code_of, id_of = fields
        try:
            if list(map(number, results)) != addresses_of(targets):
                return None
            codes = set(map(code_of, results))
            raw = list(map(id_of, results))
        except (TypeError, KeyError):  # not an object, a field missing, a code a list
            return None
        if len(codes) != 1 or (code := str(codes.pop())) not in self.cfg.success_codes:
            return None
        return _all_sent(targets, raw, code, rid, exact) or "exact"

    # ------------------------------------------------------------ reconcile
    async def reconcile(self, targets: Sequence[Target]) -> list[Receipt]:
        """Ask the status-query API about deliveries in doubt, one query per
        request id (and at most ``numbers_per_request`` numbers)."""
        cfg = self.cfg
        if cfg.query_url is None:
            return await super().reconcile(targets)
        if self._session is None:
            raise RuntimeError("HttpSms.reconcile before start()")
        out: list[Receipt] = []
        by_ref: dict[str | None, list[Target]] = {}
        for t in targets:
            if t.reference is None and cfg.query_reference_field is not None:
                # Asked by numbers alone, the provider would answer about every
                # message those numbers got: not evidence about this one.
                out.append(
                    Receipt.uncertain(t.delivery_id, "no request id to query the gateway by")
                )
            else:
                by_ref.setdefault(t.reference, []).append(t)
        queries = [
            (ref, chunk)
            for ref, group in by_ref.items()
            for chunk in _chunks_unique(group, cfg.numbers_per_request)
        ]
        out += await gather_limited(
            queries, lambda q: self._query(q[0], q[1]), self.config.max_connections
        )
        return out

    def _query_request(self, ref: str | None, targets: Sequence[Target]) -> dict[str, Any]:
        """``params`` (GET) or ``data`` + headers (POST) of one status query."""
        cfg = self.cfg
        numbers = [t.address for t in targets]
        fields: dict[str, Any] = dict(cfg.query_extra)
        if cfg.query_reference_field is not None and ref is not None:
            fields[cfg.query_reference_field] = ref
        as_json = cfg.query_method == "POST" and cfg.query_format == "json"
        if cfg.query_numbers_field is not None:
            join = cfg.numbers_join
            if join is None and not as_json:
                join = ","
            fields[cfg.query_numbers_field] = numbers if join is None else join.join(numbers)

        if cfg.query_method == "GET":
            query = urlencode(fields)
            return {"params": fields, "headers": self._headers(query.encode())}
        if as_json:
            payload = orjson.dumps(fields)
            ctype = "application/json; charset=utf-8"
        else:
            payload = urlencode(fields).encode()
            ctype = "application/x-www-form-urlencoded"
        return {"data": payload, "headers": {"Content-Type": ctype, **self._headers(payload)}}

    async def _query(self, ref: str | None, targets: list[Target]) -> list[Receipt]:
        cfg = self.cfg
        if cfg.query_url is None or self._session is None:
            raise RuntimeError("HttpSms._query without query_url or before start()")

        def doubt(why: str) -> list[Receipt]:
            return [Receipt.uncertain(t.delivery_id, why, provider_id=ref) for t in targets]

        try:
            async with self._session.request(
                cfg.query_method, cfg.query_url, **self._query_request(ref, targets)
            ) as resp:
                status = resp.status
                text = await resp.text(errors="replace")
        except TRANSPORT_ERRORS as exc:
            log.warning(
                "channel.query_failed", channel=self.name, ref=ref, error=type(exc).__name__
            )
            return doubt(f"status query failed: {type(exc).__name__}")
        if not 200 <= status < 300:
            log.warning("channel.query_failed", channel=self.name, ref=ref, status=status)
            return doubt(f"status query answered {status}")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        results = _get(doc, cfg.query_results_field)
        if not isinstance(results, list):
            return doubt("status query answer has no per-number results")
        items: dict[str, list[dict[str, Any]]] = {}
        for item in results:
            if isinstance(item, dict) and item.get(cfg.query_number_field) is not None:
                items.setdefault(str(item[cfg.query_number_field]), []).append(item)
        out: list[Receipt] = []
        for t in targets:
            answers = [self._query_result(t, item, ref) for item in items.get(t.address, [])]
            r = max(answers, key=lambda a: _RANK.get(a.outcome, 0), default=None)
            if r is None:
                if cfg.query_missing == "not_sent":
                    r = Receipt.retry(t.delivery_id, "the gateway has no record of it", after=0)
                else:
                    r = Receipt.uncertain(
                        t.delivery_id, "status query does not list this number", provider_id=ref
                    )
            out.append(r)
        log.info(
            "channel.reconciled",
            channel=self.name,
            ref=ref,
            numbers=len(targets),
            **{o.value: sum(1 for r in out if r.outcome is o) for o in {r.outcome for r in out}},
        )
        return out

    def _query_result(self, t: Target, item: dict[str, Any], ref: str | None) -> Receipt:
        cfg = self.cfg
        did = t.delivery_id
        status = str(item.get(cfg.query_status_field, ""))
        pid = item.get(cfg.query_id_field)
        mid = str(pid) if pid not in (None, "") else None
        # The request warnd asked about is what later receipts name (warnd's id).
        rid = ref if cfg.result_request_field is None else None
        if status in cfg.query_delivered:
            return Receipt.delivered(did, mid, status=status, request_id=rid)
        if status in cfg.query_sent:
            return Receipt.sent(did, mid, status=status, request_id=rid)
        if status in cfg.query_failed:
            return Receipt.failed(did, f"gateway: {status}", status=status)
        if status in cfg.query_not_sent:
            return Receipt.retry(
                did, f"the gateway has no record of it ({status})", after=0, status=status
            )
        return Receipt.uncertain(did, f"status query: unknown status {status!r}", provider_id=ref)

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
        by_request = cfg.receipt_match == "request"
        need = (
            (cfg.receipt_request_field, cfg.receipt_number_field)
            if by_request
            else (cfg.receipt_id_field,)
        )
        out: list[CallbackReceipt] = []
        for item in items:
            if not isinstance(item, dict) or any(item.get(f) in (None, "") for f in need):
                names = " and ".join(repr(f) for f in need)
                raise BadRequest(f"a status item without {names}: {item!r}"[:300])
            status = str(item.get(cfg.receipt_status_field, ""))
            ok = status in cfg.receipt_delivered
            mid = item.get(cfg.receipt_id_field)
            hidden = {cfg.result_number_field, cfg.receipt_number_field}
            out.append(
                CallbackReceipt(
                    state=CallbackState.DELIVERED if ok else CallbackState.FAILED,
                    provider_id=str(mid) if mid not in (None, "") else None,
                    provider_status=status,
                    error=None if ok else status,
                    raw={k: str(v) for k, v in item.items() if k not in hidden},
                    request_id=str(item[cfg.receipt_request_field]) if by_request else None,
                    address=str(item[cfg.receipt_number_field]) if by_request else None,
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
