"""Coordinates and geometry: datums, axis order, CAP shapes as shapely geometries.

Axis order, once for all of warnd
    shapely geometries are always WGS-84 with **x = longitude, y = latitude**.
    CAP writes points as ``lat,lon`` (``Polygon.points`` and ``Circle`` in
    :mod:`warnd.model` keep that order); GeoJSON writes ``[lon, lat]``. The
    functions here are the only place those orders are swapped.

Datums
    ``wgs84`` (GPS, CAP) and ``gcj02`` (the obfuscated datum of AutoNavi /
    Aliyun DataV / Tencent maps, mandated for published maps in mainland
    China). :func:`gcj02_to_wgs84` inverts the standard public GCJ-02
    forward transform (:func:`wgs84_to_gcj02`) by fixed-point iteration to
    well under a millimetre (the forward transform shifts points by a few
    hundred metres, varying smoothly, so the iteration converges in a few
    steps). Outside the rough mainland box the transform is the identity, as
    in every public implementation.

Circles
    A CAP circle (centre, radius in km) becomes a polygon whose vertices lie
    on the geodesic circle: each vertex is the destination from the centre
    along a bearing, on a sphere whose radius is the Gaussian mean radius of
    the WGS-84 ellipsoid at the centre's latitude (``sqrt(M·N)``). Against the
    exact ellipsoidal geodesic this errs by under 0.1 % of the radius up to a
    few hundred kilometres (the ellipsoid's curvature differs by direction by
    at most ~0.7 %, and the Gaussian radius splits that difference). The
    polygon has :data:`CIRCLE_SEGMENTS` vertices and *circumscribes* the
    circle (the vertex radius is enlarged by ``1/cos(π/n)``), so nothing
    inside the circle is ever left out; the overshoot is at most 0.1 % of
    the radius. A radius of 0 is the centre point itself. Circles that cross
    the antimeridian or a pole are not supported (no Chinese area does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

from warnd.model import Area, Circle, Polygon

FloatArray = npt.NDArray[np.float64]

CIRCLE_SEGMENTS = 72
"""Vertices of the polygon that stands for a CAP circle."""

# WGS-84 ellipsoid.
WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)

# The GCJ-02 transform's own constants (Krasovsky 1940 ellipsoid).
_GCJ_A = 6378245.0
_GCJ_EE = 0.00669342162296594323


class Datum(StrEnum):
    WGS84 = "wgs84"
    GCJ02 = "gcj02"


# ------------------------------------------------------------------ GCJ-02


def in_mainland_box(lon: FloatArray | float, lat: FloatArray | float) -> Any:
    """The rough box in which GCJ-02 differs from WGS-84 (vectorised)."""
    return (
        (np.asarray(lon) >= 72.004)
        & (np.asarray(lon) <= 137.8347)
        & (np.asarray(lat) >= 0.8293)
        & (np.asarray(lat) <= 55.8271)
    )


def _gcj_delta(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The GCJ-02 offset (degrees of lon, lat) at WGS-84 points."""
    x = lon - 105.0
    y = lat - 35.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    d_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x
    d_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x
    common = (20.0 * np.sin(6.0 * x * math.pi) + 20.0 * np.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    d_lat = d_lat + common
    d_lon = d_lon + common
    d_lat = d_lat + (20.0 * np.sin(y * math.pi) + 40.0 * np.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    d_lon = d_lon + (20.0 * np.sin(x * math.pi) + 40.0 * np.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    d_lat = (
        d_lat + (160.0 * np.sin(y / 12.0 * math.pi) + 320 * np.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    )
    d_lon = (
        d_lon
        + (150.0 * np.sin(x / 12.0 * math.pi) + 300.0 * np.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    )
    rad_lat = lat / 180.0 * math.pi
    magic = 1 - _GCJ_EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_GCJ_A * (1 - _GCJ_EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (_GCJ_A / sqrt_magic * np.cos(rad_lat) * math.pi)
    inside = in_mainland_box(lon, lat)
    return np.where(inside, d_lon, 0.0), np.where(inside, d_lat, 0.0)


def wgs84_to_gcj02_arrays(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    d_lon, d_lat = _gcj_delta(lon, lat)
    return lon + d_lon, lat + d_lat


def gcj02_to_wgs84_arrays(
    lon: FloatArray, lat: FloatArray, *, tolerance_deg: float = 1e-10, max_iter: int = 30
) -> tuple[FloatArray, FloatArray]:
    """Invert the forward transform by fixed-point iteration (vectorised).

    ``w ← w − (f(w) − g)`` from ``w = g``; the offset's derivative is tiny
    (metres per kilometre), so each step gains several digits. Stops when
    every point reproduces its GCJ-02 input within ``tolerance_deg``
    (1e-10° ≈ 0.01 mm).
    """
    w_lon = lon.copy()
    w_lat = lat.copy()
    for _ in range(max_iter):
        f_lon, f_lat = wgs84_to_gcj02_arrays(w_lon, w_lat)
        e_lon = f_lon - lon
        e_lat = f_lat - lat
        w_lon = w_lon - e_lon
        w_lat = w_lat - e_lat
        if (
            max(
                float(np.max(np.abs(e_lon), initial=0.0)), float(np.max(np.abs(e_lat), initial=0.0))
            )
            < tolerance_deg
        ):
            break
    return w_lon, w_lat


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """One WGS-84 point (lon, lat) in GCJ-02 (lon, lat)."""
    x, y = wgs84_to_gcj02_arrays(np.array([lon]), np.array([lat]))
    return float(x[0]), float(y[0])


def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """One GCJ-02 point (lon, lat) in WGS-84 (lon, lat)."""
    x, y = gcj02_to_wgs84_arrays(np.array([lon]), np.array([lat]))
    return float(x[0]), float(y[0])


def to_wgs84(geom: BaseGeometry, datum: Datum) -> BaseGeometry:
    """A (lon, lat) geometry in ``datum`` as WGS-84."""
    if datum is Datum.WGS84:
        return geom

    def convert(coords: FloatArray) -> FloatArray:
        lon, lat = gcj02_to_wgs84_arrays(coords[:, 0].copy(), coords[:, 1].copy())
        return np.column_stack([lon, lat])

    return shapely.transform(geom, convert)


# ---------------------------------------------------------------- distances


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres on the WGS-84 mean sphere (R = 6371008.8 m)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371008.8 * math.asin(min(1.0, math.sqrt(h)))


def gaussian_radius_m(lat: float) -> float:
    """The WGS-84 Gaussian mean radius of curvature ``sqrt(M·N)`` at ``lat``."""
    s2 = math.sin(math.radians(lat)) ** 2
    return WGS84_A * math.sqrt(1 - WGS84_E2) / (1 - WGS84_E2 * s2)


# --------------------------------------------------------------- CAP shapes


def cap_polygon(polygon: Polygon) -> shapely.Polygon:
    """A CAP polygon (``lat,lon`` points) as a valid shapely polygon (x=lon, y=lat).

    Self-intersecting rings (bow ties drawn by hand) are repaired with
    ``make_valid`` so that the area they enclose is kept, not dropped.
    """
    shell = [(lon, lat) for lat, lon in polygon.points]
    geom = shapely.Polygon(shell)
    if not geom.is_valid:
        fixed = shapely.make_valid(geom)
        polys = [g for g in shapely.get_parts(fixed) if isinstance(g, shapely.Polygon)]
        return shapely.unary_union(polys) if polys else geom  # type: ignore[return-value]
    return geom


def cap_circle(circle: Circle, segments: int = CIRCLE_SEGMENTS) -> BaseGeometry:
    """A CAP circle as a polygon circumscribing the geodesic circle (see module doc)."""
    if circle.radius_km <= 0:
        return shapely.Point(circle.lon, circle.lat)
    radius = gaussian_radius_m(circle.lat)
    delta = circle.radius_km * 1000.0 / math.cos(math.pi / segments) / radius
    lat1 = math.radians(circle.lat)
    lon1 = math.radians(circle.lon)
    bearings = np.linspace(0.0, 2 * math.pi, segments, endpoint=False)
    sin_lat2 = math.sin(lat1) * math.cos(delta) + math.cos(lat1) * math.sin(delta) * np.cos(
        bearings
    )
    lat2 = np.arcsin(np.clip(sin_lat2, -1.0, 1.0))
    lon2 = lon1 + np.arctan2(
        np.sin(bearings) * math.sin(delta) * math.cos(lat1),
        math.cos(delta) - math.sin(lat1) * np.sin(lat2),
    )
    return shapely.Polygon(np.column_stack([np.degrees(lon2), np.degrees(lat2)]))


def cap_area_geometry(area: Area) -> BaseGeometry | None:
    """The union of an area's polygons and circles, or ``None`` if it has neither."""
    parts: list[BaseGeometry] = [cap_polygon(p) for p in area.polygons]
    parts += [cap_circle(c) for c in area.circles]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return shapely.unary_union(parts)


# ------------------------------------------------------------------ GeoJSON


def geojson_geometry(obj: dict[str, Any]) -> BaseGeometry:
    """A GeoJSON Polygon/MultiPolygon (``[lon, lat]`` positions) as shapely.

    Raises ``ValueError`` saying what is wrong with a malformed geometry.
    """
    kind = obj.get("type")
    coords = obj.get("coordinates")
    if kind not in ("Polygon", "MultiPolygon"):
        raise ValueError(f"geometry type {kind!r} is not Polygon or MultiPolygon")
    if not isinstance(coords, list) or not coords:
        raise ValueError(f"{kind} has no coordinates")
    polys = [coords] if kind == "Polygon" else coords
    out: list[shapely.Polygon] = []
    for i, rings in enumerate(polys):
        if not isinstance(rings, list) or not rings:
            raise ValueError(f"polygon {i + 1} has no rings")
        try:
            shell = _ring(rings[0])
            holes = [_ring(r) for r in rings[1:]]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"polygon {i + 1}: {exc}") from None
        out.append(shapely.Polygon(shell, holes))
    geom: BaseGeometry = shapely.MultiPolygon(out) if len(out) > 1 else out[0]
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


def _ring(ring: Sequence[Any]) -> FloatArray:
    arr = np.asarray(ring, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError("a ring must be a list of [lon, lat] positions")
    if len(arr) < 4:
        raise ValueError(f"a ring needs at least 4 positions, got {len(arr)}")
    arr = arr[:, :2]
    lon, lat = arr[:, 0], arr[:, 1]
    if np.any(np.abs(lon) > 180) or np.any(np.abs(lat) > 90):
        raise ValueError("positions out of range: GeoJSON is [longitude, latitude]")
    return arr


def bounds_union(geoms: Iterable[BaseGeometry]) -> tuple[float, float, float, float] | None:
    """The (minx, miny, maxx, maxy) of several geometries, or ``None`` if none."""
    arr = [g.bounds for g in geoms if not g.is_empty]
    if not arr:
        return None
    b = np.array(arr)
    return (float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max()))
