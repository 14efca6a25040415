"""The bulk read path of planning: records in columns, the same deliveries as one by one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import numpy as np
import pytest
from areas_data import full_registry
from redis.asyncio import Redis
from subscribers_data import alert, geocode, group_table

from warnd.areas import AreaRegistry
from warnd.dispatch.lanes import Lanes
from warnd.dispatch.planner import PlanWriter
from warnd.dispatch.states import DeliveryState
from warnd.dispatch.store import NOSUB, BatchRecord, DeliveryStore, JoinedAddresses, pack_numbers
from warnd.groups import CHANNELS, ChannelName
from warnd.keys import Keys
from warnd.match import EndpointColumns, FirstEndpoints, Matcher
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
    for cols in a.endpoint_columns(batch=7, start=0):
        for col in cols:
            assert len(col.at) == len(col) == len(col.subscriber_ids) == len(col.languages)
            for at, sid, address, lang in zip(
                col.at.tolist(), col.subscriber_ids, col.addresses, col.languages, strict=True
            ):
                assert a.ids_of(at, at + 1) == [sid]
                group = a.group_keys[int(a.groups[at])]
                columns.append((sid, col.channel.value, address, lang, int(a.infos[at]), group))
            assert [col.language(i) for i in range(len(col))] == col.languages
    assert sorted(columns) == one_by_one
    # Without ids (a plan with no acknowledging group): the same columns, no id column.
    bare = [col for cols in a.endpoint_columns(batch=7, ids=False) for col in cols]
    assert sum(map(len, bare)) == len(columns) and all(col.ids is None for col in bare)
    with pytest.raises(ValueError, match="without subscriber ids"):
        _ = bare[0].subscriber_ids
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
        for cols in a.endpoint_columns(batch=4, start=5, stop=17)
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
    # Packed addresses without ``first``: made text, checked against the set.
    packed = np.array([b"a", b"e"], dtype="S16")
    assert await writer.add_many("sms", 0, packed, ["371721", "371722"]) == 1
    await writer.finish()
    got = await store.batches("alert1", [0, 1])
    addresses = sorted(a for b in got.values() for a in b.addresses)
    assert addresses == ["a", "b", "b", "c", "d", "e"]
    assert sorted(await store.areas_of(got[0])) == sorted(
        {"sms": ["371721", "371721", "y", "371722", "371722"], "email": ["371721"]}[got[0].channel]
    )


def test_joined_addresses_mix_text_and_packed_parts() -> None:
    packed = np.array([b"+8613800000001", "张@x.cn".encode()], dtype="S16")
    joined = JoinedAddresses.of(["a", "b"], packed[:0], packed)
    assert joined.body == "a\nb\n+8613800000001\n张@x.cn".encode()
    assert joined.count == 4
    assert joined.text() == ["a", "b", "+8613800000001", "张@x.cn"]
    record = BatchRecord.encode("sms", 2, joined, priority="hi")
    assert record == BatchRecord.encode("sms", 2, joined.text(), priority="hi")
    assert BatchRecord.decode("x", 0, 0, record.decode(), "").addresses == joined.text()
    # A line break in an address: the whole-JSON form, every address kept.
    odd = JoinedAddresses.of(["a\nb"], packed)
    back = BatchRecord.decode(
        "x", 0, 0, BatchRecord.encode("sms", 0, odd, priority="lo").decode(), ""
    )
    assert back.addresses == ["a\nb", "+8613800000001", "张@x.cn"]
    empty = BatchRecord.decode(
        "x", 0, 0, BatchRecord.encode("sms", 0, [], priority="lo").decode(), ""
    )
    assert empty.addresses == []


async def test_add_many_writes_packed_addresses_as_they_are(redis: Redis) -> None:
    """Deduplicated by the caller (``first``), packed addresses go into the
    batches without being made text, after and beside text ones."""
    store = DeliveryStore(redis, Keys())
    writer = PlanWriter(store, Lanes(redis, Keys(), "test-consumer"), "alert2", "hi", {})
    await store.start_plan("alert2", {"status": "planning", "prio": "hi"})
    assert await writer.add_many("sms", 0, ["+8613900000000"], ["371721"]) == 1
    numbers = [f"+86139{i:08d}" for i in range(1, 1500)]
    packed = np.array([n.encode() for n in numbers], dtype="S16")
    first = np.ones(len(numbers), dtype=bool)
    first[[5, 700]] = False  # duplicates the caller found
    added = await writer.add_many("sms", 0, packed, ["371721"] * len(numbers), first=first)
    assert added == len(numbers) - 2
    assert writer.seen == {"sms": {"+8613900000000"}}  # the set is not kept for them
    await writer.finish()
    got = await store.batches("alert2", [0, 1])
    assert [b.size for b in got.values()] == [1000, 498]
    kept = [n for i, n in enumerate(numbers) if first[i]]
    assert [a for k in (0, 1) for a in got[k].addresses] == ["+8613900000000", *kept]


async def test_a_whole_batch_moves_as_a_range(redis: Redis) -> None:
    store = DeliveryStore(redis, Keys())
    await store.start_plan("alert3", {"status": "planning", "prio": "hi"})
    record = BatchRecord.encode("sms", 0, [f"+86137{i:08d}" for i in range(5)], priority="hi")
    await store.add_batch("alert3", record, "sms", ["371721"], [0] * 5)
    batch, claim = await store.claim("alert3", 0, None, reclaimed=False, known=None)
    assert batch is not None and claim.offsets == range(5)
    part = await store.move(batch, [1, 3], "s", DeliveryState.SENT, bump="1")
    assert part.offsets == [1, 3]
    rest = await store.move(batch, None, "s", DeliveryState.SENT, bump="1")
    assert list(rest.offsets) == [0, 2, 4]  # not all moved: the offsets themselves


def test_endpoint_columns_decode_packed_addresses_when_read() -> None:
    packed = np.array([b"+8613800000001", b"+8613800000002"], dtype="S16")
    col = EndpointColumns(
        ChannelName.SMS,
        np.arange(2, dtype=np.int64),
        None,
        None,
        np.zeros(2, dtype=np.uint16),
        np.array(["zh-CN"], dtype=object),
        packed,
    )
    assert col.text is None and len(col) == 2
    assert col.addresses == ["+8613800000001", "+8613800000002"]
    assert col.text is col.addresses  # decoded once
    with pytest.raises(ValueError, match="as text or packed"):
        EndpointColumns(ChannelName.SMS, col.at, None, None, col.language_codes, col.tags)


async def test_coverage_counts_runs_of_subscribers_like_single_deliveries(redis: Redis) -> None:
    """Batches whose subscriber numbers are a run are counted as a range; the
    counts must be those of counting each delivery's first time."""
    store = DeliveryStore(redis, Keys())
    aid = "alert1"
    await store.start_plan(aid, {"status": "planning", "prio": "hi", "accepted_ms": 0})
    codes = ["371721101", "371721102", "371721103"]
    batches: list[tuple[list[int], list[int]]] = [
        (list(range(3, 43)), [i % 3 for i in range(40)]),  # a run, unaligned ends
        (list(range(30, 50)), [(i // 7) % 3 for i in range(20)]),  # overlaps the first
        ([60, 62, 61, NOSUB], [0, 1, 2, 2]),  # no run
        (list(range(64, 64 + 300)), [0] * 100 + [1] * 200),  # a run over whole bytes
        ([7], [1]),  # a run of one, already counted
    ]
    for nums, areas in batches:
        record = BatchRecord.encode("sms", 0, [f"+8613{n:09d}" for n in nums], priority="hi")
        await store.add_batch(aid, record, "sms", codes, areas, numbers=pack_numbers(nums))
    got = await store.batches(aid, list(range(len(batches))))
    runs = [k for k in range(len(batches)) if ";r" in got[k].hist]
    assert runs == [0, 1, 3, 4]  # 1 and 4 are runs, but overlap what was counted
    for k in range(len(batches)):
        await store.move(got[k], None, "q", DeliveryState.SENDING, claim=True)
        await store.move(got[k], None, "s", DeliveryState.SENT, bump="1")
    # What counting one delivery at a time gives: a subscriber counts in the
    # area of its first delivery, once.
    first: dict[int, int] = {}
    for nums, areas in batches:
        for n, a in zip(nums, areas, strict=True):
            if n != NOSUB:
                first.setdefault(n, a)
    index = await redis.lrange(store.key(aid, "areas"), 0, -1)
    expected: dict[str, int] = {}
    for a in first.values():
        i = index.index(codes[a])
        for kind in ("t", "r"):
            expected[f"{kind}{i}"] = expected.get(f"{kind}{i}", 0) + 1
    cv = cast(dict[str, str], await redis.hgetall(store.key(aid, "cv")))
    assert {f: int(v) for f, v in cv.items() if f[0] in "tr"} == expected
    for part in ("tb", "rb"):
        size = await redis.strlen(store.key(aid, part))
        on = {i for i in range(size * 8) if await redis.getbit(store.key(aid, part), i)}
        assert on == set(first), part
    assert sum(int(v) for f, v in cv.items() if f.startswith("h")) == len(first)


async def test_index_addresses_packed_until_one_does_not_fit(matcher: Matcher) -> None:
    """Short ASCII addresses are held packed; a longer or non-ASCII one turns its
    channel's column into variable-width text without losing any address."""
    await put(
        matcher,
        *(
            {"id": f"w{i}", "area": "371721101", "endpoints": {"wechat": f"robot-{i}"}}
            for i in range(5)
        ),
        {"id": "m0", "area": "371721101", "endpoints": {"email": "a@b.cn"}},
    )
    ix = matcher.index
    wechat, email = CHANNELS.index(ChannelName.WECHAT), CHANNELS.index(ChannelName.EMAIL)
    column = ix.addr[wechat]
    assert column is not None and column.dtype.kind == "S"
    await matcher.store.delete_many(["w1"])
    await put(
        matcher,
        {"id": "w9", "area": "371721101", "endpoints": {"wechat": "caoxian-duty-room-robot"}},
        {"id": "m1", "area": "371721101", "endpoints": {"email": "张三@heze.gov.cn"}},
    )
    assert all(c is not None and c.dtype.kind != "S" for c in (ix.addr[wechat], ix.addr[email]))
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    got = {
        (sid, col.channel.value, address)
        for cols in a.endpoint_columns(batch=4)
        for col in cols
        for sid, address in zip(col.subscriber_ids, col.addresses, strict=True)
    }
    assert got == {
        *((f"w{i}", "wechat", f"robot-{i}") for i in (0, 2, 3, 4)),
        ("w9", "wechat", "caoxian-duty-room-robot"),
        ("m0", "email", "a@b.cn"),
        ("m1", "email", "张三@heze.gov.cn"),
    }


async def _walk(
    audience: Any,
    first_span: int,
    firsts: FirstEndpoints,
    between: Callable[[int], Awaitable[None]] | None = None,
    *,
    prepare: bool = False,
) -> tuple[list[str], list[int]]:
    """Plan as the planner does: the first span with a set, the rest with
    ``firsts`` while it holds (then a set again), ``between(step)`` after each
    step of 500; the addresses planned, and the positions whose step
    ``firsts`` did not know."""
    seen: dict[str, set[str]] = {}
    planned: list[str] = []
    unknown: list[int] = []
    step = 0
    for start, stop in ((0, first_span), (first_span, len(audience))):
        if start and prepare:
            await asyncio.to_thread(firsts.prepare)  # as the planner does
        for cols in audience.endpoint_columns(batch=500, start=start, stop=stop):
            for col in cols:
                flags = firsts.first(col, seen) if start else None
                if flags is None:
                    if start:
                        unknown += col.at.tolist()
                        for ch, got in firsts.planned().items():
                            seen.setdefault(ch, set()).update(got)
                    mine = seen.setdefault(col.channel.value, set())
                    for a in col.addresses:
                        if a not in mine:
                            mine.add(a)
                            planned.append(a)
                else:
                    planned += [a for a, f in zip(col.addresses, flags.tolist(), strict=True) if f]
            if between is not None:
                await between(step)
            step += 1
    return planned, unknown


@pytest.mark.parametrize("prepare", [False, True], ids=["lazily", "prepared in a thread"])
async def test_first_endpoints_plan_each_address_once_across_steps(
    matcher: Matcher, prepare: bool
) -> None:
    # 3,000 subscribers on 2,000 numbers: the second thousand of numbers is
    # shared by two subscribers each, across the first step and the rest.
    await put(
        matcher,
        *(
            {"id": f"d{i}", "area": "371721101", "endpoints": {"sms": f"+86138{i % 2000:08d}"}}
            for i in range(3000)
        ),
    )
    audience = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    assert len(audience) == 3000
    firsts = FirstEndpoints(audience)
    planned, unknown = await _walk(audience, 1000, firsts, prepare=prepare)
    assert not firsts.off and not unknown  # every later step was known
    assert sorted(planned) == sorted(f"+86138{i:08d}" for i in range(2000))  # each once


@pytest.mark.parametrize("when", [0, 1, 2, 3], ids=lambda w: f"after step {w}")
async def test_first_endpoints_give_way_to_a_set_when_the_index_changes(
    matcher: Matcher, when: int
) -> None:
    # Steps of 500: 0 and 1 are the first span (a set), the snapshot is taken
    # at step 2. Mid-plan a subscriber late in the audience takes the number
    # of one planned in the first step, another moves to a new number.
    await put(
        matcher,
        *(
            {"id": f"e{i}", "area": "371721101", "endpoints": {"sms": f"+86139{i:08d}"}}
            for i in range(3000)
        ),
    )
    audience = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    ids = cast(list[str], audience.ids_of())
    early, late = ids[10], ids[2600:2602]
    early_number = f"+86139{int(early[1:]):08d}"

    async def change(step: int) -> None:
        if step == when:
            await put(
                matcher,
                {"id": late[0], "area": "371721101", "endpoints": {"sms": early_number}},
                {"id": late[1], "area": "371721101", "endpoints": {"sms": "+8613700000001"}},
            )
            await matcher.refresh()

    firsts = FirstEndpoints(audience)
    planned, unknown = await _walk(audience, 1000, firsts, change, prepare=when % 2 == 1)
    assert len(planned) == len(set(planned))  # each address once, whatever changed
    assert set(planned) == {f"+86139{i:08d}" for i in range(3000)} - {
        f"+86139{int(late[0][1:]):08d}",
        f"+86139{int(late[1][1:]):08d}",
    } | {"+8613700000001"}
    if when >= 2:  # after the snapshot: found out at the next step
        assert firsts.off and unknown
