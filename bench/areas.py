"""Area registry figures on the real data: import, load, memory, resolve().

    .venv/bin/python bench/areas.py [--repeat N]

Starts its own redis-server (as the tests do: a temp dir, a free port),
imports every NBS code list (provinces, cities, counties, 41k townships,
the 5,040 villages of 菏泽市) and the DataV boundaries (China provinces,
Shandong prefectures, 菏泽 counties), then prints:

- import time per file and in total;
- registry load time (Redis → indexes) and its memory, both as traced
  Python allocations (tracemalloc; excludes GEOS' own C++ allocations)
  and as the process RSS growth;
- resolve() latency (median, p95, max over N runs, after warm-up) for a
  geocode, a county boundary used as a CAP polygon, a 200-vertex polygon
  and a 30 km circle.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from warnd.area_import import import_file
from warnd.areas import AreaRegistry
from warnd.keys import Keys
from warnd.model import Area
from warnd.redis_server import EmbeddedRedis, find_redis_server, redis_client

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = [
    SHARED / "admin" / "cn-stats2023-provinces.csv",
    SHARED / "admin" / "cn-stats2023-cities.csv",
    SHARED / "admin" / "cn-stats2023-areas.csv",
    SHARED / "admin" / "cn-stats2023-streets.csv",
    SHARED / "admin" / "cn-stats2023-villages-371700-heze.csv",
    SHARED / "geo" / "datav-100000_full.json",
    SHARED / "geo" / "datav-370000_full.json",
    SHARED / "geo" / "datav-371700_full.json",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _ring(geom: Any) -> list[tuple[float, float]]:
    """A CAP ring (lat, lon) from a shapely polygon's exterior (x=lon, y=lat)."""
    return [(y, x) for x, y in geom.exterior.coords]


def _timings(fn: Any, repeat: int) -> str:
    for _ in range(min(20, repeat)):
        fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    return (
        f"median {statistics.median(samples):7.3f} ms   p95 {p95:7.3f} ms"
        f"   max {samples[-1]:7.3f} ms"
    )


async def main(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp), port=_free_port(), executable=find_redis_server())
        await server.start()
        client = redis_client(server.url)
        keys = Keys("bench")
        try:
            print("import")
            total = 0.0
            for path in FILES:
                s = await import_file(client, keys, path)
                total += s.seconds
                print(
                    f"  {path.name:<42} {s.rows:>6} rows {s.accepted:>6} accepted"
                    f" {s.boundaries:>3} boundaries {s.rejected_count:>2} rejected"
                    f"  {s.seconds:6.2f} s"
                )
            print(f"  total {total:.2f} s")

            gc.collect()
            rss0 = _rss_mib()
            t = time.perf_counter()
            registry = await AreaRegistry.load(client, keys)
            load_s = time.perf_counter() - t
            gc.collect()
            rss1 = _rss_mib()
            # A second load under tracemalloc (which slows it down) for the
            # Python-object share of the memory.
            tracemalloc.start()
            traced_registry = await AreaRegistry.load(client, keys)
            gc.collect()
            traced, _peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            del traced_registry
            boundaries = sum(1 for a in registry if a.has_boundary)
            vertices = sum(
                shapely.get_num_coordinates(registry.boundary(a.code))
                for a in registry
                if a.has_boundary
            )
            print(
                f"load   {len(registry)} areas, {boundaries} boundaries ({vertices} vertices)"
                f" in {load_s:.3f} s"
            )
            print(
                f"memory {traced / 2**20:.1f} MiB traced (Python objects),"
                f" RSS +{rss1 - rss0:.1f} MiB (includes GEOS geometries and prepared indexes)"
            )

            caoxian = registry.boundary("371721")
            heze = registry.boundary("3717")
            if caoxian is None or heze is None:
                raise SystemExit("the 菏泽 boundaries did not import")
            county_poly = max(shapely.get_parts(caoxian), key=lambda g: g.area)
            c = heze.centroid
            angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
            radii = 0.25 + 0.1 * np.sin(angles * 7)
            ring200 = [
                (c.y + r * np.sin(a), c.x + r * np.cos(a))
                for r, a in zip(radii, angles, strict=True)
            ]
            ring200.append(ring200[0])
            cases = {
                "geocode 371721": Area(
                    area_desc="曹县",
                    geocodes=[{"value_name": "GB/T 2260", "value": "371721"}],
                ),
                f"county polygon ({len(county_poly.exterior.coords)} vertices, 曹县)": Area(
                    area_desc="曹县",
                    polygons=[{"points": _ring(county_poly)}],
                ),
                "200-vertex polygon over 菏泽": Area(
                    area_desc="p",
                    polygons=[{"points": ring200}],
                ),
                "30 km circle": Area(
                    area_desc="c",
                    circles=[{"lat": c.y, "lon": c.x, "radius_km": 30}],
                ),
            }
            print(f"resolve() over {repeat} runs after warm-up")
            for label, area in cases.items():
                r = registry.resolve(area)
                print(f"  {label:<42} {_timings(lambda a=area: registry.resolve(a), repeat)}")
                print(f"  {'':<42} → {len(r.codes)} codes: {', '.join(r.codes[:8])}")
        finally:
            await client.aclose()
            await server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.repeat))
    sys.exit(0)
