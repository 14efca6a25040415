"""``warnd subscribers import FILE`` and ``warnd subscribers export``.

Both use the store ``serve`` uses (the configured Redis, or the running
daemon's embedded one); a running warnd sees imported subscribers at its
next match (it replays the change stream). ``import`` streams the file,
prints each rejected row (line, id, every reason) to stderr as it goes and
a summary at the end; it exits 0 when every row was accepted, 1 when some
were rejected (the good ones are imported), 2 when the file cannot be read.
Area codes are checked against the area registry, so import the areas
first (``warnd areas import``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from warnd.areas import AreaRegistry
from warnd.errors import BadRequest, ConfigError
from warnd.groups import GroupTable, check_groups
from warnd.keys import Keys
from warnd.redis_server import open_redis
from warnd.settings import Settings
from warnd.subscriber_io import Importer, Rejection, export_chunks, format_of_path, import_lines
from warnd.subscribers import SubscriberContext, SubscriberStore
from warnd.taxonomy import Taxonomy


def add_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
) -> None:
    subs = sub.add_parser("subscribers", help="bulk import and export subscribers")
    ssub = subs.add_subparsers(dest="subscribers_command", required=True)
    imp = with_config(ssub.add_parser("import", help="import (upsert by id) a CSV or NDJSON file"))
    imp.add_argument("file", metavar="FILE", help="the file, or - for standard input")
    imp.add_argument(
        "--format", choices=["csv", "ndjson"], help="default: from the extension (.ndjson/.jsonl)"
    )
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    exp = with_config(ssub.add_parser("export", help="write every subscriber as CSV or NDJSON"))
    exp.add_argument("--format", choices=["csv", "ndjson"], default="csv")
    exp.add_argument("--out", "-o", help="file to write (default: standard output)")


def check_config(settings: Settings, taxonomy: Taxonomy) -> list[str]:
    """Problems with the ``[groups]`` tables and the configured rosters, for ``warnd check``."""
    problems = check_groups(settings.groups, taxonomy)
    problems += [
        f"[subscribers] import: {path}: no such file"
        for path in settings.subscribers.import_files
        if not path.is_file()
    ]
    return problems


def _lines(path: str) -> Iterator[bytes]:
    if path == "-":
        yield from sys.stdin.buffer
        return
    try:
        fh = Path(path).open("rb")  # noqa: SIM115 - closed by the with below, in a generator
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    with fh:
        yield from fh


def _output(path: str | None) -> TextIO:
    return Path(path).open("w", encoding="utf-8") if path else sys.stdout


def _print_rejection(r: Rejection) -> None:
    reasons = "; ".join(f"{e.loc}: {e.msg}" for e in r.errors)
    print(f"line {r.line}{f' id={r.id}' if r.id else ''}: {reasons}", file=sys.stderr)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    keys = Keys(settings.redis.key_prefix)
    taxonomy = Taxonomy.load(settings.taxonomy_file)
    groups = GroupTable.build(settings.groups, taxonomy)
    async with await open_redis(settings) as handle:
        store = SubscriberStore(handle.client, keys)
        if args.subscribers_command == "export":
            out = _output(args.out)
            try:
                async for chunk in export_chunks(store, args.format):
                    out.write(chunk)
            finally:
                if args.out:
                    out.close()
            return 0
        registry = await AreaRegistry.load(handle.client, keys)
        if len(registry) == 0:
            raise ConfigError("the area registry is empty: run `warnd areas import` first")
        fmt = args.format or format_of_path(args.file)
        importer = Importer(
            store,
            SubscriberContext(registry=registry, groups=groups),
            csv_locs=fmt == "csv",
            max_rejections=0 if not args.json else 10_000,
            on_reject=None if args.json else _print_rejection,
        )
        try:
            summary = await import_lines(_lines(args.file), fmt, importer)
        except BadRequest as exc:  # the file as a whole (its CSV header) is unusable
            problems = [f"{args.file}: {exc.detail}"]
            problems += [f"{args.file}: line {e.line}: {e.msg}" for e in exc.errors]
            raise ConfigError(problems[0], problems=problems) from None
        if args.json:
            print(json.dumps(summary.as_dict(), ensure_ascii=False, indent=2))
        else:
            print(
                f"{args.file}: {summary.rows} rows, {summary.accepted} accepted"
                f" ({summary.created} new, {summary.updated} updated,"
                f" {summary.unchanged} unchanged), {summary.rejected} rejected"
            )
        return 1 if summary.rejected else 0
