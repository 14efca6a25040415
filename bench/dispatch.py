"""Dispatch throughput and latency through the sandbox channel.

    .venv/bin/python bench/dispatch.py [--recipients 1000000] [--runs 3] [--small 20] [--keep DIR]

One warnd process (planner and workers in the same event loop) on a
private redis-server, the ``sms`` channel through the sandbox (batches of
1,000, no recording, no rate limit). Prints, asserts nothing:

* deliveries/s for ``--recipients`` recipients (accepted → last send),
  per run, and the time from acceptance to the first and to the last send;
* p50/p99 of acceptance → first send over ``--small`` alerts of 1,000
  recipients each, sent one after another;
* Redis memory per delivery (``used_memory`` after the fan-out minus before);
* the CPU seconds warnd (and, of those, its garbage collector) and
  redis-server used for each run — on two cores these say what limits it;
  ``--redis-stats`` adds Redis time per command.

``--keep DIR`` keeps the Redis data (AOF) in ``DIR``: a second run reuses the
subscribers loaded by the first instead of loading them again.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from warnd.api.app import create_app
from warnd.api.context import SERVICES
from warnd.auth import Principal, Role
from warnd.dispatch.states import DeliveryState
from warnd.dispatch.store import DeliveryStore
from warnd.jsonform import alert_from_json
from warnd.keys import Keys
from warnd.logs import configure
from warnd.redis_server import EmbeddedRedis, find_redis_server, redis_client
from warnd.settings import Settings
from warnd.subscribers import Endpoints, Subscriber, SubscriberStore

REPO = Path(__file__).resolve().parent.parent
ADMIN = REPO.parent / "shared" / "data" / "admin"


async def villages(redis: Any) -> list[str]:
    from warnd.areas import AreaLevel, AreaRegistry

    reg = await AreaRegistry.load(redis, Keys())
    return sorted(a.code for a in reg.with_prefix("3717") if a.level is AreaLevel.VILLAGE)


async def load_subscribers(redis: Any, n: int, codes: list[str]) -> None:
    store = SubscriberStore(redis, Keys())
    started = time.perf_counter()
    for lo in range(0, n, 20_000):
        subs = [
            Subscriber.model_construct(
                id=f"s{i}",
                name="",
                area=codes[i % len(codes)],
                point=None,
                language="zh-Hans",
                groups=[],
                endpoints=Endpoints.model_construct(
                    sms=f"+86139{i:08d}", email=None, wechat=None, board=None
                ),
            )
            for i in range(lo, min(n, lo + 20_000))
        ]
        await store.upsert_many(subs)
    print(f"  loaded {n:,} subscribers in {time.perf_counter() - started:.1f} s", flush=True)


async def used_memory(redis: Any) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


class GcClock:
    """Time the process spends in the cyclic garbage collector."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._t = 0.0
        gc.callbacks.append(self._on)

    def _on(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._t
            self.full += info["generation"] == 2


async def redis_cpu(redis: Any) -> float:
    """CPU seconds redis-server has used (user + system)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def dispatch_one(
    svc: Any, store: DeliveryStore, code: str, n: int, ident: str
) -> dict[str, float]:
    alert = await alert_from_json(
        {
            "identifier": ident,
            "sent": "2030-07-01T08:00:00+08:00",
            "infos": [
                {
                    "hazard": "rainstorm",
                    "level": "red",
                    "urgency": "Immediate",
                    "headline": "菏泽市气象台发布暴雨红色预警信号",
                    "description": "预计未来3小时降雨量将达100毫米以上。",
                    "expires": "2030-07-02T20:00:00+08:00",
                    "areas": [
                        {
                            "area_desc": code,
                            "geocodes": [{"value_name": "GB/T 2260", "value": code}],
                        }
                    ],
                }
            ],
        },
        issuer=svc.settings.issuer,
        taxonomy=svc.taxonomy,
        next_seq=svc.next_identifier_seq,
    )
    principal = Principal(token_id="bench", name="bench", role=Role.ADMIN)  # noqa: S106
    acc = await svc.intake.accept(alert, principal=principal, source="bench")
    aid = acc.record.id
    while True:
        # Light polling (the benchmark shares the event loop with dispatch): the
        # plan hash, then the state string once planning is done.
        await asyncio.sleep(0.25)
        plan = await store.plan(aid)
        if plan.get("status") == "planned":
            left = await store.find(aid, [DeliveryState.QUEUED, DeliveryState.SENDING], 0, 1)
            if not left[0]:
                break
    accepted = int(plan["accepted_ms"])
    return {
        "deliveries": float(plan["deliveries"]),
        "first": (int(plan["first_sent"]) - accepted) / 1000,
        "last": (int(plan["last_sent"]) - accepted) / 1000,
        "start": (int(plan["t0"]) - accepted) / 1000,
        "planned": (int(plan["planned_ms"]) - accepted) / 1000,
    }


async def main(args: argparse.Namespace) -> None:
    gcc = GcClock()
    configure(args.log, "console")
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="warnd-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    run_tag = str(int(time.time()))  # fresh alert identifiers when the data is kept
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = EmbeddedRedis(tmp / "redis", port=port, executable=find_redis_server())
    await server.start()
    redis = redis_client(server.url)
    try:
        settings = Settings.model_validate(
            {
                "data_dir": tmp,
                "redis": {"url": server.url},
                "taxonomy_file": REPO / "config" / "taxonomy.toml",
                "render": {
                    "templates_dir": REPO / "templates",
                    "guidelines_file": REPO / "config" / "guidelines.toml",
                },
                "areas": {
                    "import": [
                        ADMIN / f
                        for f in (
                            "cn-stats2023-provinces.csv",
                            "cn-stats2023-cities.csv",
                            "cn-stats2023-areas.csv",
                            "cn-stats2023-streets.csv",
                            "cn-stats2023-villages-371700-heze.csv",
                        )
                    ]
                },
                "channels": {
                    "sms": {
                        "provider": "sandbox",
                        "record": "none",
                        "batch_size": 1000,
                        "rate_count": 100_000_000,
                    }
                },
                "dispatch": {"concurrency": args.concurrency},
            }
        )
        # First start: imports the areas; then the subscribers, then the real run.
        app = create_app(settings, redis=redis, poll_feeds=False)
        runner = web.AppRunner(app)
        await runner.setup()
        codes = await villages(redis)
        await runner.cleanup()
        small_codes = [c for c in codes if c.startswith("371721")]
        if await SubscriberStore(redis, Keys()).count() == args.recipients + 1000:
            print(f"  reusing {args.recipients:,} subscribers kept in {tmp}", flush=True)
        else:
            await load_subscribers(
                redis, args.recipients, [c for c in codes if not c.startswith("371721")] or codes
            )
            await load_subscribers_small(redis, small_codes, args.recipients)
        app = create_app(settings, redis=redis, poll_feeds=False)
        runner = web.AppRunner(app)
        await runner.setup()
        svc = app[SERVICES]
        store = DeliveryStore(redis, svc.keys)
        print(
            f"warnd dispatch benchmark: {args.recipients:,} recipients, sandbox sms, "
            f"batches of 1,000, concurrency {args.concurrency}",
            flush=True,
        )
        firsts: list[float] = []
        lasts: list[float] = []
        starts: list[float] = []
        for i in range(args.small):
            r = await dispatch_one(svc, store, "371721", 1000, f"bench-small-{run_tag}-{i}")
            firsts.append(r["first"])
            lasts.append(r["last"])
            starts.append(r["start"])
        if args.small:
            print(
                f"  {args.small} alerts x {int(r['deliveries']):,} recipients: accepted -> "
                f"first send p50 {_ms(statistics.median(firsts))} p99 {_ms(_p99(firsts))}; "
                f"-> last send p50 {_ms(statistics.median(lasts))} p99 {_ms(_p99(lasts))}; "
                f"-> planning started p50 {_ms(statistics.median(starts))}",
                flush=True,
            )
        big_firsts: list[float] = []
        big_lasts: list[float] = []
        for run in range(args.runs):
            before = await used_memory(redis)
            if args.redis_stats:
                await redis.config_resetstat()
            cpu0, rcpu0 = time.process_time(), await redis_cpu(redis)
            gc0, full0 = gcc.seconds, gcc.full
            r = await dispatch_one(
                svc, store, "371700", args.recipients, f"bench-big-{run_tag}-{run}"
            )
            cpu, rcpu = time.process_time() - cpu0, await redis_cpu(redis) - rcpu0
            after = await used_memory(redis)
            n = int(r["deliveries"])
            big_firsts.append(r["first"])
            big_lasts.append(r["last"])
            print(
                f"  run {run + 1}: {n:,} deliveries, planning started {_ms(r['start'])}, "
                f"first send {_ms(r['first'])}, all planned {r['planned']:.2f} s, last send "
                f"{r['last']:.2f} s -> {n / r['last']:,.0f} deliveries/s; Redis "
                f"{(after - before) / n:.1f} bytes/delivery; CPU warnd {cpu:.2f} s "
                f"(GC {gcc.seconds - gc0:.2f} s, {gcc.full - full0} full), "
                f"redis-server {rcpu:.2f} s",
                flush=True,
            )
            if args.redis_stats:
                await print_commandstats(redis)
        if args.runs:
            print(
                f"  {args.runs} runs: accepted -> first send "
                f"p50 {_ms(statistics.median(big_firsts))} p99 {_ms(_p99(big_firsts))}; "
                f"-> last send p50 {statistics.median(big_lasts):.2f} s "
                f"p99 {_p99(big_lasts):.2f} s",
                flush=True,
            )
        await runner.cleanup()
    finally:
        await redis.aclose()
        await server.stop()


async def load_subscribers_small(redis: Any, codes: list[str], offset: int) -> None:
    """1,000 subscribers in 曹县 for the latency alerts."""
    subs = [
        Subscriber.model_construct(
            id=f"c{i}",
            name="",
            area=codes[i % len(codes)],
            point=None,
            language="zh-Hans",
            groups=[],
            endpoints=Endpoints.model_construct(
                sms=f"+86138{i:08d}", email=None, wechat=None, board=None
            ),
        )
        for i in range(1000)
    ]
    await SubscriberStore(redis, Keys()).upsert_many(subs)


async def print_commandstats(redis: Any) -> None:
    """Redis time per command since the last reset, the costliest first."""
    stats = await redis.info("commandstats")
    rows = sorted(
        ((k.removeprefix("cmdstat_"), v) for k, v in stats.items()), key=lambda kv: -kv[1]["usec"]
    )
    for name, v in rows[:8]:
        print(
            f"    redis {name:<12} {v['calls']:>9,} calls {v['usec'] / 1e6:6.2f} s "
            f"({v['usec_per_call']:.1f} us/call)",
            flush=True,
        )


def _p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def _ms(s: float) -> str:
    return f"{s * 1000:.0f} ms"


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--recipients", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--small", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--keep", help="keep the Redis data in this directory and reuse it")
    p.add_argument("--log", default="warning", help="log level (info shows plan timings)")
    p.add_argument(
        "--redis-stats", action="store_true", help="print Redis time per command for each run"
    )
    asyncio.run(main(p.parse_args()))
