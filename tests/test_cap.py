"""The CAP codec against real alerts from /work/shared/data/cap and crafted edge cases."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from warnd.cap import ParsedCap, _safe, parse_cap, schema_errors, to_cap_xml
from warnd.errors import AlertInvalid, FieldError, MalformedDocument
from warnd.model import Alert, Certainty, Level

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CAP_DIR = DATA / "cap"
if not CAP_DIR.is_dir():  # pragma: no cover - the data ships with the repository checkout
    raise RuntimeError(f"shared CAP data not found at {CAP_DIR}; it must exist for these tests")

# Real alerts that break the CAP 1.2 / 1.1 XSD, with the error they must report.
SCHEMA_FAILURES = {
    "zh/tw-cwb-typhoon-warning-2-polygons.xml": ("/alert/info/description", "Element content"),
    "cap11/us-nws-floodwarning-errors-cap11.xml": ("/alert/info/urgency", "enumeration"),
}
VALID = sorted(
    p.relative_to(CAP_DIR).as_posix()
    for p in CAP_DIR.rglob("*.xml")
    if p.relative_to(CAP_DIR).parts[0] != "invalid"
    and p.relative_to(CAP_DIR).as_posix() not in SCHEMA_FAILURES
)
# Each hostile or broken file, and what the refusal must say.
INVALID = {
    "ca-ec-errors-empty-references.xml": (AlertInvalid, "references is empty"),
    "missing-scope.xml": (AlertInvalid, "scope"),
    "se-smhi-alerts-wrapper-root.xml": (AlertInvalid, "root element is <alerts>"),
    "tw-html-404-page-saved-as-cap.xml": (MalformedDocument, "HTML page"),
    "tw-wrong-namespace-alerts-1.2.xml": (AlertInvalid, "urn:oasis:names:tc:emergency:alerts:1.2"),
    "xxe-external-entities.xml": (MalformedDocument, "DTDs are not allowed"),
}


def _read(rel: str) -> bytes:
    return (CAP_DIR / rel).read_bytes()


def _everything(exc: AlertInvalid) -> str:
    return " | ".join([exc.detail, *(f"{e.loc} {e.msg}" for e in exc.errors)])


def _geometry(alert: Alert) -> list[object]:
    return [(a.polygons, a.circles, a.geocodes) for info in alert.infos for a in info.areas]


def _minimal(**info: object) -> Alert:
    return Alert.model_validate(
        {
            "identifier": "T-1",
            "sender": "test@warnd.dev",
            "sent": "2024-05-01T08:00:00+08:00",
            "status": "Actual",
            "msg_type": "Alert",
            "scope": "Public",
            "infos": [
                {
                    "categories": ["Met"],
                    "event": "Rainstorm",
                    "urgency": "Expected",
                    "severity": "Severe",
                    "certainty": "Likely",
                    **info,
                }
            ],
        }
    )


def _cap(body: str, ns: str = "urn:oasis:names:tc:emergency:cap:1.2") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="{ns}">\n{body}</alert>\n'
    ).encode()


HEADER = """<identifier>X-1</identifier>
<sender>x@example.org</sender>
<sent>2024-05-01T08:00:00+08:00</sent>
<status>Actual</status>
<msgType>Alert</msgType>
<scope>Public</scope>
"""


def _info(inner: str = "", certainty: str = "Likely") -> str:
    return f"""<info>
<category>Met</category>
<event>Rain</event>
<urgency>Expected</urgency>
<severity>Severe</severity>
<certainty>{certainty}</certainty>
{inner}</info>
"""


# --------------------------------------------------------------- real data


def test_data_inventory() -> None:
    assert len(VALID) >= 25
    assert sorted(p.name for p in (CAP_DIR / "invalid").glob("*.xml")) == sorted(INVALID)


@pytest.mark.parametrize("rel", VALID, ids=VALID)
def test_real_alert_round_trips(rel: str) -> None:
    parsed = parse_cap(_read(rel))
    alert = parsed.alert
    assert parsed.version == ("1.1" if rel.startswith("cap11/") else "1.2")

    xml = to_cap_xml(alert)
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert b'xmlns="urn:oasis:names:tc:emergency:cap:1.2"' in xml
    assert schema_errors(xml) == []

    again = parse_cap(xml)
    assert again.version == "1.2"
    assert again.warnings == []
    back = again.alert
    assert back.identifier == alert.identifier
    assert back.sender == alert.sender
    assert back.msg_type == alert.msg_type
    assert back.references == alert.references
    assert len(back.infos) == len(alert.infos)
    assert back.languages == alert.languages
    assert _geometry(back) == _geometry(alert)
    assert back == alert


def test_real_alert_values() -> None:
    a3 = parse_cap(_read("oasis/oasis-cap12-A3-earthquake-update-circle.xml")).alert
    assert [r.identifier for r in a3.references] == ["TRI13970876.1"]
    circle = a3.infos[0].areas[0].circles[0]
    assert (circle.lat, circle.lon, circle.radius_km) == (32.9525, -115.5527, 0.0)

    a2 = parse_cap(_read("oasis/oasis-cap12-A2-severe-thunderstorm-polygon.xml")).alert
    assert a2.infos[0].areas[0].polygons[0].points[0] == (38.47, -120.14)
    assert a2.infos[0].description is not None
    assert not a2.infos[0].description[0].isspace()

    multi = parse_cap(_read("us/us-nws-hurricane-warning-update-2-polygons.xml")).alert
    assert len(multi.infos[0].areas[0].polygons) == 2

    ca = parse_cap(_read("intl/ca-ec-update-multilang.xml")).alert
    assert ca.languages == ["en-CA", "fr-CA"]
    assert len(ca.references) == 2


def test_iso_8859_1_declaration_is_honoured() -> None:
    raw = _read("us/us-usgs-earthquake-iso8859-1.xml")
    assert b'encoding="ISO-8859-1"' in raw[:100]
    alert = parse_cap(raw).alert
    text = " ".join(str(v) for v in alert.infos[0].model_dump().values())
    assert "\ufffd" not in text
    assert alert.identifier


def test_xml_signature_is_dropped_with_a_warning() -> None:
    parsed = parse_cap(_read("us/us-ipaws-nv-cancel-references.xml"))
    assert any("Signature" in w for w in parsed.warnings)
    assert b"Signature" not in to_cap_xml(parsed.alert)


def test_cap11_is_upgraded() -> None:
    parsed = parse_cap(_read("cap11/us-nws-flashfloodwatch-cap11.xml"))
    assert parsed.version == "1.1"
    assert parsed.warnings[0] == "CAP 1.1 upgraded to 1.2"
    assert b"cap:1.1" not in to_cap_xml(parsed.alert)


def test_empty_polygon_is_ignored_with_a_warning() -> None:
    parsed = parse_cap(_read("cap11/us-nws-blizzard-warning-cap11-empty-polygon.xml"))
    assert any("empty polygon ignored" in w for w in parsed.warnings)
    assert all(not a.polygons for i in parsed.alert.infos for a in i.areas)
    assert parsed.alert.geocodes()


def test_cancellation_may_expire_at_onset() -> None:
    # NTWC: sent == onset == expires. CAP orders none of these times.
    alert = parse_cap(_read("us/us-ntwc-tsunami-cancellation-update-circle.xml")).alert
    assert alert.infos[0].expires == alert.infos[0].onset == alert.sent


@pytest.mark.parametrize("rel", sorted(SCHEMA_FAILURES), ids=sorted(SCHEMA_FAILURES))
def test_schema_invalid_real_alerts_are_refused(rel: str) -> None:
    loc, words = SCHEMA_FAILURES[rel]
    with pytest.raises(AlertInvalid) as info:
        parse_cap(_read(rel))
    assert not isinstance(info.value, MalformedDocument)
    hits = [e for e in info.value.errors if e.loc == loc and words in e.msg]
    assert hits, info.value.errors
    assert all(e.line for e in info.value.errors)
    assert "schema" in info.value.detail


@pytest.mark.parametrize("name", sorted(INVALID), ids=sorted(INVALID))
def test_invalid_files_are_refused_with_a_reason(name: str) -> None:
    kind, words = INVALID[name]
    with pytest.raises(AlertInvalid) as info:
        parse_cap(_read(f"invalid/{name}"))
    assert isinstance(info.value, kind)
    assert words in _everything(info.value)
    assert info.value.errors
    assert all(e.line for e in info.value.errors)


# ------------------------------------------------------------ hostile XML


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, int]]:
    """A local TCP listener that a fetching parser would connect to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock, sock.getsockname()[1]
    finally:
        sock.close()


def _no_connection(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def _hostile(port: int) -> bytes:
    raw = _read("invalid/xxe-external-entities.xml")
    # Point every URL at our listener, and reference the file entity too.
    raw = raw.replace(b"localhost:8080", f"127.0.0.1:{port}".encode())
    return raw.replace(b"%send;", b"%file;")


def _passwd_markers() -> list[str]:
    lines = Path("/etc/passwd").read_text(errors="replace").splitlines()
    return [line for line in lines if line.strip()][:3]


def test_xxe_is_refused_before_lxml_sees_it(
    listener: tuple[socket.socket, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, port = listener

    def forbidden(data: bytes) -> None:
        raise AssertionError("a DOCTYPE document reached lxml")

    monkeypatch.setattr(_safe, "parse_lxml", forbidden)
    with pytest.raises(MalformedDocument) as info:
        parse_cap(_hostile(port))
    text = _everything(info.value)
    assert "DTDs are not allowed" in text
    assert info.value.errors[0].line == 3
    assert _no_connection(sock)
    assert not any(m in text for m in _passwd_markers())


def test_lxml_layer_alone_is_also_inert(listener: tuple[socket.socket, int]) -> None:
    # Defence in depth: even without the prolog scan, lxml fetches nothing.
    sock, port = listener
    with pytest.raises(MalformedDocument) as info:
        _safe.parse_lxml(_hostile(port))
    assert _no_connection(sock)
    assert not any(m in _everything(info.value) for m in _passwd_markers())


def test_internal_entity_expansion_is_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n<alert>&lol2;</alert>'
    )
    with pytest.raises(MalformedDocument, match="DTDs are not allowed"):
        parse_cap(bomb)


def test_doctype_after_comments_and_pis_is_found() -> None:
    doc = b'<?xml version="1.0"?>\n<!-- a -->\n<?pi x?>\n<!doctype alert>\n<alert/>'
    with pytest.raises(MalformedDocument, match="DTDs are not allowed") as info:
        parse_cap(doc)
    assert info.value.errors[0].line == 4


def test_utf16_doctype_is_found() -> None:
    doc = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE alert SYSTEM "x"><alert/>'
    with pytest.raises(MalformedDocument, match="DTDs are not allowed"):
        parse_cap(doc.encode("utf-16"))


def test_doctype_text_inside_the_body_is_just_text() -> None:
    note = "<note><![CDATA[<!DOCTYPE html> is text here]]></note>\n"
    alert = parse_cap(_cap(HEADER + note + _info())).alert
    assert alert.note == "<!DOCTYPE html> is text here"


def test_utf16_document_parses() -> None:
    doc = _cap(HEADER + _info()).decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
    assert parse_cap(doc.encode("utf-16")).alert.identifier == "X-1"


# ------------------------------------------------------- malformed bodies


def test_size_limit_is_checked_first() -> None:
    doc = _cap(HEADER + _info())
    with pytest.raises(MalformedDocument, match="over the limit of 100 bytes"):
        parse_cap(doc, max_bytes=100)
    assert parse_cap(doc, max_bytes=len(doc)).alert.identifier == "X-1"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"  \n\t", "empty"),
        (b'{"identifier": "x"}', "not XML"),
        (b"\x00\x01\x02garbage", "not XML"),
        (b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'><identifier>", "not well-formed"),
        (b"<?xml version='1.0'?>", "no root element"),
        (b"<html><body><h1>502 Bad Gateway</h1><br></body></html>", "HTML page"),
        (b"<html><body>ok</body></html>", "HTML page"),
    ],
    ids=["empty", "blank", "json", "binary", "truncated", "prolog-only", "html-broken", "html"],
)
def test_not_cap_bytes(body: bytes, words: str) -> None:
    with pytest.raises(MalformedDocument) as info:
        parse_cap(body)
    assert words in _everything(info.value)


def test_syntax_error_has_a_line() -> None:
    doc = _cap(HEADER + "<note>a & b</note>\n" + _info())
    with pytest.raises(MalformedDocument) as info:
        parse_cap(doc)
    assert info.value.errors[0].line == 9


def test_no_namespace_is_named() -> None:
    with pytest.raises(AlertInvalid, match="no namespace"):
        parse_cap(b"<alert><identifier>x</identifier></alert>")


def test_schema_errors_of_bad_document() -> None:
    errors = schema_errors(_cap(HEADER.replace("<scope>Public</scope>\n", "") + _info()))
    assert errors
    assert all(isinstance(e, FieldError) for e in errors)
    assert errors[0].loc == "/alert/info"
    assert errors[0].line == 8
    assert "scope" in errors[0].msg
    assert "{urn:" not in errors[0].msg
    with pytest.raises(MalformedDocument):
        schema_errors(b"not xml")


# ------------------------------------------------------- model rules via XML


def test_open_polygon_names_the_polygon() -> None:
    area = """<area><areaDesc>A</areaDesc>
<polygon>1,1 1,2 2,2 1,1</polygon>
<polygon>1,1 1,2 2,2 2,1</polygon>
</area>
"""
    with pytest.raises(AlertInvalid) as info:
        parse_cap(_cap(HEADER + _info(area)))
    (err,) = info.value.errors
    assert err.loc == "/alert/info/area/polygon[2]"
    assert "not closed" in err.msg
    assert err.line == 17
    assert "polygon[2]" in info.value.detail


def test_polygon_with_bad_point_names_the_polygon() -> None:
    area = "<area><areaDesc>A</areaDesc><polygon>1,1 1;2 2,2 1,1</polygon></area>\n"
    with pytest.raises(AlertInvalid) as info:
        parse_cap(_cap(HEADER + _info(area)))
    assert info.value.errors[0].loc == "/alert/info/area/polygon"
    assert "'1;2'" in info.value.errors[0].msg


def test_circle_out_of_range_and_negative_radius() -> None:
    area = "<area><areaDesc>A</areaDesc><circle>95,10 5</circle><circle>10,10 -1</circle></area>\n"
    with pytest.raises(AlertInvalid) as info:
        parse_cap(_cap(HEADER + _info(area)))
    locs = {e.loc for e in info.value.errors}
    assert locs == {"/alert/info/area/circle[1]", "/alert/info/area/circle[2]"}


def test_model_rule_errors_carry_lines() -> None:
    body = HEADER.replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>")
    with pytest.raises(AlertInvalid) as info:
        parse_cap(_cap(body + _info()))
    (err,) = info.value.errors
    assert (err.loc, err.line) == ("/alert", 2)
    assert "must list references" in err.msg


def test_self_reference_is_refused() -> None:
    refs = "<references>x@example.org,X-1,2024-05-01T07:00:00+08:00</references>\n"
    body = HEADER.replace("<msgType>Alert</msgType>", "<msgType>Update</msgType>") + refs
    with pytest.raises(AlertInvalid, match="references itself"):
        parse_cap(_cap(body + _info()))


def test_bad_reference_triple() -> None:
    refs = "<references>x@example.org,X-0</references>\n"
    with pytest.raises(AlertInvalid) as info:
        parse_cap(_cap(HEADER + refs + _info()))
    assert info.value.errors[0].loc == "/alert/references"
    assert "sender,identifier,sent" in info.value.errors[0].msg


def test_outer_whitespace_is_stripped() -> None:
    body = HEADER.replace("<identifier>X-1</identifier>", "<identifier>\n  X-1\n</identifier>")
    inner = "<description>\n   Line one.\n   Line two.\n  </description>\n"
    alert = parse_cap(_cap(body + _info(inner))).alert
    assert alert.identifier == "X-1"
    assert alert.infos[0].description == "Line one.\n   Line two."


# ---------------------------------------------------------- CAP 1.1 quirks

CAP11 = "urn:oasis:names:tc:emergency:cap:1.1"


def test_cap11_very_likely_and_missing_mime_type() -> None:
    resource = (
        "<resource><resourceDesc>map</resourceDesc><uri>http://x.org/m.png</uri></resource>\n"
    )
    body = HEADER.replace("+08:00</sent>", ".250Z</sent>")
    parsed = parse_cap(_cap(body + _info(resource, certainty="Very Likely"), CAP11))
    assert parsed.version == "1.1"
    info = parsed.alert.infos[0]
    assert info.certainty is Certainty.LIKELY
    assert info.resources[0].mime_type == "image/png"
    assert parsed.alert.sent == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    notes = " ".join(parsed.warnings)
    for words in ("Very Likely", "mimeType", "-00:00"):
        assert words in notes
    assert parse_cap(to_cap_xml(parsed.alert)).alert == parsed.alert


def test_cap11_very_likely_is_not_accepted_in_cap12() -> None:
    with pytest.raises(AlertInvalid, match="certainty"):
        parse_cap(_cap(HEADER + _info(certainty="Very Likely")))


# ------------------------------------------------------------------ writing


def test_hazard_and_level_travel_as_event_code_and_parameter() -> None:
    alert = _minimal(
        event_codes=[{"value_name": "SAME", "value": "SVR"}],
        parameters=[{"value_name": "x", "value": "1"}],
        hazard="rainstorm",
        level="orange",
    )
    xml = to_cap_xml(alert)
    assert b"<valueName>warnd:hazard</valueName>" in xml
    assert b"<valueName>warnd:level</valueName>" in xml
    back = parse_cap(xml).alert
    assert back == alert
    assert back.infos[0].event_codes == alert.infos[0].event_codes
    assert back.infos[0].hazard == "rainstorm"


def test_stray_warnd_pairs_do_not_duplicate_the_fields() -> None:
    alert = _minimal(
        event_codes=[{"value_name": "warnd:hazard", "value": "old"}],
        parameters=[{"value_name": "warnd:level", "value": "blue"}],
        hazard="rainstorm",
        level="red",
    )
    back = parse_cap(to_cap_xml(alert)).alert.infos[0]
    assert (back.hazard, back.level, back.event_codes, back.parameters) == (
        "rainstorm",
        Level.RED,
        [],
        [],
    )


def test_level_accepts_chinese_names() -> None:
    inner = "<parameter><valueName>warnd:level</valueName><value>红色</value></parameter>\n"
    alert = parse_cap(_cap(HEADER + _info(inner))).alert
    assert alert.infos[0].level is Level.RED
    assert alert.infos[0].parameters == []


def test_unknown_level_and_duplicate_hazard() -> None:
    inner = (
        "<eventCode><valueName>warnd:hazard</valueName><value>a</value></eventCode>\n"
        "<eventCode><valueName>warnd:hazard</valueName><value>b</value></eventCode>\n"
        "<parameter><valueName>warnd:level</valueName><value>purple</value></parameter>\n"
    )
    with pytest.raises(AlertInvalid) as info:
        parse_cap(_cap(HEADER + _info(inner)))
    msgs = {(e.loc, e.msg.split(":")[0]) for e in info.value.errors}
    assert ("/alert/info/eventCode[2]", "warnd") in msgs
    assert ("/alert/info/parameter", "unknown level 'purple'") in msgs


def test_times_are_written_with_offsets_never_z_or_fractions() -> None:
    alert = _minimal(
        effective=datetime(2024, 5, 1, 0, 0, 0, 123456, tzinfo=UTC),
        expires=datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    )
    alert.sent = datetime(2024, 4, 30, 23, 59, 59, 999999, tzinfo=UTC)
    xml = to_cap_xml(alert).decode()
    assert "<sent>2024-04-30T23:59:59-00:00</sent>" in xml
    assert "<effective>2024-05-01T00:00:00-00:00</effective>" in xml
    assert "<expires>2024-05-01T12:30:00-05:30</expires>" in xml
    assert not re.search(r"\d(Z|\.\d+)[<+-]", xml)
    assert schema_errors(to_cap_xml(alert)) == []


def test_numbers_round_trip_without_noise_or_exponents() -> None:
    points = [(0.1 + 0.2, 1e-7), (-0.0, 179.99999999999997), (45.0, 100.5), (0.1 + 0.2, 1e-7)]
    alert = _minimal(
        areas=[
            {
                "area_desc": "A",
                "polygons": [{"points": points}],
                "circles": [{"lat": 1.5, "lon": -2.25, "radius_km": 1e-5}],
                "altitude": 1e20,
                "ceiling": 2.5e20,
            }
        ]
    )
    xml = to_cap_xml(alert).decode()
    assert "0.30000000000000004,0.0000001" in xml
    assert "<circle>1.5,-2.25 0.00001</circle>" in xml
    assert "<altitude>100000000000000000000</altitude>" in xml
    assert not re.search(r"\de[-+]", xml)
    assert schema_errors(xml.encode()) == []
    assert parse_cap(xml.encode()).alert == alert


def test_element_order_follows_the_schema() -> None:
    alert = _minimal(
        language="zh-CN",
        response_types=["Prepare"],
        audience="public",
        effective="2024-05-01T08:00:00+08:00",
        headline="h",
        web="http://x.org/",
        resources=[{"resource_desc": "r", "mime_type": "text/plain", "size": 3}],
        areas=[{"area_desc": "A", "geocodes": [{"value_name": "GB", "value": "371700"}]}],
    )
    alert.codes = ["c1", "c2"]
    alert.note = "n"
    xml = to_cap_xml(alert)
    assert schema_errors(xml) == []
    tags = re.findall(rb"<(\w+)>", xml)
    assert tags.index(b"code") < tags.index(b"note") < tags.index(b"info")
    assert parse_cap(xml).alert == alert


def test_text_that_xml_cannot_carry_is_refused() -> None:
    alert = _minimal(headline="bell \x07")
    with pytest.raises(AlertInvalid, match="headline"):
        to_cap_xml(alert)


def test_values_cap_cannot_carry_are_refused_on_write() -> None:
    alert = _minimal(language="zh_CN")
    with pytest.raises(AlertInvalid) as info:
        to_cap_xml(alert)
    assert info.value.errors[0].loc == "/alert/info/language"
    assert "zh_CN" in info.value.errors[0].msg


def test_non_finite_numbers_are_refused() -> None:
    alert = _minimal(areas=[{"area_desc": "A", "altitude": float("inf")}])
    with pytest.raises(AlertInvalid, match="altitude"):
        to_cap_xml(alert)


def test_parsed_cap_is_frozen() -> None:
    parsed = parse_cap(_cap(HEADER + _info()))
    assert isinstance(parsed, ParsedCap)
    with pytest.raises(AttributeError):
        parsed.version = "1.1"  # type: ignore[misc]
