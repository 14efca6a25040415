"""The append-only audit trail: a Redis stream of who did what, when.

Every accepted or refused alert, every state change of an alert and every
token action is one entry. Entries are never trimmed by warnd.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from pydantic import BaseModel
from redis.asyncio import Redis

from warnd.keys import Keys


class AuditEntry(BaseModel):
    """One audit entry: ``id`` is the stream entry id, ``at`` epoch seconds."""

    id: str
    at: float
    event: str
    actor: str
    alert_id: str | None
    detail: dict[str, Any]


class Audit:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._key = keys.audit

    async def record(
        self,
        event: str,
        *,
        actor: str,
        alert_id: str | None = None,
        **detail: Any,
    ) -> str:
        fields: dict[str, str] = {
            "event": event,
            "actor": actor,
            "at": f"{time.time():.6f}",
            "detail": json.dumps(detail, ensure_ascii=False, default=str),
        }
        if alert_id:
            fields["alert_id"] = alert_id
        entry_id = await self._redis.xadd(self._key, cast(dict[Any, Any], fields))
        return cast(str, entry_id)

    async def read(
        self, *, after: str | None = None, limit: int = 100, event: str | None = None
    ) -> list[AuditEntry]:
        """Entries oldest first, strictly after stream id ``after``."""
        return await self._walk(
            lambda bound: self._redis.xrange(self._key, min=bound, count=limit),
            f"({after}" if after else "-",
            limit,
            event,
        )

    async def latest(
        self, *, before: str | None = None, limit: int = 100, event: str | None = None
    ) -> list[AuditEntry]:
        """Entries newest first, strictly before stream id ``before``."""
        return await self._walk(
            lambda bound: self._redis.xrevrange(self._key, max=bound, min="-", count=limit),
            f"({before}" if before else "+",
            limit,
            event,
        )

    @staticmethod
    async def _walk(
        read: Callable[[str], Awaitable[Any]], bound: str, limit: int, event: str | None
    ) -> list[AuditEntry]:
        """Up to ``limit`` entries (of ``event``, if given) read in pages from ``bound`` on."""
        out: list[AuditEntry] = []
        while len(out) < limit:
            # decode_responses=True: entries come back as str.
            batch = cast(list[tuple[str, dict[str, str]]], await read(bound))
            if not batch:
                break
            for entry_id, fields in batch:
                bound = f"({entry_id}"
                if event is not None and fields.get("event") != event:
                    continue
                out.append(_entry(entry_id, fields))
                if len(out) == limit:
                    break
        return out


def _entry(entry_id: str, fields: dict[str, str]) -> AuditEntry:
    return AuditEntry(
        id=entry_id,
        at=float(fields.get("at", 0)),
        event=fields.get("event", ""),
        actor=fields.get("actor", ""),
        alert_id=fields.get("alert_id"),
        detail=json.loads(fields.get("detail", "{}")),
    )
