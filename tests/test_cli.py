"""The `warnd` command as a user runs it: real processes, embedded Redis."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CAP = REPO.parent / "shared" / "data" / "cap"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def warnd_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "warnd", *args]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        warnd_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def write_config(tmp_path: Path, port: int, **extra: str) -> Path:
    cfg = tmp_path / "warnd.toml"
    lines = [
        f'data_dir = "{tmp_path / "d"}"',
        f'taxonomy_file = "{REPO / "config" / "taxonomy.toml"}"',
        "[http]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "[issuer]",
        'area_code = "371700"',
        "[log]",
        'format = "json"',
        *extra.values(),
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


class Daemon:
    """`warnd serve` as a child process, stopped with SIGTERM."""

    def __init__(self, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARND_")}
        self.proc = subprocess.Popen(
            warnd_cmd("serve", "--config", str(config)),
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = self._wait_for_listen()

    def _wait_for_listen(self, timeout: float = 60) -> str:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        while sel.select(timeout):
            line = self.proc.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                return line.split("listening on ", 1)[1].split(",")[0].strip()
        self.proc.kill()
        _, err = self.proc.communicate()
        raise AssertionError(f"warnd serve did not start: {err[-2000:]}")

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err


@pytest.fixture
def daemon_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, free_tcp_port())


def http_get(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def test_serve_send_restart_keeps_alerts_with_embedded_redis(daemon_config: Path) -> None:
    daemon = Daemon(daemon_config)
    try:
        # The CLI reuses the running daemon's embedded Redis (its socket).
        made = run(
            "token", "create", "--config", str(daemon_config), "--name", "ops", "--role", "operator"
        )
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        sent = run(
            "send",
            "--config",
            str(daemon_config),
            "--token",
            token,
            str(CAP / "zh" / "tw-cwa-heavy-rain-1-alert.xml"),
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        accepted = json.loads(sent.stdout)
        assert accepted["created"] is True
    finally:
        code, err = daemon.stop()
    assert code == 0, err
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "alert.accepted" in events and "warnd.stopped" in events
    assert not (daemon_config.parent / "d" / "redis.sock").exists(), "embedded Redis left running"

    again = Daemon(daemon_config)
    try:
        got = http_get(f"{again.url}/v1/alerts/{accepted['id']}", token)
        assert got["record"]["identifier"] == accepted["identifier"]
    finally:
        code, err = again.stop()
    assert code == 0, err


def test_unreachable_redis_is_one_clear_line_and_non_zero_exit(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_tcp_port())
    port = free_tcp_port()
    result = run(
        "token",
        "list",
        "--config",
        str(cfg),
        env={"WARND_REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warnd: error: cannot reach Redis")
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr

    serve = run(
        "serve", "--config", str(cfg), env={"WARND_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    )
    assert serve.returncode == 2
    assert "Traceback" not in serve.stderr
    assert "cannot reach Redis" in serve.stderr


def test_check_accepts_the_shipped_configs() -> None:
    for cfg in ("config/demo.toml", "config/warnd.toml"):
        result = run("check", "--config", cfg)
        assert result.returncode == 0, result.stderr
        assert "OK" in result.stdout


def test_check_lists_every_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        'taxonomy_file = "nowhere.toml"\n'
        '[http]\nport = 99999\nhots = "x"\n'
        '[issuer]\narea_code = "37"\n'
    )
    result = run("check", "--config", str(cfg))
    assert result.returncode == 2
    err = result.stderr
    assert "http.port" in err and "http.hots" in err and "issuer.area_code" in err
    assert "Traceback" not in err

    cfg.write_text(f'taxonomy_file = "{tmp_path / "missing.toml"}"\n')
    result = run("check", "--config", str(cfg))
    assert result.returncode == 1
    assert "missing.toml" in result.stderr


def test_token_lifecycle_against_a_configured_redis(tmp_path: Path, redis_url: str) -> None:
    cfg = write_config(tmp_path, free_tcp_port())
    env = {"WARND_REDIS_URL": redis_url}
    made = run(
        "token",
        "create",
        "--config",
        str(cfg),
        "--name",
        "曹县值班",
        "--role",
        "operator",
        "--area",
        "371721",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("wdt_")
    listed = json.loads(run("token", "list", "--json", "--config", str(cfg), env=env).stdout)
    assert [(t["name"], t["role"], t["areas"], t["revoked_at"]) for t in listed] == [
        ("曹县值班", "operator", ["371721"], None)
    ]
    revoked = run("token", "revoke", "曹县值班", "--config", str(cfg), env=env)
    assert revoked.returncode == 0, revoked.stderr
    listed = json.loads(run("token", "list", "--json", "--config", str(cfg), env=env).stdout)
    assert listed[0]["revoked_at"] is not None
    bad = run(
        "token",
        "create",
        "--config",
        str(cfg),
        "--name",
        "x",
        "--role",
        "operator",
        "--area",
        "37a",
        env=env,
    )
    assert bad.returncode == 2 and "37a" in bad.stderr


def test_serve_that_fails_to_start_stops_its_embedded_redis(tmp_path: Path) -> None:
    """A start-up error after the embedded redis-server started leaves no server behind."""
    cfg = write_config(
        tmp_path,
        free_tcp_port(),
        subscribers=f'[subscribers]\nimport = ["{tmp_path / "nowhere.csv"}"]',
    )
    result = run("serve", "--config", str(cfg))
    assert result.returncode == 2, result.stderr
    assert "nowhere.csv" in result.stderr and "Traceback" not in result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    started = [e for e in events if e["event"] == "redis.embedded_started"]
    assert len(started) == 1
    assert any(e["event"] == "redis.embedded_stopped" for e in events)
    with pytest.raises(ProcessLookupError):
        os.kill(started[0]["pid"], 0)
