"""The warnd under test: its Redis, sink and processes, one fan-out measured.

``Stage`` sets a run up (areas and subscribers imported with the `warnd`
commands, `warnd serve` started), submits an alert through the HTTP API and
waits until the sink has every recipient, checking that each arrived exactly
once; ``bench/scenarios.py`` builds the scenarios on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
from harness import PYTHON, REPO, Child, Sink, Warnd, cli, free_port
from match import ADMIN, SHARED, heze_streets, write_subscribers
from report import Report

from warnd.areas import AreaLevel, AreaRegistry
from warnd.audit import Audit
from warnd.auth import Role, TokenStore
from warnd.dispatch.store import DeliveryStore
from warnd.keys import Keys
from warnd.redis_server import EmbeddedRedis, find_redis_server, redis_client

BEIJING = timezone(timedelta(hours=8))
COVERAGE_ROUTE = "/v1/alerts/{id}/coverage"
PENDING = ("queued", "sending")


def alert_body(code: str, hazard: str, area_desc: str) -> dict[str, Any]:
    """A red warning for one administrative code, valid for twelve hours."""
    expires = (datetime.now(BEIJING) + timedelta(hours=12)).isoformat(timespec="seconds")
    event = {"rainstorm": "暴雨", "gale": "大风"}[hazard]
    return {
        "infos": [
            {
                "hazard": hazard,
                "level": "red",
                "urgency": "Immediate",
                "headline": f"菏泽市气象台发布{event}红色预警信号",
                "description": f"预计未来3小时{area_desc}将出现{event}，请注意防范。",
                "expires": expires,
                "areas": [
                    {
                        "area_desc": area_desc,
                        "geocodes": [{"value_name": "GB/T 2260", "value": code}],
                    }
                ],
            }
        ]
    }


class Stage:
    """One benchmark run's Redis, sink, warnd processes and report."""

    def __init__(self, args: argparse.Namespace, work: Path, report: Report) -> None:
        self.args = args
        self.work = work
        self.report = report
        self.keys = Keys()
        self.redis_server = EmbeddedRedis(
            work / "redis", port=free_port(), executable=find_redis_server()
        )
        self.sink = Sink(work)
        self.warnds: list[Warnd] = []
        self.token = ""
        self.villages: list[str] = []
        self.coverage_route = False
        self.runs: dict[str, list[dict[str, Any] | None]] = {}
        """Per round: each scenario's figures (``None``: that repetition failed)."""
        self.arq_worker: Child | None = None
        self._http: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------- setup
    async def setup(self) -> None:
        a = self.args
        shutil.rmtree(self.work / "redis", ignore_errors=True)  # a fresh store, even in --work
        await self.redis_server.start()
        self.redis = redis_client(self.redis_server.url)
        self.store = DeliveryStore(self.redis, self.keys)
        await self.sink.start()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        info = await self.redis.info("server")
        self.report.details["versions_redis"] = str(info["redis_version"])
        self.config = self._warnd("warnd-a").config  # written now, started later

        t = time.perf_counter()
        files = [
            ADMIN / "cn-stats2023-provinces.csv",
            ADMIN / "cn-stats2023-cities.csv",
            ADMIN / "cn-stats2023-areas.csv",
            heze_streets(self.work),
            ADMIN / "cn-stats2023-villages-371700-heze.csv",
            SHARED / "geo" / "datav-371700_full.json",
        ]
        cli(self.config, "areas", "import", *map(str, files))
        self.registry = await AreaRegistry.load(self.redis, self.keys)
        self.villages = [
            x.code for x in self.registry.with_prefix("3717") if x.level is AreaLevel.VILLAGE
        ]
        setup: dict[str, Any] = {"areas_import_s": round(time.perf_counter() - t, 1)}

        for kind, n, group, prefix in (
            ("sms", a.subscribers, "public", "s"),
            ("wechat", a.endpoints, "robots", "r"),
        ):
            path = self.work / f"{group}-{n}.csv"
            if not path.exists():  # kept in --work from an earlier run: same rows
                t = time.perf_counter()
                write_subscribers(path, self.registry, [group], n, endpoints=kind, id_prefix=prefix)
                setup[f"{group}_csv_s"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            out = json.loads(cli(self.config, "subscribers", "import", str(path), "--json"))
            took = time.perf_counter() - t
            setup[f"{group}_import"] = {
                "rows": n,
                "accepted": out.get("accepted"),
                "rejected": out.get("rejected"),
                "seconds": round(took, 1),
                "rows_per_s": round(n / took),
            }
            if out.get("accepted") != n:
                self.report.problem(f"subscriber import accepted {out.get('accepted')} of {n}")
            print(f"  imported {n:,} {group} subscribers in {took:.1f} s", flush=True)
        self.report.details["setup"] = setup
        token, _ = await TokenStore(self.redis, self.keys, Audit(self.redis, self.keys)).create(
            "bench", Role.ADMIN, [], actor="bench"
        )
        self.token = token
        t = time.perf_counter()
        first = await self.warnds[0].start()
        setup["warnd_start_s"] = round(time.perf_counter() - t, 1)
        async with self.http.get(f"{first.url}/v1/openapi.json") as resp:
            self.coverage_route = COVERAGE_ROUTE in (await resp.json()).get("paths", {})
        self.report.details["coverage_source"] = (
            "coverage report (GET /v1/alerts/{id}/coverage, final)"
            if self.coverage_route
            else "dispatch plan: planned and no delivery queued or sending (no coverage report yet)"
        )

    def _warnd(self, name: str) -> Warnd:
        w = Warnd(
            self.work,
            name,
            self.redis_server.url,
            self.sink.url,
            log_level=self.args.log_level,
            concurrency=self.args.concurrency,
        )
        self.warnds.append(w)
        return w

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("setup() first")
        return self._http

    async def close(self) -> None:
        if self.arq_worker is not None:
            self.arq_worker.stop()
        for w in self.warnds:
            w.stop()
        if self._http is not None:
            await self._http.close()
        await self.sink.stop()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        await self.redis_server.stop()

    # --------------------------------------------------------- fan-out
    async def post_alert(self, body: dict[str, Any]) -> str:
        url = f"{self.warnds[0].url}/v1/alerts"
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.post(url, json=body, headers=headers) as resp:
            doc: dict[str, Any] = await resp.json()
            if resp.status != 202:
                raise RuntimeError(f"alert refused ({resp.status}): {doc}")
            return str(doc["id"])

    async def settled(self, aid: str, within: float = 300.0) -> tuple[dict[str, str], Counter[str]]:
        """The plan once planning ended and nothing is queued or sending."""
        deadline = time.monotonic() + within
        while True:
            plan = await self.store.plan(aid)
            states: Counter[str] = Counter()
            if plan.get("status") in ("planned", "skipped"):
                for k, n in (await self.store.counters(aid)).items():
                    states[k.rsplit("|", 1)[1]] += n
                if not any(states[s] for s in PENDING) or time.monotonic() > deadline:
                    return plan, states
            elif time.monotonic() > deadline:
                return plan, states
            await asyncio.sleep(0.1)

    async def coverage_final(self, aid: str, within: float = 120.0) -> float | None:
        """Epoch seconds at which the coverage report said final (polled every 0.1 s).

        The county view (``level=county``): the same report and the same
        ``final``, without 5,000 village rows to encode ten times a second
        on the cores the fan-out runs on.
        """
        url = f"{self.warnds[0].url}{COVERAGE_ROUTE.format(id=aid)}?level=county"
        headers = {"Authorization": f"Bearer {self.token}"}
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            async with self.http.get(url, headers=headers) as resp:
                if resp.status == 200 and (await resp.json()).get("final") is True:
                    return time.time()
            await asyncio.sleep(0.1)
        return None

    async def fan_out(
        self,
        label: str,
        body: dict[str, Any],
        space: int,
        only: list[int] | None = None,
        latency: float = 0.0,
    ) -> dict[str, Any] | None:
        """Submit one alert, wait until the sink has every recipient; its figures.

        The recipients are ``only`` (default: all) of the rows ``0 … space-1``.
        """
        expect = space if only is None else len(only)
        await self.sink.reset(space, only, latency)
        used0 = int((await self.redis.info("memory"))["used_memory"])
        pids0 = await self._provider_ids_bytes()
        procs = self._cpu_procs()
        cpu0 = _cpu(procs)
        wait0, loop0 = _run_queue(procs)
        traffic0 = await redis_traffic(self.redis)
        peak = {"rss": 0}
        sampling = asyncio.create_task(self._sample_rss(peak))
        aid = await self.post_alert(body)
        st = await self.sink.wait(expect, stall=self.args.stall)
        complete = st["distinct"] >= expect
        plan, states = await self.settled(aid, within=300 if complete else 5)
        settled_at = time.time()
        final_at = None
        if self.coverage_route:
            final_at = await self.coverage_final(aid, within=120 if complete else 5)
        elif complete:
            final_at = settled_at
        used1 = int((await self.redis.info("memory"))["used_memory"])
        pids1 = await self._provider_ids_bytes()
        records = 0
        for key in await self.store.all_keys(aid):
            records += int(await self.redis.memory_usage(key, samples=0) or 0)
        cpu1 = _cpu(procs)
        wait1, loop1 = _run_queue(procs)
        traffic1 = await redis_traffic(self.redis)
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        self._check(label, st, plan, states, expect)
        if not st["first"] or "accepted_ms" not in plan:
            return None
        accepted = int(plan["accepted_ms"]) / 1000
        deliveries = int(plan.get("deliveries", 0)) or st["distinct"]
        took = st["last"] - accepted
        out = {
            "alert_id": aid,
            "deliveries": deliveries,
            "rate": deliveries / took if took > 0 else float("nan"),
            "first_ms": (st["first"] - accepted) * 1000,
            "last_s": took,
            "planned_s": (int(plan["planned_ms"]) / 1000 - accepted)
            if "planned_ms" in plan
            else None,
            "final_s": (final_at - accepted) if final_at else None,
            "redis_bytes_per_delivery": (used1 - used0) / max(deliveries, 1),
            "redis_record_bytes_per_delivery": records / max(deliveries, 1),
            "redis_provider_id_bytes_per_delivery": (pids1 - pids0) / max(deliveries, 1),
            "peak_rss_mib": max(peak["rss"], sum(w.child.peak_rss() for w in self.warnds)) / 2**20,
            "sampled_rss_mib": peak["rss"] / 2**20,
            "requests": st["requests"],
            "cpu_s": {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1},
            "warnd_loop_cpu_s": round(loop1 - loop0, 2),
            "run_queue_s": {k: round(wait1[k] - wait0.get(k, 0.0), 2) for k in wait1},
            "redis_traffic": {
                k: v - traffic0.get(k, 0) for k, v in traffic1.items() if v != traffic0.get(k, 0)
            },
        }
        print(
            f"  {label}: {deliveries:,} deliveries in {took:.2f} s → {out['rate']:,.0f}/s;"
            f" first send {out['first_ms']:.0f} ms; {st['requests']:,} requests;"
            f" Redis {out['redis_bytes_per_delivery']:.1f} B/delivery; CPU s {out['cpu_s']}"
            f" (event loop {out['warnd_loop_cpu_s']}); waiting for a core s {out['run_queue_s']}",
            flush=True,
        )
        return out

    async def _provider_ids_bytes(self) -> int:
        """Size of the SMS channel's daily hash that lets receipts find their delivery
        (request → deliveries, or message id → delivery; sampled MEMORY USAGE)."""
        key = self.keys.provider_ids("sms", time.strftime("%Y%m%d", time.gmtime()))
        return int(await self.redis.memory_usage(key) or 0)

    def _check(
        self,
        label: str,
        st: dict[str, Any],
        plan: dict[str, str],
        states: Counter[str],
        expect: int,
    ) -> None:
        wrong = []
        if st["distinct"] != expect:
            wrong.append(f"{expect - st['distinct']:,} of {expect:,} recipients never arrived")
        if st["duplicates"]:
            wrong.append(f"{st['duplicates']:,} recipients arrived more than once")
        if st["unexpected"]:
            wrong.append(f"{st['unexpected']:,} arrivals for recipients not in the alert")
        if st["rejected"]:
            wrong.append(f"{st['rejected']:,} requests the sink could not read")
        if int(plan.get("deliveries", -1)) != expect:
            wrong.append(f"warnd planned {plan.get('deliveries')} deliveries, expected {expect:,}")
        others = {s: n for s, n in states.items() if s != "sent" and n}
        if others:
            wrong.append(f"deliveries not sent: {others}")
        if wrong:
            self.report.problem(f"{label}: " + "; ".join(wrong))

    def _cpu_procs(self) -> dict[str, list[int]]:
        return {
            "warnd": [w.child.pid for w in self.warnds if w.child.running],
            "redis": [self.redis_server.pid or 0],
            "sink": [self.sink.child.pid],
        }

    async def _sample_rss(self, peak: dict[str, int]) -> None:
        while True:
            rss = sum(w.child.rss() for w in self.warnds)
            peak["rss"] = max(peak["rss"], rss)
            await asyncio.sleep(0.2)

    def _check_peer(self, name: str, st: dict[str, Any], n: int) -> bool:
        if st["distinct"] != n or st["duplicates"] or st["unexpected"] or st["rejected"]:
            self.report.problem(
                f"{name}: {st['distinct']:,} of {n:,} recipients arrived,"
                f" {st['duplicates']:,} twice, {st['unexpected']:,} unexpected"
            )
            return False
        return True

    # ----------------------------------------------------------- profile
    def _profile(self, name: str) -> subprocess.Popen[bytes]:
        """py-spy (sampling, non-blocking) on the first warnd process, until stopped."""
        out = self.work / f"profile-{name}.txt"
        argv = [
            str(Path(PYTHON).parent / "py-spy"),
            "record",
            "--pid",
            str(self.warnds[0].child.pid),
        ]
        argv += [
            "--rate",
            str(self.args.profile_rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603

    def _profile_stop(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        path = self.work / f"profile-{name}.txt"
        if path.exists():
            self.report.details.setdefault("profile", {})[name] = summarise_profile(path)


def summarise_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares of the hottest functions in py-spy's raw output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [
            f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")") for f in stack.split(";")
        ]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * k / max(total, 1), 1)) for f, k in c.most_common(top)]

    return {"samples": total, "self_percent": share(own), "inclusive_percent": share(incl)}


def _cpu(procs: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each group of processes."""
    out: dict[str, float] = {}
    for name, pids in procs.items():
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
        out[name] = total
    return out


def _run_queue(procs: dict[str, list[int]]) -> tuple[dict[str, float], float]:
    """Seconds each group's threads have spent runnable but waiting for a core
    (``/proc/<pid>/task/<tid>/schedstat``, second field), and the CPU seconds
    of warnd's main threads (its event loops) alone (the first field); 0
    where unreadable."""
    waits: dict[str, float] = {}
    loop = 0
    for name, pids in procs.items():
        total = 0
        for pid in pids:
            for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = stat.read_text().split()
                    total += int(fields[1])
                    if name == "warnd" and stat.parent.name == str(pid):
                        loop += int(fields[0])
        waits[name] = total / 1e9
    return waits, loop / 1e9


async def _peer_json(*args: str, python: str = PYTHON) -> dict[str, Any]:
    """Run ``bench/peers.py`` with ``python``; the JSON line it prints last."""
    proc = await asyncio.create_subprocess_exec(
        python,
        str(REPO / "bench" / "peers.py"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"peers.py {args[0]} exited {proc.returncode}: {err.decode()[-2000:]}")
    doc: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return doc


async def redis_traffic(redis: Any) -> dict[str, int]:
    """Redis's counters of work done so far: commands, socket reads (about one
    per client write), bytes in and out."""
    info = await redis.info("stats")
    out = {
        "commands": int(info["total_commands_processed"]),
        "reads": int(info.get("total_reads_processed", 0)),
        "in_bytes": int(info["total_net_input_bytes"]),
        "out_bytes": int(info["total_net_output_bytes"]),
    }
    # Microseconds Redis spent per command (a script's own calls count in it
    # and under their names): where its CPU goes.
    for name, stats in (await redis.info("commandstats")).items():
        out[f"us {name.removeprefix('cmdstat_')}"] = int(stats["usec"])
    return out
