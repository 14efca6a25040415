"""The HTTP SMS provider against local gateways: its requests (path, query,
signature), its connections, and its answers (the usual one read into three
fields per result, any other read whole, with the same receipts either way)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from warnd_channels._answer import AnswerShape

from warnd.channel import Batch, Outcome, Target
from warnd.errors import ConfigError
from warnd.plugins import build_channel, load_channel_classes

TEXT = "【菏泽应急】曹县暴雨红色预警"


def test_the_shape_reads_nested_fields_and_skips_the_rest() -> None:
    shape = AnswerShape.of("data.list", "mobile", "status", "sid", "data.biz.id")
    assert shape is not None
    doc = shape.decode(
        json.dumps(
            {
                "code": 0,
                "extra": {"deep": [1, {"x": None}]},
                "data": {
                    "biz": {"id": "B1", "other": True},
                    "list": [
                        {"mobile": "13800138000", "status": "0", "sid": 2**70, "fee": 1},
                        {"mobile": "13900139000", "status": "0"},
                    ],
                },
            }
        )
    )
    assert doc is not None and doc.request == "B1"
    assert [(r.number, r.code, r.id) for r in doc.results] == [
        ("13800138000", "0", 2**70),  # every digit kept
        ("13900139000", "0", None),  # a missing field reads as None
    ]
    # The results field absent: no results (the caller says why); no request id asked.
    bare = AnswerShape.of("results", "phone", "code", "msg_id")
    assert bare is not None
    missing = bare.decode(b'{"code": "OK"}')
    assert missing is not None and missing.results is None and missing.request is None


@pytest.mark.parametrize(
    "answer",
    [
        b"{",  # not JSON
        b'{"results": [1, 2]}',  # results that are not objects
        b'{"results": {"phone": "1"}}',  # an object where the list goes
        b'{"results": null}',
        b'{"results": [{"phone": NaN}]}',  # JSON that msgspec refuses
        b"[]",
    ],
)
def test_an_answer_of_another_shape_is_none(answer: bytes) -> None:
    shape = AnswerShape.of("results", "phone", "code", "msg_id")
    assert shape is not None and shape.decode(answer) is None


def test_fields_that_cannot_make_a_shape_give_none() -> None:
    assert AnswerShape.of("results", "phone", "phone", "msg_id") is None  # one name, two fields
    assert AnswerShape.of("", "phone", "code", "msg_id") is None  # the answer is the list
    assert AnswerShape.of("data", "phone", "code", "msg_id", "data.id") is None  # overlap
    assert AnswerShape.of("data.r", "phone", "code", "msg_id", "data") is None
    assert AnswerShape.of("data.r", "phone", "code", "msg_id", "data.id") is not None


class Gateway:
    """Answers each send with the next of ``answers``, made from the request's numbers."""

    def __init__(self) -> None:
        self.answer: Any = None

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        return web.Response(
            body=self.answer(body["phones"]).encode(), content_type="application/json"
        )


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, str]]:
    gw = Gateway()
    app = web.Application()
    app.router.add_post("/send", gw.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield gw, str(server.make_url("/send"))
    finally:
        await server.close()


async def send(url: str, numbers: list[str], **extra: Any) -> list[Any]:
    raw = {
        "provider": "http",
        "url": url,
        "auth_value_env": "AUTH",
        "sender": "菏泽应急",
        "reference_field": None,
        "receipt_match": "message_id",
        **extra,
    }
    ch = build_channel("sms", raw, load_channel_classes(), None, env={"AUTH": "k"})
    await ch.start()
    try:
        targets = tuple(Target(f"d{i}", n) for i, n in enumerate(numbers))
        got = await ch.send(Batch(targets=targets, text=TEXT))
    finally:
        await ch.stop()
    return list(got)


NUMBERS = ["13800138000", "13900139000", "15000150000"]


async def test_the_usual_answer_nested_with_a_request_id(gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    gw.answer = lambda phones: json.dumps(
        {
            "data": {
                "bizId": 987654321987654321987,
                "list": [{"mobile": p, "status": 0, "sid": f"s{p}"} for p in phones],
            }
        }
    )
    receipts = await send(
        url,
        NUMBERS,
        results_field="data.list",
        result_number_field="mobile",
        result_code_field="status",
        result_id_field="sid",
        result_request_field="data.bizId",
        receipt_match="request",
    )
    assert [(r.outcome, r.provider_id, r.request_id, r.provider_status) for r in receipts] == [
        (Outcome.SENT, f"s{n}", "987654321987654321987", "0") for n in NUMBERS
    ]


@pytest.mark.parametrize(
    ("answer", "expect"),
    [
        # Another order: matched by number.
        (
            lambda ps: json.dumps(
                {"results": [{"phone": p, "code": "OK", "msg_id": p[-4:]} for p in ps[::-1]]}
            ),
            [(Outcome.SENT, n[-4:]) for n in NUMBERS],
        ),
        # One refused: receipts one by one.
        (
            lambda ps: json.dumps(
                {
                    "results": [
                        {"phone": p, "code": "OK" if i else "isv.MOBILE_NUMBER_ILLEGAL"}
                        for i, p in enumerate(ps)
                    ]
                }
            ),
            [(Outcome.FAILED, None), (Outcome.SENT, None), (Outcome.SENT, None)],
        ),
        # A message id written as a float is kept as the provider wrote it.
        (
            lambda ps: json.dumps(
                {"results": [{"phone": p, "code": "OK", "msg_id": 1.5} for p in ps]}
            ),
            [(Outcome.SENT, "1.5")] * 3,
        ),
        # A code that is an object: not a success code.
        (
            lambda ps: json.dumps({"results": [{"phone": p, "code": {"v": 0}} for p in ps]}),
            [(Outcome.FAILED, None)] * 3,
        ),
        # NaN, which JSON parsers differ on: read by the standard library.
        (
            lambda ps: (
                '{"results": ['
                + ",".join(f'{{"phone": "{p}", "code": "OK", "msg_id": "m"}}' for p in ps)
                + '], "cost": NaN}'
            ),
            [(Outcome.SENT, "m")] * 3,
        ),
        # No results at all: in doubt (it may have sent them), named by warnd's request id.
        (lambda ps: '{"code": "OK"}', [(Outcome.UNCERTAIN, "ref")] * 3),
    ],
)
async def test_other_answers_give_the_same_receipts_read_whole(
    gateway: tuple[Gateway, str], answer: Any, expect: list[tuple[Outcome, str | None]]
) -> None:
    gw, url = gateway
    gw.answer = answer
    receipts = await send(url, NUMBERS)
    ref = receipts[0].provider_id if receipts[0].outcome is Outcome.UNCERTAIN else None
    assert [
        (r.outcome, "ref" if ref and r.provider_id == ref else r.provider_id) for r in receipts
    ] == expect


def test_the_usual_answer_is_read_without_decoding_it_whole() -> None:
    raw = {"provider": "http", "url": "http://127.0.0.1:9/send", "auth_value_env": "AUTH"}
    ch: Any = build_channel("sms", raw, load_channel_classes(), None, env={"AUTH": "k"})
    targets = [Target(f"d{i}", n) for i, n in enumerate(NUMBERS)]
    answer = json.dumps(
        {
            "code": "OK",
            "results": [{"phone": n, "code": "OK", "msg_id": i} for i, n in enumerate(NUMBERS)],
        }
    )
    got = ch._usual(targets, answer.encode(), "r1", ch._answer)
    assert got is not None
    assert [(r.delivery_id, r.provider_id, r.request_id) for r in got] == [
        ("d0", "0", "r1"),
        ("d1", "1", "r1"),
        ("d2", "2", "r1"),
    ]
    # Another order is not the usual answer: read whole (and matched by number).
    assert ch._usual(targets[::-1], answer.encode(), "r1", ch._answer) is None


async def test_sends_keep_the_url_path_and_query_sign_each_request_and_reuse_connections() -> None:
    secret = "s3cret"
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        h = request.headers
        msg = f"{h['X-Timestamp']}\n{h['X-Nonce']}\n".encode() + body
        good = hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest() == h["X-Signature"]
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.append(
            {"query": dict(request.query), "good": good, "nonce": h["X-Nonce"], "peer": peer}
        )
        if not good:
            return web.json_response({"code": "SignatureDoesNotMatch"}, status=403)
        phones = json.loads(body)["phones"]
        return web.json_response(
            {"results": [{"phone": p, "code": "OK", "msg_id": p} for p in phones]}
        )

    app = web.Application()
    app.router.add_post("/api/v2/sms", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    raw = {
        "provider": "http",
        "url": str(server.make_url("/api/v2/sms")) + "?Action=SendSms&Version=2017-05-25",
        "sign_secret_env": "SIGN",
        "max_connections": 2,
    }
    ch = build_channel("sms", raw, load_channel_classes(), None, env={"SIGN": secret})
    await ch.start()
    try:
        for k in range(4):
            targets = tuple(Target(f"d{k}.{i}", n) for i, n in enumerate(NUMBERS))
            got = await ch.send(Batch(targets=targets, text=TEXT))
            assert [r.outcome for r in got] == [Outcome.SENT] * 3
    finally:
        await ch.stop()
        await server.close()
    assert [s["query"] for s in seen] == [{"Action": "SendSms", "Version": "2017-05-25"}] * 4
    assert all(s["good"] for s in seen) and len({s["nonce"] for s in seen}) == 4
    assert len({s["peer"] for s in seen}) == 1  # one keep-alive connection for all four


async def raw_gateway(answer: bytes | None) -> tuple[asyncio.Server, str]:
    """A gateway that reads a request and writes ``answer`` (``None``: nothing), then closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(
                ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")
            ).split(b":")[1]
        )
        await reader.readexactly(length)
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/send"


@pytest.mark.parametrize(
    "answer",
    [
        None,  # closed without a word
        b'HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"results": [',  # cut mid-body
    ],
)
async def test_a_send_whose_answer_is_lost_is_in_doubt_with_its_request_id(
    answer: bytes | None,
) -> None:
    server, url = await raw_gateway(answer)
    try:
        with_ref = await send(url, NUMBERS, reference_field="out_id")
    finally:
        server.close()
        await server.wait_closed()
    assert {r.outcome for r in with_ref} == {Outcome.UNCERTAIN}
    assert len({r.provider_id for r in with_ref}) == 1 and with_ref[0].provider_id  # the out_id


async def test_a_gateway_that_refuses_connections_is_retried_as_never_sent() -> None:
    server, url = await raw_gateway(None)
    server.close()
    await server.wait_closed()  # nothing listens there now
    receipts = await send(url, NUMBERS)
    assert {r.outcome for r in receipts} == {Outcome.RETRY}
    assert all("ConnectFailed" in (r.error or "") for r in receipts)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http:///send", "has no host"),
        ("http://gw.example.com:99999/send", "invalid port"),
        ("https://user:pw@gw.example.com/send", "credentials"),
        ("https://gw.example.com/send#top", "fragment"),
        ("https://gw.example.com/发送", "percent-encode"),
        ("ftp://gw.example.com/send", "should match pattern"),
    ],
)
def test_a_send_url_the_client_cannot_reach_is_refused_at_start_up(url: str, problem: str) -> None:
    raw = {"provider": "http", "url": url, "auth_value_env": "AUTH"}
    with pytest.raises(ConfigError, match=problem):
        build_channel("sms", raw, load_channel_classes(), None, env={"AUTH": "k"})
