"""A loopback stand-in for the gateways, counting every recipient that arrives.

    .venv/bin/python bench/sink.py [--port 0]

An aiohttp server on 127.0.0.1 in its own process (so its work is not
charged to whoever feeds it), shaped like the providers warnd and the peers
talk to:

``POST /sms``
    the cloud SMS API of ``channels/sms_http.py`` (and ``tests/peers.py``
    ``CloudSmsServer``): ``{"phones": [...], "content": ...}`` with at most
    1,000 numbers, answered with one result per number.
``POST /cgi-bin/webhook/send?key=K``
    a WeChat Work group robot: one message per request, ``{"errcode": 0}``.
``POST /apprise/{key}``
    the target of an Apprise ``json://`` URL: one message per request.

Each recipient address ends in its number in 8 digits (``13900000042``,
``bench-00000042``, ``/apprise/00000042``); the sink counts arrivals per
number in a byte array, so a run over a million recipients can say exactly
which arrived, which twice and which not at all.

Control: ``POST /reset`` ``{"space": N, "expect": [i, …] | null, "latency": s}``
starts a run (recipients ``0 … N-1``, of which those listed — or all — are
expected; each answer delayed by ``latency`` seconds); ``GET /stats``
reports it: expected, distinct arrivals, missing, duplicates, arrivals for
recipients not expected, first and last arrival (epoch seconds). Prints
``sink listening on http://…`` when ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_NUMBERS = 1000
"""Numbers per request the SMS route accepts, as the cloud APIs do."""


@dataclass
class Tally:
    """Arrivals of one run: recipients ``0 … space-1``, of which ``allowed`` are expected."""

    space: int = 0
    expect: int = 0
    allowed: bytearray | None = None
    """1 for each expected recipient; ``None``: all of the space."""
    latency: float = 0.0
    counts: bytearray = field(default_factory=bytearray)
    requests: int = 0
    deliveries: int = 0
    distinct: int = 0
    duplicates: int = 0
    unexpected: int = 0
    rejected: int = 0
    max_batch: int = 0
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    """Prefix of this run's message ids: unique across runs, as a gateway's are."""
    first: float | None = None
    last: float | None = None

    def add(self, address: str) -> None:
        tail = address[-8:]
        i = int(tail) if tail.isdigit() else -1
        self.deliveries += 1
        if not 0 <= i < self.space or (self.allowed is not None and not self.allowed[i]):
            self.unexpected += 1
            return
        seen = self.counts[i]
        if seen:
            self.duplicates += 1
        else:
            self.distinct += 1
        if seen < 255:
            self.counts[i] = seen + 1

    def stamp(self, n: int) -> None:
        now = time.time()
        self.requests += 1
        self.max_batch = max(self.max_batch, n)
        if self.first is None:
            self.first = now
        self.last = now

    def stats(self) -> dict[str, Any]:
        return {
            "expect": self.expect,
            "latency": self.latency,
            "requests": self.requests,
            "deliveries": self.deliveries,
            "distinct": self.distinct,
            "missing": self.expect - self.distinct,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "rejected": self.rejected,
            "max_batch": self.max_batch,
            "first": self.first,
            "last": self.last,
        }


class Sink:
    def __init__(self) -> None:
        self.tally = Tally()

    async def reset(self, request: web.Request) -> web.Response:
        doc = await request.json()
        space = int(doc["space"])
        tally = Tally(space=space, expect=space, latency=float(doc.get("latency", 0.0)))
        tally.counts = bytearray(space)
        if doc.get("expect") is not None:
            tally.allowed = bytearray(space)
            for i in doc["expect"]:
                tally.allowed[i] = 1
            tally.expect = len(doc["expect"])
        self.tally = tally
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.tally.stats())

    async def _wait(self) -> None:
        if self.tally.latency > 0:
            await asyncio.sleep(self.tally.latency)

    async def sms(self, request: web.Request) -> web.Response:
        tally = self.tally
        try:
            body = json.loads(await request.read())
            phones = body["phones"]
            if not isinstance(phones, list) or not isinstance(body["content"], str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            tally.rejected += 1
            return web.json_response({"code": "InvalidParameter"}, status=400)
        if len(phones) > MAX_NUMBERS:
            tally.rejected += 1
            return web.json_response({"code": "TooManyNumbers"}, status=400)
        tally.stamp(len(phones))
        for phone in phones:
            tally.add(phone)
        base = tally.deliveries - len(phones)
        results = [
            {"phone": p, "code": "OK", "msg_id": f"{tally.tag}{base + k:010d}"}
            for k, p in enumerate(phones)
        ]
        await self._wait()
        return web.json_response({"code": "OK", "results": results})

    async def robot(self, request: web.Request) -> web.Response:
        tally = self.tally
        key = request.query.get("key", "")
        try:
            body = json.loads(await request.read())
            kind = body["msgtype"]
            if not isinstance(body[kind]["content"], str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            tally.rejected += 1
            return web.json_response({"errcode": 40035, "errmsg": "invalid parameter"})
        tally.stamp(1)
        tally.add(key)
        await self._wait()
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def apprise(self, request: web.Request) -> web.Response:
        tally = self.tally
        try:
            body = json.loads(await request.read())
            if not isinstance(body["message"], str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            tally.rejected += 1
            return web.Response(status=400)
        tally.stamp(1)
        tally.add(request.match_info["key"])
        await self._wait()
        return web.Response(text="ok")


def make_app() -> web.Application:
    sink = Sink()
    app = web.Application(client_max_size=8 * 2**20)
    app.router.add_post("/reset", sink.reset)
    app.router.add_get("/stats", sink.stats)
    app.router.add_post("/sms", sink.sms)
    app.router.add_post("/cgi-bin/webhook/send", sink.robot)
    app.router.add_post("/apprise/{key}", sink.apprise)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    host, bound = runner.addresses[0][:2]
    print(f"sink listening on http://{host}:{bound}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))
