"""Rendering: one message per variant, shaped to the channel's limits.

Templates live in ``templates/`` (``[render] templates_dir``), one file per
channel × hazard × level × language and part::

    <channel>/<hazard>/<level>.<language>.j2            text (every channel)
    <channel>/<hazard>/<level>.<language>.md.j2         markdown (WeChat Work)
    <channel>/<hazard>/<level>.<language>.subject.j2    email subject
    <channel>/<hazard>/<level>.<language>.html.j2       email HTML (autoescaped)

``<hazard>`` is a taxonomy code or ``_default``, ``<level>`` a colour or
``_any``; ``_lib/`` holds macros the others import. The most specific file
wins (see :meth:`Renderer.candidates`): for each language of
:func:`~warnd.guidelines.language_chain`, first the channel's directory and
then the ``_default`` channel's, in each the hazard, then its parent, then
``_default``, each at the level and then ``_any``. The language comes first:
a generic template in the reader's language beats a channel's own in another. Every template is
compiled when :meth:`Renderer.load` runs, and load fails listing every file
that does not compile, uses an unknown variable or fails a trial render.

Messages are shortened to the channel's :class:`~warnd.limits.MessageLimits`
section by section — the signal criterion, then guideline items, the
issuer's instruction, the description, the last guideline item, the
headline, and then the area list ("曹县、单县等5个地区") — and only then cut
(between grapheme clusters) with a link to the full text; the office,
hazard, level and valid time stay whole. :attr:`Rendered.shortened` says so.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import structlog
from markupsafe import escape

from warnd.errors import ConfigError
from warnd.guidelines import ANY_LEVEL, Guidelines, language_chain
from warnd.identifiers import alert_id
from warnd.limits import LengthUnit, MessageLimits
from warnd.model import (
    Alert,
    Info,
    Level,
    MsgType,
)
from warnd.render_context import AREA_VARIABLES, Cut, base_context, compose
from warnd.render_templates import (
    DEFAULT,
    LIB,
    PARTS,
    TEMPLATE_NAME,
    compile_templates,
    describe_error,
    environment,
    existing_path,
    lang_of,
    sample_alert,
)
from warnd.settings import Settings
from warnd.taxonomy import Taxonomy
from warnd.textfit import cut_to_fit, graphemes, length, sms_parts, wrap

__all__ = ["PARTS", "Rendered", "Renderer", "Variants", "sample_alert", "variant_key"]

log = structlog.get_logger("warnd.render")

_REQUIRED_PARTS = {
    "sms": ("text",),
    "wechat": ("text", "markdown"),
    "email": ("subject", "text", "html"),
    "board": ("text",),
}
_CHECK_LANGUAGES = ("zh-Hans", "en")
_MORE = {"zh-Hans": "详见：", "zh-Hant": "詳見：", "en": "More: "}
_MORE_MD = {"zh-Hans": "详见全文", "zh-Hant": "詳見全文", "en": "Full text"}


@dataclass(frozen=True, slots=True)
class Rendered:
    """One rendered message, ready for every endpoint of its variant."""

    channel: str
    language: str
    """The language rendered (the template's, e.g. ``zh-Hans`` for ``zh-CN``)."""
    template: str
    """The template file of the body, relative to the templates directory."""
    subject: str | None
    text: str
    """The body; markdown when :attr:`markdown`."""
    html: str | None
    lines: tuple[str, ...] | None
    parts: int
    """SMS parts (1 for other channels)."""
    length: int
    """Length of :attr:`text` in the channel's unit."""
    shortened: bool
    variant_key: str
    markdown: bool = False


def variant_key(
    alert: Alert,
    info: Info,
    channel: str,
    language: str,
    area_names: Sequence[str] | None,
    limits: MessageLimits | None = None,
    full_text_url: str | None = None,
) -> str:
    """The identity of one rendered message: ``<channel>.<language>.<digest>``.

    ``area_names`` is ``None`` when the template does not use the areas (one
    message for every area); ``language`` should be the resolved template
    language so that ``zh``, ``zh-CN`` and ``zh-Hans`` share one render.
    """
    parts = [
        alert.sender,
        alert.identifier,
        alert.msg_type.value,
        info.language,
        info.event,
        info.hazard or "",
        info.level.value if info.level else "",
        channel,
        language,
        repr(limits),
        full_text_url or "",
        "\x1e".join(area_names) if area_names is not None else "\x00",
    ]
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).hexdigest()
    return f"{channel}.{language}.{digest}"


@dataclass(frozen=True, slots=True)
class _Plan:
    """The templates of one channel × hazard × level × language."""

    language: str
    body: str
    subject: str | None
    html: str | None
    uses_areas: bool
    uses_url: bool


@dataclass(slots=True)
class _Shaping:
    """One render's inputs while shortening."""

    plan: _Plan
    base: dict[str, Any]
    limits: MessageLimits
    link: Callable[[str], str]
    fits: Callable[[str], bool]


class Renderer:
    """Compiled templates plus the guideline table; renders messages."""

    def __init__(
        self,
        env: jinja2.Environment,
        templates: dict[str, jinja2.Template],
        variables: dict[str, frozenset[str]],
        guidelines: Guidelines,
        taxonomy: Taxonomy,
        *,
        zone: ZoneInfo,
        full_text_url: str | None = None,
    ) -> None:
        self._env = env
        self._templates = templates
        self._variables = variables
        self.guidelines = guidelines
        self.taxonomy = taxonomy
        self._zone = zone
        self._full_text_url = full_text_url
        self._plans: dict[tuple[str, str | None, Level | None, str, bool], _Plan] = {}
        self.channels = sorted({n.split("/", 1)[0] for n in templates} - {LIB, DEFAULT})

    # ------------------------------------------------------------- loading

    @classmethod
    def load(cls, settings: Settings, taxonomy: Taxonomy) -> Renderer:
        """Compile every template and read the guidelines.

        Raises ConfigError listing every problem: a file that does not
        compile (with its line), uses a variable templates do not get, is
        named outside the layout, or fails a trial render.
        """
        rs = settings.render
        problems: list[str] = []
        try:
            zone = ZoneInfo(rs.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"render.timezone: unknown time zone {rs.timezone!r}")
            zone = ZoneInfo("Asia/Shanghai")
        guidelines: Guidelines | None = None
        try:
            guidelines = Guidelines.load(
                existing_path(rs.guidelines_file), taxonomy, override=rs.guidelines_override
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
        directory = existing_path(rs.templates_dir)
        env = environment(directory)
        templates, variables = compile_templates(env, directory, taxonomy, problems)
        if guidelines is None:
            guidelines = Guidelines((), taxonomy)
        renderer = cls(
            env,
            templates,
            variables,
            guidelines,
            taxonomy,
            zone=zone,
            full_text_url=rs.full_text_url,
        )
        problems.extend(renderer._trial_renders())
        if problems:
            count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
            raise ConfigError(
                f"message templates ({count}):\n" + "\n".join(f"  - {p}" for p in problems),
                problems=problems,
            )
        log.debug("render.loaded", templates=len(templates), guidelines=len(guidelines))
        return renderer

    # ------------------------------------------------------------ choosing

    def candidates(
        self, channel: str, hazard: str | None, level: Level | None, language: str, part: str
    ) -> list[str]:
        """Template names tried for a part, most specific first."""
        hazards = [hazard] if hazard else []
        if hazard and hazard in self.taxonomy:
            parent = self.taxonomy.get(hazard).parent
            if parent:
                hazards.append(parent)
        hazards.append(DEFAULT)
        levels = [level.value, ANY_LEVEL] if level is not None else [ANY_LEVEL]
        suffix = PARTS[part]
        names: list[str] = []
        for lang in language_chain(language):
            for chan in dict.fromkeys([channel, DEFAULT]):
                for h in hazards:
                    names.extend(f"{chan}/{h}/{lv}.{lang}{suffix}" for lv in levels)
        return names

    def _find(self, names: Iterable[str], language: str | None = None) -> str | None:
        for name in names:
            if name in self._templates and (language is None or lang_of(name) == language):
                return name
        return None

    def _plan(
        self, channel: str, hazard: str | None, level: Level | None, language: str, markdown: bool
    ) -> _Plan:
        key = (channel, hazard, level, language, markdown)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        main_part = "markdown" if markdown else "text"
        body = self._find(self.candidates(channel, hazard, level, language, main_part))
        if body is None:
            raise ConfigError(
                f"no {main_part} template for {channel}/{hazard or DEFAULT}/"
                f"{level.value if level else ANY_LEVEL} in {'/'.join(language_chain(language))}"
            )
        lang = lang_of(body)
        extras: dict[str, str | None] = {}
        for part in ("subject", "html"):
            names = self.candidates(channel, hazard, level, lang, part)
            # the same channel directory as the body: an email gets its
            # subject from email/, never from the generic fallback channel
            chan = body.split("/", 1)[0]
            extras[part] = self._find((n for n in names if n.startswith(chan + "/")), lang)
        used = [body, *(n for n in extras.values() if n)]
        uses = frozenset().union(*(self._variables[n] for n in used))
        plan = _Plan(
            language=lang,
            body=body,
            subject=extras["subject"],
            html=extras["html"],
            uses_areas=bool(uses & AREA_VARIABLES),
            uses_url="url" in uses,
        )
        self._plans[key] = plan
        return plan

    def variant_key(
        self,
        alert: Alert,
        info: Info,
        channel: str,
        limits: MessageLimits,
        language: str,
        area_names: Sequence[str] = (),
        *,
        full_text_url: str | None = None,
    ) -> str:
        """:func:`variant_key` with the language resolved and the areas only
        when the chosen templates use them."""
        plan = self._plan(channel, info.hazard, info.level, language, limits.markdown)
        areas = _areas(info, area_names) if plan.uses_areas else None
        return variant_key(alert, info, channel, plan.language, areas, limits, full_text_url)

    def variants(self, alert: Alert, info: Info, *, full_text_url: str | None = None) -> Variants:
        """A memo that renders each variant of this alert info once."""
        return Variants(self, alert, info, full_text_url=full_text_url)

    # ------------------------------------------------------------ rendering

    def full_text_url(self, alert: Alert) -> str:
        """The configured "read more" address for an alert ("" if none)."""
        base = self._full_text_url
        if not base:
            return ""
        aid = alert_id(alert.sender, alert.identifier)
        if "{id}" in base or "{identifier}" in base:
            return base.replace("{id}", aid).replace("{identifier}", quote(alert.identifier))
        return f"{base.rstrip('/')}/{aid}"

    def render(
        self,
        alert: Alert,
        info: Info,
        channel: str,
        limits: MessageLimits,
        language: str,
        area_names: Sequence[str] = (),
        *,
        full_text_url: str | None = None,
    ) -> Rendered:
        """Render one message of ``info`` for a channel and language.

        ``area_names`` are the names to show (the recipient's areas); empty
        means the info's own ``areaDesc`` list. ``full_text_url`` overrides
        the configured "read more" address.
        """
        plan = self._plan(channel, info.hazard, info.level, language, limits.markdown)
        url = full_text_url if full_text_url is not None else self.full_text_url(alert)
        guideline = self.guidelines.lookup(info.hazard, info.level, plan.language)
        names = _areas(info, area_names)
        base = base_context(
            alert, info, plan.language, names, guideline, url, self.taxonomy, self._zone
        )
        key = variant_key(
            alert,
            info,
            channel,
            plan.language,
            names if plan.uses_areas else None,
            limits,
            full_text_url,
        )
        board = limits.line_chars is not None
        link_wanted = bool(url) and not plan.uses_url and not board

        def link(text: str) -> str:
            if not link_wanted:
                return text
            if limits.markdown:
                return f"{text}\n[{_MORE_MD[_family(plan.language)]}]({url})"
            return f"{text} {_MORE[_family(plan.language)]}{url}"

        shaping = _Shaping(plan, base, limits, link, lambda text: _fits(text, limits))
        cut, text = self._shape(shaping)
        ctx = compose(base, cut)
        shortened = not cut.whole
        subject = None
        if plan.subject is not None:
            subject = _one_line(self._part(plan.subject, ctx))
            if limits.max_subject is not None:
                max_subject = limits.max_subject
                cut_subject = cut_to_fit(subject, lambda s: len(graphemes(s)) <= max_subject)
                shortened = shortened or cut_subject != subject
                subject = cut_subject
        html = None
        if plan.html is not None:
            html = self._part(plan.html, ctx)
            if not cut.whole and link_wanted:
                more = escape(_MORE_MD[_family(plan.language)])
                anchor = f'<p><a href="{escape(url)}">{more}</a></p>\n'
                at = html.rfind("</body>")
                html = html[:at] + anchor + html[at:] if at != -1 else html + "\n" + anchor
        lines = None
        if board:
            width = limits.line_chars or 1
            lines = tuple(wrap(text, width))
        return Rendered(
            channel=channel,
            language=plan.language,
            template=plan.body,
            subject=subject,
            text=text,
            html=html,
            lines=lines,
            parts=sms_parts(text, limits.sms_single, limits.sms_part)
            if limits.unit is LengthUnit.UCS2
            else 1,
            length=length(text, limits.unit),
            shortened=shortened,
            variant_key=key,
            markdown=limits.markdown,
        )

    def _part(self, name: str, ctx: dict[str, Any]) -> str:
        text = self._templates[name].render(ctx)
        if name.endswith(PARTS["html"]):
            return text.strip()
        return _tidy(text)

    def _attempt(self, s: _Shaping, cut: Cut) -> str | None:
        text = self._part(s.plan.body, compose(s.base, cut))
        if not cut.whole:
            text = s.link(text)
        return text if s.fits(text) else None

    def _shape(self, s: _Shaping) -> tuple[Cut, str]:
        """The least-cut form of the message that fits the limits."""
        cut = Cut()
        text = self._attempt(s, cut)
        if text is not None:
            return cut, text
        base = s.base
        steps: list[Cut] = [cut := replace(cut, standard=False)]
        steps += [cut := replace(cut, guide=n) for n in range(len(base["guide"]) - 1, 0, -1)]
        steps.append(cut := replace(cut, instruction=False))
        for step in steps:
            text = self._attempt(s, step)
            if text is not None:
                return step, text
        desc = len(graphemes(base["description"]))
        if desc > 4:
            found = _largest(4, desc - 1, lambda k: self._attempt(s, replace(cut, description=k)))
            if found is not None:
                return replace(cut, description=found[0]), found[1]
        for step in (
            cut := replace(cut, description=0),
            cut := replace(cut, guide=0),
            cut := replace(cut, headline=False),
        ):
            text = self._attempt(s, step)
            if text is not None:
                return step, text
        count = len(base["areas"])
        if count > 1:
            found = _largest(1, count - 1, lambda k: self._attempt(s, replace(cut, areas=k)))
            if found is not None:
                return replace(cut, areas=found[0]), found[1]
            cut = replace(cut, areas=1)
        # Last resort: cut the text itself, between grapheme clusters.
        whole = self._part(s.plan.body, compose(base, cut))
        text = cut_to_fit(whole, lambda t: s.fits(s.link(t)))
        return cut, s.link(text)

    # ------------------------------------------------------------- checking

    def check(self) -> list[str]:
        """Missing templates and guideline gaps, per hazard × level × language.

        Every channel that has templates must have each of its parts in
        zh-Hans and en for every hazard and level of the taxonomy (through
        the fallback chain, in that very language), and every hazard × level
        needs a zh-Hans and an en guideline. Each combination is also
        rendered as an Alert, an Update and a Cancel.
        """
        problems: list[str] = []
        for channel in self.channels:
            parts = _REQUIRED_PARTS.get(channel, ("text",))
            for hazard in self.taxonomy:
                for level in hazard.levels:
                    for lang in _CHECK_LANGUAGES:
                        for part in parts:
                            names = self.candidates(channel, hazard.code, level, lang, part)
                            if self._find(names, lang) is None:
                                problems.append(
                                    f"templates: no {lang} {part} template for {channel}/"
                                    f"{hazard.code}/{level.value} (tried {names[0]} …"
                                    f" {channel}/{DEFAULT}/{ANY_LEVEL}.{lang}{PARTS[part]})"
                                )
                        problems.extend(self._try(channel, hazard.code, level, lang))
        problems.extend(self.guidelines.gaps(_CHECK_LANGUAGES))
        return list(dict.fromkeys(problems))

    def _try(self, channel: str, hazard: str | None, level: Level | None, lang: str) -> list[str]:
        problems: list[str] = []
        for msg_type in (MsgType.ALERT, MsgType.UPDATE, MsgType.CANCEL):
            alert, info = sample_alert(hazard, level, lang, msg_type)
            for markdown in (False, True) if channel == "wechat" else (False,):
                limits = MessageLimits(LengthUnit.CHARS, markdown=markdown)
                try:
                    self.render(alert, info, channel, limits, lang)
                except ConfigError:
                    continue  # a missing template: reported by check()
                except Exception as exc:  # any template fault, reported with its file
                    problems.append(describe_error(exc))
        return problems

    def _trial_renders(self) -> list[str]:
        """Render every selectable template once per message type."""
        problems: list[str] = []
        for name in self._templates:
            found = TEMPLATE_NAME.match(name)
            if found is None:
                continue
            hazard = found["hazard"] if found["hazard"] != DEFAULT else None
            if hazard is None:
                hazard = next(iter(self.taxonomy)).code if len(self.taxonomy) else None
            level = Level(found["level"]) if found["level"] != ANY_LEVEL else Level.RED
            for msg_type in (MsgType.ALERT, MsgType.UPDATE, MsgType.CANCEL):
                alert, info = sample_alert(hazard, level, found["lang"], msg_type)
                lang = found["lang"]
                guideline = self.guidelines.lookup(hazard, level, lang)
                base = base_context(
                    alert, info, lang, ["曹县", "单县"], guideline, "https://example.org/a/1",
                    self.taxonomy, self._zone,
                )  # fmt: skip
                try:
                    self._templates[name].render(compose(base, Cut()))
                except Exception as exc:  # any template fault, reported with its file
                    problems.append(describe_error(exc, name))
                    break
        return problems


class Variants:
    """Renders of one alert info, one per variant, however many recipients.

    ``get`` is the per-recipient call: it remembers each request it has seen
    (channel, limits, language, areas) so a million recipients cost a
    million dictionary look-ups and a few hundred renders.
    """

    def __init__(
        self, renderer: Renderer, alert: Alert, info: Info, *, full_text_url: str | None = None
    ) -> None:
        self._renderer = renderer
        self._alert = alert
        self._info = info
        self._url = full_text_url
        # (channel, language, id(limits)) → area names → message. Keyed by the
        # limits object's identity: hashing a MessageLimits per recipient costs
        # more than the rest of the look-up, and the objects are kept alive.
        self._memo: dict[tuple[str, str, int], dict[tuple[str, ...], Rendered]] = {}
        self._limits: list[MessageLimits] = []
        self._by_key: dict[str, Rendered] = {}

    @property
    def renders(self) -> int:
        """Messages actually rendered so far."""
        return len(self._by_key)

    def rendered(self) -> dict[str, Rendered]:
        """Every message rendered so far, by variant key."""
        return dict(self._by_key)

    def get(
        self, channel: str, limits: MessageLimits, language: str, area_names: Sequence[str] = ()
    ) -> Rendered:
        areas = area_names if isinstance(area_names, tuple) else tuple(area_names)
        memo = self._memo.get((channel, language, id(limits)))
        if memo is None:
            memo = self._memo[(channel, language, id(limits))] = {}
            self._limits.append(limits)
        hit = memo.get(areas)
        if hit is not None:
            return hit
        r = self._renderer
        key = r.variant_key(
            self._alert, self._info, channel, limits, language, area_names, full_text_url=self._url
        )
        rendered = self._by_key.get(key)
        if rendered is None:
            rendered = r.render(
                self._alert, self._info, channel, limits, language, area_names,
                full_text_url=self._url,
            )  # fmt: skip
            self._by_key[key] = rendered
        memo[areas] = rendered
        return rendered

    def group(
        self, recipients: Iterable[tuple[_T, str, MessageLimits, str, Sequence[str]]]
    ) -> dict[str, tuple[Rendered, list[_T]]]:
        """Group recipients by the message they get.

        Each recipient is ``(item, channel, limits, language, area_names)``;
        the result maps each variant key to its message and its items, in
        the order they came.
        """
        groups: dict[str, tuple[Rendered, list[_T]]] = {}
        memos = self._memo
        for item, channel, limits, language, areas in recipients:
            memo = memos.get((channel, language, id(limits)))
            rendered = memo.get(areas) if memo is not None and type(areas) is tuple else None
            if rendered is None:
                rendered = self.get(channel, limits, language, areas)
            entry = groups.get(rendered.variant_key)
            if entry is None:
                groups[rendered.variant_key] = (rendered, [item])
            else:
                entry[1].append(item)
        return groups


_T = TypeVar("_T")


# ------------------------------------------------------------------ helpers


def _family(language: str) -> str:
    if language.startswith("zh"):
        return "zh-Hant" if language == "zh-Hant" else "zh-Hans"
    return "en"


def _areas(info: Info, area_names: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in area_names if n.strip()))
    if names:
        return names
    return list(dict.fromkeys(a.area_desc.strip() for a in info.areas if a.area_desc.strip()))


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fits(text: str, limits: MessageLimits) -> bool:
    if limits.unit is LengthUnit.UCS2:
        if limits.max_length is not None and length(text, limits.unit) > limits.max_length:
            return False
        return limits.max_parts is None or (
            sms_parts(text, limits.sms_single, limits.sms_part) <= limits.max_parts
        )
    if limits.line_chars is not None:
        lines = wrap(text, limits.line_chars)
        if limits.lines is not None and len(lines) > limits.lines:
            return False
    return limits.max_length is None or length(text, limits.unit) <= limits.max_length


def _largest(lo: int, hi: int, attempt: Callable[[int], str | None]) -> tuple[int, str] | None:
    """The largest ``k`` in ``lo..hi`` whose attempt fits (attempts are monotone)."""
    best: tuple[int, str] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        text = attempt(mid)
        if text is not None:
            best = (mid, text)
            lo = mid + 1
        else:
            hi = mid - 1
    return best
