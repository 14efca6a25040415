"""Settings: TOML, environment overrides, every problem listed, secrets redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from warnd.errors import ConfigError
from warnd.settings import SHIPPED_ROOT, load_settings


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config" / "w.toml"
    cfg.parent.mkdir()
    cfg.write_text('data_dir = "var"\n[http]\nport = 9000\nhost = "127.0.0.1"\n')
    plain = load_settings(cfg, env={})
    assert plain.http.port == 9000
    # Relative paths in config/*.toml resolve against the project directory.
    assert plain.data_dir == tmp_path / "var"
    # warnd's own data files stay warnd's unless the file names others.
    assert plain.taxonomy_file == SHIPPED_ROOT / "config" / "taxonomy.toml"
    assert plain.render.templates_dir == SHIPPED_ROOT / "templates"
    cfg.write_text('taxonomy_file = "tax.toml"\n[render]\ntemplates_dir = "tpl"\n')
    own = load_settings(cfg, env={})
    assert own.taxonomy_file == tmp_path / "tax.toml"
    assert own.render.templates_dir == tmp_path / "tpl"
    assert own.render.guidelines_file == SHIPPED_ROOT / "config" / "guidelines.toml"
    cfg.write_text('data_dir = "var"\n[http]\nport = 9000\nhost = "127.0.0.1"\n')

    env = {
        "WARND_HTTP_HOST": "192.0.2.10",
        "WARND_HTTP_PORT": "9100",
        "WARND_DATA_DIR": str(tmp_path / "elsewhere"),
        "WARND_REDIS_URL": "redis://:s3cret@db.internal:6379/2",
        "WARND_LOG_LEVEL": "debug",
        "WARND_LOG_FORMAT": "json",
        "WARND_MAX_BODY_BYTES": "2048",
    }
    s = load_settings(cfg, env=env)
    assert (s.http.host, s.http.port, s.http.max_body_bytes) == ("192.0.2.10", 9100, 2048)
    assert s.data_dir == tmp_path / "elsewhere"
    assert s.redis.url is not None
    assert s.redis.url.get_secret_value().endswith("@db.internal:6379/2")
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())
    assert (s.log.level, s.log.format) == ("debug", "json")


def test_every_problem_is_listed(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[http]\nport = "eighty"\nhots = 1\n[log]\nlevel = "loud"\n[nope]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={"WARND_MAX_BODY_BYTES": "12"})
    text = "\n".join(info.value.problems)
    for fragment in ("http.port", "http.hots", "log.level", "nope", "http.max_body_bytes"):
        assert fragment in text, fragment
    assert all(p.startswith(str(cfg)) for p in info.value.problems)


def test_broken_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[http\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "missing.toml", env={})
