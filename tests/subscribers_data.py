"""Real 菏泽 areas and synthetic subscribers for the subscriber and match tests."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from areas_data import ADMIN, GEO
from redis.asyncio import Redis

from warnd.area_import import import_file
from warnd.areas import AreaLevel, AreaRegistry
from warnd.groups import GroupSettings, GroupTable
from warnd.keys import Keys
from warnd.model import Alert
from warnd.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = Taxonomy.load(REPO / "config" / "taxonomy.toml")
CAP_ZH = Path(__file__).resolve().parents[2] / "shared" / "data" / "cap" / "zh"

GROUPS: dict[str, dict[str, Any]] = {
    "geo_monitors": {
        "name": "地质灾害隐患点监测员",
        "hazards": ["geological_hazard"],
        "channels": ["sms", "wechat"],
        "ack_required": True,
        "ack_deadline_minutes": 30,
    },
    "village_officers": {
        "name": "村级信息员",
        "min_level": "yellow",
        "channels": ["sms", "wechat"],
        "ack_required": True,
    },
    "schools": {"name": "学校", "min_level": "orange", "channels": ["wechat", "email", "sms"]},
    "boards": {"name": "公共显示屏", "channels": ["board"]},
    "duty_caoxian": {
        "name": "乡镇值班室",
        "areas": ["371721"],
        "channels": ["sms", "wechat", "email"],
        "channel_mode": "all",
    },
}


def group_table(groups: dict[str, dict[str, Any]] | None = None) -> GroupTable:
    cfg = {k: GroupSettings.model_validate(v) for k, v in (groups or GROUPS).items()}
    return GroupTable.build(cfg, TAXONOMY)


def heze_streets(tmp: Path) -> Path:
    """The 菏泽 townships out of the national list (a small file to import quickly)."""
    out = tmp / "streets-3717.csv"
    with (
        (ADMIN / "cn-stats2023-streets.csv").open(encoding="utf-8") as src,
        out.open("w", encoding="utf-8", newline="") as dst,
    ):
        reader = csv.reader(src)
        writer = csv.writer(dst)
        writer.writerow(next(reader))
        writer.writerows(row for row in reader if row[0].startswith("3717"))
    return out


async def import_heze(redis: Redis, tmp: Path) -> None:
    """菏泽's hierarchy and boundaries into Redis (for tests that run the app)."""
    files = [
        ADMIN / "cn-stats2023-provinces.csv",
        ADMIN / "cn-stats2023-cities.csv",
        ADMIN / "cn-stats2023-areas.csv",
        heze_streets(tmp),
        ADMIN / "cn-stats2023-villages-371700-heze.csv",
        GEO / "datav-371700_full.json",
    ]
    for f in files:
        await import_file(redis, Keys(), f)


def villages(registry: AreaRegistry, prefix: str) -> list[str]:
    return [a.code for a in registry.with_prefix(prefix) if a.level is AreaLevel.VILLAGE]


def points_in(geom: Any, n: int, seed: int = 1) -> Iterator[tuple[float, float]]:
    """``n`` random (lon, lat) points inside a WGS-84 geometry."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = geom.bounds
    made = 0
    while made < n:
        xs = rng.uniform(x0, x1, 4 * n)
        ys = rng.uniform(y0, y1, 4 * n)
        for x, y in zip(xs, ys, strict=True):
            if made < n and shapely.contains_xy(geom, x, y):
                made += 1
                yield float(x), float(y)


def square(lon: float, lat: float, half: float) -> list[tuple[float, float]]:
    """A closed CAP ring of (lat, lon) points around (lon, lat)."""
    return [
        (lat - half, lon - half),
        (lat - half, lon + half),
        (lat + half, lon + half),
        (lat + half, lon - half),
        (lat - half, lon - half),
    ]


def alert(*infos: dict[str, Any]) -> Alert:
    """An alert whose info blocks are given as (hazard, level, areas…) dicts."""
    body: dict[str, Any] = {
        "identifier": "test-1",
        "sender": "yjj@heze.gov.cn",
        "sent": "2030-07-01T08:00:00+08:00",
        "status": "Actual",
        "msg_type": "Alert",
        "scope": "Public",
        "infos": [],
    }
    for info in infos:
        body["infos"].append(
            {
                "categories": ["Met"],
                "event": "预警",
                "urgency": "Immediate",
                "severity": "Severe",
                "certainty": "Likely",
                **info,
            }
        )
    return Alert.model_validate(body)


def geocode(code: str) -> dict[str, Any]:
    return {"area_desc": code, "geocodes": [{"value_name": "GB/T 2260", "value": code}]}
