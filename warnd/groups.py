"""Subscriber groups: who hears about what, and over which channel.

Groups live in the TOML configuration (``[groups.<key>]``); subscribers
name the groups they belong to. A group's rules decide, for one ``info``
block of an alert, whether its members hear about it at all (hazards,
minimum level, area prefixes) and, if so, over which of their endpoints
(channels in preference order)::

    [groups.village_officers]
    name = "村级信息员"
    hazards = "all"                     # or a list; a parent hazard covers its subtypes
    min_level = "blue"                  # optional: omit to take every alert, levelless too
    areas = ["3717"]                    # administrative code prefixes; omit for everywhere
    channels = ["sms", "wechat"]        # preference order
    channel_mode = "first"              # "first" endpoint the member has, or "all" of them
    ack_required = true                 # 叫应: members must acknowledge
    ack_deadline_minutes = 30
    escalate_to = "township_duty"       # group told when the deadline passes

Subscribers in no group at all fall under the ``default`` group: the one
configured as ``[groups.default]``, or else :data:`IMPLICIT_DEFAULT`
(every hazard and level, channels sms → wechat → email → board, first).

The order of the tables is the groups' priority: when a subscriber is in
several groups that an alert selects, the first such group (in file order)
for which the subscriber has an endpoint decides its channels.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from warnd.errors import ConfigError
from warnd.model import Level
from warnd.taxonomy import Taxonomy

MAX_GROUPS = 63
"""Group membership is a 64-bit mask per subscriber in the match index."""

DEFAULT_GROUP = "default"
GROUP_KEY = r"^[a-z][a-z0-9_]{0,47}$"


class ChannelName(StrEnum):
    """The kinds of endpoint a subscriber can have, one address per kind."""

    SMS = "sms"
    EMAIL = "email"
    WECHAT = "wechat"
    BOARD = "board"

    @property
    def bit(self) -> int:
        return 1 << _CHANNEL_ORDER.index(self)


_CHANNEL_ORDER = (ChannelName.SMS, ChannelName.EMAIL, ChannelName.WECHAT, ChannelName.BOARD)
CHANNELS: tuple[ChannelName, ...] = _CHANNEL_ORDER
"""Every channel, in bit order."""


class GroupSettings(BaseModel):
    """One ``[groups.<key>]`` table of the configuration."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    """Display name, e.g. 村级信息员."""
    hazards: Literal["all"] | list[str] = "all"
    """``"all"`` or hazard codes of the taxonomy (a parent covers its subtypes)."""
    min_level: Level | None = None
    """Lowest colour this group hears about; ``None`` takes every alert,
    including ones without a level."""
    areas: list[str] = Field(default_factory=list)
    """Administrative code prefixes members must be under; empty: anywhere."""
    channels: list[ChannelName] = Field(
        default_factory=lambda: [ChannelName.SMS], min_length=1, max_length=4
    )
    """Channels in preference order."""
    channel_mode: Literal["first", "all"] = "first"
    """``first``: one delivery, on the first listed channel the member has an
    endpoint for. ``all``: one delivery per listed channel with an endpoint."""
    ack_required: bool = False
    """Members must acknowledge (叫应)."""
    ack_deadline_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    escalate_to: str | None = None
    """Group key told when a member has not acknowledged by the deadline."""

    @field_validator("min_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return Level.parse(value) if isinstance(value, str) else value

    @field_validator("areas")
    @classmethod
    def _prefixes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not (code.isascii() and code.isdigit()) or not 2 <= len(code) <= 12:
                raise ValueError(f"area prefix {code!r} must be 2 to 12 digits")
        return sorted(set(value))

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: list[ChannelName]) -> list[ChannelName]:
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value


IMPLICIT_DEFAULT = GroupSettings(
    name="默认",
    channels=[ChannelName.SMS, ChannelName.WECHAT, ChannelName.EMAIL, ChannelName.BOARD],
)


@dataclass(frozen=True, slots=True)
class Group:
    """A group's rules, resolved against the taxonomy, with its bit."""

    key: str
    index: int
    settings: GroupSettings
    hazards: frozenset[str] | None
    """Hazard codes covered (parents expanded); ``None`` for all."""

    @property
    def bit(self) -> int:
        return 1 << self.index

    @property
    def name(self) -> str:
        return self.settings.name

    def selects(self, hazard: str | None, level: Level | None) -> bool:
        """Whether an info block of this hazard and level concerns the group."""
        if self.hazards is not None and (hazard is None or hazard not in self.hazards):
            return False
        floor = self.settings.min_level
        return floor is None or (level is not None and level.rank >= floor.rank)


class GroupTable:
    """Every group, in priority (file) order; ``default`` always present."""

    def __init__(self, groups: list[Group]) -> None:
        self.groups = groups
        self._by_key = {g.key: g for g in groups}
        self.default = self._by_key[DEFAULT_GROUP]

    @classmethod
    def build(cls, configured: Mapping[str, GroupSettings], taxonomy: Taxonomy) -> GroupTable:
        """Resolve the configured groups; raise ConfigError listing every problem."""
        problems = check_groups(configured, taxonomy)
        if problems:
            raise ConfigError(problems[0], problems=problems)
        items = dict(configured)
        items.setdefault(DEFAULT_GROUP, IMPLICIT_DEFAULT)
        groups = [
            Group(key, i, cfg, _expand(cfg, taxonomy)) for i, (key, cfg) in enumerate(items.items())
        ]
        return cls(groups)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def get(self, key: str) -> Group | None:
        return self._by_key.get(key)

    def keys(self) -> list[str]:
        return [g.key for g in self.groups]

    def mask(self, keys: list[str]) -> int:
        """The membership bitmask of these group keys (none: the default group)."""
        if not keys:
            return self.default.bit
        out = 0
        for key in keys:
            out |= self._by_key[key].bit
        return out


def _expand(cfg: GroupSettings, taxonomy: Taxonomy) -> frozenset[str] | None:
    if cfg.hazards == "all":
        return None
    codes: set[str] = set()
    for code in cfg.hazards:
        codes.add(code)
        codes.update(h.code for h in taxonomy.children(code))
    return frozenset(codes)


def check_groups(configured: Mapping[str, GroupSettings], taxonomy: Taxonomy) -> list[str]:
    """Every problem with the ``[groups]`` tables, as ``groups.<key>.<field>: what``."""
    problems: list[str] = []
    if len(configured) + (DEFAULT_GROUP not in configured) > MAX_GROUPS:
        problems.append(f"groups: at most {MAX_GROUPS} groups, got {len(configured)}")
    for key, cfg in configured.items():
        where = f"groups.{key}"
        if not re.match(GROUP_KEY, key):
            problems.append(
                f"{where}: a group key is lower-case letters, digits and _ (starting with a letter)"
            )
        if cfg.hazards != "all":
            for code in cfg.hazards:
                if code not in taxonomy:
                    problems.append(f"{where}.hazards: {code!r} is not in the hazard taxonomy")
        if cfg.escalate_to is not None and cfg.escalate_to not in configured:
            problems.append(f"{where}.escalate_to: no group {cfg.escalate_to!r}")
        if cfg.ack_deadline_minutes is not None and not cfg.ack_required:
            problems.append(f"{where}.ack_deadline_minutes: set, but ack_required is false")
    return problems
