"""Feed definitions: one ``[feeds.<name>]`` table per upstream.

A feed says where warnings come from (``kind`` and ``url``), how often to
look (``interval``, ``timeout``), whom to believe (``trusted_senders``),
and how to map what it says onto warnd's hazards, levels and areas. The
push token of a ``push`` feed is never written here: the table names an
environment variable (``token_env``) or a file (``token_file``) holding it.

Structural problems are pydantic errors, so ``warnd check`` lists every
one with its place in the file; :func:`check_feeds` adds the checks that
need the taxonomy or the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from warnd.model import CAP_TOKEN_PATTERN, Level

FEED_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
FeedName = Annotated[str, Field(pattern=FEED_NAME)]

_SENDER = re.compile(CAP_TOKEN_PATTERN)
_SECRET_KEYS = ("token", "secret", "password", "api_key", "apikey")


class FeedKind(StrEnum):
    CAP = "cap"
    """One URL returning one CAP 1.2/1.1 document (or an ``<alerts>`` wrapper)."""
    CAP_INDEX = "cap-index"
    """An ATOM or RSS document whose entries link to (or embed) CAP documents."""
    CMA_JSON = "cma-json"
    """A Chinese met-warning JSON feed (weather.com.cn layout, or a mapping)."""
    CMA_XML = "cma-xml"
    """The same as XML: items are elements, fields their attributes or children."""
    PUSH = "push"
    """The upstream POSTs CAP to ``/v1/feeds/<name>`` with the feed's token."""

    @property
    def polled(self) -> bool:
        return self is not FeedKind.PUSH

    @property
    def carries_cap(self) -> bool:
        return self in (FeedKind.CAP, FeedKind.CAP_INDEX, FeedKind.PUSH)

    @property
    def is_cma(self) -> bool:
        return self in (FeedKind.CMA_JSON, FeedKind.CMA_XML)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CmaMapping(_Section):
    """Where a met-warning feed keeps each field of an item.

    The defaults read the weather.com.cn national warning feed
    (``AlermInfo`` → signal groups → ``Station`` items). Field names are
    dotted paths inside one item; ``items`` is a dotted path from the
    document root to the items, where ``*`` stands for every value of an
    object (JSON) and, for XML, the last segment is the item element name,
    found anywhere in the document.
    """

    items: str | None = None
    """Path to the items. Default: ``AlermInfo.*.Station`` (JSON), ``Station`` (XML)."""
    id: str | None = None
    """A field with the upstream's own identifier, if the feed has one."""
    station: str = "stationName"
    """Who issued it / where: becomes the area description."""
    province: str | None = None
    city: str | None = None
    area_id: str | None = "areaId"
    """The feed's own area or station id (looked up in ``area_codes``)."""
    area_code: str | None = None
    """A field holding a GB/T 2260 administrative code, if the feed gives one."""
    signal_type: str = "signalType"
    """Signal type: a 2-digit CMA code (``02``) or a name (``暴雨``)."""
    signal_level: str = "signalLevel"
    """Signal level: a code ``01``–``04`` (blue → red) or a colour (``黄色``)."""
    alarm_code: str | None = None
    """A 4-digit alarm code (type + level, ``0203``), used when present."""
    issue_time: str = "issueTime"
    expire_time: str | None = "relieveTime"
    """When the signal lapses unless renewed (weather.com.cn ``relieveTime``)."""
    content: str = "issueContent"
    headline: str | None = None
    relieve: str | None = None
    """A field marking a relieve (解除) item; else the content's first clause says so."""
    relieve_values: list[str] = Field(
        default_factory=lambda: ["解除", "relieve", "relieved", "cancel", "1", "true"]
    )
    time_formats: list[str] = Field(
        default_factory=lambda: [
            "%Y%m%d%H%M%S",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%d %H:%M",
            "%Y%m%d%H%M",
        ]
    )
    """strptime formats tried in order (ISO 8601 is always tried too)."""
    utc_offset: str = Field(default="+08:00", pattern=r"^[+-]\d{2}:\d{2}$")
    """Offset of times given without one (Beijing time)."""


class FeedSettings(_Section):
    """One upstream: ``[feeds.<name>]`` in the configuration."""

    kind: FeedKind
    url: str | None = None
    """What to poll (every kind but ``push``): http or https."""
    enabled: bool = True
    interval: float = Field(default=60.0, ge=0.1, le=86400)
    """Seconds between polls when all is well."""
    timeout: float = Field(default=20.0, gt=0, le=600)
    """Seconds one request may take, body included."""
    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    """Largest response body accepted (after gzip decoding)."""
    backoff_max: float = Field(default=1800.0, gt=0)
    """Longest wait between polls of a failing feed, in seconds."""
    lease_seconds: float = Field(default=30.0, ge=1)
    """How long this process holds the feed after it stops renewing (dies)."""
    max_entries: int = Field(default=200, ge=1)
    """Index entries fetched per poll (``cap-index``); the rest wait for the next."""
    trusted_senders: list[str] = Field(default_factory=list)
    """CAP senders this feed may deliver; ``"*"`` means any."""
    sender: str | None = None
    """The CAP sender stamped on items of a met-warning feed (``cma-*``)."""
    language: str = "zh-CN"
    hazard: str | None = None
    """Hazard code for items that name no hazard warnd knows."""
    level: Level | None = None
    """Level for items that give none."""
    hazards: dict[str, str] = Field(default_factory=dict)
    """Signal type (code or name) → hazard code, before the taxonomy's CMA codes."""
    levels: dict[str, Level] = Field(default_factory=dict)
    """Signal level (code or name) → level, before the built-in 01–04 / colour names."""
    area_codes: dict[str, str] = Field(default_factory=dict)
    """Area id or station name → GB/T 2260 code, for feeds that give none."""
    areas: list[str] = Field(default_factory=list)
    """Administrative code prefixes this feed may warn; empty means anywhere."""
    mapping: CmaMapping | None = None
    token_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """``push``: environment variable holding the feed's token."""
    token_file: Path | None = None
    """``push``: file holding the feed's token (relative to the config's base)."""

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for key in _SECRET_KEYS:
                if key in data:
                    raise ValueError(
                        f"{key!r}: secrets do not belong in the configuration file; put the"
                        " token in an environment variable named by token_env, or in a file"
                        " named by token_file"
                    )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[str] = []
        kind = self.kind
        if kind.polled:
            if not self.url:
                problems.append(f"a {kind.value} feed needs a url")
            else:
                problems.extend(_url_problems(self.url))
        elif self.url:
            problems.append("a push feed has no url: the upstream POSTs to /v1/feeds/<name>")
        if kind is FeedKind.PUSH:
            if (self.token_env is None) == (self.token_file is None):
                problems.append("a push feed needs exactly one of token_env or token_file")
        elif self.token_env is not None or self.token_file is not None:
            problems.append("token_env and token_file are for push feeds only")
        if kind.carries_cap and not self.trusted_senders:
            problems.append(
                f"a {kind.value} feed needs trusted_senders (the CAP senders it may deliver,"
                ' or ["*"] for any)'
            )
        for s in self.trusted_senders:
            if s != "*" and not _SENDER.match(s):
                problems.append(f"trusted sender {s!r} is not a CAP sender")
        if kind.is_cma:
            if not self.sender:
                problems.append(f"a {kind.value} feed needs sender (the CAP sender of its items)")
            elif not _SENDER.match(self.sender):
                problems.append(f"sender {self.sender!r} must not contain spaces, commas, < or &")
        else:
            for name in ("sender", "mapping"):
                if getattr(self, name) is not None:
                    problems.append(f"{name} is for cma-json and cma-xml feeds only")
            if self.hazards or self.levels or self.area_codes:
                problems.append("hazards, levels and area_codes are for cma-json/cma-xml feeds")
        for code in (*self.area_codes.values(), *self.areas):
            if not code.isdigit() or not 2 <= len(code) <= 12:
                problems.append(f"{code!r} is not an administrative code (2 to 12 digits)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def cma_mapping(self) -> CmaMapping:
        return self.mapping if self.mapping is not None else CmaMapping()

    def items_path(self) -> str:
        mapping = self.cma_mapping
        if mapping.items:
            return mapping.items
        return "Station" if self.kind is FeedKind.CMA_XML else "AlermInfo.*.Station"

    def trusts(self, sender: str) -> bool:
        return "*" in self.trusted_senders or sender in self.trusted_senders

    def push_token(self, env: Mapping[str, str] | None = None) -> SecretStr:
        """The push token from its variable or file; ValueError saying what is missing."""
        env = os.environ if env is None else env
        if self.token_env is not None:
            value = env.get(self.token_env, "").strip()
            if not value:
                raise ValueError(f"environment variable {self.token_env} is not set or empty")
            return SecretStr(value)
        if self.token_file is not None:
            try:
                value = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"cannot read token_file {self.token_file}: {exc.strerror or exc}"
                ) from None
            if not value:
                raise ValueError(f"token_file {self.token_file} is empty")
            return SecretStr(value)
        raise ValueError("not a push feed")

    def public_url(self) -> str | None:
        """The URL without its query string (which may carry an API key)."""
        if not self.url:
            return None
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?…" if parts.query else "")


def _url_problems(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return [f"url {url!r} is not a URL: {exc}"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"url {url!r} must be an http:// or https:// URL with a host"]
    if parts.username or parts.password:
        return ["url must not carry a user name or password (secrets stay out of the file)"]
    return []


def check_feeds(
    feeds: Mapping[str, FeedSettings],
    hazard_codes: set[str] | None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """What ``warnd check`` adds to the structural checks: every problem found.

    Hazard codes named by a feed must exist in the taxonomy (skipped when
    ``hazard_codes`` is None: the taxonomy did not load); an enabled push
    feed's token must be readable now (a disabled feed's need not be).
    """
    problems: list[str] = []
    for name, feed in feeds.items():
        where = f"feeds.{name}"
        named = [("hazard", feed.hazard)] if feed.hazard else []
        named += [(f"hazards.{k}", v) for k, v in feed.hazards.items()]
        for field, code in named:
            if hazard_codes is not None and code not in hazard_codes:
                problems.append(f"{where}.{field}: hazard {code!r} is not in the taxonomy")
        if feed.kind is FeedKind.PUSH and feed.enabled:
            try:
                feed.push_token(env)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
    return problems


def resolve_paths(feeds: Mapping[str, FeedSettings], base: Path) -> None:
    """Make relative ``token_file`` paths relative to the configuration's base."""
    for feed in feeds.values():
        if feed.token_file is not None and not feed.token_file.is_absolute():
            feed.token_file = base / feed.token_file
