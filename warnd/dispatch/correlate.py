"""What asynchronous receipts find their delivery by, recorded when a batch is sent.

A channel whose receipts name the request that carried a message (a cloud
SMS API's request id, plus the number) gets one entry per request::

    r:<request id>  →  <alert id>.<batch>.<offsets>      e.g. "a1b2.7.0-999"

``offsets`` are the request's deliveries in the batch, as ranges
(``0-999``; ``0-3,7,9-12`` when the request took part of it), and the
receipt's number is looked up among those addresses of the batch record: a
request names each number once, so (request id, number) is one delivery.
A channel whose receipts name only the provider's per-message id keeps one
entry per message instead (``message id → delivery id``). Both live in the
channel's per-day hash (:meth:`warnd.keys.Keys.provider_ids`), kept three days.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from warnd.channel import Channel, Receipt, Receipts

REQUEST_PREFIX = "r:"
"""Field prefix of a request entry (a message id entry has none)."""


def encode_offsets(offsets: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2,5,7-8"`` (in any order, repeats once)."""
    if not len(offsets):
        return ""
    if isinstance(offsets, range) and offsets.step == 1:
        return str(offsets[0]) if len(offsets) == 1 else f"{offsets[0]}-{offsets[-1]}"
    given = np.asarray(offsets, dtype=np.int64)
    if len(given) == 1 or bool((np.diff(given) == 1).all()):
        a, b = int(given[0]), int(given[-1])  # the usual request: one run, in order
        return str(a) if a == b else f"{a}-{b}"
    ordered = np.unique(given)
    cut = np.flatnonzero(np.diff(ordered) != 1)
    firsts = np.concatenate((ordered[:1], ordered[cut + 1])).tolist()
    lasts = np.concatenate((ordered[cut], ordered[-1:])).tolist()
    return ",".join([str(a) if a == b else f"{a}-{b}" for a, b in zip(firsts, lasts, strict=True)])


def decode_offsets(text: str) -> Iterator[int]:
    """The offsets of :func:`encode_offsets`; raises ``ValueError`` on anything else."""
    for part in text.split(","):
        first, _, last = part.partition("-")
        yield from range(int(first), int(last or first) + 1)


def receipt_ids(
    channel: Channel, alert_id: str, batch: int, items: Sequence[tuple[int, Receipt]]
) -> dict[str, str]:
    """The map entries that let the channel's asynchronous receipts find the
    deliveries of ``items`` (sent ``(offset, receipt)`` pairs of one batch)."""
    if not channel.async_receipts:
        return {}
    if channel.message_id_receipts:
        return message_entries(items)
    return request_entries(alert_id, batch, items)


def request_entries(
    alert_id: str, batch: int, items: Sequence[tuple[int, Receipt]]
) -> dict[str, str]:
    """``r:<request id> → <alert>.<batch>.<offsets>`` of the sent ``(offset, receipt)``
    pairs that name their request."""
    if isinstance(items, ReceiptColumns):
        receipts = items.receipts
        if receipts.request_id is None:
            return {}
        groups: Mapping[str, Sequence[int]] = {receipts.request_id: items.offsets}
    else:
        lists: dict[str, list[int]] = {}
        for j, r in items:
            if r.request_id:
                lists.setdefault(r.request_id, []).append(j)
        groups = lists
    return {
        REQUEST_PREFIX + rid: f"{alert_id}.{batch}.{encode_offsets(offsets)}"
        for rid, offsets in groups.items()
    }


def message_entries(items: Sequence[tuple[int, Receipt]]) -> dict[str, str]:
    """``message id → delivery id`` of the sent pairs whose receipt has a message id."""
    if isinstance(items, ReceiptColumns) and items.receipts.provider_ids is not None:
        columns = zip(items.receipts.provider_ids, items.receipts.delivery_ids, strict=True)
        return {p: d for p, d in columns if p}  # no receipt object per delivery
    return {r.provider_id: r.delivery_id for _, r in items if r.provider_id}


def parse_request_entry(value: str) -> tuple[str, int, list[int]] | None:
    """``(alert id, batch, offsets)`` of a request entry; ``None`` if malformed."""
    alert_id, _, rest = value.partition(".")
    batch, _, ranges = rest.partition(".")
    if not alert_id.isalnum() or not batch.isdigit() or not ranges:
        return None
    try:
        return alert_id, int(batch), list(decode_offsets(ranges))
    except ValueError:
        return None


class ReceiptColumns:
    """Marker base of an ``(offset, receipt)`` sequence made from a :class:`Receipts`
    (``offsets`` and ``receipts`` columns), read without a receipt per item."""

    __slots__ = ()
    offsets: Sequence[int]
    receipts: Receipts
