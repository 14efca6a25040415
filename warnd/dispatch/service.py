"""The dispatch service of one process: planners, channel workers, housekeeping.

``setup_dispatch(app, settings)`` adds one ``cleanup_ctx`` entry to the
aiohttp app (after the channels, areas and subscribers are up). It
registers the ingest hook (every accepted alert, from the API or a feed,
is queued for planning), plans alerts left unplanned by a crash, and runs:

* planners (2 per process) on the ``accepted`` stream;
* one :class:`~warnd.dispatch.worker.ChannelWorker` pool per channel;
* housekeeping: due retries to their lanes, expiry of queued deliveries of
  expired alerts, acknowledgement deadlines (escalation), and the provider
  queries that settle deliveries in doubt (:mod:`warnd.dispatch.reconcile`).

It also installs the receipt sink, so ``/v1/receipts/{channel}`` moves
deliveries. With ``[dispatch] enabled = false`` the process only queues
accepted alerts (another process plans and sends them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import cast

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from warnd.api.context import SERVICES, Services
from warnd.api.metrics import METRICS
from warnd.api.receipts import CHANNELS, RECEIPT_SINK
from warnd.channel import CallbackReceipt, Channel
from warnd.dispatch.ack import Acks
from warnd.dispatch.lanes import PLANNERS, Entry, Lanes
from warnd.dispatch.meter import Meter
from warnd.dispatch.planner import Planner
from warnd.dispatch.ratelimit import RateLimiter
from warnd.dispatch.receipts import ReceiptApplier
from warnd.dispatch.states import DeliveryState
from warnd.dispatch.store import DeliveryStore
from warnd.dispatch.worker import OUTAGE, ChannelWorker, _pause
from warnd.render import Renderer
from warnd.settings import Settings
from warnd.taxonomy import Taxonomy

log = structlog.get_logger("warnd.dispatch")

PLANNER_TASKS = 2


def ack_base_url(settings: Settings) -> str:
    if settings.dispatch.ack_url:
        return settings.dispatch.ack_url
    if settings.receipts_url:
        return settings.receipts_url.split("/v1/", 1)[0]
    host = settings.http.host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard is not an address to call
        host = "127.0.0.1"
    return f"http://{host}:{settings.http.port}"


class Dispatcher:
    """Everything dispatch runs in one process."""

    def __init__(
        self,
        svc: Services,
        channels: Mapping[str, Channel],
        renderer: Renderer,
        meter: Meter | None = None,
    ) -> None:
        self.svc = svc
        self.settings = svc.settings.dispatch
        self.channels = dict(channels)
        self.store = DeliveryStore(svc.redis, svc.keys)
        self.lanes = Lanes(svc.redis, svc.keys)
        self.limiter = RateLimiter(svc.redis, svc.keys)
        self.planner = Planner(
            svc.redis,
            svc.keys,
            self.settings,
            self.store,
            self.lanes,
            svc.store,
            svc.subscribers,
            svc.matcher,
            renderer,
            self.channels,
        )
        self.acks = Acks(
            svc.redis,
            svc.keys,
            self.store,
            self.lanes,
            self.settings,
            svc.matcher.groups,
            svc.subscribers,
            self.channels,
            self.planner.variant_for,
            ack_base_url(svc.settings),
        )
        self.receipts = ReceiptApplier(svc.redis, svc.keys, self.store, self.lanes, self.acks)
        self.receipts.meter = meter
        self.workers = {
            name: ChannelWorker(
                ch,
                self.store,
                self.lanes,
                self.limiter,
                self.settings,
                on_ack_sent=self.acks.sent,
                ack_lines=self.acks.lines,
                meter=meter,
            )
            for name, ch in self.channels.items()
        }
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._hooked = False

    # ---------------------------------------------------------- lifecycle
    def hook(self) -> None:
        if not self._hooked:
            self.svc.intake.on_accepted.append(self.planner.on_accepted)
            self._hooked = True

    async def start(self) -> None:
        self.hook()
        if not self.settings.enabled:
            return
        await self.planner.recover()
        for i in range(PLANNER_TASKS):
            self._tasks.append(asyncio.create_task(self._plan_loop(own=i == 0)))
        for worker in self.workers.values():
            self._tasks.append(asyncio.create_task(worker.run(self._stop)))
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        log.info(
            "dispatch.started",
            consumer=self.lanes.consumer,
            channels=sorted(self.workers),
            concurrency=self.settings.concurrency,
        )

    async def stop(self) -> None:
        if self._hooked:
            with contextlib.suppress(ValueError):
                self.svc.intake.on_accepted.remove(self.planner.on_accepted)
            self._hooked = False
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=40)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        self._tasks.clear()

    # ---------------------------------------------------------- planning
    async def _plan_loop(self, *, own: bool) -> None:
        stream = [self.svc.keys.dispatch_accepted]
        idle = int(self.settings.reclaim_idle * 1000)
        todo: list[Entry] = []
        if own:
            with contextlib.suppress(*OUTAGE, RedisError):
                todo = await self.lanes.read(stream, PLANNERS, block_ms=None, own=True)
        last_reclaim = 0.0
        while not self._stop.is_set():
            try:
                if not todo and time.monotonic() - last_reclaim > self.settings.sweep_interval:
                    last_reclaim = time.monotonic()
                    todo = await self.lanes.reclaim(stream[0], PLANNERS, idle, count=5)
                if not todo:
                    todo = await self.lanes.read(stream, PLANNERS, block_ms=500)
                while todo and not self._stop.is_set():
                    entry = todo.pop(0)
                    await self._plan_entry(entry)
            except OUTAGE as exc:
                log.warning("dispatch.redis_unavailable", during="planning", error=str(exc))
                todo = []
                await _pause(self._stop, 0.5)
            except RedisError as exc:
                log.warning("dispatch.plan_failed", error=str(exc))
                self.lanes.forget_groups()
                todo = []
                await _pause(self._stop, 0.5)

    async def _plan_entry(self, entry: Entry) -> None:
        renew = asyncio.create_task(self._renew(entry))
        try:
            await self.planner.handle(entry)
        except (*OUTAGE, RedisError):
            raise
        except Exception as exc:  # one bad alert must not stop planning of the others
            log.exception("dispatch.plan_crashed", alert_id=entry.fields.get("a"), error=repr(exc))
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
        await self.lanes.done(entry, PLANNERS)

    async def _renew(self, entry: Entry) -> None:
        idle = int(self.settings.reclaim_idle * 1000)
        while True:
            await asyncio.sleep(self.settings.reclaim_idle / 4)
            with contextlib.suppress(RedisError, *OUTAGE):
                await self.lanes.renew(entry.stream, PLANNERS, [entry.id], idle // 5)

    # ---------------------------------------------------------- housekeeping
    async def _housekeeping(self) -> None:
        last_sweep = 0.0
        while not self._stop.is_set():
            try:
                now = time.time()
                await self.lanes.promote_due(now)
                await self.acks.escalate_due(now)
                for worker in self.workers.values():
                    if worker.reconciler is not None:
                        await worker.reconciler.run_due(now)
                if time.monotonic() - last_sweep > self.settings.sweep_interval:
                    last_sweep = time.monotonic()
                    await self.expire_due(now)
            except (*OUTAGE, RedisError) as exc:
                log.warning("dispatch.housekeeping_failed", error=str(exc))
            await _pause(self._stop, self.settings.poll_interval)

    async def expire_due(self, now: float | None = None) -> int:
        """Queued deliveries of alerts past their expiry become ``expired``."""
        now = time.time() if now is None else now
        redis = self.svc.redis
        due = cast(
            list[str], await redis.zrangebyscore(self.svc.keys.dispatch_plans, "-inf", now, 0, 50)
        )
        total = 0
        for aid in due:
            n = await self.store.sweep(aid, DeliveryState.QUEUED.code, DeliveryState.EXPIRED)
            await redis.zrem(self.svc.keys.dispatch_plans, aid)
            if n:
                log.info("delivery.expired", alert_id=aid, deliveries=n)
            total += n
        return total

    async def requeue(self, aid: str, states: Sequence[DeliveryState]) -> int:
        """Operator retry: deliveries in ``states`` go back to the lanes, attempts reset."""
        codes = "".join(s.code for s in states)
        st = await self.store.states(aid)
        table = await self.store.batch_table(aid)
        wanted = [
            k
            for k, (base, n, _) in enumerate(table)
            if any(c in codes for c in st[base : base + n])
        ]
        total = 0
        for k0 in range(0, len(wanted), 100):
            got = await self.store.batches(aid, wanted[k0 : k0 + 100])
            for b in got.values():
                offs = [j for j in range(b.size) if st[b.base + j : b.base + j + 1] in codes]
                moved = await self.store.move(b, offs, codes, DeliveryState.QUEUED, bump="r")
                if moved.offsets:
                    await self.store.add_events(
                        aid, [(b.base + j, {"event": "requeued"}) for j in moved.offsets]
                    )
                    await self.lanes.push(
                        b.channel, b.priority, aid, b.index, ",".join(map(str, moved.offsets))
                    )
                    total += len(moved.offsets)
        log.info("dispatch.requeued", alert_id=aid, deliveries=total)
        return total

    async def apply_receipts(self, channel: str, receipts: Sequence[CallbackReceipt]) -> None:
        await self.receipts(channel, receipts)


DISPATCH = web.AppKey("dispatch", Dispatcher)

_RENDERERS: dict[tuple[object, ...], Renderer] = {}


def shared_renderer(settings: Settings, taxonomy: Taxonomy) -> Renderer:
    """The compiled templates, loaded once per process for the same render settings
    (dispatch renders with it; the console prefills warning texts from it)."""
    return _renderer(settings, taxonomy)


def _renderer(settings: Settings, taxonomy: Taxonomy) -> Renderer:
    """The compiled templates, loaded once per process for the same render settings."""
    key = (settings.render.model_dump_json(), str(settings.taxonomy_file), len(taxonomy))
    found = _RENDERERS.get(key)
    if found is None:
        found = _RENDERERS[key] = Renderer.load(settings, taxonomy)
        if len(_RENDERERS) > 8:
            _RENDERERS.pop(next(iter(_RENDERERS)))
    return found


def setup_dispatch(app: web.Application, settings: Settings) -> None:
    """Run dispatch with the app (after services, channels, areas and subscribers)."""

    async def sink(channel: str, receipts: Sequence[CallbackReceipt]) -> None:
        await app[DISPATCH].apply_receipts(channel, receipts)

    app[RECEIPT_SINK] = sink

    async def dispatch_ctx(app: web.Application) -> AsyncIterator[None]:
        svc = app[SERVICES]
        renderer = _renderer(settings, svc.taxonomy)
        channels: Mapping[str, Channel] = app.get(CHANNELS) or {}  # type: ignore[arg-type]
        dispatcher = Dispatcher(svc, channels, renderer, meter=app.get(METRICS))
        app[DISPATCH] = dispatcher
        await dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.stop()

    app.cleanup_ctx.append(dispatch_ctx)


__all__ = ["DISPATCH", "Dispatcher", "setup_dispatch", "shared_renderer"]
