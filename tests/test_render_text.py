"""Counting, cutting and wrapping text as the channels count it (warnd.textfit)."""

from __future__ import annotations

import pytest

from warnd.limits import LengthUnit
from warnd.textfit import (
    cut_to_fit,
    graphemes,
    length,
    sms_parts,
    sms_segments,
    ucs2_units,
    utf8_bytes,
    wrap,
)

EMOJI_FAMILY = "👨\u200d👩\u200d👧"  # one grapheme, five code points, eight UTF-16 units
RARE_HANZI = "𠀀"  # CJK Extension B: outside the BMP, two UTF-16 units


def test_ucs2_counts_characters_outside_the_bmp_twice() -> None:
    assert ucs2_units("暴雨") == 2
    assert ucs2_units(RARE_HANZI) == 2
    assert ucs2_units("😀a") == 3
    assert ucs2_units(EMOJI_FAMILY) == 8
    assert length("曹县😀", LengthUnit.UCS2) == 4
    assert length("曹县", LengthUnit.UTF8_BYTES) == utf8_bytes("曹县") == 6
    assert length("e\u0301" + EMOJI_FAMILY, LengthUnit.CHARS) == 2


@pytest.mark.parametrize(
    ("units", "parts"),
    [(0, 0), (1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_sms_parts_70_single_67_per_concatenated_part(units: int, parts: int) -> None:
    assert sms_parts("警" * units) == parts
    assert len(sms_segments("警" * units)) == parts


def test_a_character_outside_the_bmp_is_never_split_across_parts() -> None:
    text = "a" * 66 + "😀" + "b" * 10  # the emoji would straddle units 67 and 68
    segments = sms_segments(text)
    assert segments[0] == "a" * 66
    assert segments[1].startswith("😀")
    assert "".join(segments) == text
    assert all(ucs2_units(s) <= 67 for s in segments)
    assert sms_parts(text) == len(segments) == 2
    # exactly 70 units with a pair at the end still fits one SMS
    assert sms_parts("a" * 68 + RARE_HANZI) == 1
    # 134 units of pairs fill two parts of 66 units each plus one more
    assert sms_parts(RARE_HANZI * 67) == 3


def test_cut_to_fit_keeps_grapheme_clusters_whole() -> None:
    accented = "e\u0301" * 50
    cut = cut_to_fit(accented, lambda t: len(t) <= 21)
    assert cut.endswith("…")
    assert all(g == "e\u0301" for g in graphemes(cut[:-1]))
    assert len(cut) <= 21

    family = ("预警" + EMOJI_FAMILY) * 10
    for budget in range(1, 60):
        cut = cut_to_fit(family, lambda t, b=budget: ucs2_units(t) <= b)
        assert ucs2_units(cut) <= budget
        cut.encode("utf-8")  # no lone surrogate
        assert set(graphemes(cut)) <= {"预", "警", EMOJI_FAMILY, "…"}


def test_cut_to_fit_returns_text_that_fits_unchanged_and_prefers_word_boundaries() -> None:
    assert cut_to_fit("short", lambda t: len(t) <= 10) == "short"
    assert cut_to_fit("Rainstorm warning for Caoxian", lambda t: len(t) <= 20) == (
        "Rainstorm warning…"
    )
    assert cut_to_fit("anything", lambda t: False) == ""


def test_wrap_cjk_by_character_latin_by_word() -> None:
    assert wrap("暴雨红色预警信号", 3) == ["暴雨红", "色预警", "信号"]
    assert wrap("Rainstorm Red Warning issued", 10) == ["Rainstorm", "Red", "Warning", "issued"]
    assert wrap("Red Warning 暴雨", 12) == ["Red Warning", "暴雨"]
    assert wrap("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert wrap("第一行\n\n第二行", 10) == ["第一行", "第二行"]


def test_wrap_never_starts_a_line_with_closing_punctuation() -> None:
    lines = wrap("一二三，四五", 3)
    assert lines == ["一二", "三，四", "五"]
    assert not any(line[0] in "，。、；" for line in wrap("预计未来三小时，曹县、单县降雨。", 4))


def test_wrap_keeps_emoji_sequences_whole() -> None:
    lines = wrap(EMOJI_FAMILY * 5, 2)
    assert lines == [EMOJI_FAMILY * 2, EMOJI_FAMILY * 2, EMOJI_FAMILY]
