"""Benchmark: import and match 1,000,000 subscribers over the real 菏泽 villages.

    .venv/bin/python bench/match.py [--subscribers N] [--runs R] [--keep DIR]

Starts its own redis-server (warnd's EmbeddedRedis, in a temp dir), imports
the 菏泽 hierarchy (provinces, prefectures, counties, the 菏泽 townships,
the 5,040 villages) and the DataV county boundaries (GCJ-02, converted to
WGS-84 by the area import), writes N synthetic subscribers as CSV — spread
evenly over the villages, 70 % with a point inside their county's real
boundary, phones, some WeChat robots and display boards, in the groups of
config/demo.toml — then measures:

* the bulk import of that file through the same path as ``warnd
  subscribers import`` (parse, validate against the registry and groups,
  pipelined Redis writes), and Redis memory per subscriber;
* loading the in-memory match index from Redis, and its size;
* ``Matcher.match`` p50/p95 (after warm-up) for a county-wide geocode
  alert (曹县, 371721) and a 200-vertex polygon alert across several counties.

Figures are printed, never asserted (tests never time anything); see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import math
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
ADMIN = SHARED / "admin"
sys.path.insert(0, str(REPO))

from warnd.area_import import import_file  # noqa: E402
from warnd.areas import AreaLevel, AreaRegistry  # noqa: E402
from warnd.groups import GroupTable  # noqa: E402
from warnd.keys import Keys  # noqa: E402
from warnd.match import Matcher  # noqa: E402
from warnd.model import Alert  # noqa: E402
from warnd.redis_server import EmbeddedRedis, redis_client  # noqa: E402
from warnd.settings import load_settings  # noqa: E402
from warnd.subscriber_io import CSV_COLUMNS, Importer, import_lines  # noqa: E402
from warnd.subscribers import SubscriberContext, SubscriberStore  # noqa: E402
from warnd.taxonomy import Taxonomy  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def heze_streets(tmp: Path) -> Path:
    out = tmp / "streets-3717.csv"
    source = ADMIN / "cn-stats2023-streets.csv"
    with source.open(encoding="utf-8") as src, out.open("w", encoding="utf-8", newline="") as dst:
        reader = csv.reader(src)
        writer = csv.writer(dst)
        writer.writerow(next(reader))
        writer.writerows(r for r in reader if r[0].startswith("3717"))
    return out


def write_subscribers(
    path: Path,
    registry: AreaRegistry,
    groups: list[str],
    n: int,
    *,
    endpoints: str = "mixed",
    id_prefix: str = "s",
) -> None:
    """N subscribers spread over the 菏泽 villages, 70 % with a point in their county.

    ``endpoints``: ``mixed`` (phones, some WeChat robots, e-mail and boards
    by group), or one endpoint each that names the row — ``sms``
    (``139`` + the row number in 8 digits) or ``wechat`` (robot key
    ``bench-`` + the row number) — so a sink can tell every recipient apart.
    """
    if endpoints not in ("mixed", "sms", "wechat"):
        raise ValueError(f"endpoints={endpoints!r}: mixed, sms or wechat")
    rng = np.random.default_rng(2024)
    villages = [a.code for a in registry.with_prefix("3717") if a.level is AreaLevel.VILLAGE]
    per_county: dict[str, list[int]] = {}
    area_of = np.array([villages[i % len(villages)] for i in range(n)])
    for i, code in enumerate(area_of[: len(villages)]):
        per_county.setdefault(code[:6], []).append(i)
    lon = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    has_point = rng.random(n) < 0.7
    county_of = np.array([c[:6] for c in area_of])
    for county in sorted(set(county_of.tolist())):
        geom = registry.geometry(county)
        rows = np.flatnonzero((county_of == county) & has_point)
        if geom is None or not len(rows):
            continue
        x0, y0, x1, y1 = geom.bounds
        got: list[np.ndarray[Any, Any]] = []
        need = len(rows)
        while need > 0:
            xs = rng.uniform(x0, x1, need * 3)
            ys = rng.uniform(y0, y1, need * 3)
            ok = shapely.contains_xy(geom, xs, ys)
            pts = np.column_stack([xs[ok], ys[ok]])[:need]
            got.append(pts)
            need -= len(pts)
        pts = np.concatenate(got)
        lon[rows] = pts[:, 0]
        lat[rows] = pts[:, 1]
    phones = rng.integers(0, 10**8, n)
    prefixes = np.array(["138", "139", "150", "186", "199", "177"])[rng.integers(0, 6, n)]
    group_pick = rng.integers(0, len(groups), n)
    kind = rng.random(n)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for i in range(n):
            g = groups[group_pick[i]]
            if endpoints == "mixed":
                board = f"board-{i}" if g == "boards" else ""
                sms = "" if g == "boards" else f"{prefixes[i]}{phones[i]:08d}"
                wechat = f"robot-{i % 997}" if kind[i] < 0.2 and not board else ""
                email = f"u{i}@example.cn" if g == "schools" and kind[i] < 0.5 else ""
            else:
                board = email = ""
                sms = f"139{i:08d}" if endpoints == "sms" else ""
                wechat = f"bench-{i:08d}" if endpoints == "wechat" else ""
            point = ("", "") if math.isnan(lon[i]) else (f"{lon[i]:.6f}", f"{lat[i]:.6f}")
            w.writerow(
                [
                    f"{id_prefix}{i:07d}",
                    f"订阅者{i}",
                    area_of[i],
                    *point,
                    "zh-Hans",
                    g,
                    sms,
                    email,
                    wechat,
                    board,
                ]
            )


def star_polygon(registry: AreaRegistry, vertices: int = 200) -> list[tuple[float, float]]:
    counties = [a.code for a in registry.with_prefix("3717") if a.level is AreaLevel.COUNTY]
    heze = shapely.union_all([g for c in counties if (g := registry.boundary(c)) is not None])
    c = heze.centroid
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = 0.25 + 0.1 * np.sin(t * 7)
    ring = [
        (float(c.y + ri * np.sin(ti)), float(c.x + ri * np.cos(ti)))
        for ri, ti in zip(r, t, strict=True)
    ]
    return [*ring, ring[0]]


def alert(areas: list[dict[str, Any]]) -> Alert:
    return Alert.model_validate(
        {
            "identifier": "bench",
            "sender": "yjj@heze.gov.cn",
            "sent": "2030-07-01T08:00:00+08:00",
            "status": "Actual",
            "msg_type": "Alert",
            "scope": "Public",
            "infos": [
                {
                    "categories": ["Met"],
                    "event": "暴雨红色预警",
                    "urgency": "Immediate",
                    "severity": "Extreme",
                    "certainty": "Likely",
                    "hazard": "rainstorm",
                    "level": "red",
                    "areas": areas,
                }
            ],
        }
    )


async def timed(matcher: Matcher, a: Alert, runs: int) -> tuple[float, float, int, int]:
    for _ in range(3):  # warm-up
        audience = await matcher.match(a)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        audience = await matcher.match(a)
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, math.ceil(0.95 * len(samples)) - 1)]
    return statistics.median(samples), p95, len(audience), audience.deliveries_count


async def main(args: argparse.Namespace) -> None:
    tmp = Path(args.keep)
    settings = load_settings(REPO / "config" / "demo.toml", env={})
    taxonomy = Taxonomy.load(settings.taxonomy_file)
    groups = GroupTable.build(settings.groups, taxonomy)
    shutil.rmtree(tmp / "redis", ignore_errors=True)  # a fresh server, even with --keep
    async with EmbeddedRedis(tmp / "redis") as server:
        redis = redis_client(server.url)
        keys = Keys()
        t = time.perf_counter()
        for f in [
            ADMIN / "cn-stats2023-provinces.csv",
            ADMIN / "cn-stats2023-cities.csv",
            ADMIN / "cn-stats2023-areas.csv",
            heze_streets(tmp),
            ADMIN / "cn-stats2023-villages-371700-heze.csv",
            SHARED / "geo" / "datav-371700_full.json",
        ]:
            await import_file(redis, keys, f)
        registry = await AreaRegistry.load(redis, keys)
        print(f"areas: {len(registry):,} imported and indexed in {time.perf_counter() - t:.1f} s")

        data = tmp / f"subscribers-{args.subscribers}.csv"
        t = time.perf_counter()
        if data.exists():  # kept from an earlier run with --keep (same seed, same rows)
            print(f"synthetic file: {args.subscribers:,} rows, reused {data}")
        else:
            write_subscribers(
                data, registry, [g.key for g in groups if g.key != "default"], args.subscribers
            )
            size = data.stat().st_size / 2**20
            print(
                f"synthetic file: {args.subscribers:,} rows, {size:.0f} MiB,"
                f" written in {time.perf_counter() - t:.1f} s"
            )

        used_before = int((await redis.info("memory"))["used_memory"])
        store = SubscriberStore(redis, keys)
        importer = Importer(
            store, SubscriberContext(registry=registry, groups=groups), csv_locs=True
        )
        t = time.perf_counter()
        with data.open("rb") as fh:
            summary = await import_lines(fh, "csv", importer)
        took = time.perf_counter() - t
        print(
            f"import: {summary.accepted:,} accepted, {summary.rejected:,} rejected in {took:.1f} s"
            f" ({summary.accepted / took:,.0f} rows/s)   target <= 60 s"
        )
        used_after = int((await redis.info("memory"))["used_memory"])
        per = (used_after - used_before) / max(summary.accepted, 1)
        print(
            f"redis: {(used_after - used_before) / 2**20:.0f} MiB for the subscribers and"
            f" their indexes, {per:.0f} bytes per subscriber"
        )
        if args.import_only:
            await redis.aclose()
            return

        gc.collect()
        rss0 = rss_mb()
        matcher = Matcher(store, registry, groups)
        t = time.perf_counter()
        await matcher.load()
        took = time.perf_counter() - t
        gc.collect()
        await matcher.match(
            alert(
                [
                    {
                        "area_desc": "曹县",
                        "geocodes": [{"value_name": "GB/T 2260", "value": "371721"}],
                    }
                ]
            )
        )
        print(
            f"index: {len(matcher.index):,} subscribers loaded in {took:.1f} s;"
            f" {matcher.index.memory_bytes / 2**20:.0f} MiB by count (arrays + id table),"
            f" process RSS +{rss_mb() - rss0:.0f} MiB   target <= 400 MB"
        )

        county = alert(
            [{"area_desc": "曹县", "geocodes": [{"value_name": "GB/T 2260", "value": "371721"}]}]
        )
        p50, p95, n, d = await timed(matcher, county, args.runs)
        print(
            f"match county geocode 371721: p50 {p50:.1f} ms, p95 {p95:.1f} ms"
            f" ({n:,} subscribers, {d:,} deliveries)   target p95 <= 100 ms"
        )
        ring = star_polygon(registry)
        poly = alert([{"area_desc": "多边形", "polygons": [{"points": ring}]}])
        resolved = registry.resolve(poly.infos[0].areas[0])
        p50, p95, n, d = await timed(matcher, poly, args.runs)
        print(
            f"match 200-vertex polygon ({len(resolved.codes)} areas:"
            f" {', '.join(resolved.codes)}): p50 {p50:.1f} ms, p95 {p95:.1f} ms"
            f" ({n:,} subscribers, {d:,} deliveries)   target p95 <= 100 ms"
        )
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--keep", help="work in this directory (kept) instead of a temp dir")
    parser.add_argument(
        "--import-only", action="store_true", help="stop after the import and its memory figures"
    )
    args = parser.parse_args()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        asyncio.run(main(args))
    else:
        with tempfile.TemporaryDirectory(prefix="warnd-bench-") as work:
            args.keep = work
            asyncio.run(main(args))
