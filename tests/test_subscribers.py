"""Subscribers: validation, Redis storage and indexes, bulk import/export, groups config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from areas_data import full_registry
from pydantic import ValidationError
from redis.asyncio import Redis
from subscribers_data import TAXONOMY, group_table, villages

from warnd.areas import AreaRegistry
from warnd.errors import BadRequest, ConfigError, FieldError
from warnd.groups import GroupSettings, GroupTable, check_groups
from warnd.keys import Keys
from warnd.settings import load_settings
from warnd.subscriber_io import Importer, export_chunks, import_lines
from warnd.subscribers import (
    Subscriber,
    SubscriberContext,
    SubscriberStore,
    normalise_language,
    normalise_phone,
)


@pytest.fixture(scope="module")
def registry(redis_server: str) -> AreaRegistry:
    return full_registry(redis_server)


@pytest.fixture
def ctx(registry: AreaRegistry) -> SubscriberContext:
    return SubscriberContext(registry=registry, groups=group_table())


@pytest.fixture
def store(redis: Redis) -> SubscriberStore:
    return SubscriberStore(redis, Keys())


# ------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("13800138000", "+8613800138000"),
        ("138 0013 8000", "+8613800138000"),
        ("+86 138-0013-8000", "+8613800138000"),
        ("008613800138000", "+8613800138000"),
        ("8613800138000", "+8613800138000"),
        ("19912345678", "+8619912345678"),
        ("+852 9123 4567", "+85291234567"),
        ("+886 912 345 678", "+886912345678"),
    ],
)
def test_phone_numbers_are_normalised_to_e164(raw: str, e164: str) -> None:
    assert normalise_phone(raw) == e164


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("1380013800", "not a valid phone number"),  # ten digits
        ("14012345678", "not a valid phone number"),  # unassigned 140 block
        ("010-12345678", "not a mobile number"),  # Beijing landline: no SMS
        ("call me", "not a phone number"),
    ],
)
def test_bad_phone_numbers_say_why(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        normalise_phone(raw)


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("zh-hans", "zh-Hans"),
        ("zh_Hant_TW", "zh-Hant-TW"),
        ("EN", "en"),
        ("ug", "ug"),
        ("bo-CN", "bo-CN"),
        ("ii", "ii"),
        ("za", "za"),
        ("mn-Mong", "mn-Mong"),
    ],
)
def test_languages_are_bcp47(raw: str, tag: str) -> None:
    assert normalise_language(raw) == tag


@pytest.mark.parametrize("raw", ["chinese", "zh-", "12", "zh-Hans-toolongvariant1"])
def test_bad_languages_are_rejected(raw: str) -> None:
    with pytest.raises(ValueError, match="BCP 47"):
        normalise_language(raw)


def test_subscriber_validation_against_registry_and_groups(ctx: SubscriberContext) -> None:
    sub = Subscriber.model_validate(
        {
            "id": "cx-001",
            "name": " 南关居委会 ",
            "area": "371721001001",
            "point": {"lon": 115.54, "lat": 34.83},
            "language": "zh-hans",
            "groups": ["village_officers", "village_officers"],
            "endpoints": {"sms": "13800138000", "email": "A@Example.CN", "wechat": "caoxian-1"},
        },
        context=ctx,
    )
    assert sub.name == "南关居委会" and sub.language == "zh-Hans"
    assert sub.groups == ["village_officers"]
    assert sub.endpoints.sms == "+8613800138000" and sub.endpoints.email == "A@example.cn"
    assert (
        Subscriber.model_validate(
            {"id": "c", "area": "371721000000", "endpoints": {"board": "b1"}}, context=ctx
        ).area
        == "371721"
    )

    with pytest.raises(ValidationError) as exc:
        Subscriber.model_validate(
            {
                "id": "bad id",
                "area": "371799",
                "language": "chinese",
                "groups": ["nobody"],
                "endpoints": {"wechat": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc"},
            },
            context=ctx,
        )
    text = str(exc.value)
    for says in (
        "id 'bad id'",
        "unknown area code '371799'",
        "BCP 47",
        "unknown group 'nobody'",
        "not its URL",
    ):
        assert says in text


def test_points_far_outside_the_area_are_rejected(ctx: SubscriberContext) -> None:
    # lat/lon swapped into a valid range, or simply a point in the wrong county.
    with pytest.raises(ValidationError, match="lies outside area 371721"):
        Subscriber.model_validate(
            {
                "id": "p",
                "area": "371721",
                "point": {"lon": 118.0, "lat": 36.0},
                "endpoints": {"board": "b"},
            },
            context=ctx,
        )
    with pytest.raises(ValidationError, match="no endpoint"):
        Subscriber.model_validate({"id": "p", "area": "371721"}, context=ctx)


# ----------------------------------------------------------------- storage


async def test_upserts_are_idempotent_and_indexes_follow(
    store: SubscriberStore, redis: Redis, ctx: SubscriberContext
) -> None:
    def sub(**kw: Any) -> Subscriber:
        body = {
            "id": "s1",
            "area": "371721101",
            "groups": ["village_officers"],
            "endpoints": {"sms": "13800138000"},
        }
        return Subscriber.model_validate({**body, **kw}, context=ctx)

    first = await store.upsert_many([sub()])
    again = await store.upsert_many([sub()])
    assert (first.created, again.unchanged, again.change_id) == (1, 1, None)
    moved = await store.upsert_many([sub(area="371722101", groups=["boards", "schools"])])
    assert moved.updated == 1
    k = Keys()
    assert await store.ids_in_area("371721") == set()
    assert await store.ids_in_area("371722101") == {"s1"}
    assert await store.ids_in_area("371722") == {"s1"}
    assert await store.ids_in_area("371722102") == set()
    # A move inside the county keeps one entry, with the new score.
    await store.upsert_many([sub(area="371722102", groups=["boards", "schools"])])
    assert await store.ids_in_area("371722101") == set()
    assert await store.ids_in_area("371722102") == {"s1"}
    assert await redis.smembers(k.subscribers_in_group("village_officers")) == set()
    assert await redis.smembers(k.subscribers_in_group("schools")) == {"s1"}
    rec = await store.get("s1")
    assert rec is not None and rec.subscriber().groups == ["boards", "schools"]
    deleted = await store.delete_many(["s1", "nobody"])
    assert deleted.deleted == 1 and await store.get("s1") is None
    assert await store.ids_in_area("371722") == set()
    assert await redis.exists(k.subscribers_in_area("371722")) == 0
    for key in (k.subscribers_in_group("schools"), k.subscribers_in_group("boards")):
        assert await redis.smembers(key) == set()
    assert await store.count() == 0


# ------------------------------------------------------------------ import

GOOD_AND_BAD = (
    "\ufeffid,name,area,lon,lat,language,groups,sms,email,wechat,board\n"
    "v1,南关村委会,371721001001,,,zh-Hans,village_officers,13800138000,,,\n"
    "v2,坏号码,371721001001,,,,village_officers,1380013800,,,\n"  # line 3: bad phone
    "v3,未知区划,371799001001,,,,village_officers,13800138001,,,\n"  # line 4: unknown area
    "\n"
    "v4,未知群组,371721001001,,,,firemen,13800138002,,,\n"  # line 6: unknown group
    "v5,语言,371721001001,,,chinese,,13800138003,,,\n"  # line 7: bad language
    ",无编号,371721001001,,,,,13800138004,,,\n"  # line 8: missing id
    'v6,"多行\n名称",371722001001,,,ug,boards,,,,board-6\n'  # lines 9-10: newline in a name
    "v7,短行,371721\n"  # line 11: wrong field count
    "v8,只有一半坐标,371721,115.5,,,,13800138005,,,\n"  # line 12: lon without lat
    "v9,维吾尔语,371722001001,,,ug-Arab,schools,+8613800138009,school@heze.cn,,\n"
    'v10,"单县一中, 公告屏",371722001001,,,ug,boards,,,,board-10\n'
)


async def test_csv_import_rejects_bad_rows_with_line_numbers_and_keeps_good_ones(
    store: SubscriberStore, ctx: SubscriberContext
) -> None:
    importer = Importer(store, ctx, csv_locs=True)
    summary = await import_lines(GOOD_AND_BAD.encode().splitlines(keepends=True), "csv", importer)
    assert (summary.rows, summary.accepted, summary.rejected) == (11, 3, 8)
    assert summary.created == 3
    rejected = {r.line: (r.id, [(e.loc, e.msg) for e in r.errors]) for r in summary.rejections}
    assert sorted(rejected) == [3, 4, 6, 7, 8, 9, 11, 12]
    assert rejected[3][0] == "v2" and rejected[3][1][0][0] == "sms"
    assert "not a valid phone number" in rejected[3][1][0][1]
    assert rejected[4][1][0][0] == "area" and "unknown area code" in rejected[4][1][0][1]
    assert rejected[6][1][0][0] == "groups" and "firemen" in rejected[6][1][0][1]
    assert rejected[7][1][0][0] == "language"
    assert rejected[8] == (None, [("id", "Field required")])
    assert rejected[9][1] == [("name", "name must not contain control characters")]
    assert rejected[11][0] == "v7" and "fields, the header has 11" in rejected[11][1][0][1]
    assert rejected[12][1][0][0] == "lat"
    assert {p.id for batch in [b async for b in store.scan()] for p in batch} == {"v1", "v9", "v10"}
    v10 = await store.get("v10")
    assert v10 is not None and v10.name == "单县一中, 公告屏" and v10.language == "ug"

    again = await import_lines(
        GOOD_AND_BAD.encode().splitlines(keepends=True), "csv", Importer(store, ctx, csv_locs=True)
    )
    assert (again.accepted, again.created, again.updated, again.unchanged) == (3, 0, 0, 3)


async def test_ndjson_import_and_export_round_trip(
    store: SubscriberStore, ctx: SubscriberContext, registry: AreaRegistry
) -> None:
    cao = villages(registry, "371721")[:50]
    lines = [
        json.dumps(
            {"id": f"n{i}", "area": c, "groups": ["boards"], "endpoints": {"board": f"b{i}"}}
        )
        for i, c in enumerate(cao)
    ]
    lines.insert(10, "{not json")
    lines.insert(20, json.dumps(["an", "array"]))
    lines.insert(30, json.dumps({"id": "x", "area": "371721", "endpoints": {"fax": "1"}}))
    summary = await import_lines(
        [(line + "\n").encode() for line in lines], "ndjson", Importer(store, ctx, csv_locs=False)
    )
    assert (summary.accepted, summary.rejected) == (50, 3)
    locs = {r.line: r.errors[0] for r in summary.rejections}
    assert sorted(locs) == [11, 21, 31]
    assert "not valid JSON" in locs[11].msg and "expected an object" in locs[21].msg
    assert locs[31].loc == "/endpoints/fax"

    csv_text = "".join([c async for c in export_chunks(store, "csv")])
    assert csv_text.startswith("id,name,area,lon,lat,language,groups,sms,email,wechat,board\n")
    assert csv_text.count("\n") == 51
    nd = "".join([c async for c in export_chunks(store, "ndjson")])
    back = [json.loads(line) for line in nd.splitlines()]
    assert {b["id"] for b in back} == {f"n{i}" for i in range(50)}
    # The export imports back unchanged.
    again = await import_lines(
        csv_text.encode().splitlines(keepends=True), "csv", Importer(store, ctx, csv_locs=True)
    )
    assert (again.accepted, again.unchanged, again.rejected) == (50, 50, 0)


async def test_unusable_csv_headers_refuse_the_file(
    store: SubscriberStore, ctx: SubscriberContext
) -> None:
    with pytest.raises(BadRequest) as exc:
        await import_lines(
            [b"id,name,phone\n", b"a,b,c\n"], "csv", Importer(store, ctx, csv_locs=True)
        )
    msgs = [e.msg for e in exc.value.errors]
    assert any("unknown column(s) 'phone'" in m for m in msgs)
    assert any("missing column(s): area" in m for m in msgs)
    assert await store.count() == 0


async def test_rows_outside_the_importers_scope_are_rejected(
    store: SubscriberStore, registry: AreaRegistry
) -> None:
    scoped = SubscriberContext(registry=registry, groups=group_table(), scope=("371721",))
    rows = [b"id,area,board\n", b"a,371721001001,b1\n", b"b,371722001001,b2\n"]
    summary = await import_lines(rows, "csv", Importer(store, scoped, csv_locs=True))
    assert summary.accepted == 1
    assert "outside your area scope" in summary.rejections[0].errors[0].msg


def warnd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warnd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "WARND_LOG_LEVEL": "warning"},
    )


def test_cli_import_prints_each_rejected_row(
    tmp_path: Path, redis_url: str, registry: AreaRegistry
) -> None:
    # The module's registry lives in memory; the CLI reads the areas from Redis.
    import asyncio

    from subscribers_data import import_heze

    from warnd.redis_server import redis_client

    async def areas() -> None:
        client = redis_client(redis_url)
        try:
            await import_heze(client, tmp_path)
        finally:
            await client.aclose()

    asyncio.run(areas())
    config = tmp_path / "warnd.toml"
    config.write_text(
        f'data_dir = "{tmp_path}"\ntaxonomy_file = "{TAXONOMY.source}"\n'
        f'[redis]\nurl = "{redis_url}"\n'
        '[groups.village_officers]\nname = "村级信息员"\nchannels = ["sms", "wechat"]\n'
        '[groups.boards]\nname = "公共显示屏"\nchannels = ["board"]\n'
        '[groups.schools]\nname = "学校"\nchannels = ["email"]\n',
        encoding="utf-8",
    )
    data = tmp_path / "subs.csv"
    data.write_text(GOOD_AND_BAD, encoding="utf-8")
    done = warnd("subscribers", "import", str(data), "--config", str(config))
    assert done.returncode == 1, done.stderr
    out, err = done.stdout, done.stderr
    assert "11 rows, 3 accepted (3 new, 0 updated, 0 unchanged), 8 rejected" in out
    assert "line 3 id=v2: sms:" in err and "line 8: id: Field required" in err
    again = warnd("subscribers", "import", str(data), "--config", str(config))
    assert "(0 new, 0 updated, 3 unchanged)" in again.stdout
    out_file = tmp_path / "out.ndjson"
    exported = warnd(
        "subscribers", "export", "--format", "ndjson", "-o", str(out_file), "--config", str(config)
    )
    assert exported.returncode == 0, exported.stderr
    assert len(out_file.read_text(encoding="utf-8").splitlines()) == 3
    with config.open("a", encoding="utf-8") as fh:
        fh.write('[groups.floods]\nname = "防汛"\nhazards = ["floods"]\n')
    checked = warnd("check", "--config", str(config))
    assert checked.returncode == 1
    assert "groups.floods.hazards: 'floods' is not in the hazard taxonomy" in checked.stderr


# ------------------------------------------------------------------ groups


def test_group_config_is_checked_against_the_taxonomy(tmp_path: Path) -> None:
    bad = {
        "floods": GroupSettings(name="防汛", hazards=["flood", "tsunamis"], escalate_to="nobody"),
        "Bad-Key": GroupSettings(name="x", ack_deadline_minutes=5),
    }
    problems = check_groups(bad, TAXONOMY)
    assert any("groups.floods.hazards: 'tsunamis'" in p for p in problems)
    assert any("groups.floods.escalate_to: no group 'nobody'" in p for p in problems)
    assert any("groups.Bad-Key: a group key" in p for p in problems)
    assert any("ack_deadline_minutes: set, but ack_required is false" in p for p in problems)
    with pytest.raises(ConfigError):
        GroupTable.build(bad, TAXONOMY)

    config = tmp_path / "warnd.toml"
    config.write_text(
        '[groups.boards]\nname = "公共显示屏"\nchannels = ["board", "fax"]\nmin_level = "紫"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(config, env={})
    text = " ".join(exc.value.problems)
    assert "groups.boards.channels" in text and "groups.boards.min_level" in text


@pytest.mark.parametrize("path", ["config/warnd.toml", "config/demo.toml"])
def test_shipped_configs_have_valid_groups(path: str) -> None:
    settings = load_settings(Path(__file__).resolve().parents[1] / path, env={})
    table = GroupTable.build(settings.groups, TAXONOMY)
    assert {"village_officers", "geo_monitors", "schools", "boards", "township_duty"} <= set(
        table.keys()
    )
    geo = table.get("geo_monitors")
    assert geo is not None and geo.hazards is not None and "landslide" in geo.hazards


@pytest.mark.parametrize(
    "flat",
    [
        {"id": "a", "area": "371721000000", "sms": "138 0013 8000"},
        {
            "id": "b.c:d@e-f_g",
            "name": " 曹县一中 ",
            "area": "371721001001",
            "lon": "115.54",
            "lat": "34.83",
            "language": "ug_cn",
            "groups": ["schools", "boards", "schools"],
            "email": "X@Heze.CN",
            "wechat": "cao-1",
            "board": "b:1",
        },
        {"id": "c", "area": "3717", "language": "zh-hant", "board": "b"},
    ],
)
def test_bulk_fast_path_stores_what_the_model_stores(
    ctx: SubscriberContext, flat: dict[str, Any]
) -> None:
    from warnd.subscriber_io import csv_input
    from warnd.subscribers import fast_row, row_of

    expected = row_of(Subscriber.model_validate(csv_input(flat), context=ctx))
    assert fast_row(flat, ctx) == expected


@pytest.mark.parametrize(
    "flat",
    [
        {"id": "a", "area": "371721", "sms": "12345"},
        {"id": "a", "area": "371799", "sms": "13800138000"},
        {"id": "a b", "area": "371721", "sms": "13800138000"},
        {"id": "a", "area": "371721", "lon": "115.5", "sms": "13800138000"},
        {"id": "a", "area": "371721", "lon": "nan", "lat": "34.8", "sms": "13800138000"},
        {"id": "a", "area": "371721", "lon": "34.8", "lat": "115.5", "sms": "13800138000"},
        {"id": "a", "area": "371721", "groups": ["nobody"], "sms": "13800138000"},
        {"id": "a", "area": "371721"},
        {"id": "a", "area": "371721", "language": "chinese", "board": "b"},
        {"id": "a", "area": "371721", "name": "x\ny", "board": "b"},
    ],
)
def test_bulk_fast_path_leaves_every_doubtful_row_to_the_model(
    ctx: SubscriberContext, flat: dict[str, Any]
) -> None:
    from warnd.subscriber_io import csv_input
    from warnd.subscribers import fast_row

    assert fast_row(flat, ctx) is None
    with pytest.raises(ValidationError):
        Subscriber.model_validate(csv_input(flat), context=ctx)


# ------------------------------------------------------------ bulk write path


@pytest.mark.parametrize(
    "row",
    [
        [1, "订阅者", "371721001001", 115.373811, 35.115983, "zh-Hans", "a,b", "+8613800138000",
         None, "robot-1", None],
        [1, 'say "hi" \\ \t\x00\x1f\u2028😀', "37", 1e-05, -0.0, "ug", "", None,
         "a@b.cn", None, "board-1"],
        [1, "", "371721", None, None, "en", "boards", None, None, None, "b"],
        [1, "x", "371721", 180.0, -90.0, "bo", "", "+85291234567", None, None, None],
        [1, "x", "371721", 5, float("nan"), "bo", "", "s", None, None, None],  # odd types
        [True, "x", "371721", None, None, "bo", "", "s", None, None, None],
        [1, "short row"],
    ],
)  # fmt: skip
def test_stored_form_is_exactly_what_json_makes(row: list[Any]) -> None:
    """Stored records are compared as text (idempotent upserts): the fast
    encoder must agree with the json module to the byte."""
    from warnd.subscribers import encode

    assert encode(row) == json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def test_plain_csv_lines_parse_as_the_csv_module_parses_them() -> None:
    """Lines without quotes are split directly; quoted ones go through csv: same rows."""
    from warnd.subscriber_io import CsvRecords

    header = "id,name,area,groups,sms,board\n"
    plain = [
        "a1, 名字 ,371721, boards ; schools ;,13800138000,\n",
        "a2,,371721,,,b\t\r\n",
        "a3,x\x0by\u2028z,371721,,,b\n",
    ]
    quoted = [
        '"a1"," 名字 ","371721"," boards ; schools ;","13800138000",""\n',
        '"a2","","371721","","","b\t"\r\n',
        '"a3","x\x0by\u2028z","371721","","","b"\n',
    ]
    parsed = []
    for lines in (plain, quoted):
        records = CsvRecords()
        assert records.feed(1, header) is None
        parsed.append([records.feed(i, line) for i, line in enumerate(lines, 2)])
    assert parsed[0] == parsed[1]
    assert parsed[0][0] == (
        2,
        {"id": "a1", "name": "名字", "area": "371721", "groups": ["boards ", " schools "],
         "sms": "13800138000"},
        [],
    )  # fmt: skip
    records = CsvRecords()
    records.feed(1, header)
    assert records.feed(2, 'a4,"x"y,371721,,,b\n') == (
        2,
        None,
        [FieldError("row", "not valid CSV: ',' expected after '\"'")],
    )


async def test_batched_import_keeps_indexes_and_change_stream_exact(
    store: SubscriberStore, ctx: SubscriberContext, registry: AreaRegistry, redis: Redis
) -> None:
    """Many small batches, written while the next is parsed: every record, index
    entry and change-stream id is there; moves between areas and groups unindex."""
    k = Keys()
    cao, shan = villages(registry, "371721")[:40], villages(registry, "371722")[:40]
    header = b"id,area,groups,sms,board\n"

    def rows(areas: list[str], group: str) -> list[bytes]:
        return [
            f"m{i:04d},{areas[i % len(areas)]},{group},138{i:08d},\n".encode() for i in range(1000)
        ]

    first = await import_lines(
        [header, *rows(cao, "village_officers")],
        "csv",
        Importer(store, ctx, csv_locs=True, batch_size=37),
    )
    assert (first.accepted, first.created, first.rejected) == (1000, 1000, 0)
    assert await store.count() == 1000
    assert len(await store.ids_in_area("371721")) == 1000
    assert len(await redis.smembers(k.subscribers_in_group("village_officers"))) == 1000
    changes, gap = await store.changes_since("0-0", limit=100)
    assert not gap and len(changes) == 28  # ceil(1000 / 37) batches
    assert sorted(i for _, ids in changes for i in ids) == [f"m{i:04d}" for i in range(1000)]

    # Half move county and group; the other half are unchanged.
    moved = rows(shan, "schools")[::2]
    again = await import_lines(
        [header, *[r for i, r in enumerate(rows(cao, "village_officers")) if i % 2], *moved],
        "csv",
        Importer(store, ctx, csv_locs=True, batch_size=37),
    )
    assert (again.updated, again.unchanged, again.created) == (500, 500, 0)
    assert len(await store.ids_in_area("371721")) == 500
    assert len(await store.ids_in_area("371722")) == 500
    assert await store.ids_in_area(shan[0]) == {f"m{i:04d}" for i in range(0, 1000, 40)}
    officers = await redis.smembers(k.subscribers_in_group("village_officers"))
    schools = await redis.smembers(k.subscribers_in_group("schools"))
    assert officers == {f"m{i:04d}" for i in range(1, 1000, 2)}
    assert schools == {f"m{i:04d}" for i in range(0, 1000, 2)}
    rec = await store.get("m0002")
    assert rec is not None and rec.area == shan[2] and rec.sms == "+8613800000002"


async def test_a_redis_error_in_a_bulk_write_is_raised_and_the_connection_stays_usable(
    store: SubscriberStore, ctx: SubscriberContext, redis: Redis
) -> None:
    from redis.exceptions import ResponseError

    k = Keys()
    await redis.set(k.subscribers_in_group("schools"), "not a set")
    sub = Subscriber.model_validate(
        {"id": "e1", "area": "371721", "groups": ["schools"], "endpoints": {"board": "b"}},
        context=ctx,
    )
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.upsert_many([sub])
    # Every reply was read: the pooled connections answer in step.
    assert await redis.ping() is True
    assert await store.ids_in_area("371721") == {"e1"}  # the commands around it ran
    await redis.delete(k.subscribers_in_group("schools"))
    other = sub.model_copy(update={"id": "e2"})
    assert (await store.upsert_many([other])).created == 1
    assert await redis.smembers(k.subscribers_in_group("schools")) == {"e2"}
