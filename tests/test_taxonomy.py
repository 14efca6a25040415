"""The hazard taxonomy: the shipped file, classification of real alerts, validation."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from warnd.errors import ConfigError
from warnd.model import Category, Certainty, Info, Level, Severity, Urgency, ValuePair
from warnd.taxonomy import Hazard, Taxonomy, default_path, load_default

DATA = Path("/work/shared/data")
CAP_DIR = DATA / "cap"
CMA_DIR = DATA / "cma"

BL, YE, OR, RE = Level.BLUE, Level.YELLOW, Level.ORANGE, Level.RED
ALL_FOUR = (BL, YE, OR, RE)


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_default()


def make_info(event: str = "暴雨", **fields: Any) -> Info:
    body: dict[str, Any] = {
        "language": "zh-CN",
        "categories": ["Met"],
        "event": event,
        "urgency": "Expected",
        "severity": "Moderate",
        "certainty": "Likely",
    }
    body.update(fields)
    return Info.model_validate(body)


# ------------------------------------------------------------ shipped file


def test_shipped_file_loads(tax: Taxonomy) -> None:
    assert default_path() == Path(__file__).resolve().parents[1] / "config" / "taxonomy.toml"
    assert len(tax) >= 20
    assert len(list(tax)) == len(tax)
    for hazard in tax:
        assert hazard.zh and hazard.zh_hant and hazard.en
        assert hazard.levels, hazard.code
        assert list(hazard.levels) == sorted(hazard.levels, key=lambda lv: lv.rank)


CMA_CODES = {
    "01": ("typhoon", "台风"),
    "02": ("rainstorm", "暴雨"),
    "03": ("snowstorm", "暴雪"),
    "04": ("cold_wave", "寒潮"),
    "05": ("gale", "大风"),
    "06": ("sandstorm", "沙尘暴"),
    "07": ("heat_wave", "高温"),
    "08": ("drought", "干旱"),
    "09": ("lightning", "雷电"),
    "10": ("hail", "冰雹"),
    "11": ("frost", "霜冻"),
    "12": ("fog", "大雾"),
    "13": ("haze", "霾"),
    "14": ("road_icing", "道路结冰"),
}


@pytest.mark.parametrize(("cma", "expected"), sorted(CMA_CODES.items()))
def test_cma_codes(tax: Taxonomy, cma: str, expected: tuple[str, str]) -> None:
    code, zh = expected
    hazard = tax.by_cma_code(cma)
    assert (hazard.code, hazard.zh, hazard.cma_code) == (code, zh, cma)
    assert hazard.category in (Category.MET, Category.ENV)
    # The weather.com.cn alarm code is type + level: 0203 is rainstorm orange.
    assert tax.by_cma_code(cma + "03") is hazard


def test_unknown_cma_code(tax: Taxonomy) -> None:
    with pytest.raises(KeyError, match="'77'"):
        tax.by_cma_code("77")


LEVELS = {
    "typhoon": ALL_FOUR,
    "rainstorm": ALL_FOUR,
    "snowstorm": ALL_FOUR,
    "cold_wave": ALL_FOUR,
    "gale": ALL_FOUR,
    "sandstorm": (YE, OR, RE),
    "heat_wave": (YE, OR, RE),
    "drought": (OR, RE),
    "lightning": (YE, OR, RE),
    "hail": (OR, RE),
    "frost": (BL, YE, OR),
    "fog": (YE, OR, RE),
    "haze": (YE, OR, RE),
    "road_icing": (YE, OR, RE),
    "flood": ALL_FOUR,
    "mountain_torrent": ALL_FOUR,
    "geological_hazard": ALL_FOUR,
    "landslide": ALL_FOUR,
    "debris_flow": ALL_FOUR,
    "collapse": ALL_FOUR,
}


@pytest.mark.parametrize(("code", "levels"), sorted(LEVELS.items()))
def test_required_hazards_and_levels(tax: Taxonomy, code: str, levels: tuple[Level, ...]) -> None:
    assert code in tax
    assert tax.levels_of(code) == levels
    hazard = tax.get(code)
    assert all(hazard.has_level(lv) for lv in levels)
    assert not any(hazard.has_level(lv) for lv in set(ALL_FOUR) - set(levels))


def test_names(tax: Taxonomy) -> None:
    expected = {
        "typhoon": ("台风", "颱風", "Typhoon"),
        "flood": ("洪水", "洪水", "Flood"),
        "mountain_torrent": ("山洪", "山洪", "Mountain Torrent"),
        "geological_hazard": ("地质灾害", "地質災害", "Geological Hazard"),
        "landslide": ("滑坡", "滑坡", "Landslide"),
        "debris_flow": ("泥石流", "泥石流", "Debris Flow"),
        "collapse": ("崩塌", "崩塌", "Collapse"),
        "road_icing": ("道路结冰", "道路結冰", "Road Icing"),
    }
    for code, (zh, zh_hant, en) in expected.items():
        hazard = tax.get(code)
        assert (hazard.zh, hazard.zh_hant, hazard.en) == (zh, zh_hant, en)


def test_geological_subtypes(tax: Taxonomy) -> None:
    subtypes = {"landslide", "debris_flow", "collapse"}
    for code in subtypes:
        assert tax.get(code).parent == "geological_hazard"
        assert tax.get(code).category is Category.GEO
    assert tax.get("geological_hazard").parent is None
    assert {h.code for h in tax.children("geological_hazard")} == subtypes


def test_hazard_name_by_language(tax: Taxonomy) -> None:
    typhoon = tax.get("typhoon")
    for lang in ("zh", "zh-CN", "zh-Hans", "zh-Hans-CN", "zh-SG", "ZH-cn"):
        assert typhoon.name(lang) == "台风", lang
    for lang in ("zh-TW", "zh-tw", "zh-Hant", "zh-HK", "zh-MO", "zh-Hant-TW", "zh_TW"):
        assert typhoon.name(lang) == "颱風", lang
    for lang in ("en-US", "en", "fr-CA", "ja"):
        assert typhoon.name(lang) == "Typhoon", lang


def test_get_unknown_code_is_helpful(tax: Taxonomy) -> None:
    with pytest.raises(KeyError, match=r"rainstrom.*did you mean rainstorm"):
        tax.get("rainstrom")
    assert "rainstorm" in tax
    assert "nope" not in tax
    assert 2 not in tax


# ------------------------------------------------------------ event matching


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ("降雨", "rainstorm"),
        ("大雨", "rainstorm"),
        ("豪雨特報", "rainstorm"),
        ("Heavy Rain Warning", "rainstorm"),
        ("暴雨红色预警信号", "rainstorm"),
        ("颱風", "typhoon"),
        ("台風", "typhoon"),
        ("Hurricane Warning", "typhoon"),
        ("Tropical Cyclone Alert", "typhoon"),
        ("Aviso de Ciclón Tropical en el Pacífico", "typhoon"),
        ("Flash Flood Watch", "mountain_torrent"),
        ("FLASH FLOOD WARNING", "mountain_torrent"),
        ("Flood Warning", "flood"),
        ("Flood", "flood"),
        ("Coastal Flood Advisory", "storm_surge"),
        ("Landslide", "landslide"),
        ("Debris Flow", "debris_flow"),
        ("土石流", "debris_flow"),
        ("山崩", "landslide"),
        ("地质灾害气象风险预警", "geological_hazard"),
        ("Earthquake", "earthquake"),
        ("地震", "earthquake"),
        ("Tsunami Cancellation", "tsunami"),
        ("海嘯", "tsunami"),
        ("高溫", "heat_wave"),
        ("Extreme Heat", "heat_wave"),
        ("Blizzard Warning", "snowstorm"),
        ("Winter Storm Watch", "snowstorm"),
        ("Severe Thunderstorm Warning", "thunderstorm_gale"),
        ("雷雨大风黄色预警", "thunderstorm_gale"),
        ("雷雨", "lightning"),
        ("大雷雨", "lightning"),
        ("Wind Chill Advisory", "cold_wave"),
        ("Weather Warning: Wind", "gale"),
        ("HeavyFog", "fog"),
        ("Freezing Rain Advisory", "road_icing"),
        ("Red Flag Warning", "forest_fire"),
        ("森林（草原）火险", "forest_fire"),
        ("Tornado Warning", "severe_convection"),
    ],
)
def test_match_event(tax: Taxonomy, event: str, code: str) -> None:
    hazard = tax.match_event(event)
    assert hazard is not None, event
    assert hazard.code == code


def test_generated_event_names_round_trip(tax: Taxonomy) -> None:
    """Events written the way warnd itself words them classify back exactly."""
    for hazard in tax:
        for language in ("zh-CN", "zh-TW", "en-US"):
            name = hazard.name(language)
            for level in hazard.levels:
                if language.startswith("zh"):
                    event = f"{name}{level.zh}预警"
                else:
                    event = f"{name} {level.value} warning"
                assert tax.classify(make_info(event, severity="Unknown")) == (
                    hazard.code,
                    level,
                ), event


def test_match_event_no_match(tax: Taxonomy) -> None:
    assert tax.match_event("Fire") is None
    assert tax.match_event("Administrative Message") is None
    # Whole words only for Latin script: "heat" is not in "wheat".
    assert tax.match_event("Wheat Harvest Notice") is None


def test_match_event_codes(tax: Taxonomy) -> None:
    def pair(name: str, value: str) -> ValuePair:
        return ValuePair(value_name=name, value=value)

    def code_of(event: str, *pairs: ValuePair) -> str | None:
        hazard = tax.match_event(event, pairs)
        return hazard.code if hazard is not None else None

    assert code_of("Weather Alert", pair("SAME", "FFW")) == "mountain_torrent"
    assert code_of("Weather Alert", pair("SAME", "EQW")) == "earthquake"
    assert code_of("Weather Alert", pair("SAME", "HUW")) == "typhoon"
    assert code_of("雨", pair("profile:CAP-TWP:Event:1.0", "rainfall")) == "rainstorm"
    assert code_of("orages", pair("profile:CAP-CP:Event:0.4", "thunderstorm")) == "lightning"
    assert code_of("预警", pair("cma", "0203")) == "rainstorm"
    # warnd's own eventCode wins over the event text; unknown codes are ignored.
    assert code_of("暴雨", pair("warnd:hazard", "flood")) == "flood"
    assert code_of("暴雨", pair("warnd:hazard", "nonsense")) == "rainstorm"
    # An exact event match is preferred to a contradicting eventCode.
    assert code_of("Flood Warning", pair("SAME", "FFW")) == "flood"


# ------------------------------------------------------------ real CAP files


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(el: ET.Element, name: str) -> str | None:
    for child in el:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return None


def _pairs(el: ET.Element, name: str) -> list[dict[str, str]]:
    return [
        {"value_name": _child_text(c, "valueName") or "?", "value": _child_text(c, "value") or ""}
        for c in el
        if _local(c.tag) == name
    ]


def _enum_or_unknown(enum: Any, value: str | None) -> Any:
    try:
        return enum(value)
    except ValueError:  # empty or misspelt in real feeds (see the cap11 errors sample)
        return enum("Unknown")


def _real_infos(path: Path) -> list[Info]:
    """The info blocks of a CAP file, as far as classification needs them."""
    root = ET.parse(path).getroot()  # noqa: S314 - trusted test fixtures
    infos = []
    for el in root:
        if _local(el.tag) != "info":
            continue
        infos.append(
            Info.model_validate(
                {
                    "language": _child_text(el, "language") or "en-US",
                    "categories": [c.text for c in el if _local(c.tag) == "category"],
                    "event": _child_text(el, "event"),
                    "urgency": _enum_or_unknown(Urgency, _child_text(el, "urgency")),
                    "severity": _enum_or_unknown(Severity, _child_text(el, "severity")),
                    "certainty": _enum_or_unknown(Certainty, _child_text(el, "certainty")),
                    "headline": _child_text(el, "headline"),
                    "event_codes": _pairs(el, "eventCode"),
                    "parameters": _pairs(el, "parameter"),
                }
            )
        )
    return infos


REAL_CAP_FILES = sorted(p for p in CAP_DIR.rglob("*.xml") if "invalid" not in p.parts)

# (hazard, level) per info block, in document order.
EXPECTED: dict[str, list[tuple[str | None, Level | None]]] = {
    "oasis11-amber-KAR0-0306112239-SW.xml": [("other", OR)],
    "us-nws-blizzard-warning-cap11-empty-polygon.xml": [("snowstorm", OR)],
    "us-nws-flashfloodwatch-cap11.xml": [("mountain_torrent", OR)],
    "us-nws-floodwarning-errors-cap11.xml": [("flood", None)],  # empty severity
    "au-nsw-rfs-bushfire.xml": [(None, BL), (None, BL)],  # a structure fire: no hazard
    "ca-ec-update-multilang.xml": [("lightning", YE), ("lightning", YE)],  # Minor, lifted
    "is-imo-wind-warning-is-en-polygon.xml": [("gale", YE), ("gale", YE)],
    "mx-smn-tropical-cyclone-update-es.xml": [("typhoon", RE)],  # semáforo red
    "ph-pagasa-tropical-cyclone-test.xml": [("typhoon", BL)],
    "oasis-cap12-A1-homeland-security.xml": [("other", OR)],  # HSAS ORANGE
    "oasis-cap12-A2-severe-thunderstorm-polygon.xml": [("thunderstorm_gale", OR)],
    "oasis-cap12-A3-earthquake-update-circle.xml": [("earthquake", BL)],
    "oasis-cap12-A4-amber-multilang-en-es.xml": [("other", OR), ("other", OR)],
    "us-athoc-cancel-no-info.xml": [],
    "us-ipaws-local-area-emergency-polygon-wea.xml": [("other", RE)],
    "us-ipaws-nv-cancel-references.xml": [],
    "us-ntwc-tsunami-cancellation-update-circle.xml": [("tsunami", None)],
    "us-nws-hurricane-warning-update-2-polygons.xml": [("typhoon", RE)],
    "us-usgs-earthquake-iso8859-1.xml": [("earthquake", None)],
    "us-wcatwc-tsunami-update.xml": [("tsunami", RE)],
    "tw-cwa-earthquake-circle-geocodes.xml": [("earthquake", YE)],
    "tw-cwa-heat-3-info-levels.xml": [("heat_wave", OR), ("heat_wave", OR), ("heat_wave", YE)],
    "tw-cwa-heavy-rain-1-alert.xml": [("rainstorm", YE)],
    "tw-cwa-heavy-rain-2-update.xml": [("rainstorm", OR), ("rainstorm", YE)],
    "tw-cwa-heavy-rain-3-update.xml": [("rainstorm", YE)],
    "tw-cwa-heavy-rain-4-cancel.xml": [("rainstorm", BL)],
    "tw-cwa-thunderstorm-polygon.xml": [("lightning", OR)],
    "tw-cwb-tsunami-test-2-info.xml": [("tsunami", OR), ("tsunami", YE)],
    "tw-cwb-typhoon-warning-2-polygons.xml": [("typhoon", OR)],  # Minor, but alert_color 橙色
    "tw-dgpa-work-school-closure.xml": [("other", RE)],
    "tw-wra-reservoir-update-5-info.xml": [("flood", RE)] * 5,
}


def test_real_cap_files_are_all_covered() -> None:
    assert REAL_CAP_FILES, f"no CAP samples under {CAP_DIR}"
    assert {p.name for p in REAL_CAP_FILES} == set(EXPECTED)


@pytest.mark.parametrize("path", REAL_CAP_FILES, ids=lambda p: p.name)
def test_real_cap_events_classify(tax: Taxonomy, path: Path) -> None:
    got = []
    for info in _real_infos(path):
        hazard, level = tax.classify(info)
        if hazard is not None:
            assert level is None or tax.get(hazard).has_level(level)
        got.append((hazard, level))
    assert got == EXPECTED[path.name]


def _cma_feed_signals() -> list[tuple[str, str]]:
    """(signalType, signalLevel) of every station in both feed snapshots."""
    signals: list[tuple[str, str]] = []
    root = ET.parse(CMA_DIR / "weathercomcn-alarminfo-20190309.xml").getroot()  # noqa: S314
    signals += [(s.attrib["signalType"], s.attrib["signalLevel"]) for s in root.iter("Station")]
    doc = json.loads((CMA_DIR / "weathercomcn-alarminfo-20190428.json").read_text("utf-8"))
    for group in doc["AlermInfo"].values():
        if not isinstance(group, dict):
            continue
        stations = group.get("Station", [])
        for s in stations if isinstance(stations, list) else [stations]:
            signals.append((s["signalType"], s["signalLevel"]))
    return sorted(set(signals))


def test_cma_feed_signals_classify(tax: Taxonomy) -> None:
    """The national feed names signals in Chinese; each names a hazard whose
    level set includes the colour the feed issued."""
    signals = _cma_feed_signals()
    assert len(signals) >= 10
    for signal_type, signal_level in signals:
        hazard = tax.match_event(signal_type)
        assert hazard is not None, signal_type
        if hazard.cma_code is not None and int(hazard.cma_code) <= 14:
            assert hazard.zh == signal_type
        assert hazard.has_level(Level.parse(signal_level)), (signal_type, signal_level)
    assert tax.match_event("强对流") == tax.get("severe_convection")
    assert tax.match_event("森林火险") == tax.get("forest_fire")


# ------------------------------------------------------------ levels


def test_level_from_severity(tax: Taxonomy) -> None:
    for severity, level in [("Minor", BL), ("Moderate", YE), ("Severe", OR), ("Extreme", RE)]:
        result = tax.classify_detail(make_info("暴雨", severity=severity))
        assert (result.hazard, result.level, result.level_source) == (
            "rainstorm",
            level,
            "severity",
        )
    assert tax.classify(make_info("暴雨", severity="Unknown")) == ("rainstorm", None)


def test_level_from_colour_parameter(tax: Taxonomy) -> None:
    info = make_info(
        "降雨",
        language="zh-TW",
        severity="Minor",
        parameters=[
            {"value_name": "website_color", "value": "255,128,0"},
            {"value_name": "alert_color", "value": "黃色"},
        ],
    )
    result = tax.classify_detail(info)
    assert (result.hazard, result.level, result.level_source) == ("rainstorm", YE, "parameter")
    meteoalarm = make_info(
        "Wind", parameters=[{"value_name": "awareness_level", "value": "3; orange; Severe"}]
    )
    assert tax.classify(meteoalarm) == ("gale", OR)
    own = make_info("Wind", parameters=[{"value_name": "warnd:level", "value": "red"}])
    assert tax.classify(own) == ("gale", RE)


def test_level_from_headline_and_event(tax: Taxonomy) -> None:
    info = make_info("暴雨", headline="XX市气象台发布暴雨红色预警信号", severity="Minor")
    assert tax.classify_detail(info).level_source == "headline"
    assert tax.classify(info) == ("rainstorm", RE)
    assert tax.classify(make_info("Rainstorm", headline="Orange Warning for rain")) == (
        "rainstorm",
        OR,
    )
    assert tax.classify(make_info("暴雨橙色预警", headline="")) == ("rainstorm", OR)
    # A colour that is part of a name is not a level.
    red_flag = make_info("Red Flag Warning", headline="Red Flag Warning until 8 PM")
    assert tax.classify(red_flag) == ("forest_fire", YE)


def test_explicit_level_and_hazard_win(tax: Taxonomy) -> None:
    info = make_info(
        "暴雨",
        hazard="flood",
        level="red",
        severity="Minor",
        parameters=[{"value_name": "alert_color", "value": "黃色"}],
    )
    result = tax.classify_detail(info)
    assert (result.hazard, result.level, result.level_source) == ("flood", RE, "info")


def test_unknown_explicit_hazard(tax: Taxonomy) -> None:
    with pytest.raises(ValueError, match="'volcano'"):
        tax.classify(make_info("Volcano", hazard="volcano"))


@pytest.mark.parametrize(
    ("event", "fields", "raw", "level"),
    [
        ("干旱", {"severity": "Moderate"}, YE, OR),  # no yellow drought signal
        ("干旱", {"severity": "Minor"}, BL, OR),
        ("霜冻", {"severity": "Extreme"}, RE, OR),  # no red frost signal
        ("冰雹", {"level": "yellow"}, YE, OR),
        ("高温", {"parameters": [{"value_name": "alert_color", "value": "蓝色"}]}, BL, YE),
        ("暴雨", {"severity": "Minor"}, BL, BL),  # rainstorm has blue: untouched
    ],
)
def test_level_clamped_to_hazard(
    tax: Taxonomy, event: str, fields: dict[str, Any], raw: Level, level: Level
) -> None:
    result = tax.classify_detail(make_info(event, **fields))
    assert (result.raw_level, result.level) == (raw, level)
    assert result.clamped == (raw != level)
    assert tax.classify(make_info(event, **fields))[1] == level


def test_unclassified_event_keeps_raw_level(tax: Taxonomy) -> None:
    result = tax.classify_detail(make_info("Administrative Message", severity="Minor"))
    assert (result.hazard, result.level, result.raw_level) == (None, BL, BL)


def test_nearest_level_prefers_higher_on_tie() -> None:
    gappy = Hazard(
        code="x", zh="x", zh_hant="x", en="x", category=Category.MET,
        levels=(BL, RE), cma_code=None, parent=None, aliases=(),
    )  # fmt: skip
    assert gappy.nearest_level(YE) == BL
    assert gappy.nearest_level(OR) == RE


# ------------------------------------------------------------ validation

BROKEN = """\
[rainstorm]
zh = "暴雨"
zh_hant = "暴雨"
en = "Rainstorm"
category = "Met"
cma_code = "02"
levels = ["blue", "yellow", "orange", "red"]

[flood]
zh = "洪水"
en = "Flood"
category = "Wet"
colour = "red"
cma_code = "02"
levels = ["blue", "yellow", "orange", "red"]
aliases = ["Heavy Rain"]

[heavy_rain]
zh = "大雨"
zh_hant = "大雨"
en = "Heavy Rain"
category = "Met"
levels = ["yellow", "purple"]
parent = "geological"

[landslide]
zh = "滑坡"
zh_hant = "滑坡"
en = "Landslide"
category = "Geo"
cma_code = 5
levels = ["blue", "blue"]
aliases = ["暴雨"]
"""


def test_broken_file_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.toml"
    path.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Taxonomy.load(path)
    problems = caught.value.problems
    text = "\n".join(problems)
    expected = [
        f"{path}:flood.zh_hant: required but missing",
        f"{path}:flood.category: Input should be",  # ... (got 'Wet')
        f"{path}:flood.colour: unknown key (allowed: zh, zh_hant, en, category,",
        # Cross-hazard clashes are found even in a table with other problems.
        f"{path}:flood.cma_code: '02' is already rainstorm's",
        f"{path}:heavy_rain.levels[1]: Input should be 'blue', 'yellow', 'orange' or 'red'",
        f"{path}:heavy_rain.parent: unknown hazard 'geological'",
        f"{path}:heavy_rain.en: 'Heavy Rain' would also classify to flood (as its aliases[0])",
        f"{path}:landslide.cma_code: Input should be a valid string (got 5)",
        f"{path}:landslide.levels: 'blue' is listed twice",
        f"{path}:landslide.aliases[0]: '暴雨' would also classify to rainstorm (as its zh)",
    ]
    for fragment in expected:
        assert any(p.startswith(fragment) for p in problems), (fragment, text)
    assert "(got 'Wet')" in text and "(got 'purple')" in text
    assert len(problems) == len(expected), text
    assert "10 problems" in caught.value.detail
    assert all(p in caught.value.detail for p in problems)


def test_duplicate_alias_across_hazards(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.toml"
    path.write_text(
        """\
[flood]
zh = "洪水"
zh_hant = "洪水"
en = "Flood"
category = "Met"
levels = ["blue", "yellow", "orange", "red"]
aliases = ["Heavy Rain"]
same_codes = ["FLW", "flw"]

[rainstorm]
zh = "暴雨"
zh_hant = "暴雨"
en = "Rainstorm"
category = "Met"
levels = ["blue"]
aliases = ["HEAVY RAIN warning", "Rainstorm"]
same_codes = ["FLW"]
parent = "rainstorm"
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        Taxonomy.load(path)
    problems = caught.value.problems
    assert len(problems) == 4, problems
    assert any(p.startswith(f"{path}:flood.same_codes[1]:") for p in problems)
    assert any(
        p.startswith(f"{path}:rainstorm.aliases[0]: 'HEAVY RAIN warning' would also classify")
        for p in problems
    )
    assert f"{path}:rainstorm.same_codes: 'FLW' is already flood's" in problems
    assert f"{path}:rainstorm.parent: a hazard cannot be its own parent" in problems


def test_non_table_and_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy.toml"
    path.write_text("version = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Taxonomy.load(path)
    assert caught.value.problems == [f"{path}:version: expected a [version] table, got int"]

    path.write_text("[rainstorm\nzh = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Taxonomy.load(path)

    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="defines no hazards"):
        Taxonomy.load(path)

    with pytest.raises(ConfigError, match="cannot read"):
        Taxonomy.load(tmp_path / "missing.toml")


def test_subtypes_are_one_level_deep(tmp_path: Path) -> None:
    table = 'zh = "{0}"\nzh_hant = "{0}"\nen = "{0}"\ncategory = "Geo"\nlevels = ["red"]\n'
    path = tmp_path / "taxonomy.toml"
    path.write_text(
        "[a]\n" + table.format("甲")
        + '[b]\nparent = "a"\n' + table.format("乙")
        + '[c]\nparent = "b"\n' + table.format("丙"),
        encoding="utf-8",
    )  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        Taxonomy.load(path)
    assert caught.value.problems == [
        f"{path}:c.parent: 'b' is itself a subtype of 'a'; subtypes are one level deep"
    ]
