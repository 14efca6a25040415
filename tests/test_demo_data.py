"""The demo data set and ``[subscribers] import``: rosters imported at start, once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from dispatch_data import free_tcp_port
from redis.asyncio import Redis
from structlog.testing import capture_logs
from subscribers_data import GROUPS, TAXONOMY, import_heze

from warnd.api.app import create_app
from warnd.api.context import SERVICES
from warnd.audit import Audit
from warnd.auth import Role, TokenStore
from warnd.errors import ConfigError
from warnd.keys import Keys
from warnd.settings import Settings, load_settings
from warnd.subscriber_cli import check_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "config" / "demo.toml"


def demo_settings(redis_url: str, data_dir: Path) -> Settings:
    settings = load_settings(DEMO, env={"WARND_REDIS_URL": redis_url})
    settings.data_dir = data_dir
    settings.http.port = 0
    return settings


async def operator_headers(redis: Redis) -> dict[str, str]:
    secret, _ = await TokenStore(redis, Keys(), Audit(redis, Keys())).create(
        "op", Role.OPERATOR, ["3717"], actor="test"
    )
    return {"Authorization": f"Bearer {secret}"}


def red_rainstorm(county: str, code: str, headline: str, **info: str) -> dict[str, Any]:
    """The JSON body of a red rainstorm warning for one county."""
    area = {"area_desc": county, "geocodes": [{"value_name": "GB/T 2260", "value": code}]}
    return {
        "infos": [
            {"hazard": "rainstorm", "level": "red", "headline": headline, "areas": [area], **info}
        ]
    }


async def start_and_stop(app: web.Application) -> None:
    """Start ``app`` as ``warnd serve`` does: what started is stopped when start fails."""
    runner = web.AppRunner(app)
    try:
        await runner.setup()
    finally:
        await runner.cleanup()


async def test_demo_config_brings_heze_and_a_roster_with_a_blind_spot(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    settings = demo_settings(redis_url, tmp_path)
    app = create_app(settings, redis=redis, poll_feeds=False)
    async with TestClient(TestServer(app)) as client:
        svc = app[SERVICES]
        assert len(svc.areas) == 5220  # 山东省, 菏泽市, 11 counties, 167 townships, 5,040 villages
        assert svc.areas.get("371721") is not None
        assert len(svc.matcher.index) == 7183
        headers = await operator_headers(redis)
        body = red_rainstorm("郓城县", "371725", "郓城县暴雨红色预警")
        resp = await client.post("/v1/match/preview", json=body, headers=headers)
        assert resp.status == 200, await resp.text()
        preview = await resp.json()
        assert preview["subscribers"] > 500
        assert [a["code"] for a in preview["blind_spots"]] == ["371725109"]


async def test_the_readme_warning_reaches_every_demo_endpoint_in_caoxian(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    # What README.md tells a new user to try after `make run`: 曹县's village
    # officers (叫应, one message each) fall into one batch of a thousand.
    settings = demo_settings(redis_url, tmp_path)
    # The demo's boards acknowledge through warnd's receipts URL: a real port.
    settings.http.port = free_tcp_port()
    app = create_app(settings, redis=redis, poll_feeds=False)
    server = TestServer(app, host="127.0.0.1", port=settings.http.port)
    async with TestClient(server) as client:
        headers = await operator_headers(redis)
        body = red_rainstorm(
            "曹县", "371721", "曹县气象台发布暴雨红色预警信号", urgency="Immediate"
        )
        resp = await client.post("/v1/alerts", json=body, headers=headers)
        assert resp.status == 202, await resp.text()
        aid = (await resp.json())["id"]
        doc: dict[str, Any] = {}
        county: dict[str, Any] = {}
        for _ in range(600):  # the boards' acknowledgements come 0.5 s after their send
            resp = await client.get(f"/v1/alerts/{aid}/coverage?level=county", headers=headers)
            doc = await resp.json()
            county = next((a for a in doc.get("areas", []) if a["code"] == "371721"), {})
            if doc.get("final") and county.get("reach_rate") == 1.0:
                break
            await asyncio.sleep(0.1)
        assert doc.get("final") and county.get("reach_rate") == 1.0, doc
        assert county["endpoints_targeted"] == 1155
        pending = {c["channel"]: c["pending"] for c in county["channels"]}
        assert set(pending.values()) == {0}, pending


async def test_an_unchanged_roster_is_not_imported_again(
    redis: Redis, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    await import_heze(redis, tmp_path)
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "id,name,area,groups,sms,board\n"
        "cx-1,南关村信息员,371721001001,village_officers,13800138000,\n"
        "cx-2,坏号码,371721001002,village_officers,12345,\n"
        "sx-1,单县广场屏,371722001001,boards,,board-sx-1\n",
        encoding="utf-8",
    )
    settings = make_settings(groups=GROUPS, subscribers={"import": [str(roster)]})

    async def start() -> tuple[int, list[dict[str, Any]]]:
        app = create_app(settings, redis=redis, taxonomy=TAXONOMY, poll_feeds=False)
        with capture_logs() as logs:
            async with TestClient(TestServer(app)):
                n = len(app[SERVICES].matcher.index)
        return n, logs

    n, logs = await start()
    assert n == 2
    rejected = [e for e in logs if e["event"] == "subscribers.row_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["line"] == 3 and rejected[0]["id"] == "cx-2"
    assert "12345" in json.dumps(rejected[0]["errors"], ensure_ascii=False)

    # An operator removes one; a restart with the same file must not bring it back.
    admin_secret, _ = await TokenStore(redis, Keys(), Audit(redis, Keys())).create(
        "admin", Role.ADMIN, [], actor="test"
    )
    app = create_app(settings, redis=redis, taxonomy=TAXONOMY, poll_feeds=False)
    async with TestClient(TestServer(app)) as client:
        resp = await client.delete(
            "/v1/subscribers/sx-1", headers={"Authorization": f"Bearer {admin_secret}"}
        )
        assert resp.status == 204, await resp.text()
    n, logs = await start()
    assert n == 1
    assert not [e for e in logs if e["event"] == "subscribers.imported"]

    # A changed file is imported again.
    roster.write_text(roster.read_text(encoding="utf-8").replace("单县广场屏", "单县广场大屏"))
    n, logs = await start()
    assert n == 2
    assert [e for e in logs if e["event"] == "subscribers.imported"]


async def test_a_missing_roster_stops_start_and_fails_check(
    redis: Redis, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    await import_heze(redis, tmp_path)
    missing = tmp_path / "nowhere.csv"
    settings = make_settings(groups=GROUPS, subscribers={"import": [str(missing)]})
    assert check_config(settings, TAXONOMY) == [f"[subscribers] import: {missing}: no such file"]
    with pytest.raises(ConfigError, match=r"nowhere\.csv"):
        await start_and_stop(create_app(settings, redis=redis, taxonomy=TAXONOMY))


async def test_a_roster_needs_the_areas_first(
    redis: Redis, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("id,area,sms\ncx-1,371721001001,13800138000\n", encoding="utf-8")
    settings = make_settings(subscribers={"import": [str(roster)]})
    with pytest.raises(ConfigError, match=r"area registry is empty"):
        await start_and_stop(create_app(settings, redis=redis, taxonomy=TAXONOMY))
