"""Ingest: classify, authorise, deduplicate, link and record every alert.

Whatever the door — the operator API (CAP or JSON), a feed, the CLI —
an alert that has been parsed and validated comes through
:meth:`Intake.accept`. It leaves as an :class:`AlertRecord` in Redis with
its hazard and level, its place in an Update/Cancel chain, and an audit
entry; or it is refused with an error that says why, and the refusal is
audited too.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.asyncio import Redis

from warnd.adcodes import ADMIN_GEOCODE_NAMES
from warnd.audit import Audit
from warnd.auth import Principal, Role
from warnd.errors import AlertInvalid, Conflict, FieldError, Forbidden, WarndError
from warnd.identifiers import alert_id
from warnd.keys import Keys
from warnd.model import Alert, MsgType
from warnd.store import (
    AlertQuery,
    AlertRecord,
    AlertState,
    AlertStore,
    admin_codes,
)
from warnd.taxonomy import Taxonomy

log = structlog.get_logger("warnd.ingest")

IDEMPOTENCY_TTL = 24 * 3600

_LINK = {
    MsgType.UPDATE: (AlertState.SUPERSEDED, (AlertState.ACTIVE, AlertState.EXPIRED)),
    MsgType.CANCEL: (AlertState.CANCELLED, (AlertState.ACTIVE, AlertState.EXPIRED)),
}
"""What a message does to the alerts it references, and from which states."""


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A client's Idempotency-Key and the digest of the body it came with."""

    key: str
    body_sha256: str

    @classmethod
    def of(cls, key: str | None, body: bytes) -> Idempotency | None:
        return None if key is None else cls(key, hashlib.sha256(body).hexdigest())


@dataclass(slots=True)
class Accepted:
    record: AlertRecord
    created: bool
    """False when the alert was already known (same sender and identifier)."""
    changed: list[tuple[str, AlertState]] = field(default_factory=list)
    """Earlier alerts whose state this one changed."""


class Intake:
    def __init__(
        self, redis: Redis, store: AlertStore, audit: Audit, taxonomy: Taxonomy, keys: Keys
    ) -> None:
        self._redis = redis
        self.store = store
        self.audit = audit
        self.taxonomy = taxonomy
        self._keys = keys
        self.on_accepted: list[Callable[[Accepted], Awaitable[None]]] = []
        """Called with every newly recorded alert, after its chain is linked
        (dispatch registers here, whatever the door the alert came through)."""

    # -------------------------------------------------------------- accept

    async def accept(
        self,
        alert: Alert,
        *,
        principal: Principal,
        source: str,
        warnings: list[str] | None = None,
        idempotency: Idempotency | None = None,
    ) -> Accepted:
        """Record ``alert`` (or find it already recorded) and link its chain."""
        warnings = list(warnings or [])
        principal.require(Role.OPERATOR)
        new_id = alert_id(alert.sender, alert.identifier)
        if idempotency is not None:
            earlier = await self.replay(principal, idempotency)
            if earlier is not None:
                return earlier

        existing = await self.store.get(new_id)
        if existing is not None:
            await self.audit.record(
                "alert.duplicate", actor=source, alert_id=new_id, identifier=alert.identifier
            )
            log.info("alert.duplicate", alert_id=new_id, source=source)
            await self._remember(principal, idempotency, new_id)
            return Accepted(existing, created=False)

        self._classify(alert)
        referenced = await self.store.get_many(
            [alert_id(r.sender, r.identifier) for r in alert.references]
        )
        known = {r.id for r in referenced}
        self._authorise(alert, principal, referenced)
        for ref in alert.references:
            if alert_id(ref.sender, ref.identifier) not in known:
                warnings.append(
                    f"references unknown alert {ref.sender},{ref.identifier}:"
                    " accepted as a new alert"
                )
        now = datetime.now(UTC)
        codes = admin_codes(alert)
        rec = AlertRecord(
            id=new_id,
            identifier=alert.identifier,
            sender=alert.sender,
            sent=alert.sent,
            msg_type=alert.msg_type,
            state=AlertState.ACTIVE,
            received_at=now,
            source=source,
            hazard=alert.hazards[0] if alert.hazards else None,
            level=alert.level,
            expires=alert.expires,
            areas=codes,
            area_names=list(dict.fromkeys(a.area_desc for i in alert.infos for a in i.areas)),
            references=[alert_id(r.sender, r.identifier) for r in alert.references],
            chain=referenced[0].chain if referenced else new_id,
            warnings=warnings,
            alert=alert,
        )
        if rec.expires is not None and rec.expires <= now:
            rec.warnings.append("already expired when received: recorded, not disseminated")
        if not await self.store.create(rec):
            # Another process stored the same message between our read and write.
            raced = await self.store.get(new_id)
            assert raced is not None  # noqa: S101 - HSETNX said it exists
            return Accepted(raced, created=False)
        await self._remember(principal, idempotency, new_id)
        await self.audit.record(
            "alert.accepted",
            actor=source,
            alert_id=new_id,
            identifier=alert.identifier,
            sender=alert.sender,
            msg_type=alert.msg_type.value,
            hazard=rec.hazard,
            level=rec.level.value if rec.level else None,
            areas=codes,
            warnings=rec.warnings,
        )
        log.info(
            "alert.accepted",
            alert_id=new_id,
            identifier=alert.identifier,
            msg_type=alert.msg_type.value,
            hazard=rec.hazard,
            level=rec.level.value if rec.level else None,
            source=source,
        )
        changed = await self._link(rec, referenced)
        if changed and any(cid == new_id for cid, _ in changed):
            refreshed = await self.store.get(new_id)
            rec = refreshed or rec
        result = Accepted(rec, created=True, changed=changed)
        for hook in self.on_accepted:
            await hook(result)
        return result

    async def refuse(self, error: WarndError, *, source: str, body: bytes | None = None) -> None:
        """Audit a refused alert: who sent what, and why it was refused."""
        detail: dict[str, Any] = {
            "status": error.status,
            "reason": error.detail,
            "errors": [e.as_dict() for e in error.errors[:20]],
        }
        if body is not None:
            detail["body_sha256"] = hashlib.sha256(body).hexdigest()
            detail["body_bytes"] = len(body)
        await self.audit.record("alert.refused", actor=source, **detail)
        log.info("alert.refused", source=source, status=error.status, reason=error.detail)

    # -------------------------------------------------------------- expiry

    async def expire_due(self, now: float | None = None) -> list[str]:
        """Persist the expiry of active alerts past ``expires``; returns their ids."""
        now = time.time() if now is None else now
        expired: list[str] = []
        for aid in await self.store.due_for_expiry(now):
            if await self.store.set_state(aid, AlertState.EXPIRED, only_from=(AlertState.ACTIVE,)):
                expired.append(aid)
                await self.audit.record("alert.expired", actor="system", alert_id=aid)
                log.info("alert.expired", alert_id=aid)
            await self.store.forget_expiry(aid)
        return expired

    async def query(self, q: AlertQuery) -> tuple[list[AlertRecord], str | None]:
        return await self.store.query(q)

    # ------------------------------------------------------------ internals

    def _classify(self, alert: Alert) -> None:
        errors: list[FieldError] = []
        for i, info in enumerate(alert.infos):
            try:
                hazard, level = self.taxonomy.classify(info)
            except ValueError as exc:
                errors.append(FieldError(loc=f"/infos/{i}/hazard", msg=str(exc)))
                continue
            info.hazard = hazard
            info.level = level
        if errors:
            raise AlertInvalid("the alert names a hazard warnd does not know", errors=errors)

    def _authorise(self, alert: Alert, principal: Principal, referenced: list[AlertRecord]) -> None:
        """An area-scoped token may only warn, update or cancel inside its areas."""
        if not principal.areas:
            return
        outside: list[FieldError] = []
        for i, info in enumerate(alert.infos):
            for j, area in enumerate(info.areas):
                codes = [
                    g.value
                    for g in area.geocodes
                    if g.value_name.strip().lower() in ADMIN_GEOCODE_NAMES and g.value.isdigit()
                ]
                loc = f"/infos/{i}/areas/{j}"
                if not codes:
                    outside.append(
                        FieldError(
                            loc=loc,
                            msg=f"area {area.area_desc!r} names no administrative code; a token"
                            f" limited to {', '.join(principal.areas)} must name areas by code",
                        )
                    )
                for code in codes:
                    if not principal.covers(code):
                        outside.append(
                            FieldError(
                                loc=loc,
                                msg=f"area {code} ({area.area_desc}) is outside this token's areas"
                                f" {', '.join(principal.areas)}",
                            )
                        )
        for rec in referenced:
            for code in rec.areas:
                if not principal.covers(code):
                    outside.append(
                        FieldError(
                            loc="/references",
                            msg=f"referenced alert {rec.id} covers area {code}, outside this"
                            f" token's areas {', '.join(principal.areas)}",
                        )
                    )
        if outside:
            raise Forbidden(f"token {principal.name!r} may not issue this alert", errors=outside)

    async def _link(
        self, rec: AlertRecord, referenced: list[AlertRecord]
    ) -> list[tuple[str, AlertState]]:
        changed: list[tuple[str, AlertState]] = []
        effect = _LINK.get(rec.msg_type)
        known = {r.id for r in referenced}
        for target in rec.references:
            if target not in known:
                await self.store.note_waiting_reference(target, rec.id, rec.msg_type)
            elif effect is not None and await self.store.set_state(
                target, effect[0], only_from=effect[1], by=rec.id
            ):
                changed.append((target, effect[0]))
        # Messages that referenced this one before it arrived (feeds deliver
        # out of order): apply what they would have done.
        for by_id, msg_type in (await self.store.waiting_references(rec.id)).items():
            late = _LINK.get(msg_type)
            if late is not None and await self.store.set_state(
                rec.id, late[0], only_from=late[1], by=by_id
            ):
                changed.append((rec.id, late[0]))
        for target, state in changed:
            by = rec.id if target != rec.id else "earlier message"
            await self.audit.record(f"alert.{state.value}", actor="system", alert_id=target, by=by)
            log.info(f"alert.{state.value}", alert_id=target, by=by)
        return changed

    async def replay(self, principal: Principal, idem: Idempotency) -> Accepted | None:
        """The earlier answer to this Idempotency-Key, if the same caller sent
        the same body with it; Conflict if the body differs."""
        found = await self._redis.get(self._keys.idempotency(principal.token_id, idem.key))
        if not found:
            return None
        aid, _, digest = str(found).partition(" ")
        if digest != idem.body_sha256:
            raise Conflict(
                f"Idempotency-Key {idem.key!r} was already used with a different request body"
                f" (for alert {aid})"
            )
        rec = await self.store.get(aid)
        return Accepted(rec, created=False) if rec is not None else None

    async def _remember(self, principal: Principal, idem: Idempotency | None, aid: str) -> None:
        if idem is not None:
            await self._redis.set(
                self._keys.idempotency(principal.token_id, idem.key),
                f"{aid} {idem.body_sha256}",
                ex=IDEMPOTENCY_TTL,
                nx=True,
            )
