"""``warnd report ALERT_ID``: an alert's coverage from the command line.

Uses the store ``serve`` uses (the configured Redis, or the running
daemon's embedded one), so it shows the same numbers as
``GET /v1/alerts/{id}/coverage`` — live during a fan-out, final after it.
``text`` is a table for a terminal; ``json``, ``csv`` and ``html`` are
what the API returns.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from warnd.api.context import Services
from warnd.coverage.models import LEVELS
from warnd.coverage.render import to_csv, to_html, to_text
from warnd.redis_server import open_redis
from warnd.settings import Settings
from warnd.taxonomy import Taxonomy


def add_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    rep = with_config(sub.add_parser("report", help="an alert's coverage per area"))
    rep.add_argument("alert_id", metavar="ALERT_ID")
    rep.add_argument("--format", choices=["text", "json", "csv", "html"], default="text")
    rep.add_argument("--level", choices=list(LEVELS), help="only areas of this level")
    rep.add_argument(
        "--chain", action="store_true", help="the alert's chain (Alert → Updates → Cancel)"
    )


async def run(settings: Settings, args: argparse.Namespace) -> int:
    async with await open_redis(settings) as handle:
        svc = Services.build(settings, handle.client, Taxonomy.load(settings.taxonomy_file))
        await svc.areas.reload(force=True)
        report = await svc.coverage.report(args.alert_id, level=args.level, chain=args.chain)
    if args.format == "json":
        print(report.model_dump_json(indent=2))
    elif args.format == "csv":
        print(to_csv(report), end="")
    elif args.format == "html":
        print(to_html(report), end="")
    else:
        print(to_text(report), end="")
    return 0
