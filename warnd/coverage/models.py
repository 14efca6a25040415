"""What a coverage report says: per area, who was targeted, who was reached, how fast.

The models are the API's JSON and what the renderers (CSV, HTML, text)
and the console read. Counts are exact: they come from counters the
delivery scripts change in the same call as the states they count.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Flag = Literal["unreached", "no_subscribers", "partially_reached"]
LEVELS = ("county", "township", "village")
"""The values of ``level`` a report can be limited to."""


class ChannelCoverage(BaseModel):
    """One channel's deliveries in one area, by their current state."""

    channel: str
    receipts: bool = Field(
        description="The channel reports delivery asynchronously: only delivered or "
        "acknowledged reaches; without receipts, sent already reaches"
    )
    targeted: int = Field(description="Deliveries (endpoints) planned on this channel")
    queued: int = 0
    sending: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    acknowledged: int = 0
    uncertain: int = Field(default=0, description="May have gone out; awaiting a receipt")
    pending: int = Field(default=0, description="Still to be sent: queued + sending")
    reached: int = Field(default=0, description="Deliveries in a state that reaches (see receipts)")


class ReachTimes(BaseModel):
    """Seconds from the alert's acceptance to each subscriber's first reach.

    Percentiles are interpolated from a log-spaced histogram (four buckets
    per doubling, so within about 9 %); ``max`` is exact. ``None`` when
    nobody was reached.
    """

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class AreaCoverage(BaseModel):
    """One administrative area (and everything below it), or the whole alert."""

    code: str = Field(description="Canonical area code (2/4/6/9/12 digits)")
    name: str
    level: str = Field(description="province, prefecture, county, township or village")
    parent: str | None = None
    subscribers_targeted: int = Field(description="Subscribers with at least one delivery")
    subscribers_reached: int = Field(
        description="Subscribers at least one of whose deliveries reached them"
    )
    endpoints_targeted: int = Field(description="Deliveries, all channels")
    reach_rate: float | None = Field(
        description="subscribers_reached / subscribers_targeted; None when nobody was targeted"
    )
    channels: list[ChannelCoverage] = Field(default_factory=list)
    reach_times: ReachTimes | None = None
    flags: list[Flag] = Field(
        default_factory=list,
        description="unreached: targeted, nobody reached yet; no_subscribers: inside the "
        "alert but nobody registered (a blind spot); partially_reached: reach rate below "
        "[coverage] partial_threshold",
    )


class CoverageReport(BaseModel):
    """Coverage of one alert, or of its chain (Alert → Updates → Cancel) as one event."""

    alert_id: str
    chain: list[str] = Field(description="The alerts reported (one, or the whole chain)")
    hazard: str | None = None
    level: str | None = None
    headline: str | None = None
    msg_type: str = "Alert"
    state: str = Field(default="active", description="The alert's state")
    accepted_at: datetime
    generated_at: datetime
    status: str = Field(
        description="Planning: not planned, planning, planned or skipped (not disseminated)"
    )
    note: str | None = Field(default=None, description="Why it was not disseminated")
    final: bool = Field(description="Fan-out finished and nothing pending (queued or sending)")
    reached_rule: str
    threshold: float = Field(description="Reach rate below which an area is partially reached")
    totals: AreaCoverage
    areas: list[AreaCoverage] = Field(
        description="Affected areas, county → township → village, in code order "
        "(each area followed by the areas below it)"
    )


class Count(BaseModel):
    key: str
    name: str | None = None
    alerts: int


class ChannelSummary(BaseModel):
    channel: str
    deliveries: int
    sent: int = 0
    delivered: int = 0
    acknowledged: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    uncertain: int = 0
    pending: int = 0
    reached: int = Field(default=0, description="Deliveries that reached (per channel rule)")
    reach_rate: float | None = None


class SummaryReport(BaseModel):
    """Period statistics: alerts accepted in [period_start, period_end]."""

    period_start: datetime
    period_end: datetime
    alerts: int = Field(description="Messages accepted (Alert, Update, Cancel)")
    by_type: list[Count] = Field(default_factory=list)
    by_hazard: list[Count] = Field(default_factory=list)
    by_level: list[Count] = Field(default_factory=list)
    by_area: list[Count] = Field(
        default_factory=list, description="Per county (or wider area) the alerts named"
    )
    by_issuer: list[Count] = Field(default_factory=list, description="Per CAP sender")
    channels: list[ChannelSummary] = Field(default_factory=list)
    deliveries: int = 0
    subscribers_targeted: int = Field(default=0, description="Summed over the alerts")
    subscribers_reached: int = 0
    reach_rate: float | None = None
    median_time_to_reach: float | None = Field(
        default=None, description="Seconds from acceptance to first reach, over all alerts"
    )
    reach_times: ReachTimes | None = None
