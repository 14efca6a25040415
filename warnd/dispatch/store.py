"""Delivery records: compact per-alert arrays in Redis, changed only by Lua.

Everything about an alert's deliveries lives under its hash tag
``{a:<id>}`` (``<prefix>:{a:<id>}:d:<part>``):

``plan``    hash: how planning went (status, totals, t0, expiry, halt, priority)
``b``       hash: batch ``k`` → JSON (channel, variant, addresses, …); ``h<k>``
            → its area histogram
``msg``     hash: variant number → the rendered message (JSON)
``st`` ``at`` ``ar`` ``tm`` ``bx``  the per-delivery arrays (see :mod:`warnd.dispatch.lua`)
``areas``   list: area codes by index; ``ai`` hash: code → index
``cnt``     hash: ``<area>|<channel>|<state>`` → deliveries (exact)
``ev``      hash: delivery number → its event log (only deliveries that did
            more than queued → sending → sent: retries, errors, acks, escalation)
``ack``     hash: subscriber id → delivery id that was acknowledged
``sx`` ``tb`` ``rb`` ``cv``  coverage: each delivery's subscriber number, the
            subscribers targeted and reached (bitmaps), per-area counters
            (see :mod:`warnd.dispatch.lua` and :mod:`warnd.coverage`)

About 9 bytes of state plus the address per delivery; a batch of 1,000 is
claimed, and its outcome written, by one script call each. A delivery's id
is ``<alert id>.<batch>.<offset>``: no address in it, so it can be logged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from redis.asyncio import Redis

from warnd.dispatch import lua
from warnd.dispatch.states import DeliveryState
from warnd.groups import CHANNELS
from warnd.keys import Keys
from warnd.wire import Wire, script_reply

_CHANNEL_INDEX = {c.value: i for i, c in enumerate(CHANNELS)}


NOSUB = 0xFFFFFFFF
"""Subscriber number of a delivery that reaches no subscriber of the alert
(a supervisor's reminder): never counted in coverage."""


def now_ms() -> int:
    return int(time.time() * 1000)


def pack_numbers(numbers: Sequence[int] | npt.NDArray[np.integer[Any]]) -> bytes:
    """Subscriber numbers as the ``sx`` array stores them (4 bytes each, big-endian)."""
    return np.asarray(numbers, dtype=">u4").tobytes()


def _run_start(numbers: bytes, n: int) -> str:
    """The first of ``n`` packed subscriber numbers when they are ``f, f+1, …`` in
    order (coverage then counts the batch as a range), else ``""``."""
    if not n or len(numbers) != 4 * n:
        return ""
    arr = np.frombuffer(numbers, dtype=">u4").astype(np.int64)
    first = int(arr[0])
    if first + n - 1 >= NOSUB or (n > 1 and not bool(np.all(np.diff(arr) == 1))):
        return ""
    return str(first)


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    """A delivery id taken apart."""

    alert_id: str
    batch: int
    offset: int

    @classmethod
    def parse(cls, delivery_id: str) -> DeliveryRef | None:
        parts = delivery_id.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        if not parts[0].isalnum() or len(parts[0]) > 64:
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]))

    def __str__(self) -> str:
        return f"{self.alert_id}.{self.batch}.{self.offset}"


def _head(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class JoinedAddresses:
    """A batch's addresses as one UTF-8 text, a line each: the stored form's
    body, made without a string per address when they come packed."""

    body: bytes
    count: int
    parts: tuple[Sequence[str] | npt.NDArray[Any], ...] = ()
    """What it was joined from, in order: text, or packed bytes (``S<n>``)."""

    @classmethod
    def of(cls, *parts: Sequence[str] | npt.NDArray[Any]) -> JoinedAddresses:
        """``parts`` (each a list of text or an array of packed addresses) joined."""
        chunks = [
            b"\n".join(p.tolist()) if isinstance(p, np.ndarray) else "\n".join(p).encode()
            for p in parts
            if len(p)
        ]
        return cls(b"\n".join(chunks), sum(len(p) for p in parts), parts)

    def text(self) -> list[str]:
        """The addresses one by one (from the parts: an address may hold a line break)."""
        return [
            a.decode() if isinstance(a, bytes) else a
            for p in self.parts
            for a in (p.tolist() if isinstance(p, np.ndarray) else p)
        ]


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch of deliveries: one message (variant) to up to ``batch_size`` endpoints."""

    alert_id: str
    index: int
    base: int
    channel: str
    variant: int
    addresses: list[str]
    hist: str
    """``<area index>:<count>,…``: the batch's areas, for the counters."""
    priority: str = "lo"
    kind: str = "alert"
    """``alert``, ``notice`` (解除/更新 to those reached), ``escalation``, ``supervisor``."""
    group: str = ""
    """The group whose members must acknowledge (``ack_required``), else empty."""
    subscribers: list[str] = field(default_factory=list)
    """Subscriber ids (kept for acknowledgement batches only)."""
    refs: list[str] = field(default_factory=list)
    """The delivery each one escalates or reports on (escalation, supervisor)."""

    @property
    def size(self) -> int:
        return len(self.addresses)

    def delivery_id(self, offset: int) -> str:
        return f"{self.alert_id}.{self.index}.{offset}"

    @staticmethod
    def encode(
        channel: str,
        variant: int,
        addresses: Sequence[str] | JoinedAddresses,
        *,
        priority: str,
        kind: str = "alert",
        group: str = "",
        subscribers: Sequence[str] = (),
        refs: Sequence[str] = (),
    ) -> bytes:
        """The stored form: a JSON header line, then one address per line.

        Joining and splitting lines is several times cheaper than a JSON list
        of a thousand strings. A batch with an address that holds a line
        break (none of warnd's validated addresses does) is stored as one
        JSON document with the addresses under ``"a"``, as warnd did before.
        ``addresses`` may come joined already (:class:`JoinedAddresses`).
        """
        doc: dict[str, Any] = {"c": channel, "v": variant, "p": priority}
        if kind != "alert":
            doc["x"] = kind
        if group:
            doc["g"] = group
        if subscribers:
            doc["s"] = list(subscribers)
        if refs:
            doc["r"] = list(refs)
        joined = (
            addresses if isinstance(addresses, JoinedAddresses) else JoinedAddresses.of(addresses)
        )
        if joined.count and joined.body.count(b"\n") == joined.count - 1:
            return _head(doc) + b"\n" + joined.body
        doc["a"] = joined.text()
        return _head(doc)

    @classmethod
    def decode(cls, alert_id: str, index: int, base: int, raw: str, hist: str) -> BatchRecord:
        head, newline, body = raw.partition("\n")
        doc = json.loads(head)
        addresses = body.split("\n") if newline else doc["a"]
        return cls(
            alert_id=alert_id,
            index=index,
            base=base,
            channel=doc["c"],
            variant=int(doc["v"]),
            addresses=addresses,
            hist=hist or "",
            priority=doc.get("p", "lo"),
            kind=doc.get("x", "alert"),
            group=doc.get("g", ""),
            subscribers=doc.get("s", []),
            refs=doc.get("r", []),
        )


@dataclass(frozen=True, slots=True)
class Moved:
    """What a state move changed."""

    offsets: Sequence[int]
    """Offsets moved (in the batch): a ``range`` when the whole batch moved."""
    stale: list[int]
    """``sending`` offsets of a reclaimed entry (claim only)."""
    attempts: list[int]
    """Attempts of the moved offsets after the move (when asked)."""
    to: DeliveryState


def _offsets(raw: str) -> list[int]:
    """A script's comma-separated numbers (offsets, attempts)."""
    return [int(x) for x in raw.split(",") if x]


def _moved_offsets(raw: str, n: int) -> Sequence[int]:
    """The offsets a script moved; ``*``, the whole batch of ``n``, stays a
    ``range`` (no list of a thousand offsets is made, compared or encoded)."""
    return range(n) if raw == "*" else _offsets(raw)


@dataclass(slots=True)
class PendingMove:
    """A :meth:`DeliveryStore.move_on` queued on a wire, read after it has run."""

    store: DeliveryStore
    batch: BatchRecord
    to: DeliveryState
    at: int
    """Position of its reply on the wire (-1: nothing to move)."""
    keys: list[str]
    args: list[str | int]

    async def result(self, replies: Sequence[Any]) -> Moved:
        if self.at < 0:
            return Moved([], [], [], self.to)
        res = await script_reply(replies[self.at], self.store._move, self.keys, self.args)
        return self.store._moved(self.batch, res)


class DeliveryStore:
    """Reads and writes the delivery records of alerts."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._move = redis.register_script(lua.MOVE)
        self._claim = redis.register_script(lua.CLAIM)
        self._sweep = redis.register_script(lua.SWEEP)
        self._add = redis.register_script(lua.ADD_BATCH)
        self._find = redis.register_script(lua.FIND)
        self._events = redis.register_script(lua.APPEND_EVENTS)
        self._variant = redis.register_script(lua.VARIANT)
        self._read = redis.register_script(lua.READ)

    def key(self, alert_id: str, part: str) -> str:
        return self.keys.deliveries(alert_id, part)

    def _script_keys(self, alert_id: str) -> list[str]:
        return [self.key(alert_id, p) for p in lua.KEY_PARTS]

    def _coverage_keys(self, alert_id: str) -> list[str]:
        return [self.key(alert_id, p) for p in lua.COVERAGE_PARTS]

    # ---------------------------------------------------------------- plan
    async def plan(self, alert_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(self.key(alert_id, "plan")))

    async def start_plan(self, alert_id: str, fields: Mapping[str, str | int]) -> bool:
        """Record the plan's fixed fields unless a plan exists; ``False`` if one did."""
        key = self.key(alert_id, "plan")
        created = bool(await self.redis.hsetnx(key, "t0", now_ms()))
        if created:
            await self.redis.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
        return created

    async def set_plan(self, alert_id: str, **fields: str | int) -> None:
        await self.redis.hset(self.key(alert_id, "plan"), mapping=fields)  # type: ignore[arg-type]

    # ------------------------------------------------------------- variants
    async def variant(self, alert_id: str, key: str, message: Mapping[str, Any]) -> int:
        """The number of a rendered message, storing it the first time."""
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        v = await self._variant(keys=[self.key(alert_id, "msg")], args=[key, body])
        return int(cast(int, v))

    async def message(self, alert_id: str, variant: int) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.key(alert_id, "msg"), str(variant))
        return json.loads(cast(str, raw)) if raw else None

    # -------------------------------------------------------------- batches
    async def add_batch(
        self,
        alert_id: str,
        record_json: str | bytes,
        channel: str,
        area_codes: Sequence[str],
        area_of: Sequence[int] | npt.NDArray[np.integer[Any]],
        *,
        state: DeliveryState = DeliveryState.QUEUED,
        pipe: Any = None,
        numbers: bytes = b"",
    ) -> Any:
        """Append a batch (``area_of[i]`` indexes ``area_codes``); returns ``[k, base]``
        (or queues the call on ``pipe``). ``numbers``: each delivery's subscriber
        number (:func:`pack_numbers`), for coverage.

        The per-delivery arguments go as bytes (area index, subscriber number)
        with the counts per area made here, so the script has no loop over
        deliveries (see :data:`lua.ADD_BATCH`).
        """
        local = np.asarray(area_of, dtype=np.int64)
        counts = np.bincount(local, minlength=len(area_codes))  # raises for a negative index
        if len(counts) > len(area_codes):
            raise ValueError("area_of must index area_codes")
        keys = [
            *self._script_keys(alert_id),
            self.key(alert_id, "b"),
            self.key(alert_id, "ai"),
            *self._coverage_keys(alert_id),
        ]
        args: list[str | bytes | int] = [
            now_ms(),
            record_json,
            len(area_of),
            state.code,
            channel,
            _CHANNEL_INDEX.get(channel, 255),
            ",".join(area_codes),
            local.astype(">u2" if len(area_codes) > 256 else np.uint8).tobytes(),
            numbers,  # bytes go to Redis as they are
            ",".join(map(str, counts.tolist())),
            _run_start(numbers, len(local)),
        ]
        return await self._add(keys=keys, args=args, client=pipe)

    async def batches(self, alert_id: str, indexes: Sequence[int]) -> dict[int, BatchRecord]:
        if not indexes:
            return {}
        fields: list[str] = []
        for k in indexes:
            fields += [str(k), f"h{k}"]
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.key(alert_id, "b"), fields)
        await self._read(keys=self._script_keys(alert_id), args=[0, "b", *indexes], client=pipe)
        values, table = await pipe.execute()
        out: dict[int, BatchRecord] = {}
        for i, k in enumerate(indexes):
            raw, hist = values[2 * i], values[2 * i + 1]
            base = int(table[3 * i])
            if raw is None or base < 0:
                continue
            out[k] = BatchRecord.decode(alert_id, k, base, raw, hist or "")
        return out

    async def batch_table(self, alert_id: str) -> list[tuple[int, int, str]]:
        """(base, size, channel) of every batch, in order."""
        nb = int(await self.redis.hget(self.key(alert_id, "plan"), "nb") or 0)
        out: list[tuple[int, int, str]] = []
        for k0 in range(0, nb, 2000):
            ks = list(range(k0, min(nb, k0 + 2000)))
            res = cast(
                list[Any], await self._read(keys=self._script_keys(alert_id), args=[0, "b", *ks])
            )
            for i in range(len(ks)):
                out.append((int(res[3 * i]), int(res[3 * i + 1]), str(res[3 * i + 2])))
        return out

    # ---------------------------------------------------------------- moves
    def _move_call(
        self,
        batch: BatchRecord,
        offs: str,
        frm: str,
        to: DeliveryState,
        *,
        bump: str = "",
        claim: bool = False,
        reclaimed: bool = False,
        want_attempts: bool = False,
        now: int | None = None,
    ) -> tuple[list[str], list[str | int]]:
        keys = [*self._script_keys(batch.alert_id), *self._coverage_keys(batch.alert_id)]
        args: list[str | int] = [
            now if now is not None else now_ms(),
            batch.base,
            batch.size,
            batch.channel,
            offs,
            frm,
            to.code,
            bump,
            batch.hist,
            "1" if claim else "0",
            "1" if reclaimed else "0",
            "1" if want_attempts else "0",
        ]
        return keys, args

    @staticmethod
    def _moved(batch: BatchRecord, res: Any) -> Moved:
        moved, stale, ats, _count, final = cast(list[Any], res)
        return Moved(
            _moved_offsets(str(moved), batch.size),
            _offsets(str(stale)),
            _offsets(str(ats)),
            DeliveryState.of(str(final)),
        )

    async def move(
        self,
        batch: BatchRecord,
        offsets: Sequence[int] | None,
        frm: str,
        to: DeliveryState,
        *,
        bump: str = "",
        claim: bool = False,
        reclaimed: bool = False,
        want_attempts: bool = False,
        now: int | None = None,
    ) -> Moved:
        """Move deliveries of ``batch`` (``None``: all) whose state code is in ``frm``."""
        offs = "*" if offsets is None else ",".join(map(str, offsets))
        if offs == "":
            return Moved([], [], [], to)
        keys, args = self._move_call(
            batch,
            offs,
            frm,
            to,
            bump=bump,
            claim=claim,
            reclaimed=reclaimed,
            want_attempts=want_attempts,
            now=now,
        )
        return self._moved(batch, await self._move(keys=keys, args=args))

    def move_on(
        self,
        wire: Wire,
        batch: BatchRecord,
        offsets: Sequence[int] | None,
        frm: str,
        to: DeliveryState,
        *,
        bump: str = "",
    ) -> PendingMove:
        """Queue a :meth:`move` on ``wire`` (sent with the other commands there);
        :meth:`PendingMove.result` reads its reply once the wire has run."""
        offs = "*" if offsets is None else ",".join(map(str, offsets))
        keys, args = self._move_call(batch, offs, frm, to, bump=bump)
        at = wire.script(self._move, keys, args) if offs else -1
        return PendingMove(self, batch, to, at, keys, args)

    def _claim_call(
        self, alert_id: str, k: int, offsets: Sequence[int] | None, reclaimed: bool, known: bool
    ) -> tuple[list[str], list[str | int]]:
        offs = "*" if offsets is None else ",".join(map(str, offsets))
        keys = [
            *self._script_keys(alert_id),
            *self._coverage_keys(alert_id),
            self.key(alert_id, "b"),
        ]
        return keys, [now_ms(), k, offs, "1" if reclaimed else "0", "0" if known else "1"]

    @staticmethod
    def _claimed(
        res: Any, alert_id: str, k: int, known: BatchRecord | None
    ) -> tuple[BatchRecord | None, Moved]:
        res = cast(list[Any], res)
        if int(res[2]) < 0:
            return None, Moved([], [], [], DeliveryState.SENDING)
        raw, hist, base, n, _channel, moved, stale, ats, _count, to = res
        batch = known or BatchRecord.decode(alert_id, k, int(base), str(raw), str(hist))
        n = int(n)
        return batch, Moved(
            _moved_offsets(str(moved), n),
            _offsets(str(stale)),
            _offsets(str(ats)),
            DeliveryState.of(str(to)),
        )

    async def claim(
        self,
        alert_id: str,
        k: int,
        offsets: Sequence[int] | None,
        *,
        reclaimed: bool = False,
        known: BatchRecord | None = None,
        wire: Wire | None = None,
    ) -> tuple[BatchRecord | None, Moved]:
        """Read batch ``k`` (unless ``known``) and claim its queued deliveries
        (``offsets``; ``None``: all) in one call: they become ``sending``, or
        ``cancelled`` / ``expired`` when the alert was halted or has expired.
        ``(None, nothing moved)`` when there is no such batch.

        ``wire``: commands to send in the same round trip, before the claim
        (they run whatever the claim's outcome; their replies stay on it).
        """
        keys, args = self._claim_call(alert_id, k, offsets, reclaimed, known is not None)
        if wire is None or not len(wire):
            res = await self._claim(keys=keys, args=args)
        else:
            at = wire.script(self._claim, keys, args)
            replies = await wire.execute(self.redis, raise_on_error=False)
            res = await script_reply(replies[at], self._claim, keys, args)
        return self._claimed(res, alert_id, k, known)

    async def sweep(self, alert_id: str, frm: str, to: DeliveryState, *, chunk: int = 50) -> int:
        """Move every delivery of an alert in a state of ``frm`` to ``to``, a few
        batches per script call so Redis is never blocked for long."""
        total = 0
        nb = int(await self.redis.hget(self.key(alert_id, "plan"), "nb") or 0)
        for k0 in range(0, nb, chunk):
            moved = await self._sweep(
                keys=[*self._script_keys(alert_id), *self._coverage_keys(alert_id)],
                args=[now_ms(), k0, min(nb, k0 + chunk), frm, to.code],
            )
            total += int(cast(int, moved))
        return total

    # -------------------------------------------------------------- reading
    async def states(self, alert_id: str, start: int = 0, end: int = -1) -> str:
        return cast(str, await self.redis.getrange(self.key(alert_id, "st"), start, end))

    async def find(
        self, alert_id: str, states: Sequence[DeliveryState], start: int, limit: int
    ) -> tuple[list[int], int | None]:
        """Delivery numbers in one of ``states`` from ``start``; and where to go on."""
        codes = "".join(s.code for s in states)
        res = cast(
            list[int],
            await self._find(keys=[self.key(alert_id, "st")], args=[codes, start, limit]),
        )
        *found, nxt = (int(x) for x in res)
        return found, (None if nxt < 0 else nxt)

    async def slots(self, alert_id: str, numbers: Sequence[int]) -> list[tuple[str, int, int, str]]:
        """State code, attempts, ms since t0 and area code of each delivery number."""
        if not numbers:
            return []
        res = cast(
            list[Any], await self._read(keys=self._script_keys(alert_id), args=[0, "d", *numbers])
        )
        return [
            (str(res[4 * i]), int(res[4 * i + 1]), int(res[4 * i + 2]), str(res[4 * i + 3]))
            for i in range(len(numbers))
        ]

    async def areas_of(self, batch: BatchRecord) -> list[str]:
        """The area code of each delivery of a batch."""
        res = await self._read(
            keys=self._script_keys(batch.alert_id), args=[0, "a", batch.base, batch.size]
        )
        return [str(x) for x in cast(list[Any], res)]

    async def numbers(self, alert_id: str, start: int, n: int) -> list[int]:
        """The subscriber numbers of deliveries ``start .. start+n-1`` (coverage);
        shorter when the plan recorded none."""
        if n <= 0:
            return []
        res = await self._read(
            keys=[*self._script_keys(alert_id), self.key(alert_id, "sx")],
            args=[0, "x", start, n],
        )
        return [int(x) for x in cast(list[Any], res)]

    async def counters(self, alert_id: str) -> dict[str, int]:
        raw = cast(dict[str, str], await self.redis.hgetall(self.key(alert_id, "cnt")))
        return {k: int(v) for k, v in raw.items() if int(v)}

    async def remember_provider_ids(self, channel: str, ids: Mapping[str, str]) -> None:
        """Entries asynchronous receipts find their delivery by (kept three days):
        provider message id → delivery id, or one per request (see
        :mod:`warnd.dispatch.correlate`)."""
        wire = Wire()
        self.provider_ids_on(wire, channel, ids)
        await wire.execute(self.redis)

    def provider_ids_on(self, wire: Wire, channel: str, ids: Mapping[str, str]) -> None:
        """Queue :meth:`remember_provider_ids` on ``wire``."""
        if not ids:
            return
        day = time.strftime("%Y%m%d", time.gmtime())
        key = self.keys.provider_ids(channel, day).encode()
        # A thousand fields a batch: packed here in one go, not argument by
        # argument by redis-py (lengths in characters are bytes for ASCII).
        fields = "".join([f"${len(p)}\r\n{p}\r\n${len(d)}\r\n{d}\r\n" for p, d in ids.items()])
        if fields.isascii():
            head = b"*%d\r\n$4\r\nHSET\r\n$%d\r\n%b\r\n" % (2 + 2 * len(ids), len(key), key)
            wire.add_packed(head + fields.encode())
        else:
            wire.add(b"HSET", key, *(x.encode() for pair in ids.items() for x in pair))
        wire.add(b"EXPIRE", key, b"%d" % (3 * 86400))

    # --------------------------------------------------------------- events
    async def add_events(
        self, alert_id: str, events: Sequence[tuple[int, Mapping[str, Any]]], pipe: Any = None
    ) -> None:
        """Append events to deliveries' logs (``(delivery number, event)``)."""
        if not events:
            return
        args: list[str] = []
        t = round(time.time(), 3)
        for n, event in events:
            args += [str(n), json.dumps({"at": t, **event}, ensure_ascii=False)]
        await self._events(keys=[self.key(alert_id, "ev")], args=args, client=pipe)

    async def events(
        self, alert_id: str, numbers: Sequence[int]
    ) -> dict[int, list[dict[str, Any]]]:
        if not numbers:
            return {}
        raw = await self.redis.hmget(self.key(alert_id, "ev"), [str(n) for n in numbers])
        out: dict[int, list[dict[str, Any]]] = {}
        for n, text in zip(numbers, raw, strict=True):
            if text:
                out[n] = [json.loads(line) for line in cast(str, text).split("\n") if line]
        return out

    async def all_keys(self, alert_id: str) -> list[str]:
        parts = (*lua.KEY_PARTS, "b", "ai", "msg", "ev", "ack", *lua.COVERAGE_PARTS)
        return [self.key(alert_id, p) for p in parts]
