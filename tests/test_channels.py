"""Channel plugins against real peers, and the contract every channel passes."""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import random
import re
from collections.abc import AsyncIterator, Callable, Iterator
from email.header import decode_header, make_header
from email.message import Message
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote_to_bytes

import aiomqtt
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from peers import (
    CloudSmsServer,
    Kannel,
    Mosquitto,
    SimulatedBoard,
    SmtpRecorder,
    WeChatServer,
    free_port,
    smtp_controller,
)
from redis.asyncio import Redis
from warnd_channels._sms import plain_numbers, valid_number

from warnd.api.app import create_app
from warnd.api.receipts import RECEIPT_SINK, redis_sink
from warnd.channel import (
    Batch,
    CallbackReceipt,
    CallbackState,
    Channel,
    ChannelContext,
    DeliveryIds,
    Outcome,
    Receipt,
    Receipts,
    Target,
    Targets,
    mask_address,
)
from warnd.dispatch.correlate import decode_offsets, encode_offsets
from warnd.dispatch.ratelimit import RateLimiter, Reservation
from warnd.errors import ConfigError
from warnd.keys import Keys
from warnd.limits import MessageLimits
from warnd.model import Level, MsgType
from warnd.plugins import build_channel, build_channels, load_channel_classes
from warnd.settings import Settings
from warnd.wire import Wire

SECRET = "s3cr3t-do-not-log-7f3a"
RECEIPT_SECRET = "receipts-secret-9c1d"
ROBOT = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
OTHER_ROBOT = "11111111-2222-3333-4444-555555555555"
TEXT = "【菏泽市气象台】暴雨红色预警：曹县未来3小时降雨量将达100毫米以上，请立即停止户外活动。"


def batch(
    targets: list[Target],
    *,
    text: str = TEXT,
    level: Level = Level.RED,
    msg_type: MsgType = MsgType.ALERT,
    markdown: bool = False,
) -> Batch:
    return Batch(
        targets=tuple(targets),
        text=text,
        subject="曹县暴雨红色预警",
        html=f"<p>{text}</p>",
        lines=("暴雨红色预警", "曹县", "停止户外活动"),
        level=level,
        alert_id="a1",
        identifier="37170041600000_20300701120000_1",
        msg_type=msg_type,
        markdown=markdown,
    )


def build(name: str, raw: dict[str, Any], ctx: ChannelContext | None = None, **env: str) -> Channel:
    return build_channel(name, raw, load_channel_classes(), ctx, env=env)


async def serve(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never says a word; its port."""
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


# ======================================================== the contract


class ChannelContract:
    """Every registered channel (and provider) passes these, against its peer."""

    valid: ClassVar[list[str]]
    """Addresses the peer accepts."""
    invalid: ClassVar[str] = "not an address \n"

    @pytest.fixture
    async def channel(self) -> AsyncIterator[Channel]:
        raise NotImplementedError

    @pytest.fixture
    async def hanging(self) -> AsyncIterator[Channel]:
        """The same channel against a peer that never answers (timeout 0.5 s)."""
        raise NotImplementedError

    def targets(self, n: int) -> list[Target]:
        return [Target(f"d{i}", self.valid[i % len(self.valid)]) for i in range(n)]

    async def test_declares_limits_batch_size_and_rate(self, channel: Channel) -> None:
        assert channel.name in load_channel_classes()
        assert isinstance(channel.limits, MessageLimits)
        for level in Level:
            assert isinstance(channel.limits_for(level), MessageLimits)
        assert channel.batch_size >= 1
        assert channel.rate.count >= 1 and channel.rate.per > 0

    async def test_one_receipt_per_target(self, channel: Channel) -> None:
        targets = [*self.targets(len(self.valid)), Target("bad", self.invalid)]
        receipts = await channel.send(batch(targets))
        assert sorted(r.delivery_id for r in receipts) == sorted(t.delivery_id for t in targets)
        by_id = {r.delivery_id: r for r in receipts}
        assert by_id["bad"].outcome is Outcome.FAILED
        assert all(
            by_id[t.delivery_id].outcome in (Outcome.SENT, Outcome.DELIVERED) for t in targets[:-1]
        ), receipts

    async def test_timeouts_become_receipts(self, hanging: Channel) -> None:
        targets = self.targets(2)
        receipts = await hanging.send(batch(targets))
        assert len(receipts) == 2
        outcomes = {r.outcome for r in receipts}
        assert outcomes <= {Outcome.RETRY, Outcome.UNCERTAIN}, receipts
        if hanging.idempotent:
            assert outcomes == {Outcome.RETRY}  # resending is harmless
        else:
            # Never resent blindly: only what certainly never left may be retried.
            assert all(
                r.outcome is Outcome.UNCERTAIN or "connect" in (r.error or "").lower()
                for r in receipts
            ), receipts

    async def test_secrets_stay_out_of_repr_and_logs(self, channel: Channel) -> None:
        with structlog.testing.capture_logs() as logs:
            await channel.send(batch(self.targets(len(self.valid))))
        text = repr(channel) + repr(channel.config) + json.dumps(logs, default=str)
        assert SECRET not in text and RECEIPT_SECRET not in text
        for address in self.valid:
            if address.isdigit() and len(address) > 4:
                assert address not in text  # phone numbers: last four digits only


def test_every_registered_channel_and_provider_has_a_contract_test() -> None:
    covered = {(c.channel_name, c.provider_name) for c in ChannelContract.__subclasses__()}  # type: ignore[attr-defined]
    wanted = set()
    for name, cls in load_channel_classes().items():
        for provider in cls.providers or {cls.provider: cls}:
            wanted.add((name, provider))
    assert wanted <= covered, wanted - covered


# ------------------------------------------------------------- sandbox


class TestSandboxContract(ChannelContract):
    channel_name, provider_name = "sandbox", "sandbox"
    valid: ClassVar[list[str]] = ["13800138000", "x@example.cn"]
    invalid = "fail-me"

    @pytest.fixture
    async def channel(self, redis: Redis) -> AsyncIterator[Channel]:
        ch = build(
            "sandbox",
            {
                "provider": "sandbox",
                "fail_addresses": ["fail-me"],
                "record": "both",
                "receipt_secret_env": "RS",
            },
            ChannelContext(redis=redis, keys=Keys()),
            RS=RECEIPT_SECRET,
        )
        await ch.start()
        yield ch
        await ch.stop()

    @pytest.fixture
    async def hanging(self) -> AsyncIterator[Channel]:
        ch = build("sandbox", {"provider": "sandbox", "latency": 3600, "timeout": 0.5})
        await ch.start()
        yield ch
        await ch.stop()


async def test_sandbox_records_in_redis_for_other_processes(redis: Redis) -> None:
    ch = build("sms", {"provider": "sandbox", "record": "redis"}, ChannelContext(redis=redis))
    assert ch.name == "sms" and ch.limits.unit.value == "ucs2"
    await ch.start()
    await ch.send(batch([Target("d1", "13800138000"), Target("d2", "13900139000")]))
    await ch.stop()
    rows = [f for _, f in await redis.xrange(Keys().sandbox_record("sms"))]
    assert [(r["delivery_id"], r["address"], r["outcome"]) for r in rows] == [
        ("d1", "13800138000", "sent"),
        ("d2", "13900139000", "sent"),
    ]
    assert rows[0]["text"] == TEXT


async def test_sandbox_failure_shares_are_repeatable() -> None:
    raw = {"provider": "sandbox", "fail_rate": 0.3, "throttle_rate": 0.2}
    targets = [Target(f"d{i}", "13800138000") for i in range(200)]
    first = await build("sandbox", raw).send(batch(targets))
    second = await build("sandbox", raw).send(batch(targets))
    assert first == second
    outcomes = [r.outcome for r in first]
    assert 20 < outcomes.count(Outcome.FAILED) < 100
    throttled = [r for r in first if r.outcome is Outcome.RETRY]
    assert throttled and all(not r.counts_attempt for r in throttled)


# ========================================================== registry


def test_delivery_ids_are_made_when_read_and_compare_as_a_sequence() -> None:
    ids = DeliveryIds("a1.7.", range(3))
    assert len(ids) == 3 and ids[0] == "a1.7.0" and ids[-1] == "a1.7.2"
    assert list(ids) == ["a1.7.0", "a1.7.1", "a1.7.2"]
    assert ids == ["a1.7.0", "a1.7.1", "a1.7.2"] == ids  # either side of a list
    assert ids != ["a1.7.0", "a1.7.1"] and ids != ["a1.7.0", "a1.7.1", "a1.7.3"]
    assert ids == DeliveryIds("a1.7.", [0, 1, 2]) and ids != DeliveryIds("a1.8.", range(3))
    assert ids[1:] == ["a1.7.1", "a1.7.2"] and isinstance(ids[1:], DeliveryIds)
    assert DeliveryIds("a1.7.", [4, 9]) == ["a1.7.4", "a1.7.9"]
    # Through targets and the receipts a channel makes of them, the same ids.
    targets = Targets(ids, ["138", "139", "150"])
    assert [t.delivery_id for t in targets] == list(ids)
    got = Receipts(ids, Outcome.SENT, provider_ids=["p0", "p1", "p2"])
    assert [(r.delivery_id, r.provider_id) for r in got][2] == ("a1.7.2", "p2")
    with pytest.raises(ValueError, match="one address per delivery id"):
        Targets(ids, ["138"])


def test_two_plugins_claiming_one_name_stop_start_up() -> None:
    eps = [
        EntryPoint("sms", "warnd_channels.sms:SmsChannel", "warnd.channels"),
        EntryPoint("sms", "acme_sms.plugin:AcmeSms", "warnd.channels"),
    ]
    with pytest.raises(ConfigError) as err:
        load_channel_classes(eps)
    assert "warnd_channels.sms:SmsChannel" in err.value.detail
    assert "acme_sms.plugin:AcmeSms" in err.value.detail


def test_registry_lists_the_bundled_channels() -> None:
    assert set(load_channel_classes()) >= {"sandbox", "sms", "wechat", "email", "board"}


def test_secrets_come_from_env_or_file_never_the_config(tmp_path: Path) -> None:
    raw = {"provider": "kannel", "url": "http://k/cgi-bin/sendsms", "username": "u"}
    with pytest.raises(ConfigError) as err:
        build("sms", {**raw, "password": "inline"})
    assert "do not write secrets" in err.value.detail
    with pytest.raises(ConfigError) as err:
        build("sms", {**raw, "password_env": "NOPE"})
    assert "'NOPE' is not set" in err.value.detail
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    ch = build("sms", {**raw, "password_file": str(secret_file)})
    assert ch.config.password.get_secret_value() == SECRET  # type: ignore[attr-defined]
    assert SECRET not in repr(ch)


def test_build_channels_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        build_channels(
            {
                "sms": {"provider": "nope"},
                "wechat": {"provider": "robot", "markdown_levels": ["red"]},
                "pager": {"provider": "x"},
            }
        )
    text = "\n".join(err.value.problems)
    assert "unknown provider 'nope'" in text
    assert "cannot @-mention" in text
    assert "no channel plugin named 'pager'" in text


# ============================================================ Kannel


def kannel_raw(k: Kannel, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "kannel",
        "url": k.sendsms_url,
        "username": k.username,
        "password_env": "KPW",
        "sender": "12379",
        "receipt_secret_env": "RS",
        **extra,
    }


class TestKannelContract(ChannelContract):
    channel_name, provider_name = "sms", "kannel"
    valid: ClassVar[list[str]] = ["13800138001", "13900139002"]

    @pytest.fixture
    async def channel(self, kannel: Kannel) -> AsyncIterator[Channel]:
        ctx = ChannelContext(receipts_url=f"http://127.0.0.1:{kannel.receipts_port}/v1/receipts")
        ch = build("sms", kannel_raw(kannel), ctx, KPW=kannel.password, RS=RECEIPT_SECRET)
        await ch.start()
        yield ch
        await ch.stop()

    @pytest.fixture
    async def hanging(self) -> AsyncIterator[Channel]:
        async def hang(request: web.Request) -> web.Response:
            await asyncio.sleep(3600)
            return web.Response()

        app = web.Application()
        app.router.add_get("/cgi-bin/sendsms", hang)
        async for url in serve(app):
            ch = build(
                "sms",
                {
                    "provider": "kannel",
                    "url": f"{url}/cgi-bin/sendsms",
                    "username": "u",
                    "password_env": "KPW",
                    "timeout": 0.5,
                },
                KPW=SECRET,
            )
            await ch.start()
            yield ch
            await ch.stop()


async def test_kannel_delivers_and_its_reports_move_states(
    kannel: Kannel, redis: Redis, settings: Settings
) -> None:
    ctx = ChannelContext(receipts_url=f"http://127.0.0.1:{kannel.receipts_port}/v1/receipts")
    ch = build("sms", kannel_raw(kannel), ctx, KPW=kannel.password, RS=kannel.receipt_secret)
    got: list[tuple[str, CallbackReceipt]] = []
    both = asyncio.Event()

    async def sink(name: str, receipts: Any) -> None:
        got.extend((name, r) for r in receipts)
        if {r.provider_status for _, r in got if r.delivery_id == "k1"} >= {"8", "1"}:
            both.set()

    app = create_app(settings, redis=redis, channels={"sms": ch})
    app[RECEIPT_SINK] = sink
    async for _ in serve(app, kannel.receipts_port):
        (receipt,) = await ch.send(batch([Target("k1", "13800138007")]))
        assert receipt.outcome is Outcome.SENT, receipt
        await asyncio.wait_for(both.wait(), timeout=60)
        # The SMSC got the text, as UCS-2, for that number.
        for _ in range(300):
            lines = [ln for ln in kannel.received() if " 13800138007 " in ln]
            if lines:
                break
            await asyncio.sleep(0.1)
        (line,) = lines
        sender, _, coding, payload = line.split("<", 1)[1].rstrip(">").split(" ", 3)
        assert (sender, coding) == ("12379", "ucs-2")
        assert unquote_to_bytes(payload).decode("utf-16-be") == TEXT
        states = [(r.provider_status, r.state) for _, r in got if r.delivery_id == "k1"]
        assert ("8", CallbackState.ACCEPTED) in states
        assert ("1", CallbackState.DELIVERED) in states

        # A reply from the phone comes back as an acknowledgement.
        kannel.inject_reply("13800138007", "12379", "1")
        for _ in range(300):
            if any(r.state is CallbackState.ACKNOWLEDGED for _, r in got):
                break
            await asyncio.sleep(0.1)
        (ack,) = [r for _, r in got if r.state is CallbackState.ACKNOWLEDGED]
        assert ack.sender and ack.sender.endswith("13800138007") and ack.reply == "1"
        assert "13800138007" not in repr(ack)


# ========================================================= cloud SMS HTTP


@pytest.fixture
async def cloud_sms() -> AsyncIterator[tuple[CloudSmsServer, str]]:
    peer = CloudSmsServer(api_key=SECRET, bad_numbers={"13000000000"})
    app = web.Application()
    app.router.add_post("/sms/send", peer.handle)
    async for url in serve(app):
        yield peer, url


def http_sms_raw(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "http",
        "url": f"{url}/sms/send",
        "auth_value_env": "AUTH",
        "sender": "菏泽市应急管理局",
        "receipt_secret_env": "RS",
        "receipts_field": "receipts",
        **extra,
    }


async def http_sms(url: str, **extra: Any) -> Channel:
    ch = build("sms", http_sms_raw(url, **extra), AUTH=f"Bearer {SECRET}", RS=RECEIPT_SECRET)
    await ch.start()
    return ch


class TestHttpSmsContract(ChannelContract):
    channel_name, provider_name = "sms", "http"
    valid: ClassVar[list[str]] = ["13800138001", "13900139002", "15000150003"]

    @pytest.fixture
    async def channel(self, cloud_sms: tuple[CloudSmsServer, str]) -> AsyncIterator[Channel]:
        ch = await http_sms(cloud_sms[1])
        yield ch
        await ch.stop()

    @pytest.fixture
    async def hanging(self, cloud_sms: tuple[CloudSmsServer, str]) -> AsyncIterator[Channel]:
        cloud_sms[0].mode = "hang"
        ch = await http_sms(cloud_sms[1], timeout=0.5)
        yield ch
        await ch.stop()


async def test_http_sms_batches_1000_numbers_with_per_number_results(
    cloud_sms: tuple[CloudSmsServer, str],
) -> None:
    peer, url = cloud_sms
    ch = await http_sms(url)
    targets = [Target(f"d{i}", f"139{i:08d}") for i in range(2500)]
    targets.append(Target("bad", "13000000000"))
    try:
        receipts = await ch.send(batch(targets))
    finally:
        await ch.stop()
    assert [len(r["phones"]) for r in peer.requests] == [1000, 1000, 501]
    assert all(r["content"] == TEXT and r["sign_name"] == "菏泽市应急管理局" for r in peer.requests)
    by_id = {r.delivery_id: r for r in receipts}
    assert len(by_id) == 2501
    assert by_id["bad"].outcome is Outcome.FAILED
    assert "invalid mobile number" in (by_id["bad"].error or "")
    assert by_id["d0"].outcome is Outcome.SENT and by_id["d0"].provider_id


async def test_http_sms_rate_counts_requests_not_numbers(redis: Redis) -> None:
    # The provider's default limit, 20 requests a second, each of up to 1,000
    # numbers: a thousand numbers take one token, not a thousand.
    limiter = RateLimiter(redis, Keys())
    sms = build("sms", http_sms_raw("http://sms.example.com"), AUTH="a", RS="r")
    assert sms.rate.count == 20 and sms.rate_cost(1000) == 1 and sms.rate_cost(1001) == 2
    assert [await limiter.reserve(sms, 1000) for _ in range(20)] == [0.0] * 20
    assert await limiter.reserve(sms, 1000) > 0  # the 21st request in the same second
    # A channel that sends one message per request pays per message.
    email = build("email", {"provider": "smtp", "host": "h", "from_address": "a@b.cn"})
    assert email.rate_cost(50) == 50
    assert await limiter.reserve(email, 50) > 0  # 10 per second


async def test_rate_tokens_taken_with_the_claim_go_back_when_the_claim_gives_fewer(
    redis: Redis,
) -> None:
    # The worker takes a batch's tokens in the claim's round trip, before it
    # knows how many the claim gives; what it took for nothing goes back.
    keys = Keys()
    limiter = RateLimiter(redis, keys)
    email = build(
        "email", {"provider": "smtp", "host": "h", "from_address": "a@b.cn", "rate_count": 100}
    )

    async def tokens() -> float:
        return float(await redis.hget(keys.rate_bucket("email"), "tokens") or 0)

    await redis.delete(keys.rate_bucket("email"))  # another test's email bucket

    async def reserve(n: int) -> tuple[Wire, Reservation]:
        wire = Wire()
        taken = limiter.reserve_on(wire, email, n)
        assert taken is not None
        # The first time Redis does not know the script yet: wait() runs it.
        await wire.execute(redis, raise_on_error=False)
        return wire, taken

    wire, taken = await reserve(60)
    assert await taken.wait(wire.replies, 60) == 0.0
    assert 39 < await tokens() <= 41  # a burst of 100, 60 taken
    wire, taken = await reserve(60)
    assert -21 < await tokens() <= -19  # taken in the round trip
    assert await taken.wait(wire.replies, 0) == 0.0  # the claim gave none: all back
    assert 39 < await tokens() <= 41
    wire, taken = await reserve(30)
    assert await taken.wait(wire.replies, 120) > 0  # it gave more: 90 more, in debt
    assert -81 < await tokens() <= -79
    # A channel whose limit is per address (a robot's window) has no shared
    # bucket: nothing is queued for it.
    robots = build("wechat", {"provider": "robot"})
    wire = Wire()
    assert robots.rate.scope == "address" and limiter.reserve_on(wire, robots, 5) is None
    assert not len(wire)


async def test_http_sms_message_ids_past_64_bits_are_kept_exactly(
    cloud_sms: tuple[CloudSmsServer, str],
) -> None:
    peer, url = cloud_sms
    peer.numeric_ids_from = 2**70  # a JSON integer no 64-bit decoder holds
    ch = await http_sms(url)
    try:
        receipts = await ch.send(batch([Target(f"d{i}", f"139{i:08d}") for i in range(3)]))
        # One number refused: receipts one by one, the ids as exact.
        mixed = await ch.send(batch([Target("e", "13900000009"), Target("bad", "13000000000")]))
    finally:
        await ch.stop()
    assert [r.provider_id for r in receipts] == [str(2**70 + i) for i in (1, 2, 3)]
    assert [(r.outcome, r.provider_id) for r in mixed] == [
        (Outcome.SENT, str(2**70 + 4)),
        (Outcome.FAILED, None),
    ]


@pytest.mark.parametrize(
    ("mode", "outcome", "counts", "after"),
    [
        ("429", Outcome.RETRY, False, 7.0),
        ("500", Outcome.RETRY, True, 5.0),
        ("garbage", Outcome.UNCERTAIN, True, None),
    ],
)
async def test_http_sms_gateway_answers_map_to_receipts(
    cloud_sms: tuple[CloudSmsServer, str],
    mode: str,
    outcome: Outcome,
    counts: bool,
    after: float | None,
) -> None:
    peer, url = cloud_sms
    peer.mode = mode
    ch = await http_sms(url)
    try:
        receipts = await ch.send(batch([Target("d1", "13800138000"), Target("d2", "13900139000")]))
    finally:
        await ch.stop()
    assert {r.outcome for r in receipts} == {outcome}
    assert all(r.counts_attempt is counts and r.retry_after == after for r in receipts)


async def test_http_sms_wrong_key_is_retried_not_failed(
    cloud_sms: tuple[CloudSmsServer, str],
) -> None:
    ch = build("sms", http_sms_raw(cloud_sms[1]), AUTH="Bearer wrong", RS=RECEIPT_SECRET)
    await ch.start()
    try:
        (r,) = await ch.send(batch([Target("d1", "13800138000")]))
    finally:
        await ch.stop()
    assert r.outcome is Outcome.RETRY and r.provider_status == "401"


# ======================================================= receipts route


async def test_receipts_route_authenticates_parses_and_records(
    cloud_sms: tuple[CloudSmsServer, str], redis: Redis, settings: Settings
) -> None:
    ch = await http_sms(cloud_sms[1])
    app = create_app(settings, redis=redis, channels={"sms": ch})
    app[RECEIPT_SINK] = redis_sink(redis, Keys())  # the default, whatever dispatch plugs in
    body = {
        "receipts": [
            {"out_id": "q1", "phone": "13800138000", "msg_id": "m1", "status": "DELIVRD"},
            {"out_id": "q1", "phone": "13900139000", "status": "UNDELIV"},
        ]
    }
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/v1/receipts/sms?secret=wrong", json=body)
        assert resp.status == 401
        resp = await client.post("/v1/receipts/nope?secret=x", json=body)
        assert resp.status == 404
        resp = await client.post("/v1/receipts/sms?secret=" + RECEIPT_SECRET, data=b"{")
        assert resp.status == 400
        resp = await client.post(
            "/v1/receipts/sms", json=body, headers={"X-Warnd-Secret": RECEIPT_SECRET}
        )
        assert resp.status == 200
        assert await resp.json() == {"channel": "sms", "accepted": 2}
        spec = await (await client.get("/v1/openapi.json")).json()
        assert "/v1/receipts/{channel}" in spec["paths"]
        # Matched by request id and number: an item without them is refused.
        resp = await client.post(
            "/v1/receipts/sms?secret=" + RECEIPT_SECRET,
            json={"receipts": [{"msg_id": "m3", "status": "DELIVRD"}]},
        )
        assert resp.status == 400
    rows = [f for _, f in await redis.xrange(Keys().callback_receipts)]
    assert [(r["request_id"], r.get("provider_id"), r["state"]) for r in rows] == [
        ("q1", "m1", "delivered"),
        ("q1", None, "failed"),
    ]
    assert all("13800138000" not in json.dumps(r) for r in rows)  # numbers masked


async def test_http_sms_receipt_matching_is_configured_per_provider(
    cloud_sms: tuple[CloudSmsServer, str],
) -> None:
    url = cloud_sms[1]
    with pytest.raises(ConfigError):
        build("sms", http_sms_raw(url, reference_field=None), AUTH="x", RS=RECEIPT_SECRET)
    by_biz = build(
        "sms",
        http_sms_raw(url, reference_field=None, result_request_field="biz_id"),
        AUTH="x",
        RS=RECEIPT_SECRET,
    )
    assert by_biz.async_receipts and not by_biz.message_id_receipts
    ch = await http_sms(url, reference_field=None, receipt_match="message_id")
    try:
        assert ch.message_id_receipts
        receipts = await ch.send(batch([Target("d1", "13800138000")]))
    finally:
        await ch.stop()
    assert [(r.outcome, r.request_id) for r in receipts] == [(Outcome.SENT, None)]
    assert receipts[0].provider_id is not None


async def test_sandbox_posts_asynchronous_receipts_to_warnd(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    settings = make_settings(
        http={"port": port},
        channels={
            "board": {"provider": "sandbox", "receipts": "acknowledged", "receipt_secret_env": "RS"}
        },
    )
    ctx = ChannelContext(redis=redis, receipts_url=f"http://127.0.0.1:{port}/v1/receipts")
    ch = build("board", settings.channels["board"], ctx, RS=RECEIPT_SECRET)
    got: list[CallbackReceipt] = []
    app = create_app(settings, redis=redis, channels={"board": ch})

    async def sink(name: str, receipts: Any) -> None:
        got.extend(receipts)

    app[RECEIPT_SINK] = sink
    async for _ in serve(app, port):
        await ch.send(batch([Target("b1", "board-1")]))
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)
    assert [(r.delivery_id, r.state) for r in got] == [("b1", CallbackState.ACKNOWLEDGED)]


# ============================================================ WeChat


@pytest.fixture
async def wechat_peer() -> AsyncIterator[tuple[WeChatServer, str]]:
    peer = WeChatServer(keys={ROBOT, OTHER_ROBOT}, per_minute=20, window=60.0)
    app = web.Application()
    app.router.add_post("/cgi-bin/webhook/send", peer.handle)
    async for url in serve(app):
        yield peer, url


async def wechat(url: str, redis: Redis | None = None, **extra: Any) -> Channel:
    ch = build(
        "wechat",
        {"provider": "robot", "base_url": url, **extra},
        ChannelContext(redis=redis, keys=Keys()),
    )
    await ch.start()
    return ch


class TestWeChatContract(ChannelContract):
    channel_name, provider_name = "wechat", "robot"
    valid: ClassVar[list[str]] = [ROBOT, OTHER_ROBOT]

    @pytest.fixture
    async def channel(
        self, wechat_peer: tuple[WeChatServer, str], redis: Redis
    ) -> AsyncIterator[Channel]:
        ch = await wechat(wechat_peer[1], redis)
        yield ch
        await ch.stop()

    @pytest.fixture
    async def hanging(
        self, wechat_peer: tuple[WeChatServer, str], redis: Redis
    ) -> AsyncIterator[Channel]:
        wechat_peer[0].hang = True
        ch = await wechat(wechat_peer[1], redis, timeout=0.5)
        yield ch
        await ch.stop()


async def test_wechat_red_text_mentions_all_and_blue_is_markdown(
    wechat_peer: tuple[WeChatServer, str], redis: Redis
) -> None:
    peer, url = wechat_peer
    ch = await wechat(url, redis, mention_mobiles=["13800138000"])
    try:
        assert ch.limits_for(Level.RED).max_length == 2048
        assert ch.limits_for(Level.BLUE).markdown and ch.limits_for(Level.BLUE).max_length == 4096
        await ch.send(batch([Target("r", ROBOT)], level=Level.RED))
        await ch.send(batch([Target("b", ROBOT)], level=Level.BLUE, markdown=True, text="**蓝色**"))
        (r,) = await ch.send(batch([Target("x", "f" * 36)]))
        assert r.outcome is Outcome.FAILED and r.provider_status == "93000"
        (r,) = await ch.send(batch([Target("long", ROBOT)], text="暴" * 683))  # 2049 bytes
        assert r.outcome is Outcome.FAILED and "2049 bytes" in (r.error or "")
    finally:
        await ch.stop()
    (_, red), (_, blue) = peer.received
    assert red == {
        "msgtype": "text",
        "text": {
            "content": TEXT,
            "mentioned_list": ["@all"],
            "mentioned_mobile_list": ["13800138000"],
        },
    }
    assert blue == {"msgtype": "markdown", "markdown": {"content": "**蓝色**"}}


async def test_wechat_window_is_shared_across_processes(
    wechat_peer: tuple[WeChatServer, str], redis: Redis
) -> None:
    peer, url = wechat_peer
    # Two channel instances on one Redis stand for two warnd processes.
    a, b = await wechat(url, redis), await wechat(url, redis)
    try:
        ra = await a.send(batch([Target(f"a{i}", ROBOT) for i in range(15)]))
        rb = await b.send(batch([Target(f"b{i}", ROBOT) for i in range(15)]))
    finally:
        await a.stop()
        await b.stop()
    receipts = ra + rb
    sent = [r for r in receipts if r.outcome is Outcome.SENT]
    held = [r for r in receipts if r.outcome is Outcome.RETRY]
    assert len(sent) == 20 == len(peer.received)
    assert len(held) == 10
    assert all(not r.counts_attempt and r.retry_after and r.retry_after > 0 for r in held)


async def test_wechat_server_side_limit_is_retried_after_the_window(
    wechat_peer: tuple[WeChatServer, str],
) -> None:
    peer, url = wechat_peer
    peer.per_minute = 1  # someone else already posted through this robot
    ch = await wechat(url, None)
    try:
        r1, r2 = await ch.send(batch([Target("1", ROBOT), Target("2", ROBOT)]))
    finally:
        await ch.stop()
    outcomes = sorted([r1, r2], key=lambda r: r.outcome.value)
    assert [r.outcome for r in outcomes] == [Outcome.RETRY, Outcome.SENT]
    assert outcomes[0].provider_status == "45009" and outcomes[0].retry_after == 60.0
    assert not outcomes[0].counts_attempt


async def test_wechat_behind_a_path_prefix_and_base_urls_checked(redis: Redis) -> None:
    # A provincial network reaches qyapi.weixin.qq.com through a reverse proxy
    # that serves it under a path of its own.
    peer = WeChatServer(keys={ROBOT}, per_minute=20, window=60.0)
    app = web.Application()
    app.router.add_post("/qywx/cgi-bin/webhook/send", peer.handle)
    async for url in serve(app):
        ch = await wechat(f"{url}/qywx/", redis)
        try:
            (receipt,) = await ch.send(
                batch([Target("1", f"{url}/qywx/cgi-bin/webhook/send?key={ROBOT}")])
            )
        finally:
            await ch.stop()
        assert receipt.outcome is Outcome.SENT and [k for k, _ in peer.received] == [ROBOT]
    for bad, why in [
        ("https://qyapi.weixin.qq.com/?debug=1", "query or fragment"),
        ("https:///cgi-bin", "names no host"),
        ("https://qyapi.weixin.qq.com:44x3", "Port could not be cast"),
    ]:
        with pytest.raises(ConfigError) as err:
            build("wechat", {"provider": "robot", "base_url": bad})
        assert why in err.value.detail and "channels.wechat.base_url" in err.value.detail


# ============================================================= email


@pytest.fixture
def smtp_server() -> Iterator[tuple[SmtpRecorder, int]]:
    recorder = SmtpRecorder(reject={"nobody@heze.gov.cn"})
    controller, port = smtp_controller(recorder)
    try:
        yield recorder, port
    finally:
        controller.stop()


def email_raw(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "from_address": "yjj@heze.gov.cn",
        "from_name": "菏泽市应急管理局",
        **extra,
    }


class TestEmailContract(ChannelContract):
    channel_name, provider_name = "email", "smtp"
    valid: ClassVar[list[str]] = ["zhang@heze.gov.cn", "li@caoxian.gov.cn"]

    @pytest.fixture
    async def channel(self, smtp_server: tuple[SmtpRecorder, int]) -> AsyncIterator[Channel]:
        ch = build("email", email_raw(smtp_server[1]))
        await ch.start()
        yield ch
        await ch.stop()

    @pytest.fixture
    async def hanging(self) -> AsyncIterator[Channel]:
        async with silent_server() as port:  # accepts the connection, never greets
            ch = build("email", email_raw(port, timeout=0.5))
            await ch.start()
            yield ch
            await ch.stop()


async def test_email_multipart_chinese_headers_and_rejected_recipients(
    smtp_server: tuple[SmtpRecorder, int],
) -> None:
    recorder, port = smtp_server
    ch = build("email", email_raw(port))
    targets = [
        Target("e1", "zhang@heze.gov.cn", name="张三"),
        Target("e2", "nobody@heze.gov.cn"),
        Target("e3", "li@caoxian.gov.cn"),
    ]
    receipts = await ch.send(batch(targets))
    by_id = {r.delivery_id: r for r in receipts}
    assert by_id["e2"].outcome is Outcome.FAILED and by_id["e2"].provider_status == "550"
    assert by_id["e1"].outcome is Outcome.SENT and by_id["e3"].outcome is Outcome.SENT
    assert recorder.sessions == 1  # one connection for the batch
    assert [rcpts for rcpts, _ in recorder.messages] == [
        ["zhang@heze.gov.cn"],
        ["li@caoxian.gov.cn"],
    ]
    raw = recorder.messages[0][1]
    assert raw.isascii()  # RFC 2047 encoded headers, base64/qp bodies
    msg: Message = email.message_from_bytes(raw)
    assert str(make_header(decode_header(msg["Subject"]))) == "曹县暴雨红色预警"
    assert "菏泽市应急管理局" in str(make_header(decode_header(msg["From"])))
    assert "张三" in str(make_header(decode_header(msg["To"])))
    assert msg["Message-ID"] == by_id["e1"].provider_id and "e1." in msg["Message-ID"]
    parts = {p.get_content_type(): p for p in msg.walk() if not p.is_multipart()}
    assert set(parts) == {"text/plain", "text/html"}
    plain = parts["text/plain"].get_payload(decode=True)
    assert isinstance(plain, bytes) and TEXT in plain.decode("utf-8")


# ============================================================= boards


async def mark_offline(broker: Mosquitto, board_id: str) -> None:
    """What the broker publishes when a board's connection dies: its last will."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.publish(f"warnd/boards/{board_id}/status", "offline", qos=1, retain=True)


@pytest.fixture
async def boards(mosquitto: Mosquitto) -> AsyncIterator[SimulatedBoard]:
    board = SimulatedBoard(mosquitto, "caoxian-01")
    board.task = asyncio.create_task(board.run())
    await asyncio.wait_for(board.ready.wait(), 30)
    await mark_offline(mosquitto, "shanxian-07")
    yield board
    board.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await board.task


def mqtt_raw(broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    return {"provider": "mqtt", "host": broker.host, "port": broker.port, "ack_wait": 10, **extra}


class TestMqttBoardContract(ChannelContract):
    channel_name, provider_name = "board", "mqtt"
    valid: ClassVar[list[str]] = ["caoxian-01"]
    invalid = "bad/board#"

    @pytest.fixture
    async def channel(self, mosquitto: Mosquitto, boards: SimulatedBoard) -> AsyncIterator[Channel]:
        ch = build("board", mqtt_raw(mosquitto, password_env="MP", username="warnd"), MP=SECRET)
        await ch.start()
        yield ch
        await ch.stop()

    @pytest.fixture
    async def hanging(self) -> AsyncIterator[Channel]:
        async with silent_server() as port:  # a broker that never answers CONNECT
            ch = build(
                "board", {"provider": "mqtt", "host": "127.0.0.1", "port": port, "timeout": 0.5}
            )
            await ch.start()
            yield ch
            await ch.stop()


async def test_board_acks_offline_fails_fast_and_cancel_clears(
    mosquitto: Mosquitto, boards: SimulatedBoard
) -> None:
    ch = build("board", mqtt_raw(mosquitto))
    await ch.start()
    try:
        receipts = await ch.send(
            batch(
                [
                    Target("on", "caoxian-01"),
                    Target("off", "shanxian-07"),
                    Target("never", "juye-99"),
                ]
            )
        )
        by_id = {r.delivery_id: r for r in receipts}
        assert by_id["on"].outcome is Outcome.DELIVERED
        assert by_id["off"].outcome is Outcome.FAILED and "offline" in (by_id["off"].error or "")
        assert by_id["never"].outcome is Outcome.FAILED
        shown = boards.shown[-1]
        assert shown["action"] == "show" and shown["colour"] == "#FF0000"
        assert shown["lines"] == ["暴雨红色预警", "曹县", "停止户外活动"]
        (r,) = await ch.send(batch([Target("c", "caoxian-01")], msg_type=MsgType.CANCEL))
        assert r.outcome is Outcome.DELIVERED and r.provider_status == "cleared"
        assert boards.shown[-1]["action"] == "clear" and boards.shown[-1]["lines"] == []
    finally:
        await ch.stop()
    # The display message is retained: a board that connects now sees the clear.
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("warnd/boards/caoxian-01/display", qos=1)
        async for message in client.messages:
            assert json.loads(bytes(message.payload))["action"] == "clear"  # type: ignore[arg-type]
            break


class TestHttpBoardContract(ChannelContract):
    channel_name, provider_name = "board", "http"
    valid: ClassVar[list[str]] = ["caoxian-01", "juye-02"]
    invalid = "../etc"

    @pytest.fixture
    async def channel(self) -> AsyncIterator[Channel]:
        async def show(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != f"Token {SECRET}":
                return web.Response(status=401)
            body = await request.json()
            assert body["lines"] and request.match_info["board"] in self.valid
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_post("/boards/{board}/display", show)
        async for url in serve(app):
            ch = build(
                "board",
                {
                    "provider": "http",
                    "url": url + "/boards/{board}/display",
                    "auth_value_env": "BT",
                },
                BT=f"Token {SECRET}",
            )
            await ch.start()
            yield ch
            await ch.stop()

    @pytest.fixture
    async def hanging(self) -> AsyncIterator[Channel]:
        async def hang(request: web.Request) -> web.Response:
            await asyncio.sleep(3600)
            return web.Response()

        app = web.Application()
        app.router.add_post("/boards/{board}/display", hang)
        async for url in serve(app):
            ch = build(
                "board",
                {"provider": "http", "url": url + "/boards/{board}/display", "timeout": 0.5},
            )
            await ch.start()
            yield ch
            await ch.stop()


# =============================================================== CLI


@pytest.fixture
def cli() -> Iterator[Callable[..., int]]:
    """``warnd`` in this process; it configures logging to pytest's captured
    stderr, so the defaults come back afterwards."""
    from warnd.cli import main

    yield main
    structlog.reset_defaults()


def test_cli_channels_test_prints_the_receipt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cli: Callable[..., int]
) -> None:
    main = cli
    config = tmp_path / "warnd.toml"
    config.write_text('[channels.sms]\nprovider = "sandbox"\nfail_addresses = ["13000000000"]\n')
    assert main(["channels", "test", "sms", "13800138000", "--config", str(config)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "sent" and out["endpoint"] == "*******8000"
    assert main(["channels", "test", "sms", "13000000000", "--config", str(config)]) == 1
    assert main(["channels", "test", "wechat", "x", "--config", str(config)]) == 2


def test_check_reports_channel_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cli: Callable[..., int]
) -> None:
    main = cli
    config = tmp_path / "warnd.toml"
    config.write_text(
        f'taxonomy_file = "{Path(__file__).parents[1] / "config" / "taxonomy.toml"}"\n'
        '[channels.sms]\nprovider = "kannel"\nurl = "http://k/"\nusername = "u"\npassword = "x"\n'
    )
    assert main(["check", "--config", str(config)]) == 1
    assert "do not write secrets" in capsys.readouterr().err


def test_mask_address() -> None:
    assert mask_address("13800138000") == "*******8000"
    assert mask_address("zhang@heze.gov.cn") == "z***@heze.gov.cn"
    assert Receipt.sent("d", "p").as_dict() == {
        "delivery_id": "d",
        "outcome": "sent",
        "provider_id": "p",
    }


def test_readme_channel_examples_are_valid_configurations() -> None:
    """Every ``[channels.*]`` example in the README's Channels section builds."""
    import re
    import tomllib

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("\n## Channels\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.DOTALL)
    built: list[tuple[str, str]] = []
    for block in blocks:
        for name, raw in tomllib.loads(block).get("channels", {}).items():
            # The secrets they name come from the environment.
            env = {v: "x" for k, v in raw.items() if k.endswith("_env")}
            ch = build(name, raw, ChannelContext(base_dir=Path("/etc/warnd")), **env)
            built.append((name, raw["provider"]))
            assert ch.provider == raw["provider"] or raw["provider"] == "sandbox"
    classes = load_channel_classes()
    documented = {name for name, _ in built}
    assert documented == set(classes), documented  # an example for every channel
    assert ("sms", "kannel") in built and ("sms", "http") in built


_PLAIN_NUMBER = re.compile(r"\+?[1-9][0-9]{6,14}")
"""The rule ``plain_numbers`` checks with numpy, as a regular expression."""


def test_plain_numbers_accepts_exactly_what_the_one_per_line_rule_accepts() -> None:
    rng = random.Random(7)  # noqa: S311 - test cases, not secrets
    pieces = ["+", "0", "1", "8", "9", "\n", " ", "-", "a", "１"]
    cases: list[list[str]] = [
        [],
        [""],
        ["+8613900000001"],
        ["13900000001", "+8613900000002"],
        ["1234567", "123456789012345", "+123456789012345"],  # 7 and 15 digits
        ["123456", "1234567890123456", "+1234567890123456"],  # 6 and 16
        ["0139000000"],
        ["++8613900000001"],
        ["+86139+0000001"],
        ["1390000\n0001"],  # a line break inside one number
        ["13900000001", ""],
        ["１３９００００００01"],  # fullwidth digits
    ]
    for _ in range(3000):
        numbers = []
        for _ in range(rng.randint(1, 4)):
            n = rng.randint(5, 17)
            numbers.append(
                "".join(
                    rng.choice(pieces) if rng.random() < 0.08 else str(rng.randint(0, 9))
                    for _ in range(n)
                )
            )
            if rng.random() < 0.3:
                numbers[-1] = "+" + numbers[-1]
        cases.append(numbers)
    for numbers in cases:
        expected = bool(numbers) and all(_PLAIN_NUMBER.fullmatch(x) for x in numbers)
        assert plain_numbers(numbers) is expected, numbers
        for x in numbers:  # valid_number: the same rule once spaces and dashes are gone
            assert valid_number(x) is bool(_PLAIN_NUMBER.fullmatch(re.sub("[ -]", "", x))), x


def test_request_offsets_are_written_as_ranges_and_read_back() -> None:
    cases = [[], [0], [0, 1, 2, 5, 7, 8], list(range(1000)), [9, 3, 3, 4, 1], [5, 7, 9]]
    assert encode_offsets([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert encode_offsets(list(range(1000))) == "0-999"
    # A whole batch moved stays a range; one with a step is taken apart.
    for whole in (range(1000), range(3, 4), range(0), range(2, 10, 3)):
        assert encode_offsets(whole) == encode_offsets(list(whole))
    for offsets in cases:
        text = encode_offsets(offsets)
        assert list(decode_offsets(text)) == sorted(set(offsets)) if offsets else text == ""
