"""Subscribers: who receives warnings, validated, and kept compactly in Redis.

A subscriber is a person, a group chat, a display board or a mailbox: an
id, a name, one administrative area (canonical code, see
:mod:`warnd.adcodes`), an optional WGS-84 point, a language, its groups
(``[groups.<key>]`` of the configuration) and at most one endpoint per
channel:

=========  ==============================================================
``sms``    a mobile number, stored E.164 (``13800138000`` → ``+8613800138000``)
``email``  a mailbox address
``wechat`` the *name* of a WeChat Work group-robot webhook configured in
           ``[channels.wechat]`` — never the URL with its secret key
``board``  a display-board id as the board gateway knows it
=========  ==============================================================

Storage
    Records are packed JSON arrays in :data:`BUCKETS` Redis hashes
    (``<prefix>:sub:<bucket>``, bucket = CRC-32 of the id), ~100 bytes a
    subscriber; a sorted set per county, ``<prefix>:subs:area:<county>``
    scored by the area code padded to 12 digits (so any township or village
    is a score range), and a set per group, ``<prefix>:subs:group:<key>``,
    index them. About 350 bytes of Redis memory a subscriber in all. Every write appends the ids
    it touched to the stream ``<prefix>:subs:changes``, from which other
    processes keep their in-memory match index current
    (:meth:`SubscriberStore.changes_since`). Upserts are idempotent: writing
    the same record again changes nothing and records no change.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import math
import re
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from redis.asyncio import Redis

from warnd.adcodes import normalise_code
from warnd.groups import CHANNELS, ChannelName, GroupTable
from warnd.keys import Keys
from warnd.wire import Wire

if TYPE_CHECKING:
    from warnd.areas import AreaRegistry

BUCKETS = 512
"""Number of record hashes; fixed, because a record's bucket is derived from its id."""
CHANGES_MAXLEN = 20_000
"""Change-stream entries kept (one per written batch); a reader further behind reloads."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^[^@\s,;<>\"]{{1,64}}@{_LABEL}(?:\.{_LABEL})+$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
# BCP 47, the subset warnd needs: language, optional script, region, variants.
_LANG = re.compile(
    r"^(?P<lang>[A-Za-z]{2,3})(?:-(?P<script>[A-Za-z]{4}))?(?:-(?P<region>[A-Za-z]{2}|\d{3}))?"
    r"(?P<variants>(?:-(?:[A-Za-z0-9]{5,8}|\d[A-Za-z0-9]{3}))*)$"
)
_PHONE_PUNCT = re.compile(r"[\s()\-.]")
_CN_MOBILE = re.compile(
    cast(Any, phonenumbers.PhoneMetadata.metadata_for_region("CN")).mobile.national_number_pattern
)
_SMS_TYPES = frozenset(
    {
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    }
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ------------------------------------------------------------ field checks


_RESERVED_IDS = frozenset({"import", "export"})
"""Path segments of the bulk endpoints under /v1/subscribers/."""


def check_id(value: str) -> str:
    if value in _RESERVED_IDS:
        raise ValueError(f"id {value!r} is reserved (a path of the subscriber API)")
    if not _ID.match(value):
        raise ValueError(
            f"id {value!r}: 1 to 64 of A-Z a-z 0-9 _ . : @ - (starting with a letter or digit)"
        )
    return value


def normalise_phone(value: str) -> str:
    """An SMS number in E.164; mainland numbers may omit +86."""
    if _CN_MOBILE.fullmatch(value):  # already a bare mainland mobile number (11 digits)
        return "+86" + value
    text = _PHONE_PUNCT.sub("", value.strip())
    national = text
    for prefix in ("+86", "0086", "86"):
        if national.startswith(prefix) and len(national) == len(prefix) + 11:
            national = national[len(prefix) :]
            break
    if len(national) == 11 and national.isdigit() and _CN_MOBILE.fullmatch(national):
        return "+86" + national  # the common case, without the full parser
    try:
        number = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{value!r} is not a phone number ({exc._msg})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{value!r} is not a valid phone number")
    if phonenumbers.number_type(number) not in _SMS_TYPES:
        raise ValueError(f"{value!r} is not a mobile number: SMS needs one")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@functools.lru_cache(maxsize=4096)
def normalise_language(value: str) -> str:
    """A BCP 47 tag in its canonical case: ``zh-hans`` → ``zh-Hans``, ``ug-cn`` → ``ug-CN``."""
    m = _LANG.match(value.strip().replace("_", "-"))
    if m is None:
        raise ValueError(
            f"{value!r} is not a BCP 47 language tag"
            " (e.g. zh-Hans, zh-Hant, en, ug, bo, ii, za, mn)"
        )
    out = m["lang"].lower()
    if m["script"]:
        out += "-" + m["script"].title()
    if m["region"]:
        out += "-" + m["region"].upper()
    return out + m["variants"].lower()


def check_email(value: str) -> str:
    text = value.strip()
    if len(text) > 254 or not _EMAIL.match(text):
        raise ValueError(f"{value!r} is not an email address")
    local, _, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}"


def check_wechat(value: str) -> str:
    text = value.strip()
    if "://" in text or "key=" in text:
        raise ValueError(
            "give the name of a robot webhook configured in [channels.wechat],"
            " not its URL: the URL carries the secret key"
        )
    if not _REF.match(text):
        raise ValueError(f"webhook name {value!r}: 1 to 64 of A-Z a-z 0-9 _ . : -")
    return text


def check_board(value: str) -> str:
    text = value.strip()
    if not _REF.match(text):
        raise ValueError(f"board id {value!r}: 1 to 64 of A-Z a-z 0-9 _ . : -")
    return text


# ------------------------------------------------------------------ models


@dataclass(slots=True)
class SubscriberContext:
    """What validation checks a subscriber against (passed as pydantic context)."""

    registry: AreaRegistry | None = None
    groups: GroupTable | None = None
    scope: tuple[str, ...] = ()
    """Area prefixes the writer may touch; empty: everywhere."""
    _extent: dict[str, tuple[float, float, float, float] | None] = field(default_factory=dict)
    _codes: dict[str, str | None] = field(default_factory=dict)

    def known_code(self, area: str) -> str | None:
        """The canonical code of a registered area within scope, else ``None``; cached."""
        try:
            return self._codes[area]
        except KeyError:
            pass
        try:
            code: str | None = normalise_code(area)
        except ValueError:
            code = None
        if code is not None and self.registry is not None and code not in self.registry:
            code = None
        if code is not None and self.scope and not any(code.startswith(p) for p in self.scope):
            code = None
        if len(self._codes) < 1_000_000:
            self._codes[area] = code
        return code

    def extent(self, code: str) -> tuple[float, float, float, float] | None:
        """The area's (inherited) boundary box, widened by ~5 km; cached."""
        if code not in self._extent:
            geom = self.registry.geometry(code) if self.registry is not None else None
            if geom is None or geom.is_empty:
                self._extent[code] = None
            else:
                x0, y0, x1, y1 = geom.bounds
                self._extent[code] = (x0 - 0.05, y0 - 0.05, x1 + 0.05, y1 + 0.05)
        return self._extent[code]


def _ctx(info: ValidationInfo) -> SubscriberContext | None:
    ctx = info.context
    return ctx if isinstance(ctx, SubscriberContext) else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeoPoint(_Model):
    """A WGS-84 point: longitude first, as GeoJSON and shapely have it."""

    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)


class Endpoints(_Model):
    """At most one address per channel."""

    sms: str | None = Field(default=None, description="Mobile number, E.164")
    email: str | None = None
    wechat: str | None = Field(default=None, description="Robot webhook name, not its URL")
    board: str | None = Field(default=None, description="Display-board id")

    _sms = field_validator("sms")(lambda v: None if v is None else normalise_phone(v))
    _email = field_validator("email")(lambda v: None if v is None else check_email(v))
    _wechat = field_validator("wechat")(lambda v: None if v is None else check_wechat(v))
    _board = field_validator("board")(lambda v: None if v is None else check_board(v))

    def items(self) -> list[tuple[ChannelName, str]]:
        return [(c, a) for c in CHANNELS if (a := getattr(self, c.value)) is not None]

    @property
    def mask(self) -> int:
        return sum(c.bit for c, _ in self.items())


class Subscriber(_Model):
    """A person, group chat, display board or mailbox that receives warnings."""

    id: str
    name: str = Field(default="", max_length=100)
    area: str = Field(description="Administrative code (stored canonical: 371721, 371721001…)")
    point: GeoPoint | None = Field(default=None, description="WGS-84 location, if known")
    language: str = "zh-Hans"
    groups: list[str] = Field(default_factory=list, max_length=16)
    endpoints: Endpoints = Field(default_factory=Endpoints)

    _id = field_validator("id")(check_id)
    _language = field_validator("language")(normalise_language)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("name must not contain control characters")
        return value.strip()

    @field_validator("area")
    @classmethod
    def _area(cls, value: str, info: ValidationInfo) -> str:
        code = normalise_code(value)
        ctx = _ctx(info)
        if ctx is not None and ctx.registry is not None and code not in ctx.registry:
            raise ValueError(f"unknown area code {value!r}: not in the area registry")
        if ctx is not None and ctx.scope and not any(code.startswith(p) for p in ctx.scope):
            raise ValueError(f"area {code} is outside your area scope ({', '.join(ctx.scope)})")
        return code

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: list[str], info: ValidationInfo) -> list[str]:
        ctx = _ctx(info)
        out = list(dict.fromkeys(g.strip() for g in value if g.strip()))
        if ctx is not None and ctx.groups is not None:
            unknown = [g for g in out if g not in ctx.groups]
            if unknown:
                raise ValueError(
                    f"unknown group {', '.join(map(repr, unknown))}"
                    f" (configured: {', '.join(ctx.groups.keys())})"
                )
        return out

    @model_validator(mode="after")
    def _whole(self, info: ValidationInfo) -> Subscriber:
        if not self.endpoints.items():
            raise ValueError("no endpoint: give at least one of sms, email, wechat, board")
        ctx = _ctx(info)
        if ctx is not None and self.point is not None:
            box = ctx.extent(self.area)
            p = self.point
            if box is not None and not (box[0] <= p.lon <= box[2] and box[1] <= p.lat <= box[3]):
                raise ValueError(
                    f"point (lon {p.lon}, lat {p.lat}) lies outside area {self.area}:"
                    " longitude and latitude swapped, or the wrong area?"
                )
        return self


# ------------------------------------------------------------ bulk fast path


def fast_row(row: Mapping[str, Any], ctx: SubscriberContext) -> Row | None:
    """The stored form of a plainly valid flat row, checked without pydantic, or ``None``.

    ``row`` has the CSV column names as keys (``groups`` a list, empty
    values absent or ``None``). The checks are the model's own functions,
    so a row passes here only when it passes :class:`Subscriber` (and comes
    out as :func:`row_of` would store it); on anything doubtful this returns
    ``None`` and the caller validates with the model, which reports every
    problem. Bulk imports spend most of their time validating; this makes a
    valid row several times cheaper.
    """
    try:
        sub_id = row.get("id")
        area = row.get("area")
        if not isinstance(sub_id, str) or not isinstance(area, str):
            return None
        check_id(sub_id)
        name = row.get("name") or ""
        if not isinstance(name, str) or len(name) > 100 or _CONTROL.search(name):
            return None
        code = ctx.known_code(area)
        if code is None:
            return None
        language = normalise_language(row.get("language") or "zh-Hans")
        given: Sequence[str] = row.get("groups") or ()
        if len(given) == 1:  # the common case, without building a generator
            groups = [given[0].strip()] if given[0].strip() else []
        else:
            groups = list(dict.fromkeys(g.strip() for g in given if g.strip()))
        if len(groups) > 16:
            return None
        known = ctx.groups
        if known is not None:
            for g in groups:
                if g not in known:
                    return None
        lon, lat = row.get("lon"), row.get("lat")
        x = y = None
        if lon is not None or lat is not None:
            if lon is None or lat is None:
                return None
            x, y = float(lon), float(lat)
            if not (-180 <= x <= 180 and -90 <= y <= 90):
                return None
            box = ctx.extent(code)
            if box is not None and not (box[0] <= x <= box[2] and box[1] <= y <= box[3]):
                return None
        get = row.get
        sms, email, wechat, board = get("sms"), get("email"), get("wechat"), get("board")
        if sms is None and email is None and wechat is None and board is None:
            return None
        return [
            _VERSION,
            name.strip(),
            code,
            x,
            y,
            language,
            ",".join(groups),
            normalise_phone(sms) if sms is not None else None,
            check_email(email) if email is not None else None,
            check_wechat(wechat) if wechat is not None else None,
            check_board(board) if board is not None else None,
        ]
    except (ValueError, TypeError, AttributeError):
        return None


# ------------------------------------------------------- compact encoding

_VERSION = 1


Row = list[Any]
"""A record as stored: ``[version, name, area, lon, lat, language, "g1,g2",
sms, email, wechat, board]`` (JSON in Redis)."""


def row_of(sub: Subscriber) -> Row:
    """The stored form of a subscriber."""
    e = sub.endpoints
    p = sub.point
    return [
        _VERSION,
        sub.name,
        sub.area,
        p.lon if p else None,
        p.lat if p else None,
        sub.language,
        ",".join(sub.groups),
        e.sms,
        e.email,
        e.wechat,
        e.board,
    ]


def encode(row: Row) -> str:
    """The packed Redis form: a JSON array, fields by position.

    Exactly what ``json`` makes of it (stored records are compared as text,
    so a record written again must come out the same); a row of the usual
    types is formatted directly, twice as fast as the generic encoder.
    """
    if len(row) == 11 and type(row[0]) is int:
        v, name, area, lon, lat, language, groups, sms, email, wechat, board = row
        if (
            type(name) is str
            and type(area) is str
            and type(language) is str
            and type(groups) is str
            and (lon is None or (type(lon) is float and _isfinite(lon)))
            and (lat is None or (type(lat) is float and _isfinite(lat)))
            and (sms is None or type(sms) is str)
            and (email is None or type(email) is str)
            and (wechat is None or type(wechat) is str)
            and (board is None or type(board) is str)
        ):
            return (
                f"[{v},{_esc(name)},{_esc(area)},"
                f"{'null' if lon is None else _float_repr(lon)},"
                f"{'null' if lat is None else _float_repr(lat)},"
                f"{_esc(language)},{_esc(groups)},"
                f"{'null' if sms is None else _esc(sms)},"
                f"{'null' if email is None else _esc(email)},"
                f"{'null' if wechat is None else _esc(wechat)},"
                f"{'null' if board is None else _esc(board)}]"
            )
    return _dumps(row)


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_esc = json.encoder.encode_basestring  # the string form _dumps uses (ensure_ascii=False)
_float_repr = float.__repr__  # the number form _dumps uses for finite floats
_isfinite = math.isfinite


@dataclass(frozen=True, slots=True)
class Packed:
    """A decoded record, without the cost of validating it again."""

    id: str
    name: str
    area: str
    lon: float | None
    lat: float | None
    language: str
    groups: tuple[str, ...]
    sms: str | None
    email: str | None
    wechat: str | None
    board: str | None

    @classmethod
    def decode(cls, sub_id: str, raw: str) -> Packed:
        return cls.of(sub_id, json.loads(raw))

    @classmethod
    def of(cls, sub_id: str, row: Row) -> Packed:
        groups = tuple(row[6].split(",")) if row[6] else ()
        return cls(sub_id, row[1], row[2], row[3], row[4], row[5], groups, *row[7:11])

    def address(self, channel: ChannelName) -> str | None:
        return cast(str | None, getattr(self, channel.value))

    @property
    def channel_mask(self) -> int:
        return sum(c.bit for c in CHANNELS if getattr(self, c.value) is not None)

    def subscriber(self) -> Subscriber:
        point = GeoPoint(lon=self.lon, lat=self.lat) if self.lon is not None else None
        return Subscriber.model_construct(
            id=self.id,
            name=self.name,
            area=self.area,
            point=point,
            language=self.language,
            groups=list(self.groups),
            endpoints=Endpoints.model_construct(
                sms=self.sms, email=self.email, wechat=self.wechat, board=self.board
            ),
        )


def _row_of_packed(p: Packed) -> Row:
    return [_VERSION, p.name, p.area, p.lon, p.lat, p.language, ",".join(p.groups),
            p.sms, p.email, p.wechat, p.board]  # fmt: skip


def area_score(code: str) -> int:
    """A canonical code padded to 12 digits: its own key, and where its range starts."""
    return int(code.ljust(12, "0"))


def bucket_of(sub_id: str) -> int:
    return zlib.crc32(sub_id.encode()) % BUCKETS


# ------------------------------------------------------------------- store


@dataclass(slots=True)
class WriteResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    change_id: str | None = None
    """Change-stream entry of this write; ``None`` when nothing changed."""


Listener = Callable[[Sequence[str], Sequence["Row"], Sequence[str], str], None]
"""Called after a write with the ids and stored rows written, the ids deleted, the change id."""


class SubscriberStore:
    """Subscriber records and their area/group indexes in Redis."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Have ``listener`` told of every write made through this store."""
        self._listeners.append(listener)

    async def get(self, sub_id: str) -> Packed | None:
        raw = await self._redis.hget(self._keys.subscriber_bucket(bucket_of(sub_id)), sub_id)
        return Packed.decode(sub_id, cast(str, raw)) if raw else None

    async def get_many(self, ids: Sequence[str]) -> dict[str, Packed]:
        """Records of these ids (missing ones left out), one round trip per bucket set."""
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for sub_id in ids:
            by_bucket[bucket_of(sub_id)].append(sub_id)
        pipe = self._redis.pipeline(transaction=False)
        for bucket, members in by_bucket.items():
            pipe.hmget(self._keys.subscriber_bucket(bucket), members)
        out: dict[str, Packed] = {}
        for members, values in zip(by_bucket.values(), await pipe.execute(), strict=True):
            for sub_id, raw in zip(members, values, strict=True):
                if raw:
                    out[sub_id] = Packed.decode(sub_id, raw)
        return out

    async def rows_many(self, ids: Sequence[str]) -> list[Row | None]:
        """Records of these ids as stored (see :data:`Row`), aligned with ``ids``
        (``None`` for a missing one): the bulk read of dispatch.

        One round trip (an HMGET per bucket touched, pipelined) and one JSON
        decode for the lot instead of one per record: no object per record.
        """
        crc = zlib.crc32
        by_bucket: dict[int, list[int]] = defaultdict(list)
        for i, sub_id in enumerate(ids):
            by_bucket[crc(sub_id.encode()) % BUCKETS].append(i)
        pipe = self._redis.pipeline(transaction=False)
        for bucket, where in by_bucket.items():
            pipe.hmget(self._keys.subscriber_bucket(bucket), [ids[i] for i in where])
        raws: list[str | None] = [None] * len(ids)
        for where, values in zip(by_bucket.values(), await pipe.execute(), strict=True):
            for i, raw in zip(where, values, strict=True):
                raws[i] = raw or None
        present = [r for r in raws if r is not None]
        if not present:
            return [None] * len(ids)
        try:
            decoded: list[Row] = json.loads("[" + ",".join(present) + "]")
        except ValueError:
            decoded = [json.loads(r) for r in present]  # raises on the damaged record
        if len(decoded) != len(present):  # a record that is not one JSON value
            decoded = [json.loads(r) for r in present]
        rows = iter(decoded)
        return [None if r is None else next(rows) for r in raws]

    async def upsert_many(self, subs: Sequence[Subscriber]) -> WriteResult:
        """Create or replace these subscribers (the last one wins for a repeated id)."""
        return await self.upsert_rows([(s.id, row_of(s)) for s in subs])

    async def upsert_rows(self, items: Sequence[tuple[str, Row]]) -> WriteResult:
        """:meth:`upsert_many` for records already in their stored form (bulk import).

        Two round trips: the records now stored under these ids (an HMGET per
        bucket), then the changed records (an HSET per bucket), their new
        index entries (a ZADD per county, an SADD per group), the index
        entries they leave and one change-stream entry listing their ids.
        """
        latest: dict[str, Row] = {}
        for sub_id, row in items:
            latest[sub_id] = row
        crc = zlib.crc32
        by_bucket: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
        for sub_id in latest:
            id_b = sub_id.encode()
            by_bucket[crc(id_b) % BUCKETS].append((sub_id, id_b))
        bucket_keys = {b: self._keys.subscriber_bucket(b).encode() for b in by_bucket}
        reads = Wire()
        for bucket, members in by_bucket.items():
            reads.add(b"HMGET", bucket_keys[bucket], *[id_b for _, id_b in members])
        olds = await reads.execute(self._redis)
        result = WriteResult()
        writes = Wire()
        add_area: dict[str, list[bytes]] = defaultdict(list)
        add_group: dict[str, list[bytes]] = defaultdict(list)
        scores: dict[str, bytes] = {}
        written_ids: list[str] = []
        written_rows: list[Row] = []
        loads = json.loads
        for (bucket, members), values in zip(by_bucket.items(), olds, strict=True):
            fields: list[bytes] = [b"HSET", bucket_keys[bucket]]
            for (sub_id, id_b), before_raw in zip(members, values, strict=True):
                row = latest[sub_id]
                raw = encode(row)
                if before_raw == raw:
                    result.unchanged += 1
                    continue
                before = loads(before_raw) if before_raw else None
                if before is None:
                    result.created += 1
                else:
                    result.updated += 1
                    self._unindex(writes, sub_id, before, keep=row)
                fields.append(id_b)
                fields.append(raw.encode())
                area = row[2]
                if before is None or before[2] != area:
                    score = scores.get(area)
                    if score is None:
                        score = scores[area] = b"%d" % area_score(area)
                    add_area[area[:6]] += (score, id_b)
                groups = row[6]
                if groups:
                    old_groups = before[6].split(",") if before is not None and before[6] else ()
                    for g in groups.split(","):
                        if g not in old_groups:
                            add_group[g].append(id_b)
                written_ids.append(sub_id)
                written_rows.append(row)
            if len(fields) > 2:
                writes.add(*fields)
        for county, scored in add_area.items():
            writes.add(b"ZADD", self._keys.subscribers_in_area(county).encode(), *scored)
        for key, group_members in add_group.items():
            writes.add(b"SADD", self._keys.subscribers_in_group(key).encode(), *group_members)
        if written_ids:
            writes.add(
                b"XADD",
                self._keys.subscriber_changes.encode(),
                *(b"MAXLEN", b"~", b"%d" % CHANGES_MAXLEN, b"*"),
                *(b"ids", "\n".join(written_ids).encode()),
            )
            replies = await writes.execute(self._redis)
            result.change_id = cast(str, replies[-1])
            self._tell(written_ids, written_rows, (), result.change_id)
        return result

    async def delete_many(self, ids: Sequence[str]) -> WriteResult:
        """Remove these subscribers from their record hash and every index."""
        old = await self.get_many(list(dict.fromkeys(ids)))
        result = WriteResult(deleted=len(old))
        if not old:
            return result
        pipe = self._redis.pipeline(transaction=False)
        for sub_id, before in old.items():
            pipe.hdel(self._keys.subscriber_bucket(bucket_of(sub_id)), sub_id)
            self._unindex(pipe, sub_id, _row_of_packed(before), keep=None)
        self._log_change(pipe, list(old))
        replies = await pipe.execute()
        result.change_id = cast(str, replies[-1])
        self._tell((), (), list(old), result.change_id)
        return result

    def _unindex(self, pipe: Any, sub_id: str, before: Row, keep: Row | None) -> None:
        if keep is None or keep[2][:6] != before[2][:6]:
            pipe.zrem(self._keys.subscribers_in_area(before[2]), sub_id)
        kept = keep[6].split(",") if keep is not None and keep[6] else []
        for g in before[6].split(",") if before[6] else ():
            if g not in kept:
                pipe.srem(self._keys.subscribers_in_group(g), sub_id)

    def _log_change(self, pipe: Any, ids: list[str]) -> None:
        pipe.xadd(
            self._keys.subscriber_changes,
            {"ids": "\n".join(ids)},
            maxlen=CHANGES_MAXLEN,
            approximate=True,
        )

    def _tell(
        self, ids: Sequence[str], rows: Sequence[Row], deleted: Sequence[str], change_id: str
    ) -> None:
        for listener in self._listeners:
            listener(ids, rows, deleted, change_id)

    # ------------------------------------------------------------- reading

    async def scan(self, *, buckets_per_trip: int = 8) -> AsyncIterator[list[Packed]]:
        """Every record, a few buckets at a time (for loading and export)."""
        for start in range(0, BUCKETS, buckets_per_trip):
            pipe = self._redis.pipeline(transaction=False)
            for bucket in range(start, min(start + buckets_per_trip, BUCKETS)):
                pipe.hgetall(self._keys.subscriber_bucket(bucket))
            batch: list[Packed] = []
            for fields in await pipe.execute():
                batch.extend(Packed.decode(k, v) for k, v in fields.items())
            if batch:
                yield batch

    async def scan_rows(
        self, *, buckets_per_trip: int = 8
    ) -> AsyncIterator[tuple[list[str], list[list[Any]]]]:
        """Every record as stored (ids, decoded JSON arrays): the cheap way to load."""
        loads = json.loads
        for start in range(0, BUCKETS, buckets_per_trip):
            pipe = self._redis.pipeline(transaction=False)
            for bucket in range(start, min(start + buckets_per_trip, BUCKETS)):
                pipe.hgetall(self._keys.subscriber_bucket(bucket))
            ids: list[str] = []
            rows: list[list[Any]] = []
            for fields in await pipe.execute():
                ids.extend(fields)
                rows.extend(loads(v) for v in fields.values())
            if ids:
                yield ids, rows

    async def count(self) -> int:
        pipe = self._redis.pipeline(transaction=False)
        for bucket in range(BUCKETS):
            pipe.hlen(self._keys.subscriber_bucket(bucket))
        return sum(await pipe.execute())

    async def ids_in_area(self, code: str) -> set[str]:
        """Ids of the subscribers in canonical ``code`` and below (a county or finer,
        or exactly a province/prefecture-level code)."""
        lo = area_score(code)
        hi = lo + 10 ** (12 - len(code)) - 1 if len(code) >= 6 else lo
        found = await self._redis.zrangebyscore(self._keys.subscribers_in_area(code), lo, hi)
        return set(cast(list[str], found))

    async def ids_in_group(self, key: str) -> set[str]:
        return cast(set[str], await self._redis.smembers(self._keys.subscribers_in_group(key)))

    async def last_change(self) -> str:
        """The newest change-stream id (``0-0`` when there is none)."""
        entries = await self._redis.xrevrange(self._keys.subscriber_changes, count=1)
        return cast(str, entries[0][0]) if entries else "0-0"

    async def changes_since(
        self, after: str, *, limit: int = 1000
    ) -> tuple[list[tuple[str, list[str]]], bool]:
        """Change entries after ``after`` (oldest first, at most ``limit``): ``(entries, gap)``.

        Each entry is ``(change id, subscriber ids)``. ``gap`` is true when
        entries after ``after`` were trimmed away: the reader must reload.
        """
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self._redis.xrange(self._keys.subscriber_changes, min=after, count=limit + 1),
        )
        if after != "0-0" and (not entries or entries[0][0] != after):
            return [], await self.last_change() != after
        out = [
            (entry_id, [i for i in fields.get("ids", "").split("\n") if i])
            for entry_id, fields in entries
            if entry_id != after
        ]
        return out[:limit], False
