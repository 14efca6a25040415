"""The ``[dispatch]`` settings: workers, retries, recovery, dissemination policy.

Imported by :mod:`warnd.settings`, so it depends on pydantic only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StatusName = Literal["Actual", "Exercise", "System", "Test", "Draft"]


class DispatchSettings(BaseModel):
    """How accepted alerts fan out (see README "Dispatch")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Run planners and channel workers in this process (``warnd serve``)."""
    concurrency: int = Field(default=4, ge=1, le=256)
    """Batches in flight per channel in one process: the bound on memory and
    connections (backpressure: a full pool reads no more from its lanes)."""
    concurrency_per_channel: dict[str, int] = Field(default_factory=dict)
    max_attempts: int = Field(default=5, ge=1, le=100)
    """Attempts per delivery before it is dead-lettered (throttling is not an attempt)."""
    max_attempts_per_channel: dict[str, int] = Field(default_factory=dict)
    backoff_base: float = Field(default=2.0, gt=0)
    """Seconds before the first retry; doubles per attempt, with full jitter."""
    backoff_max: float = Field(default=300.0, gt=0)
    reconcile_after: float = Field(default=30.0, gt=0)
    """Seconds after a send left deliveries ``uncertain`` before the provider's
    status-query API is asked (providers record a message with some delay);
    then again after doubling pauses (up to ``backoff_max``)."""
    reconcile_tries: int = Field(default=10, ge=1, le=100)
    """Queries about one delivery before it is left ``uncertain`` for an operator."""
    reclaim_idle: float = Field(default=60.0, ge=1)
    """Seconds a lane entry may sit unacknowledged with a silent consumer
    before another process takes it over (live consumers renew theirs)."""
    settle_timeout: float = Field(default=30.0, ge=0)
    """Seconds a Cancel/Update waits for sends of the old alert already in
    flight, so that everyone reached gets the 解除/更新."""
    disseminate: list[StatusName] = Field(default_factory=lambda: list[StatusName](["Actual"]))
    """CAP statuses sent to subscribers. ``Exercise`` drills can be added;
    ``System``, ``Test`` and ``Draft`` messages are never sent to the public
    (accepting them in this list is refused)."""
    ack_deadline_minutes: int = Field(default=30, ge=1, le=24 * 60)
    """Deadline for groups with ``ack_required`` that set none."""
    ack_url: str | None = Field(default=None, pattern=r"^https?://")
    """Public base of the acknowledgement link (``…/v1/ack/<token>``);
    default: the receipts URL's host."""
    poll_interval: float = Field(default=0.2, gt=0, le=10)
    """Seconds between looks at the retry schedule and acknowledgement deadlines."""
    sweep_interval: float = Field(default=5.0, gt=0)
    """Seconds between expiry sweeps and reclaim passes."""
    recover_hours: float = Field(default=24.0, ge=0)
    """At start, alerts accepted this recently with no dispatch record are planned."""

    @model_validator(mode="after")
    def _policy(self) -> DispatchSettings:
        public = {"System", "Test", "Draft"} & set(self.disseminate)
        if public:
            raise ValueError(
                f"disseminate: {', '.join(sorted(public))} messages are never sent to the public"
            )
        return self

    def attempts_for(self, channel: str) -> int:
        return self.max_attempts_per_channel.get(channel, self.max_attempts)

    def concurrency_for(self, channel: str) -> int:
        return self.concurrency_per_channel.get(channel, self.concurrency)
