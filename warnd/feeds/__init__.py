"""Automatic feed ingestion: poll and receive upstream warnings.

Every item a feed delivers — a CAP document, an entry of an ATOM/RSS
index, a station of a Chinese met-warning feed, a pushed CAP message —
becomes a :class:`warnd.model.Alert` and goes through
:meth:`warnd.ingest.Intake.accept` like an operator's alert, so
deduplication, Update/Cancel chains, expiry and audit are the same.
Broken items are quarantined with their reason; failing feeds back off.

Modules, one job each:

``config``   the ``[feeds.<name>]`` settings and ``warnd check`` rules
``fetch``    the HTTP client: conditional requests, gzip, size and time limits
``index``    ATOM and RSS indexes → entries linking to CAP
``cma``      met-warning JSON/XML → alerts (hazard, level, 防御指南, 解除)
``state``    feed health, validators, seen entries and quarantine in Redis
``lease``    one poller per feed across processes
``items``    one item → Intake, or → quarantine
``poller``   polling per kind, backoff, supervised tasks (``FeedHub``)

This package imports only ``config`` eagerly, because the settings model
needs it; import the others from their modules.
"""

from warnd.feeds.config import CmaMapping, FeedKind, FeedSettings, check_feeds

__all__ = ["CmaMapping", "FeedKind", "FeedSettings", "check_feeds"]
