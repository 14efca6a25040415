"""What dispatch reports as it works, for whoever counts (``warnd.metrics``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Meter(Protocol):
    def batch_sent(self, channel: str, seconds: float) -> None:
        """A channel's ``send()`` of one batch returned after ``seconds``."""

    def outcomes(self, channel: str, counts: Mapping[str, int]) -> None:
        """Receipts of one batch recorded: deliveries per outcome (sent, retry, …)."""

    def receipt(self, channel: str, result: str) -> None:
        """An asynchronous receipt applied: ``applied``, ``duplicate``, ``unknown`` …"""
