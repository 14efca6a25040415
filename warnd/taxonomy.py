"""The hazard taxonomy: what each warning is about, and which colours it may carry.

``config/taxonomy.toml`` lists one table per hazard (schema at the top of that
file). :class:`Taxonomy` loads and validates it, and classifies CAP ``info``
blocks: which hazard an ``event`` string means (``"Flash Flood Watch"``,
``"降雨"``, ``"颱風"``…) and which colour level the warning has.

Matching works on normalised text: Unicode NFKC, case-folded, punctuation and
underscores turned into spaces, and for exact matches trailing words such as
*Warning*, *Watch*, 预警信号, 特報 or a colour removed, so ``"暴雨红色预警信号"``,
``"Rainstorm Warning"`` and ``"暴雨"`` are one key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from warnd.errors import ConfigError
from warnd.model import Category, Info, Level, ValuePair

__all__ = [
    "Classification",
    "Hazard",
    "LevelSource",
    "Taxonomy",
    "default_path",
    "load_default",
]

# ----------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Hazard:
    """One hazard of the taxonomy (a table of ``taxonomy.toml``).

    ``levels`` is sorted lowest to highest (blue → red). ``aliases`` are the
    extra strings that classify to this hazard as written in the file; the
    code and the three names classify to it as well.
    """

    code: str
    zh: str
    zh_hant: str
    en: str
    category: Category
    levels: tuple[Level, ...]
    cma_code: str | None
    parent: str | None
    aliases: tuple[str, ...]
    same_codes: tuple[str, ...] = ()

    def name(self, language: str) -> str:
        """The name for a CAP/BCP 47 language tag.

        ``zh``, ``zh-CN``, ``zh-Hans``, ``zh-SG`` give the Simplified name;
        ``zh-TW``, ``zh-HK``, ``zh-MO`` and any ``zh-Hant…`` the Traditional
        one (tags are case-insensitive: Taiwan feeds write ``zh-tw``); every
        other language gets the English name.
        """
        parts = language.strip().lower().replace("_", "-").split("-")
        if parts[0] != "zh":
            return self.en
        if "hant" in parts or any(p in ("tw", "hk", "mo") for p in parts[1:]):
            return self.zh_hant
        return self.zh

    def has_level(self, level: Level) -> bool:
        """Whether the governing standard defines this colour for the hazard."""
        return level in self.levels

    def nearest_level(self, level: Level) -> Level:
        """``level`` if the hazard has it, else the closest colour it does have.

        On a tie the higher colour wins: under-warning costs more than
        over-warning.
        """
        if level in self.levels or not self.levels:
            return level
        return min(self.levels, key=lambda lv: (abs(lv.rank - level.rank), -lv.rank))


LevelSource = Literal["info", "parameter", "headline", "event", "severity"]
"""Where :meth:`Taxonomy.classify_detail` found the level."""


@dataclass(frozen=True, slots=True)
class Classification:
    """The result of classifying one ``info`` block.

    ``level`` is the level to use: ``raw_level`` moved onto the hazard's own
    colours (see :meth:`Taxonomy.classify`). ``level_source`` says where
    ``raw_level`` came from; both are ``None`` when nothing gave a level
    (severity Unknown and no colour anywhere).
    """

    hazard: str | None
    level: Level | None
    raw_level: Level | None
    level_source: LevelSource | None

    @property
    def clamped(self) -> bool:
        """True when the level was moved to fit the hazard's colours."""
        return self.level != self.raw_level


# ------------------------------------------------------------ normalisation

_NON_WORD = re.compile(r"[\W_]+")

# Words that say what kind of message it is, not what it is about. Stripped
# from the end of an event (repeatedly) before the exact lookup.
_EN_SUFFIXES = (
    "warnings", "warning", "watch", "advisory", "alerts", "alert", "statement",
    "signal", "message", "information", "bulletin", "report", "update",
    "cancellation", "notice",
)  # fmt: skip
_ZH_SUFFIXES = (
    "预警信号", "預警信號", "预警", "預警", "警报", "警報", "特报", "特報", "警戒", "警示",
    "信号", "信號", "资讯", "資訊", "报告", "報告", "消息", "讯息", "訊息", "即时", "即時",
    "通知", "提示",
    "红色", "紅色", "橙色", "黄色", "黃色", "蓝色", "藍色",
)  # fmt: skip
_ZH_PREFIXES = ("解除", "发布", "發布", "继续发布", "繼續發布")


def _normalise(text: str) -> str:
    """NFKC, case-folded, punctuation/underscores → single spaces, trimmed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", folded).strip()


def _strip_affixes(text: str) -> str:
    """Drop message-kind words and colours around a normalised event name.

    Never strips a text down to nothing: a bare ``"warning"`` stays as is.
    """
    changed = True
    while changed:
        changed = False
        for word in _EN_SUFFIXES:
            if text.endswith(" " + word):
                text = text[: -len(word) - 1].rstrip()
                changed = True
        for suffix in _ZH_SUFFIXES:
            if text.endswith(suffix) and len(text) > len(suffix):
                text = text[: -len(suffix)].rstrip()
                changed = True
        for prefix in _ZH_PREFIXES:
            if text.startswith(prefix) and len(text) > len(prefix):
                text = text[len(prefix) :].lstrip()
                changed = True
    return text


def _key(text: str) -> str:
    """The exact-match key: normalised, affixes stripped, spaces removed.

    Spaces go so that ``HeavyFog`` (the CMA feed's group name) and
    ``Heavy Fog`` are one key.
    """
    return _strip_affixes(_normalise(text)).replace(" ", "")


def _ascii_word(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _find_word(text: str, needle: str) -> int:
    """First index of ``needle`` in ``text`` as a whole word, or -1.

    Latin-script needles must not sit inside a longer word (``heat`` is not in
    ``wheat``); CJK has no word boundaries, so CJK ends match anywhere.
    """
    start = text.find(needle)
    while start != -1:
        end = start + len(needle)
        ok_start = start == 0 or not (_ascii_word(needle[0]) and _ascii_word(text[start - 1]))
        ok_end = end == len(text) or not (_ascii_word(needle[-1]) and _ascii_word(text[end]))
        if ok_start and ok_end:
            return start
        start = text.find(needle, start + 1)
    return -1


# ------------------------------------------------------------------ colours

_ZH_COLOUR = re.compile(r"([红紅橙黄黃蓝藍])色")
_EN_COLOUR_WORD = re.compile(r"\b(red|orange|yellow|blue)\b", re.IGNORECASE)
# In free text a bare colour word means too many things ("Red River", "Red
# Flag Warning", "Amber Alert"), so only a colour next to a warning word counts.
_EN_COLOUR_IN_TEXT = re.compile(
    r"\b(red|orange|yellow|blue)\s+(?:warning|alert|level|signal|watch|预警|預警|警报|警報)"
    r"|\b(?:code|level|colou?r)\s*[:：]?\s*(red|orange|yellow|blue)\b",
    re.IGNORECASE,
)
_WHOLE_COLOUR = re.compile(r"\s*(red|orange|yellow|blue|[红紅橙黄黃蓝藍]色?)\s*", re.IGNORECASE)
# Parameter names that carry a warning colour or level: Taiwan ``alert_color``
# and ``severity_level``, Meteoalarm ``awareness_level``, Iceland ``Color``,
# Mexico ``semáforo``, the CMA feed's ``signalLevel`` and warnd's own.
_COLOUR_PARAM_HINTS = ("color", "colour", "level", "semaforo", "signal")
_WARND_LEVEL = "warnd:level"
_WARND_HAZARD = "warnd:hazard"


def _ascii_fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _colour_in_text(text: str) -> Level | None:
    """A colour stated in a headline or event ("红色预警", "Red Warning")."""
    found = _ZH_COLOUR.search(text)
    if found:
        return Level.parse(found.group(1))
    en = _EN_COLOUR_IN_TEXT.search(text)
    if en:
        return Level.parse(en.group(1) or en.group(2))
    return None


def _colour_in_param(value: str) -> Level | None:
    """A colour in the value of a parameter whose name says it holds one.

    Accepts whatever :meth:`Level.parse` does (``黃色``, ``Yellow``, CMA level
    code ``03``), else the first colour word inside (``高溫橙色38燈號``,
    Meteoalarm ``2; yellow; Moderate``).
    """
    try:
        return Level.parse(value)
    except ValueError:
        pass
    found = _ZH_COLOUR.search(value)
    if found:
        return Level.parse(found.group(1))
    en = _EN_COLOUR_WORD.search(value)
    return Level.parse(en.group(1)) if en else None


def _level_from_parameters(parameters: Sequence[ValuePair]) -> Level | None:
    """The colour the parameters state, most specific parameter first.

    1. ``warnd:level``; 2. a parameter named like a colour/level field;
    3. any parameter whose whole value is a colour word (Taiwan WRA puts
    ``紅色`` in a second ``alert_title``; HSAS ``ORANGE``). Numeric level codes
    are only trusted in step 1 and 2, where the name says what they are.
    """
    for p in parameters:
        if p.value_name.strip().casefold() == _WARND_LEVEL:
            level = _colour_in_param(p.value)
            if level is not None:
                return level
    for p in parameters:
        name = _ascii_fold(p.value_name)
        if any(hint in name for hint in _COLOUR_PARAM_HINTS):
            level = _colour_in_param(p.value)
            if level is not None:
                return level
    for p in parameters:
        whole = _WHOLE_COLOUR.fullmatch(p.value)
        if whole:
            return Level.parse(whole.group(1))
    return None


# ----------------------------------------------------------- file validation

_CODE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
_SameCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class _HazardTable(BaseModel):
    """One ``[code]`` table as written in the TOML file."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    zh: str = Field(min_length=1)
    zh_hant: str = Field(min_length=1)
    en: str = Field(min_length=1)
    category: Category
    levels: list[Level] = Field(min_length=1)
    cma_code: str | None = Field(default=None, pattern=r"^\d{2}$")
    parent: str | None = None
    aliases: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    same_codes: list[_SameCode] = Field(default_factory=list)


_TABLE_KEYS = tuple(_HazardTable.model_fields)
_LEVELS = frozenset(lv.value for lv in Level)
_CATEGORIES = frozenset(c.value for c in Category)


def _loc(parts: Iterable[int | str]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _pydantic_problems(where: str, exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        loc = _loc(err["loc"])
        if err["type"] == "extra_forbidden":
            msg = f"unknown key (allowed: {', '.join(_TABLE_KEYS)})"
        elif err["type"] == "missing":
            msg = "required but missing"
        else:
            msg = f"{err['msg']} (got {err['input']!r})"
        problems.append(f"{where}.{loc}: {msg}")
    return problems


def _check(hazards: Sequence[Hazard], source: str) -> list[str]:
    """Problems that involve more than one field or more than one hazard.

    Empty names are skipped: they only occur in the partial hazards of tables
    that failed validation, where the missing name is already reported.
    """
    problems: list[str] = []
    codes = {h.code for h in hazards}
    by_code = {h.code: h for h in hazards}
    cma_owner: dict[str, str] = {}
    same_owner: dict[str, str] = {}
    # exact-match key → (hazard code, field it came from)
    key_owner: dict[str, tuple[str, str]] = {}

    for h in hazards:
        where = f"{source}:{h.code}"
        if not _CODE_PATTERN.match(h.code):
            problems.append(f"{where}: hazard code must be snake_case ([a-z][a-z0-9_]*)")
        seen_levels: set[Level] = set()
        for lv in h.levels:
            if lv in seen_levels:
                problems.append(f"{where}.levels: {lv.value!r} is listed twice")
            seen_levels.add(lv)
        if h.parent is not None:
            if h.parent == h.code:
                problems.append(f"{where}.parent: a hazard cannot be its own parent")
            elif h.parent not in codes:
                hint = _suggest(h.parent, codes)
                problems.append(f"{where}.parent: unknown hazard {h.parent!r}{hint}")
            else:
                parent = by_code.get(h.parent)
                if parent is not None and parent.parent is not None:
                    problems.append(
                        f"{where}.parent: {h.parent!r} is itself a subtype of"
                        f" {parent.parent!r}; subtypes are one level deep"
                    )
        if h.cma_code is not None:
            other = cma_owner.setdefault(h.cma_code, h.code)
            if other != h.code:
                problems.append(f"{where}.cma_code: {h.cma_code!r} is already {other}'s")
        for same in h.same_codes:
            other = same_owner.setdefault(same, h.code)
            if other != h.code:
                problems.append(f"{where}.same_codes: {same!r} is already {other}'s")
        names = [
            ("zh", h.zh),
            ("zh_hant", h.zh_hant),
            ("en", h.en),
            *((f"aliases[{i}]", a) for i, a in enumerate(h.aliases)),
            ("code", h.code),
        ]
        own_keys: set[str] = set()
        for field, text in names:
            if not text:
                continue
            key = _key(text)
            if not key:
                problems.append(f"{where}.{field}: {text!r} has nothing to match once normalised")
                continue
            if key in own_keys:
                continue  # e.g. code heavy_rain and en "Heavy Rain": one clash, not two
            own_keys.add(key)
            owner = key_owner.setdefault(key, (h.code, field))
            if owner[0] != h.code:
                problems.append(
                    f"{where}.{field}: {text!r} would also classify to {owner[0]}"
                    f" (as its {owner[1]})"
                )
    return problems


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


# --------------------------------------------------------------- the taxonomy


class Taxonomy:
    """All hazards, indexed for lookup by code, CMA code, alias and SAME code.

    Immutable once built. Build it with :meth:`load` (or :func:`load_default`);
    the constructor takes ready :class:`Hazard` objects and raises
    :class:`ConfigError` if they contradict each other.
    """

    __slots__ = ("_by_cma", "_by_key", "_by_same", "_hazards", "_needles", "source")

    def __init__(self, hazards: Iterable[Hazard], *, source: str = "<taxonomy>") -> None:
        items = list(hazards)
        problems = _check(items, source)
        if len({h.code for h in items}) != len(items):
            problems.append(f"{source}: the same hazard code is defined twice")
        if problems:
            raise _config_error(source, problems)
        self.source = source
        self._hazards: dict[str, Hazard] = {h.code: h for h in items}
        self._by_cma: dict[str, Hazard] = {h.cma_code: h for h in items if h.cma_code}
        self._by_same: dict[str, Hazard] = {s: h for h in items for s in h.same_codes}
        self._by_key: dict[str, Hazard] = {}
        needles: dict[str, Hazard] = {}
        for h in items:
            for text in (h.code, h.zh, h.zh_hant, h.en, *h.aliases):
                self._by_key[_key(text)] = h
                needles[_strip_affixes(_normalise(text))] = h
        # Longest first, so "Severe Thunderstorm" beats "Thunderstorm" and
        # 雷雨大风 beats 大风 when both occur in one event.
        self._needles: tuple[tuple[str, Hazard], ...] = tuple(
            sorted(needles.items(), key=lambda kv: -len(kv[0]))
        )

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: Path) -> Taxonomy:
        """Read and validate a taxonomy TOML file.

        Raises :class:`ConfigError` whose ``problems`` lists every problem
        found, each as ``file:hazard.field: what`` — unknown keys, bad level
        or category names, missing names, unknown parents, duplicate CMA or
        SAME codes, and aliases that would classify to two hazards.
        """
        source = str(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read hazard taxonomy {source}: {exc.strerror or exc}"
            ) from exc
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc

        problems: list[str] = []
        hazards: list[Hazard] = []
        if not doc:
            problems.append(f"{source}: defines no hazards")
        for code, table in doc.items():
            where = f"{source}:{code}"
            if not isinstance(table, dict):
                problems.append(f"{where}: expected a [{code}] table, got {type(table).__name__}")
                continue
            try:
                parsed = _HazardTable.model_validate(table)
            except ValidationError as exc:
                problems.extend(_pydantic_problems(where, exc))
                # Keep the fields that did validate, so that their clashes
                # with other hazards are reported in this same pass.
                bad = {err["loc"][:2] for err in exc.errors() if err["loc"]}
                hazards.append(_partial_hazard(code, table, bad))
                continue
            hazards.append(_hazard(code, parsed))
        problems.extend(_check(hazards, source))
        if problems:
            raise _config_error(source, problems)
        return cls(hazards, source=source)

    # ---------------------------------------------------------------- lookups

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self._hazards

    def __iter__(self) -> Iterator[Hazard]:
        """Hazards in file order."""
        return iter(self._hazards.values())

    def __len__(self) -> int:
        return len(self._hazards)

    def __repr__(self) -> str:
        return f"Taxonomy({self.source!r}, {len(self)} hazards)"

    def get(self, code: str) -> Hazard:
        """The hazard with this code; ``KeyError`` naming close matches if none."""
        try:
            return self._hazards[code]
        except KeyError:
            raise KeyError(
                f"unknown hazard code {code!r}{_suggest(code, self._hazards)}"
                f" (the taxonomy {self.source} has {len(self)} hazards)"
            ) from None

    def by_cma_code(self, code: str) -> Hazard:
        """The hazard of a CMA signal type code.

        Takes the 2-digit type (``"02"`` → rainstorm) or a 4-digit alarm code,
        whose last two digits are the level (``"0203"`` → rainstorm).
        ``KeyError`` if no hazard has that code.
        """
        text = code.strip()
        key = text[:2] if len(text) == 4 and text.isdigit() else text
        try:
            return self._by_cma[key]
        except KeyError:
            known = ", ".join(sorted(self._by_cma))
            raise KeyError(f"no hazard has CMA code {code!r} (known: {known})") from None

    def levels_of(self, code: str) -> tuple[Level, ...]:
        """The colours hazard ``code`` may carry, lowest first."""
        return self.get(code).levels

    def children(self, code: str) -> tuple[Hazard, ...]:
        """The subtypes of a hazard (landslide, debris_flow… of geological_hazard)."""
        self.get(code)
        return tuple(h for h in self if h.parent == code)

    # -------------------------------------------------------- classification

    def match_event(self, event: str, event_codes: Sequence[ValuePair] = ()) -> Hazard | None:
        """The hazard a CAP ``event`` (plus its ``eventCode`` entries) is about.

        In order, the first that gives an answer wins:

        1. an ``eventCode`` ``warnd:hazard`` naming a known hazard;
        2. the whole event equal to a code, name or alias (case-insensitive,
           spaces and punctuation ignored, suffixes such as Warning/Watch/
           Advisory, 预警/警报/特報 and colours stripped): ``"Flood Warning"``;
        3. an ``eventCode``: ``SAME`` values against ``same_codes`` (``FFA``),
           two-digit ``cma``/``signalType`` values against ``cma_code``, any
           other value against the aliases (Taiwan ``rainfall``, ``typhoon``);
        4. the longest alias contained in the event (whole words for Latin
           script): ``"Tsunami Cancellation"``, ``"Weather Warning: Wind"``.

        ``None`` when nothing matches; such alerts stay unclassified rather
        than being forced into ``other``.
        """
        for pair in event_codes:
            if pair.value_name.strip().casefold() == _WARND_HAZARD:
                hazard = self._hazards.get(pair.value.strip())
                if hazard is not None:
                    return hazard
        found = self._by_key.get(_key(event))
        if found is not None:
            return found
        for pair in event_codes:
            found = self._match_code(pair)
            if found is not None:
                return found
        return self._contained(_normalise(event))

    def _match_code(self, pair: ValuePair) -> Hazard | None:
        name = pair.value_name.strip().casefold()
        value = pair.value.strip()
        if not value:
            return None
        if name in ("same", "nationalweatherservice"):
            return self._by_same.get(value.upper())
        if name in ("cma", "cma_code", "signaltype") and value.isdigit():
            return self._by_cma.get(value[:2]) if len(value) in (2, 4) else None
        return self._by_key.get(_key(value))

    def _contained(self, text: str) -> Hazard | None:
        best: tuple[int, int, Hazard] | None = None  # (length, -position, hazard)
        for needle, hazard in self._needles:
            if best is not None and len(needle) < best[0]:
                break  # needles are longest first: nothing later can win
            pos = _find_word(text, needle)
            if pos != -1 and (best is None or (len(needle), -pos) > best[:2]):
                best = (len(needle), -pos, hazard)
        return best[2] if best is not None else None

    def classify(self, info: Info) -> tuple[str | None, Level | None]:
        """The hazard code and colour level of an ``info`` block.

        Hazard: ``info.hazard`` when set (``ValueError`` if the taxonomy has
        no such code), else :meth:`match_event` on the event and eventCodes,
        else ``None``.

        Level, first found: ``info.level``; a colour in the parameters
        (``alert_color`` 黃色, ``Color`` Yellow, ``warnd:level``…); a colour
        stated in the headline or event (``红色预警``, ``Red Warning``); the
        colour CAP severity maps to (:meth:`Level.from_severity`); else ``None``.

        When the hazard is known and lacks that colour, the level moves to the
        nearest colour the hazard has (drought yellow → orange, frost red →
        orange, ties upwards). The national schemes define only those
        colours for the hazard — there is no blue drought signal and no red
        frost signal — so a message, template or icon for the original colour
        does not exist, and the receivers' response plans are keyed to the
        colours the scheme has. Use :meth:`classify_detail` for the colour as
        found and where it came from.
        """
        result = self.classify_detail(info)
        return result.hazard, result.level

    def classify_detail(self, info: Info) -> Classification:
        """:meth:`classify`, also returning the unclamped level and its source."""
        hazard: Hazard | None
        if info.hazard is not None:
            if info.hazard not in self._hazards:
                raise ValueError(
                    f"info.hazard {info.hazard!r} is not in the hazard taxonomy"
                    f"{_suggest(info.hazard, self._hazards)}"
                )
            hazard = self._hazards[info.hazard]
        else:
            hazard = self.match_event(info.event, info.event_codes)

        raw, source = _find_level(info)
        level = hazard.nearest_level(raw) if hazard is not None and raw is not None else raw
        return Classification(
            hazard=hazard.code if hazard is not None else None,
            level=level,
            raw_level=raw,
            level_source=source,
        )


def _find_level(info: Info) -> tuple[Level | None, LevelSource | None]:
    if info.level is not None:
        return info.level, "info"
    level = _level_from_parameters(info.parameters)
    if level is not None:
        return level, "parameter"
    if info.headline:
        level = _colour_in_text(info.headline)
        if level is not None:
            return level, "headline"
    level = _colour_in_text(info.event)
    if level is not None:
        return level, "event"
    level = Level.from_severity(info.severity)
    return (level, "severity") if level is not None else (None, None)


def _hazard(code: str, table: _HazardTable) -> Hazard:
    return Hazard(
        code=code,
        zh=table.zh,
        zh_hant=table.zh_hant,
        en=table.en,
        category=table.category,
        levels=tuple(sorted(table.levels, key=lambda lv: lv.rank)),
        cma_code=table.cma_code,
        parent=table.parent,
        aliases=tuple(table.aliases),
        same_codes=tuple(table.same_codes),
    )


def _partial_hazard(code: str, table: dict[str, Any], bad: set[tuple[int | str, ...]]) -> Hazard:
    """A hazard from a table that failed validation, keeping what did validate.

    ``bad`` holds the error locations cut to two parts: ``("zh",)`` for a
    field, ``("aliases", 2)`` for one list item.
    """

    def good(name: str) -> Any:
        return None if (name,) in bad else table.get(name)

    def text(name: str) -> str:
        value = good(name)
        return value.strip() if isinstance(value, str) else ""

    def items(name: str) -> list[Any]:
        value = good(name)
        if not isinstance(value, list):
            return []
        return [v for i, v in enumerate(value) if (name, i) not in bad]

    # Membership checks as well as the error locations: they are cheap, and
    # a reshaped pydantic error location must not turn into a crash here.
    category = text("category")
    return Hazard(
        code=code,
        zh=text("zh"),
        zh_hant=text("zh_hant"),
        en=text("en"),
        category=Category(category) if category in _CATEGORIES else Category.OTHER,
        levels=tuple(Level(v) for v in items("levels") if v in _LEVELS),
        cma_code=text("cma_code") or None,
        parent=text("parent") or None,
        aliases=tuple(v.strip() for v in items("aliases")),
        same_codes=tuple(items("same_codes")),
    )


def _config_error(source: str, problems: list[str]) -> ConfigError:
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    detail = f"invalid hazard taxonomy {source} ({count}):\n" + "\n".join(
        f"  - {p}" for p in problems
    )
    return ConfigError(detail, problems=problems)


# ------------------------------------------------------------------ default

_PACKAGE_DIR = Path(__file__).resolve().parent


def default_path() -> Path:
    """Where the shipped taxonomy is: ``config/taxonomy.toml`` of the source
    tree, else a copy installed as package data (``warnd/data/taxonomy.toml``).
    """
    candidates = (
        _PACKAGE_DIR.parent / "config" / "taxonomy.toml",
        _PACKAGE_DIR / "data" / "taxonomy.toml",
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "no hazard taxonomy found; looked for " + ", ".join(str(c) for c in candidates)
    )


def load_default() -> Taxonomy:
    """Load the shipped taxonomy (for tests and tools; the service passes
    ``Settings.taxonomy_file`` to :meth:`Taxonomy.load`)."""
    return Taxonomy.load(default_path())
