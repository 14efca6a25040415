"""Channel plugins: discovery through entry points, configuration, build.

Plugins register in the ``warnd.channels`` entry-point group::

    [project.entry-points."warnd.channels"]
    pager = "warnd_pager:PagerChannel"

so a third-party package adds a channel without touching warnd. Two
plugins claiming one name stop start-up with a :class:`ConfigError`
naming both.

Each ``[channels.<name>]`` table of the configuration configures one
channel: ``provider`` picks the implementation (every channel also takes
``provider = "sandbox"``), the rest are that provider's options. Secrets
are named, never written: ``password_env = "VAR"`` / ``password_file``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from warnd.channel import (
    Channel,
    ChannelConfig,
    ChannelContext,
    ReceiptCallback,
    resolve_secrets,
)
from warnd.errors import ConfigError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from warnd.settings import Settings

log = structlog.get_logger("warnd.plugins")

GROUP = "warnd.channels"


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    name = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    return f"{ep.value} (from {name})"


def load_channel_classes(eps: Iterable[EntryPoint] | None = None) -> dict[str, type[Channel]]:
    """Every registered channel class by name.

    Raises ConfigError when two plugins claim one name, when an entry point
    cannot be imported, or when it is not a :class:`Channel` whose ``name``
    matches the entry point's.
    """
    found = list(entry_points(group=GROUP) if eps is None else eps)
    by_name: dict[str, list[EntryPoint]] = {}
    for ep in found:
        by_name.setdefault(ep.name, [])
        # One distribution seen twice on sys.path (an editable install plus a
        # build directory) is the same plugin, not a conflict.
        if all(ep.value != other.value for other in by_name[ep.name]):
            by_name[ep.name].append(ep)
    problems: list[str] = []
    classes: dict[str, type[Channel]] = {}
    for name, claims in sorted(by_name.items()):
        if len(claims) > 1:
            problems.append(
                f"channel {name!r} is registered by more than one plugin: "
                + " and ".join(_origin(ep) for ep in claims)
                + "; uninstall one of them"
            )
            continue
        (ep,) = claims
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin is a configuration problem
            problems.append(f"channel {name!r}: cannot load {_origin(ep)}: {exc}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, Channel)):
            problems.append(f"channel {name!r}: {_origin(ep)} is not a warnd Channel class")
            continue
        if cls.name != name:
            problems.append(
                f"channel {name!r}: {_origin(ep)} declares name {cls.name!r}; "
                "the entry point and the class must agree"
            )
            continue
        classes[name] = cls
    if problems:
        raise ConfigError(problems[0], problems=problems)
    return classes


def provider_class(
    family: type[Channel], provider: str, classes: Mapping[str, type[Channel]]
) -> type[Channel] | None:
    """The concrete class for ``provider`` of a channel family.

    ``sandbox`` is the class registered as the ``sandbox`` channel, so a
    replacement sandbox plugin serves every family too.
    """
    if provider in family.providers:
        return family.providers[provider]
    if not family.providers and provider == family.provider:
        return family
    if provider == "sandbox":
        return classes.get("sandbox")
    return None


def provider_names(family: type[Channel]) -> list[str]:
    names = list(family.providers) or [family.provider]
    return [*names, "sandbox"] if "sandbox" not in names else names


def build_channel(
    name: str,
    raw: Mapping[str, Any],
    classes: Mapping[str, type[Channel]],
    context: ChannelContext | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Channel:
    """Validate one ``[channels.<name>]`` table and build its channel (not started)."""
    where = f"channels.{name}"
    family = classes.get(name)
    if family is None:
        known = ", ".join(sorted(classes)) or "none"
        raise ConfigError(f"{where}: no channel plugin named {name!r} (installed: {known})")
    provider = raw.get("provider")
    if not isinstance(provider, str):
        raise ConfigError(f"{where}.provider: missing; one of {', '.join(provider_names(family))}")
    cls = provider_class(family, provider, classes)
    if cls is None:
        raise ConfigError(
            f"{where}.provider: unknown provider {provider!r}; "
            f"one of {', '.join(provider_names(family))}"
        )
    context = context or ChannelContext()
    values = resolve_secrets(raw, cls.Config, where=where, env=env, base_dir=context.base_dir)
    try:
        config: ChannelConfig = cls.Config.model_validate(values)
    except ValidationError as exc:
        problems = [
            f"{where}.{'.'.join(str(p) for p in err['loc']) or '(table)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise ConfigError(problems[0], problems=problems) from None
    if cls.name != name:
        # The sandbox provider stands in for the family: same name and limits.
        return cls.standing_in_for(family, config, context)
    return cls(config, context)


def build_channels(
    tables: Mapping[str, Mapping[str, Any]],
    context: ChannelContext | None = None,
    *,
    classes: Mapping[str, type[Channel]] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Channel]:
    """Build every configured channel; a ConfigError lists every problem."""
    try:
        classes = load_channel_classes() if classes is None else classes
    except ConfigError:
        raise
    out: dict[str, Channel] = {}
    problems: list[str] = []
    for name, raw in tables.items():
        if not isinstance(raw, Mapping):
            problems.append(f"channels.{name}: must be a table")
            continue
        try:
            out[name] = build_channel(name, raw, classes, context, env=env)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems[0], problems=problems)
    return out


def channel_context(
    settings: Settings, redis: Redis | None = None, on_receipts: ReceiptCallback | None = None
) -> ChannelContext:
    """The context channels of this process get: Redis, keys, receipts URL, base dir."""
    from warnd.keys import Keys

    receipts = settings.receipts_url
    if receipts is None:
        host = settings.http.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard is not an address to call
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        receipts = f"http://{host}:{settings.http.port}/v1/receipts"
    base = None
    if settings.config_path is not None:
        parent = settings.config_path.resolve().parent
        base = parent.parent if parent.name == "config" else parent
    return ChannelContext(
        redis=redis,
        keys=Keys(settings.redis.key_prefix),
        receipts_url=receipts,
        base_dir=base,
        on_receipts=on_receipts,
    )


def channels_from_settings(
    settings: Settings,
    redis: Redis | None = None,
    *,
    on_receipts: ReceiptCallback | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Channel]:
    """Every ``[channels.<name>]`` of the settings, built (not started)."""
    context = channel_context(settings, redis, on_receipts)
    return build_channels(settings.channels, context, env=env)
