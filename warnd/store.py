"""Alert persistence in Redis: records, the time index, expiry and links.

An alert record is one Redis hash under the alert's hash tag: the CAP
document as JSON plus the fields warnd keeps about it (state, when and
from where it was accepted, what superseded or cancelled it). Creation is
an ``HSETNX`` on the document field, which makes "same sender and
identifier twice" a no-op however many processes race.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from warnd.adcodes import ADMIN_GEOCODE_NAMES
from warnd.keys import Keys
from warnd.model import Alert, Level, MsgType


def admin_codes(alert: Alert) -> list[str]:
    """The administrative area codes an alert's geocodes name, in order."""
    codes: list[str] = []
    for info in alert.infos:
        for area in info.areas:
            for g in area.geocodes:
                if g.value_name.strip().lower() in ADMIN_GEOCODE_NAMES and g.value.isdigit():
                    codes.append(g.value)
    return list(dict.fromkeys(codes))


class AlertState(StrEnum):
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class AlertRecord(BaseModel):
    """What warnd knows about one accepted CAP message."""

    id: str
    identifier: str
    sender: str
    sent: datetime
    msg_type: MsgType
    state: AlertState
    received_at: datetime
    source: str = Field(description="Who delivered it: token:<name> or feed:<name>")
    hazard: str | None = None
    level: Level | None = None
    expires: datetime | None = None
    areas: list[str] = Field(default_factory=list, description="Administrative codes named")
    area_names: list[str] = Field(default_factory=list)
    references: list[str] = Field(default_factory=list, description="Ids this message references")
    chain: str = Field(description="Id of the first message of this alert's chain")
    superseded_by: str | None = None
    cancelled_by: str | None = None
    warnings: list[str] = Field(default_factory=list)
    alert: Alert

    def effective_state(self, now: float | None = None) -> AlertState:
        """The state as of ``now``: an active alert past its expiry is expired."""
        if (
            self.state is AlertState.ACTIVE
            and self.expires is not None
            and self.expires.timestamp() <= (time.time() if now is None else now)
        ):
            return AlertState.EXPIRED
        return self.state


@dataclass(frozen=True, slots=True)
class AlertQuery:
    state: AlertState | None = None
    hazard: str | None = None
    level: Level | None = None
    area: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    cursor: str | None = None

    def matches(self, rec: AlertRecord, now: float) -> bool:
        if self.state is not None and rec.effective_state(now) is not self.state:
            return False
        if self.hazard is not None and self.hazard not in rec.alert.hazards:
            return False
        if self.level is not None and rec.level is not self.level:
            return False
        return self.area is None or any(
            c.startswith(self.area) or self.area.startswith(c) for c in rec.areas
        )


_RECORD_FIELDS = ("state", "superseded_by", "cancelled_by")


class AlertStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def create(self, rec: AlertRecord) -> bool:
        """Store a new record; ``False`` if one with this id already exists."""
        key = self._keys.alert(rec.id)
        doc = rec.model_dump_json(exclude=set(_RECORD_FIELDS))
        created = await self._redis.hsetnx(key, "doc", doc)
        if not created:
            return False
        mapping: dict[Any, Any] = {"state": rec.state.value}
        if rec.superseded_by:
            mapping["superseded_by"] = rec.superseded_by
        if rec.cancelled_by:
            mapping["cancelled_by"] = rec.cancelled_by
        await self._redis.hset(key, mapping=mapping)
        await self._redis.zadd(self._keys.alerts_by_time, {rec.id: rec.received_at.timestamp()})
        if rec.expires is not None and rec.state is AlertState.ACTIVE:
            await self._redis.zadd(self._keys.alerts_expiry, {rec.id: rec.expires.timestamp()})
        return True

    async def get(self, alert_id: str) -> AlertRecord | None:
        fields = await self._redis.hgetall(self._keys.alert(alert_id))
        return _record(cast(dict[str, str], fields))

    async def get_many(self, ids: Sequence[str]) -> list[AlertRecord]:
        pipe = self._redis.pipeline(transaction=False)
        for alert_id in ids:
            pipe.hgetall(self._keys.alert(alert_id))
        out = []
        for fields in await pipe.execute():
            rec = _record(fields)
            if rec is not None:
                out.append(rec)
        return out

    async def set_state(
        self,
        alert_id: str,
        state: AlertState,
        *,
        only_from: Sequence[AlertState],
        by: str | None = None,
    ) -> bool:
        """Move an alert to ``state`` if it is in one of ``only_from``.

        One Lua call on the alert's own hash, so concurrent updates, cancels
        and expiry sweeps never overwrite each other's transitions.
        """
        by_field = {
            AlertState.SUPERSEDED: "superseded_by",
            AlertState.CANCELLED: "cancelled_by",
        }.get(state, "")
        changed = await self._redis.eval(
            _SET_STATE,
            1,
            self._keys.alert(alert_id),
            state.value,
            by_field,
            by or "",
            *[s.value for s in only_from],
        )
        if changed and state is not AlertState.ACTIVE:
            await self._redis.zrem(self._keys.alerts_expiry, alert_id)
        return bool(changed)

    async def due_for_expiry(self, now: float, limit: int = 500) -> list[str]:
        ids = await self._redis.zrangebyscore(
            self._keys.alerts_expiry, "-inf", now, start=0, num=limit
        )
        return cast(list[str], ids)

    async def forget_expiry(self, alert_id: str) -> None:
        await self._redis.zrem(self._keys.alerts_expiry, alert_id)

    async def note_waiting_reference(self, target_id: str, by_id: str, msg_type: MsgType) -> None:
        """Remember that ``by_id`` referenced ``target_id`` before it arrived."""
        await self._redis.hset(self._keys.waiting_refs(target_id), by_id, msg_type.value)

    async def waiting_references(self, target_id: str) -> dict[str, MsgType]:
        raw = cast(dict[str, str], await self._redis.hgetall(self._keys.waiting_refs(target_id)))
        return {k: MsgType(v) for k, v in raw.items()}

    async def query(self, q: AlertQuery) -> tuple[list[AlertRecord], str | None]:
        """Newest first; returns a page and the cursor of the next page."""
        now = time.time()
        hi: float | str = q.until if q.until is not None else "+inf"
        lo: float | str = q.since if q.since is not None else "-inf"
        skip_through: str | None = None
        if q.cursor:
            score_text, _, skip_through = q.cursor.partition(":")
            hi = float(score_text)
        page: list[AlertRecord] = []
        scan = max(q.limit * 4, 100)
        offset = 0
        while len(page) < q.limit:
            rows = cast(
                list[tuple[str, float]],
                await self._redis.zrevrangebyscore(
                    self._keys.alerts_by_time, hi, lo, start=offset, num=scan, withscores=True
                ),
            )
            if not rows:
                return page, None
            offset += len(rows)
            if skip_through is not None:
                ids = [r[0] for r in rows]
                if skip_through in ids:
                    rows = rows[ids.index(skip_through) + 1 :]
                skip_through = None
            scores = dict(rows)
            for rec in await self.get_many([r[0] for r in rows]):
                if q.matches(rec, now):
                    page.append(rec)
                    if len(page) == q.limit:
                        return page, f"{scores[rec.id]!r}:{rec.id}"
        return page, None


_SET_STATE = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return 0 end
for i = 4, #ARGV do
  if ARGV[i] == cur then
    redis.call('HSET', KEYS[1], 'state', ARGV[1])
    if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
    return 1
  end
end
return 0
"""


def _record(fields: dict[str, Any]) -> AlertRecord | None:
    if not fields or "doc" not in fields:
        return None
    data = json.loads(fields["doc"])
    data["state"] = fields.get("state", AlertState.ACTIVE.value)
    data["superseded_by"] = fields.get("superseded_by")
    data["cancelled_by"] = fields.get("cancelled_by")
    return AlertRecord.model_validate(data)


def utcnow() -> datetime:
    return datetime.now(UTC)
