"""Dispatch in one process: fan-out, exactly once, priorities, cancel, retries, acks.

Real Redis, real 菏泽 areas, subscribers through the subscriber store, the
sandbox channel recording every send in Redis, and a real HTTP SMS peer
for throttling. Nothing asserts durations: conditions are polled.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from dispatch_data import (
    SANDBOX,
    add_subscribers,
    alert_body,
    counts,
    deliveries,
    dispatcher,
    duplicates,
    phone,
    sandbox_sends,
    submit,
    wait_for,
)
from redis.asyncio import Redis

from warnd.dispatch.service import Dispatcher
from warnd.keys import Keys
from warnd.subscribers import Subscriber, SubscriberStore

# ------------------------------------------------------------------ fan-out


async def test_ten_thousand_recipients_get_the_warning_exactly_once(
    redis: Redis, heze: Any, app_for: Callable[..., Any]
) -> None:
    await add_subscribers(redis, heze, 10_000)
    client, token = await app_for()
    aid = await submit(client, token, alert_body())

    async def all_sent() -> bool:
        return (await counts(client, token, aid)).get("sent", 0) == 10_000

    await wait_for(all_sent, "10,000 deliveries sent")
    rows = await sandbox_sends(redis)
    assert len(rows) == 10_000
    assert not duplicates(rows)
    assert {r["address"] for r in rows} == {phone(i) for i in range(10_000)}
    assert all("暴雨" in r["text"] and r["level"] == "red" for r in rows)
    doc = await deliveries(client, token, aid, state="sent", limit="5")
    assert doc["plan"]["status"] == "planned" and doc["plan"]["deliveries"] == 10_000
    assert len(doc["items"]) == 5 and doc["next"]
    item = doc["items"][0]
    assert item["state"] == "sent" and item["attempts"] == 1 and item["area"].startswith("371721")
    # Counters per area × channel × state add up to the audience, exactly.
    assert doc["by_channel"] == {"sms": {"sent": 10_000}}
    # A second copy of every lane entry (a redelivery) sends nothing again,
    # with its size (its rate tokens are taken with the claim, and given back)
    # or without.
    d = dispatcher(client)
    for k in range(int(doc["plan"]["nb"])):
        await d.lanes.push("sms", "hi", aid, k, size=1000 if k % 2 else None)
    await wait_for(lambda: _lanes_empty(redis, d), "duplicate entries consumed", within=60)
    assert len(await sandbox_sends(redis)) == 10_000


async def _lanes_empty(redis: Redis, d: Dispatcher) -> bool:
    """Every entry acknowledged and deleted."""
    for p in ("hi", "lo"):
        lane = d.lanes.lane("sms", p)
        if await redis.xlen(lane) or (await redis.xpending(lane, "workers"))["pending"]:
            return False
    return True


async def test_red_alert_behind_a_large_blue_fan_out_is_sent_first(
    redis: Redis, heze: Any, app_for: Callable[..., Any]
) -> None:
    await add_subscribers(redis, heze, 6_000, prefix="371722")  # 单县: the blue one
    await add_subscribers(redis, heze, 100, prefix="371721", start=100_000)  # 曹县: red
    slow = {**SANDBOX, "latency": 0.05, "batch_size": 100}
    client, token = await app_for(channels={"sms": slow}, dispatch={"concurrency": 1})
    blue = await submit(client, token, alert_body("371722", level="blue"))

    async def blue_started() -> bool:
        return len(await sandbox_sends(redis)) >= 200

    await wait_for(blue_started, "blue fan-out under way")
    before = len(await sandbox_sends(redis))
    red = await submit(client, token, alert_body("371721", level="red", identifier="red-1"))

    async def both_done() -> bool:
        c = await counts(client, token, blue)
        return c.get("sent", 0) == 6_000 and (await counts(client, token, red)).get("sent") == 100

    await wait_for(both_done, "both alerts sent")
    rows = await sandbox_sends(redis)
    first_red = next(i for i, r in enumerate(rows) if r["alert_id"] == red)
    last_red = max(i for i, r in enumerate(rows) if r["alert_id"] == red)
    # Once queued, the red batch went next: at most the blue batch in flight
    # and one already read came before it, while most of blue was still queued.
    assert first_red - before <= 2 * 100
    assert len(rows) - last_red > 3_000
    assert not duplicates(rows, blue) and not duplicates(rows, red)


# ------------------------------------------------------------------ cancel


async def test_cancel_mid_fan_out_stops_the_rest_and_tells_those_reached(
    redis: Redis, heze: Any, app_for: Callable[..., Any]
) -> None:
    await add_subscribers(redis, heze, 4_000)
    slow = {**SANDBOX, "latency": 0.05, "batch_size": 100}
    client, token = await app_for(channels={"sms": slow}, dispatch={"concurrency": 1})
    aid = await submit(client, token, alert_body())

    async def some_sent() -> bool:
        return (await counts(client, token, aid)).get("sent", 0) >= 500

    await wait_for(some_sent, "part of the fan-out sent")
    cancel_id = await submit(client, token, {"note": "降雨减弱"}, f"/v1/alerts/{aid}/cancel")

    async def settled() -> bool:
        c = await counts(client, token, aid)
        if c.get("queued") or c.get("sending"):
            return False
        plan = (await deliveries(client, token, cancel_id, limit="1"))["plan"]
        if plan.get("status") != "planned":
            return False
        return (await counts(client, token, cancel_id)).get("sent", 0) == c.get("sent", -1)

    await wait_for(settled, "cancel applied and 解除 sent")
    c = await counts(client, token, aid)
    assert c["sent"] >= 500 and c["cancelled"] > 0
    assert c["sent"] + c["cancelled"] == 4_000
    rows = await sandbox_sends(redis)
    warned = {r["address"] for r in rows if r["alert_id"] == aid}
    lifted = [r for r in rows if r["alert_id"] == cancel_id]
    assert len(warned) == c["sent"] == len([r for r in rows if r["alert_id"] == aid])
    assert {r["address"] for r in lifted} == warned  # exactly those reached, once each
    assert not duplicates(lifted)
    assert all(r["msg_type"] == "Cancel" and "解除" in r["text"] for r in lifted)
    doc = await deliveries(client, token, aid, state="cancelled", limit="2")
    assert [i["state"] for i in doc["items"]] == ["cancelled", "cancelled"]
    doc = await deliveries(client, token, cancel_id, limit="1")
    assert doc["items"][0]["kind"] == "notice"


# ------------------------------------------------------------------ expiry and policy


async def test_deliveries_not_sent_before_expiry_expire_and_are_never_sent(
    redis: Redis, heze: Any, app_for: Callable[..., Any]
) -> None:
    await add_subscribers(redis, heze, 3_000)
    slow = {**SANDBOX, "latency": 0.1, "batch_size": 50}
    client, token = await app_for(channels={"sms": slow}, dispatch={"concurrency": 1})
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    aid = await submit(client, token, alert_body(expires=soon))

    async def over() -> bool:
        c = await counts(client, token, aid)
        return not c.get("queued") and not c.get("sending") and c.get("expired", 0) > 0

    await wait_for(over, "the rest expired")
    c = await counts(client, token, aid)
    assert c["sent"] + c["expired"] == 3_000 and c["sent"] > 0
    assert len([r for r in await sandbox_sends(redis) if r["alert_id"] == aid]) == c["sent"]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"status": "Exercise"}, "status Exercise is not disseminated"),
        ({"expires": "2020-07-01T20:00:00+08:00"}, "already expired when received"),
    ],
)
async def test_policy_keeps_some_alerts_from_the_public(
    redis: Redis, heze: Any, app_for: Callable[..., Any], extra: dict[str, Any], reason: str
) -> None:
    await add_subscribers(redis, heze, 10)
    client, token = await app_for()
    body = alert_body(**{k: v for k, v in extra.items() if k == "status"})
    if "expires" in extra:
        body["infos"][0]["expires"] = extra["expires"]
        body["sent"] = "2020-07-01T08:00:00+08:00"
        body["identifier"] = "old-1"
    aid = await submit(client, token, body)

    async def planned() -> bool:
        plan = (await deliveries(client, token, aid))["plan"]
        return plan.get("status") == "skipped"

    await wait_for(planned, "the plan records the policy")
    plan = (await deliveries(client, token, aid))["plan"]
    assert reason in plan["reason"]
    assert await sandbox_sends(redis) == []


# ------------------------------------------------------------------ retries


class BurstyGateway:
    """A cloud SMS API that answers 429 (Retry-After: 1) to its first requests."""

    def __init__(self, throttled: int) -> None:
        self.throttled = throttled
        self.calls: list[tuple[float, int, list[str]]] = []
        self.accepted: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.calls.append((time.monotonic(), len(self.calls), body["phones"]))
        if len(self.calls) <= self.throttled:
            return web.json_response(
                {"code": "Throttled"}, status=429, headers={"Retry-After": "1"}
            )
        self.accepted += body["phones"]
        results = [
            {"phone": p, "code": "OK", "msg_id": f"m{len(self.accepted)}-{p}"}
            for p in body["phones"]
        ]
        return web.json_response({"code": "OK", "results": results})


async def test_a_429_burst_is_retried_after_retry_after_without_using_attempts(
    redis: Redis, heze: Any, app_for: Callable[..., Any], tmp_path: Path
) -> None:
    await add_subscribers(redis, heze, 300)
    gateway = BurstyGateway(throttled=8)  # more 429s than the attempt budget
    app = web.Application()
    app.router.add_post("/sms/send", gateway.handle)
    server = TestServer(app)
    await server.start_server()
    secret = tmp_path / "sms-auth"
    secret.write_text("Bearer k")
    try:
        sms = {
            "provider": "http",
            "url": str(server.make_url("/sms/send")),
            "auth_value_file": str(secret),
            "sender": "菏泽市应急管理局",
            "batch_size": 100,
        }
        client, token = await app_for(
            channels={"sms": sms}, dispatch={"max_attempts": 2, "concurrency": 1}
        )
        aid = await submit(client, token, alert_body())

        async def all_sent() -> bool:
            return (await counts(client, token, aid)).get("sent", 0) == 300

        await wait_for(all_sent, "every delivery sent after the burst")
        assert len(gateway.calls) > 8 and len(gateway.accepted) == 300
        assert sorted(gateway.accepted) == sorted(phone(i)[1:] for i in range(300)) or (
            sorted(gateway.accepted) == sorted(phone(i) for i in range(300))
        )
        # Each batch waited at least Retry-After between a 429 and its next call.
        by_batch: dict[tuple[str, ...], list[float]] = {}
        for at, _, phones in gateway.calls:
            by_batch.setdefault(tuple(sorted(phones)), []).append(at)
        for times in by_batch.values():
            assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
        doc = await deliveries(client, token, aid, limit="300")
        retried = [i for i in doc["items"] if any(e["event"] == "retry" for e in i["events"])]
        assert retried and all(i["attempts"] == 1 for i in doc["items"])
        assert all(e.get("counted") is False for i in retried for e in i["events"])
    finally:
        await server.close()


async def test_failures_are_dead_lettered_and_an_operator_can_retry_them(
    redis: Redis, heze: Any, app_for: Callable[..., Any]
) -> None:
    await add_subscribers(redis, heze, 20)
    bad = [phone(3), phone(7)]
    client, token = await app_for(channels={"sms": {**SANDBOX, "fail_addresses": bad}})
    aid = await submit(client, token, alert_body())

    async def done() -> bool:
        c = await counts(client, token, aid)
        return c.get("sent") == 18 and c.get("failed") == 2

    await wait_for(done, "18 sent, 2 failed")
    doc = await deliveries(client, token, aid, state="failed")
    assert sorted(i["address"] for i in doc["items"]) == sorted(bad)
    assert all("permanent failure" in i["last_error"] for i in doc["items"])
    dead = await redis.xrange(dispatcher(client).svc.keys.dispatch_dead)
    assert len(dead) == 2 and all(f["alert_id"] == aid for _, f in dead)
    resp = await client.post(
        f"/v1/alerts/{aid}/retry", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200 and (await resp.json())["requeued"] == 2

    async def failed_again() -> bool:
        doc = await deliveries(client, token, aid, state="failed")
        return (
            all(i["attempts"] == 1 and len(i["events"]) >= 3 for i in doc["items"])
            and len(await redis.xrange(dispatcher(client).svc.keys.dispatch_dead)) == 4
        )

    await wait_for(failed_again, "the retried deliveries were sent (and failed) again")
    assert len([r for r in await sandbox_sends(redis) if r["address"] in bad]) == 4


# ------------------------------------------------------------------ receipts


async def test_receipts_move_deliveries_and_unknown_ones_are_recorded(
    redis: Redis, heze: Any, app_for: Callable[..., Any], tmp_path: Path
) -> None:
    await add_subscribers(redis, heze, 5)
    secret = tmp_path / "rs"
    secret.write_text("s3cret")
    client, token = await app_for(channels={"sms": {**SANDBOX, "receipt_secret_file": str(secret)}})
    aid = await submit(client, token, alert_body())

    async def sent() -> bool:
        return (await counts(client, token, aid)).get("sent") == 5

    await wait_for(sent, "sent")
    ids = [i["id"] for i in (await deliveries(client, token, aid))["items"]]
    body = {
        "receipts": [
            {"delivery_id": ids[0], "state": "delivered"},
            {"delivery_id": ids[1], "state": "failed"},
            {"delivery_id": ids[0], "state": "delivered"},  # a duplicate
            {"delivery_id": f"{aid}.99.0", "state": "delivered"},  # no such delivery
            {"delivery_id": "garbage", "state": "delivered"},
        ]
    }
    resp = await client.post("/v1/receipts/sms?secret=s3cret", json=body)
    assert resp.status == 200, await resp.text()
    c = await counts(client, token, aid)
    assert c == {"sent": 3, "delivered": 1, "failed": 1}
    unmatched = await redis.xrange(dispatcher(client).svc.keys.receipts_unmatched)
    assert sorted(f["reason"] for _, f in unmatched) == sorted(
        ["duplicate or out of order", "no such delivery on this channel", "no such delivery"]
    )


async def test_receipts_naming_only_the_provider_message_id_find_their_delivery(
    redis: Redis, heze: Any, app_for: Callable[..., Any], tmp_path: Path
) -> None:
    await add_subscribers(redis, heze, 5)
    secret = tmp_path / "rs"
    secret.write_text("s3cret")
    # Asynchronous receipts that the sandbox never posts itself: the test does.
    sms = {**SANDBOX, "receipt_secret_file": str(secret), "receipts": "delivered"}
    client, token = await app_for(channels={"sms": {**sms, "receipt_delay": 3600}})
    aid = await submit(client, token, alert_body())

    async def sent() -> bool:
        return (await counts(client, token, aid)).get("sent") == 5

    await wait_for(sent, "sent")
    ids = sorted(i["id"] for i in (await deliveries(client, token, aid))["items"])
    body = {"receipts": [{"provider_id": f"sbx-{d}", "state": "delivered"} for d in ids[:3]]}
    resp = await client.post("/v1/receipts/sms?secret=s3cret", json=body)
    assert resp.status == 200, await resp.text()
    assert await counts(client, token, aid) == {"sent": 2, "delivered": 3}
    items = {i["id"]: i["state"] for i in (await deliveries(client, token, aid))["items"]}
    assert [items[d] for d in ids] == ["delivered"] * 3 + ["sent"] * 2


# ------------------------------------------------------------------ acknowledgement

ACK_GROUPS = {
    "village_officers": {
        "name": "村级信息员",
        "min_level": "orange",
        "channels": ["sms", "wechat"],
        "ack_required": True,
        "ack_deadline_minutes": 15,
        "escalate_to": "township_duty",
    },
    "township_duty": {"name": "乡镇值班室", "min_level": "orange", "channels": ["sms"]},
}
ACK = re.compile(r"/v1/ack/([a-z2-7]{12})")


async def test_unacknowledged_red_warning_escalates_to_the_next_channel_and_the_duty_room(
    redis: Redis, heze: Any, app_for: Callable[..., Any]
) -> None:
    await add_subscribers(
        redis,
        heze,
        3,
        groups=["village_officers"],
        group_settings=ACK_GROUPS,
        endpoints=lambda i: {"sms": phone(i), "wechat": f"robot-{i}"},
    )
    village = (await SubscriberStore(redis, Keys()).get("s0")).area  # type: ignore[union-attr]
    duty = Subscriber(
        id="duty",
        name="镇值班室",
        area=village[:9],
        groups=["township_duty"],
        endpoints={"sms": phone(999)},
    )
    await SubscriberStore(redis, Keys()).upsert_many([duty])
    client, token = await app_for(
        groups=ACK_GROUPS, channels={"sms": dict(SANDBOX), "wechat": dict(SANDBOX)}
    )
    aid = await submit(client, token, alert_body(level="red"))

    async def sent() -> bool:
        return (await counts(client, token, aid)).get("sent") == 4

    await wait_for(sent, "the warning sent to the officers and the duty room")
    rows = {r["address"]: r for r in await sandbox_sends(redis)}
    codes = {a: ACK.search(r["text"]) for a, r in rows.items()}
    assert all(codes[phone(i)] for i in range(3)) and codes[phone(999)] is None
    # Officer 1 confirms through the link; the others stay silent.
    code1 = codes[phone(1)].group(1)  # type: ignore[union-attr]
    resp = await client.post(f"/v1/ack/{code1}")
    assert resp.status == 200 and (await resp.json())["first"] is True
    resp = await client.post(f"/v1/ack/{code1}")
    assert (await resp.json())["first"] is False
    assert (await client.post("/v1/ack/aaaaaaaaaaaa")).status == 404
    # Past the deadline (15 minutes), as the housekeeping loop would see it:
    d = dispatcher(client)
    assert await d.acks.escalate_due(time.time() + 16 * 60) == 2

    async def escalated() -> bool:
        w = await sandbox_sends(redis, "wechat")
        # The duty room has the warning itself and one reminder per silent officer.
        told = [r for r in await sandbox_sends(redis) if r["address"] == phone(999)]
        reminders = [r for r in told if "叫应提醒" in r["text"]]
        if len(w) != 2 or len(reminders) != 2:
            return False
        # The sandbox records a message before the worker records it sent (and
        # starts its acknowledgement deadline): wait for both.
        items = (await deliveries(client, token, aid, limit="100"))["items"]
        states = {i["address"]: i["state"] for i in items if i["kind"] == "escalation"}
        return states == {"robot-0": "sent", "robot-2": "sent"}

    await wait_for(escalated, "wechat escalation and the duty room told")
    wechat = await sandbox_sends(redis, "wechat")
    assert sorted(r["address"] for r in wechat) == ["robot-0", "robot-2"]
    assert all("暴雨红色预警" in r["text"] and ACK.search(r["text"]) for r in wechat)
    # The duty room's messages arrive in any order (the two reminders are sent concurrently).
    told = [r["text"] for r in await sandbox_sends(redis) if r["address"] == phone(999)]
    assert len(told) == 3 and sum("暴雨红色预警" in t for t in told) == 1
    assert any("叫应提醒" in t and "信息员0" in t for t in told)
    assert any("叫应提醒" in t and "信息员2" in t for t in told)
    doc = await deliveries(client, token, aid, limit="100")
    by_addr = {i["address"]: i for i in doc["items"]}
    events = [e["event"] for e in by_addr[phone(0)]["events"]]
    assert events[:3] == ["ack_overdue", "escalated", "supervisor_notified"]
    assert by_addr[phone(1)]["state"] == "acknowledged"
    assert by_addr["robot-0"]["kind"] == "escalation"
    # Acknowledging the escalated message ends the chain; the other runs out of channels.
    code0 = ACK.search(next(r["text"] for r in wechat if r["address"] == "robot-0"))
    assert (await client.post(f"/v1/ack/{code0.group(1)}")).status == 200  # type: ignore[union-attr]
    assert await d.acks.escalate_due(time.time() + 60 * 60) == 1
    doc = await deliveries(client, token, aid, limit="100")
    by_addr = {i["address"]: i for i in doc["items"]}
    assert by_addr["robot-0"]["state"] == "acknowledged"
    assert [e["event"] for e in by_addr["robot-2"]["events"]][-2:] == [
        "ack_overdue",
        "escalation_exhausted",
    ]


async def test_an_acknowledgement_batch_larger_than_the_redis_pool_is_sent_whole(
    redis: Redis, heze: Any, app_for: Callable[..., Any]
) -> None:
    # 1,000 officers fall into one batch; each gets its own confirmation code,
    # which must not take one Redis connection each (the pool holds 100).
    await add_subscribers(
        redis, heze, 1_000, groups=["village_officers"], group_settings=ACK_GROUPS
    )
    client, token = await app_for(groups=ACK_GROUPS)
    aid = await submit(client, token, alert_body(level="red"))

    async def sent() -> bool:
        return (await counts(client, token, aid)).get("sent") == 1_000

    await wait_for(sent, "every officer sent a warning with a confirmation code")
    rows = await sandbox_sends(redis)
    assert len(rows) == 1_000 and not duplicates(rows)
    codes = {m.group(1) for r in rows if (m := ACK.search(r["text"]))}
    assert len(codes) == 1_000
    resp = await client.post(f"/v1/ack/{next(iter(codes))}")
    assert resp.status == 200 and (await resp.json())["first"] is True
