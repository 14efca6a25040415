"""Prometheus metrics at ``GET /metrics`` (text exposition format 0.0.4).

Two kinds of figures:

* **Events counted by this process** — HTTP requests, alerts accepted and
  refused, delivery outcomes per channel, receipts — kept in the process's
  own registry (one per application, so several apps in one process never
  mix their figures). Sum them over the processes of a deployment.
* **State read from Redis at scrape time** — lane backlogs and pending
  entries per channel and priority, retries waiting, dead letters, alerts
  with open deliveries, feed health, Redis memory. These are the
  deployment's, the same whichever process is scraped.

A scrape costs one pipelined round trip to Redis. Nothing here holds a
secret, an address or a phone number: label values are route templates,
channel, feed and hazard names, levels and outcomes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from warnd import __version__
from warnd.keys import Keys

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PRIORITIES = ("hi", "lo")
WORKER_GROUP = "workers"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class Snapshot:
    """What one scrape read from Redis."""

    up: bool = False
    error: str | None = None
    lanes: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """(channel, priority) → (entries waiting, entries held by a consumer)."""
    accepted_backlog: int = 0
    delayed: int = 0
    dead: int = 0
    open_plans: int = 0
    feeds: dict[str, dict[str, str]] = field(default_factory=dict)
    used_memory: int | None = None
    seconds: float = 0.0


class _StateCollector(Collector):
    """Yields the gauges of the latest :class:`Snapshot`."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        info = GaugeMetricFamily("warnd_build_info", "warnd version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("warnd_redis_up", "Redis answered this scrape", value=int(s.up))
        yield GaugeMetricFamily(
            "warnd_scrape_redis_seconds", "Time to read the state from Redis", value=s.seconds
        )
        if not s.up:
            return
        waiting = GaugeMetricFamily(
            "warnd_lane_entries",
            "Batches waiting in a dispatch lane (not yet read by a worker)",
            labels=["channel", "priority"],
        )
        held = GaugeMetricFamily(
            "warnd_lane_pending",
            "Batches read by a worker and not yet finished",
            labels=["channel", "priority"],
        )
        for (channel, prio), (length, pending) in sorted(s.lanes.items()):
            waiting.add_metric([channel, prio], max(length - pending, 0))
            held.add_metric([channel, prio], pending)
        yield waiting
        yield held
        yield GaugeMetricFamily(
            "warnd_plan_backlog", "Accepted alerts not yet planned", value=s.accepted_backlog
        )
        yield GaugeMetricFamily(
            "warnd_retries_waiting", "Batches waiting for their retry time", value=s.delayed
        )
        yield GaugeMetricFamily(
            "warnd_dead_letters", "Deliveries failed for good (dead-letter stream)", value=s.dead
        )
        yield GaugeMetricFamily(
            "warnd_alerts_open", "Alerts with deliveries not yet final", value=s.open_plans
        )
        failures = GaugeMetricFamily(
            "warnd_feed_consecutive_failures",
            "Failed polls of a feed since its last success",
            labels=["feed"],
        )
        last_ok = GaugeMetricFamily(
            "warnd_feed_last_success_timestamp_seconds",
            "When a feed was last polled successfully (0: never)",
            labels=["feed"],
        )
        for name, raw in sorted(s.feeds.items()):
            failures.add_metric([name], int(raw.get("consecutive_failures") or 0))
            last_ok.add_metric([name], float(raw.get("last_success_at") or 0))
        yield failures
        yield last_ok
        if s.used_memory is not None:
            yield GaugeMetricFamily(
                "warnd_redis_used_memory_bytes", "Redis used_memory", value=s.used_memory
            )


class Metrics:
    """The metrics of one warnd application."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        self.http_requests = Counter(
            "warnd_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "warnd_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts_accepted = Counter(
            "warnd_alerts_accepted",
            "Alerts accepted by ingest (new ones; duplicates are not counted)",
            ["msg_type", "hazard", "level"],
            registry=r,
        )
        self.deliveries = Counter(
            "warnd_deliveries",
            "Delivery outcomes reported by channels in this process",
            ["channel", "outcome"],
            registry=r,
        )
        self.send_seconds = Histogram(
            "warnd_channel_send_duration_seconds",
            "Time a channel took to send one batch",
            ["channel"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.receipts = Counter(
            "warnd_receipts",
            "Receipts received from gateways, by how they were applied",
            ["channel", "result"],
            registry=r,
        )
        self._state = _StateCollector()
        r.register(self._state)

    # The dispatch meter (warnd.dispatch.meter.Meter).
    def batch_sent(self, channel: str, seconds: float) -> None:
        self.send_seconds.labels(channel).observe(seconds)

    def outcomes(self, channel: str, counts: Mapping[str, int]) -> None:
        for outcome, n in counts.items():
            if n:
                self.deliveries.labels(channel, outcome).inc(n)

    def receipt(self, channel: str, result: str) -> None:
        self.receipts.labels(channel, result).inc()

    async def render(
        self, redis: Redis, keys: Keys, channels: Sequence[str], feeds: Sequence[str]
    ) -> bytes:
        """Read the deployment's state from Redis, then the exposition text."""
        self._state.snapshot = await read_state(redis, keys, channels, feeds)
        return generate_latest(self.registry)


async def read_state(
    redis: Redis, keys: Keys, channels: Sequence[str], feeds: Sequence[str]
) -> Snapshot:
    """One pipelined read of the dispatch, feed and memory state."""
    started = time.perf_counter()
    snap = Snapshot()
    lanes = [(c, p) for c in sorted(channels) for p in PRIORITIES]
    pipe = redis.pipeline(transaction=False)
    for channel, prio in lanes:
        lane = keys.dispatch_lane(channel, prio)
        pipe.xlen(lane)
        pipe.xpending(lane, WORKER_GROUP)
    pipe.xlen(keys.dispatch_accepted)
    pipe.zcard(keys.dispatch_delayed)
    pipe.xlen(keys.dispatch_dead)
    pipe.zcard(keys.dispatch_plans)
    for name in feeds:
        pipe.hgetall(keys.feed_state(name))
    pipe.info("memory")
    try:
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    except (RedisError, OSError) as exc:
        snap.error = str(exc) or type(exc).__name__
        snap.seconds = time.perf_counter() - started
        return snap
    snap.up = True
    it = iter(replies)
    for pair in lanes:
        length, pending = next(it), next(it)
        snap.lanes[pair] = (_int(length), _pending(pending))
    snap.accepted_backlog = _int(next(it))
    snap.delayed = _int(next(it))
    snap.dead = _int(next(it))
    snap.open_plans = _int(next(it))
    for name in feeds:
        raw = next(it)
        snap.feeds[name] = raw if isinstance(raw, dict) else {}
    memory = next(it)
    if isinstance(memory, dict) and "used_memory" in memory:
        snap.used_memory = int(memory["used_memory"])
    snap.seconds = time.perf_counter() - started
    return snap


def _int(value: Any) -> int:
    """A reply as an integer; an error reply (no such key or group) counts 0."""
    return int(value) if isinstance(value, int | str) else 0


def _pending(value: Any) -> int:
    if isinstance(value, dict):
        return int(value.get("pending") or 0)
    return 0
