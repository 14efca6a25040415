"""Real peers for the channel tests: Kannel, mosquitto, SMTP, HTTP gateways.

Kannel (bearerbox + smsbox + the ``fakesmsc`` SMSC) and mosquitto are the
Debian packages, started here on free ports in a temp dir — never the
machine's shared services. ``make test`` installs them when missing; in CI
(``CI=true``) a missing binary fails the test with a clear message instead
of skipping it.

The HTTP peers are aiohttp servers that behave like the documented APIs:
the WeChat Work group robot (request/response shapes, errcodes, byte
limits, its per-key minute window) and a cloud SMS API (up to 1,000
numbers per call, per-number results, 429 with Retry-After, 5xx, hangs).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

FAKESMSC = Path("/usr/lib/kannel/test/fakesmsc")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(path: str | Path, package: str) -> str:
    """The binary's path; skip locally, fail in CI, when it is missing."""
    found = shutil.which(str(path)) or (str(path) if Path(path).exists() else None)
    if found:
        return found
    msg = f"{path} is missing: install the Debian package {package} (make test does)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ------------------------------------------------------------------ Kannel


@dataclass
class Kannel:
    sendsms_url: str
    username: str
    password: str
    receipts_port: int
    """warnd's receipts endpoint must listen here (dlr-url and MO get-url)."""
    fake_log: Path
    fakesmsc: subprocess.Popen[bytes]
    receipt_secret: str = "kannel-receipts-secret"
    """In the MO service's get-url; configure the channel's receipt_secret to match."""

    def received(self) -> list[str]:
        """Lines fakesmsc printed for each message the SMSC got."""
        text = self.fake_log.read_text(errors="replace")
        return [ln for ln in text.splitlines() if "Got message" in ln]

    def inject_reply(self, sender: str, to: str, text: str) -> None:
        """An MO message, as if ``sender`` replied from a phone."""
        assert self.fakesmsc.stdin is not None
        self.fakesmsc.stdin.write(f"{sender} {to} text {text}\n".encode())
        self.fakesmsc.stdin.flush()


@pytest.fixture(scope="module")
def kannel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kannel]:
    bearerbox = require_binary("bearerbox", "kannel")
    smsbox = require_binary("smsbox", "kannel")
    fakesmsc = require_binary(FAKESMSC, "kannel-extras")
    d = tmp_path_factory.mktemp("kannel")
    admin, box, smsc, sendsms, receipts = (free_port() for _ in range(5))
    conf = d / "kannel.conf"
    conf.write_text(
        f"""
group = core
admin-port = {admin}
admin-password = admin-{admin}
smsbox-port = {box}
box-allow-ip = 127.0.0.1
admin-allow-ip = 127.0.0.1
log-file = "{d}/bearerbox.log"
log-level = 1
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = fake
port = {smsc}
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {box}
sendsms-port = {sendsms}
log-file = "{d}/smsbox.log"
log-level = 1

group = sendsms-user
username = warnd
password = kannel-test-pw
max-messages = 10
concatenation = true

group = sms-service
keyword = default
catch-all = true
max-messages = 0
get-url = "http://127.0.0.1:{receipts}/v1/receipts/sms?secret=kannel-receipts-secret&kind=mo&from=%p&to=%P&text=%a&ts=%T"
"""
    )
    procs: list[subprocess.Popen[bytes]] = []
    out = (d / "procs.log").open("ab")
    try:
        procs.append(subprocess.Popen([bearerbox, str(conf)], stdout=out, stderr=out, cwd=d))
        wait_port(box)
        procs.append(subprocess.Popen([smsbox, str(conf)], stdout=out, stderr=out, cwd=d))
        wait_port(smsc)
        fake_log = d / "fakesmsc.log"
        with fake_log.open("ab") as fake_out:
            fake = subprocess.Popen(
                [fakesmsc, "-H", "127.0.0.1", "-r", str(smsc), "-i", "0.05"],
                stdin=subprocess.PIPE,
                stdout=fake_out,
                stderr=subprocess.STDOUT,
                cwd=d,
            )
        procs.append(fake)
        wait_port(sendsms)
        yield Kannel(
            sendsms_url=f"http://127.0.0.1:{sendsms}/cgi-bin/sendsms",
            username="warnd",
            password="kannel-test-pw",
            receipts_port=receipts,
            fake_log=fake_log,
            fakesmsc=fake,
        )
    finally:
        for proc in reversed(procs):
            if proc.stdin is not None:
                proc.stdin.close()
            _stop(proc)
        out.close()


# --------------------------------------------------------------- mosquitto


@dataclass
class Mosquitto:
    host: str
    port: int


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    binary = require_binary(shutil.which("mosquitto") or "/usr/sbin/mosquitto", "mosquitto")
    d = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    with (d / "mosquitto.log").open("ab") as out:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=out, cwd=d)
    try:
        wait_port(port)
        yield Mosquitto("127.0.0.1", port)
    finally:
        _stop(proc)


# ----------------------------------------------------------- WeChat robot


@dataclass
class WeChatServer:
    """The documented robot API: POST /cgi-bin/webhook/send?key=…"""

    keys: set[str]
    per_minute: int = 20
    window: float = 60.0
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    hang: bool = False
    _times: dict[str, deque[float]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        if self.hang:
            await asyncio.sleep(3600)
        if key not in self.keys:
            return web.json_response({"errcode": 93000, "errmsg": "invalid webhook url"})
        now = time.monotonic()
        times = self._times.setdefault(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.per_minute:
            return web.json_response({"errcode": 45009, "errmsg": "api freq out of limit"})
        try:
            body = json.loads(await request.read())
            kind = body["msgtype"]
            content = body[kind]["content"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"errcode": 40035, "errmsg": "invalid parameter"})
        limit = {"text": 2048, "markdown": 4096}.get(kind)
        if limit is None:
            return web.json_response({"errcode": 40008, "errmsg": "invalid message type"})
        if len(content.encode()) > limit:
            return web.json_response(
                {"errcode": 40058, "errmsg": f"content exceed max length {limit}"}
            )
        times.append(now)
        self.received.append((key, body))
        return web.json_response({"errcode": 0, "errmsg": "ok"})


# --------------------------------------------------------------- cloud SMS


@dataclass
class CloudSmsServer:
    """A cloud-style SMS API: ≤ 1,000 numbers per call, per-number results."""

    api_key: str
    mode: str = "ok"  # ok | 429 | 500 | hang | garbage
    bad_numbers: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"code": "Unauthorized"}, status=401)
        body = json.loads(await request.read())
        self.requests.append(body)
        if self.mode == "429":
            return web.json_response(
                {"code": "Throttled"}, status=429, headers={"Retry-After": "7"}
            )
        if self.mode == "500":
            return web.json_response({"code": "InternalError"}, status=500)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "garbage":
            return web.Response(text="<html>ok</html>")
        phones = body["phones"]
        if len(phones) > 1000:
            return web.json_response({"code": "TooManyNumbers"}, status=400)
        results = []
        for phone in phones:
            self.next_id += 1
            if phone in self.bad_numbers:
                results.append(
                    {
                        "phone": phone,
                        "code": "isv.MOBILE_NUMBER_ILLEGAL",
                        "message": "invalid mobile number",
                    }
                )
            else:
                results.append({"phone": phone, "code": "OK", "msg_id": f"m{self.next_id}"})
        return web.json_response({"code": "OK", "results": results})
