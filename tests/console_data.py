"""Helpers of the console tests: a running warnd with 菏泽's areas and a form-filling client."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from dispatch_data import add_subscribers
from redis.asyncio import Redis
from subscribers_data import import_heze

from warnd.api.app import create_app
from warnd.api.context import SERVICES
from warnd.areas import AreaRegistry
from warnd.auth import Role
from warnd.keys import Keys
from warnd.settings import Settings

Client = TestClient[Any, Any]

SANDBOX = {"provider": "sandbox", "record": "redis"}
ISSUER = {
    "area_code": "371700",
    "unit_code": "00000",
    "sender": "yjj@heze.gov.cn",
    "sender_name": "菏泽市应急管理局",
}
CAOXIAN = "371721"

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')
_FORM_ID = re.compile(r'name="form_id" value="([^"]*)"')
_PREVIEWED = re.compile(r'name="previewed" value="([^"]*)"')


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    assert m and m.group(1), "no CSRF token in the page"
    return m.group(1)


def form_id_of(html: str) -> str:
    m = _FORM_ID.search(html)
    assert m, "no form id in the page"
    return m.group(1)


def previewed_of(html: str) -> str:
    m = _PREVIEWED.search(html)
    assert m, "no preview digest in the page"
    return m.group(1)


def text_of(html: str) -> str:
    """The page's visible text, roughly (tags dropped, entities decoded)."""
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


async def heze_with_subscribers(
    redis: Redis, tmp: Path, n: int = 40, *, prefix: str = CAOXIAN
) -> AreaRegistry:
    """菏泽's areas (county boundaries included) and ``n`` SMS subscribers under ``prefix``
    spread over its villages: most of its townships have some, several have none."""
    await import_heze(redis, tmp)
    registry = await AreaRegistry.load(redis, Keys())
    await add_subscribers(redis, registry, n, prefix=prefix)
    return registry


@dataclass
class Console:
    """A test client that uses the console as a browser would (cookies, forms)."""

    client: Client
    tokens: dict[str, str] = field(default_factory=dict)
    csrf: str = ""

    @property
    def app(self) -> Any:
        return self.client.app

    async def get(self, path: str, **kw: Any) -> tuple[ClientResponse, str]:
        resp = await self.client.get(path, **kw)
        text = await resp.text()
        if 'name="csrf"' in text:
            self.csrf = csrf_of(text)
        return resp, text

    async def post(
        self, path: str, data: Any, *, csrf: bool = True, **kw: Any
    ) -> tuple[ClientResponse, str]:
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        if csrf:
            fields.append(("csrf", self.csrf))
        resp = await self.client.post(path, data=fields, allow_redirects=False, **kw)
        text = await resp.text()
        if 'name="csrf"' in text:
            self.csrf = csrf_of(text)
        return resp, text

    async def follow(self, resp: ClientResponse) -> tuple[ClientResponse, str]:
        assert resp.status in (302, 303), (resp.status, await resp.text())
        return await self.get(resp.headers["Location"])

    async def login(self, role: str = "operator") -> ClientResponse:
        await self.get("/console/login")
        resp, text = await self.post("/console/login", {"token": self.tokens[role]})
        assert resp.status == 303, text
        await self.follow(resp)
        return resp

    async def logout(self) -> None:
        resp, _ = await self.post("/console/logout", {})
        assert resp.status == 303


async def start_console(
    redis: Redis, make_settings: Callable[..., Settings], **overrides: Any
) -> Console:
    overrides.setdefault("channels", {"sms": dict(SANDBOX)})
    overrides.setdefault("issuer", ISSUER)
    dispatch = {"reclaim_idle": 5, "sweep_interval": 0.5, **overrides.pop("dispatch", {})}
    settings = make_settings(dispatch=dispatch, **overrides)
    app = create_app(settings, redis=redis, poll_feeds=False)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    console = Console(client)
    tokens = app[SERVICES].tokens
    for role in Role:
        secret, _ = await tokens.create(role.value, role, [], actor="test")
        console.tokens[role.value] = secret
    secret, _ = await tokens.create("caoxian-ops", Role.OPERATOR, [CAOXIAN], actor="test")
    console.tokens["caoxian"] = secret
    return console


def issue_fields(
    *,
    areas: list[str] | None = None,
    hazard: str = "rainstorm",
    level: str = "red",
    action: str = "preview",
    form_id: str = "",
    previewed: str = "",
    **extra: str,
) -> list[tuple[str, str]]:
    fields = [
        ("hazard", hazard),
        ("level", level),
        ("status", "Actual"),
        ("language", "zh-CN"),
        ("onset", extra.pop("onset", "2030-07-01T08:00")),
        ("expires", extra.pop("expires", "2030-07-01T20:00")),
        ("headline", extra.pop("headline", "曹县气象台发布暴雨红色预警信号")),
        ("description", extra.pop("description", "预计未来3小时曹县降雨量将达100毫米以上。")),
        ("instruction", extra.pop("instruction", "")),
        ("codes", extra.pop("codes", "")),
        ("polygon", extra.pop("polygon", "")),
        ("polygon_desc", extra.pop("polygon_desc", "")),
        ("form_id", form_id),
        ("previewed", previewed),
        ("action", action),
    ]
    fields += [("areas", a) for a in (areas if areas is not None else [CAOXIAN])]
    fields += list(extra.items())
    return fields
