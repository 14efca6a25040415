"""Figures of a benchmark run: rows (median, min, max of repetitions), ratios, targets.

Nothing is asserted: a missed target is a row that says "not met", and a
lost or repeated delivery is a problem printed loudly and recorded in the
JSON (the run then exits 1).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

ORDER = [
    *("bulk.", "probe.", "webhook0.", "webhook50.", "match.", "scaleout."),
    *("limit.", "limit_each.", "arq.", "apprise."),
]
"""Key prefixes in the order the table lists them."""


def p99(samples: list[float]) -> float:
    """Nearest-rank 99th percentile (with fewer than 100 samples: the largest)."""
    s = sorted(samples)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]


@dataclass
class Row:
    scenario: str
    figure: str
    unit: str
    samples: list[float]
    note: str = ""
    key: str = ""
    """Stable name for the JSON (``bulk.deliveries_per_s``)."""
    of_medians: bool = False
    """A ratio of two rows' medians (its samples: the low end, the ratio, the high end)."""

    @property
    def count(self) -> str:
        """Repetitions behind the row; ``ratio`` for a ratio of medians."""
        return "ratio" if self.of_medians else str(len(self.samples))

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "scenario": self.scenario,
            "figure": self.figure,
            "unit": self.unit,
            "median": _round(self.median),
            "min": _round(min(self.samples)) if self.samples else None,
            "max": _round(max(self.samples)) if self.samples else None,
            "n": None if self.of_medians else len(self.samples),
            "samples": [_round(x) for x in self.samples],
            "note": self.note,
        }


@dataclass
class Target:
    text: str
    key: str
    """The row (or ratio) it reads."""
    threshold: float
    higher_is_better: bool
    measured: float | None = None

    @property
    def met(self) -> bool | None:
        if self.measured is None or math.isnan(self.measured):
            return None
        if self.higher_is_better:
            return self.measured >= self.threshold
        return self.measured <= self.threshold


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)

    def add(
        self, key: str, scenario: str, figure: str, unit: str, samples: list[float], note: str = ""
    ) -> Row:
        """A row; one without samples (a scenario not run) is not listed."""
        row = Row(scenario, figure, unit, list(samples), note, key)
        if samples:
            self.rows.append(row)
        return row

    def get(self, key: str) -> Row | None:
        return next((r for r in self.rows if r.key == key), None)

    def ratio(self, key: str, scenario: str, figure: str, top: str, bottom: str) -> Row | None:
        """``top`` ÷ ``bottom`` (medians), with the range min(top)/max(bottom) … max/min."""
        a, b = self.get(top), self.get(bottom)
        if a is None or b is None or not a.samples or not b.samples:
            return None
        lo = min(a.samples) / max(b.samples)
        hi = max(a.samples) / min(b.samples)
        note = f"ratio of medians; range {lo:.3g}–{hi:.3g} (min÷max … max÷min)"
        row = self.add(key, scenario, figure, "×", [lo, a.median / b.median, hi], note)
        row.of_medians = True
        return row

    def paired(
        self,
        key: str,
        scenario: str,
        figure: str,
        tops: list[float | None],
        bottoms: list[float | None],
    ) -> Row | None:
        """Ratios round by round (figures taken back to back under the same load)."""
        ratios = [
            t / b for t, b in zip(tops, bottoms, strict=False) if t is not None and b and b > 0
        ]
        if not ratios:
            return None
        return self.add(key, scenario, figure, "×", ratios, "per round: both measured back to back")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        bar = "!" * 78
        print(f"\n{bar}\n!!! {text}\n{bar}\n", flush=True)

    def evaluate(self) -> None:
        for t in self.targets:
            row = self.get(t.key)
            t.measured = row.median if row is not None else None

    # ----------------------------------------------------------- output
    def ordered(self) -> list[Row]:
        """Scenario 1, 2, 3, 4, the limit loops, the peers, then the comparisons."""

        def rank(r: Row) -> tuple[bool, int]:
            prefix = r.key.split(".", 1)[0] + "."
            at = ORDER.index(prefix) if prefix in ORDER else len(ORDER)
            return (r.scenario == "comparison", at)

        return sorted(self.rows, key=rank)

    def table(self) -> str:
        lines = [
            f"{'scenario':<22} {'figure':<52} {'median':>12} {'min':>12} {'max':>12}  n",
            "-" * 118,
        ]
        for r in self.ordered():
            lo = min(r.samples) if r.samples else math.nan
            hi = max(r.samples) if r.samples else math.nan
            unit = f" {r.unit}" if r.unit else ""
            lines.append(
                f"{r.scenario:<22} {(r.figure + unit)[:52]:<52} {_fmt(r.median):>12}"
                f" {_fmt(lo):>12} {_fmt(hi):>12}  {r.count}"
            )
        return "\n".join(lines)

    def target_table(self) -> str:
        lines = [f"{'target':<62} {'measured':>12}  met", "-" * 82]
        for t in self.targets:
            met = {True: "met", False: "NOT MET", None: "not measured"}[t.met]
            value = _fmt(t.measured) if t.measured is not None else "—"
            lines.append(f"{t.text:<62} {value:>12}  {met}")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The rows and targets as the Markdown tables of the READMEs."""
        out = ["| scenario | figure | median | min | max | n |", "|---|---|---:|---:|---:|---:|"]
        for r in self.ordered():
            d = r.as_dict()
            unit = f" ({r.unit})" if r.unit else ""
            out.append(
                f"| {r.scenario} | {r.figure}{unit} | {_fmt(d['median'])} | {_fmt(d['min'])}"
                f" | {_fmt(d['max'])} | {r.count} |"
            )
        out += ["", "| target | measured | met |", "|---|---:|---|"]
        for t in self.targets:
            met = {True: "met", False: "**not met**", None: "not measured"}[t.met]
            value = _fmt(t.measured) if t.measured is not None else "—"
            out.append(f"| {t.text} | {value} | {met} |")
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": [r.as_dict() for r in self.ordered()],
            "targets": [
                {
                    "target": t.text,
                    "key": t.key,
                    "threshold": t.threshold,
                    "measured": _round(t.measured) if t.measured is not None else None,
                    "met": t.met,
                }
                for t in self.targets
            ],
            "exactly_once": {"ok": not self.problems, "problems": self.problems},
            "notes": self.notes,
            "details": self.details,
        }


def _round(x: float) -> float:
    if math.isnan(x):
        return x
    return float(f"{x:.4g}") if abs(x) < 1000 else round(x, 1)


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"
