"""Items of a feed → :meth:`Intake.accept`, or → quarantine with the reason.

Whatever the kind, each item becomes the same :class:`~warnd.model.Alert`
and enters through the same door as an operator's alert, as the feed's
principal (``feed:<name>``), so deduplication by sender + identifier,
Update/Cancel chains, expiry and audit are the existing ones. An item that
cannot be read, fails CAP validation, names a hazard warnd does not know,
comes from an untrusted sender or falls outside the feed's areas is
quarantined (kept with its reason and body, counted once, audited as a
refused alert) while the rest of the document is still processed.

An ``<alerts>`` root wrapping CAP ``<alert>`` elements (SMHI publishes
that way) is accepted here, unlike at the operator API: each inner alert
is validated and ingested on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import structlog
from lxml import etree

from warnd.api.context import Services
from warnd.auth import Principal, Role
from warnd.cap import parse_cap
from warnd.cap._safe import parse_safely
from warnd.errors import AlertInvalid, FieldError, WarndError
from warnd.feeds.cma import CmaMapper, Signal, build_alert, extract_items
from warnd.feeds.config import FeedSettings
from warnd.feeds.state import Current, FeedState, MetSignals
from warnd.identifiers import alert_id
from warnd.model import CAP11_NS, CAP12_NS, Alert, MsgType, Reference

log = structlog.get_logger("warnd.feeds")


@dataclass(slots=True)
class ItemResult:
    """What became of one item."""

    item: str
    alert_id: str | None = None
    created: bool = False
    state: str | None = None
    warnings: list[str] = field(default_factory=list)
    error: WarndError | None = None

    @property
    def rejected(self) -> bool:
        return self.error is not None

    def as_dict(self) -> dict[str, object]:
        if self.error is not None:
            return {
                "item": self.item,
                "rejected": True,
                "reason": self.error.detail,
                "errors": [e.as_dict() for e in self.error.errors[:20]],
            }
        return {
            "item": self.item,
            "id": self.alert_id,
            "created": self.created,
            "state": self.state,
            "warnings": self.warnings,
        }


@dataclass(slots=True)
class Tally:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    results: list[ItemResult] = field(default_factory=list)

    def add(self, result: ItemResult) -> None:
        self.results.append(result)
        if result.rejected:
            self.rejected += 1
        elif result.created:
            self.accepted += 1
        else:
            self.duplicates += 1

    def extend(self, other: Tally) -> None:
        for r in other.results:
            self.add(r)


class FeedIngest:
    """Turns one feed's documents into accepted alerts and quarantined items."""

    def __init__(self, name: str, feed: FeedSettings, services: Services) -> None:
        self.name = name
        self.feed = feed
        self.svc = services
        self.source = f"feed:{name}"
        self.principal = Principal(
            token_id=self.source, name=self.source, role=Role.OPERATOR, areas=tuple(feed.areas)
        )
        self.state = FeedState(services.redis, services.keys, name)
        self.signals = MetSignals(services.redis, services.keys)
        self._mapper = CmaMapper(feed, services.taxonomy) if feed.kind.is_cma else None

    # -------------------------------------------------------- quarantine

    async def reject(self, item: str, error: WarndError, body: bytes) -> ItemResult:
        """Quarantine an item; audited and counted the first time its body is seen."""
        if await self.state.quarantine(
            item=item, reason=error.detail, errors=error.errors, body=body
        ):
            await self.svc.intake.refuse(error, source=self.source, body=body)
            log.warning("feed.item_rejected", feed=self.name, item=item, reason=error.detail)
        return ItemResult(item=item, error=error)

    # --------------------------------------------------------------- CAP

    async def cap_document(
        self, body: bytes, *, item: str, audit_duplicates: bool = False
    ) -> Tally:
        """One CAP document (or an ``<alerts>`` wrapper of several)."""
        tally = Tally()
        try:
            docs = self._split(body)
        except WarndError as err:
            tally.add(await self.reject(item, err, body))
            return tally
        for i, doc in enumerate(docs):
            label = item if len(docs) == 1 else f"{item} alert {i + 1}"
            tally.add(await self._cap(doc, label, audit_duplicates))
        return tally

    def _split(self, body: bytes) -> list[bytes]:
        limit = self.feed.max_bytes
        tree = parse_safely(body, max_bytes=limit)
        root = tree.getroot()
        qname = etree.QName(root)
        if qname.localname == "alerts" and qname.namespace in (CAP12_NS, CAP11_NS):
            inner = [
                etree.tostring(el, encoding="utf-8", xml_declaration=True)
                for el in root
                if isinstance(el.tag, str) and etree.QName(el).localname == "alert"
            ]
            if not inner:
                raise AlertInvalid(
                    "an <alerts> wrapper with no <alert> inside",
                    errors=[FieldError(loc="/alerts", msg="no <alert> elements")],
                )
            return inner
        return [body]

    async def _cap(self, doc: bytes, label: str, audit_duplicates: bool) -> ItemResult:
        try:
            parsed = parse_cap(doc, max_bytes=self.feed.max_bytes)
        except WarndError as err:
            return await self.reject(label, err, doc)
        alert = parsed.alert
        if not self.feed.trusts(alert.sender):
            untrusted = AlertInvalid(
                f"sender {alert.sender!r} is not trusted by feed {self.name!r}",
                errors=[
                    FieldError(
                        loc="/alert/sender",
                        msg=f"trusted senders: {', '.join(self.feed.trusted_senders)}",
                    )
                ],
            )
            return await self.reject(label, untrusted, doc)
        self._defaults(alert)
        return await self._accept(alert, label, doc, list(parsed.warnings), audit_duplicates)

    def _defaults(self, alert: Alert) -> None:
        """The feed's default hazard and level, for infos that give none."""
        tax = self.svc.taxonomy
        for info in alert.infos:
            if (
                self.feed.hazard
                and info.hazard is None
                and tax.match_event(info.event, info.event_codes) is None
            ):
                info.hazard = self.feed.hazard
            if self.feed.level is not None and info.level is None:
                try:
                    found = tax.classify_detail(info).level
                except ValueError:
                    found = None
                if found is None:
                    info.level = self.feed.level

    async def _accept(
        self, alert: Alert, label: str, body: bytes, warnings: list[str], audit_duplicates: bool
    ) -> ItemResult:
        if not audit_duplicates:
            # A polled feed lists the same items poll after poll: known ones
            # are counted, not re-audited as duplicates every minute.
            known = await self.svc.store.get(alert_id(alert.sender, alert.identifier))
            if known is not None:
                return ItemResult(
                    item=label,
                    alert_id=known.id,
                    created=False,
                    state=known.effective_state().value,
                    warnings=known.warnings,
                )
        try:
            acc = await self.svc.intake.accept(
                alert, principal=self.principal, source=self.source, warnings=warnings
            )
        except WarndError as err:
            return await self.reject(label, err, body)
        rec = acc.record
        if acc.created:
            log.info("feed.item_accepted", feed=self.name, item=label, alert_id=rec.id)
        return ItemResult(
            item=label,
            alert_id=rec.id,
            created=acc.created,
            state=rec.effective_state().value,
            warnings=rec.warnings,
        )

    # --------------------------------------------------------------- CMA

    async def met_document(self, body: bytes, *, item: str) -> Tally:
        """A met-warning document; MalformedDocument if it is not one at all."""
        assert self._mapper is not None  # noqa: S101 - only cma feeds call this
        items = extract_items(
            body, self.feed.kind, self.feed.items_path(), max_bytes=self.feed.max_bytes
        )
        tally = Tally()
        readable: list[tuple[Signal, str, bytes]] = []
        for i, raw in enumerate(items):
            raw_body = json.dumps(raw, ensure_ascii=False, sort_keys=True).encode()
            name = raw.get(self.feed.cma_mapping.station) or raw.get("stationName") or "?"
            label = f"{item} item {i + 1} ({name})"
            try:
                readable.append((self._mapper.signal(raw), label, raw_body))
            except WarndError as err:
                tally.add(await self.reject(label, err, raw_body))
        # Oldest first, warnings before the relieves that end them.
        readable.sort(key=lambda t: (t[0].issued, t[0].relieve))
        for signal, label, raw_body in readable:
            tally.add(await self._signal(signal, label, raw_body))
        return tally

    async def _signal(self, signal: Signal, label: str, body: bytes) -> ItemResult:
        sender = self.feed.sender
        assert sender is not None  # noqa: S101 - required for cma feeds
        identifier = signal.identifier()
        known = await self.svc.store.get(alert_id(sender, identifier))
        if known is not None:
            return ItemResult(
                item=label,
                alert_id=known.id,
                state=known.effective_state().value,
                warnings=known.warnings,
            )
        current = await self.signals.current(sender, signal.slot)
        try:
            if signal.relieve:
                if current is None or current.sent > signal.issued:
                    raise AlertInvalid(
                        f"解除 (relieve) of the {signal.hazard.zh} signal for {signal.area_desc},"
                        f" but no {signal.hazard.zh} signal of {sender} for that area is known"
                        " to be in force",
                        errors=[FieldError(loc="/", msg="nothing to cancel")],
                    )
                alert = build_alert(
                    signal,
                    self.feed,
                    msg_type=MsgType.CANCEL,
                    references=[_ref(sender, current)],
                )
            elif (
                current is not None
                and current.identifier != identifier
                and current.sent < signal.issued
                and (current.expires is None or current.expires > signal.issued)
            ):
                # A new signal for the same area and hazard (upgrade, downgrade,
                # 继续发布) replaces the one in force: a CAP Update of it.
                alert = build_alert(
                    signal, self.feed, msg_type=MsgType.UPDATE, references=[_ref(sender, current)]
                )
            else:
                alert = build_alert(signal, self.feed)
        except WarndError as err:
            return await self.reject(label, err, body)
        result = await self._accept(alert, label, body, [], audit_duplicates=True)
        if result.rejected:
            return result
        if signal.relieve and current is not None:
            await self.signals.clear(sender, signal.slot, current.identifier)
        elif not signal.relieve:
            await self.signals.set_current(
                sender,
                signal.slot,
                Current(identifier=identifier, sent=signal.issued, expires=signal.expires),
            )
        return result


def _ref(sender: str, current: Current) -> Reference:
    return Reference(sender=sender, identifier=current.identifier, sent=current.sent)
