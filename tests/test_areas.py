"""Area codes, datums and the registry on the real NBS lists and DataV boundaries."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest
import shapely
from areas_data import (
    GEO,
    HEZE_COUNTIES,
    HEZE_DEV_ZONES,
    full_registry,
)

from warnd.adcodes import ADMIN_GEOCODE_NAMES, AreaLevel, normalise_code, parent_code
from warnd.areas import AreaRegistry, ResolvedArea
from warnd.geo import (
    cap_circle,
    cap_polygon,
    gcj02_to_wgs84,
    gcj02_to_wgs84_arrays,
    geojson_geometry,
    haversine_m,
    wgs84_to_gcj02,
    wgs84_to_gcj02_arrays,
)
from warnd.model import Area, Circle, Polygon

# ------------------------------------------------------------------ codes


@pytest.mark.parametrize(
    ("raw", "canonical", "level"),
    [
        ("37", "37", AreaLevel.PROVINCE),
        ("370000", "37", AreaLevel.PROVINCE),
        ("370000000000", "37", AreaLevel.PROVINCE),
        ("3717", "3717", AreaLevel.PREFECTURE),
        ("371700", "3717", AreaLevel.PREFECTURE),
        ("371700000000", "3717", AreaLevel.PREFECTURE),
        ("371721", "371721", AreaLevel.COUNTY),
        ("371721000000", "371721", AreaLevel.COUNTY),
        ("371721000", "371721", AreaLevel.COUNTY),
        ("371721001000", "371721001", AreaLevel.TOWNSHIP),
        ("371721001001", "371721001001", AreaLevel.VILLAGE),
        (" 110101 ", "110101", AreaLevel.COUNTY),
        ("441900003", "441900003", AreaLevel.TOWNSHIP),
    ],
)
def test_normalise_code(raw: str, canonical: str, level: AreaLevel) -> None:
    assert normalise_code(raw) == canonical
    assert AreaLevel.of(canonical) is level


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "empty"),
        ("37a700", "only digits"),
        ("３７１７２１", "only digits"),  # full-width digits are not ASCII
        ("37172", "5 digits"),
        ("3717210010011", "13 digits"),
        ("000000", "all zeros"),
    ],
)
def test_normalise_code_rejects(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        normalise_code(raw)


def test_parent_of_township_in_city_without_counties() -> None:
    # 东莞 (4419) has no counties: its townships' county digits are 00.
    assert parent_code("441900003") == "4419"
    assert parent_code("371721001001") == "371721001"
    assert parent_code("37") is None


def test_cpeas_and_gbt2260_are_admin_geocode_names() -> None:
    assert {"cpeas geographic code", "gb/t 2260", "adcode"} <= ADMIN_GEOCODE_NAMES


# ------------------------------------------------------------------ datums

# Public regression vectors of the GCJ-02 transform: (wgs lat, lon, gcj lat, lon).
GCJ_VECTORS = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # Shanghai
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # Shenzhen
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # Beijing
]


@pytest.mark.parametrize(("wlat", "wlon", "glat", "glon"), GCJ_VECTORS)
def test_gcj02_forward_matches_public_vectors(
    wlat: float, wlon: float, glat: float, glon: float
) -> None:
    lon, lat = wgs84_to_gcj02(wlon, wlat)
    assert lon == pytest.approx(glon, abs=1e-9)
    assert lat == pytest.approx(glat, abs=1e-9)
    back_lon, back_lat = gcj02_to_wgs84(glon, glat)
    assert haversine_m(back_lon, back_lat, wlon, wlat) < 0.01


def test_gcj02_moves_heze_a_few_hundred_metres() -> None:
    # 菏泽市 牡丹区, WGS-84.
    lon, lat = 115.48, 35.24
    glon, glat = wgs84_to_gcj02(lon, lat)
    shift = haversine_m(lon, lat, glon, glat)
    assert 300 < shift < 800
    # In this region GCJ-02 pushes points east; the north-south part is small.
    assert haversine_m(lon, lat, glon, lat) > 450
    assert glon > lon
    assert haversine_m(lon, lat, lon, glat) < 100


def test_gcj02_inverse_of_forward_is_identity_to_sub_millimetre() -> None:
    lon, lat = np.meshgrid(np.linspace(114.8, 116.4, 40), np.linspace(34.4, 35.9, 40))
    lon, lat = lon.ravel(), lat.ravel()
    glon, glat = wgs84_to_gcj02_arrays(lon, lat)
    blon, blat = gcj02_to_wgs84_arrays(glon, glat)
    worst = max(haversine_m(a, b, c, d) for a, b, c, d in zip(lon, lat, blon, blat, strict=True))
    assert worst < 0.001


def test_gcj02_is_identity_outside_china() -> None:
    assert wgs84_to_gcj02(2.35, 48.85) == (2.35, 48.85)
    assert gcj02_to_wgs84(-74.0, 40.7) == (-74.0, 40.7)


# --------------------------------------------------------------- CAP shapes


def test_cap_polygon_swaps_lat_lon_into_x_lon_y_lat() -> None:
    poly = cap_polygon(
        Polygon(points=[(35.0, 115.0), (35.0, 115.1), (35.1, 115.1), (35.1, 115.0), (35.0, 115.0)])
    )
    minx, miny, maxx, maxy = poly.bounds
    assert (minx, miny, maxx, maxy) == (115.0, 35.0, 115.1, 35.1)


def test_cap_polygon_repairs_a_bow_tie_without_losing_area() -> None:
    bow = cap_polygon(
        Polygon(points=[(35.0, 115.0), (35.1, 115.1), (35.1, 115.0), (35.0, 115.1), (35.0, 115.0)])
    )
    assert bow.is_valid
    assert bow.area == pytest.approx(0.005, rel=1e-6)


@pytest.mark.parametrize("radius_km", [0.5, 10.0, 150.0])
def test_cap_circle_vertices_lie_on_the_geodesic_circle(radius_km: float) -> None:
    circle = cap_circle(Circle(lat=35.25, lon=115.45, radius_km=radius_km))
    assert isinstance(circle, shapely.Polygon)
    dists = [haversine_m(115.45, 35.25, x, y) for x, y in circle.exterior.coords]
    metres = radius_km * 1000
    # Circumscribed (never smaller than the circle), within 0.3 %: the polygon
    # overshoot (0.1 %) plus the Gaussian radius against the mean sphere.
    assert min(dists) >= metres * 0.999
    assert max(dists) <= metres * 1.003
    # Edge midpoints (the polygon's points nearest the centre) are still on or
    # outside the circle: the polygon covers it.
    coords = list(circle.exterior.coords)
    mids = [((x1 + x2) / 2, (y1 + y2) / 2) for (x1, y1), (x2, y2) in itertools.pairwise(coords)]
    assert min(haversine_m(115.45, 35.25, x, y) for x, y in mids) >= metres * 0.998


def test_cap_circle_radius_zero_is_its_centre() -> None:
    geom = cap_circle(Circle(lat=35.25, lon=115.45, radius_km=0))
    assert isinstance(geom, shapely.Point)
    assert (geom.x, geom.y) == (115.45, 35.25)


def test_geojson_rejects_lat_lon_order_out_of_range() -> None:
    with pytest.raises(ValueError, match="longitude, latitude"):
        geojson_geometry(
            {"type": "Polygon", "coordinates": [[[35, 200], [35, 201], [36, 201], [35, 200]]]}
        )


# ------------------------------------------------- registry on real data


@pytest.fixture(scope="module")
def registry(redis_server: str) -> AreaRegistry:
    """Every admin list, the 菏泽 villages and the DataV boundaries, imported once."""
    return full_registry(redis_server)


def area(**kw: Any) -> Area:
    return Area.model_validate({"area_desc": "test", **kw})


def square(lon: float, lat: float, half: float) -> list[tuple[float, float]]:
    """A closed CAP ring (lat, lon points) around (lon, lat)."""
    return [
        (lat - half, lon - half),
        (lat - half, lon + half),
        (lat + half, lon + half),
        (lat + half, lon - half),
        (lat - half, lon - half),
    ]


def test_registry_holds_the_real_hierarchy(registry: AreaRegistry) -> None:
    assert len(registry) > 49_000  # 31 + 342 + 2,975 + 41,351 + 5,040 (+ HK/MO/TW)
    caoxian = registry.get("371721")
    assert caoxian is not None
    assert (caoxian.name, caoxian.level, caoxian.parent) == ("曹县", AreaLevel.COUNTY, "3717")
    assert caoxian.has_boundary
    assert registry.get("371721000000") == caoxian
    assert "371700" in registry and "3717" in registry
    assert "371799" not in registry and "junk" not in registry and 371721 not in registry
    assert [a.code for a in registry.ancestors("371721001001")] == [
        "371721001",
        "371721",
        "3717",
        "37",
    ]
    children = {a.code: a.name for a in registry.children("3717")}
    assert children == HEZE_COUNTIES | HEZE_DEV_ZONES
    heze_villages = [a for a in registry.with_prefix("3717") if a.level is AreaLevel.VILLAGE]
    assert len(heze_villages) == 5040
    assert all(registry.get(v.parent or "") is not None for v in heze_villages)
    # Taiwan, Hong Kong and Macau come from the boundary file, not the NBS lists.
    hong_kong = registry.get("810000")
    assert hong_kong is not None and hong_kong.name == "香港特别行政区"


def test_with_prefix_is_exactly_the_codes_under_it(registry: AreaRegistry) -> None:
    under = registry.with_prefix("371721")
    assert under[0].code == "371721"
    assert all(a.code.startswith("371721") for a in under)
    assert len(under) == registry.count_prefix("371721")
    townships = [a for a in under if a.level is AreaLevel.TOWNSHIP]
    assert townships and all(t.parent == "371721" for t in townships)
    assert registry.with_prefix("371700")[0].code == "3717"  # padded prefix normalised


def test_development_zones_inherit_the_prefecture_geometry(registry: AreaRegistry) -> None:
    heze = registry.boundary("3717")
    assert heze is not None
    for code in HEZE_DEV_ZONES:
        zone = registry.get(code)
        assert zone is not None and not zone.has_boundary
        assert registry.boundary(code) is None
        assert registry.geometry(code) is heze
    # A village inherits its county's boundary, not the prefecture's.
    assert registry.geometry("371721001001") is registry.boundary("371721")


def test_boundaries_are_stored_in_wgs84(registry: AreaRegistry) -> None:
    raw = json.loads((GEO / "datav-371700_full.json").read_text(encoding="utf-8-sig"))
    feature = next(f for f in raw["features"] if f["properties"]["adcode"] == 371702)
    gcj = geojson_geometry(feature["geometry"]).centroid
    wgs = registry.boundary("371702")
    assert wgs is not None
    shift = haversine_m(gcj.x, gcj.y, wgs.centroid.x, wgs.centroid.y)
    assert 300 < shift < 800
    assert wgs.centroid.x < gcj.x  # moved back west


def test_locate_finds_the_most_specific_boundary(registry: AreaRegistry) -> None:
    p = registry.boundary("371721").representative_point()  # type: ignore[union-attr]
    found = registry.locate(p.x, p.y)
    assert found is not None and found.code == "371721"
    assert registry.locate(p.y, p.x) is None  # lat/lon swapped: off the map


# ------------------------------------------------------------- geocodes


def test_geocode_371721_resolves_to_caoxian_by_prefix(registry: AreaRegistry) -> None:
    r = registry.resolve(area(geocodes=[{"value_name": "GB/T 2260", "value": "371721"}]))
    assert r.codes == ("371721",)
    assert r.by_geocode == ("371721",)
    assert r.geometry is None and r.unknown_geocodes == () and r.unregistered == ()
    caoxian_villages = [a.code for a in registry.with_prefix("371721")]
    shanxian_villages = [a.code for a in registry.with_prefix("371722")]
    assert len(caoxian_villages) > 500 and len(shanxian_villages) > 400
    assert all(r.includes(c) for c in caoxian_villages)
    assert not any(r.includes(c) for c in shanxian_villages)
    # A point anywhere (even outside the county) does not exclude a geocoded subscriber.
    assert r.includes("371721001001", lon=0.0, lat=0.0)


@pytest.mark.parametrize(
    ("value_name", "value", "code"),
    [
        ("CPEAS Geographic Code", "371721000000", "371721"),
        ("adcode", "371700", "3717"),
        (" gb/t 2260 ", "37", "37"),
        ("行政区划代码", "371721001000", "371721001"),
    ],
)
def test_admin_geocode_schemes_and_padding(
    registry: AreaRegistry, value_name: str, value: str, code: str
) -> None:
    r = registry.resolve(area(geocodes=[{"value_name": value_name, "value": value}]))
    assert r.codes == (code,)


def test_unknown_geocodes_are_recorded_not_fatal(registry: AreaRegistry) -> None:
    r = registry.resolve(
        area(
            geocodes=[
                {"value_name": "Taiwan_Geocode_103", "value": "10014"},
                {"value_name": "SAME", "value": "006109"},
                {"value_name": "GB/T 2260", "value": "37172X"},
                {"value_name": "GB/T 2260", "value": "371722"},
                {"value_name": "GB/T 2260", "value": "371799"},
            ]
        )
    )
    assert [g.value for g in r.unknown_geocodes] == ["10014", "006109", "37172X"]
    assert r.codes == ("371722", "371799")
    assert r.unregistered == ("371799",)


def test_nested_geocodes_collapse_to_the_broadest(registry: AreaRegistry) -> None:
    r = registry.resolve(
        area(
            geocodes=[
                {"value_name": "GB/T 2260", "value": "371721001001"},
                {"value_name": "GB/T 2260", "value": "371721"},
                {"value_name": "GB/T 2260", "value": "371722"},
            ]
        )
    )
    assert r.codes == ("371721", "371722")


# -------------------------------------------------------------- polygons


def _bounded_counties_hit(registry: AreaRegistry, r: ResolvedArea) -> set[str]:
    return {c for c in r.codes if c in HEZE_COUNTIES}


def test_polygon_inside_mudan_resolves_only_to_what_it_intersects(
    registry: AreaRegistry,
) -> None:
    mudan = registry.boundary("371702")
    assert mudan is not None
    p = mudan.representative_point()
    ring = square(p.x, p.y, 0.01)
    r = registry.resolve(area(polygons=[{"points": ring}]))
    assert r.geometry is not None and mudan.contains(r.geometry)
    # 牡丹区 itself; the two development zones have no boundary and cannot be
    # ruled out, so they are included and flagged.
    assert r.codes == ("371702", "371771", "371772")
    assert r.inherited == ("371771", "371772")
    assert r.by_geocode == ()
    # Subscriber rule: a point in 牡丹区 outside the polygon is excluded, one inside
    # is included, one without a point is included by its area.
    village = next(a.code for a in registry.with_prefix("371702") if a.level is AreaLevel.VILLAGE)
    far = shapely.Point(p.x + 0.05, p.y)
    if not mudan.contains(far):
        far = shapely.Point(p.x - 0.05, p.y)
    assert mudan.contains(far)
    assert r.includes(village, lon=p.x, lat=p.y)
    assert not r.includes(village, lon=far.x, lat=far.y)
    assert r.includes(village)
    # Nothing in 曹县 is affected.
    assert not r.includes("371721001001")


def test_polygon_axis_order_matters(registry: AreaRegistry) -> None:
    p = registry.boundary("371721").representative_point()  # type: ignore[union-attr]
    right = registry.resolve(area(polygons=[{"points": square(p.x, p.y, 0.02)}]))
    assert "371721" in right.codes
    # The same numbers written lon,lat (the commonest CAP bug) never get this far
    # in China: every longitude there is outside the latitude range.
    swapped = [(lon, lat) for lat, lon in square(p.x, p.y, 0.02)]
    with pytest.raises(ValueError, match="latitude"):
        area(polygons=[{"points": swapped}])


def test_polygon_across_counties_matches_boundaries_exactly(registry: AreaRegistry) -> None:
    a = registry.boundary("371702").representative_point()  # type: ignore[union-attr]
    b = registry.boundary("371721").representative_point()  # type: ignore[union-attr]
    band = shapely.LineString([a, b]).buffer(0.01, quad_segs=2)
    ring = [(y, x) for x, y in band.exterior.coords]
    r = registry.resolve(area(polygons=[{"points": ring}]))
    assert r.geometry is not None
    expected = {c for c in HEZE_COUNTIES if registry.boundary(c).intersects(r.geometry)}  # type: ignore[union-attr]
    assert {"371702", "371721"} <= expected
    assert _bounded_counties_hit(registry, r) == expected
    assert set(r.inherited) == set(HEZE_DEV_ZONES)


def test_county_outline_as_polygon_is_that_county_only(registry: AreaRegistry) -> None:
    # Warnings are often drawn as a county's outline: it touches every neighbour,
    # and the coarser national outline of 河南省 (41) overlaps it in slivers up to
    # ~500 m deep. Neither makes the neighbours affected.
    caoxian = registry.boundary("371721")
    assert caoxian is not None
    outline = max(shapely.get_parts(caoxian), key=lambda g: g.area)
    assert caoxian.intersects(registry.boundary("371722"))  # type: ignore[arg-type]
    assert outline.intersection(registry.boundary("41")).area > 0  # type: ignore[arg-type]
    r = registry.resolve(area(polygons=[{"points": [(y, x) for x, y in outline.exterior.coords]}]))
    assert r.codes == ("371721", "371771", "371772")


def test_two_hundred_vertex_polygon(registry: AreaRegistry) -> None:
    heze = registry.boundary("3717")
    assert heze is not None
    c = heze.centroid
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    radii = 0.25 + 0.1 * np.sin(angles * 7)
    ring = [(c.y + r * np.sin(t), c.x + r * np.cos(t)) for r, t in zip(radii, angles, strict=True)]
    ring.append(ring[0])
    r = registry.resolve(area(polygons=[{"points": ring}]))
    expected = {c for c in HEZE_COUNTIES if registry.boundary(c).intersects(r.geometry)}  # type: ignore[union-attr]
    assert len(expected) >= 2
    assert _bounded_counties_hit(registry, r) == expected
    assert all(code.startswith("3717") for code in r.codes)


def test_circle_around_a_known_point(registry: AreaRegistry) -> None:
    p = registry.boundary("371721").representative_point()  # type: ignore[union-attr]
    small = registry.resolve(area(circles=[{"lat": p.y, "lon": p.x, "radius_km": 2}]))
    assert _bounded_counties_hit(registry, small) == {"371721"}
    assert small.includes("371721001001", lon=p.x, lat=p.y)
    # ~3 km east is outside a 2 km circle.
    assert not small.includes("371721001001", lon=p.x + 0.033, lat=p.y)
    big = registry.resolve(area(circles=[{"lat": p.y, "lon": p.x, "radius_km": 60}]))
    expected = {c for c in HEZE_COUNTIES if registry.boundary(c).intersects(big.geometry)}  # type: ignore[union-attr]
    assert len(expected) >= 4
    assert _bounded_counties_hit(registry, big) == expected
    # 曹县 is on the Henan border: 60 km reaches well into 河南省, which has no
    # finer boundaries here, so the whole province is affected.
    assert "41" in big.codes


def test_geocode_and_polygon_in_one_area_are_a_union(registry: AreaRegistry) -> None:
    p = registry.boundary("371702").representative_point()  # type: ignore[union-attr]
    r = registry.resolve(
        area(
            polygons=[{"points": square(p.x, p.y, 0.01)}],
            geocodes=[{"value_name": "GB/T 2260", "value": "371722"}],
        )
    )
    assert r.by_geocode == ("371722",)
    assert {"371702", "371722"} <= set(r.codes)
    # 单县 subscribers are in by geocode, wherever their point is.
    assert r.includes("371722001001", lon=p.x + 1, lat=p.y)


def test_polygon_outside_every_boundary(registry: AreaRegistry) -> None:
    r = registry.resolve(area(polygons=[{"points": square(-30.0, 0.0, 1)}]))
    assert r.codes == () and r.geometry is not None
