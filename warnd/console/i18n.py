"""The console's message catalogue: one TOML file per language, one set of templates.

``messages/zh-Hans.toml`` (the default) and ``messages/en.toml`` hold every
text the pages show, by key (``[nav] alerts = "预警列表"`` is ``nav.alerts``);
templates call ``_("nav.alerts")`` or ``_("alerts.count", n=3)`` (``{n}``
placeholders, :meth:`str.format`). A key missing in English falls back to
the Chinese text; a key missing everywhere shows as the key itself, which
the tests catch.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import structlog

from warnd.model import Level

log = structlog.get_logger("warnd.console")

LANGUAGES = ("zh-Hans", "en")
DEFAULT_LANGUAGE = "zh-Hans"
LANGUAGE_NAMES = {"zh-Hans": "中文", "en": "English"}


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = str(value)
    return out


@functools.cache
def catalogue(language: str) -> dict[str, str]:
    """The flat catalogue of one language (read once per process)."""
    text = resources.files("warnd.console").joinpath("messages", f"{language}.toml").read_text()
    return _flatten(tomllib.loads(text))


def pick_language(requested: str | None) -> str:
    """One of :data:`LANGUAGES` for a cookie or form value (anything else: the default)."""
    if requested:
        tag = requested.strip().lower()
        for lang in LANGUAGES:
            if tag == lang.lower() or tag.split("-")[0] == lang.lower().split("-")[0]:
                return lang
    return DEFAULT_LANGUAGE


@dataclass(frozen=True, slots=True)
class Translator:
    language: str

    def __call__(self, key: str, **values: Any) -> str:
        text = catalogue(self.language).get(key)
        if text is None:
            text = catalogue(DEFAULT_LANGUAGE).get(key)
        if text is None:
            log.warning("console.message_missing", key=key, language=self.language)
            return key
        return text.format(**values) if values else text

    def level(self, level: Level | str | None) -> str:
        if level is None or level == "":
            return self("level.none")
        return self(f"level.{Level(level).value}")

    def has(self, key: str) -> bool:
        return key in catalogue(self.language) or key in catalogue(DEFAULT_LANGUAGE)
