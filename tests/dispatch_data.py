"""Shared helpers of the dispatch tests: 菏泽 areas, subscribers, the app and its API, polling.

Registered as a pytest plugin (tests/conftest.py), so its fixtures — ``heze``,
``app_for`` — are available to every test module."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from areas_data import ADMIN
from redis.asyncio import Redis
from subscribers_data import heze_streets

from warnd.api.app import create_app
from warnd.api.context import SERVICES
from warnd.area_import import import_file
from warnd.areas import AreaLevel, AreaRegistry
from warnd.auth import Role
from warnd.channel import Channel
from warnd.dispatch.service import DISPATCH, Dispatcher
from warnd.groups import GroupSettings, GroupTable
from warnd.keys import Keys
from warnd.settings import Settings
from warnd.subscribers import Subscriber, SubscriberContext, SubscriberStore
from warnd.taxonomy import load_default

TAXONOMY = load_default()


async def import_heze_codes(redis: Redis, tmp: Path) -> AreaRegistry:
    """菏泽's administrative hierarchy (codes and names, no boundaries): fast to import."""
    files = [
        ADMIN / "cn-stats2023-provinces.csv",
        ADMIN / "cn-stats2023-cities.csv",
        ADMIN / "cn-stats2023-areas.csv",
        heze_streets(tmp),
        ADMIN / "cn-stats2023-villages-371700-heze.csv",
    ]
    for f in files:
        await import_file(redis, Keys(), f)
    return await AreaRegistry.load(redis, Keys())


def phone(i: int) -> str:
    return f"+86139{i:08d}"


async def add_subscribers(
    redis: Redis,
    registry: AreaRegistry,
    n: int,
    *,
    prefix: str = "371721",
    start: int = 0,
    groups: list[str] | None = None,
    endpoints: Callable[[int], dict[str, str]] | None = None,
    group_settings: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """``n`` subscribers spread over the villages under ``prefix``; their ids."""
    villages = sorted(a.code for a in registry.with_prefix(prefix) if a.level is AreaLevel.VILLAGE)
    assert villages, prefix
    table = None
    if group_settings:
        cfg = {k: GroupSettings.model_validate(v) for k, v in group_settings.items()}
        table = GroupTable.build(cfg, TAXONOMY)
    ctx = SubscriberContext(registry=registry, groups=table)
    store = SubscriberStore(redis, Keys())
    ids: list[str] = []
    for lo in range(start, start + n, 5000):
        subs = []
        for i in range(lo, min(start + n, lo + 5000)):
            eps = endpoints(i) if endpoints else {"sms": phone(i)}
            subs.append(
                Subscriber.model_validate(
                    {
                        "id": f"s{i}",
                        "name": f"信息员{i}",
                        "area": villages[i % len(villages)],
                        "groups": groups or [],
                        "endpoints": eps,
                    },
                    context=ctx,
                )
            )
            ids.append(f"s{i}")
        await store.upsert_many(subs)
    return ids


async def wait_for(
    check: Callable[[], Awaitable[bool]], what: str, *, within: float = 90.0
) -> None:
    """Poll ``check`` until it holds (at most ``within`` s); fail saying ``what`` did not happen."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


async def sandbox_sends(redis: Redis, channel: str = "sms") -> list[dict[str, str]]:
    entries = await redis.xrange(Keys().sandbox_record(channel))
    return [dict(f) for _, f in entries]


def duplicates(rows: list[dict[str, str]], alert_id: str | None = None) -> dict[str, int]:
    """Addresses sent the same alert more than once."""
    counts = Counter(r["address"] for r in rows if alert_id is None or r["alert_id"] == alert_id)
    return {a: n for a, n in counts.items() if n > 1}


def alert_body(
    code: str = "371721",
    *,
    level: str = "red",
    hazard: str = "rainstorm",
    expires: str = "2030-07-01T20:00:00+08:00",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "infos": [
            {
                "hazard": hazard,
                "level": level,
                "urgency": "Immediate",
                "headline": "曹县气象台发布暴雨预警信号",
                "description": "预计未来3小时曹县降雨量将达100毫米以上。",
                "expires": expires,
                "areas": [
                    {
                        "area_desc": "曹县",
                        "geocodes": [{"value_name": "GB/T 2260", "value": code}],
                    }
                ],
            }
        ],
        **extra,
    }


# ------------------------------------------------------------------ the app

Client = TestClient[Any, Any]


async def start_app(
    settings: Settings,
    redis: Redis,
    *,
    port: int = 0,
    channels: Mapping[str, Channel] | None = None,
) -> tuple[Client, str]:
    """warnd's app (feeds not polled) on a real listening port, and an operator token;
    ``channels`` instead of those the settings configure."""
    app = create_app(settings, redis=redis, poll_feeds=False, channels=channels)
    client = TestClient(TestServer(app, host="127.0.0.1", port=port))
    await client.start_server()
    token, _ = await app[SERVICES].tokens.create("ops", Role.OPERATOR, [], actor="test")
    return client, token


def dispatcher(client: Client) -> Dispatcher:
    return client.app[DISPATCH]


async def submit(client: Client, token: str, body: dict[str, Any], path: str = "/v1/alerts") -> str:
    resp = await client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
    doc = await resp.json()
    assert resp.status in (200, 202), doc
    return str(doc["id"])


async def deliveries(client: Client, token: str, aid: str, **query: str) -> dict[str, Any]:
    """``GET /v1/alerts/{aid}/deliveries`` (plan, counts, a page of deliveries)."""
    resp = await client.get(
        f"/v1/alerts/{aid}/deliveries", params=query, headers={"Authorization": f"Bearer {token}"}
    )
    doc = await resp.json()
    assert resp.status == 200, doc
    return dict(doc)


async def counts(client: Client, token: str, aid: str) -> dict[str, int]:
    """Deliveries of an alert per state."""
    return dict((await deliveries(client, token, aid, limit="1"))["counts"])


SANDBOX = {"provider": "sandbox", "record": "redis"}


@pytest.fixture
async def heze(redis: Redis, tmp_path: Path) -> AreaRegistry:
    """菏泽's codes down to the villages (no boundaries), imported and loaded."""
    return await import_heze_codes(redis, tmp_path)


@pytest.fixture
async def app_for(
    redis: Redis, make_settings: Callable[..., Settings]
) -> AsyncIterator[Callable[..., Any]]:
    """Start warnd apps (sandbox SMS unless ``channels`` is given); all closed after."""
    clients: list[Client] = []

    async def make(**overrides: Any) -> tuple[Client, str]:
        overrides.setdefault("channels", {"sms": dict(SANDBOX)})
        dispatch = {"reclaim_idle": 5, "sweep_interval": 0.5, **overrides.pop("dispatch", {})}
        client, token = await start_app(make_settings(dispatch=dispatch, **overrides), redis)
        clients.append(client)
        return client, token

    yield make
    for c in clients:
        await c.close()


# ------------------------------------------------------------------ daemons

REPO = Path(__file__).resolve().parents[1]


def free_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def daemon_config(tmp: Path, name: str, redis_url: str, extra: str = "") -> Path:
    """A `warnd serve` configuration on the test Redis, with its own port and data dir."""
    port = free_tcp_port()
    cfg = tmp / f"{name}.toml"
    cfg.write_text(
        "\n".join(
            [
                f'data_dir = "{tmp / name}"',
                f'taxonomy_file = "{REPO / "config" / "taxonomy.toml"}"',
                "[http]",
                'host = "127.0.0.1"',
                f"port = {port}",
                "[redis]",
                f'url = "{redis_url}"',
                "[log]",
                'format = "json"',
                'level = "info"',
                "[render]",
                f'templates_dir = "{REPO / "templates"}"',
                f'guidelines_file = "{REPO / "config" / "guidelines.toml"}"',
                extra,
            ]
        )
        + "\n"
    )
    return cfg


class Daemon:
    """`warnd serve` as a child process (stdout and stderr to files)."""

    def __init__(self, config: Path, log: Path) -> None:
        import os
        import subprocess
        import sys

        env = {k: v for k, v in os.environ.items() if not k.startswith("WARND_")}
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "warnd", "serve", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "listening on" in text:
                self.url = text.split("listening on ", 1)[1].split(",")[0].split()[0].strip()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"warnd serve did not start: {log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._out.close()
