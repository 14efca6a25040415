"""WeChat Work (企业微信) group robots.

Credentials: in the WeChat Work group chat, 群设置 → 群机器人 → 添加机器人;
the robot's webhook URL ends in ``key=<uuid>``. That key is the endpoint's
address (import it with the group's subscriber record, or give the whole
webhook URL). It is a credential — anyone holding it can post to the group
— so warnd never logs more than its last four characters and keys its
rate window by a hash of it. warnd itself needs no account secret.

Messages: ``text`` (at most 2048 bytes of UTF-8, with ``mentioned_list:
["@all"]`` / ``mentioned_mobile_list`` for the levels in ``mention_levels``)
or ``markdown`` (at most 4096 bytes, for the levels in
``markdown_levels``; markdown cannot @-mention). Each robot takes 20
messages a minute: warnd keeps that window in Redis, shared by every
process, and answers ``retry`` (not counted as an attempt) when it is full.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, ClassVar, Literal, cast
from urllib.parse import urlsplit

import orjson
import structlog
from pydantic import Field, field_validator, model_validator

from warnd.channel import (
    Batch,
    Channel,
    ChannelConfig,
    ChannelContext,
    ChannelHealth,
    RateLimit,
    Receipt,
    Target,
    mask_address,
)
from warnd.keys import Keys
from warnd.limits import LengthUnit, MessageLimits
from warnd.model import Level
from warnd.ratewindow import RateWindow

from ._http import TRANSPORT_ERRORS, gather_limited, new_pool, transport_receipts
from ._http1 import OriginPool

log = structlog.get_logger("warnd.channels.wechat")

TEXT_LIMITS = MessageLimits(LengthUnit.UTF8_BYTES, max_length=2048)
MARKDOWN_LIMITS = MessageLimits(LengthUnit.UTF8_BYTES, max_length=4096, markdown=True)

ERR_OK = 0
ERR_BUSY = -1
ERR_FREQ = 45009  # api freq out of limit
ERR_INVALID_KEY = 93000  # invalid webhook url

_KEY = re.compile(r"^[A-Za-z0-9-]{8,64}$")
_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


LevelName = Literal["blue", "yellow", "orange", "red"]


class WeChatConfig(ChannelConfig):
    provider: Literal["robot"] = "robot"
    base_url: str = Field(default="https://qyapi.weixin.qq.com", pattern=r"^https?://")
    markdown_levels: list[LevelName] = Field(default=["blue", "yellow"])
    mention_levels: list[LevelName] = Field(default=["orange", "red"])
    mention_all: bool = True
    mention_mobiles: list[str] = Field(default_factory=list)
    """Also @ these members by mobile number (``mentioned_mobile_list``)."""
    max_connections: int = Field(default=50, ge=1, le=1000)
    """Requests in flight: one per message (each robot is its own webhook), so
    more than a batching channel needs; at 50 ms a request, 50 is ~1,000/s."""
    window_count: int = Field(default=20, ge=1)
    window_seconds: float = Field(default=60.0, gt=0)
    """WeChat Work's documented limit per robot: 20 messages per 60 s."""

    @field_validator("base_url")
    @classmethod
    def _an_origin_and_a_path(cls, value: str) -> str:
        parts = urlsplit(value)
        if not parts.hostname:
            raise ValueError(f"base_url {value!r} names no host")
        if parts.query or parts.fragment:
            raise ValueError(f"base_url {value!r} has a query or fragment: give scheme, host, path")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"base_url {value!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _markdown_cannot_mention(self) -> WeChatConfig:
        both = sorted(set(self.markdown_levels) & set(self.mention_levels))
        if both:
            raise ValueError(
                f"levels {both} are in both markdown_levels and mention_levels: "
                "WeChat Work markdown messages cannot @-mention"
            )
        return self


class WeChatChannel(Channel):
    name = "wechat"
    provider = "robot"
    Config: ClassVar[type[ChannelConfig]] = WeChatConfig
    limits = TEXT_LIMITS
    batch_size = 50
    rate = RateLimit(20, 60.0, scope="address")
    async_receipts = False
    idempotent = False  # a resent request posts the message to the group twice

    def __init__(self, config: ChannelConfig, context: ChannelContext | None = None) -> None:
        super().__init__(config, context)
        self.cfg = cast(WeChatConfig, config)
        self.rate = RateLimit(self.cfg.window_count, self.cfg.window_seconds, scope="address")
        self.window = RateWindow(self.cfg.window_count, self.cfg.window_seconds, self.context.redis)
        self._keys = self.context.keys or Keys()
        parts = urlsplit(self.cfg.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = f"{parts.path.rstrip('/')}/cgi-bin/webhook/send?key="
        self._pool: OriginPool | None = None
        # The request's line and headers around the robot key, built at start().
        self._head_start = self._head_end = b""

    async def start(self) -> None:
        # One message per request: the lean client, not aiohttp's session
        # (whose per-request objects were most of this channel's CPU).
        if self._pool is None:
            self._pool = new_pool(self._origin, self.config)
            head = self._pool.head("POST", self._path + "{key}", _HEADERS)
            self._head_start, _, self._head_end = head.partition(b"{key}")

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def health(self) -> ChannelHealth:
        return ChannelHealth(self._pool is not None, "" if self._pool else "not started")

    def limits_for(self, level: Level | None) -> MessageLimits:
        if level is not None and level.value in self.cfg.markdown_levels:
            return MARKDOWN_LIMITS
        return TEXT_LIMITS

    def robot_key(self, address: str) -> str | None:
        """The robot key of an endpoint: the key itself, or a webhook URL on ``base_url``."""
        prefix = f"{self.cfg.base_url.rstrip('/')}/cgi-bin/webhook/send?key="
        key = address[len(prefix) :] if address.startswith(prefix) else address
        return key if _KEY.match(key) else None

    def payload(self, batch: Batch) -> dict[str, Any]:
        level = batch.level.value if batch.level else None
        if batch.markdown:
            return {"msgtype": "markdown", "markdown": {"content": batch.text}}
        text: dict[str, Any] = {"content": batch.text}
        if level in self.cfg.mention_levels:
            if self.cfg.mention_all:
                text["mentioned_list"] = ["@all"]
            if self.cfg.mention_mobiles:
                text["mentioned_mobile_list"] = list(self.cfg.mention_mobiles)
        return {"msgtype": "text", "text": text}

    async def send(self, batch: Batch) -> list[Receipt]:
        if self._pool is None:
            raise RuntimeError("WeChatChannel.send before start()")
        payload = self.payload(batch)
        limit = MARKDOWN_LIMITS if batch.markdown else TEXT_LIMITS
        size = len(batch.text.encode("utf-8"))
        if limit.max_length is not None and size > limit.max_length:
            kind = "markdown" if batch.markdown else "text"
            err = f"{kind} is {size} bytes; WeChat Work takes at most {limit.max_length}"
            return [Receipt.failed(t.delivery_id, err) for t in batch.targets]
        body = json.dumps(payload, ensure_ascii=False).encode()
        out: list[Receipt | None] = [None] * len(batch.targets)
        robots: list[tuple[int, str]] = []  # (position, robot key) of the valid endpoints
        for i, t in enumerate(batch.targets):
            key = self.robot_key(t.address)
            if key is None:
                out[i] = Receipt.failed(t.delivery_id, "not a WeChat Work robot key or webhook URL")
            else:
                robots.append((i, key))
        # Every robot's window in one round trip; the full ones wait.
        waits = await self.window.acquire_many([self._window_key(k) for _, k in robots])
        go: list[tuple[int, str]] = []
        for (i, key), wait in zip(robots, waits, strict=True):
            if wait > 0:
                out[i] = Receipt.retry(
                    batch.targets[i].delivery_id,
                    f"robot's window of {self.cfg.window_count} per "
                    f"{self.cfg.window_seconds:g} s is full",
                    after=wait,
                    counts_attempt=False,
                    status="window",
                )
            else:
                go.append((i, key))
        posted = await gather_limited(
            go,
            lambda ik: self._post(batch.targets[ik[0]], ik[1], body),
            self.config.max_connections,
        )
        for (i, _), receipt in zip(go, posted, strict=True):
            out[i] = receipt
        receipts = [r for r in out if r is not None]
        sent = sum(r.outcome.value == "sent" for r in receipts)
        held = len(robots) - len(go)
        log.info(
            "channel.batch_sent",
            channel=self.name,
            robots=len(receipts),
            sent=sent,
            held=held,
            other=len(receipts) - sent - held,
        )
        return receipts

    def _window_key(self, robot_key: str) -> str:
        """The robot's rate window, keyed by a hash: the key itself is a credential."""
        return self._keys.channel_window(
            self.name, hashlib.sha256(robot_key.encode()).hexdigest()[:20]
        )

    async def _post(self, target: Target, key: str, body: bytes) -> list[Receipt]:
        did = target.delivery_id
        if self._pool is None:
            raise RuntimeError("send before start()")
        try:
            # The key is letters, digits and dashes (robot_key): it goes into
            # the request line as it is.
            head = b"%s%s%s" % (self._head_start, key.encode("ascii"), self._head_end)
            answer = await self._pool.request(head, body)
        except TRANSPORT_ERRORS as exc:
            log.warning(
                "channel.send_failed",
                channel=self.name,
                delivery_id=did,
                robot=mask_address(key),
                error=type(exc).__name__,
            )
            return transport_receipts([target], exc, idempotent=False, who="wechat")
        receipt = self._classify(did, answer.status, answer.body)
        if receipt.outcome.value == "sent":
            log.debug("channel.sent", channel=self.name, delivery_id=did, robot=mask_address(key))
        else:
            log.info(
                "channel.refused",
                channel=self.name,
                delivery_id=did,
                robot=mask_address(key),
                status=receipt.provider_status,
            )
        return [receipt]

    def _classify(self, did: str, status: int, answer: bytes) -> Receipt:
        if status == 429 or status >= 500:
            return Receipt.retry(
                did,
                f"wechat: HTTP {status}",
                after=5.0,
                counts_attempt=status != 429,
                status=str(status),
            )
        if status != 200:
            text = answer.decode("utf-8", errors="replace")
            return Receipt.failed(did, f"wechat: HTTP {status}: {text[:200]}", status=str(status))
        try:
            doc = orjson.loads(answer)
            errcode = int(doc["errcode"])
            errmsg = str(doc.get("errmsg", ""))
        except (ValueError, KeyError, TypeError):
            text = answer.decode("utf-8", errors="replace")
            return Receipt.uncertain(did, f"wechat: unreadable answer: {text[:200]}")
        code = str(errcode)
        if errcode == ERR_OK:
            return Receipt.sent(did, None, status=code)
        if errcode == ERR_FREQ:
            return Receipt.retry(
                did,
                f"wechat: {errcode} {errmsg}",
                after=self.cfg.window_seconds,
                counts_attempt=False,
                status=code,
            )
        if errcode == ERR_BUSY:
            return Receipt.retry(did, f"wechat: {errcode} {errmsg}", after=5.0, status=code)
        return Receipt.failed(did, f"wechat: {errcode} {errmsg}", status=code)
