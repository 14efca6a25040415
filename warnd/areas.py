"""The area registry: administrative areas, their boundaries, and CAP area resolution.

Everything is read from Redis once (:meth:`AreaRegistry.load`) into memory
and indexed; lookups never touch Redis. Imports (:mod:`warnd.area_import`,
``warnd areas import FILE``) write Redis and bump a version key;
:meth:`AreaRegistry.reload` rebuilds the indexes when that version moved
and swaps them in at once, so holders of the registry object see the new
data without re-fetching it. The API process calls ``reload`` every
``[areas] reload_seconds``.

Public API (stable; the matcher builds on it)::

    AreaLevel, normalise_code, ADMIN_GEOCODE_NAMES, is_admin_geocode  (from warnd.adcodes)
    AdminArea(code, name, level, parent, has_boundary)
    registry = await AreaRegistry.load(redis, keys)
    registry.get(code) -> AdminArea | None     # any padding: "371700" → 菏泽市 (3717)
    code in registry; len(registry)
    registry.children(code) / ancestors(code) / with_prefix(prefix)
    registry.geometry(code) -> shapely geometry | None   # own or nearest ancestor's boundary
    registry.locate(lon, lat) -> AdminArea | None        # most specific boundary containing it
    registry.resolve(cap_area) -> ResolvedArea
    await registry.reload() -> bool
    registry.set_subscriber_counter(fn); await registry.subscriber_counts(code)

Codes
    Canonical codes (see :mod:`warnd.adcodes`) nest by prefix. An area's
    ``parent`` is its nearest *registered* ancestor (a county directly under
    a municipality whose ``xx01`` 市辖区 is not registered has the province
    as parent).

Resolution rules (:meth:`AreaRegistry.resolve`)
    *Geocodes* whose valueName is an administrative scheme (``GB/T 2260``,
    ``adcode``, ``CPEAS Geographic Code``, ``行政区划代码`` …) name areas by
    prefix: ``371721`` is 曹县 and everything below it. Such codes need not
    be registered (they are listed in ``unregistered`` too). Any other
    scheme, or a value that is not a well-formed code, is recorded in
    ``unknown_geocodes`` and otherwise ignored.

    *Polygons and circles* (WGS-84) are intersected with the boundaries. The
    areas reported are the **most specific areas whose boundary intersects**
    the shape; an area that has registered children is refined into them:
    children with a boundary are kept only if they intersect, children
    without one (villages, development zones such as 371771/371772) cannot
    be tested and are reported whole, flagged in ``inherited``, because
    their geometry is their nearest ancestor's. An area with no bounded
    descendant is reported itself (its code covers every township and
    village below it). Subscribers with a point in a geometry-derived area
    are then tested exactly against ``ResolvedArea.geometry``.

    ``codes`` is the union of both, reduced to the smallest set of
    prefixes (a code covered by another is dropped).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import shapely
import structlog
from redis.asyncio import Redis
from shapely.geometry.base import BaseGeometry

from warnd.adcodes import (
    ADMIN_GEOCODE_NAMES,
    AreaLevel,
    ancestor_codes,
    covers,
    is_admin_geocode,
    normalise_code,
)
from warnd.geo import cap_area_geometry
from warnd.keys import Keys
from warnd.model import Area, ValuePair

__all__ = [
    "ADMIN_GEOCODE_NAMES",
    "AdminArea",
    "AreaLevel",
    "AreaRegistry",
    "ResolvedArea",
    "SubscriberCounter",
    "is_admin_geocode",
    "normalise_code",
]

log = structlog.get_logger("warnd.areas")

BOUNDARY_TOLERANCE_DEG = 0.002
"""How far (≈ 180–220 m in China) a polygon or circle must reach into a boundary
to affect its area: the public boundaries are simplified to about that accuracy."""

SubscriberCounter = Callable[[str], Awaitable[Mapping[str, int]]]
"""``async (canonical code) -> counts``: the subscriber registry's hook for
``GET /v1/areas/{code}``. Return at least ``{"total": n}`` (subscribers in the
area and below it); other keys (``direct``, per group, per channel) are
passed through to the API as they are."""


@dataclass(frozen=True, slots=True)
class AdminArea:
    code: str
    """Canonical code (2/4/6/9/12 digits)."""
    name: str
    level: AreaLevel
    parent: str | None
    """Canonical code of the nearest registered ancestor, ``None`` at the top."""
    has_boundary: bool


@dataclass(frozen=True, slots=True)
class ResolvedArea:
    """What one CAP ``<area>`` affects, in administrative terms.

    A subscriber in area ``a`` (canonical code) with optional point ``p`` is
    affected when :meth:`includes` says so: ``a`` is under a code named by a
    geocode (``by_geocode``: the whole area, whatever the point), or ``a`` is
    under one of ``codes`` and either has no point or its point lies in
    ``geometry``.
    """

    codes: tuple[str, ...]
    """Canonical codes of the affected areas (minimal prefixes, sorted)."""
    geometry: BaseGeometry | None
    """The CAP area's polygons and circles as one WGS-84 (x=lon, y=lat) geometry,
    prepared for fast point tests; ``None`` for geocode-only areas."""
    unknown_geocodes: tuple[ValuePair, ...] = ()
    """Geocodes of schemes (or with values) warnd does not understand."""
    by_geocode: tuple[str, ...] = ()
    """Codes named by administrative geocodes: whole areas, no point test."""
    inherited: tuple[str, ...] = ()
    """Geometry-derived codes that have no boundary of their own (included untested)."""
    unregistered: tuple[str, ...] = ()
    """Well-formed geocode values that name no registered area (kept in ``codes``)."""

    def covers(self, code: str) -> bool:
        """Whether canonical ``code`` lies in (or is) one of the affected areas."""
        return any(covers(c, code) for c in self.codes)

    def includes(self, code: str, lon: float | None = None, lat: float | None = None) -> bool:
        """The reference rule for one subscriber (area code, optional WGS-84 point)."""
        if any(covers(c, code) for c in self.by_geocode):
            return True
        if not self.covers(code):
            return False
        if lon is None or lat is None or self.geometry is None:
            return True
        return bool(shapely.intersects_xy(self.geometry, lon, lat))


# ------------------------------------------------------------------ index


@dataclass(slots=True)
class _Index:
    """One immutable snapshot of the registry; swapped whole on reload."""

    version: int = 0
    areas: dict[str, AdminArea] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    sorted_codes: list[str] = field(default_factory=list)
    boundaries: dict[str, BaseGeometry] = field(default_factory=dict)
    tree_codes: list[str] = field(default_factory=list)
    tree_geoms: Any = None  # numpy array of prepared geometries, aligned with tree_codes
    tree_cores: Any = None  # the same eroded by BOUNDARY_TOLERANCE_DEG, prepared
    tree_pos: dict[str, int] = field(default_factory=dict)
    tree: shapely.STRtree | None = None
    bounded_below: frozenset[str] = frozenset()
    """Codes that have at least one descendant with a boundary."""


def _build(version: int, records: Mapping[str, str], wkbs: Mapping[str, str]) -> _Index:
    """Build the in-memory indexes (CPU only; run in a thread at reload)."""
    codes = sorted(records)
    known = set(codes)
    areas: dict[str, AdminArea] = {}
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for code in codes:
        try:
            name = json.loads(records[code])["name"]
        except (ValueError, KeyError, TypeError):
            log.warning("areas.bad_record", code=code)
            name = code
        parent = next((a for a in ancestor_codes(code) if a in known), None)
        areas[code] = AdminArea(
            code=code,
            name=name,
            level=AreaLevel.of(code),
            parent=parent,
            has_boundary=code in wkbs,
        )
        if parent is None:
            roots.append(code)
        else:
            children.setdefault(parent, []).append(code)

    tree_codes = sorted(c for c in wkbs if c in known)
    hexes = [wkbs[c].partition("|")[2] for c in tree_codes]
    geoms = shapely.from_wkb(np.array(hexes, dtype=object)) if hexes else np.array([], dtype=object)
    shapely.prepare(geoms)
    cores = shapely.buffer(geoms, -BOUNDARY_TOLERANCE_DEG, quad_segs=2) if hexes else geoms
    if hexes:
        cores = np.where(shapely.is_empty(cores), geoms, cores)
        shapely.prepare(cores)
    bounded_below: set[str] = set()
    for code in tree_codes:
        for anc in ancestor_codes(code):
            if anc in bounded_below:
                break
            bounded_below.add(anc)
    return _Index(
        version=version,
        areas=areas,
        children=children,
        roots=roots,
        sorted_codes=codes,
        boundaries=dict(zip(tree_codes, geoms, strict=True)),
        tree_codes=tree_codes,
        tree_geoms=geoms,
        tree_cores=cores,
        tree_pos={c: i for i, c in enumerate(tree_codes)},
        tree=shapely.STRtree(geoms) if len(tree_codes) else None,
        bounded_below=frozenset(bounded_below),
    )


async def _hscan_all(redis: Redis, key: str, count: int) -> dict[str, str]:
    """A whole hash in HSCAN pages (never one long-blocking HGETALL)."""
    out: dict[str, str] = {}
    cursor: int = 0
    while True:
        cursor, page = await redis.hscan(key, cursor, count=count)
        out.update(cast(dict[str, str], page))
        if cursor == 0:
            return out


# --------------------------------------------------------------- registry


class AreaRegistry:
    """Administrative areas and boundaries, indexed in memory (see module doc)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._ix = _Index()
        self._counter: SubscriberCounter | None = None
        self._reload_lock = asyncio.Lock()

    @classmethod
    async def load(cls, redis: Redis, keys: Keys) -> AreaRegistry:
        """Read every area and boundary from Redis and index them."""
        registry = cls(redis, keys)
        await registry.reload(force=True)
        return registry

    async def stored_version(self) -> int:
        raw = await self._redis.get(self._keys.areas_version)
        return int(cast(str, raw)) if raw else 0

    async def reload(self, *, force: bool = False) -> bool:
        """Rebuild from Redis if an import happened since the last load.

        Returns whether the indexes were rebuilt. The version is read before
        the data, so an import racing with the reload triggers another one.
        """
        async with self._reload_lock:
            version = await self.stored_version()
            if not force and version == self._ix.version:
                return False
            started = time.perf_counter()
            records = await _hscan_all(self._redis, self._keys.areas, 10_000)
            wkbs = await _hscan_all(self._redis, self._keys.area_boundaries, 50)
            ix = await asyncio.to_thread(_build, version, records, wkbs)
            self._ix = ix
            log.info(
                "areas.loaded",
                version=version,
                areas=len(ix.areas),
                boundaries=len(ix.tree_codes),
                seconds=round(time.perf_counter() - started, 3),
            )
            return True

    @property
    def version(self) -> int:
        """The import version the current indexes were built from."""
        return self._ix.version

    # ---------------------------------------------------------- lookups

    @staticmethod
    def _canonical(code: object) -> str | None:
        if not isinstance(code, str):
            return None
        try:
            return normalise_code(code)
        except ValueError:
            return None

    def get(self, code: str) -> AdminArea | None:
        """The area for a code in any padding; ``None`` if unknown or malformed."""
        canon = self._canonical(code)
        return self._ix.areas.get(canon) if canon else None

    def __contains__(self, code: object) -> bool:
        canon = self._canonical(code)
        return canon is not None and canon in self._ix.areas

    def __len__(self) -> int:
        return len(self._ix.areas)

    def __iter__(self) -> Any:
        return iter(self._ix.areas.values())

    def roots(self) -> list[AdminArea]:
        """Areas with no registered ancestor (normally the provinces)."""
        return [self._ix.areas[c] for c in self._ix.roots]

    def children(self, code: str) -> list[AdminArea]:
        """Registered areas whose nearest registered ancestor is ``code``, by code."""
        canon = self._canonical(code)
        if canon is None:
            return []
        ix = self._ix
        return [ix.areas[c] for c in ix.children.get(canon, ())]

    def ancestors(self, code: str) -> list[AdminArea]:
        """Registered ancestors, nearest first (``code`` itself need not be registered)."""
        canon = self._canonical(code)
        if canon is None:
            return []
        areas = self._ix.areas
        return [areas[a] for a in ancestor_codes(canon) if a in areas]

    def with_prefix(self, prefix: str, *, after: str | None = None) -> list[AdminArea]:
        """Registered areas whose canonical code starts with the digits ``prefix``.

        ``prefix`` is taken as raw digits ("3717" and "37172" both work; a
        padded code like "371700" is normalised first). Sorted by code;
        ``after`` skips codes up to and including it (for paging).
        """
        digits = prefix.strip()
        if len(digits) in (6, 9, 12):
            with contextlib.suppress(ValueError):
                digits = normalise_code(digits)
        codes = self._ix.sorted_codes
        lo = bisect.bisect_left(codes, digits)
        if after is not None:
            lo = max(lo, bisect.bisect_right(codes, after))
        hi = bisect.bisect_left(codes, digits + "\x7f", lo)
        areas = self._ix.areas
        return [areas[c] for c in codes[lo:hi]]

    def count_prefix(self, prefix: str) -> int:
        """How many registered areas :meth:`with_prefix` would return."""
        codes = self._ix.sorted_codes
        return bisect.bisect_left(codes, prefix + "\x7f") - bisect.bisect_left(codes, prefix)

    # --------------------------------------------------------- geometry

    def boundary(self, code: str) -> BaseGeometry | None:
        """The area's own boundary (WGS-84), ``None`` if it has none."""
        canon = self._canonical(code)
        return self._ix.boundaries.get(canon) if canon else None

    def geometry(self, code: str) -> BaseGeometry | None:
        """The area's boundary, or its nearest ancestor's (WGS-84, x=lon, y=lat).

        Works for unregistered codes too (a village not in the registry gets
        its county's boundary); ``None`` when no ancestor has a boundary.
        """
        canon = self._canonical(code)
        if canon is None:
            return None
        b = self._ix.boundaries
        for c in (canon, *ancestor_codes(canon)):
            if c in b:
                return b[c]
        return None

    def locate(self, lon: float, lat: float) -> AdminArea | None:
        """The most specific registered area whose boundary contains the WGS-84 point."""
        ix = self._ix
        if ix.tree is None:
            return None
        hits = ix.tree.query(shapely.Point(lon, lat), predicate="intersects")
        if len(hits) == 0:
            return None
        best = max((ix.tree_codes[int(i)] for i in hits), key=len)
        return ix.areas[best]

    # ------------------------------------------------------- resolution

    def resolve(self, area: Area) -> ResolvedArea:
        """The administrative areas one CAP area affects (rules in the module doc)."""
        by_geocode: list[str] = []
        unknown: list[ValuePair] = []
        unregistered: list[str] = []
        for g in area.geocodes:
            if not is_admin_geocode(g.value_name):
                unknown.append(g)
                continue
            try:
                code = normalise_code(g.value)
            except ValueError:
                unknown.append(g)
                continue
            by_geocode.append(code)
            if code not in self._ix.areas:
                unregistered.append(code)
        geom = cap_area_geometry(area)
        exact: list[str] = []
        inherited: list[str] = []
        if geom is not None:
            shapely.prepare(geom)
            exact, inherited = self._intersecting(geom)
        geocoded = _minimal(by_geocode)
        return ResolvedArea(
            codes=tuple(_minimal([*geocoded, *exact, *inherited])),
            geometry=geom,
            unknown_geocodes=tuple(unknown),
            by_geocode=tuple(geocoded),
            inherited=tuple(c for c in _minimal(inherited) if not _covered(c, geocoded)),
            unregistered=tuple(dict.fromkeys(unregistered)),
        )

    def intersecting(self, geom: BaseGeometry) -> tuple[list[str], list[str]]:
        """(exact, inherited) codes for a WGS-84 geometry; see :meth:`resolve`."""
        return self._intersecting(geom)

    def _intersecting(self, geom: BaseGeometry) -> tuple[list[str], list[str]]:
        ix = self._ix
        if ix.tree is None or geom.is_empty:
            return [], []
        cand = ix.tree.query(geom)
        if len(cand) == 0:
            return [], []
        # The boundaries are prepared: test each candidate boundary against
        # the shape (prepared-geometry intersects is indexed on its edges).
        cand = cand[shapely.intersects(ix.tree_geoms[cand], geom)]
        hits = {ix.tree_codes[int(i)] for i in cand}
        if len(cand) and shapely.get_dimensions(geom) == 2:
            # Only areas the shape enters by more than the boundary tolerance:
            # a warning drawn as a county's outline touches its neighbours, and
            # boundaries from datasets of different detail overlap in slivers.
            inner = cand[~shapely.touches(ix.tree_geoms[cand], geom)]
            plain = {ix.tree_codes[int(i)] for i in inner} or hits
            deep = {
                ix.tree_codes[int(i)] for i in cand[shapely.intersects(ix.tree_cores[cand], geom)]
            }
            hits = deep or plain
            # A small shape on an inner border misses the children's cores:
            # under such a hit, the children it enters at all are the answer.
            for h in sorted(hits, key=len):
                if h in ix.bounded_below and not any(d != h and d.startswith(h) for d in hits):
                    hits |= {p for p in plain if p != h and p.startswith(h)}
            hits = self._finer_wins(hits, geom)
        exact: list[str] = []
        inherited: list[str] = []
        for code in sorted(hits):
            if code not in ix.bounded_below:
                exact.append(code)
                continue
            found_before = len(exact) + len(inherited)
            self._untestable_below(code, hits, inherited)
            below_hit = any(h != code and h.startswith(code) for h in hits)
            if not below_hit and len(exact) + len(inherited) == found_before:
                # The shape touches this area but none of its bounded
                # children (simplified boundaries leave slivers): keep it.
                exact.append(code)
        return exact, inherited

    def _finer_wins(self, hits: set[str], geom: BaseGeometry) -> set[str]:
        """Drop coarse hits that only overlap the shape where finer boundaries claim it.

        Boundaries come from datasets of different detail: the national
        province outlines overlap 曹县's county outline by slivers up to
        ~500 m deep along the Henan border. Where a finer boundary (longer
        code, another branch) covers part of the shape, that part belongs to
        it; a coarser area with nothing finer below it is affected only if
        the rest of the shape still enters it beyond the tolerance.
        """
        ix = self._ix
        leaves = [h for h in hits if h not in ix.bounded_below]
        if len({len(h) for h in leaves}) < 2:
            return hits
        out = set(hits)
        for coarse in leaves:
            finer = [f for f in leaves if len(f) > len(coarse) and not f.startswith(coarse)]
            if not finer:
                continue
            claimed = shapely.union_all([ix.boundaries[f] for f in finer])
            rest = shapely.difference(geom, claimed)
            core = ix.tree_cores[ix.tree_pos[coarse]]
            if rest.is_empty or not shapely.intersects(core, rest):
                out.discard(coarse)
        return out

    def _untestable_below(self, code: str, hits: set[str], out: list[str]) -> None:
        """Children of a hit that cannot be tested, walking through boundary-less
        areas that have bounded descendants (those are tested where they are)."""
        ix = self._ix
        for child in ix.children.get(code, ()):
            if child in ix.boundaries:
                continue  # tested on its own: it is in ``hits`` or not affected
            if child in ix.bounded_below:
                self._untestable_below(child, hits, out)
            else:
                out.append(child)

    # ------------------------------------------------- subscriber counts

    def set_subscriber_counter(self, counter: SubscriberCounter | None) -> None:
        """Install the subscriber registry's counting hook (see :data:`SubscriberCounter`)."""
        self._counter = counter

    async def subscriber_counts(self, code: str) -> Mapping[str, int] | None:
        """Subscriber counts for an area, or ``None`` while no counter is installed."""
        if self._counter is None:
            return None
        canon = self._canonical(code)
        return await self._counter(canon) if canon else None


def _covered(code: str, prefixes: Iterable[str]) -> bool:
    return any(covers(p, code) for p in prefixes)


def _minimal(codes: Sequence[str]) -> list[str]:
    """Sorted distinct codes with every code covered by another one dropped."""
    out: list[str] = []
    for code in sorted(set(codes)):
        # Sorted order puts a prefix right before the codes it covers.
        if out and code.startswith(out[-1]):
            continue
        out.append(code)
    return out
