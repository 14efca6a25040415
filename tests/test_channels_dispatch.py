"""Channels end to end through dispatch, against real peers.

* **Kannel** (bearerbox + smsbox + fakesmsc, see ``tests/peers.py``): an
  alert dispatched through ``sms`` / ``kannel`` reaches the fake SMSC; the
  delivery reports Kannel emits (8, then 1) come back to the ``dlr-url`` on
  warnd's real listening port and move the deliveries sent → delivered, per
  area too; a reply from a phone carrying the confirmation code comes back
  through Kannel's MO path (``sms-service`` ``get-url``) and acknowledges
  (叫应 by SMS).
* A gateway whose report overtakes its answer to the send still has the
  send counted and the acknowledgement deadline started.
* A **cloud SMS API** (``CloudSmsServer``) that takes a request but answers
  too late, or drops it: deliveries in doubt are settled from its
  status-query API, and resent — once — only when it says it never took
  them; a query that cannot tell leaves them in doubt and is asked again.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from dispatch_data import (
    Client,
    add_subscribers,
    alert_body,
    counts,
    deliveries,
    dispatcher,
    phone,
    start_app,
    submit,
    wait_for,
)
from peers import CloudSmsServer, Kannel
from redis.asyncio import Redis
from warnd_channels.sms_http import HttpSms
from warnd_channels.sms_kannel import KannelSms

from warnd.api.receipts import RECEIPT_SINK, ReceiptSink
from warnd.channel import (
    Batch,
    CallbackReceipt,
    CallbackState,
    Channel,
    ChannelConfig,
    Receipt,
    Target,
)
from warnd.errors import ConfigError
from warnd.plugins import build_channel, load_channel_classes
from warnd.settings import Settings

CODE = re.compile(r"回复\s*([a-z2-7]{12})")
OFFICERS = {
    "village_officers": {
        "name": "村级信息员",
        "min_level": "orange",
        "channels": ["sms"],
        "ack_required": True,
    }
}


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    started: list[Client] = []
    yield started
    for c in started:
        await c.close()


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value)
    return str(path)


# ================================================================ Kannel


def smsc_text(kannel: Kannel, number: str) -> str | None:
    """The text the fake SMSC got for ``number``, its concatenated parts joined
    (``None`` until fakesmsc has printed them all).

    fakesmsc prints ``<from to ucs-2 PAYLOAD>`` for a single part and
    ``<from to udh UDH data PAYLOAD>`` for each part of a long message,
    URL-encoded with ``+`` for a space.
    """

    def decoded(field: str) -> bytes:
        return unquote_to_bytes(field.replace("+", " "))

    parts: list[tuple[int, bytes]] = []
    total = 1
    for line in kannel.received():
        sender, to, kind, *rest = line.split("<", 1)[1].rstrip(">").split(" ")
        if to.lstrip("+") != number.lstrip("+"):
            continue
        assert sender == "12379", line
        if kind == "ucs-2":
            parts.append((0, decoded(rest[0])))
        else:  # concatenated: UDH 05 00 03 <ref> <total> <seq>
            assert kind == "udh" and rest[1] == "data", line
            udh = decoded(rest[0])
            assert udh[:3] == b"\x05\x00\x03", line
            total = udh[4]
            parts.append((udh[5], decoded(rest[2])))
    if len(parts) < total or not parts:
        return None
    assert len(parts) == total, parts  # one message per number, each part once
    return b"".join(p for _, p in sorted(parts)).decode("utf-16-be")


async def test_kannel_reports_and_sms_replies_move_dispatched_deliveries(
    kannel: Kannel,
    redis: Redis,
    heze: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clients: list[Client],
) -> None:
    await add_subscribers(redis, heze, 2, groups=["village_officers"], group_settings=OFFICERS)
    await add_subscribers(redis, heze, 1, start=2)  # in no group: no confirmation code
    receipts = f"http://127.0.0.1:{kannel.receipts_port}/v1/receipts"
    settings = make_settings(
        http={"host": "127.0.0.1", "port": kannel.receipts_port},
        receipts_url=receipts,
        groups=OFFICERS,
        channels={
            "sms": {
                "provider": "kannel",
                "url": kannel.sendsms_url,
                "username": kannel.username,
                "password_file": secret_file(tmp_path, "kannel-pw", kannel.password),
                "sender": "12379",
                "receipt_secret_file": secret_file(tmp_path, "rs", kannel.receipt_secret),
            }
        },
        dispatch={"reclaim_idle": 5, "sweep_interval": 0.5},
    )
    client, token = await start_app(settings, redis, port=kannel.receipts_port)
    clients.append(client)
    sms = dispatcher(client).channels["sms"]
    # The sms-service get-url in kannel.conf is the one the channel tells operators to use.
    assert isinstance(sms, KannelSms) and sms.mo_url() == kannel.mo_get_url
    aid = await submit(client, token, alert_body(level="red"))

    def reports(item: dict[str, Any]) -> set[tuple[str, str]]:
        return {(e["event"], e.get("status", "")) for e in item["events"]}

    # DLR 8 (the SMSC took it) is an event; DLR 1 (delivered) moves the state.
    # smsbox calls the dlr-url for each as it comes: in either order.
    both = {("receipt.accepted", "8"), ("receipt.delivered", "1")}

    async def all_delivered() -> bool:
        doc = await deliveries(client, token, aid, limit="10")
        return doc["counts"] == {"delivered": 3} and all(both <= reports(i) for i in doc["items"])

    await wait_for(all_delivered, "Kannel's delivery reports moved all three to delivered")
    doc = await deliveries(client, token, aid, limit="10")
    by_number = {i["address"]: i for i in doc["items"]}
    assert set(by_number) == {phone(0), phone(1), phone(2)}
    assert all(i["attempts"] == 1 and i["kind"] == "alert" for i in doc["items"])
    # The per-area counters say the same, area by area.
    cnt = await dispatcher(client).store.counters(aid)
    per_area = Counter(i["area"] for i in doc["items"])
    assert cnt == {f"{area}|sms|delivered": n for area, n in per_area.items()}

    # What each phone got, as the fake SMSC saw it: the officers' texts end
    # with their own confirmation code; the other's has none.
    texts: dict[str, str] = {}

    async def printed() -> bool:  # fakesmsc's output reaches its log file in its own time
        texts.update({n: t for n in by_number if (t := smsc_text(kannel, n))})
        return len(texts) == len(by_number)

    await wait_for(printed, "fakesmsc printed every message it got")
    assert all("暴雨红色预警" in t for t in texts.values()), texts
    codes = {n: CODE.search(t) for n, t in texts.items()}
    assert codes[phone(2)] is None
    code0, code1 = (codes[phone(i)].group(1) for i in (0, 1))  # type: ignore[union-attr]
    assert code0 != code1

    # Officer 0 replies with the code (typed in capitals); then a phone replies
    # without one. Both come back through Kannel's MO path (one at a time:
    # fakesmsc reads the next line of its input only once it has sent one).
    unmatched = dispatcher(client).svc.keys.receipts_unmatched
    kannel.inject_reply(phone(0), "12379", f"{code0.upper()} received")

    async def acknowledged() -> bool:
        return (await counts(client, token, aid)).get("acknowledged") == 1

    await wait_for(acknowledged, "the reply with the code acknowledged the delivery")
    kannel.inject_reply(phone(2), "12379", "ok")

    async def recorded() -> bool:
        return bool(await redis.xlen(unmatched))

    await wait_for(recorded, "the reply without a code recorded as unmatched")
    doc = await deliveries(client, token, aid, limit="10")
    states = {i["address"]: i["state"] for i in doc["items"]}
    assert states == {phone(0): "acknowledged", phone(1): "delivered", phone(2): "delivered"}
    acked = next(i for i in doc["items"] if i["address"] == phone(0))
    assert {"event": "acknowledged", "via": "sms reply"}.items() <= acked["events"][-1].items()
    ((_, row),) = await redis.xrange(unmatched)
    assert row["reason"] == "reply names no confirmation code"
    assert phone(2) not in str(row)  # the sender is masked
    cnt = await dispatcher(client).store.counters(aid)
    assert cnt[f"{acked['area']}|sms|acknowledged"] == 1
    assert sum(cnt.values()) == 3
    # The acknowledged officer's deadline is gone; the silent one's is still due.
    due = await redis.zrange(dispatcher(client).svc.keys.dispatch_ack_due, 0, -1)
    assert due == [by_number[phone(1)]["id"]]


class OvertakingGateway(Channel):
    """An SMS gateway whose delivery report reaches warnd before its answer to
    the send does — what a real Kannel with a quick SMSC does now and then."""

    name = "sms"
    provider = "overtaking"
    async_receipts = True
    batch_size = 10
    sink: ReceiptSink | None = None

    async def send(self, batch: Batch) -> list[Receipt]:
        if self.sink is None:
            raise RuntimeError("no receipt sink")
        reports = [
            CallbackReceipt(CallbackState.DELIVERED, delivery_id=t.delivery_id, provider_status="1")
            for t in batch.targets
        ]
        await self.sink(self.name, reports)
        return [Receipt.sent(t.delivery_id, f"p-{t.delivery_id}") for t in batch.targets]


async def test_a_report_that_overtakes_the_send_keeps_attempts_and_ack_deadlines(
    redis: Redis,
    heze: Any,
    make_settings: Callable[..., Settings],
    clients: list[Client],
) -> None:
    await add_subscribers(redis, heze, 2, groups=["village_officers"], group_settings=OFFICERS)
    await add_subscribers(redis, heze, 1, start=2)
    gateway = OvertakingGateway(ChannelConfig(provider="overtaking"))
    settings = make_settings(groups=OFFICERS, dispatch={"sweep_interval": 0.5})
    client, token = await start_app(settings, redis, channels={"sms": gateway})
    clients.append(client)
    gateway.sink = client.app[RECEIPT_SINK]
    aid = await submit(client, token, alert_body(level="red"))

    async def delivered() -> bool:
        doc = await deliveries(client, token, aid, limit="10")
        return doc["counts"] == {"delivered": 3} and all(i["attempts"] for i in doc["items"])

    await wait_for(delivered, "delivered, each send counted")
    doc = await deliveries(client, token, aid, limit="10")
    assert [i["attempts"] for i in doc["items"]] == [1, 1, 1]
    officers = sorted(i["id"] for i in doc["items"] if i["group"] == "village_officers")
    assert len(officers) == 2
    # The officers' acknowledgement deadlines run although the report came first.
    due = await redis.zrange(dispatcher(client).svc.keys.dispatch_ack_due, 0, -1)
    assert sorted(due) == officers


# ================================================================ cloud SMS


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[CloudSmsServer, str]]:
    peer = CloudSmsServer(api_key="cloud-key-5d1e")
    app = web.Application()
    app.router.add_post("/sms/send", peer.handle)
    app.router.add_post("/sms/query", peer.handle_query)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield peer, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def cloud_sms(url: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "http",
        "url": f"{url}/sms/send",
        "query_url": f"{url}/sms/query",
        "auth_value_file": secret_file(tmp_path, "sms-auth", "Bearer cloud-key-5d1e"),
        "sender": "菏泽市应急管理局",
        "timeout": 0.5,
        **extra,
    }


async def start_cloud(
    gateway: tuple[CloudSmsServer, str],
    redis: Redis,
    heze: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clients: list[Client],
    **dispatch: Any,
) -> tuple[Client, str, str]:
    """Three subscribers, warnd on the cloud gateway, an alert for them: its id."""
    await add_subscribers(redis, heze, 3)
    settings = make_settings(
        channels={"sms": cloud_sms(gateway[1], tmp_path)},
        dispatch={"reconcile_after": 0.2, "backoff_max": 0.4, "sweep_interval": 0.5, **dispatch},
    )
    client, token = await start_app(settings, redis)
    clients.append(client)
    aid = await submit(client, token, alert_body())
    return client, token, aid


def taken_per_number(peer: CloudSmsServer) -> Counter[str]:
    return Counter(number for _, number in peer.taken)


async def settled_for_good(client: Client) -> None:
    """Nothing more can happen: no lane entry, no retry, nothing left to reconcile."""
    d = dispatcher(client)
    redis = d.svc.redis
    for p in ("hi", "lo"):
        assert await redis.xlen(d.lanes.lane("sms", p)) == 0
    assert await redis.zcard(d.svc.keys.dispatch_delayed) == 0
    reconciler = d.workers["sms"].reconciler
    assert reconciler is not None and await reconciler.pending() == 0


@pytest.mark.parametrize(
    ("hang", "report", "state", "sends", "found"),
    [
        ("accepted", "SENT", "sent", 1, "sent"),  # it took them: never resent
        ("accepted", "DELIVRD", "delivered", 1, "delivered"),
        ("dropped", "SENT", "sent", 2, "not sent"),  # it never did: resent, once
    ],
)
async def test_http_sms_deliveries_in_doubt_are_settled_from_the_query_api(
    gateway: tuple[CloudSmsServer, str],
    redis: Redis,
    heze: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clients: list[Client],
    hang: str,
    report: str,
    state: str,
    sends: int,
    found: str,
) -> None:
    peer, _ = gateway
    peer.hang_once, peer.report = hang, report
    client, token, aid = await start_cloud(gateway, redis, heze, make_settings, tmp_path, clients)

    async def settled() -> bool:
        return await counts(client, token, aid) == {state: 3}

    await wait_for(settled, f"all three {state} after the query")
    assert len(peer.requests) == sends
    assert taken_per_number(peer) == {phone(i): 1 for i in range(3)}  # each warned once
    # The query named the request that timed out, and its numbers.
    first = peer.requests[0]
    assert peer.queries[0]["out_id"] == first["out_id"]
    assert sorted(peer.queries[0]["phones"]) == sorted(first["phones"])
    doc = await deliveries(client, token, aid, limit="10")
    for item in doc["items"]:
        events = [e for e in item["events"] if e["event"] in ("uncertain", "reconciled")]
        assert [e["event"] for e in events] == ["uncertain", "reconciled"]
        assert events[0]["ref"] == first["out_id"]
        assert events[1]["found"] == found
        assert item["attempts"] == sends
    await settled_for_good(client)
    assert len(peer.requests) == sends
    # Receipts will name the request that took them: one map entry for it.
    assert list(await receipt_map(redis, client)) == [f"r:{peer.requests[-1]['out_id']}"]


async def test_http_sms_query_that_cannot_tell_leaves_them_in_doubt_never_resent(
    gateway: tuple[CloudSmsServer, str],
    redis: Redis,
    heze: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clients: list[Client],
) -> None:
    peer, _ = gateway
    peer.hang_once, peer.query_mode = "accepted", "500"
    client, token, aid = await start_cloud(gateway, redis, heze, make_settings, tmp_path, clients)
    for mode, asked in (("500", 2), ("garbage", 3), ("unknown", 4)):
        peer.query_mode = mode

        async def asked_again(n: int = asked) -> bool:
            return len(peer.queries) >= n

        await wait_for(asked_again, f"the query asked again ({mode})")
        assert await counts(client, token, aid) == {"uncertain": 3}
        assert len(peer.requests) == 1  # never resent while the query cannot tell
    peer.query_mode = "ok"

    async def settled() -> bool:
        return await counts(client, token, aid) == {"sent": 3}

    await wait_for(settled, "settled once the query answers")
    assert len(peer.requests) == 1 and taken_per_number(peer) == {phone(i): 1 for i in range(3)}
    doc = await deliveries(client, token, aid, limit="10")
    errors = [e.get("error", "") for e in doc["items"][0]["events"] if e["event"] == "reconcile"]
    assert any("answered 500" in e for e in errors)
    assert any("per-number results" in e for e in errors)
    assert any("unknown status" in e for e in errors)
    await settled_for_good(client)


async def test_http_sms_doubt_left_to_the_operator_after_the_last_query(
    gateway: tuple[CloudSmsServer, str],
    redis: Redis,
    heze: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clients: list[Client],
) -> None:
    peer, _ = gateway
    peer.hang_once, peer.query_mode = "dropped", "500"
    client, token, aid = await start_cloud(
        gateway, redis, heze, make_settings, tmp_path, clients, reconcile_tries=2
    )

    async def gave_up() -> bool:
        doc = await deliveries(client, token, aid, limit="10")
        return len(doc["items"]) == 3 and all(
            any(e["event"] == "reconcile_gave_up" for e in i["events"]) for i in doc["items"]
        )

    await wait_for(gave_up, "the reconciler gave up after two queries")
    assert len(peer.queries) == 2 and len(peer.requests) == 1
    assert await counts(client, token, aid) == {"uncertain": 3}
    await settled_for_good(client)  # nothing is resent on its own
    # The duty officer decides to send them again.
    resp = await client.post(
        f"/v1/alerts/{aid}/retry",
        json={"states": ["uncertain"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200 and (await resp.json())["requeued"] == 3

    async def sent() -> bool:
        return await counts(client, token, aid) == {"sent": 3}

    await wait_for(sent, "sent after the operator's retry")
    assert len(peer.requests) == 2 and taken_per_number(peer) == {phone(i): 1 for i in range(3)}


async def test_http_sms_reconcile_maps_a_query_answer_per_number(
    gateway: tuple[CloudSmsServer, str], tmp_path: Path
) -> None:
    """The channel alone: GET queries, numbers not listed, no request id to ask by."""
    _, url = gateway
    seen: list[dict[str, str]] = []

    async def get_query(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        assert request.headers.get("Authorization") == "Bearer cloud-key-5d1e"
        return web.json_response(
            {
                "data": {
                    "items": [
                        {"mobile": "13800138000", "state": "DELIVRD", "id": "x1"},
                        {"mobile": "13900139000", "state": "UNDELIV", "id": "x2"},
                    ]
                }
            }
        )

    app = web.Application()
    app.router.add_get("/status", get_query)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    raw = cloud_sms(url, tmp_path)
    ch = build_channel(
        "sms",
        {
            **raw,
            "query_url": str(server.make_url("/status")),
            "query_method": "GET",
            "query_reference_field": "bizId",
            "query_numbers_field": "mobiles",
            "query_results_field": "data.items",
            "query_number_field": "mobile",
            "query_status_field": "state",
            "query_id_field": "id",
            "query_missing": "not_sent",
            "query_extra": {"app": "heze"},
        },
        load_channel_classes(),
    )
    assert isinstance(ch, HttpSms) and ch.reconciles
    await ch.start()
    try:
        with structlog.testing.capture_logs() as logs:
            got = await ch.reconcile(
                [
                    Target("d1", "13800138000", reference="r1"),
                    Target("d2", "13900139000", reference="r1"),
                    Target("d3", "15000150000", reference="r1"),
                    Target("d4", "15100151000"),  # its send recorded no request id
                ]
            )
    finally:
        await ch.stop()
        await server.close()
    by_id = {r.delivery_id: r for r in got}
    assert [(by_id[d].outcome.value, by_id[d].provider_id) for d in ("d1", "d2")] == [
        ("delivered", "x1"),
        ("failed", None),
    ]
    assert by_id["d3"].outcome.value == "retry"  # query_missing = "not_sent"
    assert by_id["d4"].outcome.value == "uncertain"  # never asked by numbers alone
    assert seen == [
        {"app": "heze", "bizId": "r1", "mobiles": "13800138000,13900139000,15000150000"}
    ]
    text = json.dumps(logs, default=str) + repr(ch) + repr(got)
    assert "cloud-key-5d1e" not in text and "13800138000" not in text


# ------------------------------------------------- cloud SMS delivery reports


async def receipt_map(redis: Redis, client: Client) -> dict[str, str]:
    """Every entry of the SMS channel's receipt map (all its days)."""
    keys = await redis.keys(dispatcher(client).svc.keys.provider_ids("sms", "*"))
    out: dict[str, str] = {}
    for key in keys:
        out |= await redis.hgetall(key)
    return out


async def start_reporting_cloud(
    gateway: tuple[CloudSmsServer, str],
    redis: Redis,
    heze: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clients: list[Client],
    subscribers: int,
    **extra: Any,
) -> tuple[Client, str, str]:
    """warnd on the cloud gateway, whose delivery reports come to ``/v1/receipts/sms``."""
    await add_subscribers(redis, heze, subscribers)
    sms = cloud_sms(
        gateway[1],
        tmp_path,
        receipt_secret_file=secret_file(tmp_path, "sms-receipts", "rcpt-7f3a"),
        receipts_field="receipts",
        **extra,
    )
    client, token = await start_app(make_settings(channels={"sms": sms}), redis)
    clients.append(client)
    aid = await submit(client, token, alert_body())

    async def sent() -> bool:
        return await counts(client, token, aid) == {"sent": subscribers}

    await wait_for(sent, f"all {subscribers} sent")
    return client, token, aid


async def test_http_sms_receipts_are_matched_by_request_id_and_number(
    gateway: tuple[CloudSmsServer, str],
    redis: Redis,
    heze: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clients: list[Client],
) -> None:
    peer, _ = gateway
    client, token, aid = await start_reporting_cloud(
        gateway, redis, heze, make_settings, tmp_path, clients, 1000
    )
    assert [len(r["phones"]) for r in peer.requests] == [1000]  # one request
    out_id = peer.requests[0]["out_id"]
    # One map entry for the request, not one per number: the request id names
    # the batch and the offsets of its deliveries.
    entries = await receipt_map(redis, client)
    assert list(entries) == [f"r:{out_id}"]
    assert entries[f"r:{out_id}"].startswith(f"{aid}.")
    assert entries[f"r:{out_id}"].endswith(".0-999")
    reports = peer.delivery_reports()
    assert len(reports) == 1000
    stray = [
        {"out_id": "not-a-request", "phone": phone(1), "status": "DELIVRD"},
        {"out_id": out_id, "phone": phone(5000), "status": "DELIVRD"},  # not in it
    ]
    resp = await client.post(
        "/v1/receipts/sms?secret=rcpt-7f3a",
        json={"receipts": [*reports, *stray, reports[0]]},  # and a repeat
    )
    assert resp.status == 200, await resp.text()
    assert await counts(client, token, aid) == {"delivered": 1000}
    unmatched = await redis.xrange(dispatcher(client).svc.keys.receipts_unmatched)
    assert sorted(f["reason"] for _, f in unmatched) == [
        "duplicate or out of order",
        "no such request or number in it",
        "no such request or number in it",
    ]
    assert all(phone(5000) not in json.dumps(f) for _, f in unmatched)  # numbers masked
    assert list(await receipt_map(redis, client)) == [f"r:{out_id}"]


async def test_http_sms_receipts_by_message_id_keep_a_map_entry_per_number(
    gateway: tuple[CloudSmsServer, str],
    redis: Redis,
    heze: Any,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    clients: list[Client],
) -> None:
    peer, _ = gateway
    client, token, aid = await start_reporting_cloud(
        gateway, redis, heze, make_settings, tmp_path, clients, 5, receipt_match="message_id"
    )
    reports = [{"msg_id": r["msg_id"], "status": r["status"]} for r in peer.delivery_reports()]
    entries = await receipt_map(redis, client)
    assert sorted(entries) == sorted(r["msg_id"] for r in reports)
    resp = await client.post(
        "/v1/receipts/sms?secret=rcpt-7f3a",
        json={"receipts": [*reports[:3], {"msg_id": "m-unknown", "status": "DELIVRD"}]},
    )
    assert resp.status == 200, await resp.text()
    assert await counts(client, token, aid) == {"delivered": 3, "sent": 2}
    unmatched = await redis.xrange(dispatcher(client).svc.keys.receipts_unmatched)
    assert [f["reason"] for _, f in unmatched] == ["no such delivery"]


def test_http_sms_query_config_is_checked() -> None:
    base = {"provider": "http", "url": "https://sms.example.com/send"}
    bad = [
        ({"query_url": "https://q", "query_reference_field": None, "query_numbers_field": None}),
        ({"query_url": "https://q", "reference_field": None}),
        ({"query_url": "ftp://q"}),
        ({"reference_field": None}),  # receipts matched by a request id never sent
    ]
    for extra in bad:
        with pytest.raises(ConfigError):
            build_channel("sms", {**base, **extra}, load_channel_classes())
