"""``warnd areas import FILE…`` and ``warnd areas show CODE``.

``import`` writes the store that ``serve`` uses (the configured Redis, or
the running daemon's embedded one); a running warnd picks the new areas up
within ``[areas] reload_seconds``. It prints one summary per file (rows,
areas created/updated, boundaries, each rejected row with its line and
reason) and exits 0 when every row was accepted, 1 when some rows were
rejected (the good ones are imported), 2 when a file could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from warnd.area_import import AreaFormat, ImportSummary, import_file
from warnd.areas import AreaRegistry
from warnd.geo import Datum
from warnd.keys import Keys
from warnd.redis_server import open_redis
from warnd.settings import Settings


def add_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    areas = sub.add_parser("areas", help="import administrative code lists and boundaries")
    asub = areas.add_subparsers(dest="areas_command", required=True)
    imp = with_config(
        asub.add_parser("import", help="import code lists (CSV/JSON/NDJSON) or GeoJSON boundaries")
    )
    imp.add_argument("files", nargs="+", metavar="FILE")
    imp.add_argument(
        "--format",
        choices=[f.value for f in AreaFormat],
        default=AreaFormat.AUTO.value,
        help="file format (default: from the extension and content)",
    )
    imp.add_argument(
        "--crs",
        choices=[d.value for d in Datum],
        default=None,
        help="datum of the coordinates (default: GCJ-02 for DataV GeoJSON, else WGS-84)",
    )
    imp.add_argument("--json", action="store_true", help="print the summaries as JSON")
    show = with_config(asub.add_parser("show", help="show one area and its children"))
    show.add_argument("code")


def _print_summary(s: ImportSummary) -> None:
    datum = f" datum={s.datum.value}" if s.datum else ""
    print(
        f"{s.file}: {s.format.value}{datum}: {s.rows} rows, {s.accepted} accepted"
        f" ({s.created} new, {s.updated} updated), {s.boundaries} boundaries,"
        f" {s.rejected_count} rejected, {s.warning_count} warnings in {s.seconds:.2f}s"
    )
    for note in s.notes:
        print(f"  note: {note}")
    for issue in s.rejected:
        print(f"  rejected {issue}")
    if s.rejected_count > len(s.rejected):
        print(f"  … and {s.rejected_count - len(s.rejected)} more rejected")
    for issue in s.warnings:
        print(f"  warning {issue}")
    if s.warning_count > len(s.warnings):
        print(f"  … and {s.warning_count - len(s.warnings)} more warnings")


async def run(settings: Settings, args: argparse.Namespace) -> int:
    keys = Keys(settings.redis.key_prefix)
    async with await open_redis(settings) as handle:
        if args.areas_command == "import":
            summaries = []
            for name in args.files:
                summaries.append(
                    await import_file(
                        handle.client,
                        keys,
                        Path(name),
                        fmt=AreaFormat(args.format),
                        datum=Datum(args.crs) if args.crs else None,
                    )
                )
                if not args.json:
                    _print_summary(summaries[-1])
            if args.json:
                print(json.dumps([s.as_dict() for s in summaries], ensure_ascii=False, indent=2))
            return 1 if any(s.rejected_count for s in summaries) else 0
        registry = await AreaRegistry.load(handle.client, keys)
        area = registry.get(args.code) if args.code.strip().isdigit() else None
        if area is None:
            print(f"warnd: no area {args.code!r} is registered", file=sys.stderr)
            return 1
        chain = " › ".join(a.name for a in reversed(registry.ancestors(area.code)))
        boundary = "own boundary" if area.has_boundary else "no boundary of its own"
        print(f"{area.code} {area.name} ({area.level.value}, {boundary})")
        if chain:
            print(f"  in {chain}")
        for child in registry.children(area.code):
            print(f"  {child.code} {child.name}")
        return 0
