"""The channel contract: what dispatch hands a channel, and what it gets back.

A channel plugin is a :class:`Channel` subclass registered in the
``warnd.channels`` entry-point group (see :mod:`warnd.channels`). It
declares itself in class attributes, apprise-style, and is async from the
start::

    class PagerChannel(Channel):
        name = "pager"
        Config = PagerConfig             # pydantic, secrets as SecretStr
        limits = MessageLimits(LengthUnit.CHARS, max_length=160)
        batch_size = 100
        rate = RateLimit(50, 1.0)
        async_receipts = False

        async def send(self, batch: Batch) -> list[Receipt]: ...

A channel with several providers (``sms``: ``kannel`` and ``http``) is a
*family* class whose ``providers`` map each provider name to a concrete
subclass; every family also accepts ``provider = "sandbox"``.

Delivery outcomes are values, faults are exceptions: :meth:`Channel.send`
returns exactly one :class:`Receipt` per :class:`Target` of the batch, in
any order (or one :class:`Receipts` for all of them), and raises only for
bugs and bad configuration. Dispatch hands the targets as columns
(:class:`Targets`, :attr:`Batch.addresses`): a batching channel need not
make an object per recipient. The one
asynchronous receipt path is :meth:`Channel.parse_callback`, mounted by
the receipts route at ``/v1/receipts/{channel}``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, overload

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from warnd.errors import ConfigError
from warnd.limits import LengthUnit, MessageLimits
from warnd.model import Level, MsgType

if TYPE_CHECKING:
    from aiohttp import web
    from redis.asyncio import Redis

    from warnd.keys import Keys

__all__ = [
    "Batch",
    "CallbackReceipt",
    "CallbackState",
    "Channel",
    "ChannelConfig",
    "ChannelContext",
    "ChannelHealth",
    "DeliveryIds",
    "Outcome",
    "RateLimit",
    "Receipt",
    "Receipts",
    "Target",
    "Targets",
    "addresses_of",
    "delivery_ids_of",
    "mask_address",
]


# ------------------------------------------------------------------ values


class Target(NamedTuple):
    """One endpoint of a batch: the delivery it belongs to and where it goes.

    A named tuple, not a frozen dataclass: dispatch makes one per delivery,
    and a tuple is made three times faster.
    """

    delivery_id: str
    """warnd's id of the (alert, endpoint) delivery; echoed in the receipt."""
    address: str
    """Phone number, robot key or webhook URL, mailbox, board id — per channel."""
    name: str = ""
    """Display name (the email ``To:`` name), when known."""
    reference: str | None = None
    """Only for :meth:`Channel.reconcile`: what the provider knows an earlier send
    in doubt by (the ``provider_id`` its ``uncertain`` receipt carried, e.g. the
    request id warnd gave a cloud SMS API), when there was one."""

    def __repr__(self) -> str:
        ref = f", reference={self.reference!r}" if self.reference else ""
        return (
            f"Target(delivery_id={self.delivery_id!r}, address={mask_address(self.address)!r}{ref})"
        )


class DeliveryIds(Sequence[str]):
    """The delivery ids of a batch's entries, ``prefix`` + offset, each made
    when it is read: dispatch hands a thousand of them to a channel that
    mostly gives them back untouched (one :class:`Receipts` for the request),
    and then compares them with what it handed out (the same object: no id
    is made at all).

    Equal to any sequence of the same ids.
    """

    __slots__ = ("offsets", "prefix")

    def __init__(self, prefix: str, offsets: Sequence[int]) -> None:
        self.prefix = prefix
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> DeliveryIds: ...
    def __getitem__(self, i: int | slice) -> str | DeliveryIds:
        if isinstance(i, slice):
            return DeliveryIds(self.prefix, self.offsets[i])
        return f"{self.prefix}{self.offsets[i]}"

    def __iter__(self) -> Iterator[str]:
        return map(self.prefix.__add__, map(str, self.offsets))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, DeliveryIds):
            return self.prefix == other.prefix and list(self.offsets) == list(other.offsets)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(map(str.__eq__, self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DeliveryIds({self.prefix!r}, {len(self)} offsets)"


class Targets(Sequence[Target]):
    """The targets of a batch as two columns: how dispatch hands them to a channel.

    Indexing and iterating make a :class:`Target` per item, so a channel can
    treat it as any sequence of targets; a channel that only needs the
    columns reads :attr:`Batch.delivery_ids` and :attr:`Batch.addresses` and
    makes none (a thousand-number SMS request needs no object per number).
    """

    __slots__ = ("addresses", "delivery_ids")

    def __init__(self, delivery_ids: Sequence[str], addresses: list[str]) -> None:
        if len(delivery_ids) != len(addresses):
            raise ValueError("Targets: one address per delivery id")
        self.delivery_ids = delivery_ids
        self.addresses = addresses

    def __len__(self) -> int:
        return len(self.delivery_ids)

    @overload
    def __getitem__(self, i: int) -> Target: ...
    @overload
    def __getitem__(self, i: slice) -> Targets: ...
    def __getitem__(self, i: int | slice) -> Target | Targets:
        if isinstance(i, slice):
            return Targets(self.delivery_ids[i], self.addresses[i])
        return Target(self.delivery_ids[i], self.addresses[i])

    def __iter__(self) -> Iterator[Target]:
        return map(Target, self.delivery_ids, self.addresses)

    def __repr__(self) -> str:
        return f"Targets({len(self)} targets)"


@dataclass(frozen=True, slots=True)
class Batch:
    """The rendered message of one variant, and the endpoints that get it.

    Rendering fills the fields the channel's limits ask for: ``text``
    always; ``subject`` and ``html`` for email; ``lines`` for boards.
    ``markdown`` says ``text`` is markdown (WeChat Work, when
    :meth:`Channel.limits_for` the level says so). ``targets`` is any
    sequence of :class:`Target` (dispatch gives :class:`Targets`).
    """

    targets: Sequence[Target]
    text: str
    subject: str = ""
    html: str | None = None
    lines: tuple[str, ...] = ()
    markdown: bool = False
    level: Level | None = None
    alert_id: str = ""
    identifier: str = ""
    """The CAP identifier of the alert (shown in headers, board payloads)."""
    msg_type: MsgType = MsgType.ALERT
    expires: datetime | None = None
    language: str = "zh-Hans"
    shortened: bool = False
    """Rendering had to cut the message to the channel's limits."""

    @property
    def delivery_ids(self) -> Sequence[str]:
        """Each target's delivery id, in order (see :func:`delivery_ids_of`)."""
        return delivery_ids_of(self.targets)

    @property
    def addresses(self) -> list[str]:
        """Each target's address, in order (see :func:`addresses_of`)."""
        return addresses_of(self.targets)


def delivery_ids_of(targets: Sequence[Target]) -> Sequence[str]:
    """The delivery ids of ``targets`` in order; no object per target for :class:`Targets`."""
    if isinstance(targets, Targets):
        return targets.delivery_ids
    return [t.delivery_id for t in targets]


def addresses_of(targets: Sequence[Target]) -> list[str]:
    """The addresses of ``targets`` in order; no object per target for :class:`Targets`."""
    if isinstance(targets, Targets):
        return targets.addresses
    return [t.address for t in targets]


class Outcome(StrEnum):
    SENT = "sent"
    """The provider accepted it (its message id in ``provider_id``); not yet delivered."""
    DELIVERED = "delivered"
    """The channel knows synchronously that it reached the recipient."""
    RETRY = "retry"
    """Temporary failure: try again after ``retry_after`` seconds."""
    FAILED = "failed"
    """Permanent failure: ``error`` says what the provider said. Do not retry."""
    UNCERTAIN = "uncertain"
    """The provider may or may not have taken it (timeout on a provider that
    does not deduplicate): reconcile from receipts or the provider's query API
    before any resend. ``provider_id`` is what the query API knows it by."""


class Receipt(NamedTuple):
    """What happened to one target of a batch. Build with the class methods.

    A named tuple (immutable, cheap to make): a channel returns one per target.
    """

    delivery_id: str
    outcome: Outcome
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    counts_attempt: bool = True
    """``False`` for throttling (429, a robot's minute window): it does not
    use up the delivery's retry budget."""
    provider_status: str | None = None
    """The provider's own code (HTTP status, errcode, SMTP reply code)."""
    request_id: str | None = None
    """The request that carried it, as the provider's asynchronous receipts
    name it (a cloud SMS API's request id): receipts are matched per request."""

    @classmethod
    def sent(
        cls,
        delivery_id: str,
        provider_id: str | None = None,
        *,
        status: str | None = None,
        request_id: str | None = None,
    ) -> Receipt:
        return cls(
            delivery_id,
            Outcome.SENT,
            provider_id=provider_id,
            provider_status=status,
            request_id=request_id,
        )

    @classmethod
    def delivered(
        cls,
        delivery_id: str,
        provider_id: str | None = None,
        *,
        status: str | None = None,
        request_id: str | None = None,
    ) -> Receipt:
        return cls(
            delivery_id,
            Outcome.DELIVERED,
            provider_id=provider_id,
            provider_status=status,
            request_id=request_id,
        )

    @classmethod
    def retry(
        cls,
        delivery_id: str,
        error: str,
        *,
        after: float = 0.0,
        counts_attempt: bool = True,
        status: str | None = None,
    ) -> Receipt:
        return cls(
            delivery_id,
            Outcome.RETRY,
            error=error,
            retry_after=max(0.0, after),
            counts_attempt=counts_attempt,
            provider_status=status,
        )

    @classmethod
    def failed(cls, delivery_id: str, error: str, *, status: str | None = None) -> Receipt:
        return cls(delivery_id, Outcome.FAILED, error=error, provider_status=status)

    @classmethod
    def uncertain(cls, delivery_id: str, error: str, *, provider_id: str | None = None) -> Receipt:
        return cls(delivery_id, Outcome.UNCERTAIN, provider_id=provider_id, error=error)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"delivery_id": self.delivery_id, "outcome": self.outcome.value}
        for key in ("provider_id", "error", "retry_after", "provider_status", "request_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.outcome is Outcome.RETRY:
            out["counts_attempt"] = self.counts_attempt
        return out


class Receipts(Sequence[Receipt]):
    """One outcome for every target of a batch, as columns.

    The bulk form of ``[Receipt(i, outcome, p) for i, p in zip(ids, provider_ids)]``:
    a channel whose provider answered for the whole request (every number
    accepted, or the whole request throttled) returns this instead of one
    receipt per target, and dispatch records it without looking at each.
    Indexing and iterating make the :class:`Receipt` of an item; it compares
    equal to any sequence of the same receipts.
    """

    __slots__ = (
        "counts_attempt",
        "delivery_ids",
        "error",
        "outcome",
        "provider_ids",
        "provider_status",
        "request_id",
        "retry_after",
    )

    def __init__(
        self,
        delivery_ids: Sequence[str],
        outcome: Outcome,
        *,
        provider_ids: Sequence[str | None] | None = None,
        error: str | None = None,
        retry_after: float | None = None,
        counts_attempt: bool = True,
        provider_status: str | None = None,
        request_id: str | None = None,
    ) -> None:
        if provider_ids is not None and len(provider_ids) != len(delivery_ids):
            raise ValueError("Receipts: one provider id per delivery id")
        self.delivery_ids = delivery_ids
        self.outcome = outcome
        self.provider_ids = provider_ids
        self.error = error
        self.retry_after = retry_after
        self.counts_attempt = counts_attempt
        self.provider_status = provider_status
        self.request_id = request_id

    def __len__(self) -> int:
        return len(self.delivery_ids)

    def _one(self, delivery_id: str, provider_id: str | None) -> Receipt:
        return Receipt(
            delivery_id,
            self.outcome,
            provider_id,
            self.error,
            self.retry_after,
            self.counts_attempt,
            self.provider_status,
            self.request_id,
        )

    @overload
    def __getitem__(self, i: int) -> Receipt: ...
    @overload
    def __getitem__(self, i: slice) -> list[Receipt]: ...
    def __getitem__(self, i: int | slice) -> Receipt | list[Receipt]:
        if isinstance(i, slice):
            return list(self)[i]
        pid = self.provider_ids[i] if self.provider_ids is not None else None
        return self._one(self.delivery_ids[i], pid)

    def __iter__(self) -> Iterator[Receipt]:
        pids = self.provider_ids if self.provider_ids is not None else [None] * len(self)
        return map(self._one, self.delivery_ids, pids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # a mutable-looking sequence, like list

    def __repr__(self) -> str:
        return f"Receipts({len(self)} x {self.outcome.value})"


class CallbackState(StrEnum):
    ACCEPTED = "accepted"
    """Interim: the carrier/SMSC took it (Kannel DLR 8, 4). Not final."""
    DELIVERED = "delivered"
    FAILED = "failed"
    ACKNOWLEDGED = "acknowledged"
    """The recipient confirmed (a board's ack, an SMS reply)."""

    @property
    def final(self) -> bool:
        return self is not CallbackState.ACCEPTED


@dataclass(frozen=True, slots=True)
class CallbackReceipt:
    """One asynchronous receipt parsed from a provider's callback.

    It names its delivery by warnd's ``delivery_id`` (carried in the
    callback URL), by the request that carried it and its ``address``
    (``request_id`` + number: a cloud SMS API's delivery report), or by the
    ``provider_id`` the send receipt recorded; an SMS reply names none of
    them and carries ``sender`` and ``reply`` instead.
    """

    state: CallbackState
    delivery_id: str | None = None
    provider_id: str | None = None
    provider_status: str = ""
    error: str | None = None
    at: datetime | None = None
    sender: str | None = None
    reply: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict)
    request_id: str | None = None
    address: str | None = None
    """The recipient the receipt is about (with ``request_id``)."""

    def __repr__(self) -> str:
        sender = mask_address(self.sender) if self.sender else None
        return (
            f"CallbackReceipt(state={self.state.value!r}, delivery_id={self.delivery_id!r}, "
            f"provider_id={self.provider_id!r}, provider_status={self.provider_status!r}, "
            f"sender={sender!r})"
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state.value}
        keys = ("delivery_id", "request_id", "provider_id", "provider_status", "error", "reply")
        for key in keys:
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.address:
            out["address"] = mask_address(self.address)
        if self.sender:
            out["sender"] = mask_address(self.sender)
        if self.at is not None:
            out["at"] = self.at.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``count`` messages per ``per`` seconds, per ``scope``.

    ``channel``: the whole channel instance (an SMS account's TPS);
    ``address``: each endpoint separately (a WeChat Work robot's 20/min).
    """

    count: int
    per: float = 1.0
    scope: Literal["channel", "address"] = "channel"

    @property
    def per_second(self) -> float:
        return self.count / self.per


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    ok: bool
    detail: str = ""


ReceiptCallback = Callable[[str, Sequence["CallbackReceipt"]], Awaitable[None]]
"""``callback(channel_name, receipts)``."""


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """What a channel instance may use from the process that runs it."""

    redis: Redis | None = None
    """Shared state across processes (rate windows, the sandbox's record)."""
    keys: Keys | None = None
    receipts_url: str | None = None
    """Base URL of warnd's receipts endpoint as the provider reaches it,
    e.g. ``http://warnd.internal:8640/v1/receipts``; the channel appends
    ``/{name}`` and its own authentication."""
    base_dir: Path | None = None
    """Where relative paths in the channel's config are resolved."""
    on_receipts: ReceiptCallback | None = None
    """For receipts a channel gets over its own connection (a board's MQTT
    ack after :meth:`Channel.send` returned): hand them to the same sink as
    the receipts endpoint."""

    def path(self, value: str) -> Path:
        """A file named in a channel's configuration (a CA bundle): relative
        to ``base_dir`` unless absolute."""
        p = Path(value)
        return p if p.is_absolute() or self.base_dir is None else self.base_dir / p


# ------------------------------------------------------------------ config


class ChannelConfig(BaseModel):
    """Options every channel takes; providers extend it.

    Secrets are ``SecretStr`` fields; the TOML never holds them, it names
    where they are: ``<field>_env = "VAR"`` or ``<field>_file = "path"``
    (see :func:`resolve_secrets`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    timeout: float = Field(default=10.0, gt=0, le=300)
    """Seconds for each network call (connect + request + response)."""
    batch_size: int | None = Field(default=None, ge=1, le=10_000)
    """Override the provider's batch size (e.g. a gateway's smaller limit)."""
    rate_count: int | None = Field(default=None, ge=1)
    rate_per: float = Field(default=1.0, gt=0)
    """Override the provider's rate: ``rate_count`` messages (requests, for a
    provider that sends many numbers in one) per ``rate_per`` s."""
    max_connections: int = Field(default=10, ge=1, le=1000)
    receipt_secret: SecretStr | None = None
    """Authenticates this channel's callbacks at ``/v1/receipts/{name}``."""


# ------------------------------------------------------------------ channel


class Channel:
    """Base of every channel plugin (and of each provider of a family).

    Class attributes declare the channel; an instance may refine them from
    its configuration (``batch_size``, ``rate``, ``limits``).
    """

    name: str = ""
    """The channel name endpoints use (``sms``, ``wechat`` …)."""
    provider: str = ""
    Config: ClassVar[type[ChannelConfig]] = ChannelConfig
    providers: ClassVar[Mapping[str, type[Channel]]] = {}
    """Family classes only: provider name → concrete class."""
    limits: MessageLimits = MessageLimits(LengthUnit.CHARS)
    batch_size: int = 1
    rate: RateLimit = RateLimit(10, 1.0)
    async_receipts: bool = False
    message_id_receipts: bool = True
    """With ``async_receipts``: the receipts name a send by the provider's
    per-message id, so dispatch keeps a message id → delivery id map. ``False``
    when they name the request that carried it (one map entry per request)."""
    idempotent: bool = True
    """``False`` when the provider does not deduplicate a resent request,
    so a timeout yields ``uncertain`` rather than ``retry``."""
    reconciles: bool = False
    """``True`` when :meth:`reconcile` really asks the provider (a status-query
    API): dispatch then queries deliveries left ``uncertain``, and resends only
    what the provider says it never took."""
    secret_fields: ClassVar[tuple[str, ...]] = ()
    """Config fields that are secrets (found automatically from SecretStr)."""

    def __init__(self, config: ChannelConfig, context: ChannelContext | None = None) -> None:
        self.config = config
        self.context = context or ChannelContext()
        self.timeout = config.timeout
        if config.batch_size is not None:
            self.batch_size = config.batch_size
        if config.rate_count is not None:
            self.rate = RateLimit(config.rate_count, config.rate_per, self.rate.scope)

    # ---------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open pooled connections. Called once before the first send."""

    async def stop(self) -> None:
        """Close everything :meth:`start` opened. Safe to call twice."""

    async def health(self) -> ChannelHealth:
        return ChannelHealth(ok=True)

    # ---------------------------------------------------------- sending
    def rate_cost(self, messages: int) -> int:
        """Tokens of :attr:`rate` (``scope = "channel"``) that sending
        ``messages`` takes: one each, unless one request carries many (then
        the provider's limit counts requests)."""
        return messages

    def limits_for(self, level: Level | None) -> MessageLimits:
        """The limits rendering must respect for a message of this level."""
        return self.limits

    async def send(self, batch: Batch) -> Sequence[Receipt]:
        """Send one rendered message to every target of the batch.

        Returns exactly one receipt per target: a list of :class:`Receipt`,
        or :class:`Receipts` when one outcome holds for all of them. Never
        raises for a delivery outcome (timeouts, refusals, throttling are
        receipts).
        """
        raise NotImplementedError

    # ---------------------------------------------------------- receipts
    def callback_path(self) -> str:
        return f"/v1/receipts/{self.name}"

    def callback_url(self, **params: str) -> str | None:
        """The URL a provider calls back, with this channel's secret in it."""
        from urllib.parse import urlencode

        base = self.context.receipts_url
        if not base:
            return None
        query = dict(params)
        if self.config.receipt_secret is not None:
            query = {"secret": self.config.receipt_secret.get_secret_value(), **query}
        url = f"{base.rstrip('/')}/{self.name}"
        return f"{url}?{urlencode(query, safe='%')}" if query else url

    def authenticate_callback(self, request: web.Request, body: bytes) -> bool:
        """Whether a callback really comes from this channel's provider.

        The default compares the ``secret`` query parameter (or the
        ``X-Warnd-Secret`` header) with ``receipt_secret`` in constant time;
        a channel without a configured secret accepts no callbacks.
        """
        import hmac

        secret = self.config.receipt_secret
        if secret is None:
            return False
        given = request.query.get("secret") or request.headers.get("X-Warnd-Secret") or ""
        return hmac.compare_digest(given.encode(), secret.get_secret_value().encode())

    async def reconcile(self, targets: Sequence[Target]) -> list[Receipt]:
        """Settle ``uncertain`` deliveries before any resend (the provider's query API).

        One receipt per target: ``sent`` / ``delivered`` (the provider has it;
        with its message id), ``failed`` (it has it, and it failed), ``retry``
        (the provider certainly never took it: dispatch sends it again) or
        ``uncertain`` (the query could not tell: asked again later, never
        resent blindly). Never raises for a failed query.

        The default knows nothing more: every target stays ``uncertain``, and
        dispatch waits for asynchronous receipts instead of resending.
        """
        return [
            Receipt.uncertain(t.delivery_id, f"{self.name}: no query API to reconcile with")
            for t in targets
        ]

    async def parse_callback(self, request: web.Request, body: bytes) -> list[CallbackReceipt]:
        """Parse an authenticated callback into receipts.

        Raise :class:`~warnd.errors.BadRequest` for a body that cannot be
        understood; return ``[]`` for a well-formed callback that carries
        no receipt (a provider's ping).
        """
        from warnd.errors import BadRequest

        raise BadRequest(f"channel {self.name!r} does not take callbacks")

    @classmethod
    def standing_in_for(
        cls, family: type[Channel], config: ChannelConfig, context: ChannelContext | None
    ) -> Channel:
        """An instance serving as a provider of another channel (the sandbox).

        Only a channel that can stand in for others (the sandbox) overrides this.
        """
        raise TypeError(f"{cls.__name__} cannot stand in for channel {family.name!r}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}/{self.provider} config={self.config!r}>"


# ------------------------------------------------------------------ helpers

_DIGITS = re.compile(r"\d")


def mask_address(address: str | None) -> str:
    """An address safe to log: all but the last four characters masked.

    Phone numbers keep their last four digits (``*******5678``); robot keys
    and URLs keep only their last four characters; email addresses keep the
    domain and the first letter.
    """
    if not address:
        return ""
    if "@" in address and not address.startswith("http"):
        local, _, domain = address.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(address) <= 4:
        return "*" * len(address)
    return "*" * (len(address) - 4) + address[-4:]


def secret_field_names(model: type[BaseModel]) -> list[str]:
    """Fields of ``model`` whose type includes ``SecretStr``."""
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        text = repr(ann)
        if ann is SecretStr or "SecretStr" in text:
            out.append(name)
    return out


def resolve_secrets(
    raw: Mapping[str, Any],
    model: type[BaseModel],
    *,
    where: str,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """Replace ``<secret>_env`` / ``<secret>_file`` keys by the secret they name.

    A secret written in the configuration itself is refused: configuration
    files get copied, committed and pasted into tickets.
    """
    env = os.environ if env is None else env
    out = dict(raw)
    problems: list[str] = []
    for name in secret_field_names(model):
        if name in out:
            problems.append(
                f"{where}.{name}: do not write secrets in the configuration; name an "
                f'environment variable ({name}_env = "VAR") or a file ({name}_file = "path")'
            )
            del out[name]
        var = out.pop(f"{name}_env", None)
        path = out.pop(f"{name}_file", None)
        if var is not None and path is not None:
            problems.append(f"{where}: give {name}_env or {name}_file, not both")
            continue
        if var is not None:
            if not isinstance(var, str) or not env.get(var):
                problems.append(f"{where}.{name}_env: environment variable {var!r} is not set")
                continue
            out[name] = env[var]
        elif path is not None:
            p = Path(str(path))
            if not p.is_absolute() and base_dir is not None:
                p = base_dir / p
            try:
                out[name] = p.read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{where}.{name}_file: {p}: {exc.strerror}")
    if problems:
        raise ConfigError(problems[0], problems=problems)
    return out
