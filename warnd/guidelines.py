"""The 防御指南 table: what people should do, per hazard, level and language.

``config/guidelines.toml`` ships the CMA texts of the 14 warning signals and
guidance for every other hazard of the taxonomy (layout and sources at the
top of that file). An office names its own file in ``[render]
guidelines_override``; each of its entries replaces the shipped entry for
the same hazard, level and language.

Lookup order for (hazard, level, language): the entry for that level, then
the hazard's ``_any`` entry, then the same for the parent hazard
(``landslide`` → ``geological_hazard``); each step tries the languages of
:func:`language_chain` in order before moving on.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from warnd.errors import ConfigError
from warnd.model import Level
from warnd.taxonomy import Taxonomy

__all__ = ["ANY_LEVEL", "Guideline", "Guidelines", "language_chain"]

ANY_LEVEL = "_any"
"""The level key of an entry that applies to every level of its hazard."""

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_HANT_MARKERS = frozenset({"hant", "tw", "hk", "mo"})


def language_chain(tag: str) -> tuple[str, ...]:
    """The languages to try for a CAP/BCP 47 ``tag``, most wanted first.

    ``zh``, ``zh-CN``, ``zh-SG``, ``zh-Hans…`` → ``zh-Hans``, then ``en``;
    ``zh-TW``, ``zh-HK``, ``zh-MO``, ``zh-Hant…`` → ``zh-Hant``, ``zh-Hans``,
    ``en``; ``en…`` → ``en``; any other tag → the tag (canonical case), its
    primary language, then ``en`` (``es-MX`` → ``es-MX``, ``es``, ``en``).
    An empty tag means the office's own audience: ``zh-Hans``, then ``en``.
    """
    parts = [p for p in tag.strip().replace("_", "-").split("-") if p]
    if not parts:
        return ("zh-Hans", "en")
    primary = parts[0].lower()
    if primary == "zh":
        if any(p.lower() in _HANT_MARKERS for p in parts[1:]):
            return ("zh-Hant", "zh-Hans", "en")
        return ("zh-Hans", "en")
    if primary == "en":
        return ("en",)
    canonical = [primary] + [
        p.upper() if len(p) == 2 else p.title() if len(p) == 4 else p.lower() for p in parts[1:]
    ]
    chain = ["-".join(canonical), primary, "en"]
    return tuple(dict.fromkeys(chain))


@dataclass(frozen=True, slots=True)
class Guideline:
    """One entry: the signal's criterion (标准) and the numbered items."""

    hazard: str
    level: str
    """A level code, or ``_any``."""
    language: str
    items: tuple[str, ...]
    standard: str | None = None
    source: str = ""
    """The file the entry came from (shipped table or the office's override)."""


class Guidelines:
    """The loaded table; look entries up with :meth:`lookup`."""

    def __init__(self, entries: Iterable[Guideline], taxonomy: Taxonomy) -> None:
        self._entries: dict[tuple[str, str, str], Guideline] = {
            (g.hazard, g.level, g.language): g for g in entries
        }
        self._taxonomy = taxonomy

    @classmethod
    def load(cls, path: Path, taxonomy: Taxonomy, override: Path | None = None) -> Guidelines:
        """Read the shipped table and the override; ConfigError lists every problem."""
        problems: list[str] = []
        entries = _read(path, taxonomy, problems)
        if override is not None:
            for entry in _read(override, taxonomy, problems).values():
                entries[(entry.hazard, entry.level, entry.language)] = entry
        if problems:
            count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
            raise ConfigError(
                f"invalid guideline table ({count}):\n" + "\n".join(f"  - {p}" for p in problems),
                problems=problems,
            )
        return cls(entries.values(), taxonomy)

    def __len__(self) -> int:
        return len(self._entries)

    def languages(self) -> set[str]:
        return {language for (_, _, language) in self._entries}

    def lookup(self, hazard: str | None, level: Level | None, language: str) -> Guideline | None:
        """The guideline for a hazard and level in a language (see the module doc)."""
        if hazard is None:
            return None
        chain = language_chain(language)
        codes = [hazard]
        if hazard in self._taxonomy:
            parent = self._taxonomy.get(hazard).parent
            if parent is not None:
                codes.append(parent)
        levels = [level.value, ANY_LEVEL] if level is not None else [ANY_LEVEL]
        for code in codes:
            for lv in levels:
                for lang in chain:
                    found = self._entries.get((code, lv, lang))
                    if found is not None:
                        return found
        return None

    def gaps(self, languages: Iterable[str]) -> list[str]:
        """Every hazard × level of the taxonomy without an entry in each language.

        An entry found only through a fallback (another language, ``_any``,
        the parent hazard) is no gap for the fallback's sake when it is in the
        language asked for; a zh-Hans text standing in for English is one.
        """
        gaps: list[str] = []
        for hazard in self._taxonomy:
            for level in hazard.levels:
                for language in languages:
                    found = self.lookup(hazard.code, level, language)
                    if found is None or found.language != language_chain(language)[0]:
                        gaps.append(
                            f"guidelines: no {language} 防御指南 for {hazard.code}/{level.value}"
                        )
        return gaps


def _read(
    path: Path, taxonomy: Taxonomy, problems: list[str]
) -> dict[tuple[str, str, str], Guideline]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        problems.append(f"{path}: no such guideline file")
        return {}
    except OSError as exc:
        problems.append(f"{path}: {exc.strerror}")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
        return {}
    entries: dict[tuple[str, str, str], Guideline] = {}
    for hazard, levels in raw.items():
        where = f"{path}:{hazard}"
        if hazard not in taxonomy:
            problems.append(f"{where}: not a hazard of the taxonomy")
            continue
        if not isinstance(levels, dict):
            problems.append(f"{where}: must be a table of levels")
            continue
        known = {lv.value for lv in taxonomy.get(hazard).levels}
        for level, languages in levels.items():
            lwhere = f"{where}.{level}"
            if level != ANY_LEVEL and level not in known:
                allowed = ", ".join([*sorted(known), ANY_LEVEL])
                problems.append(f"{lwhere}: {hazard} has no level {level!r} (has: {allowed})")
                continue
            if not isinstance(languages, dict):
                problems.append(f"{lwhere}: must be a table of languages")
                continue
            for language, body in languages.items():
                entry = _entry(
                    f"{lwhere}.{language}", hazard, level, language, body, problems, str(path)
                )
                if entry is not None:
                    entries[(hazard, level, language)] = entry
    return entries


def _entry(
    where: str,
    hazard: str,
    level: str,
    language: str,
    body: object,
    problems: list[str],
    source: str,
) -> Guideline | None:
    if not _LANGUAGE.match(language):
        problems.append(f"{where}: not a language tag (e.g. zh-Hans, en)")
        return None
    if not isinstance(body, Mapping):
        problems.append(f"{where}: must be a table with guide (and standard)")
        return None
    unknown = sorted(set(body) - {"guide", "standard"})
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: guide, standard)")
    guide = body.get("guide")
    if not isinstance(guide, list) or not guide:
        problems.append(f"{where}.guide: required: a non-empty list of texts")
        return None
    items: list[str] = []
    for i, item in enumerate(guide):
        if not isinstance(item, str) or not item.strip():
            problems.append(f"{where}.guide[{i}]: must be a non-empty text")
            return None
        items.append(item.strip().rstrip("；;。."))
    standard = body.get("standard")
    if standard is not None and (not isinstance(standard, str) or not standard.strip()):
        problems.append(f"{where}.standard: must be a non-empty text")
        return None
    return Guideline(
        hazard=hazard,
        level=level,
        language=language,
        items=tuple(items),
        standard=standard.strip() if isinstance(standard, str) else None,
        source=source,
    )
