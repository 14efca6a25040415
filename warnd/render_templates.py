"""Template files: their names, compiling them, and trial alerts to render.

The layout (``<channel>/<hazard>/<level>.<language>[.md|.subject|.html].j2``
plus ``_lib/`` helpers) and the rules :mod:`warnd.render` checks at load:
every file compiles, is named in the layout for a hazard and level of the
taxonomy, and uses only the variables of :mod:`warnd.render_context`.
"""

from __future__ import annotations

import re
import traceback
from datetime import datetime, timedelta
from pathlib import Path

import jinja2
from jinja2 import meta

from warnd.guidelines import ANY_LEVEL
from warnd.model import (
    Alert,
    Category,
    Certainty,
    Info,
    Level,
    MsgType,
    Reference,
    Scope,
    Severity,
    Status,
    Urgency,
)
from warnd.render_context import VARIABLES
from warnd.taxonomy import Taxonomy

__all__ = [
    "DEFAULT",
    "LIB",
    "PARTS",
    "TEMPLATE_NAME",
    "compile_templates",
    "describe_error",
    "environment",
    "existing_path",
    "lang_of",
    "sample_alert",
]

PARTS = {"text": ".j2", "markdown": ".md.j2", "subject": ".subject.j2", "html": ".html.j2"}
"""Template parts and their file suffixes."""
DEFAULT = "_default"
"""The hazard, level-less and channel-less fallback directory name."""
LIB = "_lib"
"""Helpers (macros) that are imported, never chosen."""
TEMPLATE_NAME = re.compile(
    r"^(?P<channel>[a-z0-9_]+)/(?P<hazard>[a-z0-9_]+)/"
    r"(?P<level>[a-z_]+)\.(?P<lang>[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*)"
    r"(?:\.(?P<part>md|subject|html))?\.j2$"
)


def sample_alert(
    hazard: str | None, level: Level | None, language: str, msg_type: MsgType = MsgType.ALERT
) -> tuple[Alert, Info]:
    """A plausible alert for trial renders and benchmarks."""
    sent = datetime.fromisoformat("2030-07-01T14:00:00+08:00")
    zh = language.startswith("zh")
    info = Info(
        language=language,
        categories=[Category.MET],
        event="暴雨" if zh else "Rainstorm",
        urgency=Urgency.IMMEDIATE,
        severity=level.severity if level else Severity.UNKNOWN,
        certainty=Certainty.LIKELY,
        onset=sent,
        expires=sent + timedelta(hours=6),
        sender_name="曹县气象台" if zh else "Caoxian Meteorological Observatory",
        headline="曹县气象台发布预警" if zh else "Warning issued",
        description="预计未来3小时曹县降雨量将达100毫米以上，请注意防范。"
        if zh
        else "Over 100 mm of rain is expected in the next 3 hours.",
        instruction="请注意防范。" if zh else "Take precautions.",
        hazard=hazard,
        level=level,
    )
    refs = []
    if msg_type is not MsgType.ALERT:
        refs = [Reference(sender="warnd@example", identifier="sample-0", sent=sent)]
    alert = Alert(
        identifier="sample-1",
        sender="warnd@example",
        sent=sent,
        status=Status.ACTUAL,
        msg_type=msg_type,
        scope=Scope.PUBLIC,
        references=refs,
        infos=[info],
    )
    return alert, info


def existing_path(path: Path) -> Path:
    """``path``, or for a relative path that is not there, the source tree's copy."""
    if path.is_absolute() or path.exists():
        return path
    shipped = Path(__file__).resolve().parent.parent / path
    return shipped if shipped.exists() else path


def environment(directory: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        # HTML parts only: the other parts are plain text, markdown or SMS.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), default_for_string=False, default=False
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
        cache_size=-1,
    )


def compile_templates(
    env: jinja2.Environment, directory: Path, taxonomy: Taxonomy, problems: list[str]
) -> tuple[dict[str, jinja2.Template], dict[str, frozenset[str]]]:
    """Compile every ``*.j2``; record each file's variables (with its imports)."""
    if not directory.is_dir():
        problems.append(f"{directory}: templates directory not found")
        return {}, {}
    names = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*.j2"))
    templates: dict[str, jinja2.Template] = {}
    own: dict[str, set[str]] = {}
    refs: dict[str, list[str | None]] = {}
    for name in names:
        layout = _layout_problem(name, taxonomy)
        if layout:
            problems.append(f"{name}: {layout}")
            continue
        try:
            source = (directory / name).read_text(encoding="utf-8")
            tree = env.parse(source, name=name)
            templates[name] = env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{name}:{exc.lineno}: {exc.message}")
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{name}: cannot be read: {exc}")
            continue
        own[name] = set(meta.find_undeclared_variables(tree))
        refs[name] = list(meta.find_referenced_templates(tree))
        unknown = sorted(own[name] - VARIABLES - set(env.globals))
        if unknown:
            problems.append(
                f"{name}: unknown variable{'s' if len(unknown) > 1 else ''}"
                f" {', '.join(unknown)} (see templates/README.md for the variables)"
            )
            del templates[name]
    variables: dict[str, frozenset[str]] = {}

    def collect(name: str, seen: set[str]) -> set[str]:
        out = set(own.get(name, ()))
        for ref in refs.get(name, ()):
            if ref is None:  # a dynamic include: assume it uses everything
                out |= VARIABLES
            elif ref not in seen:
                seen.add(ref)
                out |= collect(ref, seen)
        return out

    for name in templates:
        variables[name] = frozenset(collect(name, {name}))
    return templates, variables


def _layout_problem(name: str, taxonomy: Taxonomy) -> str | None:
    if name.startswith(LIB + "/"):
        return None
    found = TEMPLATE_NAME.match(name)
    if found is None:
        return (
            "not named <channel>/<hazard>/<level>.<language>[.md|.subject|.html].j2"
            f" (helpers belong in {LIB}/)"
        )
    hazard, level = found["hazard"], found["level"]
    if hazard != DEFAULT and hazard not in taxonomy:
        return f"{hazard!r} is not a hazard of the taxonomy"
    if level != ANY_LEVEL:
        if level not in {lv.value for lv in Level}:
            return f"{level!r} is not a level (blue, yellow, orange, red or {ANY_LEVEL})"
        if hazard != DEFAULT and Level(level) not in taxonomy.get(hazard).levels:
            return f"{hazard} has no {level} level"
    return None


def describe_error(exc: Exception, name: str | None = None) -> str:
    """``file:line: error`` for an exception raised while rendering a template."""
    where = name or "template"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(".j2"):
            where = frame.filename
            line = frame.lineno
    directory_free = re.sub(r"^.*?/templates/", "", where)
    loc = f"{directory_free}:{line}" if line else directory_free
    return f"{loc}: {type(exc).__name__}: {exc}"


def lang_of(name: str) -> str:
    found = TEMPLATE_NAME.match(name)
    return found["lang"] if found else ""
