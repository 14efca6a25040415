"""Coverage reports: which areas an alert reached, which it did not, how fast.

:class:`CoverageService` reads the counters dispatch keeps per alert ×
area (:mod:`warnd.coverage.counters`) and rolls them up the hierarchy by
code prefix (village → township → county → prefecture). Every area the
alert covers is listed, down to its villages, so areas nobody was
registered in (the plan's blind spots) show up as ``no_subscribers``.

Reach is per subscriber: one is *reached* when at least one of its
deliveries is ``delivered`` or ``acknowledged`` — or ``sent``, on a
channel without asynchronous receipts (the plan records which channels
have them). A subscriber counts once, at its first reach, and stays
reached; time to reach is measured from the alert's acceptance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

from warnd.adcodes import CODE_LENGTHS, AreaLevel, ancestor_codes, parent_code
from warnd.areas import AreaRegistry
from warnd.coverage.config import CoverageSettings
from warnd.coverage.counters import (
    STATES,
    AlertCounters,
    Leaf,
    merged,
    percentile_ms,
    read_counters,
    rounded,
)
from warnd.coverage.models import (
    LEVELS,
    AreaCoverage,
    ChannelCoverage,
    ChannelSummary,
    Count,
    CoverageReport,
    Flag,
    ReachTimes,
    SummaryReport,
)
from warnd.errors import BadRequest, NotFound
from warnd.groups import CHANNELS
from warnd.keys import Keys
from warnd.store import AlertRecord, AlertStore

_CHANNEL_ORDER = {c.value: i for i, c in enumerate(CHANNELS)}
_CHAIN_LIMIT = 100
"""At most this many messages in one chain report."""


def reached_states(channel: str, receipts: Iterable[str]) -> tuple[str, ...]:
    """The delivery states that reach a subscriber on ``channel``."""
    if channel in set(receipts):
        return ("delivered", "acknowledged")
    return ("sent", "delivered", "acknowledged")


def reached_rule(channels: Iterable[str], receipts: Iterable[str]) -> str:
    """What counts as reached, per channel, in words (Chinese, then English)."""
    rx = set(receipts)
    chans = sorted(set(channels), key=lambda c: (_CHANNEL_ORDER.get(c, 99), c))
    with_r = [c for c in chans if c in rx]
    without = [c for c in chans if c not in rx]
    zh = "订阅者至少有一条消息已送达（delivered）或已确认（acknowledged）即为已覆盖"
    en = "A subscriber is reached when at least one of its deliveries is delivered or acknowledged"
    if without:
        zh += f"；{', '.join(without)} 无回执，已发送（sent）即计为覆盖"
        en += f"; on {', '.join(without)} (no delivery receipts) sent already counts"
    if with_r:
        zh += f"；{', '.join(with_r)} 有回执，须收到送达回执"
        en += f"; on {', '.join(with_r)} only a delivery receipt or acknowledgement counts"
    zh += "。每人只计一次（首次覆盖），用时自预警受理起算。"
    en += (
        ". Each subscriber counts once, at its first reach; times are from the alert's acceptance."
    )
    return f"{zh} {en}"


def channel_rows(leaf: Leaf, receipts: frozenset[str]) -> list[ChannelCoverage]:
    by: dict[str, dict[str, int]] = {}
    for (channel, state), n in leaf.states.items():
        row = by.setdefault(channel, {})
        row[state] = row.get(state, 0) + n
    out: list[ChannelCoverage] = []
    for channel in sorted(by, key=lambda c: (_CHANNEL_ORDER.get(c, 99), c)):
        s = by[channel]
        counts = {k: s.get(k, 0) for k in STATES}
        out.append(
            ChannelCoverage(
                channel=channel,
                receipts=channel in receipts,
                targeted=sum(s.values()),
                pending=counts["queued"] + counts["sending"],
                reached=sum(counts[k] for k in reached_states(channel, receipts)),
                **counts,
            )
        )
    return out


def reach_times(leaf: Leaf) -> ReachTimes | None:
    if leaf.reached <= 0 or not leaf.hist:
        return None
    top = leaf.max_ms if leaf.max_ms >= 0 else None

    def q(p: float) -> float | None:
        ms = percentile_ms(leaf.hist, p, top)
        return rounded(ms / 1000) if ms is not None else None

    return ReachTimes(
        p50=q(0.5), p90=q(0.9), p99=q(0.99), max=rounded(top / 1000) if top is not None else None
    )


def _level_of(code: str) -> str:
    try:
        return AreaLevel.of(code).value
    except ValueError:
        return "area"


def _common_code(codes: Sequence[str]) -> str:
    """The nearest area code all ``codes`` are under ("" when they share none)."""
    if not codes:
        return ""
    prefix = min(codes)
    for code in codes:
        while not code.startswith(prefix):
            prefix = prefix[:-1]
    while prefix and len(prefix) not in CODE_LENGTHS:
        prefix = prefix[:-1]
    return prefix


class CoverageService:
    """Coverage of alerts and period statistics, from dispatch's counters."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        areas: AreaRegistry,
        alerts: AlertStore,
        settings: CoverageSettings | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.areas = areas
        self.alerts = alerts
        self.settings = settings or CoverageSettings()

    # ------------------------------------------------------------ one alert
    async def report(
        self, alert_id: str, *, level: str | None = None, chain: bool = False
    ) -> CoverageReport:
        """The coverage of ``alert_id`` (with ``chain``: of its whole chain as one
        event); ``level`` keeps only areas of that level (county, township, village).

        Raises :class:`~warnd.errors.NotFound` for an unknown alert and
        :class:`~warnd.errors.BadRequest` for an unknown level.
        """
        if level is not None and level not in LEVELS:
            raise BadRequest(f"level={level!r}: one of {', '.join(LEVELS)}")
        rec = await self.alerts.get(alert_id)
        if rec is None:
            raise NotFound(f"no alert {alert_id}")
        records = await self.chain_of(rec) if chain else [rec]
        counters = await read_counters(self.redis, self.keys, [r.id for r in records])
        return self.build(rec, records, counters, level=level)

    async def chain_of(self, rec: AlertRecord) -> list[AlertRecord]:
        """The messages of ``rec``'s chain (Alert → Updates → Cancel), oldest first:
        from the chain's first message along ``superseded_by`` / ``cancelled_by``."""
        root = await self.alerts.get(rec.chain) if rec.chain and rec.chain != rec.id else rec
        found: dict[str, AlertRecord] = {rec.id: rec}
        todo = [root or rec]
        while todo and len(found) < _CHAIN_LIMIT:
            cur = todo.pop()
            found.setdefault(cur.id, cur)
            nxt = [i for i in (cur.superseded_by, cur.cancelled_by) if i and i not in found]
            for r in await self.alerts.get_many(nxt):
                found[r.id] = r
                todo.append(r)
        return sorted(found.values(), key=lambda r: (r.received_at, r.id))

    def build(
        self,
        rec: AlertRecord,
        records: Sequence[AlertRecord],
        counters: Sequence[AlertCounters],
        *,
        level: str | None = None,
    ) -> CoverageReport:
        """Roll the counters up into a report (no I/O)."""
        leaves: dict[str, Leaf] = {}
        affected: list[str] = []
        blind: list[str] = []
        receipts: set[str] = set()
        for c in counters:
            for code, lf in c.leaves.items():
                leaves.setdefault(code, Leaf()).add(lf)
            affected += c.affected
            blind += c.blind_spots
            receipts |= c.receipts
        rx = frozenset(receipts)
        affected = sorted(set(affected))
        blind = sorted(set(blind))
        rows = self._rows(affected, leaves)
        agg = {code: Leaf() for code in rows}
        for code, lf in leaves.items():
            for p in (code, *ancestor_codes(code)):
                a = agg.get(p)
                if a is not None:
                    a.add(lf)
        threshold = self.settings.partial_threshold
        areas = [
            self._area(code, agg[code], rx, any(code.startswith(b) for b in blind), threshold)
            for code in sorted(rows)
            if level is None or _level_of(code) == level
        ]
        top = _common_code(affected or sorted(leaves))
        all_blind = bool(affected) and all(any(a.startswith(b) for b in blind) for a in affected)
        totals = self._area(top, merged(leaves.values()), rx, all_blind, threshold)
        if not top:
            totals.name = "—"
        statuses = [c.status for c in counters]
        own = next((c for c in counters if c.alert_id == rec.id), None)
        info = rec.alert.infos[0] if rec.alert.infos else None
        channels = {ch for lf in leaves.values() for ch, _ in lf.states}
        return CoverageReport(
            alert_id=rec.id,
            chain=[r.id for r in records],
            hazard=rec.hazard,
            level=rec.level.value if rec.level else None,
            headline=info.headline if info is not None else None,
            msg_type=rec.msg_type.value,
            state=rec.effective_state().value,
            accepted_at=rec.received_at,
            generated_at=datetime.now(UTC),
            status=own.status if own is not None else (statuses[0] if statuses else "not planned"),
            note=(own.plan.get("reason") or None) if own is not None else None,
            final=bool(counters) and all(c.final for c in counters),
            reached_rule=reached_rule(channels, rx),
            threshold=threshold,
            totals=totals,
            areas=areas,
        )

    def _rows(self, affected: Sequence[str], leaves: Mapping[str, Leaf]) -> set[str]:
        """Every area to list: the affected ones with the areas below them, the
        areas deliveries went to, and their ancestors up to the county."""
        rows: set[str] = set()
        for code in affected:
            rows.add(code)
            rows.update(a for a in ancestor_codes(code) if len(a) >= 6)
            rows.update(a.code for a in self.areas.with_prefix(code))
        for code in leaves:
            if len(code) in CODE_LENGTHS:
                rows.add(code)
                rows.update(a for a in ancestor_codes(code) if len(a) >= 6)
        return rows

    def _area(
        self, code: str, leaf: Leaf, receipts: frozenset[str], blind: bool, threshold: float
    ) -> AreaCoverage:
        known = self.areas.get(code) if code else None
        rate = leaf.reached / leaf.targeted if leaf.targeted else None
        flags: list[Flag] = []
        if blind:
            flags.append("no_subscribers")
        if leaf.targeted and not leaf.reached:
            flags.append("unreached")
        elif rate is not None and rate < threshold:
            flags.append("partially_reached")
        return AreaCoverage(
            code=code,
            name=known.name if known is not None else code,
            level=known.level.value if known is not None else _level_of(code),
            parent=(known.parent if known is not None else parent_code(code)) if code else None,
            subscribers_targeted=leaf.targeted,
            subscribers_reached=leaf.reached,
            endpoints_targeted=sum(leaf.states.values()),
            reach_rate=round(rate, 6) if rate is not None else None,
            channels=channel_rows(leaf, receipts),
            reach_times=reach_times(leaf),
            flags=flags,
        )

    # ------------------------------------------------------------ a period
    async def summary(
        self, start: datetime, end: datetime, *, scope: Sequence[str] = ()
    ) -> SummaryReport:
        """Statistics of the alerts accepted from ``start`` to ``end`` (inclusive);
        with ``scope`` (area code prefixes), only alerts wholly inside it."""
        if start > end:
            raise BadRequest("from is after to")
        ids = cast(
            list[str],
            await self.redis.zrangebyscore(
                self.keys.alerts_by_time, start.timestamp(), end.timestamp()
            ),
        )
        records: list[AlertRecord] = []
        counters: list[AlertCounters] = []
        for i in range(0, len(ids), 200):
            chunk = [
                r
                for r in await self.alerts.get_many(ids[i : i + 200])
                if not scope
                or (r.areas and all(any(c.startswith(p) for p in scope) for c in r.areas))
            ]
            records += chunk
            counters += await read_counters(self.redis, self.keys, [r.id for r in chunk])
        return self._summarise(start, end, records, counters)

    def _summarise(
        self,
        start: datetime,
        end: datetime,
        records: Sequence[AlertRecord],
        counters: Sequence[AlertCounters],
    ) -> SummaryReport:
        def counted(values: Iterable[tuple[str, str | None]]) -> list[Count]:
            n: dict[str, int] = {}
            names: dict[str, str | None] = {}
            for key, name in values:
                n[key] = n.get(key, 0) + 1
                names.setdefault(key, name)
            return [
                Count(key=k, name=names[k], alerts=v)
                for k, v in sorted(n.items(), key=lambda kv: (-kv[1], kv[0]))
            ]

        def area_keys(rec: AlertRecord, c: AlertCounters) -> list[str]:
            codes = rec.areas or c.affected
            return sorted({code[:6] if len(code) > 6 else code for code in codes})

        def name_of(code: str) -> str | None:
            a = self.areas.get(code)
            return a.name if a is not None else None

        by_channel: dict[str, dict[str, int]] = {}
        reached_by_channel: dict[str, int] = {}
        everything = Leaf()
        for c in counters:
            for lf in c.leaves.values():
                everything.add(lf)
                for (channel, state), n in lf.states.items():
                    row = by_channel.setdefault(channel, {})
                    row[state] = row.get(state, 0) + n
                    if state in reached_states(channel, c.receipts):
                        reached_by_channel[channel] = reached_by_channel.get(channel, 0) + n
        channels = []
        for channel in sorted(by_channel, key=lambda c: (_CHANNEL_ORDER.get(c, 99), c)):
            s = by_channel[channel]
            total = sum(s.values())
            reached = reached_by_channel.get(channel, 0)
            channels.append(
                ChannelSummary(
                    channel=channel,
                    deliveries=total,
                    **{k: s.get(k, 0) for k in STATES if k not in ("queued", "sending")},
                    pending=s.get("queued", 0) + s.get("sending", 0),
                    reached=reached,
                    reach_rate=round(reached / total, 6) if total else None,
                )
            )
        times = reach_times(everything)
        pairs = list(zip(records, counters, strict=True))
        return SummaryReport(
            period_start=start,
            period_end=end,
            alerts=len(records),
            by_type=counted((r.msg_type.value, None) for r in records),
            by_hazard=counted((r.hazard or "unknown", None) for r in records),
            by_level=counted((r.level.value if r.level else "none", None) for r in records),
            by_area=counted((k, name_of(k)) for r, c in pairs for k in area_keys(r, c)),
            by_issuer=counted((r.sender, None) for r in records),
            channels=channels,
            deliveries=sum(ch.deliveries for ch in channels),
            subscribers_targeted=everything.targeted,
            subscribers_reached=everything.reached,
            reach_rate=(
                round(everything.reached / everything.targeted, 6) if everything.targeted else None
            ),
            median_time_to_reach=times.p50 if times is not None else None,
            reach_times=times,
        )


__all__ = ["CoverageService", "reached_rule", "reached_states"]
