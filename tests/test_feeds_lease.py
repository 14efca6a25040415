"""Polling inside `warnd serve`: supervised tasks, one poller per feed across
processes (a Redis lease), takeover when the holder stops or dies, and a
clean shutdown."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from feedkit import CAP, Upstream, until
from redis.asyncio import Redis
from structlog.testing import capture_logs

from warnd.api.app import create_app
from warnd.feeds.lease import Lease
from warnd.feeds.poller import FEEDS
from warnd.keys import Keys
from warnd.settings import Settings
from warnd.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
RAIN_1 = CAP / "zh" / "tw-cwa-heavy-rain-1-alert.xml"
INTERVAL = 0.4
# The schedule never polls early; allow for the resolution of the clocks.
SLACK = 0.05


def cap_feed(url: str, **kw: Any) -> dict[str, Any]:
    return {
        "kind": "cap",
        "url": url,
        "trusted_senders": ["weather@cwa.gov.tw"],
        "interval": INTERVAL,
        "timeout": 2,
        "lease_seconds": 3,
    } | kw


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_lease_has_one_holder_and_passes_on_release_or_expiry(redis: Redis) -> None:
    key = Keys().feed_lease("f")
    a, b = Lease(redis, key, "a", ttl=1), Lease(redis, key, "b", ttl=1)
    assert await a.hold() and not await b.hold()
    assert await a.hold()  # extends its own lease
    assert await redis.get(key) == "a"
    await a.release()
    assert await b.hold() and not await a.hold()
    # b dies (never renews, never releases): its lease lapses and a takes over.
    await until(lambda: a.hold(), within=5)
    await b.release()  # b no longer holds it: must not delete a's lease
    assert await redis.get(key) == "a"


async def test_two_warnd_apps_poll_a_feed_once_per_interval_and_take_over(
    upstream: Upstream,
    redis: Redis,
    make_settings: Callable[..., Settings],
    taxonomy: Taxonomy,
) -> None:
    url = upstream.serve("alert.xml", RAIN_1)
    settings = make_settings(feeds={"cwa": cap_feed(url)})
    clients = []
    for _ in range(2):
        app = create_app(settings, redis=redis, taxonomy=taxonomy)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
    try:
        await until(lambda: upstream.hits["/alert.xml"] >= 6)
        pollers = [c.app[FEEDS].poller("cwa") for c in clients]
        counts = sorted(p.polls for p in pollers)
        assert counts[0] == 0, counts  # exactly one process polls
        assert counts[1] == upstream.hits["/alert.xml"]
        assert all(g >= INTERVAL - SLACK for g in gaps(upstream.times["/alert.xml"]))

        # The holder stops: the other process takes over, on the same schedule.
        holder = next(i for i, p in enumerate(pollers) if p.polls)
        other = pollers[1 - holder]
        await clients[holder].close()
        before = upstream.hits["/alert.xml"]
        await until(lambda: other.polls >= 3)
        assert upstream.hits["/alert.xml"] == before + other.polls
        assert all(g >= INTERVAL - SLACK for g in gaps(upstream.times["/alert.xml"]))
        health = await clients[1 - holder].app[FEEDS].health("cwa")
        assert health["polled_by"] == other.owner and health["accepted"] == 1
    finally:
        for c in clients:
            await c.close()
    assert await redis.exists(Keys().feed_lease("cwa")) == 0  # released on shutdown
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("warnd-feed-")]


async def test_one_broken_feed_never_stops_another_or_the_api(
    upstream: Upstream,
    redis: Redis,
    make_settings: Callable[..., Settings],
    taxonomy: Taxonomy,
) -> None:
    good = upstream.serve("good.xml", RAIN_1)
    bad = upstream.serve("bad.xml", RAIN_1)
    # Corrupt state in Redis makes the "bad" feed's loop fail on every turn.
    await redis.hset(Keys().feed_state("bad"), "next_poll_at", "not-a-number")
    settings = make_settings(feeds={"good": cap_feed(good), "bad": cap_feed(bad)})
    app = create_app(settings, redis=redis, taxonomy=taxonomy)
    with capture_logs() as logs:
        async with TestClient(TestServer(app)) as client:
            await until(lambda: upstream.hits["/good.xml"] >= 3)
            assert upstream.hits["/bad.xml"] == 0
            assert (await client.get("/healthz")).status == 200
            # Repaired, the bad feed's loop is still alive and polls again.
            await redis.hdel(Keys().feed_state("bad"), "next_poll_at")
            await until(lambda: upstream.hits["/bad.xml"] >= 1)
    assert any(e["event"] == "feed.loop_error" and e.get("feed") == "bad" for e in logs)


async def _spawn(config: Path, redis_url: str) -> asyncio.subprocess.Process:
    errors = config.with_suffix(".stderr")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARND_")}
    env["WARND_REDIS_URL"] = redis_url
    with errors.open("wb") as sink:  # the child keeps its own descriptor
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "warnd",
            "serve",
            "--config",
            str(config),
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=sink,
        )
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line, f"warnd serve exited before listening: {errors.read_text()[-2000:]}"
        if b"listening on" in line:
            return proc


async def test_two_warnd_processes_one_poller_and_takeover_when_it_dies(
    upstream: Upstream, redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    url = upstream.serve("alert.xml", RAIN_1)
    procs: list[asyncio.subprocess.Process] = []
    for i in range(2):
        cfg = tmp_path / f"warnd{i}.toml"
        cfg.write_text(
            f'data_dir = "{tmp_path / f"d{i}"}"\n'
            f'taxonomy_file = "{REPO / "config" / "taxonomy.toml"}"\n'
            '[http]\nhost = "127.0.0.1"\nport = 0\n'
            '[log]\nformat = "json"\nlevel = "warning"\n'
            "[feeds.cwa]\n"
            f'kind = "cap"\nurl = "{url}"\ntrusted_senders = ["weather@cwa.gov.tw"]\n'
            f"interval = {INTERVAL}\nlease_seconds = 2\ntimeout = 2\n"
        )
        procs.append(await _spawn(cfg, redis_url))
    try:
        await until(lambda: upstream.hits["/alert.xml"] >= 5, within=30)
        lease = await redis.get(Keys().feed_lease("cwa"))
        holder = next(p for p in procs if f":{p.pid}:" in lease)
        survivor = next(p for p in procs if p is not holder)
        holder.send_signal(signal.SIGKILL)  # dies without releasing its lease
        await holder.wait()
        killed_at = upstream.hits["/alert.xml"]

        async def taken_over() -> bool:
            now = await redis.get(Keys().feed_lease("cwa"))
            return bool(now) and f":{survivor.pid}:" in now

        await until(taken_over, within=30)
        await until(lambda: upstream.hits["/alert.xml"] >= killed_at + 3, within=30)
        # Never two polls within one interval, before, during or after the takeover.
        assert all(g >= INTERVAL - SLACK for g in gaps(upstream.times["/alert.xml"]))
        state = await redis.hgetall(Keys().feed_state("cwa"))
        assert f":{survivor.pid}:" in state["poller"]
        assert state["accepted"] == "1"
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
                await asyncio.wait_for(p.wait(), timeout=60)
    assert await redis.exists(Keys().feed_lease("cwa")) == 0  # the survivor released it
