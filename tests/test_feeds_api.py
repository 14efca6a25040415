"""Feed endpoints: health, rejects, push (with the feed's own token), and
feed settings as ``warnd check`` sees them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from feedkit import CAP, Upstream
from redis.asyncio import Redis

from warnd.api.app import create_app
from warnd.audit import Audit
from warnd.auth import Role, TokenStore
from warnd.errors import ConfigError
from warnd.feeds.poller import FEEDS
from warnd.keys import Keys
from warnd.settings import Settings, load_settings
from warnd.store import AlertStore
from warnd.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
RAIN_1 = CAP / "zh" / "tw-cwa-heavy-rain-1-alert.xml"
PUSH_TOKEN = "push-secret-for-tests-0123456789"
CAP_XML = {"Content-Type": "application/cap+xml"}


@pytest.fixture
async def client(
    redis: Redis,
    make_settings: Callable[..., Settings],
    taxonomy: Taxonomy,
    upstream: Upstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[TestClient[Any, Any]]:
    monkeypatch.setenv("TEST_FEED_PUSH_TOKEN", PUSH_TOKEN)
    token_file = tmp_path / "cwa.token"
    token_file.write_text("file-token-abcdef\n")
    feeds = {
        "cwa": {
            "kind": "push",
            "token_env": "TEST_FEED_PUSH_TOKEN",
            "trusted_senders": ["weather@cwa.gov.tw", "noreplyvarning@smhi.se"],
        },
        "cwa-file": {
            "kind": "push",
            "token_file": str(token_file),
            "trusted_senders": ["*"],
        },
        "index": {
            "kind": "cap",
            "url": upstream.serve("a.xml", RAIN_1),
            "trusted_senders": ["weather@cwa.gov.tw"],
        },
        "off": {
            "kind": "cap-index",
            "url": "https://example.org/x",
            "enabled": False,
            "trusted_senders": ["*"],
        },
    }
    app = create_app(make_settings(feeds=feeds), redis=redis, taxonomy=taxonomy, poll_feeds=False)
    async with TestClient(TestServer(app)) as c:
        yield c


async def bearer(redis: Redis, role: str = "viewer") -> dict[str, str]:
    secret, _ = await TokenStore(redis, Keys(), Audit(redis, Keys())).create(
        "t", Role(role), actor="test"
    )
    return {"Authorization": f"Bearer {secret}"}


async def test_feed_list_shows_every_feed_and_its_health(
    client: TestClient[Any, Any], redis: Redis
) -> None:
    await client.app[FEEDS].poller("index").poll_once()
    assert (await client.get("/v1/feeds")).status == 401
    resp = await client.get("/v1/feeds", headers=await bearer(redis))
    assert resp.status == 200
    items = {f["name"]: f for f in (await resp.json())["items"]}
    assert set(items) == {"cwa", "cwa-file", "index", "off"}
    polled = items["index"]
    assert polled["status"] == "ok" and polled["accepted"] == 1 and polled["polls"] == 1
    assert polled["last_success_at"] and polled["consecutive_failures"] == 0
    assert polled["kind"] == "cap" and polled["enabled"] is True
    assert items["off"]["enabled"] is False and items["off"]["status"] == "pending"
    assert items["cwa"]["url"] is None and items["cwa"]["interval"] is None

    one = await client.get("/v1/feeds/index", headers=await bearer(redis))
    assert (await one.json())["accepted"] == 1
    missing = await client.get("/v1/feeds/nope", headers=await bearer(redis))
    assert missing.status == 404
    assert "no feed named 'nope'" in (await missing.json())["detail"]


async def test_push_needs_the_feeds_own_token(client: TestClient[Any, Any], redis: Redis) -> None:
    body = RAIN_1.read_bytes()
    no_token = await client.post("/v1/feeds/cwa", data=body, headers=CAP_XML)
    assert no_token.status == 401
    assert no_token.content_type == "application/problem+json"
    wrong = await client.post(
        "/v1/feeds/cwa", data=body, headers={**CAP_XML, "Authorization": "Bearer nope"}
    )
    assert wrong.status == 401
    operator = await client.post(
        "/v1/feeds/cwa", data=body, headers={**CAP_XML, **await bearer(redis, "admin")}
    )
    assert operator.status == 401  # an API token is not this feed's token
    other_feed = await client.post(
        "/v1/feeds/cwa-file",
        data=body,
        headers={**CAP_XML, "Authorization": f"Bearer {PUSH_TOKEN}"},
    )
    assert other_feed.status == 401
    assert await redis.zcard(Keys().alerts_by_time) == 0

    auth = {**CAP_XML, "Authorization": f"Bearer {PUSH_TOKEN}"}
    ok = await client.post("/v1/feeds/cwa", data=body, headers=auth)
    assert ok.status == 202, await ok.text()
    (item,) = (await ok.json())["items"]
    assert item["created"] is True
    rec = await AlertStore(redis, Keys()).get(item["id"])
    assert rec is not None and rec.source == "feed:cwa"
    again = await client.post("/v1/feeds/cwa", data=body, headers=auth)
    assert again.status == 200 and (await again.json())["items"][0]["created"] is False

    from_file = await client.post(
        "/v1/feeds/cwa-file",
        data=(CAP / "zh" / "tw-cwa-heavy-rain-2-update.xml").read_bytes(),
        headers={**CAP_XML, "Authorization": "Bearer file-token-abcdef"},
    )
    assert from_file.status == 202

    health = await (await client.get("/v1/feeds/cwa", headers=await bearer(redis))).json()
    assert health["accepted"] == 1 and health["duplicates"] == 1


async def test_pushed_garbage_is_refused_and_quarantined(
    client: TestClient[Any, Any], redis: Redis
) -> None:
    auth = {**CAP_XML, "Authorization": f"Bearer {PUSH_TOKEN}"}
    html = (CAP / "invalid" / "tw-html-404-page-saved-as-cap.xml").read_bytes()
    resp = await client.post("/v1/feeds/cwa", data=html, headers=auth)
    assert resp.status == 400
    problem = await resp.json()
    assert "HTML" in problem["detail"]

    untrusted = (CAP / "oasis" / "oasis-cap12-A2-severe-thunderstorm-polygon.xml").read_bytes()
    resp = await client.post("/v1/feeds/cwa", data=untrusted, headers=auth)
    assert resp.status == 422
    assert "not trusted by feed 'cwa'" in (await resp.json())["detail"]

    viewer = await bearer(redis)
    page = await client.get("/v1/feeds/cwa/rejects?limit=1", headers=viewer)
    assert page.status == 200
    body = await page.json()
    assert body["total"] == 2 and len(body["items"]) == 1
    assert "not trusted" in body["items"][0]["reason"]  # newest first
    assert body["next"] == "/v1/feeds/cwa/rejects?offset=1&limit=1"
    rest = await (await client.get(body["next"], headers=viewer)).json()
    assert "HTML" in rest["items"][0]["reason"] and rest["next"] is None
    assert rest["items"][0]["body_bytes"] == len(html)
    bad = await client.get("/v1/feeds/cwa/rejects?limit=0", headers=viewer)
    assert bad.status == 400

    audit = await redis.xrange(Keys().audit)
    refused = [f for _, f in audit if f["event"] == "alert.refused"]
    assert len(refused) == 2 and all(f["actor"] == "feed:cwa" for f in refused)


async def test_push_of_an_alerts_wrapper_answers_per_alert(
    client: TestClient[Any, Any],
) -> None:
    auth = {**CAP_XML, "Authorization": f"Bearer {PUSH_TOKEN}"}
    wrapper = (CAP / "invalid" / "se-smhi-alerts-wrapper-root.xml").read_bytes()
    resp = await client.post("/v1/feeds/cwa", data=wrapper, headers=auth)
    assert resp.status == 202
    items = (await resp.json())["items"]
    assert len(items) == 17 and all(i["created"] for i in items)
    assert all(
        "already expired when received: recorded, not disseminated" in i["warnings"] for i in items
    )


async def test_push_to_a_polled_or_unknown_feed_is_404(client: TestClient[Any, Any]) -> None:
    auth = {**CAP_XML, "Authorization": f"Bearer {PUSH_TOKEN}"}
    for name in ("index", "nope"):
        resp = await client.post(f"/v1/feeds/{name}", data=b"<x/>", headers=auth)
        assert resp.status == 404


async def test_openapi_documents_the_feed_routes(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/v1/openapi.json")).json()
    assert {"/v1/feeds", "/v1/feeds/{name}", "/v1/feeds/{name}/rejects"} <= set(doc["paths"])
    assert "post" in doc["paths"]["/v1/feeds/{name}"]
    assert "FeedHealth" in doc["components"]["schemas"]


# ----------------------------------------------------------------- settings


def write(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "warnd.toml"
    cfg.write_text(f'taxonomy_file = "{REPO / "config" / "taxonomy.toml"}"\n' + text)
    return cfg


def test_every_feed_problem_is_listed(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
[feeds.a]
kind = "cap"
[feeds.b]
kind = "push"
token = "hunter2"
[feeds.c]
kind = "cma-json"
url = "ftp://example.org/x"
[feeds.d]
kind = "rss"
url = "https://example.org/"
[feeds.E]
kind = "cap"
url = "https://user:pw@example.org/"
trusted_senders = ["*"]
""",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    text = "\n".join(info.value.problems)
    assert "feeds.a" in text and "needs a url" in text and "needs trusted_senders" in text
    assert "feeds.b" in text and "secrets do not belong in the configuration file" in text
    assert "hunter2" not in text
    assert "feeds.c" in text and "http:// or https://" in text and "needs sender" in text
    assert "feeds.d.kind" in text
    assert "feeds.E" in text and "user name or password" in text
    assert "feeds.E.[key]" in text  # feed names are lower case
    assert len(info.value.problems) == 6


def test_check_reports_missing_push_token_and_unknown_hazard(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
[feeds.p]
kind = "push"
token_env = "WARND_TEST_NO_SUCH_TOKEN"
trusted_senders = ["*"]
[feeds.q]
kind = "push"
token_file = "missing.token"
trusted_senders = ["*"]
enabled = false
[feeds.m]
kind = "cma-json"
url = "https://example.org/alarm.json"
sender = "x"
hazard = "volcano"
""",
    )
    settings = load_settings(cfg, env={})
    q = settings.feeds["q"].token_file
    assert q is not None and q == tmp_path / "missing.token"  # relative to the config
    result = subprocess.run(
        [sys.executable, "-m", "warnd", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1
    assert "feeds.p: environment variable WARND_TEST_NO_SUCH_TOKEN is not set" in result.stderr
    assert "feeds.m.hazard: hazard 'volcano' is not in the taxonomy" in result.stderr
    assert "feeds.q" not in result.stderr  # disabled: its token is not needed yet
