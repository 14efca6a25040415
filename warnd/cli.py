"""The ``warnd`` command: serve, check, send, token.

Every command that needs Redis uses the same store as ``serve``: the
configured ``redis_url``, or with the embedded default the running
daemon's socket in the data directory (starting the embedded server
itself when no daemon runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from warnd import __version__
from warnd.api.context import SERVICES, Services
from warnd.errors import ConfigError, WarndError
from warnd.settings import Settings, load_settings

log = structlog.get_logger("warnd.cli")

EXIT_PROBLEM = 2


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


# ------------------------------------------------------------------- serve


def _freeze_heap() -> None:
    """Leave what start-up made (modules, the area registry, the subscriber
    index) out of the collector's full collections: it lives as long as the
    process, and walking it (≈ 100,000 objects, ~50 ms here) several times a
    second was a tenth of a large fan-out's CPU."""
    gc.collect()
    gc.freeze()


async def _serve(settings: Settings) -> None:
    from warnd.api.app import create_app

    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
    except BaseException:
        # What did start (the embedded redis-server, channel sessions) stops
        # before the error is reported.
        await runner.cleanup()
        raise
    try:
        site = web.TCPSite(runner, settings.http.host, settings.http.port)
        await site.start()
        _freeze_heap()
        svc = app[SERVICES]
        addresses = [
            f"http://{a[0] if ':' not in a[0] else '[' + a[0] + ']'}:{a[1]}"
            for a in runner.addresses
        ]
        log.info(
            "warnd.started", version=__version__, listen=addresses, data_dir=str(settings.data_dir)
        )
        print(f"warnd {__version__} listening on {', '.join(addresses)}", flush=True)
        print(f"  OpenAPI: {addresses[0]}/v1/openapi.json", flush=True)
        if settings.console.enabled:
            print(f"  console: {addresses[0]}/console/", flush=True)
        for name, feed in sorted(settings.feeds.items()):
            where = feed.public_url() or f"POST /v1/feeds/{name}"
            state = "" if feed.enabled else " (disabled)"
            print(f"  feed {name}: {feed.kind.value} {where}{state}", flush=True)
        if settings.demo.operator_token:
            token = await _demo_token(settings, svc)
            print(f"  demo operator token: {token}", flush=True)
            print(
                f"  try: curl -H 'Authorization: Bearer {token}' {addresses[0]}/v1/alerts",
                flush=True,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("warnd.stopping")
    finally:
        await runner.cleanup()
    log.info("warnd.stopped")


async def _demo_token(settings: Settings, svc: Services) -> str:
    """The demo operator token: reused across restarts, kept in the data dir."""
    from warnd.auth import Role

    path = settings.data_dir / "demo-operator-token"
    if path.exists():
        token = path.read_text().strip()
        with contextlib.suppress(WarndError):
            await svc.tokens.authenticate(token)
            return token
    token, _ = await svc.tokens.create(
        "demo-operator", Role.OPERATOR, settings.demo.token_areas, actor="system:demo"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


# ------------------------------------------------------------------- check


def _check(settings: Settings) -> list[str]:
    """Every problem with the configuration and what it names."""
    problems: list[str] = []
    from warnd.taxonomy import Taxonomy

    try:
        Taxonomy.load(settings.taxonomy_file)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        from warnd.cap import schema_errors

        schema_errors(b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'/>")
    except Exception as exc:  # report a broken install, do not crash on it
        problems.append(f"CAP schema cannot be loaded: {exc}")
    try:
        from warnd.plugins import channels_from_settings

        channels_from_settings(settings)
    except ConfigError as exc:
        problems.extend(exc.problems)
    from warnd.feeds import check_feeds

    try:
        hazard_codes: set[str] | None = {h.code for h in Taxonomy.load(settings.taxonomy_file)}
    except ConfigError:
        hazard_codes = None  # already reported above
    problems.extend(check_feeds(settings.feeds, hazard_codes))
    with contextlib.suppress(ConfigError):  # a broken taxonomy is reported above
        from warnd.subscriber_cli import check_config

        problems.extend(check_config(settings, Taxonomy.load(settings.taxonomy_file)))
    with contextlib.suppress(ConfigError):  # a broken taxonomy is reported above
        problems.extend(_check_render(settings, Taxonomy.load(settings.taxonomy_file)))
    return problems


def _check_render(settings: Settings, taxonomy: Any) -> list[str]:
    """Broken or missing message templates and guideline gaps."""
    from warnd.render import Renderer

    try:
        return Renderer.load(settings, taxonomy).check()
    except ConfigError as exc:
        return exc.problems


# ------------------------------------------------------------------- send


async def _send(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        body = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    token = args.token or os.environ.get("WARND_TOKEN", "")
    if not token:
        raise ConfigError("no token: pass --token or set WARND_TOKEN")
    ctype = args.content_type or (
        "application/json" if body.lstrip()[:1] in (b"{", b"[") else "application/cap+xml"
    )
    host = settings.http.host if settings.http.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    url = args.url or f"http://{host}:{settings.http.port}"
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                f"{url.rstrip('/')}/v1/alerts",
                data=body,
                headers={"Content-Type": ctype, "Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach warnd at {url}: {exc or type(exc).__name__}") from None
    try:
        print(json.dumps(json.loads(text), ensure_ascii=False, indent=2))
    except json.JSONDecodeError:
        print(text)
    return 0 if resp.status < 400 else 1


# ------------------------------------------------------------------- token


async def _with_services(settings: Settings, work: Callable[[Any], Awaitable[int]]) -> int:
    from warnd.api.context import Services
    from warnd.redis_server import open_redis
    from warnd.taxonomy import Taxonomy

    async with await open_redis(settings) as handle:
        svc = Services.build(settings, handle.client, Taxonomy.load(settings.taxonomy_file))
        return await work(svc)


async def _token(settings: Settings, args: argparse.Namespace) -> int:
    from warnd.auth import Role

    async def create(svc: Any) -> int:
        token, info = await svc.tokens.create(
            args.name, Role(args.role), args.area or [], actor="cli"
        )
        print(token)
        print(
            f"created token {info.id} {info.name!r} role={info.role.value}"
            f" areas={','.join(info.areas) or '*'} (shown once; store it now)",
            file=sys.stderr,
        )
        return 0

    async def listing(svc: Any) -> int:
        rows = await svc.tokens.list()
        if args.json:
            print(json.dumps([t.as_dict() for t in rows], ensure_ascii=False, indent=2))
            return 0
        print(f"{'ID':<14}{'NAME':<24}{'ROLE':<10}{'AREAS':<24}STATE")
        for t in rows:
            state = "revoked" if t.revoked_at else "active"
            print(f"{t.id:<14}{t.name:<24}{t.role.value:<10}{','.join(t.areas) or '*':<24}{state}")
        return 0

    async def revoke(svc: Any) -> int:
        info = await svc.tokens.revoke(args.token, actor="cli")
        print(f"revoked token {info.id} {info.name!r}")
        return 0

    work = {"create": create, "list": listing, "revoke": revoke}[args.token_command]
    return await _with_services(settings, work)


# -------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warnd", description="Early-warning dissemination engine")
    parser.add_argument("--version", action="version", version=f"warnd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", help="TOML configuration (default config/warnd.toml)")
        return p

    with_config(sub.add_parser("serve", help="run the daemon (API, feeds, dispatch)"))
    with_config(sub.add_parser("check", help="validate configuration, taxonomy and schemas"))
    send = with_config(sub.add_parser("send", help="submit a CAP or JSON alert to a running warnd"))
    send.add_argument("file")
    send.add_argument("--url", help="warnd base URL (default from the configuration)")
    send.add_argument("--token", help="bearer token (default $WARND_TOKEN)")
    send.add_argument("--content-type", help="override the detected content type")

    token = sub.add_parser("token", help="create, list or revoke API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = with_config(tsub.add_parser("create", help="create a token (printed once)"))
    create.add_argument("--name", required=True)
    create.add_argument(
        "--role", required=True, choices=["viewer", "operator", "approver", "admin"]
    )
    create.add_argument(
        "--area",
        action="append",
        metavar="CODE_PREFIX",
        help="limit to areas under this administrative code (repeatable)",
    )
    tlist = with_config(tsub.add_parser("list", help="list tokens"))
    tlist.add_argument("--json", action="store_true")
    revoke = with_config(tsub.add_parser("revoke", help="revoke a token by id or name"))
    revoke.add_argument("token", metavar="ID_OR_NAME")
    from warnd import channel_cli

    channel_cli.add_parser(sub, with_config)
    from warnd import area_cli

    area_cli.add_parser(sub, with_config)
    from warnd import subscriber_cli

    subscriber_cli.add_parser(sub, with_config)
    from warnd import report_cli

    report_cli.add_parser(sub, with_config)
    return parser


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if os.environ.get("WARND_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        from warnd.logs import configure

        configure(settings.log.level, settings.log.format)
        if args.command == "serve":
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(_serve(settings))
            return 0
        if args.command == "check":
            problems = _check(settings)
            for p in problems:
                print(f"warnd check: {p}", file=sys.stderr)
            if not problems:
                print(f"warnd check: {settings.config_path or 'defaults'}: OK")
            return 1 if problems else 0
        if args.command == "send":
            return asyncio.run(_send(settings, args))
        if args.command == "token":
            return asyncio.run(_token(settings, args))
        if args.command == "channels":
            from warnd import channel_cli

            return asyncio.run(channel_cli.run(settings, args))
        if args.command == "areas":
            from warnd import area_cli

            return asyncio.run(area_cli.run(settings, args))
        if args.command == "subscribers":
            from warnd import subscriber_cli

            return asyncio.run(subscriber_cli.run(settings, args))
        if args.command == "report":
            from warnd import report_cli

            return asyncio.run(report_cli.run(settings, args))
    except ConfigError as exc:
        for p in exc.problems:
            print(f"warnd: error: {p}", file=sys.stderr)
        return EXIT_PROBLEM
    except WarndError as exc:
        print(f"warnd: error: {exc.detail}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
    return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
