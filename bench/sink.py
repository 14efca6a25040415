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

The sink stands in for gateways on other machines, so it is kept cheap: it
shares the two cores with warnd, Redis and the peers. It runs on uvloop
when installed, reads and writes JSON with orjson, and counts a request's
numbers in one numpy pass.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from aiohttp import web

MAX_NUMBERS = 1000
"""Numbers per request the SMS route accepts, as the cloud APIs do."""


@dataclass
class Tally:
    """Arrivals of one run: recipients ``0 … space-1``, of which ``allowed`` are expected."""

    space: int = 0
    expect: int = 0
    allowed: npt.NDArray[np.bool_] | None = None
    """True for each expected recipient; ``None``: all of the space."""
    latency: float = 0.0
    counts: npt.NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, np.uint8))
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

    def add_many(self, addresses: list[str]) -> None:
        """:meth:`add` for each, in one numpy pass when every address ends in 8 digits."""
        tails = "".join([a[-8:] for a in addresses])
        n = len(addresses)
        if not (len(tails) == 8 * n and tails.isascii() and tails.isdigit()):
            for a in addresses:
                self.add(a)
            return
        digits = np.frombuffer(tails.encode(), np.uint8).reshape(n, 8).astype(np.int64) - 48
        index = digits @ (10 ** np.arange(7, -1, -1, dtype=np.int64))
        self.deliveries += n
        ok = index < self.space
        if self.allowed is not None:
            ok[ok] = self.allowed[index[ok]]
        self.unexpected += n - int(ok.sum())
        got, times = np.unique(index[ok], return_counts=True)
        before = self.counts[got]
        new = int((before == 0).sum())
        self.distinct += new
        self.duplicates += int(times.sum()) - new
        self.counts[got] = np.minimum(before.astype(np.int64) + times, 255).astype(np.uint8)

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
        tally.counts = np.zeros(space, np.uint8)
        if doc.get("expect") is not None:
            tally.allowed = np.zeros(space, np.bool_)
            tally.allowed[np.asarray(doc["expect"], dtype=np.int64)] = True
            tally.expect = int(tally.allowed.sum())
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
            body = orjson.loads(await request.read())
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
        tally.add_many(phones)
        base = tally.deliveries - len(phones)
        ids = map((tally.tag + "{:010d}").format, range(base, base + len(phones)))
        results = [
            {"phone": p, "code": "OK", "msg_id": i} for p, i in zip(phones, ids, strict=True)
        ]
        await self._wait()
        return _json({"code": "OK", "results": results})

    async def robot(self, request: web.Request) -> web.Response:
        tally = self.tally
        key = request.query.get("key", "")
        try:
            body = orjson.loads(await request.read())
            kind = body["msgtype"]
            if not isinstance(body[kind]["content"], str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            tally.rejected += 1
            return web.json_response({"errcode": 40035, "errmsg": "invalid parameter"})
        tally.stamp(1)
        tally.add(key)
        await self._wait()
        return _json({"errcode": 0, "errmsg": "ok"})

    async def apprise(self, request: web.Request) -> web.Response:
        tally = self.tally
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body["message"], str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            tally.rejected += 1
            return web.Response(status=400)
        tally.stamp(1)
        tally.add(request.match_info["key"])
        await self._wait()
        return web.Response(text="ok")


def _json(doc: Any) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json")


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
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.port))
