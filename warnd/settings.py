"""One typed settings object: a TOML file, then environment overrides.

The TOML file (``--config``, default ``config/warnd.toml``) holds everything
but secrets; environment variables override it:

==========================  =============================================
``WARND_HTTP_HOST``         ``[http] host``
``WARND_HTTP_PORT``         ``[http] port``
``WARND_DATA_DIR``          ``data_dir``
``WARND_REDIS_URL``         ``[redis] url`` (may carry a password: secret)
``WARND_LOG_LEVEL``         ``[log] level``
``WARND_LOG_FORMAT``        ``[log] format`` (``json``, ``console``, ``auto``)
``WARND_MAX_BODY_BYTES``    ``[http] max_body_bytes``
==========================  =============================================

Relative paths in the file are resolved against the file's directory's
parent when the file lives in a ``config/`` folder (so ``config/demo.toml``
may say ``data_dir = "var"``), else against the file's own directory.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from warnd.coverage.config import CoverageSettings
from warnd.dispatch.config import DispatchSettings
from warnd.errors import ConfigError
from warnd.feeds.config import FeedName, FeedSettings, resolve_paths
from warnd.groups import GroupSettings
from warnd.model import CAP_TOKEN_PATTERN

DEFAULT_CONFIG = Path("config/warnd.toml")

SHIPPED_ROOT = Path(__file__).resolve().parent.parent
"""Where warnd's own data (taxonomy, guidelines, templates) lives in a checkout."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8640, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Request bodies over this many bytes are refused with 413 unread."""


class RedisSettings(_Section):
    url: SecretStr | None = None
    """Redis URL (``redis://``, ``rediss://``, ``unix://``). Unset: embedded."""
    key_prefix: str = Field(default="warnd", pattern=r"^[A-Za-z0-9_.-]+$")


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"


class IssuerSettings(_Section):
    """Who this office is, for identifiers of warnings it issues itself."""

    area_code: str = Field(default="000000", pattern=r"^\d{6}$")
    """GB/T 2260 code of the issuing office's area."""
    unit_code: str = Field(default="00000", pattern=r"^\d{5}$")
    """Issuing unit code (GB/T 35965.1: 5 digits after the area code)."""
    sender: str = Field(default="warnd@localhost", pattern=CAP_TOKEN_PATTERN)
    sender_name: str = "warnd"


class DemoSettings(_Section):
    operator_token: bool = False
    """Create a demo operator token at start (``make run``) and print it."""
    token_areas: list[str] = Field(default_factory=list)


class AreaSettings(_Section):
    """The area registry (see warnd/areas.py and warnd/area_import.py)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    import_files: list[Path] = Field(default_factory=list, alias="import")
    """Code lists and boundary files imported at start (skipped when unchanged
    since their last import); the datum of GeoJSON is detected as for
    ``warnd areas import``."""
    reload_seconds: float = Field(default=30.0, gt=0)
    """How often a running warnd checks whether areas were imported and reloads."""


class SubscriberSettings(_Section):
    """Subscriber rosters imported at start (see warnd/subscriber_io.py)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    import_files: list[Path] = Field(default_factory=list, alias="import")
    """CSV or NDJSON rosters imported at start, after the areas (skipped when
    unchanged since their last import); the same validation as
    ``warnd subscribers import``, each rejected row logged with its line."""


class RenderSettings(_Section):
    """Message rendering (see warnd/render.py and templates/README.md)."""

    templates_dir: Path = Path("templates")
    """jinja2 templates: ``<channel>/<hazard>/<level>.<language>[.part].j2``."""
    guidelines_file: Path = Path("config/guidelines.toml")
    """The shipped 防御指南 table, per hazard × level × language."""
    guidelines_override: Path | None = None
    """This office's own guideline texts; each entry replaces the shipped one."""
    full_text_url: str | None = Field(default=None, pattern=r"^https?://")
    """Where the full text of an alert is read ("read more" links of shortened
    messages): ``{id}`` (warnd's alert id) and ``{identifier}`` are filled in,
    else the alert id is appended."""
    timezone: str = "Asia/Shanghai"
    """Times in messages are written in this zone (Beijing time by default)."""


class ConsoleSettings(_Section):
    """The duty officer's web console under ``/console/`` (see warnd/console/)."""

    enabled: bool = True
    session_idle_minutes: int = Field(default=480, ge=5, le=7 * 24 * 60)
    """A console session ends after this long without a request."""
    session_max_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    """…and this long after login, whatever happens."""
    refresh_seconds: int = Field(default=10, ge=2, le=3600)
    """How often the alert list and a live alert page refresh themselves."""


class Settings(_Section):
    data_dir: Path = Path("var")
    http: HttpSettings = Field(default_factory=HttpSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    issuer: IssuerSettings = Field(default_factory=IssuerSettings)
    taxonomy_file: Path = Path("config/taxonomy.toml")
    demo: DemoSettings = Field(default_factory=DemoSettings)
    expiry_sweep_seconds: float = Field(default=30.0, gt=0)
    render: RenderSettings = Field(default_factory=RenderSettings)
    areas: AreaSettings = Field(default_factory=AreaSettings)
    subscribers: SubscriberSettings = Field(default_factory=SubscriberSettings)
    groups: dict[str, GroupSettings] = Field(default_factory=dict)
    """Subscriber groups, one ``[groups.<key>]`` table each, in priority order
    (see warnd/groups.py); checked against the taxonomy at start."""
    feeds: dict[FeedName, FeedSettings] = Field(default_factory=dict)
    """Upstream warning feeds, one ``[feeds.<name>]`` table each (see warnd/feeds/)."""
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Channel plugins, one ``[channels.<name>]`` table each: ``provider`` plus its
    options; validated by the plugin's config model (see warnd/plugins.py)."""
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    """Fan-out: workers, retries, crash recovery, dissemination policy (warnd/dispatch/)."""
    coverage: CoverageSettings = Field(default_factory=CoverageSettings)
    """Coverage reports: the partial-reach threshold (warnd/coverage/)."""
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    receipts_url: str | None = Field(default=None, pattern=r"^https?://")
    """warnd's receipts endpoint as gateways reach it (``http://host:8640/v1/receipts``);
    default: built from ``[http]``."""

    config_path: Path | None = Field(default=None, exclude=True)

    @property
    def redis_socket(self) -> Path:
        """Where the embedded redis-server listens."""
        return self.data_dir / "redis.sock"


_ENV: dict[str, tuple[str, ...]] = {
    "WARND_HTTP_HOST": ("http", "host"),
    "WARND_HTTP_PORT": ("http", "port"),
    "WARND_MAX_BODY_BYTES": ("http", "max_body_bytes"),
    "WARND_DATA_DIR": ("data_dir",),
    "WARND_REDIS_URL": ("redis", "url"),
    "WARND_LOG_LEVEL": ("log", "level"),
    "WARND_LOG_FORMAT": ("log", "format"),
}


def _base_dir(config_path: Path) -> Path:
    parent = config_path.resolve().parent
    return parent.parent if parent.name == "config" else parent


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, override and validate the settings; raise ConfigError listing every problem."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    config_path = path if path is not None else DEFAULT_CONFIG
    if config_path.exists():
        try:
            with config_path.open("rb") as fh:
                raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
    elif path is not None:
        raise ConfigError(f"{config_path}: no such configuration file")
    for var, where in _ENV.items():
        if var in env and env[var] != "":
            node = raw
            for key in where[:-1]:
                node = node.setdefault(key, {})
            node[where[-1]] = env[var]
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{config_path}: {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError(problems[0], problems=problems) from None
    base = _base_dir(config_path) if config_path.exists() else Path.cwd()
    if not settings.data_dir.is_absolute() and "WARND_DATA_DIR" not in env:
        settings.data_dir = base / settings.data_dir

    # Paths the file names are relative to it; the shipped data files that
    # it leaves at their defaults are warnd's own, wherever the file lives.
    def place(section: BaseModel, name: str) -> None:
        value = getattr(section, name)
        if value is not None and not value.is_absolute():
            root = base if name in section.model_fields_set else SHIPPED_ROOT
            setattr(section, name, root / value)

    place(settings, "taxonomy_file")
    for name in ("templates_dir", "guidelines_file", "guidelines_override"):
        place(settings.render, name)
    settings.areas.import_files = [
        p if p.is_absolute() else base / p for p in settings.areas.import_files
    ]
    settings.subscribers.import_files = [
        p if p.is_absolute() else base / p for p in settings.subscribers.import_files
    ]
    resolve_paths(settings.feeds, base)
    settings.config_path = config_path if config_path.exists() else None
    return settings
