"""`GET /v1/areas/{code}` and `GET /v1/areas`, and the registry's life in the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from areas_data import ADMIN, GEO, HEZE_COUNTIES, HEZE_DEV_ZONES
from redis.asyncio import Redis

from warnd.api.app import create_app
from warnd.api.context import SERVICES
from warnd.area_import import import_file
from warnd.audit import Audit
from warnd.auth import Role, TokenStore
from warnd.keys import Keys
from warnd.settings import Settings
from warnd.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
KEYS = Keys()
FILES = [
    ADMIN / "cn-stats2023-provinces.csv",
    ADMIN / "cn-stats2023-cities.csv",
    ADMIN / "cn-stats2023-areas.csv",
    ADMIN / "cn-stats2023-villages-371700-heze.csv",
    GEO / "datav-371700_full.json",
]

Client = TestClient[Any, Any]


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return Taxonomy.load(REPO / "config" / "taxonomy.toml")


async def token(redis: Redis, role: str = "viewer") -> dict[str, str]:
    secret, _ = await TokenStore(redis, KEYS, Audit(redis, KEYS)).create(
        "areas-test", Role(role), (), actor="test"
    )
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def client(
    redis: Redis, make_settings: Callable[..., Settings], taxonomy: Taxonomy
) -> AsyncIterator[Client]:
    settings = make_settings(areas={"import": [str(f) for f in FILES], "reload_seconds": 0.2})
    app = create_app(settings, redis=redis, taxonomy=taxonomy)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_configured_files_are_imported_and_loaded_at_start(
    client: Client, redis: Redis
) -> None:
    registry = client.app[SERVICES].areas
    assert registry.get("371721") is not None
    assert len(registry) == 31 + 342 + 2975 + 5040
    assert await redis.hlen(KEYS.area_import_digests) == len(FILES)


async def test_get_area(client: Client, redis: Redis) -> None:
    resp = await client.get("/v1/areas/371700", headers=await token(redis))
    assert resp.status == 200
    body = await resp.json()
    assert body["code"] == "3717" and body["name"] == "菏泽市"
    assert body["level"] == "prefecture" and body["parent"] == "37"
    assert body["has_boundary"] is False and body["geometry_from"] is None
    assert {c["code"]: c["name"] for c in body["children"]} == HEZE_COUNTIES | HEZE_DEV_ZONES
    assert [a["code"] for a in body["ancestors"]] == ["37"]
    # No subscribers here: zero once the subscriber registry is attached, else null.
    assert body["subscribers"] is None or body["subscribers"]["total"] == 0

    resp = await client.get("/v1/areas/371721", headers=await token(redis))
    body = await resp.json()
    assert body["name"] == "曹县" and body["has_boundary"] is True
    assert body["geometry_from"] == "371721"
    # Villages sit directly under the county while townships are not imported.
    assert len(body["children"]) > 500
    assert all(c["level"] == "village" for c in body["children"])

    resp = await client.get("/v1/areas/371771", headers=await token(redis))
    body = await resp.json()
    assert body["has_boundary"] is False and body["geometry_from"] is None


async def test_unknown_and_malformed_codes(client: Client, redis: Redis) -> None:
    headers = await token(redis)
    resp = await client.get("/v1/areas/371799", headers=headers)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["status"] == 404 and "371799" in problem["detail"]
    resp = await client.get("/v1/areas/37x", headers=headers)
    assert resp.status == 400
    assert "only digits" in (await resp.json())["detail"]
    resp = await client.get("/v1/areas/371721")
    assert resp.status == 401


async def test_subscriber_counts_hook(client: Client, redis: Redis) -> None:
    seen: list[str] = []

    async def counter(code: str) -> Mapping[str, int]:
        seen.append(code)
        return {"total": 12, "direct": 2}

    client.app[SERVICES].areas.set_subscriber_counter(counter)
    resp = await client.get("/v1/areas/371721000000", headers=await token(redis))
    assert (await resp.json())["subscribers"] == {"total": 12, "direct": 2}
    assert seen == ["371721"]


async def test_list_by_prefix_in_pages(client: Client, redis: Redis) -> None:
    headers = await token(redis)
    resp = await client.get("/v1/areas?prefix=3717&level=county&limit=4", headers=headers)
    assert resp.status == 200
    page = await resp.json()
    codes = [a["code"] for a in page["items"]]
    assert codes == ["371702", "371703", "371721", "371722"]
    assert page["total"] == 1 + 11 + 5040
    collected = list(codes)
    nxt = page["next"]
    while nxt:
        page = await (await client.get(nxt, headers=headers)).json()
        collected += [a["code"] for a in page["items"]]
        nxt = page["next"]
    assert collected == sorted(HEZE_COUNTIES | HEZE_DEV_ZONES)

    resp = await client.get("/v1/areas?prefix=371721&limit=1000", headers=headers)
    items = (await resp.json())["items"]
    assert items[0]["code"] == "371721"
    assert all(a["code"].startswith("371721") for a in items)
    for bad in ("prefix=37a", "limit=0", "level=city", "cursor=x"):
        resp = await client.get(f"/v1/areas?{bad}", headers=headers)
        assert resp.status == 400, bad


async def test_running_app_reloads_after_an_import(
    client: Client, redis: Redis, tmp_path: Path
) -> None:
    registry = client.app[SERVICES].areas
    assert registry.get("371721001") is None
    streets = (ADMIN / "cn-stats2023-streets.csv").read_text(encoding="utf-8").splitlines()
    caoxian = [streets[0], *(line for line in streets if line.startswith("371721"))]
    (tmp_path / "caoxian-streets.csv").write_text("\n".join(caoxian) + "\n", encoding="utf-8")
    await import_file(redis, KEYS, tmp_path / "caoxian-streets.csv")
    for _ in range(100):
        if registry.get("371721001") is not None:
            break
        await asyncio.sleep(0.1)
    town = registry.get("371721001")
    assert town is not None and town.parent == "371721"
    resp = await client.get("/v1/areas/371721001001", headers=await token(redis))
    assert (await resp.json())["parent"] == "371721001"


async def test_openapi_documents_the_area_endpoints(client: Client) -> None:
    doc = await (await client.get("/v1/openapi.json")).json()
    assert "/v1/areas/{code}" in doc["paths"] and "/v1/areas" in doc["paths"]
    assert "AreaView" in doc["components"]["schemas"]
