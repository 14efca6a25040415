"""Coverage reports as CSV, a standalone HTML page and a text table.

* CSV: one row per area (the whole alert first), the per-channel counts as
  ``<channel>_<state>`` columns; flags joined by ``;``.
* HTML: one page with its own styles, no JavaScript and nothing fetched, so
  it can be saved, mailed or printed; rows coloured by reach rate.
* Text: a table for a terminal (CJK names counted as two columns).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Sequence
from typing import Any

import jinja2

from warnd.coverage.models import AreaCoverage, CoverageReport, SummaryReport

CHANNEL_STATES = (
    "targeted",
    "sent",
    "delivered",
    "acknowledged",
    "failed",
    "pending",
    "uncertain",
    "expired",
    "cancelled",
    "reached",
)
FLAG_NAMES = {
    "unreached": "未覆盖",
    "no_subscribers": "无订阅者",
    "partially_reached": "部分覆盖",
}
LEVEL_NAMES = {
    "province": "省",
    "prefecture": "市",
    "county": "县",
    "township": "乡镇",
    "village": "村",
}


def _channels(report: CoverageReport) -> list[str]:
    seen: dict[str, None] = {}
    for row in (report.totals, *report.areas):
        for ch in row.channels:
            seen.setdefault(ch.channel, None)
    return list(seen)


def _pct(rate: float | None) -> str:
    return "" if rate is None else f"{rate * 100:.1f}%"


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


# ------------------------------------------------------------------ CSV


def to_csv(report: CoverageReport, *, bom: bool = False) -> str:
    """One row per area, the whole alert first (``bom``: for spreadsheet programs)."""
    channels = _channels(report)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    head = [
        "code",
        "name",
        "level",
        "parent",
        "subscribers_targeted",
        "subscribers_reached",
        "reach_rate",
        "endpoints_targeted",
    ]
    head += [f"{ch}_{s}" for ch in channels for s in CHANNEL_STATES]
    head += ["reach_p50_s", "reach_p90_s", "reach_p99_s", "reach_max_s", "flags"]
    w.writerow(head)
    for row in (report.totals, *report.areas):
        by = {c.channel: c for c in row.channels}
        t = row.reach_times
        cells: list[Any] = [
            row.code or "total",
            row.name,
            row.level,
            row.parent or "",
            row.subscribers_targeted,
            row.subscribers_reached,
            "" if row.reach_rate is None else f"{row.reach_rate:.6f}",
            row.endpoints_targeted,
        ]
        for ch in channels:
            c = by.get(ch)
            cells += [getattr(c, s) if c is not None else 0 for s in CHANNEL_STATES]
        cells += [
            "" if t is None or t.p50 is None else t.p50,
            "" if t is None or t.p90 is None else t.p90,
            "" if t is None or t.p99 is None else t.p99,
            "" if t is None or t.max is None else t.max,
            ";".join(row.flags),
        ]
        w.writerow(cells)
    return ("\ufeff" if bom else "") + out.getvalue()


def summary_csv(summary: SummaryReport, *, bom: bool = False) -> str:
    """Period statistics in long form: ``section, key, name, metric, value``."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["section", "key", "name", "metric", "value"])
    w.writerow(["period", "start", "", "from", summary.period_start.isoformat()])
    w.writerow(["period", "end", "", "to", summary.period_end.isoformat()])
    w.writerow(["total", "", "", "alerts", summary.alerts])
    for section, counts in (
        ("type", summary.by_type),
        ("hazard", summary.by_hazard),
        ("level", summary.by_level),
        ("area", summary.by_area),
        ("issuer", summary.by_issuer),
    ):
        for c in counts:
            w.writerow([section, c.key, c.name or "", "alerts", c.alerts])
    for ch in summary.channels:
        for metric, value in ch.model_dump(exclude={"channel"}).items():
            w.writerow(["channel", ch.channel, "", metric, "" if value is None else value])
    w.writerow(["total", "", "", "deliveries", summary.deliveries])
    w.writerow(["total", "", "", "subscribers_targeted", summary.subscribers_targeted])
    w.writerow(["total", "", "", "subscribers_reached", summary.subscribers_reached])
    rate = summary.reach_rate
    w.writerow(["total", "", "", "reach_rate", "" if rate is None else rate])
    mttr = summary.median_time_to_reach
    w.writerow(["total", "", "", "median_time_to_reach_s", "" if mttr is None else mttr])
    return ("\ufeff" if bom else "") + out.getvalue()


# ------------------------------------------------------------------ HTML

_PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>预警覆盖报告 {{ r.headline or r.alert_id }}</title>
<style>
body { font: 14px/1.45 system-ui, "Noto Sans CJK SC", "Microsoft YaHei", sans-serif;
       margin: 1.2em; color: #1b1b1b; }
h1 { font-size: 1.35em; margin: 0 0 .3em; }
.meta { color: #444; margin: 0 0 1em; }
.meta span { margin-right: 1.2em; white-space: nowrap; }
.lv { display: inline-block; padding: 0 .5em; border-radius: 3px; color: #fff; }
.lv-red { background: #c62828; } .lv-orange { background: #ef6c00; }
.lv-yellow { background: #f9a825; color: #222; } .lv-blue { background: #1565c0; }
table { border-collapse: collapse; width: 100%; margin: .6em 0 1.4em; }
th, td { border: 1px solid #ccc; padding: .25em .45em; text-align: right; }
th { background: #f2f2f2; position: sticky; top: 0; }
td.name, th.name { text-align: left; }
tr.county td.name { font-weight: 600; }
tr.township td.name { padding-left: 1.4em; }
tr.village td.name { padding-left: 2.8em; }
.r-full { background: #e8f5e9; } .r-high { background: #f1f8e9; }
.r-mid { background: #fff8e1; } .r-low { background: #ffebee; } .r-none { background: #eceff1; }
.flag { display: inline-block; font-size: .85em; padding: 0 .35em; margin-left: .2em;
        border-radius: 3px; background: #555; color: #fff; }
.flag-unreached { background: #b71c1c; } .flag-no_subscribers { background: #6a1b9a; }
.flag-partially_reached { background: #e65100; }
.rule { color: #555; font-size: .9em; max-width: 70em; }
.final { font-weight: 600; } .live { color: #e65100; font-weight: 600; }
small { color: #666; }
</style>
</head>
<body>
<h1>{% if r.level %}<span class="lv lv-{{ r.level }}">{{ r.level }}</span> {% endif %}
{{ r.headline or r.alert_id }}</h1>
<p class="meta">
<span>预警 Alert: {{ r.alert_id }}</span>
{% if r.chain|length > 1 %}<span>事件 Chain: {{ r.chain|join(" → ") }}</span>{% endif %}
<span>灾种 Hazard: {{ r.hazard or "—" }}</span>
<span>受理 Accepted: {{ r.accepted_at.isoformat(timespec="seconds") }}</span>
<span>状态 State: {{ r.state }} / {{ r.status }}</span>
{% if r.final %}<span class="final">最终结果 Final</span>
{% else %}<span class="live">发布中 Live</span>{% endif %}
<span>生成 Generated: {{ r.generated_at.isoformat(timespec="seconds") }}</span>
</p>
{% if r.note %}<p class="meta">未发布原因 Not disseminated: {{ r.note }}</p>{% endif %}

<h2>总计 Totals</h2>
<table>
<tr><th class="name">地区 Area</th><th>目标人数 Targeted</th><th>已覆盖 Reached</th>
<th>覆盖率 Reach</th><th>终端 Endpoints</th><th>p50 s</th><th>p90 s</th><th>p99 s</th>
<th>max s</th><th class="name">标记 Flags</th></tr>
{{ row(r.totals, "") }}
</table>

<h2>渠道 Channels</h2>
<table>
<tr><th class="name">渠道 Channel</th><th>回执 Receipts</th>
{% for s in states %}<th>{{ s }}</th>{% endfor %}</tr>
{% for c in r.totals.channels %}
<tr><td class="name">{{ c.channel }}</td><td>{{ "是 yes" if c.receipts else "否 no" }}</td>
{% for s in states %}<td>{{ c[s] }}</td>{% endfor %}</tr>
{% endfor %}
</table>

<h2>分区 By area</h2>
<table>
<tr><th class="name">地区 Area</th><th>目标人数 Targeted</th><th>已覆盖 Reached</th>
<th>覆盖率 Reach</th><th>终端 Endpoints</th><th>p50 s</th><th>p90 s</th><th>p99 s</th>
<th>max s</th><th class="name">标记 Flags</th></tr>
{% for a in r.areas %}{{ row(a, a.level) }}{% endfor %}
</table>
<p class="rule">{{ r.reached_rule }} 部分覆盖阈值 Partial threshold: {{ pct(r.threshold) }}.</p>
</body>
</html>
"""

_ROW = """{% macro row(a, cls) -%}
<tr class="{{ cls }} {{ band(a.reach_rate) }}">
<td class="name">{{ a.name }} <small>{{ a.code }}</small></td>
<td>{{ a.subscribers_targeted }}</td><td>{{ a.subscribers_reached }}</td>
<td>{{ pct(a.reach_rate) }}</td><td>{{ a.endpoints_targeted }}</td>
{% set t = a.reach_times %}
<td>{{ secs(t.p50) if t else "" }}</td><td>{{ secs(t.p90) if t else "" }}</td>
<td>{{ secs(t.p99) if t else "" }}</td><td>{{ secs(t.max) if t else "" }}</td>
<td class="name">{% for f in a.flags %}<span class="flag flag-{{ f }}">{{ flag_names[f] }}</span>
{% endfor %}</td>
</tr>
{%- endmacro %}"""


def _band(rate: float | None) -> str:
    if rate is None:
        return "r-none"
    if rate >= 0.999999:
        return "r-full"
    if rate >= 0.9:
        return "r-high"
    if rate >= 0.5:
        return "r-mid"
    return "r-low"


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_ENV.globals.update(pct=_pct, secs=_secs, band=_band, flag_names=FLAG_NAMES)
_TEMPLATE = _ENV.from_string(_ROW + _PAGE)


def to_html(report: CoverageReport) -> str:
    """A standalone page (inline styles, no scripts, nothing fetched)."""
    return _TEMPLATE.render(r=report, states=CHANNEL_STATES)


# ------------------------------------------------------------------ text


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * max(0, width - _width(text))
    return gap + text if right else text + gap


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    widths = [max(_width(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = []
    for r in (head, *rows):
        cells = [_pad(c, widths[i], right=i >= left) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _text_row(a: AreaCoverage, indent: int) -> list[str]:
    t = a.reach_times
    by = {c.channel: c for c in a.channels}
    failed = sum(c.failed for c in by.values())
    pending = sum(c.pending for c in by.values())
    acked = sum(c.acknowledged for c in by.values())
    return [
        "  " * indent + f"{a.name} {a.code}".strip(),
        LEVEL_NAMES.get(a.level, a.level),
        str(a.subscribers_targeted),
        str(a.subscribers_reached),
        _pct(a.reach_rate) or "-",
        str(a.endpoints_targeted),
        str(failed),
        str(pending),
        str(acked),
        _secs(t.p50) if t else "-",
        _secs(t.p90) if t else "-",
        _secs(t.max) if t else "-",
        ",".join(FLAG_NAMES[f] for f in a.flags),
    ]


def to_text(report: CoverageReport) -> str:
    """A readable table: the alert, its channels, then every area."""
    r = report
    lines = [
        f"{r.headline or r.alert_id}",
        f"alert {r.alert_id}  {r.hazard or '-'} {r.level or '-'}  {r.msg_type}  "
        f"state {r.state}  plan {r.status}  {'FINAL' if r.final else 'LIVE'}",
        f"accepted {r.accepted_at.isoformat(timespec='seconds')}",
    ]
    if len(r.chain) > 1:
        lines.append("chain " + " -> ".join(r.chain))
    if r.note:
        lines.append(f"not disseminated: {r.note}")
    lines.append("")
    head = [
        "area",
        "level",
        "targeted",
        "reached",
        "rate",
        "endpoints",
        "failed",
        "pending",
        "acked",
        "p50 s",
        "p90 s",
        "max s",
        "flags",
    ]
    depth = {"province": 0, "prefecture": 0, "county": 0, "township": 1, "village": 2}
    rows = [_text_row(r.totals, 0)]
    rows[0][0] = f"TOTAL {rows[0][0]}".strip()
    rows += [_text_row(a, depth.get(a.level, 0)) for a in r.areas]
    lines.append(_table(head, rows))
    lines.append("")
    ch_head = ["channel", "receipts", *CHANNEL_STATES]
    ch_rows = [
        [c.channel, "yes" if c.receipts else "no", *(str(getattr(c, s)) for s in CHANNEL_STATES)]
        for c in r.totals.channels
    ]
    if ch_rows:
        lines.append(_table(ch_head, ch_rows, left=2))
        lines.append("")
    lines.append(r.reached_rule)
    return "\n".join(lines) + "\n"


__all__ = ["summary_csv", "to_csv", "to_html", "to_text"]
