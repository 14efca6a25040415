"""The real administrative data the area tests import, and a helper to import it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis as redis_sync
from redis.asyncio import Redis

from warnd.area_import import ImportSummary, import_file
from warnd.areas import AreaRegistry
from warnd.keys import Keys
from warnd.redis_server import redis_client

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ADMIN = SHARED / "admin"
GEO = SHARED / "geo"

CODE_LISTS = [
    ADMIN / "cn-stats2023-provinces.csv",
    ADMIN / "cn-stats2023-cities.csv",
    ADMIN / "cn-stats2023-areas.csv",
    ADMIN / "cn-stats2023-streets.csv",
    ADMIN / "cn-stats2023-villages-371700-heze.csv",
]
BOUNDARIES = [
    GEO / "datav-100000_full.json",  # starts with a UTF-8 BOM
    GEO / "datav-370000_full.json",
    GEO / "datav-371700_full.json",
]

HEZE_COUNTIES = {
    "371702": "牡丹区",
    "371703": "定陶区",
    "371721": "曹县",
    "371722": "单县",
    "371723": "成武县",
    "371724": "巨野县",
    "371725": "郓城县",
    "371726": "鄄城县",
    "371728": "东明县",
}
HEZE_DEV_ZONES = {"371771": "菏泽经济技术开发区", "371772": "菏泽高新技术开发区"}


async def import_all(redis: Redis, keys: Keys, files: list[Path]) -> list[ImportSummary]:
    return [await import_file(redis, keys, f) for f in files]


def full_registry(redis_server: str) -> AreaRegistry:
    """Every code list and the DataV boundaries, imported and loaded (in memory)."""
    with redis_sync.Redis.from_url(redis_server) as client:
        client.flushall()

    async def build() -> AreaRegistry:
        client = redis_client(redis_server)
        try:
            await import_all(client, Keys(), [*CODE_LISTS, *BOUNDARIES])
            return await AreaRegistry.load(client, Keys())
        finally:
            await client.aclose()

    return asyncio.run(build())
