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

    # ----------------------------------------------------------------- audit
    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"
