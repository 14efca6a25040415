"""The alert map: area boundaries from the registry drawn as inline SVG.

No tile server (duty rooms are often offline): the boundaries warnd already
holds are projected into the SVG viewBox and simplified below a pixel.

*Which areas.* Each affected code is drawn by its own boundary, by its
children's when they have boundaries (a prefecture as its counties), or
else by its nearest bounded ancestor's (a township without a boundary as
its county). Around them, the other bounded children of their common
parent are drawn in grey for orientation (曹县 inside 菏泽市).

*Projection.* Equirectangular, x scaled by cos(latitude of the frame's
centre): exact enough for a prefecture and cheap. y grows southwards.

*Colour.* Each drawn area takes the reach rate of its row in the coverage
report (0 % red → 50 % yellow → 100 % green); targeted-but-empty areas are
hatched; areas not in the alert are grey.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import shapely
from shapely.geometry.base import BaseGeometry

from warnd.areas import AreaRegistry
from warnd.geo import cap_area_geometry
from warnd.model import Alert

WIDTH = 600.0
PAD = 6.0
NO_SUBSCRIBERS = "url(#hatch)"
CONTEXT_FILL = "#eeeeee"
PENDING_FILL = "#c9d3df"
"""Affected, but nothing targeted yet (planning)."""


@dataclass(frozen=True, slots=True)
class MapShape:
    code: str
    name: str
    d: str
    label_x: float
    label_y: float
    affected: bool


@dataclass(frozen=True, slots=True)
class Frame:
    """The projected shapes of one set of affected codes (cached per registry version)."""

    width: float
    height: float
    shapes: tuple[MapShape, ...]
    outlines: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Shade:
    """How to draw one affected area: its reach rate (``None``: none targeted)."""

    rate: float | None
    no_subscribers: bool = False


@dataclass(slots=True)
class DrawnArea:
    code: str
    name: str
    d: str
    fill: str
    label_x: float
    label_y: float
    affected: bool
    rate: float | None


@dataclass(slots=True)
class AreaMap:
    width: float
    height: float
    areas: list[DrawnArea] = field(default_factory=list)
    outlines: list[str] = field(default_factory=list)

    @property
    def view_box(self) -> str:
        return f"0 0 {self.width:.0f} {self.height:.0f}"


def rate_colour(rate: float) -> str:
    """Red (0) → yellow (0.5) → green (1), as #rrggbb."""
    stops = ((0.0, (215, 48, 39)), (0.5, (254, 224, 139)), (1.0, (26, 152, 80)))
    r = min(1.0, max(0.0, rate))
    for (x0, c0), (x1, c1) in itertools.pairwise(stops):
        if r <= x1:
            t = (r - x0) / (x1 - x0)
            rgb = (round(a + (b - a) * t) for a, b in zip(c0, c1, strict=True))
            return "#{:02x}{:02x}{:02x}".format(*rgb)
    return "#1a9850"


class MapMaker:
    """Builds maps from one area registry; projected frames are cached per version."""

    def __init__(self, registry: AreaRegistry, *, cache_size: int = 64) -> None:
        self._registry = registry
        self._cache: dict[tuple[int, tuple[str, ...], tuple[str, ...]], Frame] = {}
        self._cache_size = cache_size

    def drawable(self, code: str) -> list[str]:
        """Codes whose boundaries show ``code`` (see the module doc)."""
        reg = self._registry
        bounded_children = [c.code for c in reg.children(code) if c.has_boundary]
        if bounded_children:
            return bounded_children
        if reg.boundary(code) is not None:
            area = reg.get(code)
            return [area.code if area is not None else code]
        for anc in reg.ancestors(code):
            if anc.has_boundary:
                return [anc.code]
        return []

    def frame(self, codes: Sequence[str], alert: Alert | None = None) -> Frame | None:
        """The projected shapes for these affected codes (and the alert's own polygons)."""
        drawn: list[str] = list(dict.fromkeys(d for c in codes for d in self.drawable(c)))
        shapes_key = tuple(sorted(drawn))
        outlines_geoms = _alert_shapes(alert) if alert is not None else []
        outline_key = tuple(g.wkt[:200] + str(g.bounds) for g in outlines_geoms)
        key = (self._registry.version, shapes_key, outline_key)
        found = self._cache.get(key)
        if found is not None:
            return found
        made = self._project(drawn, outlines_geoms)
        if made is not None:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = made
        return made

    def _context(self, drawn: Sequence[str]) -> list[str]:
        reg = self._registry
        parents = {a.parent for c in drawn if (a := reg.get(c)) is not None and a.parent}
        if len(parents) != 1:
            return []
        (parent,) = parents
        return [c.code for c in reg.children(parent) if c.has_boundary and c.code not in drawn]

    def _project(self, drawn: list[str], outlines: list[BaseGeometry]) -> Frame | None:
        reg = self._registry
        geoms: dict[str, BaseGeometry] = {}
        for code in [*drawn, *self._context(drawn)]:
            g = reg.boundary(code)
            if g is not None and not g.is_empty:
                geoms[code] = g
        everything = [*geoms.values(), *outlines]
        if not everything:
            return None
        x0, y0, x1, y1 = shapely.total_bounds(everything).tolist()
        kx = math.cos(math.radians((y0 + y1) / 2))
        span_x = max((x1 - x0) * kx, 1e-6)
        scale = (WIDTH - 2 * PAD) / span_x
        height = max((y1 - y0) * scale, 1.0) + 2 * PAD
        tolerance = 0.6 / scale  # degrees of latitude under 0.6 px

        def project(g: BaseGeometry) -> BaseGeometry:
            simple = g.simplify(tolerance, preserve_topology=True)
            return shapely.transform(
                simple,
                lambda xy: (xy - (x0, y1)) * (scale * kx, -scale) + (PAD, PAD),
            )

        shapes: list[MapShape] = []
        for code, g in geoms.items():
            p = project(g)
            if p.is_empty:
                continue
            area = reg.get(code)
            label = p.representative_point()
            shapes.append(
                MapShape(
                    code=code,
                    name=area.name if area else code,
                    d=svg_path(p),
                    label_x=round(label.x, 1),
                    label_y=round(label.y, 1),
                    affected=code in drawn,
                )
            )
        shapes.sort(key=lambda s: (s.affected, s.code))  # affected drawn last, on top
        lines = tuple(svg_path(project(g)) for g in outlines)
        return Frame(WIDTH, round(height, 1), tuple(shapes), lines)

    def build(
        self,
        codes: Sequence[str],
        shades: Mapping[str, Shade],
        alert: Alert | None = None,
    ) -> AreaMap | None:
        """The map of an alert's areas, coloured by ``shades`` (code → reach)."""
        frame = self.frame(codes, alert)
        if frame is None:
            return None
        out = AreaMap(frame.width, frame.height, outlines=list(frame.outlines))
        for s in frame.shapes:
            shade = shades.get(s.code)
            if not s.affected:
                fill, rate = CONTEXT_FILL, None
            elif shade is None or (shade.rate is None and not shade.no_subscribers):
                fill, rate = PENDING_FILL, None
            elif shade.rate is None:
                fill, rate = NO_SUBSCRIBERS, None
            else:
                fill, rate = rate_colour(shade.rate), shade.rate
            out.areas.append(
                DrawnArea(s.code, s.name, s.d, fill, s.label_x, s.label_y, s.affected, rate)
            )
        return out


def _alert_shapes(alert: Alert) -> list[BaseGeometry]:
    out: list[BaseGeometry] = []
    for info in alert.infos:
        for area in info.areas:
            g = cap_area_geometry(area)
            if g is not None:
                out.append(g)
    return out


def _ring(coords: Iterable[tuple[float, ...]]) -> str:
    pts = [f"{x:.1f},{y:.1f}" for x, y, *_ in coords]
    # Simplification can leave consecutive points on one pixel: drop repeats.
    kept = [p for i, p in enumerate(pts) if i == 0 or p != pts[i - 1]]
    if len(kept) < 3:
        return ""
    return "M" + "L".join(kept) + "Z"


def svg_path(geom: BaseGeometry) -> str:
    """An SVG path ``d`` of a (projected) polygonal geometry; holes by even-odd."""
    parts: list[str] = []
    for poly in getattr(geom, "geoms", [geom]):
        if poly.geom_type != "Polygon":
            continue
        parts.append(_ring(poly.exterior.coords))
        parts.extend(_ring(r.coords) for r in poly.interiors)
    return "".join(parts)
