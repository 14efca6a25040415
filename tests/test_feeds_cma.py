"""Chinese met-warning feeds (weather.com.cn JSON and XML, and a mapped
JSON feed) against a real local upstream serving the real snapshots."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from feedkit import CMA, StartWarnd, Upstream, hub, poll
from redis.asyncio import Redis

from warnd.feeds.cma import split_guide
from warnd.identifiers import alert_id
from warnd.keys import Keys
from warnd.model import MsgType
from warnd.store import AlertState, AlertStore
from warnd.taxonomy import Taxonomy

REPO = Path(__file__).resolve().parents[1]
JSON_SNAPSHOT = CMA / "weathercomcn-alarminfo-20190428.json"
XML_SNAPSHOT = CMA / "weathercomcn-alarminfo-20190309.xml"
SENDER = "alarm.weather.com.cn"
# 贵阳市 (areaId 1012601), 暴雨 (02) 蓝色 (01), issued 2019-04-28 06:00:00.
GUIYANG_RAIN = "1012601-0201-20190428060000"


def met(url: str, kind: str = "cma-json", **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "url": url, "sender": SENDER, "timeout": 2} | kw


def snapshot() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(JSON_SNAPSHOT.read_bytes())
    return data


def stations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for v in doc["AlermInfo"].values() if isinstance(v, dict) for s in v["Station"]]


def guiyang_rain(doc: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in doc["AlermInfo"]["RainStorm"]["Station"] if s["areaId"] == "1012601")


async def test_weathercomcn_json_feed_every_signal_recorded_expired_not_disseminated(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    url = upstream.serve("alarminfo.json", JSON_SNAPSHOT, content_type="application/json")
    client = await start_warnd({"wc": met(url, area_codes={"1012601": "520100"})})
    result = await poll(client, "wc")
    assert (result.accepted, result.rejected) == (89, 0)

    rec = await AlertStore(redis, Keys()).get(alert_id(SENDER, GUIYANG_RAIN))
    assert rec is not None
    assert (rec.hazard, rec.level and rec.level.value, rec.source) == (
        "rainstorm",
        "blue",
        "feed:wc",
    )
    assert rec.areas == ["520100"] and rec.area_names == ["贵阳市"]
    assert rec.sent.isoformat() == "2019-04-28T06:00:00+08:00"
    assert rec.expires is not None and rec.expires.isoformat() == "2019-04-29T06:00:00+08:00"
    assert rec.effective_state() is AlertState.EXPIRED
    assert "already expired when received: recorded, not disseminated" in rec.warnings
    info = rec.alert.infos[0]
    assert info.event == "暴雨蓝色预警" and info.headline == "贵阳市发布暴雨蓝色预警信号"
    assert [(c.value_name, c.value) for c in info.event_codes] == [("CMA", "0201")]

    # 太原市 road icing carries 防御指南: it becomes the CAP instruction.
    icing = await AlertStore(redis, Keys()).get(alert_id(SENDER, "1011001-1402-20190427103438"))
    assert icing is not None
    text = icing.alert.infos[0]
    assert text.instruction is not None and text.instruction.startswith("1.交通、公安等部门")
    assert "防御指南" not in (text.description or "")
    assert (text.description or "").endswith("（预警信息来源：国家预警信息发布中心）")
    assert "预警信息来源" not in text.instruction

    # Categories beyond the 14 national signals map through their names.
    hazards = {
        r.hazard
        for r in await AlertStore(redis, Keys()).get_many(
            [
                alert_id(SENDER, "1010605-9402-20190427154100"),
                alert_id(SENDER, "1012903-5902-20190428065849"),
                alert_id(SENDER, "101281801-9302-20190427135200"),
            ]
        )
    }
    assert hazards == {"forest_fire", "severe_convection", "thunderstorm_gale"}

    again = await poll(client, "wc")
    assert again.outcome in ("not_modified", "unchanged")
    assert await redis.zcard(Keys().alerts_by_time) == 89


async def test_weathercomcn_xml_feed(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    url = upstream.serve("alarminfo.xml", XML_SNAPSHOT)
    client = await start_warnd({"wcx": met(url, kind="cma-xml")})
    result = await poll(client, "wcx")
    assert (result.accepted, result.rejected) == (31, 0)
    rec = await AlertStore(redis, Keys()).get(alert_id(SENDER, "1012718-1402-20190309154100"))
    assert rec is not None and rec.alert.infos[0].instruction == (
        "1.交通、公安等部门做好道路积雪结冰应对工作；2.驾驶人员注意路况，安全行驶。"
    )


async def test_same_signals_on_two_feeds_and_after_a_restart_dedupe(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    a = upstream.serve("a.json", JSON_SNAPSHOT, content_type="application/json")
    b = upstream.serve("b.json", JSON_SNAPSHOT, gzip=True, etag=False)
    first = await start_warnd({"a": met(a), "b": met(b)})
    assert (await poll(first, "a")).accepted == 89
    on_b = await poll(first, "b")
    assert (on_b.accepted, on_b.duplicates) == (0, 89)
    await first.close()

    # A restart with the validators and digests forgotten (say, a config
    # change): the snapshot is read again and nothing is recorded twice.
    await redis.delete(Keys().feed_state("a"))
    second = await start_warnd({"a": met(a), "b": met(b)})
    again = await poll(second, "a")
    assert (again.accepted, again.duplicates) == (0, 89)
    assert await redis.zcard(Keys().alerts_by_time) == 89


async def test_relieve_item_cancels_exactly_the_warning_it_ends(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    doc = snapshot()
    url = upstream.serve("alarminfo.json", json.dumps(doc).encode())
    client = await start_warnd({"wc": met(url)})
    await poll(client, "wc")

    # Three hours later 贵阳市 lifts its blue rainstorm signal: the feed now
    # lists a 解除 item for that station and signal in place of the warning.
    later = copy.deepcopy(doc)
    item = guiyang_rain(later)
    item["issueTime"] = "20190428090000"
    item["relieveTime"] = ""
    item["issueContent"] = (
        "贵阳市气象台4月28日9时0分解除暴雨蓝色预警信号。（预警信息来源：国家预警信息发布中心）"
    )
    upstream.serve("alarminfo.json", json.dumps(later).encode())
    result = await poll(client, "wc")
    assert (result.accepted, result.rejected) == (1, 0)

    store = AlertStore(redis, Keys())
    cancel = await store.get(alert_id(SENDER, "1012601-0201-20190428090000-relieve"))
    assert cancel is not None and cancel.msg_type is MsgType.CANCEL
    ref = cancel.alert.references[0]
    assert (ref.sender, ref.identifier) == (SENDER, GUIYANG_RAIN)
    assert ref.sent.isoformat() == "2019-04-28T06:00:00+08:00"
    warning = await store.get(alert_id(SENDER, GUIYANG_RAIN))
    assert warning is not None and warning.state is AlertState.CANCELLED
    assert warning.cancelled_by == cancel.id

    # Listed again on later polls: still one Cancel, no quarantine.
    upstream.serve("alarminfo.json", json.dumps(later).encode(), etag=False)
    await redis.hdel(Keys().feed_state("wc"), "body_sha256")
    again = await poll(client, "wc")
    assert (again.accepted, again.rejected) == (0, 0)


async def test_relieve_of_an_unknown_signal_is_quarantined(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    doc = snapshot()
    item = guiyang_rain(doc)
    item["issueContent"] = "贵阳市气象台解除暴雨蓝色预警信号。"
    url = upstream.serve("alarminfo.json", json.dumps(doc).encode())
    client = await start_warnd({"wc": met(url)})
    result = await poll(client, "wc")
    assert (result.accepted, result.rejected) == (88, 1)
    rejects, _ = await hub(client).ingests["wc"].state.rejects()
    assert "解除" in rejects[0].reason and "贵阳市" in rejects[0].reason


async def test_new_level_for_the_same_station_updates_the_signal_in_force(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    doc = snapshot()
    url = upstream.serve("alarminfo.json", json.dumps(doc).encode())
    client = await start_warnd({"wc": met(url)})
    await poll(client, "wc")
    later = copy.deepcopy(doc)
    item = guiyang_rain(later)
    item.update(signalLevel="黄色", issueTime="20190428080000", relieveTime="20190429080000")
    upstream.serve("alarminfo.json", json.dumps(later).encode())
    assert (await poll(client, "wc")).accepted == 1
    store = AlertStore(redis, Keys())
    upgrade = await store.get(alert_id(SENDER, "1012601-0202-20190428080000"))
    assert upgrade is not None and upgrade.msg_type is MsgType.UPDATE
    assert upgrade.references == [alert_id(SENDER, GUIYANG_RAIN)]
    first = await store.get(alert_id(SENDER, GUIYANG_RAIN))
    assert first is not None and first.state is AlertState.SUPERSEDED


async def test_unknown_codes_are_quarantined_and_the_rest_processed(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    doc = snapshot()
    bad = stations(doc)[:3]
    bad[0]["signalType"] = "火山"
    bad[1]["signalLevel"] = "紫色"
    bad[2]["issueTime"] = "yesterday"
    url = upstream.serve("alarminfo.json", json.dumps(doc).encode())
    client = await start_warnd({"wc": met(url)})
    result = await poll(client, "wc")
    assert (result.accepted, result.rejected) == (86, 3)
    rejects, total = await hub(client).ingests["wc"].state.rejects()
    reasons = " | ".join(r.reason for r in rejects)
    assert total == 3
    assert "unknown signal type '火山'" in reasons
    assert "unknown signal level '紫色'" in reasons
    assert "issue time 'yesterday' is not a time" in reasons


async def test_html_in_place_of_the_json_feed_is_a_failure_and_quarantined(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    from feedkit import CAP

    url = upstream.serve(
        "alarminfo.json",
        CAP / "invalid" / "tw-html-404-page-saved-as-cap.xml",
        content_type="text/html",
    )
    client = await start_warnd({"wc": met(url)})
    result = await poll(client, "wc")
    assert result.outcome == "failed" and "HTML page" in (result.error or "")
    health = await hub(client).health("wc")
    assert health["consecutive_failures"] == 1 and health["rejected"] == 1


async def test_another_json_feed_is_added_by_mapping_alone(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis, taxonomy: Taxonomy
) -> None:
    # The same real signals in another provider's shape: codes instead of
    # names, its own ids, an administrative code, ISO-like times.
    records = []
    for s in stations(snapshot())[:20]:
        hazard = taxonomy.match_event(s["signalType"])
        assert hazard is not None and hazard.cma_code is not None
        level = {"蓝色": "01", "黄色": "02", "橙色": "03", "红色": "04"}[s["signalLevel"]]
        t = s["issueTime"]
        records.append(
            {
                "alertId": f"SD-{s['stationId']}-{t}",
                "where": {"name": s["stationName"], "adcode": "520100"},
                "code": hazard.cma_code + level,
                "published": f"{t[:4]}-{t[4:6]}-{t[6:8]} {t[8:10]}:{t[10:12]}:{t[12:]}",
                "text": s["issueContent"],
            }
        )
    body = json.dumps({"status": 0, "data": {"warnings": records}}).encode()
    url = upstream.serve("other.json", body, content_type="application/json")
    mapping = {
        "items": "data.warnings",
        "id": "alertId",
        "station": "where.name",
        "area_id": None,
        "area_code": "where.adcode",
        "signal_type": "type",
        "signal_level": "level",
        "alarm_code": "code",
        "issue_time": "published",
        "expire_time": None,
        "content": "text",
    }
    client = await start_warnd({"sd": met(url, sender="sd.example.cn", mapping=mapping)})
    result = await poll(client, "sd")
    assert (result.accepted, result.rejected) == (20, 0)
    first = records[0]
    rec = await AlertStore(redis, Keys()).get(alert_id("sd.example.cn", first["alertId"]))
    assert rec is not None and rec.areas == ["520100"]
    assert rec.hazard == taxonomy.by_cma_code(first["code"][:2]).code
    assert rec.expires is None


def test_defence_guide_splits_off_as_instruction() -> None:
    text = (
        "预计未来12小时有大风。防御指南：1.做好防风准备；2.注意安全。"
        "（预警信息来源：国家预警信息发布中心）"
    )
    assert split_guide(text) == (
        "预计未来12小时有大风。（预警信息来源：国家预警信息发布中心）",
        "1.做好防风准备；2.注意安全。",
    )
    assert split_guide("没有指南。") == ("没有指南。", None)
