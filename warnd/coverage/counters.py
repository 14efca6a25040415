"""The coverage counters of one alert, read from Redis in one round trip.

Dispatch keeps them (see :mod:`warnd.dispatch.lua`): ``cnt`` counts
deliveries per ``<area>|<channel>|<state>``; ``cv`` counts, per area
index, the subscribers targeted (``t``) and reached (``r``), the reached
ones per time bucket (``h<i>.<b>``) and the longest time to reach
(``m``). Nothing here scans deliveries: a report costs the same during
and after a fan-out of any size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from warnd.dispatch.lua import REACH_BUCKETS
from warnd.dispatch.states import DeliveryState
from warnd.keys import Keys

STATES = tuple(s.value for s in DeliveryState)


@dataclass(slots=True)
class Leaf:
    """What one area's own subscribers got (not including areas below it)."""

    states: dict[tuple[str, str], int] = field(default_factory=dict)
    """(channel, state) → deliveries."""
    targeted: int = 0
    reached: int = 0
    hist: dict[int, int] = field(default_factory=dict)
    """Time bucket → subscribers first reached in it."""
    max_ms: int = -1

    def add(self, other: Leaf) -> None:
        for k, n in other.states.items():
            self.states[k] = self.states.get(k, 0) + n
        self.targeted += other.targeted
        self.reached += other.reached
        for b, n in other.hist.items():
            self.hist[b] = self.hist.get(b, 0) + n
        self.max_ms = max(self.max_ms, other.max_ms)


@dataclass(slots=True)
class AlertCounters:
    alert_id: str
    plan: dict[str, str]
    leaves: dict[str, Leaf]
    receipts: frozenset[str]
    """Channels with asynchronous receipts when the alert was planned."""

    @property
    def affected(self) -> list[str]:
        return _codes(self.plan.get("areas"))

    @property
    def blind_spots(self) -> list[str]:
        return _codes(self.plan.get("blind"))

    @property
    def pending(self) -> int:
        return sum(
            n
            for leaf in self.leaves.values()
            for (_, state), n in leaf.states.items()
            if state in ("queued", "sending")
        )

    @property
    def status(self) -> str:
        return self.plan.get("status") or "not planned"

    @property
    def final(self) -> bool:
        return self.status in ("planned", "skipped") and self.pending == 0


def _codes(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return [str(c) for c in value] if isinstance(value, list) else []


async def read_counters(redis: Redis, keys: Keys, alert_ids: Iterable[str]) -> list[AlertCounters]:
    """The counters of each alert (pipelined: one round trip for all)."""
    ids = list(alert_ids)
    pipe = redis.pipeline(transaction=False)
    for aid in ids:
        pipe.hgetall(keys.deliveries(aid, "plan"))
        pipe.hgetall(keys.deliveries(aid, "cnt"))
        pipe.hgetall(keys.deliveries(aid, "cv"))
        pipe.lrange(keys.deliveries(aid, "areas"), 0, -1)
    raw = await pipe.execute()
    out: list[AlertCounters] = []
    for i, aid in enumerate(ids):
        plan, cnt, cv, areas = raw[4 * i : 4 * i + 4]
        out.append(_parse(aid, cast(dict[str, str], plan), cnt, cv, cast(list[str], areas)))
    return out


def _parse(
    aid: str, plan: dict[str, str], cnt: Mapping[str, str], cv: Mapping[str, str], areas: list[str]
) -> AlertCounters:
    leaves: dict[str, Leaf] = {}

    def leaf(code: str) -> Leaf:
        found = leaves.get(code)
        if found is None:
            found = leaves[code] = Leaf()
        return found

    for key, value in cnt.items():
        n = int(value)
        if not n:
            continue
        code, channel, state = key.rsplit("|", 2)
        leaf(code).states[(channel, state)] = n
    for key, value in cv.items():
        kind, rest = key[0], key[1:]
        idx_text, _, bucket = rest.partition(".")
        if not idx_text.isdigit() or int(idx_text) >= len(areas):
            continue
        lf = leaf(areas[int(idx_text)])
        n = int(value)
        if kind == "t":
            lf.targeted += n
        elif kind == "r":
            lf.reached += n
        elif kind == "h" and bucket.isdigit():
            lf.hist[int(bucket)] = lf.hist.get(int(bucket), 0) + n
        elif kind == "m":
            lf.max_ms = max(lf.max_ms, n)
    receipts = frozenset(c for c in (plan.get("rx") or "").split(",") if c)
    return AlertCounters(aid, plan, leaves, receipts)


# ------------------------------------------------------------------ time to reach


def bucket_bounds(b: int) -> tuple[float, float]:
    """The [low, high) milliseconds of time bucket ``b``."""
    if b <= 0:
        return 0.0, 100.0
    return 100.0 * 2 ** ((b - 1) / REACH_BUCKETS), 100.0 * 2 ** (b / REACH_BUCKETS)


def percentile_ms(hist: Mapping[int, int], q: float, max_ms: float | None = None) -> float | None:
    """The ``q`` quantile (0..1) of a time histogram, interpolated within its bucket
    (linearly in the first, geometrically in the others); never above ``max_ms``."""
    total = sum(hist.values())
    if total <= 0:
        return None
    target = q * total
    cum = 0
    value = 0.0
    for b in sorted(hist):
        n = hist[b]
        if n <= 0:
            continue
        if cum + n >= target:
            lo, hi = bucket_bounds(b)
            frac = min(1.0, max(0.0, (target - cum) / n))
            value = lo + (hi - lo) * frac if b <= 0 else lo * math.pow(hi / lo, frac)
            break
        cum += n
    if max_ms is not None and max_ms >= 0:
        value = min(value, float(max_ms))
    return value


def merged(leaves: Iterable[Leaf]) -> Leaf:
    out = Leaf()
    for lf in leaves:
        out.add(lf)
    return out


def rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
