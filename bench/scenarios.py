"""The scenarios of `make bench`, all through warnd's real code path.

A run imports the 菏泽 areas and the subscribers with the `warnd` commands,
starts `warnd serve` on its own redis-server, submits alerts through the
HTTP API and watches the sink count the recipients; the peers reach the
same sink and the same recipients. See ``bench/README.md``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fanout import Stage, _cpu, _peer_json, _run_queue, alert_body
from harness import REPO, Child
from match import alert as cap_alert
from match import star_polygon, timed
from report import p99

from warnd.groups import GroupTable
from warnd.match import Matcher
from warnd.settings import load_settings
from warnd.subscribers import SubscriberStore
from warnd.taxonomy import Taxonomy


class Bench(Stage):
    """The scenarios, in rounds where a comparison needs it."""

    # --------------------------------------------------------- scenarios
    # --------------------------------------------------------- scenarios
    # Scenarios 1 and 2 and their comparisons run in rounds: round r runs
    # repetition r of warnd, the limit loop and a peer back to back, so each
    # ratio compares figures taken under the same load (the machine is shared).

    async def round(self, rep: int, chosen: list[str]) -> None:
        """Repetition ``rep`` of scenario 1, the limit loops, the peers and scenario 2 at 0 ms."""
        print(f"round {rep + 1} of {self.args.reps}", flush=True)
        if "bulk" in chosen:
            await self.bulk_rep(rep)
        if "limit" in chosen:
            await self.limit_rep("limit")
        if "arq" in chosen:
            await self.arq_rep()
        if "webhook" in chosen:
            await self.webhook_rep(rep)
        if "limit" in chosen:
            await self.limit_rep("limit_each")
        if "apprise" in chosen:
            await self.apprise_rep()

    async def bulk_rep(self, rep: int) -> None:
        """Scenario 1: the whole city, one SMS request per 1,000 numbers."""
        a = self.args
        profiler = self._profile("bulk") if a.profile and rep == 0 else None
        r = await self.fan_out(
            f"1 bulk SMS: {a.subscribers:,} SMS to 菏泽市",
            alert_body("371700", "rainstorm", "菏泽市"),
            a.subscribers,
        )
        if profiler is not None:
            self._profile_stop("bulk", profiler)
        self.runs.setdefault("bulk", []).append(r)

    async def webhook_rep(self, rep: int) -> None:
        """Scenario 2 at 0 ms: every WeChat robot, one request each."""
        a = self.args
        profiler = self._profile("webhook0") if a.profile and rep == 0 else None
        r = await self.fan_out(
            f"2 webhook: {a.endpoints:,} WeChat robots, 0 ms",
            alert_body("371700", "gale", "菏泽市"),
            a.endpoints,
        )
        if profiler is not None:
            self._profile_stop("webhook0", profiler)
        self.runs.setdefault("webhook0", []).append(r)

    def finish(self) -> None:
        """Rows of the rounds and the ratios between them (per round)."""
        rep, a = self.report, self.args
        self._rows("bulk", "1 bulk SMS", self._ok("bulk"), per_process=True)
        self._webhook_rows("webhook0", "2 webhook, 0 ms", self._ok("webhook0"))
        limit_note = f"{a.limit_concurrency} batches in flight, 10 connections"
        for key, n, shape in (
            ("limit", a.subscribers, "1,000 numbers per POST"),
            ("limit_each", a.endpoints, "one POST per recipient"),
        ):
            rep.add(
                f"{key}.deliveries_per_s",
                "limit loop",
                f"deliveries/s, {shape}",
                "/s",
                self._done(key),
                f"{n:,} recipients; {limit_note}",
            )
        rep.add(
            "arq.deliveries_per_s",
            "peer arq",
            "deliveries/s, one job each",
            "/s",
            self._done("arq"),
            f"{a.peer_recipients:,} recipients, enqueue included,"
            f" max_jobs {a.arq_max_jobs}, poll_delay {a.arq_poll_delay} s",
        )
        rep.add(
            "apprise.deliveries_per_s",
            "peer Apprise",
            "deliveries/s, one request each",
            "/s",
            self._done("apprise"),
            f"{a.peer_recipients:,} recipients",
        )
        for key, scenario, figure, top, bottom in (
            ("bulk.x_arq", "comparison", "warnd bulk ÷ arq, per recipient", "bulk", "arq"),
            ("bulk.of_limit", "comparison", "warnd bulk ÷ the limit loop", "bulk", "limit"),
            (
                "webhook0.x_apprise",
                "comparison",
                "warnd webhook 0 ms ÷ Apprise",
                "webhook0",
                "apprise",
            ),
            (
                "webhook0.of_limit",
                "comparison",
                "warnd webhook 0 ms ÷ the limit loop, one POST each",
                "webhook0",
                "limit_each",
            ),
            ("webhook0.x_arq", "comparison", "warnd webhook 0 ms ÷ arq", "webhook0", "arq"),
        ):
            rep.paired(key, scenario, figure, self._rates(top), self._rates(bottom))
        scale = self._ok("scaleout")
        if scale:
            rep.add(
                "scaleout.deliveries_per_s",
                "4 two processes",
                "deliveries/s with 2 processes",
                "/s",
                [r["rate"] for r in scale],
            )
            rep.add(
                "scaleout.one_per_s",
                "4 two processes",
                "deliveries/s with 1 process, same rounds",
                "/s",
                self._done("scaleout_one"),
            )
            rep.add(
                "scaleout.last_s",
                "4 two processes",
                "accepted → last send, 2 processes",
                "s",
                [r["last_s"] for r in scale],
            )
            rep.add(
                "scaleout.peak_rss_mib",
                "4 two processes",
                "peak RSS of both warnd processes",
                "MiB",
                [r["peak_rss_mib"] for r in scale],
            )
            rep.paired(
                "scaleout.ratio",
                "4 two processes",
                "2 processes ÷ 1 process",
                self._rates("scaleout"),
                self._rates("scaleout_one"),
            )
        for name, runs in self.runs.items():
            self.report.details[name] = runs

    def _ok(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.runs.get(name, []) if r]

    def _done(self, name: str) -> list[float]:
        """Deliveries/s of the rounds that succeeded."""
        return [r for r in self._rates(name) if r is not None]

    def _rates(self, name: str) -> list[float | None]:
        """Deliveries/s of each round (``None`` where that round failed)."""
        return [r["rate"] if r else None for r in self.runs.get(name, [])]

    async def probes(self) -> None:
        """Acceptance → first send for alerts to one township at a time."""
        a = self.args
        townships = sorted({v[:9] for v in self.villages[: a.subscribers]})
        step = max(1, len(townships) // a.probes)
        firsts = []
        sizes = []
        for code in townships[::step][: a.probes]:
            rows = self._rows_under(code, a.subscribers)
            r = await self.fan_out(
                f"township {code}", alert_body(code, "rainstorm", "乡镇"), a.subscribers, rows
            )
            if r:
                firsts.append(r["first_ms"])
                sizes.append(r["deliveries"])
        if firsts:
            median_size = sorted(sizes)[len(sizes) // 2]
            self.report.add(
                "probe.first_ms",
                "1 bulk SMS",
                f"accepted → first send, one township (~{median_size:,})",
                "ms",
                firsts,
                f"p99 {p99(firsts):.0f} ms over {len(firsts)} alerts",
            )
            self.report.add(
                "probe.first_p99_ms",
                "1 bulk SMS",
                "accepted → first send p99, township alerts",
                "ms",
                [p99(firsts)],
                f"nearest rank over {len(firsts)} alerts",
            )

    def _rows_under(self, code: str, n: int) -> list[int]:
        """The CSV rows (of ``n``) whose village is under ``code``: rows are dealt
        to the villages in turn (``bench/match.py``)."""
        v = len(self.villages)
        hit = [k for k, village in enumerate(self.villages) if village.startswith(code)]
        return sorted(k + v * m for k in hit for m in range((n - k + v - 1) // v) if k < n)

    def _rows(self, key: str, scenario: str, runs: list[dict[str, Any]], per_process: bool) -> None:
        if not runs:
            return
        rep = self.report
        rep.add(
            f"{key}.deliveries_per_s",
            scenario,
            "deliveries/s, accepted → last send",
            "/s",
            [r["rate"] for r in runs],
        )
        firsts = [r["first_ms"] for r in runs]
        rep.add(f"{key}.first_ms", scenario, "accepted → first send", "ms", firsts)
        rep.add(
            f"{key}.first_p99_ms",
            scenario,
            "accepted → first send p99 over repetitions",
            "ms",
            [p99(firsts)],
            f"nearest rank of {len(firsts)}: the slowest",
        )
        rep.add(f"{key}.last_s", scenario, "accepted → last send", "s", [r["last_s"] for r in runs])
        finals = [r["final_s"] for r in runs if r["final_s"] is not None]
        if finals:
            rep.add(
                f"{key}.final_s",
                scenario,
                "accepted → coverage final",
                "s",
                finals,
                self.report.details.get("coverage_source", ""),
            )
        if per_process:
            rep.add(
                f"{key}.peak_rss_mib",
                scenario,
                "peak RSS of warnd (all processes)",
                "MiB",
                [r["peak_rss_mib"] for r in runs],
                "VmHWM, subscriber index included",
            )
            rep.add(
                f"{key}.redis_bytes",
                scenario,
                "Redis memory per delivery, alert live",
                "B",
                [r["redis_bytes_per_delivery"] for r in runs],
            )
            rep.add(
                f"{key}.redis_record_bytes",
                scenario,
                "  of which the alert's delivery records",
                "B",
                [r["redis_record_bytes_per_delivery"] for r in runs],
                "MEMORY USAGE of the alert's keys",
            )
            rep.add(
                f"{key}.redis_provider_id_bytes",
                scenario,
                "  of which the SMS channel's receipt correlation",
                "B",
                [r["redis_provider_id_bytes_per_delivery"] for r in runs],
                "growth of the channel's daily id hash (sampled MEMORY USAGE)",
            )

    async def scaleout(self) -> None:
        """Scenario 4: scenario 1 with one process, then with a second `warnd serve`
        on the same Redis, back to back in each round (the second one is started
        for its run and stopped after it, so it takes no part in the other)."""
        a = self.args
        print("scenario 4: 1 then 2 warnd serve processes on one Redis", flush=True)
        for rep in range(a.reps):
            body = alert_body("371700", "rainstorm", "菏泽市")
            one = await self.fan_out(f"4 one process, round {rep + 1}", body, a.subscribers)
            second = self._warnd("warnd-b")
            try:
                await second.start()
                body = alert_body("371700", "rainstorm", "菏泽市")
                two = await self.fan_out(f"4 two processes, round {rep + 1}", body, a.subscribers)
            finally:
                second.stop()
                self.warnds.remove(second)
            self.runs.setdefault("scaleout_one", []).append(one)
            self.runs.setdefault("scaleout", []).append(two)

    async def webhook_slow(self) -> None:
        """Scenario 2 at 50 ms: the robots of one county (nearest ``--slow-endpoints``)."""
        a = self.args
        code, where, only = "371700", "菏泽市", None
        if a.slow_endpoints < a.endpoints:
            counties = sorted({v[:6] for v in self.villages})
            by_county = {c: self._rows_under(c, a.endpoints) for c in counties}
            by_county = {c: rows for c, rows in by_county.items() if rows}
            code = min(by_county, key=lambda c: abs(len(by_county[c]) - a.slow_endpoints))
            area = self.registry.get(code)
            where, only = (area.name if area else code), by_county[code]
        n = a.endpoints if only is None else len(only)
        runs = []
        for _ in range(a.reps):
            r = await self.fan_out(
                f"2 webhook: {n:,} WeChat robots ({where}), 50 ms",
                alert_body(code, "gale", where),
                a.endpoints,
                only,
                0.05,
            )
            if r:
                runs.append(r)
        self._webhook_rows("webhook50", "2 webhook, 50 ms", runs)
        self.report.details["webhook50"] = runs

    def _webhook_rows(self, key: str, scen: str, runs: list[dict[str, Any]]) -> None:
        if not runs:
            return
        n = runs[0]["deliveries"]
        self.report.add(
            f"{key}.deliveries_per_s",
            scen,
            "deliveries/s, one request each",
            "/s",
            [r["rate"] for r in runs],
            f"{n:,} robots",
        )
        self.report.add(
            f"{key}.first_ms", scen, "accepted → first send", "ms", [r["first_ms"] for r in runs]
        )
        self.report.add(
            f"{key}.last_s", scen, "accepted → last send", "s", [r["last_s"] for r in runs]
        )

    async def match(self) -> None:
        """Scenario 3: ``Matcher.match`` over the same registry (bench/match.py's cases)."""
        a = self.args
        print("scenario 3: matching (in this process, on the same Redis)", flush=True)
        settings = load_settings(self.config, env={})
        groups = GroupTable.build(settings.groups, Taxonomy.load(settings.taxonomy_file))
        matcher = Matcher(SubscriberStore(self.redis, self.keys), self.registry, groups)
        t = time.perf_counter()
        await matcher.load()
        self.report.details["match_index_load_s"] = round(time.perf_counter() - t, 1)
        county = cap_alert(
            [{"area_desc": "曹县", "geocodes": [{"value_name": "GB/T 2260", "value": "371721"}]}]
        )
        poly = cap_alert(
            [{"area_desc": "多边形", "polygons": [{"points": star_polygon(self.registry)}]}]
        )
        for key, name, alert in (
            ("geocode", "geocode 371721 (曹县)", county),
            ("polygon", "200-vertex polygon", poly),
        ):
            p50s, p95s = [], []
            for _ in range(a.reps):
                p50, p95, n, _ = await timed(matcher, alert, a.match_runs)
                p50s.append(p50)
                p95s.append(p95)
            note = f"{n:,} subscribers, {a.match_runs} timed runs per repetition"
            self.report.add(f"match.{key}.p50_ms", "3 matching", f"{name} p50", "ms", p50s, note)
            self.report.add(f"match.{key}.p95_ms", "3 matching", f"{name} p95", "ms", p95s, note)
        del matcher

    async def limit_rep(self, key: str) -> None:
        """The limit loop: 1,000 numbers per POST (``limit``), or one POST each (``limit_each``)."""
        a = self.args
        n = a.subscribers if key == "limit" else a.endpoints
        shape = ["--batch", "1000"] if key == "limit" else ["--robots", "--batch", "50"]
        await self.sink.reset(n)
        procs = {k: v for k, v in self._cpu_procs().items() if k != "warnd"}
        cpu0, (wait0, _) = _cpu(procs), _run_queue(procs)
        out = await _peer_json(
            *("limit", "--redis", self.redis_server.url, "--sink", self.sink.url),
            *("--recipients", str(n), "--concurrency", str(a.limit_concurrency), *shape),
        )
        cpu1, (wait1, _) = _cpu(procs), _run_queue(procs)
        ok = self._check_peer(key, await self.sink.stats(), n)
        rate = n / out["seconds"]
        cpu = {"limit": out["cpu_s"]} | {k: round(cpu1[k] - cpu0[k], 2) for k in cpu1}
        wait = {"limit": out["run_queue_s"]} | {k: round(wait1[k] - wait0[k], 2) for k in wait1}
        print(
            f"  {key} loop: {n:,} recipients → {rate:,.0f}/s; CPU s {cpu};"
            f" waiting for a core s {wait}",
            flush=True,
        )
        self.runs.setdefault(key, []).append(
            {"rate": rate, "seconds": out["seconds"], "cpu_s": cpu, "run_queue_s": wait}
            if ok
            else None
        )

    async def arq_rep(self) -> None:
        """arq: one job per recipient, enqueued one call each (timed from the first
        enqueue to the last arrival). Both run from arq's own virtualenv
        (``--arq-python``). The worker runs for this repetition only: idle, it
        still polls Redis every ``poll_delay`` (about 6 % of a core here at
        0.01 s), which would weigh on every measurement after it."""
        a = self.args
        n = a.peer_recipients
        self.arq_worker = Child(
            "arq-worker",
            [
                a.arq_python,
                str(REPO / "bench" / "peers.py"),
                "arq-worker",
                *("--redis", self.redis_server.url, "--sink", self.sink.url),
                *("--max-jobs", str(a.arq_max_jobs), "--poll-delay", str(a.arq_poll_delay)),
            ],
            self.work / "arq-worker.log",
        )
        try:
            await self.arq_worker.start("arq worker ready")
            await self.sink.reset(n)
            enqueue = _peer_json(
                "arq-enqueue",
                "--redis",
                self.redis_server.url,
                "--recipients",
                str(n),
                python=a.arq_python,
            )
            out, st = await asyncio.gather(enqueue, self.sink.wait(n, stall=a.stall))
        finally:
            self.arq_worker.stop()
            self.arq_worker = None
        ok = self._check_peer("arq", st, n)
        rate = n / (st["last"] - out["start"]) if st["last"] else 0.0
        print(f"  arq: {n:,} recipients → {rate:,.0f}/s", flush=True)
        self.runs.setdefault("arq", []).append({"rate": rate} if ok else None)

    async def apprise_rep(self) -> None:
        """Apprise: one ``notify()`` over the recipients' ``json://`` URLs."""
        n = self.args.peer_recipients
        await self.sink.reset(n)
        out = await _peer_json("apprise", "--sink", self.sink.url, "--recipients", str(n))
        ok = self._check_peer("apprise", await self.sink.stats(), n)
        rate = n / out["seconds"]
        print(f"  Apprise: {n:,} recipients → {rate:,.0f}/s", flush=True)
        self.runs.setdefault("apprise", []).append({"rate": rate} if ok else None)
