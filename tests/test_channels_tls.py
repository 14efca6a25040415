"""Channels over TLS with authentication, against real peers and a private CA.

A throwaway CA (``tls_files`` in ``tests/peers.py``) signs the peers'
certificates: aiosmtpd in this process with STARTTLS or implicit TLS and
AUTH required, and a mosquitto whose only listener is TLS with password
authentication. The channels trust that CA through ``ca_file``; without it
they refuse the peer, and no secret ever appears in a log line or a repr.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
import structlog
from peers import MosquittoTls, SimulatedBoard, SmtpRecorder, TlsFiles, smtp_controller

from warnd.channel import (
    Batch,
    Channel,
    ChannelContext,
    ChannelHealth,
    Outcome,
    Receipt,
    Target,
)
from warnd.errors import ConfigError
from warnd.model import Level
from warnd.plugins import build_channel, load_channel_classes

SMTP_PASSWORD = "smtp-auth-code-3e9b"  # a mail provider's 客户端授权码
MAILBOX = "yjj@heze.gov.cn"
TEXT = "【菏泽市气象台】暴雨红色预警：曹县未来3小时降雨量将达100毫米以上。"


def batch(*targets: Target) -> Batch:
    return Batch(
        targets=targets,
        text=TEXT,
        subject="曹县暴雨红色预警",
        html=f"<p>{TEXT}</p>",
        lines=("暴雨红色预警", "曹县"),
        level=Level.RED,
        alert_id="a1",
    )


def build(name: str, raw: dict[str, Any], ctx: ChannelContext | None = None, **env: str) -> Channel:
    return build_channel(name, raw, load_channel_classes(), ctx, env=env)


def secrets_absent(channel: Channel, logs: list[dict[str, Any]], *secrets: str) -> None:
    text = repr(channel) + repr(channel.config) + json.dumps(logs, default=str)
    for secret in secrets:
        assert secret not in text


# ================================================================ email


def smtp_raw(port: int, security: str, tls: TlsFiles | None, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "provider": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "security": security,
        "username": MAILBOX,
        "password_env": "SMTP_PW",
        "from_address": MAILBOX,
        "from_name": "菏泽市应急管理局",
        "timeout": 5,
        **extra,
    }
    if tls is not None:
        raw["ca_file"] = str(tls.ca_file)
    return raw


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_email_over_tls_with_auth_reuses_one_connection(
    tls_files: TlsFiles, security: str
) -> None:
    recorder = SmtpRecorder(reject={"nobody@heze.gov.cn"}, logins={MAILBOX: SMTP_PASSWORD})
    controller, port = smtp_controller(recorder, tls=tls_files, implicit=security == "tls")
    try:
        ch = build("email", smtp_raw(port, security, tls_files), SMTP_PW=SMTP_PASSWORD)
        with structlog.testing.capture_logs() as logs:
            receipts = await ch.send(
                batch(
                    Target("e1", "zhang@heze.gov.cn", name="张三"),
                    Target("e2", "nobody@heze.gov.cn"),
                    Target("e3", "li@caoxian.gov.cn"),
                )
            )
            health = await ch.health()
    finally:
        controller.stop()
    by_id = {r.delivery_id: r for r in receipts}
    assert [by_id[d].outcome for d in ("e1", "e2", "e3")] == [
        Outcome.SENT,
        Outcome.FAILED,
        Outcome.SENT,
    ]
    # Both messages went over TLS, after AUTH, on one connection.
    assert recorder.accepted == [(True, True), (True, True)]
    assert recorder.sessions == 2  # the batch, then the health check
    assert health.ok, health
    secrets_absent(ch, logs, SMTP_PASSWORD)


@pytest.mark.parametrize(
    ("trust_ca", "password", "why"),
    [
        (False, SMTP_PASSWORD, "certificate"),  # a relay whose CA we were not given
        (True, "wrong-code", "credentials"),
    ],
)
async def test_email_refuses_an_unverified_relay_and_reports_refused_credentials(
    tls_files: TlsFiles, trust_ca: bool, password: str, why: str
) -> None:
    recorder = SmtpRecorder(reject=set(), logins={MAILBOX: SMTP_PASSWORD})
    controller, port = smtp_controller(recorder, tls=tls_files)
    try:
        raw = smtp_raw(port, "starttls", tls_files if trust_ca else None)
        ch = build("email", raw, SMTP_PW=password)
        with structlog.testing.capture_logs() as logs:
            (r,) = await ch.send(batch(Target("e1", "zhang@heze.gov.cn")))
    finally:
        controller.stop()
    assert r.outcome is Outcome.RETRY and why in (r.error or "").lower(), r
    assert recorder.messages == []
    secrets_absent(ch, logs, SMTP_PASSWORD, password)


# ================================================================ boards


@pytest.fixture
async def tls_board(mosquitto_tls: MosquittoTls) -> AsyncIterator[SimulatedBoard]:
    board = SimulatedBoard(mosquitto_tls, "caoxian-01")
    board.task = asyncio.create_task(board.run())
    await asyncio.wait_for(board.ready.wait(), 30)
    yield board
    board.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await board.task


def mqtt_tls_raw(broker: MosquittoTls, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "mqtt",
        "host": broker.host,
        "port": broker.port,
        "tls": True,
        "username": broker.username,
        "password_env": "MQTT_PW",
        "ack_wait": 10,
        "timeout": 5,
        **extra,
    }


async def send_to_one_board(ch: Channel) -> tuple[Receipt, ChannelHealth, list[dict[str, Any]]]:
    """Start ``ch``, send one board a message, read its health, stop: the
    receipt, the health and the logs of it all."""
    with structlog.testing.capture_logs() as logs:
        await ch.start()
        try:
            (r,) = await ch.send(batch(Target("b1", "caoxian-01")))
            health = await ch.health()
        finally:
            await ch.stop()
    return r, health, logs


async def test_board_over_tls_with_a_private_ca_and_a_password(
    mosquitto_tls: MosquittoTls, tls_board: SimulatedBoard, tls_files: TlsFiles
) -> None:
    # ca_file relative to the configuration's directory.
    ctx = ChannelContext(base_dir=tls_files.ca_file.parent)
    raw = mqtt_tls_raw(mosquitto_tls, ca_file=tls_files.ca_file.name)
    ch = build("board", raw, ctx, MQTT_PW=mosquitto_tls.password)
    r, health, logs = await send_to_one_board(ch)
    assert r.outcome is Outcome.DELIVERED and r.provider_status == "shown", r
    assert tls_board.shown[-1]["lines"] == ["暴雨红色预警", "曹县"]
    assert health.ok, health
    secrets_absent(ch, logs, mosquitto_tls.password)
    # The broker really is TLS with passwords only: plain TCP gets nowhere.
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(mosquitto_tls.host, mosquitto_tls.port, timeout=2):
            pass


# paho-mqtt leaves the socket of a failed TLS handshake to the garbage collector.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("case", ["untrusted broker", "wrong password"])
async def test_board_that_cannot_connect_securely_retries_and_says_so(
    mosquitto_tls: MosquittoTls, tls_files: TlsFiles, case: str
) -> None:
    if case == "untrusted broker":  # the system's CAs do not know the private CA
        extra: dict[str, Any] = {}
        password, why = mosquitto_tls.password, "certificate verify failed"
    else:
        extra = {"ca_file": str(tls_files.ca_file)}
        password, why = "wrong-password-0c4f", "not authorized"
    ch = build("board", mqtt_tls_raw(mosquitto_tls, timeout=1, **extra), MQTT_PW=password)
    r, health, logs = await send_to_one_board(ch)
    assert r.outcome is Outcome.RETRY and "unreachable" in (r.error or ""), r
    assert not health.ok
    errors = [str(e["error"]) for e in logs if e["event"] == "channel.disconnected"]
    assert errors and why in errors[0].lower(), errors
    secrets_absent(ch, logs, mosquitto_tls.password, password)


def test_tls_options_need_tls() -> None:
    raw = {"provider": "mqtt", "host": "mqtt.internal", "ca_file": "ca.pem"}
    with pytest.raises(ConfigError, match="tls = true"):
        build("board", raw)
    ch = build("board", {"provider": "mqtt", "host": "mqtt.internal", "tls": True})
    assert ch.port == 8883  # type: ignore[attr-defined]
