"""Match: an alert → the subscribers it must reach, and over which endpoints.

``await matcher.match(alert)`` returns an :class:`Audience`. The rules:

Areas
    Each ``info``'s areas are resolved by the area registry
    (:meth:`warnd.areas.AreaRegistry.resolve`). A subscriber is in an area
    when its own area code is under a code named by an administrative
    geocode (prefix: ``371721`` is all of 曹县), or under a code whose
    boundary the area's polygons/circles intersect and either it has no
    point or its point lies in those shapes (tested exactly, vectorised).
    Several areas and several info blocks are unioned.

Groups
    An info block concerns a group when the group's hazards (a parent
    hazard covers its subtypes) and minimum level admit the info's hazard
    and level; the subscriber must be a member and its area under one of
    the group's area prefixes. Subscribers in no group belong to
    ``default`` (see :mod:`warnd.groups`).

Once per subscriber
    A subscriber selected by several infos takes the one with the highest
    level (ties: the first info). Among its groups that this info selects,
    the first in configuration order for which it has an endpoint on one
    of the group's channels decides the deliveries: ``channel_mode
    "first"`` gives one delivery on the first listed channel it has an
    endpoint for; ``"all"`` one per listed channel it has. A selected
    subscriber with no endpoint on any of those channels is counted in
    ``no_endpoint`` (a reach gap), never silently dropped.

Blind spots
    Affected areas without a single subscriber (in any group), reported as
    the broadest such areas: below a geocoded county, each township or
    village with nobody in it; for polygon/circle areas, each intersected
    area with nobody in it.

The index
    :class:`SubscriberIndex` holds, per subscriber slot, numpy arrays of the
    area key (canonical code padded to 12 digits, so a code prefix is one
    key range), WGS-84 lon/lat, group and channel bitmasks, a language
    number and the address on each channel, plus a key-sorted copy for
    range lookups (dispatch reads an audience's addresses from it: planning
    a million deliveries reads no subscriber record). Writes since the last
    sort go to a small delta scanned directly; the sort is redone when the
    delta grows. :class:`Matcher` loads it from Redis at start, applies
    writes made through its own store at once, and before each match
    replays the change stream for writes by other processes.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import shapely
import structlog

from warnd.areas import AreaLevel, AreaRegistry, ResolvedArea
from warnd.groups import CHANNELS, ChannelName, GroupTable
from warnd.model import Alert, Level, ValuePair
from warnd.subscribers import Packed, Row, SubscriberStore

log = structlog.get_logger("warnd.match")

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]

_LEVELS: tuple[Level | None, ...] = (None, Level.BLUE, Level.YELLOW, Level.ORANGE, Level.RED)
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
_UNKNOWN_LANGUAGE = 65535
_ADDRESS = 7
"""Position of the first channel's address in a stored record (see :data:`Row`)."""
_PACKED = np.dtype("S16")
"""An address column while every address in it is ASCII of at most 16 bytes (phone
numbers in E.164 are): 16 bytes a slot instead of a pointer and a str object."""
_TEXT: np.dtype[Any] = (
    np.dtypes.StringDType() if hasattr(np.dtypes, "StringDType") else np.dtype(object)
)
"""Any other address column: numpy's variable-width strings (numpy 2), which keep
no Python object per address; str objects on older numpy."""


def area_key(code: str) -> int:
    """A canonical code as a 12-digit number: 371721 → 371721000000."""
    return int(code.ljust(12, "0"))


def key_range(code: str) -> tuple[int, int]:
    """The half-open key range of every area a canonical code covers."""
    lo = area_key(code)
    return lo, lo + 10 ** (12 - len(code))


def _minimal(codes: Iterable[str]) -> list[str]:
    out: list[str] = []
    for code in sorted(set(codes)):
        if out and code.startswith(out[-1]):
            continue
        out.append(code)
    return out


def _in_ranges(keys: I64, codes: Sequence[str]) -> npt.NDArray[np.bool_]:
    """Which keys fall under any of the (minimal, sorted) codes."""
    if not codes or len(keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    bounds = np.array([key_range(c) for c in codes], dtype=np.int64)
    low, high = int(keys.min()), int(keys.max())
    if any(lo <= low and high < hi for lo, hi in bounds.tolist()):
        return np.ones(len(keys), dtype=bool)  # all under one code (the common case)
    i = np.searchsorted(bounds[:, 0], keys, side="right") - 1
    ok = i >= 0
    out = np.zeros(len(keys), dtype=bool)
    out[ok] = keys[ok] < bounds[i[ok], 1]
    return out


@dataclass(slots=True)
class Cand:
    """Candidate subscribers with their attributes, aligned (contiguous copies).

    ``lon``/``lat`` are ``None`` when the caller needs no point test.
    """

    slots: I32
    key: I64
    grp: npt.NDArray[np.uint64]
    chan: npt.NDArray[np.uint8]
    lon: npt.NDArray[np.float64] | None = None
    lat: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.slots)

    def take(self, which: npt.NDArray[Any], *, points: bool = True) -> Cand:
        """The entries at ``which`` (a bool mask or indexes), points only if wanted."""
        idx = np.flatnonzero(which) if which.dtype == np.bool_ else which
        lon = self.lon[idx] if points and self.lon is not None else None
        lat = self.lat[idx] if points and self.lat is not None else None
        return Cand(self.slots[idx], self.key[idx], self.grp[idx], self.chan[idx], lon, lat)

    @classmethod
    def concat(cls, parts: Sequence[Cand]) -> Cand:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return _EMPTY
        points = all(p.lon is not None for p in parts)

        def cat(name: str) -> Any:
            return np.concatenate([getattr(p, name) for p in parts])

        return cls(
            cat("slots"),
            cat("key"),
            cat("grp"),
            cat("chan"),
            cat("lon") if points else None,
            cat("lat") if points else None,
        )


_CAND_FIELDS = ("slots", "key", "grp", "chan", "lon", "lat")
_EMPTY = Cand(
    np.empty(0, np.int32),
    np.empty(0, np.int64),
    np.empty(0, np.uint64),
    np.empty(0, np.uint8),
    np.empty(0, np.float64),
    np.empty(0, np.float64),
)
GRID = 32


def points_in(
    geom: Any, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Which (lon, lat) points intersect ``geom`` (exactly as ``shapely.intersects_xy``).

    For many points, a GRID × GRID raster over the geometry's bounds is
    classified first (cells wholly inside, wholly outside, on the edge);
    only points in edge cells are tested against the geometry itself.
    Cells are widened by a hair so that a point's cell always contains it.
    """
    if len(lon) < 4 * GRID * GRID:
        return shapely.intersects_xy(geom, lon, lat)
    x0, y0, x1, y1 = geom.bounds
    w = (x1 - x0) / GRID or 1e-9
    h = (y1 - y0) / GRID or 1e-9
    i = np.arange(GRID)
    cx, cy = np.meshgrid(x0 + i * w, y0 + i * h, indexing="ij")
    eps = 1e-9
    left, bottom = cx.ravel(), cy.ravel()
    boxes = shapely.box(left - eps, bottom - eps, left + w + eps, bottom + h + eps)
    state = np.full(GRID * GRID, 2, dtype=np.int8)
    state[~shapely.intersects(geom, boxes)] = 0
    state[shapely.contains(geom, boxes)] = 1
    gx = np.clip(((lon - x0) / w).astype(np.int64), 0, GRID - 1)
    gy = np.clip(((lat - y0) / h).astype(np.int64), 0, GRID - 1)
    cell = state[gx * GRID + gy]
    out: npt.NDArray[np.bool_] = cell == 1
    edge = np.flatnonzero(cell == 2)
    if len(edge):
        out[edge] = shapely.intersects_xy(geom, lon[edge], lat[edge])
    return out


# ------------------------------------------------------------------- index


class SubscriberIndex:
    """Every subscriber's matching attributes, packed in numpy arrays."""

    def __init__(self, groups: GroupTable, capacity: int = 1024) -> None:
        self.groups = groups
        self._reset(capacity)

    def _reset(self, capacity: int) -> None:
        self._cap = capacity
        self._n = 0
        self._free: list[int] = []
        self._pos: dict[str, int] = {}
        self._mask_cache: dict[str, int] = {}
        self._key_cache: dict[str, int] = {}
        self._languages: dict[str, int] = {}
        self.languages: list[str] = []
        self._counts: dict[int, int] = {}
        self._count_keys: I64 = np.empty(0, np.int64)
        self._count_cum: I64 = np.zeros(1, np.int64)
        self._counts_stale = False
        self._sorted: Cand = _EMPTY
        self._stale: npt.NDArray[np.bool_] = np.zeros(0, bool)
        self._delta: list[int] = []
        self._delta_arr: I32 | None = None
        self.ids: npt.NDArray[Any] = np.full(capacity, None, dtype=object)
        self.key: I64 = np.zeros(capacity, np.int64)
        self.lon: npt.NDArray[np.float64] = np.full(capacity, np.nan)
        self.lat: npt.NDArray[np.float64] = np.full(capacity, np.nan)
        self.grp: npt.NDArray[np.uint64] = np.zeros(capacity, np.uint64)
        self.chan: npt.NDArray[np.uint8] = np.zeros(capacity, np.uint8)
        self.lang: npt.NDArray[np.uint16] = np.zeros(capacity, np.uint16)
        self.addr: list[npt.NDArray[Any] | None] = [None] * len(CHANNELS)
        """Per channel (in :data:`CHANNELS` order), each slot's address (``None``
        or empty where it has none: :attr:`chan` says which); a channel's array
        exists once any subscriber has an address on it, :data:`_PACKED` while
        its addresses fit, else of str objects (see :meth:`addresses`)."""
        self.alive: npt.NDArray[np.bool_] = np.zeros(capacity, bool)
        self.gen: npt.NDArray[np.uint32] = np.zeros(capacity, np.uint32)
        """Bumped when a slot's subscriber is deleted, so a stale slot is never misread."""
        self._dirty: npt.NDArray[np.bool_] = np.zeros(capacity, bool)
        self._scratch: npt.NDArray[np.bool_] = np.zeros(capacity, bool)
        self._at: I32 = np.full(capacity, -1, np.int32)
        """Each slot's position in the sorted copy, -1 when not in it."""

    def __len__(self) -> int:
        return len(self._pos)

    def __contains__(self, sub_id: object) -> bool:
        return sub_id in self._pos

    def _grow(self, need: int) -> None:
        cap = max(need, self._cap * 2)

        def more(arr: Any) -> Any:
            out = np.zeros(cap, dtype=arr.dtype) if arr.dtype != object else np.full(cap, None)
            out[: len(arr)] = arr
            return out

        self.ids = more(self.ids)
        self.key = more(self.key)
        self.lon = np.concatenate([self.lon, np.full(cap - self._cap, np.nan)])
        self.lat = np.concatenate([self.lat, np.full(cap - self._cap, np.nan)])
        self.grp = more(self.grp)
        self.chan = more(self.chan)
        self.lang = more(self.lang)
        self.addr = [None if a is None else more(a) for a in self.addr]
        self.alive = more(self.alive)
        self.gen = more(self.gen)
        self._dirty = more(self._dirty)
        self._scratch = np.zeros(cap, dtype=bool)
        self._at = np.concatenate([self._at, np.full(cap - self._cap, -1, np.int32)])
        self._cap = cap

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the arrays and the id table (ids' strings included)."""
        arrays = (
            *(self.key, self.lon, self.lat, self.grp, self.chan, self.lang, self.alive),
            *(self._dirty, self._scratch, self.ids, self._at, self.gen, self._stale),
            *(getattr(self._sorted, f) for f in _CAND_FIELDS),
            *(a for a in self.addr if a is not None),
        )
        total: int = sum(int(a.nbytes) for a in arrays)
        total += sys.getsizeof(self._pos) + sum(sys.getsizeof(k) for k in self._pos)
        for a in self.addr:  # text held outside the array itself
            if a is None or a.dtype == _PACKED:
                continue
            values = a[: self._n].tolist()
            if a.dtype == object:
                total += sum(sys.getsizeof(x) for x in values if x)
            else:  # numpy's string arena: long strings only (short ones are inline)
                total += sum(len(x.encode()) + 8 for x in values if len(x) > 15)
        return total + 8 * len(self._delta) + 8 * len(self._free)

    def _area_key(self, code: str) -> int:
        key = self._key_cache[code] = area_key(code)
        return key

    def _group_mask(self, joined: str) -> int:
        """Membership bits of a stored group list (``"a,b"``; empty: default)."""
        mask = self._mask_cache.get(joined)
        if mask is None:
            keys = joined.split(",") if joined else []
            known = [k for k in keys if k in self.groups]
            if len(known) != len(keys):
                log.warning(
                    "subscribers.unknown_groups",
                    groups=[k for k in keys if k not in self.groups],
                    note="members are matched only through their configured groups",
                )
            mask = self.groups.mask(known) if known or not keys else 0
            self._mask_cache[joined] = mask
        return mask

    def _language(self, tag: str) -> int:
        n = self._languages.get(tag)
        if n is None:
            if len(self.languages) >= _UNKNOWN_LANGUAGE:
                return _UNKNOWN_LANGUAGE
            n = self._languages[tag] = len(self.languages)
            self.languages.append(tag)
        return n

    # ------------------------------------------------------------- writes

    def clear(self) -> None:
        self._reset(1024)

    def apply(self, written: Sequence[Packed], deleted: Sequence[str] = ()) -> None:
        """Insert or replace ``written`` and drop ``deleted`` ids."""
        rows = [
            [1, p.name, p.area, p.lon, p.lat, p.language, ",".join(p.groups),
             p.sms, p.email, p.wechat, p.board]
            for p in written
        ]  # fmt: skip
        self.apply_rows([p.id for p in written], rows, deleted)

    def apply_rows(
        self, ids: Sequence[str], rows: Sequence[Sequence[Any]], deleted: Sequence[str] = ()
    ) -> None:
        """:meth:`apply` on records as stored (decoded JSON arrays, see
        :func:`warnd.subscribers.encode`): the fast path for loading."""
        counts = self._counts
        if ids:
            n = len(ids)
            slots = np.empty(n, dtype=np.int64)
            pos = self._pos
            for i, sub_id in enumerate(ids):
                slot = pos.get(sub_id)
                if slot is None:
                    if self._free:
                        slot = self._free.pop()
                    else:
                        if self._n >= self._cap:
                            self._grow(self._n + 1)
                        slot = self._n
                        self._n += 1
                    pos[sub_id] = slot
                else:
                    counts[int(self.key[slot])] -= 1
                slots[i] = slot
            keycache = self._key_cache
            keys = np.fromiter(
                (keycache.get(r[2]) or self._area_key(r[2]) for r in rows), np.int64, n
            )
            nan = math.nan
            self.ids[slots] = ids
            self.key[slots] = keys
            self.lon[slots] = [nan if r[3] is None else r[3] for r in rows]
            self.lat[slots] = [nan if r[4] is None else r[4] for r in rows]
            masks = self._mask_cache
            self.grp[slots] = np.fromiter(
                (masks.get(r[6]) if r[6] in masks else self._group_mask(r[6]) for r in rows),
                np.uint64,
                n,
            )
            self.chan[slots] = [
                (r[7] is not None) | (r[8] is not None) << 1 | (r[9] is not None) << 2
                | (r[10] is not None) << 3
                for r in rows
            ]  # fmt: skip
            langs = self._languages
            self.lang[slots] = [
                langs[r[5]] if r[5] in langs else self._language(r[5]) for r in rows
            ]
            for c in range(len(CHANNELS)):
                self._set_addresses(c, slots, [r[_ADDRESS + c] for r in rows])
            self.alive[slots] = True
            uniq, m = np.unique(keys, return_counts=True)
            for k, c in zip(uniq.tolist(), m.tolist(), strict=True):
                counts[k] = counts.get(k, 0) + c
            self._touch(slots)
        gone: list[int] = []
        for sub_id in deleted:
            slot = self._pos.pop(sub_id, None)
            if slot is not None:
                counts[int(self.key[slot])] -= 1
                gone.append(slot)
        if gone:
            arr = np.array(gone, dtype=np.int64)
            self.alive[arr] = False
            self.gen[arr] += 1
            self.ids[arr] = None
            for a in self.addr:
                if a is not None:
                    a[arr] = b"" if a.dtype == _PACKED else ""
            self._free.extend(gone)
            self._touch(arr)
        self._counts_stale = True

    def _set_addresses(
        self, c: int, slots: npt.NDArray[np.int64], column: list[str | None]
    ) -> None:
        held = self.addr[c]
        if held is None and column.count(None) == len(column):
            return
        packed: list[bytes] | None = None
        if held is None or held.dtype == _PACKED:
            try:
                packed = [a.encode("ascii") if a is not None else b"" for a in column]
            except UnicodeEncodeError:
                packed = None
            if packed is not None and max(map(len, packed), default=0) > _PACKED.itemsize:
                packed = None
        if held is None:
            held = np.zeros(self._cap, _PACKED if packed is not None else _TEXT)
            self.addr[c] = held
        elif held.dtype == _PACKED and packed is None:
            # An address that does not fit: the column holds any text from now on.
            old = held
            held = self.addr[c] = np.zeros(self._cap, _TEXT)
            live = np.flatnonzero(old[: self._n])
            held[live] = [b.decode("ascii") for b in old[live].tolist()]
        if held.dtype == _PACKED:
            held[slots] = packed
        else:
            held[slots] = [a if a is not None else "" for a in column]

    def address_column(
        self, c: int, slots: npt.NDArray[Any]
    ) -> tuple[list[str] | None, npt.NDArray[Any] | None]:
        """The addresses on channel ``c`` (an index of :data:`CHANNELS`) of these
        slots, which must have one (see :attr:`chan`), as the index holds them:
        packed (``(None, bytes)``, not decoded: :func:`decode_packed`) or as
        text (``(text, None)``)."""
        column = self.addr[c]
        if column is None:
            return [""] * len(slots), None
        raw = column[slots]
        if column.dtype == _PACKED:
            return None, raw
        return cast(list[str], raw.tolist()), None

    def _touch(self, slots: npt.NDArray[np.int64]) -> None:
        fresh = slots[~self._dirty[slots]]
        if len(fresh):
            fresh = np.unique(fresh)
            self._dirty[fresh] = True
            self._delta.extend(fresh.tolist())
            self._delta_arr = None
            at = self._at[fresh]
            self._stale[at[at >= 0]] = True

    def settle(self) -> None:
        """Sort the index and count it now (after a bulk load), so the next match does not."""
        if self._delta:
            self._settle(force=True)
        self._count_table()

    def _settle(self, *, force: bool = False) -> None:
        """Re-sort when the delta has grown past a few percent of the index.

        The sorted copy holds every attribute in key order, so the
        subscribers under a code are contiguous slices of it.
        """
        if not force and len(self._delta) <= 4096 + len(self._pos) // 32:
            return
        live = np.flatnonzero(self.alive[: self._n])
        order = live[np.argsort(self.key[live], kind="stable")].astype(np.int32)
        self._sorted = Cand(
            order, self.key[order], self.grp[order], self.chan[order],
            self.lon[order], self.lat[order],
        )  # fmt: skip
        self._stale = np.zeros(len(order), bool)
        self._at[:] = -1
        self._at[order] = np.arange(len(order), dtype=np.int32)
        self._dirty[: self._n] = False
        self._delta = []
        self._delta_arr = None

    # ------------------------------------------------------------ lookups

    def under(self, codes: Sequence[str], *, points: bool = False) -> Cand:
        """Live subscribers whose area is under any of these canonical codes
        (with their points when ``points``)."""
        codes = _minimal(codes)
        if not codes:
            return _EMPTY
        self._settle()
        srt = self._sorted
        bounds = np.array([key_range(c) for c in codes], dtype=np.int64)
        lo = np.searchsorted(srt.key, bounds[:, 0])
        hi = np.searchsorted(srt.key, bounds[:, 1])
        parts: list[Cand] = []
        for i, j in zip(lo.tolist(), hi.tolist(), strict=True):
            if j > i:
                part = Cand(
                    srt.slots[i:j],
                    srt.key[i:j],
                    srt.grp[i:j],
                    srt.chan[i:j],
                    srt.lon[i:j] if points and srt.lon is not None else None,
                    srt.lat[i:j] if points and srt.lat is not None else None,
                )
                if self._delta:
                    stale = self._stale[i:j]
                    if stale.any():
                        part = part.take(~stale)
                parts.append(part)
        if self._delta:
            if self._delta_arr is None:
                self._delta_arr = np.array(self._delta, dtype=np.int32)
            d = self._delta_arr
            d = d[self.alive[d]]
            d = d[_in_ranges(self.key[d], codes)]
            if len(d):
                parts.append(
                    Cand(
                        d,
                        self.key[d],
                        self.grp[d],
                        self.chan[d],
                        self.lon[d] if points else None,
                        self.lat[d] if points else None,
                    )
                )
        return Cand.concat(parts)

    def slots_under(self, codes: Sequence[str]) -> I32:
        """Live slots whose area is under any of these canonical codes."""
        return self.under(codes).slots

    def _count_table(self) -> tuple[I64, I64]:
        if self._counts_stale:
            items = sorted((k, c) for k, c in self._counts.items() if c > 0)
            self._count_keys = np.array([k for k, _ in items], dtype=np.int64)
            self._count_cum = np.concatenate(
                [[0], np.cumsum([c for _, c in items], dtype=np.int64)]
            ).astype(np.int64)
            self._counts = {k: c for k, c in items}
            self._counts_stale = False
        return self._count_keys, self._count_cum

    def count_under(self, codes: Sequence[str]) -> I64:
        """Subscribers under each canonical code (the area and everything below it)."""
        keys, cum = self._count_table()
        if not codes:
            return np.empty(0, np.int64)
        bounds = np.array([key_range(c) for c in codes], dtype=np.int64)
        i = np.searchsorted(keys, bounds[:, 0])
        j = np.searchsorted(keys, bounds[:, 1])
        return cum[j] - cum[i]

    def count_direct(self, code: str) -> int:
        self._count_table()
        return self._counts.get(area_key(code), 0)


# ---------------------------------------------------------------- audience


@dataclass(frozen=True, slots=True)
class AffectedArea:
    code: str
    name: str | None
    level: Level | None
    """The highest level any info gives this area."""
    how: str
    """``geocode`` (whole area) or ``geometry`` (intersected by a polygon/circle)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One (subscriber, endpoint) the dispatch stage must send to."""

    subscriber_id: str
    channel: ChannelName
    address: str
    language: str
    group: str
    level: Level | None
    info: int
    """Index of the alert's info block the subscriber was selected by."""
    ack_required: bool


def decode_packed(packed: npt.NDArray[Any]) -> list[str]:
    """Addresses as the index packs them (``S<n>``, UTF-8) made text."""
    return list(map(bytes.decode, packed.tolist()))


@dataclass(slots=True)
class EndpointColumns:
    """One channel's deliveries in a span of an audience, as parallel columns.

    The bulk form of :class:`Delivery` (no object per recipient): entry
    ``i`` is the subscriber at position ``at[i]`` of the audience (its info,
    group, level and area key are the audience's arrays at that position),
    reached at ``addresses[i]``; ``languages`` and ``addresses`` are the
    subscriber's current ones (as the index has them).

    Addresses the index packs (``packed``) are made text only when
    :attr:`addresses` is first read: a plan that deduplicates in numpy
    (:class:`FirstEndpoints`) writes the packed bytes as they are.
    """

    channel: ChannelName
    at: I64
    ids: npt.NDArray[np.object_] | None
    """The subscribers' ids; ``None`` when the columns were made without them
    (``ids=False``: a plan with no acknowledging group has no use for them)."""
    text: list[str] | None
    """The addresses as text; ``None`` until :attr:`addresses` decodes ``packed``."""
    language_codes: npt.NDArray[np.uint16]
    """Each entry's language as an index into ``tags``."""
    tags: npt.NDArray[np.object_]
    packed: npt.NDArray[Any] | None = None
    """The addresses as the index packs them (16 bytes each, UTF-8), when it does."""

    def __post_init__(self) -> None:
        if self.text is None and self.packed is None:
            raise ValueError("endpoint columns need their addresses as text or packed")

    def __len__(self) -> int:
        return len(self.at)

    @property
    def addresses(self) -> list[str]:
        if self.text is None:
            self.text = decode_packed(cast(npt.NDArray[Any], self.packed))
        return self.text

    @property
    def subscriber_ids(self) -> list[str]:
        return self.subscriber_ids_at(slice(None))

    def subscriber_ids_at(self, idx: npt.NDArray[np.int64] | slice) -> list[str]:
        """The subscriber ids of entries ``idx``."""
        if self.ids is None:
            raise ValueError("these endpoint columns were made without subscriber ids")
        return cast(list[str], self.ids[idx].tolist())

    @property
    def languages(self) -> list[str]:
        return cast(list[str], self.tags[self.language_codes].tolist())

    def language(self, i: int) -> str:
        """Entry ``i``'s language (without making the whole column)."""
        return cast(str, self.tags[self.language_codes[i]])


class FirstEndpoints:
    """Which endpoints of an audience are the first of their address on their
    channel: the (channel, address) deduplication of a plan, worked out once
    for the whole audience in numpy instead of a set of every address.

    Exact: addresses are compared as their packed bytes (16 bytes, two
    64-bit keys sorted with ``lexsort``), no hash. It holds for the index as
    it is when a channel is first asked about, taken after the plan's first
    step: that step's planned addresses (``planned``) must be the snapshot's
    for those positions. A later step whose entries are not the snapshot's
    (a subscriber deleted, an address or a channel changed since) turns it
    off: :meth:`first` answers ``None`` from then on, and :meth:`planned`
    gives every address handed out, for the caller to go on with a set. A
    channel whose column is not packed (addresses longer than 16 bytes) is
    never covered (``None``).
    """

    __slots__ = ("_audience", "_chans", "_pending", "_snap", "_upto", "off")

    def __init__(self, audience: Audience) -> None:
        self._audience = audience
        self._chans: npt.NDArray[np.uint8] | None = None
        self._snap: dict[int, tuple[I64, npt.NDArray[Any], npt.NDArray[np.bool_]] | None] = {}
        self._pending: dict[int, tuple[I64, npt.NDArray[Any], npt.NDArray[np.bool_]] | None] = {}
        """Snapshots taken by :meth:`prepare`, not yet checked against a step."""
        self._upto: dict[int, int] = {}
        """Per channel: snapshot positions handed out (or planned before it)."""
        self.off = False

    def _snapshot(self, c: int) -> tuple[I64, npt.NDArray[Any], npt.NDArray[np.bool_]] | None:
        a, ix = self._audience, self._audience.index
        if self._chans is None:
            slots = a.slots
            self._chans = np.where(ix.gen[slots] == a.gens, a.channels & ix.chan[slots], 0)
        column = ix.addr[c]
        if column is None or column.dtype != _PACKED:
            return None
        at = np.flatnonzero(self._chans & CHANNELS[c].bit).astype(np.int64)
        packed = column[a.slots[at]]
        keys = np.frombuffer(packed.tobytes(), dtype=np.uint64).reshape(-1, 2)
        order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: by position within a key
        k = keys[order]
        again = (k[1:, 0] == k[:-1, 0]) & (k[1:, 1] == k[:-1, 1])
        first = np.ones(len(at), dtype=np.bool_)
        first[order[1:][again]] = False
        return at, packed, first

    def prepare(self) -> None:
        """Take the snapshot of every channel now. Mostly numpy that lets go of
        the GIL: run it in a thread (``asyncio.to_thread``) while the first
        step's batches are sent. An index changed meanwhile is caught as in
        :meth:`first`: each step is compared with the snapshot."""
        for c in range(len(CHANNELS)):
            if c not in self._pending:
                self._pending[c] = self._snapshot(c)

    def first(
        self, col: EndpointColumns, planned: Mapping[str, set[str]]
    ) -> npt.NDArray[np.bool_] | None:
        """Per entry of ``col``, whether it is the first of its address; ``None``:
        not known here (deduplicate with a set). ``planned``: the addresses
        planned so far without it (the first step's), per channel."""
        if self.off or not len(col):
            return None
        c = CHANNELS.index(col.channel)
        if c not in self._snap:
            snap = self._snap[c] = self._pending.pop(c) if c in self._pending else self._snapshot(c)
            if snap is not None:
                # What the first step planned must be the snapshot's addresses there.
                n = int(np.searchsorted(snap[0], col.at[0]))
                before = set(map(bytes.decode, snap[1][:n].tolist()))
                if before != planned.get(col.channel.value, set()):
                    self.off = True
                    return None
                self._upto[c] = n
        snap = self._snap[c]
        if snap is None:
            return None
        at, packed, first = snap
        i0 = self._upto[c]
        i1 = i0 + len(col)
        same = (
            i1 <= len(at)
            and col.packed is not None
            and np.array_equal(at[i0:i1], col.at)
            and np.array_equal(packed[i0:i1], col.packed)  # what this step plans
        )
        if not same:
            self.off = True  # the index changed under the plan
            return None
        self._upto[c] = i1
        return first[i0:i1]

    def planned(self) -> dict[str, set[str]]:
        """Channel → the addresses of the positions handed out (or verified) so far."""
        out: dict[str, set[str]] = {}
        for c, snap in self._snap.items():
            if snap is not None and self._upto.get(c):
                packed = snap[1][: self._upto[c]]
                out[CHANNELS[c].value] = set(map(bytes.decode, packed.tolist()))
        return out


@dataclass(slots=True)
class Audience:
    """Who an alert reaches: parallel arrays, one entry per subscriber."""

    identifier: str
    index: SubscriberIndex
    slots: I32
    """Index slots of the subscribers (resolve with :attr:`ids`)."""
    gens: npt.NDArray[np.uint32]
    area_keys: I64
    levels: npt.NDArray[np.int8]
    infos: npt.NDArray[np.int16]
    groups: npt.NDArray[np.int16]
    """Index into ``group_keys`` of the group deciding the channels."""
    channels: npt.NDArray[np.uint8]
    """Selected channel bits (see :attr:`ChannelName.bit`); 0: no usable endpoint."""
    languages: npt.NDArray[np.uint16]
    group_keys: list[str]
    group_names: list[str]
    group_ack: list[bool]
    language_tags: list[str]
    affected: list[AffectedArea]
    blind_spots: list[AffectedArea]
    unknown_geocodes: list[ValuePair] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.slots)

    def ids_of(self, start: int = 0, stop: int | None = None) -> list[str | None]:
        """Subscriber ids of entries ``start:stop``; ``None`` for one deleted since."""
        slots = self.slots[start:stop]
        ids = self.index.ids[slots]
        stale = self.index.gen[slots] != self.gens[start:stop]
        if stale.any():
            ids[stale] = None
        return cast(list[str | None], ids.tolist())

    @property
    def ids(self) -> npt.NDArray[Any]:
        """Every subscriber id (materialised: prefer :meth:`deliveries` for big audiences)."""
        return np.array(self.ids_of(), dtype=object)

    @property
    def deliveries_count(self) -> int:
        return int(_POPCOUNT[self.channels].sum())

    @property
    def no_endpoint(self) -> int:
        return int((self.channels == 0).sum())

    def by_channel(self) -> dict[str, int]:
        return {c.value: int(((self.channels & c.bit) != 0).sum()) for c in CHANNELS}

    def by_group(self) -> list[dict[str, Any]]:
        subs = np.bincount(self.groups, minlength=len(self.group_keys))
        dels = np.bincount(
            self.groups, weights=_POPCOUNT[self.channels], minlength=len(self.group_keys)
        )
        return [
            {
                "key": key,
                "name": self.group_names[i],
                "subscribers": int(subs[i]),
                "deliveries": int(dels[i]),
                "ack_required": self.group_ack[i],
            }
            for i, key in enumerate(self.group_keys)
            if subs[i]
        ]

    def by_level(self) -> dict[str, int]:
        n = np.bincount(self.levels, minlength=len(_LEVELS))
        return {(lv.value if lv else "none"): int(n[i]) for i, lv in enumerate(_LEVELS) if n[i]}

    def by_language(self) -> dict[str, int]:
        n = np.bincount(self.languages, minlength=len(self.language_tags))
        return {
            (self.language_tags[i] if i < len(self.language_tags) else "other"): int(n[i])
            for i in np.flatnonzero(n)
        }

    def by_area(self) -> list[dict[str, Any]]:
        order = np.argsort(self.area_keys, kind="stable")
        keys = self.area_keys[order]
        weights = np.concatenate([[0], np.cumsum(_POPCOUNT[self.channels[order]])])
        out: list[dict[str, Any]] = []
        for a in self.affected:
            lo, hi = key_range(a.code)
            i, j = np.searchsorted(keys, (lo, hi))
            out.append(
                {
                    "code": a.code,
                    "name": a.name,
                    "level": a.level.value if a.level else None,
                    "how": a.how,
                    "subscribers": int(j - i),
                    "deliveries": int(weights[j] - weights[i]),
                }
            )
        return out

    def summary(self) -> dict[str, Any]:
        """Counts per area, group, channel, level and language, and the blind spots."""

        def area(a: AffectedArea) -> dict[str, Any]:
            return {"code": a.code, "name": a.name, "level": a.level.value if a.level else None}

        return {
            "identifier": self.identifier,
            "subscribers": len(self),
            "deliveries": self.deliveries_count,
            "no_endpoint": self.no_endpoint,
            "areas": self.by_area(),
            "groups": self.by_group(),
            "channels": self.by_channel(),
            "levels": self.by_level(),
            "languages": self.by_language(),
            "blind_spots": [area(a) for a in self.blind_spots],
            "unknown_geocodes": [g.model_dump() for g in self.unknown_geocodes],
            "unregistered_codes": self.unregistered,
        }

    def endpoint_columns(
        self, *, batch: int = 1000, start: int = 0, stop: int | None = None, ids: bool = True
    ) -> Iterator[list[EndpointColumns]]:
        """The deliveries of entries ``start:stop``, ``batch`` subscribers per step,
        as one :class:`EndpointColumns` per channel that has any (with the
        subscribers' ids unless ``ids`` is false).

        The same deliveries as :meth:`deliveries` (a subscriber deleted since
        the match is skipped; one whose record changed is sent to its current
        address on the selected channels), taken from the index's columns
        (keep it current with :meth:`Matcher.refresh`): no record is read or
        decoded and no object is made per recipient — the dispatch hot path.
        """
        ix = self.index
        # Language numbers → tags; the last one stands for _UNKNOWN_LANGUAGE
        # (only met when the index has numbered all the tags it can).
        tags = np.array([*ix.languages, "und"], dtype=object)
        end = len(self) if stop is None else min(stop, len(self))
        for lo in range(start, end, batch):
            hi = min(end, lo + batch)
            slots = self.slots[lo:hi]
            chans = self.channels[lo:hi]
            # Deleted since the match (a reused slot has a newer generation).
            chans = np.where(ix.gen[slots] == self.gens[lo:hi], chans & ix.chan[slots], 0)
            out: list[EndpointColumns] = []
            for i, ch in enumerate(CHANNELS):
                sel = np.flatnonzero(chans & ch.bit)
                if not len(sel):
                    continue
                s = slots[sel]
                text, packed = ix.address_column(i, s)
                out.append(
                    EndpointColumns(
                        ch,
                        sel + lo,
                        ix.ids[s] if ids else None,
                        text,
                        ix.lang[s],
                        tags,
                        packed,
                    )
                )
            yield out

    async def deliveries(
        self, store: SubscriberStore, *, batch: int = 1000
    ) -> AsyncIterator[list[Delivery]]:
        """Every delivery, in batches, with addresses read from Redis.

        A subscriber deleted since the match is skipped; one whose record
        changed is sent to its current address on the selected channels.
        """
        for start in range(0, len(self), batch):
            stop = start + batch
            ids = self.ids_of(start, stop)
            records = await store.get_many([i for i in ids if i is not None])
            out: list[Delivery] = []
            for k, sub_id in enumerate(ids):
                rec = records.get(sub_id) if sub_id is not None else None
                chosen = int(self.channels[start + k])
                if rec is None or sub_id is None or not chosen:
                    continue
                g = int(self.groups[start + k])
                for ch in CHANNELS:
                    address = rec.address(ch)
                    if chosen & ch.bit and address is not None:
                        out.append(
                            Delivery(
                                subscriber_id=sub_id,
                                channel=ch,
                                address=address,
                                language=rec.language,
                                group=self.group_keys[g],
                                level=_LEVELS[int(self.levels[start + k])],
                                info=int(self.infos[start + k]),
                                ack_required=self.group_ack[g],
                            )
                        )
            yield out


# ----------------------------------------------------------------- matcher


@dataclass(slots=True)
class _Part:
    cand: Cand
    rank: int
    info: int
    eligible: int


class Matcher:
    """Keeps a :class:`SubscriberIndex` current and matches alerts against it."""

    def __init__(self, store: SubscriberStore, registry: AreaRegistry, groups: GroupTable) -> None:
        self.store = store
        self.registry = registry
        self.groups = groups
        self.index = SubscriberIndex(groups)
        self._last = "0-0"
        self._own: set[str] = set()
        self._lock = asyncio.Lock()
        self._loaded = False
        store.listen(self._on_write)

    # ---------------------------------------------------------- upkeep

    async def load(self) -> None:
        """(Re)build the index from every record in Redis."""
        async with self._lock:
            await self._load()

    async def _load(self) -> None:
        started = time.perf_counter()
        last = await self.store.last_change()
        # A new index, not the old one cleared: audiences being dispatched keep
        # reading the one their slots refer to.
        self.index = SubscriberIndex(self.groups)
        self._own.clear()
        async for ids, rows in self.store.scan_rows():
            self.index.apply_rows(ids, rows)
        self.index.settle()  # sorted now, not at the first match
        self._last = last
        self._loaded = True
        log.info(
            "subscribers.index_loaded",
            subscribers=len(self.index),
            seconds=round(time.perf_counter() - started, 3),
        )
        # Writes that raced with the scan are in the stream after ``last``.
        await self._replay()

    def _on_write(
        self, ids: Sequence[str], rows: Sequence[Row], deleted: Sequence[str], change: str
    ) -> None:
        if not self._loaded:
            return
        self.index.apply_rows(ids, rows, deleted)
        self._own.add(change)

    async def refresh(self) -> None:
        """Apply writes other processes made since the last look."""
        async with self._lock:
            if not self._loaded:
                await self._load()
            else:
                await self._replay()

    async def _replay(self) -> None:
        while True:
            entries, gap = await self.store.changes_since(self._last)
            if gap:
                log.warning("subscribers.change_gap", after=self._last)
                await self._load()
                return
            if not entries:
                return
            ids: list[str] = []
            for change, members in entries:
                if change in self._own:
                    self._own.discard(change)
                else:
                    ids.extend(members)
            if ids:
                current = await self.store.get_many(ids)
                self.index.apply(
                    list(current.values()), [i for i in dict.fromkeys(ids) if i not in current]
                )
            self._last = entries[-1][0]

    async def counts(self, code: str) -> Mapping[str, int]:
        """Subscriber counts under an area (the registry's ``SubscriberCounter`` hook)."""
        await self.refresh()
        ix = self.index
        out: dict[str, int] = {
            "total": int(ix.count_under([code])[0]),
            "direct": ix.count_direct(code),
        }
        slots = ix.slots_under([code])
        grp = ix.grp[slots]
        for g in self.groups:
            out[f"group:{g.key}"] = int(((grp & np.uint64(g.bit)) != 0).sum())
        chan = ix.chan[slots]
        for c in CHANNELS:
            out[f"channel:{c.value}"] = int(((chan & c.bit) != 0).sum())
        return out

    # ---------------------------------------------------------- matching

    async def match(self, alert: Alert) -> Audience:
        """The audience of ``alert`` (its infos classified: hazard and level set)."""
        await self.refresh()
        return self.match_now(alert)

    def match_now(self, alert: Alert) -> Audience:
        """:meth:`match` on the index as it is, without looking for other writers."""
        started = time.perf_counter()
        parts: list[_Part] = []
        affected: dict[str, tuple[int, str]] = {}
        geocoded: list[str] = []
        unknown: list[ValuePair] = []
        unregistered: list[str] = []
        for i, info in enumerate(alert.infos):
            rank = info.level.rank if info.level is not None else 0
            eligible = 0
            for g in self.groups:
                if g.selects(info.hazard, info.level):
                    eligible |= g.bit
            for area in info.areas:
                ra = self.registry.resolve(area)
                unknown.extend(ra.unknown_geocodes)
                unregistered.extend(ra.unregistered)
                for code in ra.codes:
                    how = (
                        "geocode" if any(code.startswith(c) for c in ra.by_geocode) else "geometry"
                    )
                    prev = affected.get(code)
                    affected[code] = (max(rank, prev[0]) if prev else rank, how)
                    if how == "geocode":
                        geocoded.append(code)
                if eligible:
                    parts.append(_Part(self._select(ra), rank, i, eligible))
        audience = self._assemble(alert, parts)
        areas = [
            AffectedArea(code, self._name(code), _LEVELS[rank], how)
            for code, (rank, how) in sorted(affected.items())
        ]
        audience.affected = _dedupe_areas(areas)
        audience.blind_spots = self._blind_spots(audience.affected, set(_minimal(geocoded)))
        audience.unknown_geocodes = unknown
        audience.unregistered = list(dict.fromkeys(unregistered))
        audience.seconds = time.perf_counter() - started
        return audience

    def _name(self, code: str) -> str | None:
        area = self.registry.get(code)
        return area.name if area is not None else None

    def _select(self, ra: ResolvedArea) -> Cand:
        ix = self.index
        whole = _minimal(ra.by_geocode)
        rest = [c for c in ra.codes if not any(c.startswith(w) for w in whole)]
        picked = [ix.under(whole)] if whole else []
        if rest:
            shape = ra.geometry
            cand = ix.under(rest, points=shape is not None)
            if whole:  # a geocoded area inside an intersected one: picked already
                cand = cand.take(~_in_ranges(cand.key, whole))
            if shape is not None and cand.lon is not None and cand.lat is not None and len(cand):
                lon, lat = cand.lon, cand.lat
                x0, y0, x1, y1 = shape.bounds
                # NaN (no point) fails every comparison: outside the box.
                box = (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)
                keep = np.isnan(lon)
                test = np.flatnonzero(box)
                if len(test):
                    keep[test] = points_in(shape, lon[test], lat[test])
                cand = cand.take(keep, points=False)
            picked.append(cand)
        return Cand.concat(picked)

    def _area_allowed(self, keys: I64) -> npt.NDArray[np.uint64]:
        """Per subscriber, the bits of groups whose area prefixes admit it."""
        allowed = np.zeros(len(keys), dtype=np.uint64)
        free = 0
        for g in self.groups:
            if not g.settings.areas:
                free |= g.bit
            else:
                allowed[_in_ranges(keys, _minimal(g.settings.areas))] |= np.uint64(g.bit)
        return allowed | np.uint64(free)

    def _assemble(self, alert: Alert, parts: list[_Part]) -> Audience:
        ix = self.index
        taken = ix._scratch
        chosen: list[Cand] = []
        chosen_eff: list[npt.NDArray[np.uint64]] = []
        chosen_rank: list[npt.NDArray[np.int8]] = []
        chosen_info: list[npt.NDArray[np.int16]] = []
        # Highest level first, then info order: the first part that selects
        # a subscriber is the one it is reached by.
        for part in sorted(parts, key=lambda p: (-p.rank, p.info)):
            cand = part.cand
            if chosen and len(cand):
                cand = cand.take(~taken[cand.slots], points=False)
            if not len(cand):
                continue
            eff = cand.grp & np.uint64(part.eligible) & self._area_allowed(cand.key)
            ok = np.flatnonzero(eff)
            if len(ok) != len(eff):
                cand = cand.take(ok, points=False)
                eff = eff[ok]
            if len(parts) > 1:
                taken[cand.slots] = True
            chosen.append(cand)
            chosen_eff.append(eff)
            chosen_rank.append(np.full(len(cand), part.rank, np.int8))
            chosen_info.append(np.full(len(cand), part.info, np.int16))
        picked = Cand.concat(chosen)
        if len(parts) > 1:
            taken[picked.slots] = False
        eff = np.concatenate(chosen_eff) if chosen_eff else np.empty(0, np.uint64)
        group, chans = self._channels(eff, picked.chan)
        groups = list(self.groups)
        return Audience(
            identifier=alert.identifier,
            index=ix,
            slots=picked.slots,
            gens=ix.gen[picked.slots],
            area_keys=picked.key,
            levels=np.concatenate(chosen_rank) if chosen_rank else np.empty(0, np.int8),
            infos=np.concatenate(chosen_info) if chosen_info else np.empty(0, np.int16),
            groups=group,
            channels=chans,
            languages=ix.lang[picked.slots],
            group_keys=[g.key for g in groups],
            group_names=[g.name for g in groups],
            group_ack=[g.settings.ack_required for g in groups],
            language_tags=list(ix.languages),
            affected=[],
            blind_spots=[],
        )

    def _channels(
        self, eff: npt.NDArray[np.uint64], have: npt.NDArray[np.uint8]
    ) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8]]:
        """The deciding group and the selected channel bits of each subscriber."""
        if len(self.groups) <= 12:
            # Few distinct (groups, endpoints) combinations: decide each once.
            code = (eff.astype(np.int64) << 4) | have.astype(np.int64)
            present = np.flatnonzero(np.bincount(code, minlength=1))
            size = int(present[-1]) + 1 if len(present) else 1
            tbl_g = np.full(size, -1, dtype=np.int16)
            tbl_c = np.zeros(size, dtype=np.uint8)
            for c in present.tolist():
                tbl_g[c], tbl_c[c] = self._decide(c >> 4, c & 15)
            return tbl_g[code], tbl_c[code]
        group = np.full(len(eff), -1, dtype=np.int16)
        chosen = np.zeros(len(eff), dtype=np.uint8)
        for g in self.groups:
            todo = np.flatnonzero((group < 0) & ((eff & np.uint64(g.bit)) != 0))
            if not len(todo):
                continue
            sel = _pick_channels(g.settings.channels, g.settings.channel_mode, have[todo])
            ok = sel != 0
            group[todo[ok]] = g.index
            chosen[todo[ok]] = sel[ok]
        for g in self.groups:  # no endpoint anywhere: charge the first group
            todo = np.flatnonzero((group < 0) & ((eff & np.uint64(g.bit)) != 0))
            group[todo] = g.index
        return group, chosen

    def _decide(self, eff: int, have: int) -> tuple[int, int]:
        """(deciding group index, channel bits) for one combination; see the module doc."""
        for g in self.groups:
            if eff & g.bit:
                sel = _pick_one(g.settings.channels, g.settings.channel_mode, have)
                if sel:
                    return g.index, sel
        first = next((g.index for g in self.groups if eff & g.bit), -1)
        return first, 0

    def _blind_spots(self, affected: list[AffectedArea], geocoded: set[str]) -> list[AffectedArea]:
        ix = self.index
        out: list[AffectedArea] = []
        codes = [a.code for a in affected]
        counts = ix.count_under(codes)
        for a, n in zip(affected, counts.tolist(), strict=True):
            if n == 0:
                out.append(a)
            elif a.code in geocoded or any(a.code.startswith(c) for c in geocoded):
                self._empty_below(a, out)
        return out

    def _empty_below(self, parent: AffectedArea, out: list[AffectedArea]) -> None:
        children = self.registry.children(parent.code)
        if not children:
            return
        counts = self.index.count_under([c.code for c in children])
        for child, n in zip(children, counts.tolist(), strict=True):
            area = AffectedArea(child.code, child.name, parent.level, parent.how)
            if n == 0:
                out.append(area)
            elif child.level is not AreaLevel.VILLAGE:  # villages have nothing below
                self._empty_below(area, out)


def _pick_one(channels: Sequence[ChannelName], mode: str, have: int) -> int:
    if mode == "all":
        return have & sum(c.bit for c in channels)
    return next((c.bit for c in channels if have & c.bit), 0)


def _pick_channels(
    channels: Sequence[ChannelName], mode: str, have: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    if mode == "all":
        wanted = 0
        for c in channels:
            wanted |= c.bit
        return have & np.uint8(wanted)
    out = np.zeros(len(have), dtype=np.uint8)
    for c in channels:
        hit = (out == 0) & ((have & c.bit) != 0)
        out[hit] = c.bit
    return out


def _dedupe_areas(areas: list[AffectedArea]) -> list[AffectedArea]:
    """Drop areas covered by another affected area (keeping the higher level on the cover)."""
    out: list[AffectedArea] = []
    for a in areas:  # sorted by code: a cover comes right before what it covers
        if out and a.code.startswith(out[-1].code):
            top = out[-1]
            if (a.level.rank if a.level else 0) > (top.level.rank if top.level else 0):
                out[-1] = AffectedArea(top.code, top.name, a.level, top.how)
            continue
        out.append(a)
    return out
