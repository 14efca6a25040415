"""Coverage reports against the delivery records, over the real 菏泽 areas.

The sandbox channels fail some endpoints, keep some retrying (so the
report is live with deliveries pending), and get delivery receipts for
only some SMS (the rest never confirm); one township of 曹县 has nobody
registered. Every figure of the report is compared with what the
delivery records (``/v1/alerts/{id}/deliveries``) say, computed here
independently from each delivery's address, area and state.
"""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from dispatch_data import (
    REPO,
    SANDBOX,
    add_subscribers,
    alert_body,
    daemon_config,
    submit,
    wait_for,
)
from redis.asyncio import Redis

from warnd.areas import AreaRegistry
from warnd.coverage.counters import bucket_bounds, percentile_ms
from warnd.coverage.models import CoverageReport
from warnd.coverage.render import to_text
from warnd.keys import Keys
from warnd.subscribers import SubscriberStore

Client = TestClient[Any, Any]
COUNTY = "371721"  # 曹县
REACHED = {"sms": ("delivered", "acknowledged"), "email": ("sent", "delivered", "acknowledged")}
"""sms has asynchronous receipts in these tests; email does not."""
GROUPS = {"default": {"name": "公众", "channels": ["sms", "email"], "channel_mode": "all"}}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ helpers


@dataclass
class Town:
    """Who is registered where, and at which addresses."""

    owner: dict[tuple[str, str], str] = field(default_factory=dict)
    """(channel, address) → subscriber id."""
    area: dict[str, str] = field(default_factory=dict)
    """subscriber id → village code."""


async def populate(redis: Redis, registry: AreaRegistry, empty: str) -> Town:
    """Eight subscribers in each township of 曹县 but ``empty``; every fourth has
    SMS and email, every fourth email only, the rest SMS only."""
    townships = [a.code for a in registry.children(COUNTY) if a.code != empty]
    ids: list[str] = []
    for n, code in enumerate(townships):
        ids += await add_subscribers(
            redis,
            registry,
            8,
            prefix=code,
            start=n * 100,
            endpoints=lambda i: (
                {"sms": f"+86139{i:08d}", "email": f"u{i}@example.cn"}
                if i % 4 == 0
                else {"email": f"u{i}@example.cn"}
                if i % 4 == 1
                else {"sms": f"+86139{i:08d}"}
            ),
        )
    town = Town()
    for sid, sub in (await SubscriberStore(redis, Keys()).get_many(ids)).items():
        town.area[sid] = sub.area
        if sub.sms:
            town.owner[("sms", sub.sms)] = sid
        if sub.email:
            town.owner[("email", sub.email)] = sid
    return town


async def all_deliveries(client: Client, token: str, aid: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    url: str | None = f"/v1/alerts/{aid}/deliveries?limit=1000"
    while url:
        resp = await client.get(url, headers=auth(token))
        doc = await resp.json()
        assert resp.status == 200, doc
        items += doc["items"]
        url = doc["next"]
    return items


async def coverage(client: Client, token: str, aid: str, **query: str) -> CoverageReport:
    resp = await client.get(f"/v1/alerts/{aid}/coverage", params=query, headers=auth(token))
    text = await resp.text()
    assert resp.status == 200, text
    return CoverageReport.model_validate_json(text)


def expected(items: list[dict[str, Any]], town: Town, prefix: str) -> dict[str, Any]:
    """What the records say about the area ``prefix`` (everything when empty)."""
    mine = [i for i in items if i["area"].startswith(prefix)]
    subs = {town.owner[(i["channel"], i["address"])] for i in mine}
    reached = {
        town.owner[(i["channel"], i["address"])]
        for i in mine
        if i["state"] in REACHED[i["channel"]]
    }
    channels: dict[str, dict[str, int]] = {}
    for i in mine:
        row = channels.setdefault(i["channel"], {})
        row[i["state"]] = row.get(i["state"], 0) + 1
    return {
        "targeted": len(subs),
        "reached": len(reached),
        "endpoints": len(mine),
        "channels": channels,
    }


def observed(row: Any) -> dict[str, Any]:
    states = ("queued", "sending", "sent", "delivered", "failed")
    states += ("expired", "cancelled", "acknowledged", "uncertain")
    return {
        "targeted": row.subscribers_targeted,
        "reached": row.subscribers_reached,
        "endpoints": row.endpoints_targeted,
        "channels": {
            c.channel: {s: getattr(c, s) for s in states if getattr(c, s)} for c in row.channels
        },
    }


def check_against_records(
    report: CoverageReport, items: list[dict[str, Any]], town: Town, threshold: float = 0.9
) -> None:
    """Every row of the report equals what the delivery records say; flags follow."""
    assert observed(report.totals) == expected(items, town, "")
    registered = set(town.area.values())
    for row in report.areas:
        want = expected(items, town, row.code)
        assert observed(row) == want, row.code
        for c in row.channels:
            assert c.targeted == sum(want["channels"][c.channel].values())
            assert c.pending == c.queued + c.sending
            assert c.reached == sum(getattr(c, s) for s in REACHED[c.channel])
        rate = want["reached"] / want["targeted"] if want["targeted"] else None
        assert row.reach_rate == (None if rate is None else pytest.approx(rate))
        flags = set()
        if not any(v.startswith(row.code) for v in registered):
            flags.add("no_subscribers")
        if want["targeted"] and not want["reached"]:
            flags.add("unreached")
        elif rate is not None and rate < threshold:
            flags.add("partially_reached")
        assert set(row.flags) == flags, row.code
        if want["reached"]:
            t = row.reach_times
            assert t is not None and t.max is not None and t.p50 is not None
            assert 0 <= t.p50 <= t.p90 <= t.p99 <= t.max  # type: ignore[operator]
        else:
            assert row.reach_times is None


# ------------------------------------------------------------------ the report


async def test_coverage_agrees_with_the_delivery_records_live_and_final(
    redis: Redis, heze: AreaRegistry, app_for: Callable[..., Any], tmp_path: Path
) -> None:
    empty = heze.children(COUNTY)[0].code  # nobody registered in this township
    town = await populate(redis, heze, empty)
    by_area: dict[str, list[str]] = {}
    for sid, code in town.area.items():
        by_area.setdefault(code, []).append(sid)
    dark = sorted(by_area)[0]  # every endpoint of this village fails
    fail = {a for (_, a), sid in town.owner.items() if town.area[sid] == dark}
    sms = sorted(a for (ch, a), sid in town.owner.items() if ch == "sms" and a not in fail)
    emails = sorted(a for (ch, a) in town.owner if ch == "email" and a not in fail)
    fail |= set(sms[::9]) | set(emails[::5])
    retry = [a for a in sms if a not in fail][:3]  # queued for an hour: pending
    secret = tmp_path / "receipt-secret"
    secret.write_text("s3cret")
    client, token = await app_for(
        groups=GROUPS,
        channels={
            "sms": {
                **SANDBOX,
                "batch_size": 20,
                "fail_addresses": sorted(fail),
                "retry_addresses": retry,
                "retry_after": 3600,
                "receipts": "delivered",  # receipts arrive only when the test posts them
                "receipt_delay": 3600,
                "receipt_secret_file": str(secret),
            },
            "email": {**SANDBOX, "batch_size": 20, "fail_addresses": sorted(fail)},
        },
    )
    aid = await submit(client, token, alert_body(COUNTY))
    total = sum(1 for _ in town.owner)

    async def settled() -> bool:
        doc = await (await client.get(f"/v1/alerts/{aid}/deliveries?limit=1", **_h(token))).json()
        c = doc["counts"]
        return (
            doc["plan"].get("status") == "planned"
            and c.get("queued", 0) == len(retry)
            and not c.get("sending")
            and sum(c.values()) == total
        )

    await wait_for(settled, "everything but the retried SMS sent or failed")
    items = await all_deliveries(client, token, aid)
    sent_sms = [i for i in items if i["channel"] == "sms" and i["state"] == "sent"]
    receipts = [{"delivery_id": i["id"], "state": "delivered"} for i in sent_sms[::2]]
    receipts.append({"delivery_id": sent_sms[1]["id"], "state": "acknowledged"})
    resp = await client.post("/v1/receipts/sms?secret=s3cret", json={"receipts": receipts})
    assert resp.status == 200, await resp.text()

    # Live: the retried SMS are still queued.
    live = await coverage(client, token, aid)
    items = await all_deliveries(client, token, aid)
    assert not live.final and live.status == "planned"
    assert sum(c.pending for c in live.totals.channels) == len(retry)
    check_against_records(live, items, town)
    assert {r.code for r in live.areas} == {a.code for a in heze.with_prefix(COUNTY)}
    assert [r.code for r in live.areas] == sorted(r.code for r in live.areas)
    assert live.areas[0].code == COUNTY and live.areas[0].level == "county"
    rows = {r.code: r for r in live.areas}
    assert "no_subscribers" in rows[empty].flags and rows[empty].subscribers_targeted == 0
    assert all("no_subscribers" in r.flags for c, r in rows.items() if c.startswith(empty))
    assert "unreached" in rows[dark].flags
    assert rows[COUNTY].subscribers_targeted == len(town.area) == live.totals.subscribers_targeted
    # Rollup: a township is the sum of its villages, the county of its townships.
    for t in heze.children(COUNTY):
        below = [rows[v.code] for v in heze.children(t.code)]
        assert rows[t.code].subscribers_reached == sum(v.subscribers_reached for v in below)
        assert rows[t.code].endpoints_targeted == sum(v.endpoints_targeted for v in below)
    assert {c.channel: c.receipts for c in live.totals.channels} == {"sms": True, "email": False}
    assert "email" in live.reached_rule and "sent" in live.reached_rule
    assert live.totals.reach_times is not None and live.totals.reach_times.max is not None

    # Levels.
    towns = await coverage(client, token, aid, level="township")
    assert {r.level for r in towns.areas} == {"township"}
    assert len(towns.areas) == len(heze.children(COUNTY))

    # The Cancel stops the retried SMS: the report becomes final.
    cancel = await submit(client, token, {"note": "降雨减弱"}, f"/v1/alerts/{aid}/cancel")

    async def final() -> bool:
        return (await coverage(client, token, aid)).final and (
            await coverage(client, token, cancel)
        ).final

    await wait_for(final, "alert and cancel final")
    report = await coverage(client, token, aid)
    items = await all_deliveries(client, token, aid)
    check_against_records(report, items, town)
    assert sum(c.cancelled for c in report.totals.channels) == len(retry)
    assert report.state == "cancelled"

    # The Cancel (解除) went to everyone reached; its report agrees with its records too.
    lifted = await coverage(client, token, cancel)
    lifted_items = await all_deliveries(client, token, cancel)
    assert lifted_items and all(i["kind"] == "notice" for i in lifted_items)
    check_against_records(lifted, lifted_items, town)

    # The chain as one event: the sum of its messages, area by area.
    chain = await coverage(client, token, aid, chain="true")
    assert chain.chain == [aid, cancel]
    assert observed(chain.totals) == _sum(observed(report.totals), observed(lifted.totals))
    one = {r.code: r for r in report.areas}
    two = {r.code: r for r in lifted.areas}
    for row in chain.areas:
        parts = [observed(x[row.code]) for x in (one, two) if row.code in x]
        assert observed(row) == _sum(*parts), row.code
    assert (await coverage(client, token, cancel, chain="true")).chain == [aid, cancel]

    # CSV, HTML and text say the same.
    resp = await client.get(f"/v1/alerts/{aid}/coverage?format=csv", headers=auth(token))
    assert resp.status == 200 and resp.content_type == "text/csv"
    table = list(csv.DictReader(io.StringIO((await resp.text()).lstrip("\ufeff"))))
    assert len(table) == 1 + len(report.areas)
    assert table[0]["code"] == COUNTY and table[0]["subscribers_reached"] == str(
        report.totals.subscribers_reached
    )
    by_code = {r["code"]: r for r in table[1:]}
    assert by_code[dark]["flags"] == "unreached"
    assert int(by_code[COUNTY]["sms_cancelled"]) == len(retry)
    resp = await client.get(f"/v1/alerts/{aid}/coverage?format=html", headers=auth(token))
    page = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "<script" not in page and "曹县" in page and "无订阅者" in page and "未覆盖" in page
    text = to_text(report)
    assert "曹县 371721" in text and "FINAL" in text and "无订阅者" in text

    # The command line prints the same report from the same store.
    cfg = daemon_config(tmp_path, "cli", _url(redis))
    out = await asyncio.to_thread(_warnd, cfg, "report", aid, "--format", "json")
    assert CoverageReport.model_validate_json(out).totals == report.totals
    out = await asyncio.to_thread(_warnd, cfg, "report", aid, "--level", "county")
    assert "曹县" in out and "TOTAL" in out and "reached" in out
    out = await asyncio.to_thread(_warnd, cfg, "report", aid, "--format", "csv", "--chain")
    assert out.splitlines()[0].startswith("code,name,level")
    bad = await asyncio.to_thread(_warnd, cfg, "report", "a" * 16, check=False)
    assert "no alert" in bad


def _h(token: str) -> dict[str, Any]:
    return {"headers": auth(token)}


def _sum(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"targeted": 0, "reached": 0, "endpoints": 0, "channels": {}}
    for p in parts:
        for k in ("targeted", "reached", "endpoints"):
            out[k] += p[k]
        for ch, states in p["channels"].items():
            row = out["channels"].setdefault(ch, {})
            for s, n in states.items():
                row[s] = row.get(s, 0) + n
    return out


def _url(redis: Redis) -> str:
    kw = redis.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def _warnd(config: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "warnd", *args, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    assert proc.returncode == 2
    return proc.stderr


# ------------------------------------------------------------------ statistics


async def test_summary_of_a_period_by_hazard_level_area_issuer_and_channel(
    redis: Redis, heze: AreaRegistry, app_for: Callable[..., Any]
) -> None:
    await add_subscribers(redis, heze, 30, prefix="371721")
    await add_subscribers(redis, heze, 20, prefix="371722", start=1000)
    client, token = await app_for(
        channels={"sms": {**SANDBOX, "fail_addresses": ["+8613900000003"]}}
    )
    red = await submit(client, token, alert_body("371721"))
    blue = await submit(
        client, token, alert_body("371722", level="blue", hazard="gale", identifier="b-1")
    )

    async def done() -> bool:
        return all([(await coverage(client, token, a)).final for a in (red, blue)])

    await wait_for(done, "both alerts final")
    reports = [await coverage(client, token, a) for a in (red, blue)]
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()  # [render] timezone
    resp = await client.get(
        "/v1/reports/summary", params={"from": "2000-01-01", "to": "2100-01-01"}, **_h(token)
    )
    doc = await resp.json()
    assert resp.status == 200, doc
    assert doc["alerts"] == 2
    assert {c["key"]: c["alerts"] for c in doc["by_hazard"]} == {"rainstorm": 1, "gale": 1}
    assert {c["key"]: c["alerts"] for c in doc["by_level"]} == {"red": 1, "blue": 1}
    assert {c["key"]: (c["name"], c["alerts"]) for c in doc["by_area"]} == {
        "371721": ("曹县", 1),
        "371722": ("单县", 1),
    }
    assert [c["alerts"] for c in doc["by_issuer"]] == [2]
    (sms,) = doc["channels"]
    assert sms["deliveries"] == 50 and sms["failed"] == 1 and sms["sent"] == 49
    assert sms["reached"] == 49 and sms["reach_rate"] == pytest.approx(49 / 50)
    assert doc["subscribers_targeted"] == sum(r.totals.subscribers_targeted for r in reports)
    assert doc["subscribers_reached"] == 49
    assert doc["median_time_to_reach"] is not None and doc["median_time_to_reach"] >= 0
    # Nothing in another period; the same as CSV.
    resp = await client.get(
        "/v1/reports/summary", params={"from": "2001-01-01", "to": "2001-12-31"}, **_h(token)
    )
    assert (await resp.json())["alerts"] == 0
    resp = await client.get(
        "/v1/reports/summary",
        params={"from": "2000-01-01", "to": today, "format": "csv"},
        **_h(token),
    )
    rows = list(csv.reader(io.StringIO((await resp.text()).lstrip("\ufeff"))))
    assert rows[0] == ["section", "key", "name", "metric", "value"]
    assert ["hazard", "gale", "", "alerts", "1"] in rows
    assert ["channel", "sms", "", "deliveries", "50"] in rows


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/v1/alerts/aaaaaaaaaaaaaaaa/coverage", 404, "no alert"),
        ("/v1/alerts/{id}/coverage?level=city", 400, "level"),
        ("/v1/alerts/{id}/coverage?format=xml", 400, "format"),
        ("/v1/alerts/{id}/coverage?chain=perhaps", 400, "chain"),
        ("/v1/reports/summary?from=yesterday", 400, "from"),
        ("/v1/reports/summary?from=2025-02-30", 400, "from"),
        ("/v1/reports/summary?from=2025-07-02&to=2025-07-01", 400, "after"),
        ("/v1/reports/summary?format=html", 400, "format"),
    ],
)
async def test_bad_parameters_are_problems(
    redis: Redis, heze: AreaRegistry, app_for: Callable[..., Any], path: str, status: int, says: str
) -> None:
    client, token = await app_for(channels={"sms": dict(SANDBOX)})
    aid = await submit(client, token, alert_body(COUNTY))
    resp = await client.get(path.replace("{id}", aid), **_h(token))
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    assert says in (await resp.json())["detail"]
    assert (await client.get(path.replace("{id}", aid))).status == 401


async def test_routes_are_in_the_openapi_document(app_for: Callable[..., Any]) -> None:
    client, _ = await app_for(channels={"sms": dict(SANDBOX)})
    doc = await (await client.get("/v1/openapi.json")).json()
    op = doc["paths"]["/v1/alerts/{id}/coverage"]["get"]
    assert {p["name"] for p in op["parameters"]} >= {"format", "level", "chain"}
    assert "CoverageReport" in doc["components"]["schemas"]
    assert "/v1/reports/summary" in doc["paths"]


def test_time_to_reach_percentiles_interpolate_within_log_buckets() -> None:
    # 100 subscribers reached in the bucket [1600, 1903) ms, one at 60 s.
    b = 17
    lo, hi = bucket_bounds(b)
    assert (lo, hi) == pytest.approx((1600.0, 1600 * 2**0.25))
    hist = {b: 100, 40: 1}
    p50 = percentile_ms(hist, 0.5, 60_000)
    assert p50 is not None and lo < p50 < hi
    assert percentile_ms(hist, 1.0, 60_000) == 60_000  # never above the exact max
    assert percentile_ms({}, 0.5) is None
    assert percentile_ms({0: 4}, 0.5, 80) == pytest.approx(50.0)
