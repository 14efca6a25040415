"""``GET /metrics``: Prometheus text with this process's counters and Redis's queues."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from dispatch_data import (
    Client,
    add_subscribers,
    alert_body,
    counts,
    deliveries,
    import_heze_codes,
    start_app,
    submit,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from warnd.keys import Keys
from warnd.metrics import read_state
from warnd.settings import Settings

SANDBOX = {"provider": "sandbox", "record": "redis"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
async def client(
    redis: Redis, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[tuple[Client, str]]:
    registry = await import_heze_codes(redis, tmp_path)
    await add_subscribers(redis, registry, 300)
    secret = tmp_path / "receipt-secret"
    secret.write_text("s3cret")
    settings = make_settings(
        channels={"sms": {**SANDBOX, "receipt_secret_file": str(secret)}},
        feeds={
            "county-push": {
                "kind": "push",
                "token_env": "NO_SUCH_TOKEN",
                "enabled": False,
                "trusted_senders": ["*"],
            }
        },
    )
    client, token = await start_app(settings, redis)
    yield client, token
    await client.close()


async def test_metrics_count_requests_alerts_and_deliveries(
    client: tuple[Client, str], redis: Redis
) -> None:
    c, token = client
    aid = await submit(c, token, alert_body())

    async def sent() -> bool:
        return (await counts(c, token, aid)).get("sent", 0) == 300

    await wait_for(sent, "300 deliveries sent")
    page = await deliveries(c, token, aid, limit="10")
    receipts = [{"delivery_id": i["id"], "state": "delivered"} for i in page["items"]]
    receipts.append({"delivery_id": f"{aid}.999.0", "state": "delivered"})
    resp = await c.post("/v1/receipts/sms?secret=s3cret", json={"receipts": receipts})
    assert resp.status == 200, await resp.text()

    async def delivered() -> bool:
        return (await counts(c, token, aid)).get("delivered", 0) == 10

    await wait_for(delivered, "10 receipts applied")
    await c.get("/v1/alerts/nosuchalert0000a", headers={"Authorization": f"Bearer {token}"})
    await c.get("/no/such/path")
    # A dead letter, as the dispatcher leaves one.
    await redis.xadd(Keys().dispatch_dead, {"reason": "test"})

    resp = await c.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    got = samples(text)

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("warnd_build_info", version=__import__("warnd").__version__) == 1
    assert value("warnd_redis_up") == 1
    assert (
        value("warnd_alerts_accepted_total", msg_type="Alert", hazard="rainstorm", level="red") == 1
    )
    assert value("warnd_http_requests_total", method="POST", route="/v1/alerts", status="202") == 1
    not_found = [
        k for k in got if k[0] == "warnd_http_requests_total" and ("status", "404") in k[1]
    ]
    routes = {dict(k[1])["route"] for k in not_found}
    assert "unmatched" in routes  # the unknown path, by no template
    assert all("nosuchalert" not in r for r in routes)  # templates, never concrete ids
    assert value("warnd_deliveries_total", channel="sms", outcome="sent") == 300
    batches = value("warnd_channel_send_duration_seconds_count", channel="sms")
    assert batches >= 1
    assert value("warnd_receipts_total", channel="sms", result="applied") == 10
    assert value("warnd_receipts_total", channel="sms", result="unknown") == 1
    for prio in ("hi", "lo"):  # the fan-out is over: nothing waits, nothing is held
        assert value("warnd_lane_entries", channel="sms", priority=prio) == 0
        assert value("warnd_lane_pending", channel="sms", priority=prio) == 0
    assert value("warnd_dead_letters") == 1
    assert value("warnd_feed_consecutive_failures", feed="county-push") == 0
    assert value("warnd_redis_used_memory_bytes") > 0
    assert value("process_resident_memory_bytes") > 0
    # No phone number, token or address ever appears in the exposition.
    assert "+86139" not in text and token not in text


async def test_lane_backlog_separates_waiting_from_held_entries(redis: Redis) -> None:
    keys = Keys()
    lane = keys.dispatch_lane("email", "lo")
    await redis.xgroup_create(lane, "workers", id="0", mkstream=True)
    for k in range(5):
        await redis.xadd(lane, {"a": "x", "k": str(k), "o": ""})
    await redis.xreadgroup("workers", "w1", {lane: ">"}, count=2)  # a worker holds two
    await redis.zadd(keys.dispatch_delayed, {"retry-1": 1.0, "retry-2": 2.0})
    snap = await read_state(redis, keys, ["email", "board"], ["nofeed"])
    assert snap.up
    assert snap.lanes[("email", "lo")] == (5, 2)
    assert snap.lanes[("email", "hi")] == (0, 0)  # no stream, no group: zero, not an error
    assert snap.lanes[("board", "lo")] == (0, 0)
    assert snap.delayed == 2
    assert snap.feeds == {"nofeed": {}}


async def test_metrics_say_when_redis_is_unreachable(
    redis: Redis, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from warnd.api.app import create_app
    from warnd.api.context import SERVICES
    from warnd.redis_server import redis_client

    app = create_app(make_settings(), redis=redis, poll_feeds=False)
    async with TestClient(TestServer(app)) as c:
        # Point the services at a port nobody listens on, as if Redis went away.
        dead = redis_client("redis://127.0.0.1:1/0")
        svc = app[SERVICES]
        live, svc.redis = svc.redis, dead
        try:
            resp = await c.get("/metrics")
        finally:
            svc.redis = live
            await dead.aclose()
        assert resp.status == 200
        got: dict[str, Any] = samples(await resp.text())
        assert got[("warnd_redis_up", ())] == 0
        assert not [k for k in got if k[0] == "warnd_lane_entries"]
