"""Rendering: templates, fallbacks, guidelines, channel limits, variants."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from warnd.cap import parse_cap
from warnd.errors import ConfigError
from warnd.identifiers import alert_id
from warnd.limits import LengthUnit, MessageLimits
from warnd.model import (
    Alert,
    Area,
    Category,
    Certainty,
    Info,
    Level,
    MsgType,
    Reference,
    Scope,
    Severity,
    Status,
    Urgency,
)
from warnd.render import Renderer
from warnd.settings import RenderSettings, Settings
from warnd.taxonomy import Taxonomy, load_default
from warnd.textfit import graphemes, ucs2_units, utf8_bytes

REPO = Path(__file__).resolve().parent.parent
CAP_DATA = REPO.parent / "shared" / "data" / "cap"
SENT = datetime.fromisoformat("2030-07-01T14:00:00+08:00")

UNLIMITED = {
    "sms": MessageLimits(LengthUnit.UCS2),
    "wechat": MessageLimits(LengthUnit.UTF8_BYTES, max_length=2048),
    "wechat-md": MessageLimits(LengthUnit.UTF8_BYTES, max_length=4096, markdown=True),
    "email": MessageLimits(LengthUnit.CHARS),
    "board": MessageLimits(LengthUnit.CHARS, line_chars=20),
}


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_default()


def render_settings(**render: object) -> Settings:
    values: dict[str, object] = {
        "templates_dir": REPO / "templates",
        "guidelines_file": REPO / "config" / "guidelines.toml",
    }
    values.update(render)
    return Settings(render=RenderSettings.model_validate(values))


@pytest.fixture(scope="module")
def renderer(taxonomy: Taxonomy) -> Renderer:
    return Renderer.load(render_settings(), taxonomy)


def make_alert(
    hazard: str | None,
    level: Level | None,
    *,
    language: str = "zh-CN",
    msg_type: MsgType = MsgType.ALERT,
    event: str = "暴雨",
    office: str = "曹县气象台",
    description: str = "预计未来3小时曹县降雨量将达100毫米以上。",
    areas: tuple[str, ...] = ("曹县", "单县"),
    sent: datetime = SENT,
    status: Status = Status.ACTUAL,
    identifier: str = "37172141600000_20300701140000_1",
) -> tuple[Alert, Info]:
    info = Info(
        language=language,
        categories=[Category.MET],
        event=event,
        urgency=Urgency.IMMEDIATE,
        severity=level.severity if level else Severity.UNKNOWN,
        certainty=Certainty.LIKELY,
        onset=sent,
        expires=sent + timedelta(hours=6),
        sender_name=office,
        description=description,
        areas=[Area(area_desc=a) for a in areas],
        hazard=hazard,
        level=level,
    )
    refs = (
        [Reference(sender="caoxian@cma", identifier="earlier", sent=sent - timedelta(hours=1))]
        if msg_type is not MsgType.ALERT
        else []
    )
    alert = Alert(
        identifier=identifier,
        sender="caoxian@cma",
        sent=sent,
        status=status,
        msg_type=msg_type,
        scope=Scope.PUBLIC,
        references=refs,
        infos=[info],
    )
    return alert, info


def channel_of(name: str) -> str:
    return name.split("-")[0]


# ------------------------------------------------------------ every hazard


@pytest.mark.parametrize("hazard_code", [h.code for h in load_default()])
def test_every_hazard_level_language_and_channel_renders_the_essentials(
    renderer: Renderer, taxonomy: Taxonomy, hazard_code: str
) -> None:
    hazard = taxonomy.get(hazard_code)
    for level in hazard.levels:
        for language, office, event in (
            ("zh-Hans", "曹县气象台", hazard.zh),
            ("en", "Caoxian Meteorological Observatory", hazard.en),
        ):
            alert, info = make_alert(hazard_code, level, language=language, office=office,
                                     event=event)  # fmt: skip
            if language == "zh-Hans":
                title = f"{hazard.zh}{level.zh}预警"
            else:
                title = f"{hazard.en} {level.value.title()} Warning"
            guideline = renderer.guidelines.lookup(hazard_code, level, language)
            assert guideline is not None and guideline.language == language
            for name, limits in UNLIMITED.items():
                out = renderer.render(alert, info, channel_of(name), limits, language)
                where = f"{hazard_code}/{level.value}/{language}/{name}"
                assert out.text.strip(), where
                assert office in out.text, where
                assert title in out.text, where
                assert "曹县" in out.text, where
                assert all(item in out.text for item in guideline.items), where
                assert not out.shortened, where
                assert out.language == language
                if name == "email":
                    assert out.subject and title in out.subject
                    assert out.html and title in out.html and guideline.items[0] in out.html
                if name == "board":
                    assert out.lines and all(len(graphemes(ln)) <= 20 for ln in out.lines)


def test_shipped_templates_and_guidelines_pass_check(renderer: Renderer) -> None:
    assert renderer.check() == []
    assert renderer.channels == ["board", "email", "sms", "wechat"]


def test_valid_time_is_beijing_time_for_chinese(renderer: Renderer) -> None:
    utc = datetime.fromisoformat("2030-07-01T06:00:00+00:00")
    alert, info = make_alert("rainstorm", Level.RED, sent=utc)
    out = renderer.render(alert, info, "sms", UNLIMITED["sms"], "zh")
    assert "7月1日14:00至20:00" in out.text
    alert, info = make_alert("rainstorm", Level.RED, sent=utc, language="en")
    out = renderer.render(alert, info, "sms", UNLIMITED["sms"], "en")
    assert "1 Jul 14:00 to 20:00 (UTC+8)" in out.text


def test_cancel_and_update_have_their_own_wording(renderer: Renderer) -> None:
    alert, info = make_alert("rainstorm", Level.RED, msg_type=MsgType.CANCEL,
                             description="降雨已明显减弱。")  # fmt: skip
    for name, limits in UNLIMITED.items():
        out = renderer.render(alert, info, channel_of(name), limits, "zh-Hans")
        assert "解除暴雨红色预警" in out.text
        assert "防御指南" not in out.text
        assert "发布暴雨红色预警" not in out.text
    sms = renderer.render(alert, info, "sms", UNLIMITED["sms"], "zh-Hans")
    assert sms.text.startswith("【解除暴雨红色预警】曹县气象台于7月1日14:00解除暴雨红色预警")
    email = renderer.render(alert, info, "email", UNLIMITED["email"], "zh-Hans")
    assert email.subject == "曹县气象台解除暴雨红色预警"

    alert, info = make_alert("rainstorm", Level.RED, msg_type=MsgType.UPDATE)
    sms = renderer.render(alert, info, "sms", UNLIMITED["sms"], "zh-Hans")
    assert "曹县气象台于7月1日14:00更新暴雨红色预警" in sms.text
    assert "防御指南" in sms.text

    alert, info = make_alert("rainstorm", Level.RED, msg_type=MsgType.CANCEL, language="en")
    out = renderer.render(alert, info, "sms", UNLIMITED["sms"], "en")
    assert out.text.startswith("[Cancelled: Rainstorm Red Warning]")
    assert "What to do" not in out.text
    alert, info = make_alert("rainstorm", Level.RED, msg_type=MsgType.UPDATE, language="en")
    out = renderer.render(alert, info, "email", UNLIMITED["email"], "en")
    assert out.subject is not None and out.subject.startswith("Updated: Rainstorm Red Warning")


def test_exercise_messages_are_marked(renderer: Renderer) -> None:
    alert, info = make_alert("rainstorm", Level.RED, status=Status.EXERCISE)
    assert renderer.render(alert, info, "sms", UNLIMITED["sms"], "zh").text.startswith("【演练】")


def test_html_is_escaped_and_text_is_not(renderer: Renderer) -> None:
    alert, info = make_alert("rainstorm", Level.RED, description="水位 <3 米 & 上涨 <b>")
    out = renderer.render(alert, info, "email", UNLIMITED["email"], "zh")
    assert out.html is not None and "水位 &lt;3 米 &amp; 上涨 &lt;b&gt;" in out.html
    assert "水位 <3 米 & 上涨 <b>" in out.text


def test_unclassified_info_renders_with_its_event(renderer: Renderer) -> None:
    alert, info = make_alert(None, None, event="停水通知", description="明日8时至18时停水。")
    out = renderer.render(alert, info, "sms", UNLIMITED["sms"], "zh")
    assert "【停水通知】" in out.text and "明日8时至18时停水。" in out.text
    assert "防御指南" not in out.text


# ------------------------------------------------------------ real alerts


def classified(path: Path, taxonomy: Taxonomy) -> Alert:
    alert = parse_cap(path.read_bytes()).alert
    for info in alert.infos:
        info.hazard, info.level = taxonomy.classify(info)
    return alert


def test_real_taiwan_heavy_rain_alert_renders(renderer: Renderer, taxonomy: Taxonomy) -> None:
    alert = classified(CAP_DATA / "zh" / "tw-cwa-heavy-rain-1-alert.xml", taxonomy)
    info = alert.infos[0]
    assert (info.hazard, info.level) == ("rainstorm", Level.YELLOW)
    out = renderer.render(alert, info, "wechat", UNLIMITED["wechat"], info.language)
    assert out.language == "zh-Hans"  # zh-TW falls back: no zh-Hant templates shipped
    assert out.template == "wechat/_default/_any.zh-Hans.j2"
    for expected in (
        "【暴雨黄色预警】",
        "中央氣象署于4月22日14:12发布暴雨黄色预警",
        "花蓮縣鳳林鎮、花蓮縣富里鄉",
        "有效时间：4月22日14:05至17:00",
        "政府及相关部门按照职责做好防暴雨工作",
        "鋒面接近，易有短延時強降雨",
    ):
        assert expected in out.text
    sms = renderer.render(
        alert, info, "sms", MessageLimits(LengthUnit.UCS2, max_parts=2), "zh-TW",
        full_text_url="https://yj.example.gov.cn/a/1",
    )  # fmt: skip
    assert sms.parts <= 2 and sms.shortened
    assert sms.text.endswith("详见：https://yj.example.gov.cn/a/1")
    for kept in ("暴雨黄色预警", "中央氣象署", "4月22日14:05至17:00"):
        assert kept in sms.text


def test_real_taiwan_cancel_renders_as_cancel(renderer: Renderer, taxonomy: Taxonomy) -> None:
    alert = classified(CAP_DATA / "zh" / "tw-cwa-heavy-rain-4-cancel.xml", taxonomy)
    info = alert.infos[0]
    out = renderer.render(alert, info, "sms", UNLIMITED["sms"], info.language)
    assert out.text.startswith("【解除暴雨")
    assert "中央氣象署" in out.text and "基隆市" in out.text


def test_real_us_alert_renders_in_english(renderer: Renderer, taxonomy: Taxonomy) -> None:
    alert = classified(CAP_DATA / "us" / "us-nws-hurricane-warning-update-2-polygons.xml", taxonomy)
    info = alert.infos[0]
    out = renderer.render(alert, info, "email", UNLIMITED["email"], info.language)
    assert out.language == "en"
    assert out.subject is not None and out.subject.startswith("Updated: Typhoon")
    assert info.sender_name and info.sender_name in out.text


# ------------------------------------------------------------ length rules


def test_sms_max_parts_cuts_and_links_to_the_full_text(renderer: Renderer) -> None:
    long = "预计未来3小时曹县降雨量将达100毫米以上，" * 20
    alert, info = make_alert("rainstorm", Level.RED, description=long,
                             areas=("曹县", "单县", "成武县", "巨野县", "郓城县"))  # fmt: skip
    url = "https://yj.example.gov.cn/a/x"
    for max_parts in (1, 2, 3, 5):
        limits = MessageLimits(LengthUnit.UCS2, max_parts=max_parts)
        out = renderer.render(alert, info, "sms", limits, "zh", full_text_url=url)
        assert out.shortened
        assert out.parts <= max_parts
        assert out.length == ucs2_units(out.text)
        assert out.text.endswith(f"详见：{url}")
        if max_parts >= 3:  # room enough: office, hazard, level and valid time stay whole
            for kept in ("曹县气象台", "暴雨红色预警", "7月1日14:00至20:00"):
                assert kept in out.text
    # without a limit nothing is cut and no link is added
    out = renderer.render(alert, info, "sms", UNLIMITED["sms"], "zh", full_text_url=url)
    assert not out.shortened and url not in out.text and out.parts > 5


def test_shortening_drops_guideline_before_description_before_areas(renderer: Renderer) -> None:
    areas = tuple(f"第{i}镇" for i in range(1, 21))
    alert, info = make_alert("rainstorm", Level.RED, areas=areas)
    full = renderer.render(alert, info, "sms", UNLIMITED["sms"], "zh")
    # a budget just below the whole: the last guideline item goes first
    limits = MessageLimits(LengthUnit.UCS2, max_length=full.length - 5)
    out = renderer.render(alert, info, "sms", limits, "zh")
    assert out.shortened and "1.政府及相关部门" in out.text and "3.做好山洪" not in out.text
    assert "第20镇" in out.text and "预计未来3小时" in out.text
    # a tight budget: the area list is summarised, never cut mid-name
    limits = MessageLimits(LengthUnit.UCS2, max_parts=1, sms_single=110)
    out = renderer.render(alert, info, "sms", limits, "zh")
    assert out.shortened and "等20个地区" in out.text
    assert "曹县气象台" in out.text and "7月1日14:00至20:00" in out.text


def test_non_bmp_text_is_never_split(renderer: Renderer) -> None:
    family = "👨\u200d👩\u200d👧"
    desc = ("请注意" + family + "𠀀") * 30
    alert, info = make_alert("rainstorm", Level.RED, description=desc, areas=("𠀀𠀁村",))
    originals = set(graphemes(desc)) | set(graphemes("".join(("𠀀𠀁村",))))
    for budget in range(60, 200, 7):
        out = renderer.render(
            alert, info, "sms", MessageLimits(LengthUnit.UCS2, max_length=budget), "zh"
        )
        assert ucs2_units(out.text) <= budget
        out.text.encode("utf-8")  # would raise on a lone surrogate
        if family[0] in out.text:
            assert all(g in originals or g.isascii() or len(g) == 1 for g in graphemes(out.text))
            assert out.text.count("👨") == out.text.count(family)


def test_wechat_byte_limits(renderer: Renderer) -> None:
    long = "受强降雨影响，河道水位持续上涨。" * 200  # ~9,600 bytes
    alert, info = make_alert("flood", Level.RED, description=long)
    url = "https://yj.example.gov.cn/a/flood"
    text = renderer.render(
        alert, info, "wechat", MessageLimits(LengthUnit.UTF8_BYTES, max_length=2048), "zh",
        full_text_url=url,
    )  # fmt: skip
    assert text.shortened and utf8_bytes(text.text) <= 2048 and text.length <= 2048
    assert not text.markdown and text.text.endswith(url)
    md = renderer.render(
        alert, info, "wechat",
        MessageLimits(LengthUnit.UTF8_BYTES, max_length=4096, markdown=True), "zh",
        full_text_url=url,
    )  # fmt: skip
    assert md.shortened and md.markdown and utf8_bytes(md.text) <= 4096
    assert md.template == "wechat/_default/_any.zh-Hans.md.j2"
    assert md.text.endswith(f"[详见全文]({url})")
    assert "洪水红色预警" in md.text and "曹县气象台" in md.text


def test_board_wraps_to_lines_and_fits_the_screen(renderer: Renderer) -> None:
    alert, info = make_alert("rainstorm", Level.RED)
    limits = MessageLimits(LengthUnit.CHARS, line_chars=12, lines=6)
    out = renderer.render(alert, info, "board", limits, "zh")
    assert out.lines is not None and 0 < len(out.lines) <= 6
    assert all(len(graphemes(line)) <= 12 for line in out.lines)
    assert out.lines[0] == "暴雨红色预警" and out.shortened
    assert "详见" not in out.text  # no links on a board
    alert, info = make_alert("rainstorm", Level.RED, language="en",
                             office="Caoxian Observatory")  # fmt: skip
    out = renderer.render(
        alert, info, "board", MessageLimits(LengthUnit.CHARS, line_chars=16), "en"
    )
    assert out.lines is not None and "Rainstorm Red" in out.lines[0]
    words = set(out.text.split())
    # Latin words are never broken across lines
    assert all(w in words for line in out.lines for w in line.split() if w.isascii())


def test_email_subject_is_cut_to_its_limit(renderer: Renderer) -> None:
    alert, info = make_alert("rainstorm", Level.RED, office="山东省菏泽市曹县气象台" * 3)
    out = renderer.render(alert, info, "email", MessageLimits(LengthUnit.CHARS, max_subject=20),
                          "zh")  # fmt: skip
    assert out.subject is not None and len(graphemes(out.subject)) <= 20
    assert out.subject.endswith("…") and out.shortened


def test_full_text_url_from_settings(taxonomy: Taxonomy) -> None:
    r = Renderer.load(
        render_settings(full_text_url="https://yj.example.gov.cn/alerts/{id}"), taxonomy
    )
    alert, info = make_alert("rainstorm", Level.RED, description="很长的说明。" * 40)
    out = r.render(alert, info, "sms", MessageLimits(LengthUnit.UCS2, max_parts=2), "zh")
    expected = f"https://yj.example.gov.cn/alerts/{alert_id(alert.sender, alert.identifier)}"
    assert out.text.endswith(expected)


# ------------------------------------------------------------ variants


def test_languages_collapse_and_areas_count_only_when_used(renderer: Renderer) -> None:
    alert, info = make_alert("rainstorm", Level.RED)
    variants = renderer.variants(alert, info)
    limits = UNLIMITED["sms"]
    a = variants.get("sms", limits, "zh", ["曹县"])
    b = variants.get("sms", limits, "zh-CN", ["曹县"])
    c = variants.get("sms", limits, "zh-Hans", ["曹县"])
    assert a is b is c and variants.renders == 1
    d = variants.get("sms", limits, "zh", ["单县"])  # the shipped templates show the areas
    assert d.variant_key != a.variant_key and "单县" in d.text and variants.renders == 2


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_recipients_render_once_per_variant(
    tmp_path: Path, renderer: Renderer, taxonomy: Taxonomy
) -> None:
    no_areas = write(
        tmp_path / "t",
        {
            "sms/_default/_any.zh-Hans.j2": "【{{ title }}】{{ office }}：{{ guide | join('；') }}",
            "sms/_default/_any.en.j2": "[{{ title }}] {{ office }}",
            "wechat/_default/_any.zh-Hans.j2": "{{ title }} {{ office }}",
            "wechat/_default/_any.en.j2": "{{ title }} {{ office }}",
        },
    )
    r = Renderer.load(render_settings(templates_dir=no_areas), taxonomy)
    alert, info = make_alert("rainstorm", Level.RED)
    sms = MessageLimits(LengthUnit.UCS2, max_parts=3)
    wechat = MessageLimits(LengthUnit.UTF8_BYTES, max_length=2048)
    areas = (["曹县"], ["单县"], ["成武县"])
    recipients = [
        (n, ch, lim, lang, areas[n % 3])
        for n in range(1000)
        for ch, lim in (("sms", sms), ("wechat", wechat))
        for lang in (("zh-CN", "zh")[n % 2], "en")
    ]
    variants = r.variants(alert, info)
    groups = variants.group(recipients)
    assert variants.renders == len(groups) == 4  # channel × language
    assert sum(len(items) for _, items in groups.values()) == len(recipients)
    # the shipped templates list the areas: one render per area as well
    variants = renderer.variants(alert, info)
    groups = variants.group(recipients)
    assert variants.renders == len(groups) == 4 * 3


# ------------------------------------------------------------ fallbacks


def test_fallback_chain_picks_the_most_specific_template(
    tmp_path: Path, taxonomy: Taxonomy
) -> None:
    chain = [
        ("sms/landslide/red.zh-Hans.j2", "hazard-level"),
        ("sms/landslide/_any.zh-Hans.j2", "hazard-any"),
        ("sms/geological_hazard/red.zh-Hans.j2", "parent-level"),
        ("sms/geological_hazard/_any.zh-Hans.j2", "parent-any"),
        ("sms/_default/red.zh-Hans.j2", "default-level"),
        ("sms/_default/_any.zh-Hans.j2", "default-any"),
        ("_default/_default/_any.zh-Hans.j2", "generic-channel"),
        ("sms/_default/_any.en.j2", "english"),
    ]
    root = write(tmp_path / "t", {name: f"{tag} {{{{ title }}}}" for name, tag in chain})
    alert, info = make_alert("landslide", Level.RED)
    limits = MessageLimits(LengthUnit.UCS2)
    for name, tag in chain:
        r = Renderer.load(render_settings(templates_dir=root), taxonomy)
        out = r.render(alert, info, "sms", limits, "zh-CN")
        assert out.template == name
        title = "Landslide Red Warning" if tag == "english" else "滑坡红色预警"
        assert out.text == f"{tag} {title}"
        (root / name).unlink()
    with pytest.raises(ConfigError, match="no text template for sms/landslide/red"):
        Renderer.load(render_settings(templates_dir=root), taxonomy).render(
            alert, info, "sms", limits, "zh-CN"
        )


def test_language_fallbacks(tmp_path: Path, taxonomy: Taxonomy) -> None:
    root = write(
        tmp_path / "t",
        {
            "sms/_default/_any.zh-Hans.j2": "简 {{ title }}",
            "sms/_default/_any.en.j2": "en {{ title }}",
            "sms/_default/_any.es.j2": "es {{ hazard }}",
        },
    )
    r = Renderer.load(render_settings(templates_dir=root), taxonomy)
    alert, info = make_alert("rainstorm", Level.RED)
    limits = MessageLimits(LengthUnit.UCS2)
    cases = {
        "zh": "简 暴雨红色预警",
        "zh-CN": "简 暴雨红色预警",
        "zh-TW": "简 暴雨红色预警",  # no zh-Hant template: Simplified
        "en-US": "en Rainstorm Red Warning",
        "es-MX": "es Rainstorm",
        "fr": "en Rainstorm Red Warning",
    }
    for language, text in cases.items():
        assert r.render(alert, info, "sms", limits, language).text == text, language
    write(root, {"sms/_default/_any.zh-Hant.j2": "繁 {{ title }}"})
    r = Renderer.load(render_settings(templates_dir=root), taxonomy)
    out = r.render(alert, info, "sms", limits, "zh-HK")
    assert (out.text, out.language) == ("繁 暴雨紅色預警", "zh-Hant")


# ------------------------------------------------------------ broken templates


def test_broken_templates_are_reported_with_their_file(tmp_path: Path, taxonomy: Taxonomy) -> None:
    root = write(
        tmp_path / "t",
        {
            "sms/_default/_any.zh-Hans.j2": "{{ title }}",
            "sms/rainstorm/red.zh-Hans.j2": "{{ title }}\n{% if office %}no end",
            "sms/gale/red.zh-Hans.j2": "{{ title }} {{ nonsense }}",
            "sms/hail/red.zh-Hans.j2": "{{ title }} {{ guide.first.word }}",
            "sms/drought/blue.zh-Hans.j2": "{{ title }}",
            "sms/rainstrom/red.zh-Hans.j2": "{{ title }}",
            "sms/notes.txt.j2": "x",
        },
    )
    with pytest.raises(ConfigError) as caught:
        Renderer.load(render_settings(templates_dir=root), taxonomy)
    problems = "\n".join(caught.value.problems)
    assert "sms/rainstorm/red.zh-Hans.j2:2:" in problems
    assert "sms/gale/red.zh-Hans.j2: unknown variable nonsense" in problems
    assert "sms/hail/red.zh-Hans.j2:1: UndefinedError" in problems
    assert "sms/drought/blue.zh-Hans.j2: drought has no blue level" in problems
    assert "sms/rainstrom/red.zh-Hans.j2: 'rainstrom' is not a hazard" in problems
    assert "sms/notes.txt.j2: not named" in problems
    assert len(caught.value.problems) == 6


def test_check_lists_missing_templates_and_guideline_gaps(
    tmp_path: Path, taxonomy: Taxonomy
) -> None:
    root = write(tmp_path / "t", {"sms/_default/_any.zh-Hans.j2": "{{ title }}"})
    guidelines = write(
        tmp_path / "g",
        {"g.toml": '[rainstorm.red]\nzh-Hans.guide = ["躲避"]\nen.guide = ["Hide"]\n'},
    )
    r = Renderer.load(
        render_settings(templates_dir=root, guidelines_file=guidelines / "g.toml"), taxonomy
    )
    problems = r.check()
    assert "templates: no en text template for sms/rainstorm/red" in "\n".join(problems)
    assert not any("zh-Hans text template" in p for p in problems)
    assert "guidelines: no zh-Hans 防御指南 for rainstorm/blue" in problems
    assert "guidelines: no en 防御指南 for typhoon/red" in problems
    assert "guidelines: no zh-Hans 防御指南 for rainstorm/red" not in problems


def test_warnd_check_reports_broken_templates(tmp_path: Path) -> None:
    root = write(tmp_path / "t", {"sms/_default/_any.zh-Hans.j2": "{% for %}"})
    config = tmp_path / "warnd.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        f'taxonomy_file = "{REPO / "config" / "taxonomy.toml"}"\n'
        f'[render]\ntemplates_dir = "{root}"\n'
        f'guidelines_file = "{REPO / "config" / "guidelines.toml"}"\n',
        encoding="utf-8",
    )
    # in a subprocess: the CLI configures logging for its own process
    proc = subprocess.run(
        [sys.executable, "-m", "warnd", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "sms/_default/_any.zh-Hans.j2:1:" in proc.stderr


# ------------------------------------------------------------ guidelines


def test_office_override_replaces_shipped_guideline(tmp_path: Path, taxonomy: Taxonomy) -> None:
    override = tmp_path / "office.toml"
    override.write_text(
        '[rainstorm.red]\nzh-Hans.guide = ["立即转移到安全地带", "拨打12345报告险情"]\n',
        encoding="utf-8",
    )
    r = Renderer.load(render_settings(guidelines_override=override), taxonomy)
    alert, info = make_alert("rainstorm", Level.RED)
    zh = r.render(alert, info, "sms", UNLIMITED["sms"], "zh")
    assert "1.立即转移到安全地带；2.拨打12345报告险情。" in zh.text
    assert "停止集会" not in zh.text
    en = r.render(alert, info, "sms", UNLIMITED["sms"], "en")  # English entry untouched
    assert "Stop gatherings" in en.text


def test_invalid_guideline_override_lists_every_problem(tmp_path: Path, taxonomy: Taxonomy) -> None:
    override = tmp_path / "office.toml"
    override.write_text(
        '[rainstrom.red]\nzh-Hans.guide = ["x"]\n'
        '[drought.blue]\nzh-Hans.guide = ["x"]\n'
        '[gale.red]\nzh-Hans.guide = []\nzh-Hans.note = "x"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        Renderer.load(render_settings(guidelines_override=override), taxonomy)
    problems = "\n".join(caught.value.problems)
    assert "rainstrom: not a hazard of the taxonomy" in problems
    assert "drought.blue: drought has no level 'blue'" in problems
    assert "gale.red.zh-Hans: unknown key(s) note" in problems
    assert "gale.red.zh-Hans.guide: required" in problems


def test_subtypes_use_their_own_and_parent_guidelines(renderer: Renderer) -> None:
    own = renderer.guidelines.lookup("landslide", Level.RED, "zh-Hans")
    assert own is not None and own.hazard == "landslide"
    zh_tw = renderer.guidelines.lookup("landslide", Level.RED, "zh-TW")
    assert zh_tw is not None and zh_tw.language == "zh-Hans"
    anything = renderer.guidelines.lookup("earthquake", Level.YELLOW, "en")
    assert anything is not None and anything.level == "_any"
