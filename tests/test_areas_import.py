"""Importing code lists and boundaries: formats, BOM, bad rows, idempotency, reload, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from areas_data import ADMIN, GEO
from redis.asyncio import Redis

from warnd.area_import import AreaFormat, import_configured, import_file
from warnd.areas import AreaRegistry
from warnd.errors import ConfigError
from warnd.geo import Datum, haversine_m
from warnd.keys import Keys

REPO = Path(__file__).resolve().parents[1]
KEYS = Keys()


async def test_bom_geojson_imports_and_rejects_the_nine_dash_feature(redis: Redis) -> None:
    path = GEO / "datav-100000_full.json"
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    s = await import_file(redis, KEYS, path)
    assert s.format is AreaFormat.GEOJSON
    assert s.datum is Datum.GCJ02
    assert any("GCJ-02" in n for n in s.notes)
    assert (s.rows, s.boundaries, s.created) == (35, 34, 34)
    assert [(r.loc, r.code) for r in s.rejected] == [("/features/34", "100000_JD")]
    assert "only digits" in s.rejected[0].reason
    reg = await AreaRegistry.load(redis, KEYS)
    shandong = reg.get("37")
    assert shandong is not None and shandong.name == "山东省" and shandong.has_boundary


async def test_bad_rows_are_rejected_with_line_numbers_and_good_rows_kept(
    redis: Redis, tmp_path: Path
) -> None:
    await import_file(redis, KEYS, ADMIN / "cn-stats2023-provinces.csv")
    path = tmp_path / "counties.csv"
    path.write_text(
        "\ufeffcode,name,cityCode,provinceCode\n"
        '371702,"牡丹区",3717,37\n'  # 2: good (its city is not registered: a warning)
        '37172X,"曹县",3717,37\n'  # 3: not digits
        '3717211,"曹县",3717,37\n'  # 4: 7 digits
        '371722,"",3717,37\n'  # 5: no name
        '371723,"成武县",3718,37\n'  # 6: cityCode contradicts the prefix
        '371724,"巨野县",3717\n'  # 7: too few fields
        "\n"  # 8: blank lines are skipped
        '"371725","郓城县\n（多行名称）",3717,37\n'  # 9-10: quoted newline, good
        '371726,"鄄城县",3717,37\n',  # 11: good
        encoding="utf-8",
    )
    s = await import_file(redis, KEYS, path)
    assert s.format is AreaFormat.CSV
    rejected = {r.line: r for r in s.rejected}
    assert sorted(rejected) == [3, 4, 5, 6, 7]
    assert "only digits" in rejected[3].reason
    assert "7 digits" in rejected[4].reason
    assert rejected[5].reason == "name is empty" and rejected[5].code == "371722"
    assert "cityCode 3718 is not an ancestor of 371723" in rejected[6].reason
    assert "3 fields, the header has 4" in rejected[7].reason
    assert s.accepted == 3 and s.rows == 8
    orphans = {w.code: w for w in s.warnings}
    assert set(orphans) == {"371702", "371725", "371726"}
    assert "parent 3717 is not registered" in orphans["371702"].reason
    assert orphans["371702"].line == 2
    reg = await AreaRegistry.load(redis, KEYS)
    assert reg.get("371726") is not None
    assert reg.get("371726").parent == "37"  # type: ignore[union-attr]
    assert reg.get("371725").name == "郓城县\n（多行名称）"  # type: ignore[union-attr]
    assert reg.get("371723") is None


async def test_reimport_is_idempotent(redis: Redis) -> None:
    path = ADMIN / "cn-stats2023-villages-371700-heze.csv"
    first = await import_file(redis, KEYS, path)
    second = await import_file(redis, KEYS, path)
    assert (first.created, first.updated) == (5040, 0)
    assert (second.created, second.updated) == (0, 5040)
    assert second.rejected_count == 0
    assert await redis.hlen(KEYS.areas) == 5040
    assert second.version == first.version + 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cn-stats2023-provinces.json", 31),
        ("cn-stats2023-cities.json", 342),
        ("cn-stats2023-pca-code.json", None),  # also some townships (东莞, 嘉峪关…)
        ("cn-stats2024-area_code-3level-12digit.json", None),
    ],
)
async def test_json_lists_and_trees(redis: Redis, name: str, expected: int | None) -> None:
    s = await import_file(redis, KEYS, ADMIN / name)
    assert s.format is AreaFormat.JSON
    assert s.rejected_count == 0
    if expected is not None:
        assert s.rows == expected
    reg = await AreaRegistry.load(redis, KEYS)
    if name.startswith("cn-stats2023-p") or "12digit" in name:
        caoxian = reg.get("371721")
        if "pca" in name or "12digit" in name:
            assert caoxian is not None and caoxian.name == "曹县"
            assert caoxian.parent == "3717"
    if "12digit" in name:
        # Integer 12-digit codes, normalised: 雄安新区 is a prefecture.
        xiongan = reg.get("133100000000")
        assert xiongan is not None and xiongan.code == "1331"


async def test_ndjson_with_a_broken_line(redis: Redis, tmp_path: Path) -> None:
    path = tmp_path / "areas.ndjson"
    path.write_text(
        '{"code": "37", "name": "山东省"}\n'
        "{not json\n"
        '["371721", "曹县"]\n'
        '{"code": 371721, "name": "曹县", "pcode": 370000}\n',
        encoding="utf-8",
    )
    s = await import_file(redis, KEYS, path)
    assert s.format is AreaFormat.NDJSON
    assert [(r.line, r.reason.split(":")[0]) for r in s.rejected] == [
        (2, "not JSON"),
        (3, "not a JSON object"),
    ]
    assert s.accepted == 2


async def test_explicit_wgs84_keeps_coordinates(redis: Redis) -> None:
    path = GEO / "datav-371700_full.json"
    await import_file(redis, KEYS, path, datum=Datum.WGS84)
    as_is = (await AreaRegistry.load(redis, KEYS)).boundary("371721")
    await import_file(redis, KEYS, path, datum=Datum.GCJ02)
    converted = (await AreaRegistry.load(redis, KEYS)).boundary("371721")
    assert as_is is not None and converted is not None
    shift = haversine_m(
        as_is.centroid.x, as_is.centroid.y, converted.centroid.x, converted.centroid.y
    )
    assert 300 < shift < 800
    raw = await redis.hget(KEYS.area_boundaries, "371721")
    assert raw is not None and raw.startswith("gcj02|")


async def test_whole_file_problems_raise(redis: Redis, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        await import_file(redis, KEYS, tmp_path / "missing.csv")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"code": "37",', encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1: not valid JSON"):
        await import_file(redis, KEYS, bad)
    headless = tmp_path / "headless.csv"
    headless.write_text("37,山东省\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="needs a 'code' and a 'name' column"):
        await import_file(redis, KEYS, headless)


async def test_reload_picks_up_an_import(redis: Redis) -> None:
    reg = await AreaRegistry.load(redis, KEYS)
    assert len(reg) == 0 and reg.get("37") is None
    assert not await reg.reload()
    await import_file(redis, KEYS, ADMIN / "cn-stats2023-provinces.csv")
    assert await reg.reload()
    assert len(reg) == 31 and reg.get("370000") is not None
    assert not await reg.reload()


async def test_configured_imports_skip_unchanged_files(redis: Redis, tmp_path: Path) -> None:
    path = tmp_path / "provinces.csv"
    path.write_bytes((ADMIN / "cn-stats2023-provinces.csv").read_bytes())
    first = await import_configured(redis, KEYS, [path])
    again = await import_configured(redis, KEYS, [path])
    assert [s.accepted for s in first] == [31] and again == []
    path.write_text(path.read_text(encoding="utf-8") + '71,"台湾省"\n', encoding="utf-8")
    changed = await import_configured(redis, KEYS, [path])
    assert [s.created for s in changed] == [1]


def test_cli_import_prints_rejections_and_exit_status(redis_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "WARND_REDIS_URL": redis_url, "WARND_DATA_DIR": str(tmp_path)}

    def warnd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "warnd", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=env,
        )

    ok = warnd(
        "areas",
        "import",
        "--crs",
        "gcj02",
        str(ADMIN / "cn-stats2023-provinces.csv"),
        str(ADMIN / "cn-stats2023-cities.csv"),
        str(GEO / "datav-371700_full.json"),
    )
    assert ok.returncode == 0, ok.stderr
    assert "31 rows, 31 accepted" in ok.stdout
    assert "datum=gcj02" in ok.stdout and "9 boundaries" in ok.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name\n3717,菏泽市\nxx,坏\n", encoding="utf-8")
    partial = warnd("areas", "import", "--json", str(bad), str(tmp_path / "nope.csv"))
    assert partial.returncode == 2 and "nope.csv: no such file" in partial.stderr
    partial = warnd("areas", "import", "--json", str(bad))
    assert partial.returncode == 1
    summary = json.loads(partial.stdout)[0]
    assert summary["accepted"] == 1
    assert summary["rejected"][0]["line"] == 3
    shown = warnd("areas", "show", "371700")
    assert shown.returncode == 0
    assert "3717 菏泽市" in shown.stdout and "371721 曹县" in shown.stdout
