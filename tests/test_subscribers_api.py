"""Subscriber endpoints and the match preview, through the real app and Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from subscribers_data import CAP_ZH, GROUPS, TAXONOMY, import_heze

from warnd.api.app import create_app
from warnd.audit import Audit
from warnd.auth import Role, TokenStore
from warnd.keys import Keys
from warnd.settings import Settings

Client = TestClient[Any, Any]


@pytest.fixture
async def client(
    redis: Redis, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Client]:
    await import_heze(redis, tmp_path)
    app = create_app(make_settings(groups=GROUPS), redis=redis, taxonomy=TAXONOMY)
    async with TestClient(TestServer(app)) as c:
        yield c


async def token(redis: Redis, role: str, *areas: str) -> dict[str, str]:
    secret, _ = await TokenStore(redis, Keys(), Audit(redis, Keys())).create(
        f"{role}-{'-'.join(areas)}", Role(role), areas, actor="test"
    )
    return {"Authorization": f"Bearer {secret}"}


CSV = (
    "id,name,area,lon,lat,language,groups,sms,email,wechat,board\n"
    "cx-1,南关村信息员,371721001001,,,,village_officers,13800138000,,cao-robot,\n"
    "cx-2,曹县一中,371721001002,,,,schools,,school@cx.cn,,\n"
    "cx-3,坏号码,371721001003,,,,village_officers,12345,,,\n"
    "sx-1,单县广场屏,371722001001,,,,boards,,,,board-sx-1\n"
)


async def test_bulk_import_is_streamed_and_summarised(client: Client, redis: Redis) -> None:
    admin = await token(redis, "admin")

    async def chunks() -> AsyncIterator[bytes]:
        data = CSV.encode()
        for i in range(0, len(data), 7):  # arrives in pieces, lines split across them
            yield data[i : i + 7]

    resp = await client.post(
        "/v1/subscribers/import", data=chunks(), headers={**admin, "Content-Type": "text/csv"}
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert (body["rows"], body["accepted"], body["rejected"], body["created"]) == (4, 3, 1, 3)
    assert body["rejections"] == [
        {
            "line": 4,
            "id": "cx-3",
            "errors": [{"loc": "sms", "msg": "'12345' is not a valid phone number"}],
        }
    ]
    nd = "\n".join(
        json.dumps({"id": f"n{i}", "area": "371723", "endpoints": {"board": f"b{i}"}})
        for i in range(3)
    )
    resp = await client.post(
        "/v1/subscribers/import", data=nd, headers={**admin, "Content-Type": "application/x-ndjson"}
    )
    assert (await resp.json())["created"] == 3
    operator = await token(redis, "operator")
    resp = await client.post(
        "/v1/subscribers/import", data=CSV, headers={**operator, "Content-Type": "text/csv"}
    )
    assert resp.status == 403
    resp = await client.post(
        "/v1/subscribers/import", data=CSV, headers={**admin, "Content-Type": "text/plain"}
    )
    assert resp.status == 415
    resp = await client.post(
        "/v1/subscribers/import", data="id,tel\n", headers={**admin, "Content-Type": "text/csv"}
    )
    assert resp.status == 400
    assert "unknown column(s) 'tel'" in json.dumps(
        (await resp.json())["errors"], ensure_ascii=False
    )
    resp = await client.get("/v1/subscribers/export?format=csv", headers=admin)
    assert resp.status == 200
    assert (await resp.text()).count("\n") == 1 + 3 + 3


async def test_crud_with_roles_and_area_scope(client: Client, redis: Redis) -> None:
    cao_op = await token(redis, "operator", "371721")
    viewer = await token(redis, "viewer")
    body = {
        "name": "南关村信息员",
        "area": "371721001001000"[:12],
        "groups": ["village_officers"],
        "endpoints": {"sms": "138 0013 8000"},
    }
    resp = await client.put("/v1/subscribers/cx-1", json=body, headers=cao_op)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["endpoints"]["sms"] == "+8613800138000"
    assert (await client.put("/v1/subscribers/cx-1", json=body, headers=cao_op)).status == 200
    got = await client.get("/v1/subscribers/cx-1", headers=viewer)
    assert (await got.json())["area"] == "371721001001"

    moved = {**body, "area": "371722001001"}  # out of this operator's scope
    resp = await client.put("/v1/subscribers/cx-1", json=moved, headers=cao_op)
    assert resp.status == 422
    assert "outside your area scope" in (await resp.json())["errors"][0]["msg"]
    bad = {**body, "endpoints": {"sms": "12345"}, "language": "klingon!", "id": "cx-1"}
    resp = await client.put("/v1/subscribers/cx-1", json=bad, headers=cao_op)
    problem = await resp.json()
    assert resp.status == 422 and problem["type"].endswith("/subscriber-invalid")
    assert {e["loc"] for e in problem["errors"]} == {"/language", "/endpoints/sms"}
    assert (
        await client.put("/v1/subscribers/other", json={**body, "id": "x"}, headers=cao_op)
    ).status == 400

    shan_op = await token(redis, "operator", "371722")
    assert (await client.get("/v1/subscribers/cx-1", headers=shan_op)).status == 404
    assert (await client.delete("/v1/subscribers/cx-1", headers=shan_op)).status == 404
    assert (await client.delete("/v1/subscribers/cx-1", headers=viewer)).status == 403
    assert (await client.delete("/v1/subscribers/cx-1", headers=cao_op)).status == 204
    assert (await client.get("/v1/subscribers/cx-1", headers=viewer)).status == 404
    assert await redis.exists(Keys().subscribers_in_area("371721")) == 0


async def test_preview_counts_the_audience_and_sends_nothing(client: Client, redis: Redis) -> None:
    admin = await token(redis, "admin")
    operator = await token(redis, "operator", "3717")
    await client.post(
        "/v1/subscribers/import", data=CSV, headers={**admin, "Content-Type": "text/csv"}
    )
    before = sorted(await redis.keys("*"))
    alert = {
        "infos": [
            {
                "hazard": "rainstorm",
                "level": "orange",
                "expires": "2099-07-01T20:00:00+08:00",
                "areas": [
                    {
                        "area_desc": "曹县",
                        "geocodes": [{"value_name": "GB/T 2260", "value": "371721"}],
                    }
                ],
            }
        ]
    }
    resp = await client.post("/v1/match/preview", json=alert, headers=operator)
    assert resp.status == 200, await resp.text()
    s = await resp.json()
    assert (s["subscribers"], s["deliveries"]) == (2, 2)
    assert s["channels"] == {"sms": 1, "email": 1, "wechat": 0, "board": 0}
    assert {g["key"]: g["subscribers"] for g in s["groups"]} == {
        "village_officers": 1,
        "schools": 1,
    }
    assert s["areas"][0]["code"] == "371721" and s["areas"][0]["subscribers"] == 2
    blind = {b["code"] for b in s["blind_spots"]}
    assert "371721001001" not in blind and "371721001003" in blind and "371721101" in blind
    assert sorted(await redis.keys("*")) == before  # nothing stored, not even an id counter

    cap = (CAP_ZH / "tw-cwa-heat-3-info-levels.xml").read_bytes()
    resp = await client.post(
        "/v1/match/preview", data=cap, headers={**operator, "Content-Type": "application/cap+xml"}
    )
    s = await resp.json()
    assert resp.status == 200 and s["subscribers"] == 0
    assert {g["value_name"] for g in s["unknown_geocodes"]} == {"Taiwan_Geocode_103"}
    viewer = await token(redis, "viewer")
    assert (await client.post("/v1/match/preview", json=alert, headers=viewer)).status == 403
    resp = await client.post(
        "/v1/match/preview",
        data=b"<alert",
        headers={**operator, "Content-Type": "application/cap+xml"},
    )
    assert resp.status == 400


async def test_area_view_carries_subscriber_counts(client: Client, redis: Redis) -> None:
    admin = await token(redis, "admin")
    await client.post(
        "/v1/subscribers/import", data=CSV, headers={**admin, "Content-Type": "text/csv"}
    )
    resp = await client.get("/v1/areas/371721", headers=admin)
    assert resp.status == 200
    counts = (await resp.json())["subscribers"]
    assert counts["total"] == 2 and counts["direct"] == 0
    assert counts["group:schools"] == 1 and counts["channel:wechat"] == 1
    resp = await client.get("/v1/areas/371722001001", headers=admin)
    assert (await resp.json())["subscribers"]["direct"] == 1
