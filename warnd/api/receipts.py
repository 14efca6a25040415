"""Asynchronous receipts: ``POST /v1/receipts/{channel}`` and the channels' lifecycle.

Gateways call back here (Kannel delivery reports, HTTP gateways' webhooks,
the sandbox). The route finds the channel, lets it authenticate the call
(its secret in the URL, or a signature), parses the body with the
channel's :meth:`~warnd.channel.Channel.parse_callback` and hands the
receipts to the app's :data:`RECEIPT_SINK`. Dispatch plugs in the sink
that applies them to delivery records; until then the default sink keeps
every receipt in a Redis stream (``warnd:receipts``). Unknown or duplicate
receipts are the sink's to record, never an error to the gateway — a
gateway that gets errors retries forever.

``GET`` is accepted too: Kannel's smsbox fetches its ``dlr-url`` by GET.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel
from redis.asyncio import Redis

from warnd.api.context import SERVICES, read_body
from warnd.api.routes import Response, route
from warnd.channel import CallbackReceipt, Channel
from warnd.errors import NotFound, Unauthorized
from warnd.keys import Keys
from warnd.settings import Settings

log = structlog.get_logger("warnd.receipts")

ReceiptSink = Callable[[str, Sequence[CallbackReceipt]], Awaitable[None]]
"""``sink(channel_name, receipts)``: apply (or record) parsed receipts."""

CHANNELS = web.AppKey("channels", dict[str, Channel])
RECEIPT_SINK: web.AppKey[ReceiptSink] = web.AppKey("receipt_sink")

MAX_CALLBACK_BYTES = 1024 * 1024
RECORD_MAXLEN = 1_000_000


class ReceiptsAccepted(BaseModel):
    channel: str
    accepted: int
    """Receipts parsed from the callback and handed on."""


def redis_sink(redis: Redis, keys: Keys) -> ReceiptSink:
    """The default sink: append every receipt to the ``receipts`` stream."""

    async def sink(channel: str, receipts: Sequence[CallbackReceipt]) -> None:
        if not receipts:
            return
        pipe = redis.pipeline(transaction=False)
        for r in receipts:
            fields: dict[str, str] = {"channel": channel, **_str_fields(r.as_dict())}
            pipe.xadd(keys.callback_receipts, fields, maxlen=RECORD_MAXLEN, approximate=True)  # type: ignore[arg-type]
        await pipe.execute()

    return sink


def _str_fields(d: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in d.items()}


async def _receive(request: web.Request) -> web.Response:
    name = request.match_info["channel"]
    channels = request.app.get(CHANNELS, {})
    channel = channels.get(name)
    if channel is None:
        raise NotFound(f"no channel {name!r} is configured in this warnd")
    body = await read_body(request, MAX_CALLBACK_BYTES)
    if not channel.authenticate_callback(request, body):
        log.warning("receipt.unauthenticated", channel=name, peer=request.remote)
        raise Unauthorized(f"callback for channel {name!r} is not authenticated")
    receipts = await channel.parse_callback(request, body)
    await request.app[RECEIPT_SINK](name, receipts)
    for r in receipts:
        log.info(
            "receipt.received",
            channel=name,
            state=r.state.value,
            delivery_id=r.delivery_id,
            provider_id=r.provider_id,
            provider_status=r.provider_status,
        )
    out = ReceiptsAccepted(channel=name, accepted=len(receipts))
    return web.Response(text=out.model_dump_json(), content_type="application/json")


_RESPONSES = {
    200: Response("Parsed and handed on (unknown deliveries are recorded)", ReceiptsAccepted),
    401: Response("Missing or wrong channel secret or signature"),
    404: Response("No such channel configured"),
}


@route(
    "POST",
    "/v1/receipts/{channel}",
    summary="A gateway's asynchronous receipt (delivery report, webhook, board ack)",
    role=None,
    tag="receipts",
    responses=_RESPONSES,
)
async def post_receipt(request: web.Request) -> web.Response:
    """Authenticated by the channel: its `receipt_secret` as `?secret=` (or the
    `X-Warnd-Secret` header), or the provider's signature."""
    return await _receive(request)


@route(
    "GET",
    "/v1/receipts/{channel}",
    summary="The same, for gateways that call back by GET (Kannel's dlr-url)",
    role=None,
    tag="receipts",
    responses=_RESPONSES,
)
async def get_receipt(request: web.Request) -> web.Response:
    return await _receive(request)


def setup_channels(
    app: web.Application,
    settings: Settings,
    *,
    channels: Mapping[str, Channel] | None = None,
    sink: ReceiptSink | None = None,
) -> None:
    """Build (from ``[channels.*]``, unless given), start and stop the channels
    with the app; install the receipt sink (default: the Redis stream)."""
    from warnd.plugins import channels_from_settings

    if sink is not None:
        app[RECEIPT_SINK] = sink

    async def channels_ctx(app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]

        async def on_receipts(name: str, receipts: Sequence[CallbackReceipt]) -> None:
            await app[RECEIPT_SINK](name, receipts)

        built = (
            dict(channels)
            if channels is not None
            else channels_from_settings(settings, svc.redis, on_receipts=on_receipts)
        )
        app[CHANNELS] = built
        if RECEIPT_SINK not in app:
            app[RECEIPT_SINK] = redis_sink(svc.redis, svc.keys)
        started: list[Channel] = []
        try:
            for ch in built.values():
                await ch.start()
                started.append(ch)
                log.info("channel.started", channel=ch.name, provider=ch.provider)
            yield
        finally:
            for ch in reversed(started):
                with contextlib.suppress(Exception):
                    await ch.stop()

    app.cleanup_ctx.append(channels_ctx)


__all__ = [
    "CHANNELS",
    "RECEIPT_SINK",
    "ReceiptSink",
    "post_receipt",
    "redis_sink",
    "setup_channels",
]
