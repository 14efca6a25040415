"""Rosters named by ``[subscribers] import``: imported at start, once per content.

An office that exports its roster from another system drops the file where
the configuration names it; warnd imports it at start through the same
validation as ``warnd subscribers import`` and records the file's SHA-256,
so a restart with an unchanged file does no work. Rejected rows are logged
with their line, id and reasons; the good rows around them are kept.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from redis.asyncio import Redis

from warnd.errors import BadRequest, ConfigError
from warnd.imported_files import changed_files
from warnd.keys import Keys
from warnd.subscriber_io import Importer, ImportSummary, format_of_path, import_lines
from warnd.subscribers import SubscriberContext, SubscriberStore

log = structlog.get_logger("warnd.subscribers")

_LOGGED_REJECTIONS = 20


async def import_configured(
    redis: Redis,
    keys: Keys,
    store: SubscriberStore,
    context: SubscriberContext,
    files: list[Path],
    *,
    force: bool = False,
) -> list[tuple[Path, ImportSummary]]:
    """Import each roster whose content changed since its last import."""
    done: list[tuple[Path, ImportSummary]] = []
    digests = keys.subscriber_import_digests
    async for f in changed_files(
        redis, digests, files, setting="[subscribers] import", force=force
    ):
        path, data = f.path, f.data
        if context.registry is None or len(context.registry) == 0:
            raise ConfigError(
                f"[subscribers] import: {path}: the area registry is empty;"
                " name the area files in [areas] import (or run `warnd areas import`)"
            )
        importer = Importer(store, context, csv_locs=format_of_path(path.name) == "csv")
        try:
            summary = await import_lines(data.splitlines(), format_of_path(path.name), importer)
        except BadRequest as exc:  # the file as a whole (its CSV header) is unusable
            problems = [f"[subscribers] import: {path}: {exc.detail}"]
            problems += [f"{path}: line {e.line}: {e.msg}" for e in exc.errors]
            raise ConfigError(problems[0], problems=problems) from None
        for rejection in summary.rejections[:_LOGGED_REJECTIONS]:
            log.warning(
                "subscribers.row_rejected",
                file=str(path),
                line=rejection.line,
                id=rejection.id,
                errors=[f"{e.loc}: {e.msg}" for e in rejection.errors],
            )
        if summary.rejected:
            log.warning("subscribers.file_rejections", file=str(path), rejected=summary.rejected)
        # Recorded even with rejections: the rows that were good are in, and the
        # same file would be rejected the same way again.
        await f.mark_imported(redis, digests)
        done.append((path, summary))
    return done
