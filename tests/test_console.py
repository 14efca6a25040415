"""The duty officer's console with aiohttp's test client: sessions, CSRF, roles,
language, preview, issue, update, cancel, retry, map — against a real warnd
(real Redis, 菏泽's areas and boundaries, the sandbox SMS provider)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from console_data import (
    CAOXIAN,
    SANDBOX,
    Console,
    form_id_of,
    heze_with_subscribers,
    issue_fields,
    previewed_of,
    start_console,
    text_of,
)
from dispatch_data import phone, wait_for
from redis.asyncio import Redis

from warnd.api.context import SERVICES
from warnd.auth import token_digest
from warnd.console.i18n import LANGUAGES, catalogue
from warnd.console.mapsvg import MapMaker, Shade, rate_colour
from warnd.keys import Keys
from warnd.settings import Settings
from warnd.store import AlertQuery, AlertState

SUBSCRIBERS = 30


@pytest.fixture
async def heze(redis: Redis, tmp_path: Path) -> Any:
    return await heze_with_subscribers(redis, tmp_path, SUBSCRIBERS)


@pytest.fixture
async def make_console(
    redis: Redis, make_settings: Callable[..., Settings], heze: Any
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Console] = []

    async def make(**overrides: Any) -> Console:
        c = await start_console(redis, make_settings, **overrides)
        started.append(c)
        return c

    yield make
    for c in started:
        await c.client.close()


@pytest.fixture
async def console(make_console: Callable[..., Any]) -> Console:
    c: Console = await make_console()
    return c


async def _alerts(c: Console) -> list[Any]:
    records, _ = await c.app[SERVICES].store.query(AlertQuery(limit=50))
    return list(records)


async def _audit_events(c: Console) -> list[tuple[str, str]]:
    entries = await c.app[SERVICES].audit.read(limit=1000)
    return [(e.event, e.actor) for e in entries]


async def _issue(c: Console, **fields: Any) -> str:
    """Issue through the console's form (preview, then send); the new alert's id."""
    _, page = await c.get("/console/issue")
    fid = form_id_of(page)
    resp, page = await c.post("/console/issue", issue_fields(form_id=fid, **fields))
    assert resp.status == 200, text_of(page)
    resp, page = await c.post(
        "/console/issue",
        issue_fields(form_id=fid, previewed=previewed_of(page), action="send", **fields),
    )
    assert resp.status == 303, text_of(page)
    m = re.search(r"/console/alerts/([a-z2-7]{16})\?notice=issued", resp.headers["Location"])
    assert m, resp.headers["Location"]
    return m.group(1)


async def _all_sent(c: Console, aid: str, n: int) -> None:
    coverage = c.app[SERVICES].coverage

    async def done() -> bool:
        report = await coverage.report(aid)
        return report.final and report.totals.endpoints_targeted == n

    await wait_for(done, f"{n} deliveries of {aid} settled")


# ------------------------------------------------------------- sessions


async def test_login_sets_an_httponly_strict_session_cookie_and_never_keeps_the_token(
    console: Console, redis: Redis
) -> None:
    resp, _ = await console.get("/console/alerts", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"].startswith("/console/login?next=/console/alerts")

    resp, page = await console.get("/console/login")
    assert resp.status == 200 and 'name="csrf"' in page
    resp, page = await console.post("/console/login", {"token": "wdt_not_a_real_token"})
    assert resp.status == 401 and "令牌无效" in page

    resp, _ = await console.post("/console/login", {"token": console.tokens["operator"]})
    assert resp.status == 303 and resp.headers["Location"] == "/console/alerts"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("warnd_session=")
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/console"):
        assert flag in cookie, cookie
    assert "Secure" not in cookie  # plain http here
    sid = cookie.split(";")[0].split("=", 1)[1]
    assert sid and console.tokens["operator"] not in cookie

    # Redis holds the session under the cookie's digest, with an expiry,
    # and the token's digest (what the token store keys by), never the token.
    keys = [k async for k in redis.scan_iter(match="warnd:console:session:*")]
    assert len(keys) == 1 and sid not in keys[0]
    stored = await redis.hgetall(keys[0])
    assert stored["token"] == token_digest(console.tokens["operator"])
    assert console.tokens["operator"] not in json.dumps(stored)
    assert 0 < await redis.ttl(keys[0]) <= 480 * 60
    resp, page = await console.get("/console/alerts")
    assert resp.status == 200 and "operator · 值班员" in text_of(page)
    assert ("console.login", "token:operator") in await _audit_events(console)


async def test_cookie_is_secure_behind_https_and_a_login_renews_the_session(
    console: Console,
) -> None:
    resp, _ = await console.get("/console/login", headers={"X-Forwarded-Proto": "https"})
    cookie = resp.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie

    console.client.session.cookie_jar.clear()
    resp, _ = await console.get("/console/login")
    before = resp.headers["Set-Cookie"].split(";")[0]
    resp, _ = await console.post("/console/login", {"token": console.tokens["viewer"]})
    after = resp.headers["Set-Cookie"].split(";")[0]
    # The anonymous session of the login form is replaced (no session fixation).
    assert before.startswith("warnd_session=") and after.startswith("warnd_session=")
    assert before != after


async def test_logout_and_token_revocation_end_the_session(console: Console) -> None:
    await console.login("operator")
    resp, _ = await console.post("/console/logout", {})
    assert resp.status == 303 and resp.headers["Location"] == "/console/login"
    resp, _ = await console.get("/console/alerts", allow_redirects=False)
    assert resp.status == 303

    await console.login("viewer")
    await console.app[SERVICES].tokens.revoke("viewer", actor="test")
    resp, _ = await console.get("/console/alerts", allow_redirects=False)
    assert resp.status == 303 and "/console/login" in resp.headers["Location"]


async def test_every_post_needs_the_csrf_token_of_its_own_session(
    console: Console, make_console: Callable[..., Any]
) -> None:
    # The login form itself.
    await console.get("/console/login")
    resp, page = await console.post(
        "/console/login", {"token": console.tokens["operator"]}, csrf=False
    )
    assert resp.status == 403 and "CSRF" in page

    await console.login("operator")
    _, page = await console.get("/console/issue")
    fields = issue_fields(form_id=form_id_of(page))
    resp, page = await console.post("/console/issue", fields, csrf=False)
    assert resp.status == 403 and "CSRF" in page
    resp, _ = await console.post("/console/issue", [*fields, ("csrf", "x" * 43)], csrf=False)
    assert resp.status == 403
    # Another officer's valid token is no good in this session either.
    other: Console = await make_console()
    await other.login("admin")
    resp, _ = await console.post("/console/issue", [*fields, ("csrf", other.csrf)], csrf=False)
    assert resp.status == 403
    resp, _ = await console.post("/console/logout", {}, csrf=False)
    assert resp.status == 403
    assert await _alerts(console) == []


async def test_roles_are_those_of_the_api(console: Console) -> None:
    aid = await _submit_api(console, "operator")
    await console.login("viewer")
    resp, page = await console.get("/console/alerts")
    assert resp.status == 200
    assert 'href="/console/issue"' not in page and 'href="/console/audit"' not in page
    resp, page = await console.get(f"/console/alerts/{aid}")
    assert resp.status == 200 and 'id="cancel-submit"' not in page
    resp, page = await console.get("/console/issue")
    assert resp.status == 403 and "值班员" in text_of(page)
    resp, _ = await console.post(f"/console/alerts/{aid}/cancel", {"note": "x"})
    assert resp.status == 403
    assert (await console.app[SERVICES].store.get(aid)).state is AlertState.ACTIVE  # type: ignore[union-attr]
    resp, _ = await console.get("/console/audit")
    assert resp.status == 403
    await console.logout()

    await console.login("operator")
    resp, _ = await console.get("/console/audit")
    assert resp.status == 403  # GET /v1/audit is admin too
    await console.logout()
    await console.login("admin")
    resp, page = await console.get("/console/audit")
    assert resp.status == 200 and "alert.accepted" in page


async def _submit_api(c: Console, role: str, code: str = CAOXIAN) -> str:
    body = {
        "infos": [
            {
                "hazard": "rainstorm",
                "level": "orange",
                "headline": "曹县发布暴雨橙色预警",
                "expires": "2030-07-01T20:00:00+08:00",
                "areas": [
                    {"area_desc": "曹县", "geocodes": [{"value_name": "GB/T 2260", "value": code}]}
                ],
            }
        ]
    }
    resp = await c.client.post(
        "/v1/alerts", json=body, headers={"Authorization": f"Bearer {c.tokens[role]}"}
    )
    doc = await resp.json()
    assert resp.status == 202, doc
    return str(doc["id"])


async def test_language_switch_changes_every_text_and_persists(console: Console) -> None:
    await console.login("operator")
    _, page = await console.get("/console/alerts")
    assert '<html lang="zh-Hans">' in page and "预警列表" in page
    resp, _ = await console.post("/console/lang", {"lang": "en", "next": "/console/issue"})
    assert resp.status == 303 and resp.headers["Location"] == "/console/issue"
    assert "warnd_lang=en" in resp.headers["Set-Cookie"]
    for path in ("/console/issue", "/console/alerts", "/console/feeds"):
        _, page = await console.get(path)
        assert '<html lang="en">' in page, path
        visible = text_of(page)
        assert "预警列表" not in visible and "Alerts" in visible
        assert not re.search(r"\b(nav|issue|field|alerts|login)\.[a-z_]+\b", visible), path
    # Somewhere else than the console: no open redirect.
    resp, _ = await console.post(
        "/console/lang", {"lang": "zh-Hans", "next": "https://evil.example/"}
    )
    assert resp.headers["Location"] == "/console/alerts"


# -------------------------------------------------------------- issuing


async def test_preview_counts_the_audience_as_the_match_preview_api_and_stores_nothing(
    console: Console,
) -> None:
    await console.login("operator")
    _, page = await console.get("/console/issue")
    resp, page = await console.post("/console/issue", issue_fields(form_id=form_id_of(page)))
    assert resp.status == 200
    api = await console.client.post(
        "/v1/match/preview",
        json={
            "infos": [
                {
                    "hazard": "rainstorm",
                    "level": "red",
                    "expires": "2030-07-01T20:00:00+08:00",
                    "areas": [
                        {
                            "area_desc": "曹县",
                            "geocodes": [{"value_name": "GB/T 2260", "value": CAOXIAN}],
                        }
                    ],
                }
            ]
        },
        headers={"Authorization": f"Bearer {console.tokens['operator']}"},
    )
    expected = await api.json()
    assert expected["subscribers"] == SUBSCRIBERS
    m = re.search(r'id="preview-subscribers">(\d+)<', page)
    assert m and int(m.group(1)) == expected["subscribers"]
    m = re.search(r'id="preview-deliveries">(\d+)<', page)
    assert m and int(m.group(1)) == expected["deliveries"]
    # Blind spots: the townships of 曹县 nobody is registered in, broadest first.
    assert expected["blind_spots"]
    visible = text_of(page)
    assert f"盲区 {len(expected['blind_spots'])} 个" in visible
    first_township = min(
        (b for b in expected["blind_spots"] if len(b["code"]) == 9), key=lambda b: b["code"]
    )
    assert first_township["name"] in visible
    assert 'id="send"' in page and 'id="area-map"' in page
    assert await _alerts(console) == []
    assert not [e for e, _ in await _audit_events(console) if e.startswith("alert.")]


async def test_issue_goes_through_the_api_intake_and_dispatch(
    console: Console, redis: Redis
) -> None:
    await console.login("operator")
    aid = await _issue(console)
    rec = await console.app[SERVICES].store.get(aid)
    assert rec is not None
    assert rec.source == "token:operator" and rec.hazard == "rainstorm"
    assert rec.level is not None and rec.level.value == "red"
    assert rec.areas == [CAOXIAN] and rec.area_names == ["曹县"]
    info = rec.alert.infos[0]
    assert info.headline == "曹县气象台发布暴雨红色预警信号" and info.event == "暴雨红色预警"
    assert info.expires is not None and info.expires.isoformat() == "2030-07-01T20:00:00+08:00"
    assert ("alert.accepted", "token:operator") in await _audit_events(console)
    await _all_sent(console, aid, SUBSCRIBERS)
    sent = await redis.xrange(Keys().sandbox_record("sms"))
    assert len(sent) == SUBSCRIBERS

    # The alert page: the map colours 曹县 by its reach, the table lists its townships.
    resp, page = await console.get(f"/console/alerts/{aid}")
    assert resp.status == 200
    assert re.search(rf'data-code="{CAOXIAN}" data-rate="1.0000"', page)
    assert f'fill="{rate_colour(1.0)}"' in page
    assert 'data-code="371721001"' in page  # a township row
    assert "无登记人员" in page  # townships without subscribers are flagged
    assert resp.headers["X-Console-Live"] == "0"  # finished: the page stops refreshing


async def test_a_form_sent_twice_makes_one_alert_and_a_changed_form_needs_a_new_preview(
    console: Console,
) -> None:
    await console.login("operator")
    _, page = await console.get("/console/issue")
    fid = form_id_of(page)
    _, page = await console.post("/console/issue", issue_fields(form_id=fid))
    digest = previewed_of(page)
    send = issue_fields(form_id=fid, previewed=digest, action="send")
    first, _ = await console.post("/console/issue", send)
    again, _ = await console.post("/console/issue", send)
    assert first.status == again.status == 303
    assert first.headers["Location"] == again.headers["Location"]
    assert len(await _alerts(console)) == 1

    # Sending a form that differs from its preview shows the new preview instead.
    _, page = await console.get("/console/issue")
    fid = form_id_of(page)
    _, page = await console.post("/console/issue", issue_fields(form_id=fid, level="orange"))
    resp, page = await console.post(
        "/console/issue",
        issue_fields(form_id=fid, level="red", previewed=previewed_of(page), action="send"),
    )
    assert resp.status == 200 and "预览后有改动" in page
    assert len(await _alerts(console)) == 1


async def test_invalid_forms_show_every_error_and_keep_what_was_typed(console: Console) -> None:
    await console.login("operator")
    _, page = await console.get("/console/issue")
    fid = form_id_of(page)
    # The API's own validation: expires before onset.
    resp, page = await console.post(
        "/console/issue",
        issue_fields(
            form_id=fid, onset="2030-07-02T08:00", expires="2030-07-01T20:00", headline="保留的标题"
        ),
    )
    assert resp.status == 422
    assert 'class="errors"' in page and "is before onset" in page
    assert 'value="保留的标题"' in page and "checked" in page
    # The form's own: nothing chosen; a polygon that is not lat,lon pairs.
    resp, page = await console.post("/console/issue", issue_fields(form_id=fid, areas=[]))
    assert resp.status == 422 and "choose at least one area" in page
    resp, page = await console.post(
        "/console/issue", issue_fields(form_id=fid, areas=[], polygon="34.7,115.4 oops")
    )
    assert resp.status == 422 and "line 1, point 2" in page
    assert "34.7,115.4 oops" in page
    assert await _alerts(console) == []


async def test_an_area_outside_the_token_is_refused_and_audited(console: Console) -> None:
    await console.login("caoxian")
    _, page = await console.get("/console/issue")
    # The picker offers only the token's areas.
    assert 'value="371721"' in page and 'value="371722"' not in page
    fid = form_id_of(page)
    _, page = await console.post("/console/issue", issue_fields(form_id=fid, areas=["371722"]))
    resp, page = await console.post(
        "/console/issue",
        issue_fields(form_id=fid, areas=["371722"], previewed=previewed_of(page), action="send"),
    )
    assert resp.status == 403 and "outside this token" in page
    assert await _alerts(console) == []
    assert ("alert.refused", "token:caoxian-ops") in await _audit_events(console)


async def test_a_pasted_cap_polygon_is_drawn_and_previewed(console: Console) -> None:
    await console.login("operator")
    _, page = await console.get("/console/issue")
    square = "34.70,115.40 34.70,115.60 34.85,115.60 34.85,115.40 34.70,115.40"
    resp, page = await console.post(
        "/console/issue",
        issue_fields(form_id=form_id_of(page), areas=[], polygon=square, polygon_desc="曹县北部"),
    )
    assert resp.status == 200, text_of(page)
    assert 'class="outline"' in page  # the polygon drawn over the boundaries
    assert 'id="preview-subscribers"' in page and "多边形" in page


async def test_prefill_takes_the_headline_from_the_templates_and_the_criterion_from_the_guidelines(
    console: Console,
) -> None:
    await console.login("operator")
    resp = await console.client.get(
        "/console/issue/prefill",
        params={"hazard": "rainstorm", "level": "red", "areas": CAOXIAN},
    )
    doc = await resp.json()
    assert doc["headline"] == "菏泽市应急管理局发布暴雨红色预警"
    assert doc["description"].startswith("3小时内降雨量将达100毫米以上")
    assert len(doc["guide"]) >= 3
    resp, page = await console.get("/console/issue?hazard=typhoon&level=blue")
    assert "台风蓝色预警" in page


# --------------------------------------------------------- alert page


async def test_cancel_and_update_from_the_alert_page(console: Console) -> None:
    aid = await _submit_api(console, "operator")
    await console.login("operator")
    _, page = await console.get(f"/console/alerts/{aid}")
    resp, page = await console.post(
        f"/console/alerts/{aid}/update",
        {
            "form_id": form_id_of(page),
            "level": "red",
            "headline": "曹县暴雨预警升级为红色",
            "description": "",
            "instruction": "",
            "expires": "2030-07-02T08:00",
        },
    )
    assert resp.status == 303, text_of(page)
    m = re.search(r"/console/alerts/([a-z2-7]{16})\?notice=updated", resp.headers["Location"])
    assert m
    new_id = m.group(1)
    store = console.app[SERVICES].store
    old, new = await store.get(aid), await store.get(new_id)
    assert old is not None and new is not None
    assert old.state is AlertState.SUPERSEDED and old.superseded_by == new_id
    assert new.level is not None and new.level.value == "red" and new.areas == [CAOXIAN]
    assert new.alert.infos[0].headline == "曹县暴雨预警升级为红色"

    _, page = await console.get(f"/console/alerts/{new_id}")
    resp, page = await console.post(
        f"/console/alerts/{new_id}/cancel", {"form_id": form_id_of(page), "note": "雨停了"}
    )
    assert resp.status == 303
    assert resp.headers["Location"].startswith(f"/console/alerts/{new_id}?notice=cancelled")
    cancelled = await store.get(new_id)
    assert cancelled is not None and cancelled.state is AlertState.CANCELLED
    cancel_msg = await store.get(cancelled.cancelled_by or "")
    assert cancel_msg is not None and cancel_msg.alert.note == "雨停了"
    _, page = await console.get(f"/console/alerts/{new_id}")
    assert 'id="cancelled-by"' in page and 'id="cancel-submit"' not in page
    events = await _audit_events(console)
    assert events.count(("alert.accepted", "token:operator")) == 3


async def test_failed_deliveries_show_their_reasons_and_can_be_sent_again(
    make_console: Callable[..., Any],
) -> None:
    failing = [phone(1), phone(2)]
    console: Console = await make_console(
        channels={"sms": {**SANDBOX, "fail_addresses": failing}},
        dispatch={"max_attempts": 1},
    )
    await console.login("operator")
    aid = await _issue(console)
    await _all_sent(console, aid, SUBSCRIBERS)
    resp, page = await console.get(f"/console/alerts/{aid}")
    assert resp.status == 200
    table = page.split('id="failed"', 1)[1].split("</table>", 1)[0]
    assert all(a in table for a in failing)
    assert table.count('class="reason"') == 2 and "—" not in re.findall(
        r'class="reason">([^<]*)<', table
    )
    assert 'id="retry"' in page
    resp, _ = await console.post(f"/console/alerts/{aid}/retry", {})
    assert resp.status == 303 and "notice=retried&n=2" in resp.headers["Location"]
    assert ("deliveries.retried", "token:operator") in await _audit_events(console)


async def test_feeds_page_and_unknown_pages(console: Console) -> None:
    await console.login("viewer")
    resp, page = await console.get("/console/feeds")
    assert resp.status == 200 and 'id="no-feeds"' in page
    resp, page = await console.get("/console/no/such/page")
    assert resp.status == 404 and resp.content_type == "text/html"
    resp, _ = await console.get("/console/alerts/aaaaaaaaaaaaaaaa")
    assert resp.status == 404


async def test_console_is_outside_the_api_document_and_sends_security_headers(
    console: Console,
) -> None:
    doc = await (await console.client.get("/v1/openapi.json")).json()
    assert not [p for p in doc["paths"] if p.startswith("/console") or p == "/"]
    resp, _ = await console.get("/console/login")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
    resp = await console.client.get("/console/static/console.js")
    assert resp.status == 200 and "autoRefresh" in await resp.text()
    resp = await console.client.get("/", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/console/"


# ---------------------------------------------------------------- units


def test_catalogues_have_the_same_keys_and_every_key_the_pages_use() -> None:
    zh, en = (catalogue(lang) for lang in LANGUAGES)
    assert set(zh) == set(en)
    root = Path(__file__).resolve().parents[1] / "warnd" / "console"
    used: set[str] = set()
    for f in [*root.glob("templates/*.html"), *root.glob("*.py")]:
        text = f.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\b_\(["']([a-z_.]+)["']\s*[,)]""", text))
        used |= set(re.findall(r"""\bt\(["']([a-z_]+\.[a-z_.]+)["']\s*[,)]""", text))
    assert used and not used - set(zh), sorted(used - set(zh))


async def test_map_projects_boundaries_into_the_viewbox(redis: Redis, heze: Any) -> None:
    maps = MapMaker(heze)
    m = maps.build([CAOXIAN], {CAOXIAN: Shade(0.5)})
    assert m is not None
    drawn = {a.code: a for a in m.areas}
    assert drawn[CAOXIAN].affected and drawn[CAOXIAN].fill == rate_colour(0.5)
    assert len(drawn) == 9  # 曹县 among the other counties of 菏泽 that have boundaries
    assert all(not a.affected for code, a in drawn.items() if code != CAOXIAN)
    numbers = [float(x) for a in m.areas for x in re.findall(r"-?\d+\.?\d*", a.d)]
    assert min(numbers) >= 0 and max(numbers) <= max(m.width, m.height)
    # A township without a boundary of its own is drawn as its county.
    assert maps.drawable("371721001") == [CAOXIAN]
    assert maps.drawable("3717") == sorted(drawn)
    assert rate_colour(0.0) == "#d73027" and rate_colour(1.0) == "#1a9850"
