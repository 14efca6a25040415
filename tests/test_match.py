"""Matching alerts to subscribers on the real 菏泽 areas, against a real redis-server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import shapely
from areas_data import full_registry
from redis.asyncio import Redis
from subscribers_data import (
    CAP_ZH,
    TAXONOMY,
    alert,
    geocode,
    group_table,
    points_in,
    square,
    villages,
)

from warnd.areas import AreaRegistry
from warnd.cap import parse_cap
from warnd.groups import GroupTable
from warnd.keys import Keys
from warnd.match import Matcher
from warnd.subscribers import Subscriber, SubscriberContext, SubscriberStore

PHONE = "+8613800138000"


@pytest.fixture(scope="module")
def registry(redis_server: str) -> AreaRegistry:
    return full_registry(redis_server)


async def _matcher(redis: Redis, registry: AreaRegistry, groups: GroupTable) -> Matcher:
    m = Matcher(SubscriberStore(redis, Keys()), registry, groups)
    await m.load()
    return m


@pytest.fixture
async def matcher(redis: Redis, registry: AreaRegistry) -> Matcher:
    return await _matcher(redis, registry, group_table())


async def put(m: Matcher, *rows: dict[str, Any]) -> None:
    ctx = SubscriberContext(registry=m.registry, groups=m.groups)
    subs = [
        Subscriber.model_validate({"endpoints": {"sms": PHONE}, **row}, context=ctx) for row in rows
    ]
    await m.store.upsert_many(subs)


def ids(audience: Any) -> set[str]:
    return set(audience.ids.tolist())


# ------------------------------------------------------------- geocodes


async def test_geocode_371721_reaches_every_caoxian_subscriber_and_no_shanxian(
    matcher: Matcher, registry: AreaRegistry
) -> None:
    cao = villages(registry, "371721")
    shan = villages(registry, "371722")
    assert len(cao) > 500 and len(shan) > 400
    rows = [{"id": f"v{c}", "area": c, "groups": ["village_officers"]} for c in cao + shan]
    rows += [{"id": "county-office", "area": "371721000000", "groups": ["village_officers"]}]
    rows += [{"id": "shan-town", "area": "371722001", "groups": ["village_officers"]}]
    await put(matcher, *rows)
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    expected = {f"v{c}" for c in cao} | {"county-office"}
    assert ids(a) == expected
    assert not any(i.startswith("v371722") for i in ids(a))
    s = a.summary()
    assert s["areas"] == [
        {
            "code": "371721",
            "name": "曹县",
            "level": "red",
            "how": "geocode",
            "subscribers": len(expected),
            "deliveries": len(expected),
        }
    ]
    assert s["channels"]["sms"] == len(expected)
    assert s["blind_spots"] == []  # every 曹县 village has its officer
    assert s["groups"][0]["key"] == "village_officers"


async def test_padded_and_nested_geocodes_select_each_subscriber_once(
    matcher: Matcher,
) -> None:
    await put(
        matcher,
        {"id": "a", "area": "371721001001", "groups": ["boards"], "endpoints": {"board": "b-1"}},
        {"id": "b", "area": "371721002", "groups": ["boards"], "endpoints": {"board": "b-2"}},
    )
    a = await matcher.match(
        alert(
            {"hazard": "rainstorm", "level": "blue", "areas": [geocode("371721000000")]},
            {"hazard": "rainstorm", "level": "blue", "areas": [geocode("371721001")]},
        )
    )
    assert sorted(a.ids.tolist()) == ["a", "b"]
    assert a.deliveries_count == 2
    assert a.by_channel()["board"] == 2


# -------------------------------------------------------------- polygons


async def test_polygon_inside_mudan_reaches_only_what_it_intersects(
    matcher: Matcher, registry: AreaRegistry
) -> None:
    mudan = registry.boundary("371702")
    assert mudan is not None
    centre = mudan.representative_point()
    ring = square(centre.x, centre.y, 0.02)
    poly = shapely.Polygon([(lon, lat) for lat, lon in ring])
    mudan_villages = villages(registry, "371702")
    inside = list(points_in(poly, 20, seed=2))
    outside = [
        p
        for p in points_in(mudan, 200, seed=3)
        if not poly.buffer(0.001).contains(shapely.Point(p))
    ][:20]
    assert len(outside) == 20
    rows: list[dict[str, Any]] = []
    for i, (lon, lat) in enumerate(inside):
        rows.append({"id": f"in{i}", "area": mudan_villages[i], "point": {"lon": lon, "lat": lat}})
    for i, (lon, lat) in enumerate(outside):
        rows.append({"id": f"out{i}", "area": mudan_villages[i], "point": {"lon": lon, "lat": lat}})
    rows.append({"id": "nopoint", "area": mudan_villages[0]})
    for county in ("371703", "371721", "371722"):
        rows.append({"id": f"other-{county}", "area": villages(registry, county)[0]})
        geom = registry.boundary(county)
        (lon, lat), *_ = points_in(geom, 1)
        rows.append({"id": f"otherpt-{county}", "area": county, "point": {"lon": lon, "lat": lat}})
    for r in rows:
        r["groups"] = ["village_officers"]
    await put(matcher, *rows)

    a = await matcher.match(
        alert(
            {
                "hazard": "rainstorm",
                "level": "orange",
                "areas": [{"area_desc": "牡丹区西部", "polygons": [{"points": ring}]}],
            }
        )
    )
    got = ids(a)
    # Points inside the polygon, and subscribers of the intersected area
    # without a point; never a point outside it, never another county.
    assert got == {f"in{i}" for i in range(20)} | {"nopoint"}
    codes = [x["code"] for x in a.summary()["areas"]]
    assert "371702" in codes
    assert all(c.startswith(("371702", "371771", "371772")) for c in codes)
    mudan_row = next(x for x in a.summary()["areas"] if x["code"] == "371702")
    assert mudan_row["how"] == "geometry" and mudan_row["subscribers"] == 21
    # The development zones cannot be tested (no boundary) and have nobody.
    assert {b["code"] for b in a.summary()["blind_spots"]} == {"371771", "371772"}


async def test_circle_reaches_points_within_its_radius(
    matcher: Matcher, registry: AreaRegistry
) -> None:
    cao = registry.boundary("371721")
    assert cao is not None
    c = cao.representative_point()
    # ~1.1 km and ~5.5 km east of the centre.
    await put(
        matcher,
        {"id": "near", "area": "371721", "point": {"lon": c.x + 0.012, "lat": c.y}},
        {"id": "far", "area": "371721", "point": {"lon": c.x + 0.06, "lat": c.y}},
    )
    a = await matcher.match(
        alert(
            {
                "hazard": "hail",
                "level": "orange",
                "areas": [
                    {"area_desc": "x", "circles": [{"lat": c.y, "lon": c.x, "radius_km": 3}]}
                ],
            }
        )
    )
    assert ids(a) == {"near"}


# ---------------------------------------------------------------- groups


async def test_min_level_filters_groups(matcher: Matcher) -> None:
    await put(
        matcher,
        {"id": "officer", "area": "371721001001", "groups": ["village_officers"]},  # yellow+
        {
            "id": "school",
            "area": "371721001001",
            "groups": ["schools"],
            "endpoints": {"email": "xx@school.cn"},
        },
    )
    blue = await matcher.match(
        alert({"hazard": "rainstorm", "level": "blue", "areas": [geocode("371721")]})
    )
    yellow = await matcher.match(
        alert({"hazard": "rainstorm", "level": "yellow", "areas": [geocode("371721")]})
    )
    red = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    assert ids(blue) == set()
    assert ids(yellow) == {"officer"}
    assert ids(red) == {"officer", "school"}


async def test_parent_hazard_covers_its_subtypes(matcher: Matcher) -> None:
    await put(matcher, {"id": "monitor", "area": "371721101", "groups": ["geo_monitors"]})
    for hazard, reached in [
        ("landslide", True),
        ("debris_flow", True),
        ("geological_hazard", True),
        ("rainstorm", False),
    ]:
        a = await matcher.match(
            alert({"hazard": hazard, "level": "blue", "areas": [geocode("3717")]})
        )
        assert (ids(a) == {"monitor"}) is reached, hazard
    a = await matcher.match(
        alert({"hazard": "landslide", "level": "blue", "areas": [geocode("3717")]})
    )
    assert a.by_group() == [
        {
            "key": "geo_monitors",
            "name": "地质灾害隐患点监测员",
            "subscribers": 1,
            "deliveries": 1,
            "ack_required": True,
        }
    ]


async def test_group_area_prefixes(matcher: Matcher) -> None:
    # duty_caoxian is limited to 371721: its members elsewhere hear nothing.
    await put(
        matcher,
        {"id": "cao-duty", "area": "371721101", "groups": ["duty_caoxian"]},
        {"id": "shan-duty", "area": "371722101", "groups": ["duty_caoxian"]},
    )
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "blue", "areas": [geocode("3717")]})
    )
    assert ids(a) == {"cao-duty"}


async def test_channel_preference_first_and_all(matcher: Matcher) -> None:
    await put(
        matcher,
        # village_officers: sms then wechat, first available.
        {
            "id": "both",
            "area": "371721101",
            "groups": ["village_officers"],
            "endpoints": {"sms": PHONE, "wechat": "cao-robot"},
        },
        {
            "id": "wechat-only",
            "area": "371721101",
            "groups": ["village_officers"],
            "endpoints": {"wechat": "cao-robot"},
        },
        # schools prefer wechat, then email, then sms.
        {
            "id": "school",
            "area": "371721101",
            "groups": ["schools"],
            "endpoints": {"sms": PHONE, "email": "a@b.cn"},
        },
        # duty_caoxian: every listed channel it has (sms, wechat, email; not board).
        {
            "id": "duty",
            "area": "371721101",
            "groups": ["duty_caoxian"],
            "endpoints": {"sms": PHONE, "email": "d@b.cn", "board": "b-9"},
        },
        # a board-only member of the officers' group has no usable endpoint there.
        {
            "id": "board-officer",
            "area": "371721101",
            "groups": ["village_officers"],
            "endpoints": {"board": "b-7"},
        },
    )
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    deliveries = [d async for batch in a.deliveries(matcher.store) for d in batch]
    got = sorted((d.subscriber_id, d.channel.value, d.address) for d in deliveries)
    assert got == [
        ("both", "sms", PHONE),
        ("duty", "email", "d@b.cn"),
        ("duty", "sms", PHONE),
        ("school", "email", "a@b.cn"),
        ("wechat-only", "wechat", "cao-robot"),
    ]
    assert a.no_endpoint == 1  # board-officer: selected, unreachable, counted
    assert len(a) == 5
    levels = {d.level for d in deliveries}
    assert {lv.value for lv in levels if lv} == {"red"}


async def test_first_group_with_an_endpoint_decides(matcher: Matcher) -> None:
    # In both the officers' group (sms/wechat) and the boards group (board):
    # a board has no phone, so the boards group decides its channel.
    await put(
        matcher,
        {
            "id": "board",
            "area": "371721101",
            "groups": ["village_officers", "boards"],
            "endpoints": {"board": "b-1"},
        },
    )
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    assert [g["key"] for g in a.by_group()] == ["boards"]
    assert a.by_channel()["board"] == 1 and a.no_endpoint == 0


async def test_ungrouped_subscribers_fall_under_the_default_group(
    redis: Redis, registry: AreaRegistry
) -> None:
    m = await _matcher(
        redis, registry, group_table({"schools": {"name": "学校", "min_level": "red"}})
    )
    await put(
        m,
        {"id": "resident", "area": "371721101"},
        {"id": "school", "area": "371721101", "groups": ["schools"]},
    )
    a = await m.match(alert({"hazard": "rainstorm", "level": "blue", "areas": [geocode("371721")]}))
    assert ids(a) == {"resident"}
    assert [g["key"] for g in a.by_group()] == ["default"]


# ------------------------------------------- several infos, blind spots


async def test_per_info_levels_are_kept_and_the_highest_wins(
    matcher: Matcher, registry: AreaRegistry
) -> None:
    await put(
        matcher,
        {"id": "cao", "area": "371721101", "groups": ["village_officers"]},
        {"id": "shan", "area": "371722101", "groups": ["village_officers"]},
        {"id": "cheng", "area": "371723101", "groups": ["village_officers"]},
    )
    a = await matcher.match(
        alert(
            {
                "hazard": "heat_wave",
                "level": "yellow",
                "areas": [geocode("371723"), geocode("371721")],
            },
            {"hazard": "heat_wave", "level": "orange", "areas": [geocode("371721")]},
            {"hazard": "heat_wave", "level": "red", "areas": [geocode("371722")]},
        )
    )
    level = dict(zip(a.ids.tolist(), a.levels.tolist(), strict=True))
    assert level == {"cheng": 2, "cao": 3, "shan": 4}
    info = dict(zip(a.ids.tolist(), a.infos.tolist(), strict=True))
    assert info == {"cheng": 0, "cao": 1, "shan": 2}
    areas = {x["code"]: x["level"] for x in a.summary()["areas"]}
    assert areas == {"371721": "orange", "371722": "red", "371723": "yellow"}
    assert a.by_level() == {"yellow": 1, "orange": 1, "red": 1}


async def test_taiwan_heat_sample_keeps_three_info_levels_and_records_unknown_geocodes(
    matcher: Matcher,
) -> None:
    parsed = parse_cap((CAP_ZH / "tw-cwa-heat-3-info-levels.xml").read_bytes())
    cap = parsed.alert
    for info in cap.infos:
        info.hazard, info.level = TAXONOMY.classify(info)
    assert len(cap.infos) == 3
    assert len({i.level for i in cap.infos}) >= 2
    a = await matcher.match(cap)
    # Taiwan_Geocode_103 is not an administrative scheme warnd resolves:
    # every geocode is recorded, nothing fails, nobody in 菏泽 is reached.
    names = {g.value_name for g in a.unknown_geocodes}
    assert names == {"Taiwan_Geocode_103"}
    assert len(a.unknown_geocodes) == sum(len(ar.geocodes) for i in cap.infos for ar in i.areas)
    assert len(a) == 0


async def test_blind_spots_are_the_broadest_empty_areas(
    matcher: Matcher, registry: AreaRegistry
) -> None:
    towns = [a for a in registry.children("371721")]
    assert len(towns) > 10
    covered_town = towns[0].code
    town_villages = [v.code for v in registry.children(covered_town)]
    # Every village of the first township but its last one has a subscriber.
    await put(
        matcher,
        *(
            {"id": f"v{c}", "area": c, "groups": ["boards"], "endpoints": {"board": f"b{c}"}}
            for c in town_villages[:-1]
        ),
    )
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    spots = {b["code"] for b in a.summary()["blind_spots"]}
    assert spots == {town_villages[-1]} | {t.code for t in towns[1:]}
    # A group rule that selects nobody does not make an area a blind spot:
    # blind spots are areas without any subscriber at all.
    low = await matcher.match(
        alert({"hazard": "rainstorm", "level": "blue", "areas": [geocode("371721")]})
    )
    assert {b["code"] for b in low.summary()["blind_spots"]} == spots


# --------------------------------------------------- keeping the index current


async def test_delete_and_move_update_the_index(matcher: Matcher, redis: Redis) -> None:
    await put(
        matcher,
        {"id": "a", "area": "371721101", "groups": ["village_officers"]},
        {"id": "b", "area": "371721101", "groups": ["village_officers"]},
    )
    caoxian = alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    assert ids(await matcher.match(caoxian)) == {"a", "b"}
    await matcher.store.delete_many(["a"])
    await put(matcher, {"id": "b", "area": "371722101", "groups": ["village_officers"]})
    assert ids(await matcher.match(caoxian)) == set()
    k = Keys()
    assert await matcher.store.ids_in_area("371721") == set()
    assert await matcher.store.ids_in_area("371722101") == {"b"}
    assert await redis.zrange(k.subscribers_in_area("371722"), 0, -1, withscores=True) == [
        ("b", 371722101000.0)
    ]
    assert await redis.smembers(k.subscribers_in_group("village_officers")) == {"b"}
    counts = await matcher.counts("371722")
    assert counts["total"] == 1 and counts["group:village_officers"] == 1


async def test_writes_by_another_process_are_seen_at_the_next_match(
    matcher: Matcher, redis: Redis, registry: AreaRegistry
) -> None:
    other = SubscriberStore(redis, Keys())  # another warnd process, same Redis
    ctx = SubscriberContext(registry=registry, groups=matcher.groups)
    sub = Subscriber.model_validate(
        {
            "id": "x",
            "area": "371721101",
            "groups": ["village_officers"],
            "endpoints": {"sms": PHONE},
        },
        context=ctx,
    )
    await other.upsert_many([sub])
    caoxian = alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    assert ids(await matcher.match(caoxian)) == {"x"}
    await other.delete_many(["x"])
    assert ids(await matcher.match(caoxian)) == set()
    assert len(matcher.index) == 0


async def test_a_trimmed_change_stream_triggers_a_full_reload(
    matcher: Matcher, redis: Redis
) -> None:
    await put(matcher, {"id": "a", "area": "371721101", "groups": ["village_officers"]})
    await matcher.refresh()  # the index has read the stream up to this write
    other = SubscriberStore(redis, Keys())
    # Trimmed past our position, as MAXLEN trims it: the entries go, the stream's
    # last id stays (so the next change gets a newer one, even in the same ms).
    await redis.xtrim(Keys().subscriber_changes, maxlen=0)
    rec = await other.get("a")
    assert rec is not None
    moved = rec.subscriber().model_copy(update={"area": "371722101"})
    await other.upsert_many([moved])
    before = matcher.index
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371722")]})
    )
    assert ids(a) == {"a"}
    assert matcher.index is not before  # rebuilt from the records, not replayed


async def test_index_survives_many_writes_and_resorts(
    matcher: Matcher, registry: AreaRegistry
) -> None:
    cao = villages(registry, "371721")
    rows = [
        {"id": f"s{i}", "area": cao[i % len(cao)], "groups": ["village_officers"]}
        for i in range(6000)
    ]
    await put(matcher, *rows)  # past the delta threshold: the sorted copy is rebuilt
    await matcher.store.delete_many([f"s{i}" for i in range(0, 6000, 2)])
    a = await matcher.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    assert ids(a) == {f"s{i}" for i in range(1, 6000, 2)}
    fresh = await _matcher(matcher.store._redis, registry, matcher.groups)
    b = await fresh.match(
        alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})
    )
    assert ids(b) == ids(a)


def test_raster_point_test_equals_the_exact_one(registry: AreaRegistry) -> None:
    from warnd.match import points_in

    cao = registry.boundary("371721")
    assert cao is not None
    rng = np.random.default_rng(7)
    x0, y0, x1, y1 = cao.bounds
    lon = rng.uniform(x0, x1, 30_000)
    lat = rng.uniform(y0, y1, 30_000)
    # Vertices and edge midpoints too: exactly on the boundary.
    ring = np.asarray(shapely.get_coordinates(cao.boundary))
    mids = (ring[:-1] + ring[1:]) / 2
    lon = np.concatenate([lon, ring[:, 0], mids[:, 0]])
    lat = np.concatenate([lat, ring[:, 1], mids[:, 1]])
    assert (points_in(cao, lon, lat) == shapely.intersects_xy(cao, lon, lat)).all()


async def test_many_groups_decide_channels_the_same_way(
    redis: Redis, registry: AreaRegistry
) -> None:
    from subscribers_data import GROUPS

    extra = {f"extra{i}": {"name": f"备用{i}", "channels": ["email"]} for i in range(10)}
    few = await _matcher(redis, registry, group_table())
    many = await _matcher(redis, registry, group_table({**GROUPS, **extra}))
    await put(
        few,
        {
            "id": "both",
            "area": "371721101",
            "groups": ["village_officers", "boards"],
            "endpoints": {"sms": PHONE, "board": "b"},
        },
        {
            "id": "board",
            "area": "371721101",
            "groups": ["village_officers", "boards"],
            "endpoints": {"board": "b"},
        },
        {
            "id": "duty",
            "area": "371721101",
            "groups": ["duty_caoxian"],
            "endpoints": {"sms": PHONE, "email": "d@b.cn"},
        },
        {"id": "none", "area": "371721101", "groups": ["schools"], "endpoints": {"board": "b"}},
    )
    await many.refresh()  # the second matcher learns the writes from the change stream
    caoxian = alert({"hazard": "rainstorm", "level": "red", "areas": [geocode("371721")]})

    def decided(m: Matcher) -> dict[str, tuple[str, int]]:
        a = m.match_now(caoxian)
        return {
            i: (a.group_keys[g], int(c))
            for i, g, c in zip(a.ids.tolist(), a.groups.tolist(), a.channels.tolist(), strict=True)
        }

    await few.refresh()
    assert (
        decided(few)
        == decided(many)
        == {
            "both": ("village_officers", 1),
            "board": ("boards", 8),
            "duty": ("duty_caoxian", 3),
            "none": ("schools", 0),
        }
    )
