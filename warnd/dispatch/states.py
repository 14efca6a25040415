"""Delivery states and how they are written in the compact store.

::

    queued ──claim──▶ sending ──▶ sent ──▶ delivered ──▶ acknowledged
      ▲  │                │  │       └──▶ failed (async report)
      │  │                │  └─▶ uncertain (maybe sent: reconciled from receipts)
      │  │                └────▶ failed (permanent, or attempts used up: dead letter)
      │  └──▶ cancelled (the alert was cancelled or superseded first)
      │  └──▶ expired   (the alert expired first)
      └── retry (back to queued with a due time)

Each state is one byte in the alert's state string (see
:mod:`warnd.dispatch.store`).
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ACKNOWLEDGED = "acknowledged"
    UNCERTAIN = "uncertain"

    @property
    def code(self) -> str:
        return _CODE[self]

    @classmethod
    def of(cls, code: str) -> DeliveryState:
        return _STATE[code]

    @property
    def reached(self) -> bool:
        """The recipient (may have) got the message: it must hear of a Cancel/Update."""
        return self in REACHED


_CODE = {
    DeliveryState.QUEUED: "q",
    DeliveryState.SENDING: "s",
    DeliveryState.SENT: "S",
    DeliveryState.DELIVERED: "D",
    DeliveryState.FAILED: "F",
    DeliveryState.EXPIRED: "E",
    DeliveryState.CANCELLED: "C",
    DeliveryState.ACKNOWLEDGED: "A",
    DeliveryState.UNCERTAIN: "U",
}
_STATE = {v: k for k, v in _CODE.items()}

REACHED = frozenset(
    {
        DeliveryState.SENT,
        DeliveryState.DELIVERED,
        DeliveryState.ACKNOWLEDGED,
        DeliveryState.UNCERTAIN,
    }
)
FINAL = frozenset(
    {
        DeliveryState.SENT,
        DeliveryState.DELIVERED,
        DeliveryState.FAILED,
        DeliveryState.EXPIRED,
        DeliveryState.CANCELLED,
        DeliveryState.ACKNOWLEDGED,
        DeliveryState.UNCERTAIN,
    }
)
"""No more work is queued for a delivery in these states (receipts and
acknowledgements may still move it)."""

LUA_NAMES = "{" + ", ".join(f"{s.code}='{s.value}'" for s in DeliveryState) + "}"
"""The code → name table, as a Lua table constructor."""
