"""The operator API end to end, against a real redis-server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from warnd.api.app import create_app
from warnd.api.context import SERVICES
from warnd.api.routes import ROUTES, openapi_path
from warnd.audit import Audit
from warnd.auth import Role, TokenStore
from warnd.cap import parse_cap, schema_errors
from warnd.keys import Keys
from warnd.settings import Settings
from warnd.taxonomy import Taxonomy

CAP_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cap"
BEIJING = timezone(timedelta(hours=8))

MakeToken = Callable[..., Awaitable[str]]


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return Taxonomy.load(Path(__file__).resolve().parents[1] / "config" / "taxonomy.toml")


@pytest.fixture
async def client(
    redis: Redis, settings: Settings, taxonomy: Taxonomy
) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(settings, redis=redis, taxonomy=taxonomy)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.fixture
def make_token(redis: Redis) -> MakeToken:
    async def make(role: str = "operator", *areas: str, name: str = "t") -> str:
        secret, _ = await TokenStore(redis, Keys(), Audit(redis, Keys())).create(
            name, Role(role), areas, actor="test"
        )
        return secret

    return make


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def json_alert(code: str = "371721", name: str = "曹县", **info: Any) -> dict[str, Any]:
    expires = (datetime.now(BEIJING) + timedelta(hours=6)).replace(microsecond=0)
    body = {
        "hazard": "rainstorm",
        "level": "red",
        "headline": f"{name}气象台发布暴雨红色预警信号",
        "description": "预计未来3小时降雨量将达100毫米以上。",
        "expires": expires.isoformat(),
        "areas": [{"area_desc": name, "geocodes": [{"value_name": "GB/T 2260", "value": code}]}],
    }
    body.update(info)
    return {"infos": [body]}


def cap_files(*parts: str) -> list[Path]:
    return sorted((CAP_DIR.joinpath(*parts)).rglob("*.xml"))


SCHEMA_FAILING = {
    "zh/tw-cwb-typhoon-warning-2-polygons.xml",
    "cap11/us-nws-floodwarning-errors-cap11.xml",
}
VALID_CAP = [
    p
    for p in cap_files()
    if "invalid" not in p.parts and str(p.relative_to(CAP_DIR)) not in SCHEMA_FAILING
]


async def post_cap(client: TestClient[Any, Any], token: str, path: Path, **headers: str) -> Any:
    return await client.post(
        "/v1/alerts",
        data=path.read_bytes(),
        headers=auth(token, **{"Content-Type": "application/cap+xml"}, **headers),
    )


# ------------------------------------------------------------------ submit


async def test_json_alert_is_completed_stored_and_served_as_valid_cap(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token("operator", "3717")
    resp = await client.post("/v1/alerts", json=json_alert(), headers=auth(token))
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["created"] is True and body["state"] == "active"
    assert resp.headers["Location"] == f"/v1/alerts/{body['id']}"
    # GB/T 35965.1 style: area code + unit code, Beijing time stamp, sequence.
    assert (
        body["identifier"].startswith("371700" + "00000" + "_") or body["identifier"][:6].isdigit()
    )

    got = await (await client.get(body["links"]["self"], headers=auth(token))).json()
    rec = got["record"]
    assert rec["hazard"] == "rainstorm" and rec["level"] == "red"
    assert rec["areas"] == ["371721"]
    info = rec["alert"]["infos"][0]
    assert info["event"] == "暴雨红色预警"
    assert info["severity"] == "Extreme"
    assert info["categories"] == ["Met"]

    cap = await client.get(body["links"]["cap"], headers=auth(token))
    assert cap.status == 200 and cap.content_type == "application/cap+xml"
    xml = await cap.read()
    assert schema_errors(xml) == []
    back = parse_cap(xml).alert
    assert back.identifier == body["identifier"]
    assert back.infos[0].hazard == "rainstorm" and back.infos[0].level == "red"


@pytest.mark.parametrize("path", VALID_CAP, ids=lambda p: str(p.relative_to(CAP_DIR)))
async def test_every_real_cap_alert_is_accepted_and_served_back(
    client: TestClient[Any, Any], make_token: MakeToken, path: Path
) -> None:
    token = await make_token("admin")
    resp = await post_cap(client, token, path)
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    original = parse_cap(path.read_bytes()).alert
    xml = await (await client.get(body["links"]["cap"], headers=auth(token))).read()
    assert schema_errors(xml) == []
    served = parse_cap(xml).alert
    assert (served.identifier, served.sender, served.msg_type) == (
        original.identifier,
        original.sender,
        original.msg_type,
    )
    assert served.references == original.references
    assert len(served.infos) == len(original.infos)
    assert [a.polygons for i in served.infos for a in i.areas] == [
        a.polygons for i in original.infos for a in i.areas
    ]


@pytest.mark.parametrize(
    "path",
    cap_files("invalid") + [CAP_DIR / p for p in sorted(SCHEMA_FAILING)],
    ids=lambda p: str(p.relative_to(CAP_DIR)),
)
async def test_invalid_cap_is_refused_with_problem_details_and_audited(
    client: TestClient[Any, Any], make_token: MakeToken, path: Path
) -> None:
    token = await make_token("admin")
    resp = await post_cap(client, token, path)
    assert resp.status in (400, 422), await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["status"] == resp.status
    assert problem["type"].startswith("https://") and problem["title"] and problem["detail"]
    assert problem["errors"], "a refusal must say what is wrong"
    audit = await (await client.get("/v1/audit?event=alert.refused", headers=auth(token))).json()
    assert len(audit["items"]) == 1
    assert audit["items"][0]["detail"]["reason"] == problem["detail"]


async def test_same_sender_and_identifier_returns_the_existing_alert(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token("admin")
    path = CAP_DIR / "zh" / "tw-cwa-thunderstorm-polygon.xml"
    first = await post_cap(client, token, path)
    second = await post_cap(client, token, path)
    assert (first.status, second.status) == (202, 200)
    a, b = await first.json(), await second.json()
    assert a["id"] == b["id"] and b["created"] is False
    listing = await (await client.get("/v1/alerts", headers=auth(token))).json()
    assert len(listing["items"]) == 1


async def test_idempotency_key_replays_the_first_answer(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token("operator")
    hdrs = auth(token, **{"Idempotency-Key": "req-1"})
    # JSON alerts get a fresh identifier each time: only the key prevents a twin.
    body = json_alert()  # built once: its expiry is computed from the clock
    first = await client.post("/v1/alerts", json=body, headers=hdrs)
    again = await client.post("/v1/alerts", json=body, headers=hdrs)
    assert (first.status, again.status) == (202, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    other = await client.post(
        "/v1/alerts",
        data=(CAP_DIR / "oasis" / "oasis-cap12-A1-homeland-security.xml").read_bytes(),
        headers={**hdrs, "Content-Type": "application/cap+xml"},
    )
    assert other.status == 409
    listing = await (await client.get("/v1/alerts", headers=auth(token))).json()
    assert len(listing["items"]) == 1


# ------------------------------------------------------------------ chains


async def test_taiwan_heavy_rain_chain_ends_cancelled_with_earlier_steps_superseded(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token("admin")
    ids = []
    for n, step in enumerate(["1-alert", "2-update", "3-update", "4-cancel"], 1):
        resp = await post_cap(client, token, CAP_DIR / "zh" / f"tw-cwa-heavy-rain-{step}.xml")
        assert resp.status == 202, (n, await resp.text())
        body = await resp.json()
        # Every reference resolves although its sent time is 1 s off the original's.
        assert not [w for w in body["warnings"] if "unknown" in w], body
        ids.append(body["id"])
    states = []
    for aid in ids:
        rec = (await (await client.get(f"/v1/alerts/{aid}", headers=auth(token))).json())["record"]
        states.append((rec["state"], rec["superseded_by"], rec["cancelled_by"], rec["chain"]))
    assert states[0][:2] == ("superseded", ids[1])
    assert states[1][:2] == ("superseded", ids[2])
    assert states[2][0] == "cancelled" and states[2][2] == ids[3]
    assert {s[3] for s in states} == {ids[0]}


async def test_reference_to_unknown_alert_is_accepted_with_warning_and_applied_later(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token("admin")
    cancel = await post_cap(client, token, CAP_DIR / "zh" / "tw-cwa-heavy-rain-4-cancel.xml")
    assert cancel.status == 202
    warned = await cancel.json()
    assert any("unknown alert" in w for w in warned["warnings"])
    late = await post_cap(client, token, CAP_DIR / "zh" / "tw-cwa-heavy-rain-3-update.xml")
    body = await late.json()
    assert body["state"] == "cancelled"
    rec = await (await client.get(f"/v1/alerts/{body['id']}", headers=auth(token))).json()
    assert rec["record"]["cancelled_by"] == warned["id"]


async def test_update_and_cancel_endpoints(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token("operator", "371721")
    first = await (await client.post("/v1/alerts", json=json_alert(), headers=auth(token))).json()
    upd = await client.post(
        f"/v1/alerts/{first['id']}/update", json=json_alert(level="orange"), headers=auth(token)
    )
    assert upd.status == 202, await upd.text()
    second = await upd.json()
    assert second["changed"] == {first["id"]: "superseded"}
    rec = await (await client.get(f"/v1/alerts/{second['id']}", headers=auth(token))).json()
    assert rec["record"]["msg_type"] == "Update" and rec["record"]["level"] == "orange"
    assert rec["record"]["chain"] == first["id"]

    cancel = await client.post(
        f"/v1/alerts/{second['id']}/cancel", json={"note": "降雨减弱"}, headers=auth(token)
    )
    assert cancel.status == 202, await cancel.text()
    third = await cancel.json()
    assert third["changed"] == {second["id"]: "cancelled"}
    xml = await (await client.get(third["links"]["cap"], headers=auth(token))).read()
    assert schema_errors(xml) == []
    assert b"<msgType>Cancel</msgType>" in xml

    missing = await client.post("/v1/alerts/aaaaaaaaaaaaaaaa/cancel", headers=auth(token))
    assert missing.status == 404
    assert missing.content_type == "application/problem+json"


# ----------------------------------------------------------- authorisation


async def test_area_scoped_operator_cannot_warn_a_neighbouring_county(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    caoxian = await make_token("operator", "371721", name="曹县")
    ok = await client.post("/v1/alerts", json=json_alert("371721"), headers=auth(caoxian))
    assert ok.status == 202
    refused = await client.post(
        "/v1/alerts", json=json_alert("371722", "单县"), headers=auth(caoxian)
    )
    assert refused.status == 403
    problem = await refused.json()
    assert "371722" in problem["errors"][0]["msg"]
    assert problem["errors"][0]["loc"] == "/infos/0/areas/0"
    # A polygon-only area cannot be checked against the token's codes.
    poly = json_alert()
    poly["infos"][0]["areas"] = [
        {
            "area_desc": "x",
            "polygons": [{"points": [[34.8, 115.5], [34.9, 115.6], [34.7, 115.7], [34.8, 115.5]]}],
        }
    ]
    assert (await client.post("/v1/alerts", json=poly, headers=auth(caoxian))).status == 403
    # Cancelling another county's alert is refused too.
    admin = await make_token("admin", name="admin")
    shan = await (
        await client.post("/v1/alerts", json=json_alert("371722", "单县"), headers=auth(admin))
    ).json()
    cancel = await client.post(f"/v1/alerts/{shan['id']}/cancel", headers=auth(caoxian))
    assert cancel.status == 403


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic abc"}, 401),
        ({"Authorization": "Bearer wdt_x_y"}, 401),
        ({"Authorization": "Bearer nonsense"}, 401),
    ],
)
async def test_requests_without_a_valid_token_get_401(
    client: TestClient[Any, Any], headers: dict[str, str], status: int
) -> None:
    resp = await client.get("/v1/alerts", headers=headers)
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_roles_are_enforced_and_revocation_takes_effect(
    client: TestClient[Any, Any], make_token: MakeToken, redis: Redis
) -> None:
    viewer = await make_token("viewer", name="v")
    assert (await client.get("/v1/alerts", headers=auth(viewer))).status == 200
    assert (await client.post("/v1/alerts", json=json_alert(), headers=auth(viewer))).status == 403
    assert (await client.get("/v1/audit", headers=auth(viewer))).status == 403
    await TokenStore(redis, Keys(), Audit(redis, Keys())).revoke("v", actor="test")
    resp = await client.get("/v1/alerts", headers=auth(viewer))
    assert resp.status == 401
    assert "revoked" in (await resp.json())["detail"]


# ---------------------------------------------------------- input checks


async def test_json_field_errors_are_all_listed(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token()
    body = json_alert(level="purple", expires="tomorrow")
    body["infos"][0]["areas"][0]["polygons"] = [{"points": [[34.8, 115.5], [34.9, 115.6]]}]
    resp = await client.post("/v1/alerts", json=body, headers=auth(token))
    assert resp.status == 422
    locs = {e["loc"] for e in (await resp.json())["errors"]}
    assert "/infos/0/level" in locs
    assert "/infos/0/expires" in locs
    assert any(loc.startswith("/infos/0/areas/0/polygons/0") for loc in locs)


async def test_unknown_hazard_is_refused_by_name(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token()
    body = json_alert(
        hazard="meteor",
        event="陨石",
        categories=["Other"],
        severity="Severe",
        urgency="Expected",
        certainty="Likely",
    )
    resp = await client.post("/v1/alerts", json=body, headers=auth(token))
    assert resp.status == 422
    assert "meteor" in json.dumps(await resp.json(), ensure_ascii=False)


@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[]", "application/json", 422),
        (b"<alert/>", "text/plain", 415),
        (b"hello", "application/octet-stream", 415),
    ],
)
async def test_malformed_bodies(
    client: TestClient[Any, Any], make_token: MakeToken, body: bytes, ctype: str, status: int
) -> None:
    token = await make_token()
    resp = await client.post(
        "/v1/alerts", data=body, headers=auth(token, **{"Content-Type": ctype})
    )
    assert resp.status == status
    assert resp.content_type == "application/problem+json"


async def test_bodies_over_the_limit_are_refused_unread(
    redis: Redis,
    make_settings: Callable[..., Settings],
    taxonomy: Taxonomy,
    make_token: MakeToken,
) -> None:
    app = create_app(make_settings(http={"max_body_bytes": 4096}), redis=redis, taxonomy=taxonomy)
    token = await make_token()
    async with TestClient(TestServer(app)) as c:
        big = b"<alert>" + b"x" * 10_000 + b"</alert>"
        resp = await c.post(
            "/v1/alerts", data=big, headers=auth(token, **{"Content-Type": "application/cap+xml"})
        )
        assert resp.status == 413
        assert (await resp.json())["type"].endswith("payload-too-large")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 1000

        chunked = await c.post(
            "/v1/alerts",
            data=chunks(),
            headers=auth(token, **{"Content-Type": "application/cap+xml"}),
        )
        assert chunked.status == 413


async def test_unknown_routes_and_methods_are_problem_json(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/nothing")
    assert resp.status == 404 and resp.content_type == "application/problem+json"
    resp = await client.delete("/v1/alerts")
    assert resp.status == 405 and resp.content_type == "application/problem+json"


# ------------------------------------------------------------ list, expiry


async def test_listing_filters_and_pages(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token("operator")
    for code, level, hazard in [
        ("371721", "red", "rainstorm"),
        ("371722", "yellow", "rainstorm"),
        ("371723", "orange", "landslide"),
        ("440106", "blue", "typhoon"),
        ("371702", "red", "flood"),
    ]:
        r = await client.post(
            "/v1/alerts",
            json=json_alert(code, code, level=level, hazard=hazard),
            headers=auth(token),
        )
        assert r.status == 202, await r.text()

    async def ids(query: str) -> list[str]:
        page = await (await client.get(f"/v1/alerts{query}", headers=auth(token))).json()
        return [a["areas"][0] for a in page["items"]]

    assert await ids("?hazard=rainstorm") == ["371722", "371721"]
    assert await ids("?level=red") == ["371702", "371721"]
    assert await ids("?area=3717") == ["371702", "371723", "371722", "371721"]
    assert await ids("?state=active&area=44") == ["440106"]
    seen: list[str] = []
    url: str | None = "/v1/alerts?limit=2"
    while url:
        page = await (await client.get(url, headers=auth(token))).json()
        seen += [a["areas"][0] for a in page["items"]]
        url = page["next"]
    assert seen == ["371702", "440106", "371723", "371722", "371721"]

    bad = await client.get("/v1/alerts?level=purple&limit=0&since=yesterday", headers=auth(token))
    assert bad.status == 400
    assert {e["loc"] for e in (await bad.json())["errors"]} == {"?level", "?limit", "?since"}


async def test_alerts_expire_without_a_manual_step(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    token = await make_token("admin")
    past = datetime.now(BEIJING).replace(microsecond=0) - timedelta(hours=1)
    body = json_alert(expires=past.isoformat())
    body["sent"] = (past - timedelta(hours=2)).isoformat()
    body["identifier"] = "37170000000_20240101000000_1"
    resp = await client.post("/v1/alerts", json=body, headers=auth(token))
    assert resp.status == 202
    accepted = await resp.json()
    assert accepted["state"] == "expired"
    assert any("already expired" in w for w in accepted["warnings"])
    listing = await (await client.get("/v1/alerts?state=expired", headers=auth(token))).json()
    assert [a["id"] for a in listing["items"]] == [accepted["id"]]

    # The sweeper persists it and writes the audit entry.
    intake = client.server.app[SERVICES].intake
    assert await intake.expire_due() == [accepted["id"]]
    audit = await (await client.get("/v1/audit?event=alert.expired", headers=auth(token))).json()
    assert [e["alert_id"] for e in audit["items"]] == [accepted["id"]]


# ------------------------------------------------------------ system


async def test_openapi_describes_every_route(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    for spec in ROUTES:
        path = openapi_path(spec.path)
        assert spec.method.lower() in doc["paths"][path], path
    assert {"Alert", "Info", "Problem", "AlertAccepted"} <= set(doc["components"]["schemas"])
    post = doc["paths"]["/v1/alerts"]["post"]
    assert {"application/json", "application/cap+xml"} <= set(post["requestBody"]["content"])
    assert {"202", "401", "403", "413", "415", "422"} <= set(post["responses"])


async def test_health_and_readiness(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ok"


async def test_audit_records_accepts_refusals_and_pages(
    client: TestClient[Any, Any], make_token: MakeToken
) -> None:
    admin = await make_token("admin")
    for _ in range(3):
        await client.post("/v1/alerts", json=json_alert(), headers=auth(admin))
    await client.post("/v1/alerts", json={"infos": []}, headers=auth(admin))
    first = await (await client.get("/v1/audit?limit=2", headers=auth(admin))).json()
    assert [e["event"] for e in first["items"]] == ["token.created", "alert.accepted"]
    assert first["items"][0]["actor"] == "test"
    rest: list[dict[str, Any]] = []
    url = first["next"]
    while url:
        page = await (await client.get(url, headers=auth(admin))).json()
        assert len(page["items"]) <= 2
        rest += page["items"]
        url = page["next"]
    assert [e["event"] for e in rest] == ["alert.accepted", "alert.accepted", "alert.refused"]
    assert all(e["actor"] == "token:t" for e in first["items"][1:] + rest)
