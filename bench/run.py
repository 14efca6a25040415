"""Every benchmark in one run: warnd end to end, the peers, the machine's limit.

    make bench                                   # the full run (≈ 12 min on 2 cores)
    .venv/bin/python bench/run.py --quick        # 100,000 subscribers: a few minutes
    .venv/bin/python bench/run.py --subscribers 200000 --reps 3 --scenarios bulk,limit,arq

Starts its own redis-server (a free port, append-only on, as warnd's embedded
one), the loopback sink (``bench/sink.py``) and `warnd serve` (the real HTTP
SMS and WeChat robot providers pointed at the sink); imports the 菏泽 areas and
the subscribers with the `warnd` commands; submits alerts through the HTTP
API. Every row is the median of the repetitions with min and max, every
comparison a ratio measured in this run. Prints the table and the targets,
writes ``bench/results/latest.json`` (and ``latest.md``). Exits 1 when a
delivery was lost or repeated anywhere. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from harness import machine  # noqa: E402
from report import Report, Target  # noqa: E402
from scenarios import Bench  # noqa: E402

from warnd import __version__  # noqa: E402
from warnd.logs import configure  # noqa: E402

SCENARIOS = ["bulk", "scaleout", "webhook", "match", "limit", "arq", "apprise"]
RESULTS = HERE / "results"

TARGETS = [
    Target("1: ≥ 300,000 deliveries/s", "bulk.deliveries_per_s", 300_000, True),
    Target("1: ≥ 100× the arq peer per recipient", "bulk.x_arq", 100, True),
    Target("1: ≥ 50 % of the limit loop", "bulk.of_limit", 0.5, True),
    Target("1: accepted → first send p99 ≤ 200 ms", "bulk.first_p99_ms", 200, False),
    Target("1: ≤ 64 bytes of Redis memory per delivery", "bulk.redis_bytes", 64, False),
    Target("2: ≥ 8,000 deliveries/s at 0 ms", "webhook0.deliveries_per_s", 8_000, True),
    Target("2: ≥ 15× Apprise", "webhook0.x_apprise", 15, True),
    Target("3: geocode alert p95 ≤ 100 ms", "match.geocode.p95_ms", 100, False),
    Target("3: polygon alert p95 ≤ 100 ms", "match.polygon.p95_ms", 100, False),
]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="100,000 subscribers, 10,000 robots, 5,000 peer recipients",
    )
    p.add_argument("--subscribers", type=int, help="SMS subscribers of scenario 1 (1,000,000)")
    p.add_argument("--endpoints", type=int, help="WeChat robots of scenario 2 (100,000)")
    p.add_argument(
        "--slow-endpoints",
        type=int,
        help="robots of scenario 2 at 50 ms: the county nearest this size (10,000)",
    )
    p.add_argument("--peer-recipients", type=int, help="recipients of arq and Apprise (20,000)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per row (3)")
    p.add_argument("--probes", type=int, help="one-township alerts for first-send latency (20)")
    p.add_argument("--match-runs", type=int, help="timed matches per repetition (30)")
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    p.add_argument("--concurrency", type=int, help="warnd [dispatch] concurrency (its default)")
    p.add_argument(
        "--limit-concurrency", type=int, default=4, help="POSTs in flight in the limit loop"
    )
    p.add_argument(
        "--arq-python",
        default=str(HERE.parent / ".venv-arq" / "bin" / "python"),
        help="interpreter of arq's own virtualenv (.venv-arq, made by `make bench`)",
    )
    p.add_argument("--arq-max-jobs", type=int, default=20, help="arq worker's max_jobs (20)")
    p.add_argument(
        "--arq-poll-delay",
        type=float,
        default=0.01,
        help="arq worker's poll_delay in s (0.01; arq's own 0.5 caps it near 200/s)",
    )
    p.add_argument("--log-level", default="info", help="warnd's log level (info, as deployed)")
    p.add_argument(
        "--stall",
        type=float,
        default=60.0,
        help="give up on a fan-out after this many seconds without an arrival",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the warnd process during scenario 1's first repetition",
    )
    p.add_argument(
        "--profile-rate",
        type=int,
        default=50,
        help="py-spy samples per second with --profile (50)",
    )
    p.add_argument("--work", help="work directory (kept; its subscriber files are reused)")
    p.add_argument(
        "--out", help="JSON to write (bench/results/latest.json; quick.json with --quick)"
    )
    args = p.parse_args(argv)
    big = not args.quick
    for name, full, quick in (
        ("subscribers", 1_000_000, 100_000),
        ("endpoints", 100_000, 10_000),
        ("slow_endpoints", 10_000, 2_000),
        ("peer_recipients", 20_000, 5_000),
        ("probes", 20, 10),
        ("match_runs", 30, 20),
    ):
        if getattr(args, name) is None:
            setattr(args, name, full if big else quick)
    if args.reps < 1:
        p.error("--reps must be at least 1")
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}: choose from {SCENARIOS}")
    if "arq" in args.scenarios.split(",") and not Path(args.arq_python).exists():
        p.error(
            f"{args.arq_python} does not exist: arq pins redis-py below 6, so it runs from"
            " its own virtualenv — `make bench` (or `make test`) creates .venv-arq;"
            " or leave arq out of --scenarios"
        )
    if args.out is None:
        args.out = str(RESULTS / ("quick.json" if args.quick else "latest.json"))
    return args


def versions(redis_version: str, arq_python: str) -> dict[str, str]:
    out = {"python": platform.python_version(), "warnd": __version__, "redis": redis_version}
    for dist in ("aiohttp", "redis", "hiredis", "apprise", "jinja2", "numpy"):
        try:
            out[dist if dist != "redis" else "redis-py"] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    probe = "import importlib.metadata as m; print(m.version('arq'), m.version('redis'))"
    try:
        done = subprocess.run(  # noqa: S603 - the configured interpreter, a fixed probe
            [arq_python, "-c", probe], capture_output=True, text=True, timeout=60, check=True
        )
        arq, redis_py = done.stdout.split()
        out["arq"] = f"{arq} (with redis-py {redis_py}, in its own virtualenv)"
    except (OSError, subprocess.SubprocessError, ValueError):
        out["arq"] = "not installed"
    return out


async def run(args: argparse.Namespace, work: Path) -> Report:
    configure("warning", "console")  # the harness's own Redis client and server
    report = Report()
    report.targets = [Target(t.text, t.key, t.threshold, t.higher_is_better) for t in TARGETS]
    chosen = args.scenarios.split(",")
    bench = Bench(args, work, report)
    try:
        print(f"setup in {work}", flush=True)
        await bench.setup()
        for rep in range(args.reps):
            await bench.round(rep, chosen)
        if "bulk" in chosen and args.probes:
            await bench.probes()
        if "scaleout" in chosen:
            await bench.scaleout()
        if "webhook" in chosen:
            await bench.webhook_slow()
        if "match" in chosen:
            await bench.match()
        bench.finish()
    finally:
        await bench.close()
    report.evaluate()
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.time()
    host = machine()
    command = shlex.join([".venv/bin/python", "bench/run.py", *(argv or sys.argv[1:])])
    # `make bench` says so itself: MAKELEVEL is also set under `make test`.
    if os.environ.get("WARND_BENCH_VIA_MAKE") and argv is None:
        command = "make bench" + (
            f" BENCH_ARGS={shlex.quote(os.environ['BENCH_ARGS'])}"
            if os.environ.get("BENCH_ARGS")
            else ""
        )
    keep = args.work is not None
    work = Path(args.work) if keep else Path(tempfile.mkdtemp(prefix="warnd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = asyncio.run(run(args, work))
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    host["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = {
        "schema": 1,
        "date": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        "command": command,
        "seconds": round(time.time() - started, 1),
        "machine": host,
        "versions": versions(str(report.details.pop("versions_redis", "?")), args.arq_python),
        "settings": {
            k: getattr(args, k)
            for k in (
                "quick",
                "subscribers",
                "endpoints",
                "slow_endpoints",
                "peer_recipients",
                "reps",
                "probes",
                "match_runs",
                "scenarios",
                "concurrency",
                "limit_concurrency",
                "log_level",
                "arq_python",
                "arq_max_jobs",
                "arq_poll_delay",
            )
        },
        **report.as_dict(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    header = (
        f"{doc['date']} · {host['cores']} cores, {host['cpu_model']} · Python"
        f" {doc['versions']['python']}, Redis {doc['versions']['redis']} · `{command}`"
    )
    out.with_suffix(".md").write_text(header + "\n\n" + report.markdown() + "\n")
    print(f"\n{header}\n\n{report.table()}\n\n{report.target_table()}\n")
    print(f"written: {out} and {out.with_suffix('.md').name} ({doc['seconds']:.0f} s)")
    if report.problems:
        print("\nDELIVERIES LOST OR REPEATED — these figures are not valid:")
        for p in report.problems:
            print(f"  !!! {p}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
