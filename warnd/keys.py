"""Redis key names, in one place.

Every key of one alert shares the hash tag ``{a:<id>}`` so that the same
code runs on a single Redis, behind Sentinel and on Redis Cluster: an
alert's keys always live in one slot. Global indexes carry no tag and are
only ever touched by single-key commands.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "warnd"

    # ---------------------------------------------------------------- alerts
    def alert(self, alert_id: str) -> str:
        """Hash: the alert document and its record fields."""
        return f"{self.prefix}:{{a:{alert_id}}}:alert"

    def waiting_refs(self, alert_id: str) -> str:
        """Hash: messages that referenced this alert before it arrived."""
        return f"{self.prefix}:{{a:{alert_id}}}:refby"

    @property
    def alerts_by_time(self) -> str:
        """Sorted set: alert id scored by acceptance time (epoch seconds)."""
        return f"{self.prefix}:alerts"

    @property
    def alerts_expiry(self) -> str:
        """Sorted set: active alert ids scored by their expiry time."""
        return f"{self.prefix}:alerts:expiry"

    def idempotency(self, scope: str, key: str) -> str:
        return f"{self.prefix}:idem:{scope}:{key}"

    def identifier_seq(self, stamp: str) -> str:
        return f"{self.prefix}:idseq:{stamp}"

    # ---------------------------------------------------------------- tokens
    def token(self, digest: str) -> str:
        return f"{self.prefix}:token:{digest}"

    @property
    def tokens(self) -> str:
        """Hash: token id → digest, so tokens can be listed and revoked by id."""
        return f"{self.prefix}:tokens"

    # --------------------------------------------------------------- console
    def console_session(self, digest: str) -> str:
        """Hash: one console session (the SHA-256 of its cookie value names it)."""
        return f"{self.prefix}:console:session:{digest}"

    # ----------------------------------------------------------------- audit
    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    # ----------------------------------------------------------------- areas
    @property
    def areas(self) -> str:
        """Hash: canonical area code → JSON record (name, source list)."""
        return f"{self.prefix}:areas"

    @property
    def area_boundaries(self) -> str:
        """Hash: canonical area code → ``<source datum>|<hex WKB, WGS-84 lon/lat>``."""
        return f"{self.prefix}:areas:boundaries"

    @property
    def areas_version(self) -> str:
        """Integer: bumped by every area import, so registries know to reload."""
        return f"{self.prefix}:areas:version"

    @property
    def area_imports(self) -> str:
        """List: JSON summary of each area import (file, format, datum, counts), newest first."""
        return f"{self.prefix}:areas:imports"

    @property
    def area_import_digests(self) -> str:
        """Hash: resolved path of a configured area file → SHA-256 last imported."""
        return f"{self.prefix}:areas:digests"

    # ----------------------------------------------------------- subscribers
    @property
    def subscriber_import_digests(self) -> str:
        """Hash: resolved path of a configured roster → SHA-256 last imported."""
        return f"{self.prefix}:subs:digests"

    def subscriber_bucket(self, bucket: int) -> str:
        """Hash: subscriber id → packed record, for ids whose CRC-32 falls in ``bucket``."""
        return f"{self.prefix}:sub:{bucket:03x}"

    def subscribers_in_area(self, code: str) -> str:
        """Sorted set: ids of the subscribers in a county (``code[:6]``; shorter codes
        stand for themselves), scored by their area code padded to 12 digits."""
        return f"{self.prefix}:subs:area:{code[:6]}"

    def subscribers_in_group(self, key: str) -> str:
        """Set: ids of the members of group ``key``."""
        return f"{self.prefix}:subs:group:{key}"

    @property
    def subscriber_changes(self) -> str:
        """Stream: ids touched by each subscriber write, for in-memory indexes."""
        return f"{self.prefix}:subs:changes"

    # -------------------------------------------------------------- channels
    def channel_window(self, channel: str, scope: str) -> str:
        """Sorted set: send times in a channel's rate window (one robot, one account)."""
        return f"{self.prefix}:ch:{channel}:win:{scope}"

    def sandbox_record(self, channel: str) -> str:
        """Stream: every message the sandbox provider of ``channel`` was asked to send."""
        return f"{self.prefix}:ch:{channel}:sandbox"

    @property
    def callback_receipts(self) -> str:
        """Stream: asynchronous receipts as they arrived, before dispatch applies them."""
        return f"{self.prefix}:receipts"

    # ----------------------------------------------------------------- feeds
    # One hash tag per feed: {f:<name>}.
    def feed_state(self, name: str) -> str:
        """Hash: a feed's health, counters, schedule and HTTP validators."""
        return f"{self.prefix}:{{f:{name}}}:state"

    def feed_lease(self, name: str) -> str:
        """String: the id of the process polling this feed (expires unless renewed)."""
        return f"{self.prefix}:{{f:{name}}}:lease"

    def feed_seen(self, name: str) -> str:
        """Sorted set: index entries already handled, scored by when last listed."""
        return f"{self.prefix}:{{f:{name}}}:seen"

    def feed_attempts(self, name: str) -> str:
        """Hash: failed fetches per index entry, so a dead link is quarantined."""
        return f"{self.prefix}:{{f:{name}}}:attempts"

    def feed_rejects(self, name: str) -> str:
        """List: quarantined items, newest first (bounded)."""
        return f"{self.prefix}:{{f:{name}}}:rejects"

    def feed_reject_digests(self, name: str) -> str:
        """Set: SHA-256 of quarantined bodies, so one broken item counts once."""
        return f"{self.prefix}:{{f:{name}}}:rejected"

    def cma_active(self, sender: str) -> str:
        """Hash: (area, hazard) → the current met signal of one sender, for 解除."""
        return f"{self.prefix}:cma:{sender}:active"

    # -------------------------------------------------------------- dispatch
    # Queues shared by every alert carry the hash tag {d}, so the scripts that
    # move work between them touch one slot; per-alert delivery state lives
    # under the alert's own tag {a:<id>}.
    def dispatch_lane(self, channel: str, priority: str) -> str:
        """Stream: batches of deliveries waiting for a channel (``hi`` or ``lo`` lane)."""
        return f"{self.prefix}:{{d}}:lane:{channel}:{priority}"

    @property
    def dispatch_accepted(self) -> str:
        """Stream: alerts accepted by ingest, waiting to be planned."""
        return f"{self.prefix}:{{d}}:accepted"

    @property
    def dispatch_delayed(self) -> str:
        """Sorted set: lane entries waiting for their retry time (score: due, epoch s)."""
        return f"{self.prefix}:{{d}}:delayed"

    @property
    def dispatch_dead(self) -> str:
        """Stream: deliveries that failed for good, with the reason (dead letters)."""
        return f"{self.prefix}:{{d}}:dead"

    @property
    def dispatch_plans(self) -> str:
        """Sorted set: alerts with open deliveries, scored by expiry (epoch s)."""
        return f"{self.prefix}:{{d}}:plans"

    @property
    def dispatch_ack_due(self) -> str:
        """Sorted set: delivery ids awaiting acknowledgement, scored by deadline."""
        return f"{self.prefix}:{{d}}:ackdue"

    def dispatch_reconcile(self, channel: str) -> str:
        """Sorted set: a channel's ``uncertain`` delivery ids, scored by when to
        ask the provider about them next (epoch s)."""
        return f"{self.prefix}:{{d}}:reconcile:{channel}"

    def dispatch_reconcile_tries(self, channel: str) -> str:
        """Hash: delivery id → how often the provider was asked about it."""
        return f"{self.prefix}:{{d}}:reconcile:{channel}:tries"

    @property
    def dispatch_secret(self) -> str:
        """String: the key acknowledgement tokens are derived with."""
        return f"{self.prefix}:{{d}}:secret"

    def rate_bucket(self, channel: str) -> str:
        """Hash: a channel's token bucket shared by every process."""
        return f"{self.prefix}:ch:{channel}:bucket"

    def ack_token(self, token: str) -> str:
        """String: the delivery id an acknowledgement token confirms."""
        return f"{self.prefix}:ack:{token}"

    def provider_ids(self, channel: str, day: str) -> str:
        """Hash: a provider's message id → delivery id (receipts naming only the former),
        or ``r:<request id>`` → the request's deliveries (see warnd/dispatch/correlate.py)."""
        return f"{self.prefix}:ch:{channel}:pid:{day}"

    @property
    def receipts_unmatched(self) -> str:
        """Stream: receipts naming no known delivery, or repeating one already applied."""
        return f"{self.prefix}:receipts:unmatched"

    def deliveries(self, alert_id: str, part: str) -> str:
        """One part of an alert's delivery records (see warnd/dispatch/store.py)."""
        return f"{self.prefix}:{{a:{alert_id}}}:d:{part}"
