"""Display boards (roadside and village LED boards): MQTT, or an HTTP controller.

Credentials:

* ``mqtt`` — the board vendor's or the office's MQTT broker (mosquitto,
  EMQX): ask its administrator for a user allowed to publish to
  ``<topic_prefix>/+/display`` and subscribe to ``<topic_prefix>/+/ack`` and
  ``<topic_prefix>/+/status``; put its password in ``password_env``. Each
  board's id (its topic segment) is the endpoint address. Over a network
  you do not own, use its TLS listener (``tls = true``, port 8883) and,
  for a broker with a private CA, its CA certificate (``ca_file``).
* ``http`` — the board controller's API URL (``{board}`` in it is replaced
  by the board id) and its token in ``auth_value_env``.

Protocol (MQTT): warnd publishes the lines, colour and expiry as a
*retained* QoS 1 JSON message on ``<prefix>/<board>/display`` (a board
that reconnects shows the current warning; a Cancel publishes
``"action": "clear"``). A board acknowledges on ``<prefix>/<board>/ack``
with ``{"delivery_id": …, "status": "shown" | "cleared" | "error"}`` and
keeps ``<prefix>/<board>/status`` retained: ``online`` when it connects,
``offline`` as its last will. A board that is offline (or never said it
was online) fails at once — unreached, not pretended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal, cast

import aiomqtt
import structlog
from pydantic import Field, SecretStr, model_validator

from warnd.channel import (
    Batch,
    CallbackReceipt,
    CallbackState,
    Channel,
    ChannelConfig,
    ChannelContext,
    ChannelHealth,
    RateLimit,
    Receipt,
    Target,
)
from warnd.limits import LengthUnit, MessageLimits
from warnd.model import Level, MsgType

from ._http import (
    TRANSPORT_ERRORS,
    HttpChannel,
    gather_limited,
    retry_after,
    transport_receipts,
)

log = structlog.get_logger("warnd.channels.board")

BOARD_LIMITS = MessageLimits(LengthUnit.CHARS, max_length=48, line_chars=12, lines=4)
COLOURS = {"blue": "#0050FF", "yellow": "#FFD200", "orange": "#FF8C00", "red": "#FF0000"}
_BOARD_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class BoardConfig(ChannelConfig):
    line_chars: int = Field(default=12, ge=1, le=200)
    lines: int = Field(default=4, ge=1, le=64)


def _limits(cfg: BoardConfig) -> MessageLimits:
    return replace(
        BOARD_LIMITS,
        line_chars=cfg.line_chars,
        lines=cfg.lines,
        max_length=cfg.line_chars * cfg.lines,
    )


def board_payload(batch: Batch, target: Target) -> dict[str, Any]:
    """What a board is told: show these lines in this colour until then, or clear."""
    clear = batch.msg_type is MsgType.CANCEL
    level = batch.level.value if batch.level else None
    return {
        "action": "clear" if clear else "show",
        "delivery_id": target.delivery_id,
        "alert_id": batch.alert_id,
        "identifier": batch.identifier,
        "msg_type": batch.msg_type.value,
        "level": level,
        "colour": COLOURS.get(level or "", "#FFFFFF"),
        "lines": [] if clear else list(batch.lines or batch.text.splitlines()),
        "expires": batch.expires.isoformat() if batch.expires else None,
    }


# ---------------------------------------------------------------------- MQTT


class MqttBoardConfig(BoardConfig):
    provider: Literal["mqtt"] = "mqtt"
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default: 8883 with ``tls``, else 1883."""
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: str | None = None
    """PEM CA bundle for a broker with a private CA (a relative path is taken
    like the configuration's other files)."""
    validate_certs: bool = True
    """Verify the broker's certificate and name (``false`` only on a test bench)."""
    topic_prefix: str = Field(default="warnd/boards", pattern=r"^[^#+]+$")
    client_id: str | None = None
    keepalive: int = Field(default=30, ge=5)
    ack_wait: float = Field(default=5.0, ge=0)
    """Wait this long for a board's ack before answering ``sent`` (a later ack
    arrives as an asynchronous receipt)."""
    status_wait: float = Field(default=1.0, ge=0)
    """After connecting, how long to wait for a board's retained status."""

    @model_validator(mode="after")
    def _tls(self) -> MqttBoardConfig:
        if not self.tls and (self.ca_file is not None or not self.validate_certs):
            raise ValueError("ca_file and validate_certs apply to a TLS connection: set tls = true")
        return self


class MqttBoard(Channel):
    name = "board"
    provider = "mqtt"
    Config: ClassVar[type[ChannelConfig]] = MqttBoardConfig
    limits = BOARD_LIMITS
    batch_size = 200
    rate = RateLimit(100, 1.0)
    async_receipts = True
    idempotent = True  # a retained display message replaces itself

    def __init__(self, config: ChannelConfig, context: ChannelContext | None = None) -> None:
        super().__init__(config, context)
        self.cfg = cast(MqttBoardConfig, config)
        self.limits = _limits(self.cfg)
        self.port = self.cfg.port or (8883 if self.cfg.tls else 1883)
        self.status: dict[str, str] = {}
        self._status_seen: dict[str, asyncio.Event] = {}
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def topic(self, board: str, kind: str) -> str:
        return f"{self.cfg.topic_prefix.rstrip('/')}/{board}/{kind}"

    def limits_for(self, level: Level | None) -> MessageLimits:
        return self.limits

    def _tls_context(self) -> ssl.SSLContext | None:
        cfg = self.cfg
        if not cfg.tls:
            return None
        cafile = str(self.context.path(cfg.ca_file)) if cfg.ca_file else None
        ctx = ssl.create_default_context(cafile=cafile)
        if not cfg.validate_certs:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _new_client(self) -> aiomqtt.Client:
        cfg = self.cfg
        return aiomqtt.Client(
            cfg.host,
            self.port,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            identifier=cfg.client_id,
            keepalive=cfg.keepalive,
            timeout=self.timeout,
            tls_context=self._tls_context(),
            tls_insecure=not cfg.validate_certs if cfg.tls else None,
        )

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"warnd-board-{self.name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout=self.timeout)

    async def _run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            try:
                async with self._new_client() as client:
                    await client.subscribe(self.topic("+", "status"), qos=1)
                    await client.subscribe(self.topic("+", "ack"), qos=1)
                    self._client = client
                    self._connected.set()
                    backoff = 0.5
                    log.info("channel.connected", channel=self.name, host=self.cfg.host)
                    async for message in client.messages:
                        await self._on_message(str(message.topic), message.payload)
            except aiomqtt.MqttError as exc:
                log.warning("channel.disconnected", channel=self.name, error=str(exc))
            finally:
                self._client = None
                self._connected.clear()
            if not self._stopping:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _on_message(self, topic: str, payload: Any) -> None:
        prefix = self.cfg.topic_prefix.rstrip("/") + "/"
        board, _, kind = topic.removeprefix(prefix).rpartition("/")
        data = payload if isinstance(payload, bytes | bytearray) else str(payload or "").encode()
        if kind == "status":
            self.status[board] = data.decode("utf-8", "replace").strip().lower()
            self._status_seen.setdefault(board, asyncio.Event()).set()
            return
        if kind != "ack":
            return
        try:
            ack = json.loads(data)
            did = str(ack["delivery_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("channel.bad_ack", channel=self.name, board=board)
            return
        waiter = self._acks.pop(did, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(ack)
            return
        # A late (or repeated) ack: an asynchronous receipt.
        if self.context.on_receipts is not None:
            await self.context.on_receipts(self.name, [_ack_receipt(did, board, ack)])

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for fut in self._acks.values():
            fut.cancel()
        self._acks.clear()

    async def health(self) -> ChannelHealth:
        if self._connected.is_set():
            online = sum(1 for s in self.status.values() if s == "online")
            return ChannelHealth(True, f"connected; {online} of {len(self.status)} boards online")
        return ChannelHealth(False, f"not connected to {self.cfg.host}:{self.port}")

    async def send(self, batch: Batch) -> list[Receipt]:
        if self._task is None:
            raise RuntimeError("MqttBoard.send before start()")
        return await gather_limited(
            batch.targets, lambda t: self._send_one(batch, t), self.config.max_connections
        )

    async def _board_status(self, board: str) -> str | None:
        seen = self._status_seen.setdefault(board, asyncio.Event())
        if not seen.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen.wait(), timeout=self.cfg.status_wait)
        return self.status.get(board)

    async def _send_one(self, batch: Batch, target: Target) -> list[Receipt]:
        did, board = target.delivery_id, target.address
        if not _BOARD_ID.match(board):
            return [Receipt.failed(did, "not a board id (letters, digits, _ . -)")]
        client = self._client
        if client is None:
            return [Receipt.retry(did, f"board broker {self.cfg.host} unreachable", after=10.0)]
        status = await self._board_status(board)
        if status != "online":
            why = "offline (last will)" if status else "has never reported its status"
            log.info("channel.refused", channel=self.name, delivery_id=did, board=board, why=why)
            return [Receipt.failed(did, f"board {board} is {why}", status=status or "unknown")]
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[did] = waiter
        body = json.dumps(board_payload(batch, target), ensure_ascii=False)
        try:
            await client.publish(
                self.topic(board, "display"), body, qos=1, retain=True, timeout=self.timeout
            )
        except aiomqtt.MqttError as exc:
            self._acks.pop(did, None)
            return [Receipt.retry(did, f"publish failed: {exc}", after=5.0)]
        try:
            ack = await asyncio.wait_for(waiter, timeout=self.cfg.ack_wait)
        except TimeoutError:
            self._acks.pop(did, None)
            log.info("channel.sent", channel=self.name, delivery_id=did, board=board)
            return [Receipt.sent(did, did, status="published")]
        receipt = _ack_receipt(did, board, ack)
        log.info("channel.acked", channel=self.name, delivery_id=did, board=board)
        if receipt.state is CallbackState.FAILED:
            return [Receipt.failed(did, receipt.error or "board reported an error", status="error")]
        return [Receipt.delivered(did, did, status=receipt.provider_status)]


def _ack_receipt(did: str, board: str, ack: Mapping[str, Any]) -> CallbackReceipt:
    status = str(ack.get("status", "shown"))
    failed = status == "error"
    return CallbackReceipt(
        state=CallbackState.FAILED if failed else CallbackState.DELIVERED,
        delivery_id=did,
        provider_id=did,
        provider_status=status,
        error=str(ack.get("error", "board error")) if failed else None,
        raw={"board": board, **{k: str(v) for k, v in ack.items()}},
    )


# ---------------------------------------------------------------------- HTTP


class HttpBoardConfig(BoardConfig):
    provider: Literal["http"] = "http"
    url: str = Field(pattern=r"^https?://")
    """Controller URL; ``{board}`` is replaced by the board id."""
    auth_header: str = "Authorization"
    auth_value: SecretStr | None = None


class HttpBoard(HttpChannel):
    name = "board"
    provider = "http"
    Config: ClassVar[type[ChannelConfig]] = HttpBoardConfig
    limits = BOARD_LIMITS
    batch_size = 100
    rate = RateLimit(20, 1.0)
    idempotent = True  # the controller replaces what a board shows

    def __init__(self, config: ChannelConfig, context: ChannelContext | None = None) -> None:
        super().__init__(config, context)
        self.cfg = cast(HttpBoardConfig, config)
        self.limits = _limits(self.cfg)

    def limits_for(self, level: Level | None) -> MessageLimits:
        return self.limits

    async def send(self, batch: Batch) -> list[Receipt]:
        if self._session is None:
            raise RuntimeError("HttpBoard.send before start()")
        return await gather_limited(
            batch.targets, lambda t: self._send_one(batch, t), self.config.max_connections
        )

    async def _send_one(self, batch: Batch, target: Target) -> list[Receipt]:
        did, board = target.delivery_id, target.address
        if not _BOARD_ID.match(board) or self._session is None:
            return [Receipt.failed(did, "not a board id (letters, digits, _ . -)")]
        headers = {}
        if self.cfg.auth_value is not None:
            headers[self.cfg.auth_header] = self.cfg.auth_value.get_secret_value()
        url = self.cfg.url.replace("{board}", board)
        try:
            async with self._session.post(
                url, json=board_payload(batch, target), headers=headers
            ) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
                wait = retry_after(resp.headers, 5.0)
        except TRANSPORT_ERRORS as exc:
            return transport_receipts([target], exc, idempotent=True, who="board controller")
        code = str(status)
        if 200 <= status < 300:
            return [Receipt.sent(did, did, status=code)]
        if status == 429 or status >= 500:
            return [
                Receipt.retry(
                    did,
                    f"board controller: {status}",
                    after=wait,
                    counts_attempt=status != 429,
                    status=code,
                )
            ]
        return [Receipt.failed(did, f"board controller: {status} {text[:200]}", status=code)]


class BoardChannel(Channel):
    """The ``board`` channel family: ``provider = "mqtt" | "http" | "sandbox"``."""

    name = "board"
    limits = BOARD_LIMITS
    batch_size = 200
    providers: ClassVar[Mapping[str, type[Channel]]] = {"mqtt": MqttBoard, "http": HttpBoard}
