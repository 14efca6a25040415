"""The bulk read path of planning: records in columns, the same deliveries as one by one."""

from __future__ import annotations

from typing import Any

import pytest
from areas_data import full_registry
from redis.asyncio import Redis
from subscribers_data import alert, geocode, group_table

from warnd.areas import AreaRegistry
from warnd.dispatch.lanes import Lanes
from warnd.dispatch.planner import PlanWriter
from warnd.dispatch.store import DeliveryStore
from warnd.keys import Keys
from warnd.match import Matcher
from warnd.subscribers import Subscriber, SubscriberContext, SubscriberStore

PHONE = "+8613800138000"


@pytest.fixture(scope="module")
def registry(redis_server: str) -> AreaRegistry:
    return full_registry(redis_server)


@pytest.fixture
async def matcher(redis: Redis, registry: AreaRegistry) -> Matcher:
    m = Matcher(SubscriberStore(redis, Keys()), registry, group_table())
    await m.load()
    return m


async def put(m: Matcher, *rows: dict[str, Any]) -> None:
    ctx = SubscriberContext(registry=m.registry, groups=m.groups)
    subs = [Subscriber.model_validate(row, context=ctx) for row in rows]
    await m.store.upsert_many(subs)


async def test_rows_many_is_aligned_and_decodes_any_text(matcher: Matcher) -> None:
    await put(
        matcher,
        {"id": "a", "name": '引号"和\\反斜杠', "area": "371721101", "endpoints": {"sms": PHONE}},
        {"id": "b", "area": "371721101", "language": "en", "endpoints": {"email": "x@y.cn"}},
    )
    rows = await matcher.store.rows_many(["b", "missing", "a", "b"])
    assert rows[1] is None
    assert rows[0] is not None and rows[0][5] == "en" and rows[0][8] == "x@y.cn"
    assert rows[2] is not None and rows[2][1] == '引号"和\\反斜杠' and rows[2][7] == PHONE
    assert rows[3] == rows[0]
    assert await matcher.store.rows_many([]) == []


async def test_endpoint_columns_give_the_same_deliveries(matcher: Matcher) -> None:
    rows: list[dict[str, Any]] = [
        # village_officers: sms then wechat, first available.
        {"id": f"o{i}", "area": "371721101", "groups": ["village_officers"],
         "endpoints": {"sms": f"+86138{i:08d}"}}
        for i in range(40)
    ]  # fmt: skip
    rows += [
        {
            "id": "wechat-only",
            "area": "371721101",
            "groups": ["village_officers"],
            "endpoints": {"wechat": "cao-robot"},
        },
        # duty_caoxian: every listed channel it has.
        {
            "id": "duty",
            "area": "371721101",
            "groups": ["duty_caoxian"],
            "language": "en",
            "endpoints": {"sms": PHONE, "email": "d@b.cn", "board": "b-9"},
        },
        {
            "id": "board-officer",
            "area": "371721101",
            "groups": ["village_officers"],
            "endpoints": {"board": "b-7"},
        },
        {"id": "gone", "area": "371721101", "endpoints": {"sms": "+8613900000001"}},
        {"id": "moved-number", "area": "371721101", "endpoints": {"sms": "+8613900000002"}},
    ]
    await put(matcher, *rows)
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    # After the match: one deleted, one with a new number, one that lost its email.
    await matcher.store.delete_many(["gone"])
    await put(
        matcher,
        {"id": "moved-number", "area": "371721101", "endpoints": {"sms": "+8613900000003"}},
        {
            "id": "duty",
            "area": "371721101",
            "groups": ["duty_caoxian"],
            "language": "en",
            "endpoints": {"sms": PHONE, "board": "b-9"},
        },
    )
    one_by_one = sorted(
        (d.subscriber_id, d.channel.value, d.address, d.language, d.info, d.group)
        for batch in [b async for b in a.deliveries(matcher.store, batch=7)]
        for d in batch
    )
    columns = []
    async for cols in a.endpoint_columns(matcher.store, batch=7, start=0):
        for col in cols:
            assert len(col.at) == len(col) == len(col.subscriber_ids) == len(col.languages)
            for at, sid, address, lang in zip(
                col.at.tolist(), col.subscriber_ids, col.addresses, col.languages, strict=True
            ):
                assert a.ids_of(at, at + 1) == [sid]
                group = a.group_keys[int(a.groups[at])]
                columns.append((sid, col.channel.value, address, lang, int(a.infos[at]), group))
    assert sorted(columns) == one_by_one
    got = {(sid, ch, addr) for sid, ch, addr, *_ in columns}
    assert ("moved-number", "sms", "+8613900000003") in got
    assert not any(sid == "gone" for sid, *_ in got)
    assert ("duty", "email", "d@b.cn") not in got and ("duty", "sms", PHONE) in got
    assert len(columns) == 40 + 1 + 1 + 1  # officers, wechat-only, duty's sms, moved-number


async def test_endpoint_columns_span(matcher: Matcher) -> None:
    await put(
        matcher,
        *(
            {"id": f"s{i}", "area": "371721101", "endpoints": {"sms": f"+86138{i:08d}"}}
            for i in range(30)
        ),
    )
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    seen = [
        at
        async for cols in a.endpoint_columns(matcher.store, batch=4, start=5, stop=17)
        for col in cols
        for at in col.at.tolist()
    ]
    assert seen == list(range(5, 17))


async def test_add_many_plans_each_endpoint_once(redis: Redis) -> None:
    store = DeliveryStore(redis, Keys())
    lanes = Lanes(redis, Keys(), "test-consumer")
    writer = PlanWriter(store, lanes, "alert1", "hi", {})
    await store.start_plan("alert1", {"status": "planning", "prio": "hi"})
    added = await writer.add_many("sms", 0, ["a", "b", "a", "c"], ["371721", "371721", "x", "y"])
    assert added == 3
    assert await writer.add("sms", 0, "b", "371721") is False
    assert await writer.add_many("sms", 0, ["b", "d"], ["371721", "371722"]) == 1
    assert await writer.add_many("email", 0, ["b"], ["371721"]) == 1  # another channel
    await writer.finish()
    got = await store.batches("alert1", [0, 1])
    addresses = sorted(a for b in got.values() for a in b.addresses)
    assert addresses == ["a", "b", "b", "c", "d"]
    assert sorted(await store.areas_of(got[0])) == sorted(
        {"sms": ["371721", "371721", "y", "371722"], "email": ["371721"]}[got[0].channel]
    )
