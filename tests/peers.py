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

For TLS, ``tls_files`` is a throwaway CA (``trustme``) with a certificate
for 127.0.0.1; ``mosquitto_tls`` is a broker with only a TLS listener and
password authentication; :class:`SmtpRecorder` runs behind aiosmtpd with
STARTTLS or implicit TLS and AUTH (see :func:`smtp_controller`).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

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
    mo_get_url: str = ""
    """The ``get-url`` of kannel.conf's ``sms-service``: replies (MO) to warnd."""

    def received(self) -> list[str]:
        """Lines fakesmsc printed for each message the SMSC got."""
        text = self.fake_log.read_text(errors="replace")
        return [ln for ln in text.splitlines() if "Got message" in ln]

    def inject_reply(self, sender: str, to: str, text: str) -> None:
        """An MO message, as if ``sender`` replied from a phone.

        One at a time: fakesmsc reads stdin through stdio but waits on the
        descriptor, so a second line written before the first was sent stays
        in its buffer until the next one (or the end of input) arrives.
        """
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
    mo_get_url = (
        f"http://127.0.0.1:{receipts}/v1/receipts/sms?secret=kannel-receipts-secret"
        "&kind=mo&from=%p&to=%P&text=%a&ts=%T"
    )
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
get-url = "{mo_get_url}"
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
            mo_get_url=mo_get_url,
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

    def client_args(self) -> dict[str, Any]:
        """What an MQTT client needs beyond host and port (TLS, credentials)."""
        return {}


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


@dataclass
class SimulatedBoard:
    """A display board on the broker: reports ``online`` (``offline`` as its last
    will), and acknowledges what it is told to show or clear."""

    broker: Mosquitto
    id: str
    prefix: str = "warnd/boards"
    shown: list[dict[str, Any]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        will = aiomqtt.Will(f"{self.prefix}/{self.id}/status", "offline", qos=1, retain=True)
        async with aiomqtt.Client(
            self.broker.host, self.broker.port, will=will, **self.broker.client_args()
        ) as client:
            await client.subscribe(f"{self.prefix}/{self.id}/display", qos=1)
            await client.publish(f"{self.prefix}/{self.id}/status", "online", qos=1, retain=True)
            self.ready.set()
            async for message in client.messages:
                payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                self.shown.append(payload)
                ack = {
                    "delivery_id": payload["delivery_id"],
                    "status": "cleared" if payload["action"] == "clear" else "shown",
                }
                await client.publish(f"{self.prefix}/{self.id}/ack", json.dumps(ack), qos=1)


# --------------------------------------------------------------------- TLS


@dataclass
class TlsFiles:
    """A throwaway CA and a server certificate (chain + key) for 127.0.0.1 and localhost."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    import trustme

    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA(organization_name="warnd test CA")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
    ca.cert_pem.write_to_path(str(files.ca_file))
    files.cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(files.key_file))
    return files


@dataclass
class MosquittoTls(Mosquitto):
    """A broker with only a TLS listener; anonymous clients are refused."""

    ca_file: Path = Path()
    username: str = "warnd"
    password: str = ""

    def client_args(self) -> dict[str, Any]:
        return {
            "tls_context": ssl.create_default_context(cafile=str(self.ca_file)),
            "username": self.username,
            "password": self.password,
        }


@pytest.fixture(scope="module")
def mosquitto_tls(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[MosquittoTls]:
    binary = require_binary(shutil.which("mosquitto") or "/usr/sbin/mosquitto", "mosquitto")
    passwd = require_binary(
        shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "mosquitto"
    )
    d = tmp_path_factory.mktemp("mosquitto-tls")
    port = free_port()
    password = "mqtt-tls-pw-" + os.urandom(4).hex()
    subprocess.run(
        [passwd, "-c", "-b", str(d / "passwd"), "warnd", password],
        check=True,
        capture_output=True,
    )
    conf = d / "mosquitto.conf"
    conf.write_text(
        # As root mosquitto would switch to its own user, which cannot read the
        # test's private temp dir: it stays the user that started it.
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        "persistence false\n"
        "allow_anonymous false\n"
        f"password_file {d / 'passwd'}\n"
        f"listener {port} 127.0.0.1\n"
        f"cafile {tls_files.ca_file}\n"
        f"certfile {tls_files.cert_file}\n"
        f"keyfile {tls_files.key_file}\n"
    )
    with (d / "mosquitto.log").open("ab") as out:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=out, cwd=d)
    try:
        wait_port(port)
        yield MosquittoTls("127.0.0.1", port, tls_files.ca_file, "warnd", password)
    finally:
        _stop(proc)


# -------------------------------------------------------------------- SMTP


class SmtpRecorder:
    """An aiosmtpd handler: refuses some recipients, records what it accepts,
    and (as ``authenticator``) checks AUTH against ``logins``."""

    def __init__(self, reject: set[str], logins: dict[str, str] | None = None) -> None:
        self.reject = reject
        self.logins = logins or {}
        self.messages: list[tuple[list[str], bytes]] = []
        self.sessions = 0
        self.accepted: list[tuple[bool, bool]] = []
        """(over TLS, authenticated) of each accepted message."""

    async def handle_EHLO(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        if server.transport is None or server.transport.get_extra_info("ssl_object") is None:
            self.sessions += 1  # not again for the EHLO that follows STARTTLS
        elif server.tls_context is None:
            self.sessions += 1  # implicit TLS: the first EHLO is already encrypted
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.reject:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        self.messages.append((list(envelope.rcpt_tos), data))
        tls = server.transport is not None and (
            server.transport.get_extra_info("ssl_object") is not None
        )
        self.accepted.append((tls, bool(session.authenticated)))
        return "250 2.0.0 Ok: queued"

    def authenticate(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.logins.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False)


class _SmtpsController(Controller):
    """aiosmtpd behind implicit TLS (SMTPS, port 465). aiosmtpd only knows TLS
    it negotiated itself (STARTTLS), so AUTH must not wait for that, and it
    warns about exactly this setting on every connection."""

    def factory(self) -> SMTPServer:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return super().factory()


def smtp_controller(
    recorder: SmtpRecorder, *, tls: TlsFiles | None = None, implicit: bool = False
) -> tuple[Controller, int]:
    """aiosmtpd on a free port: plain, STARTTLS (required before AUTH and MAIL),
    or implicit TLS; AUTH required when the recorder has logins. Started."""
    port = free_port()
    kwargs: dict[str, Any] = {}
    if recorder.logins:
        kwargs |= {"authenticator": recorder.authenticate, "auth_required": True}
    if tls is not None and implicit:
        # The whole connection is TLS; aiosmtpd only knows of STARTTLS.
        kwargs |= {"ssl_context": tls.server_context(), "auth_require_tls": False}
    elif tls is not None:
        kwargs |= {"tls_context": tls.server_context(), "require_starttls": True}
    kind = _SmtpsController if tls is not None and implicit else Controller
    controller = kind(recorder, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, port


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
    """A cloud-style SMS API: ≤ 1,000 numbers per call, per-number results.

    ``POST /sms/send`` takes the numbers (``phones``) and a request id
    (``out_id``); ``POST /sms/query`` (:meth:`handle_query`) answers, per
    number of a request id, the status of what it took (``report``) or
    ``NOT_FOUND`` — the shape of the providers' status-query APIs.
    """

    api_key: str
    mode: str = "ok"  # ok | 429 | 500 | hang | garbage
    bad_numbers: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 0
    hang_once: str = ""
    """The next send only: ``accepted`` takes the messages but answers after the
    client gave up; ``dropped`` takes nothing and answers as late."""
    hang_seconds: float = 3.0
    report: str = "SENT"
    """What the query says of a message it took (``SENT``, ``DELIVRD`` …)."""
    query_mode: str = "ok"  # ok | 500 | garbage | unknown (a status no mapping knows)
    queries: list[dict[str, Any]] = field(default_factory=list)
    taken: dict[tuple[str, str], str] = field(default_factory=dict)
    """(request id, number) → message id of every message taken."""
    numeric_ids_from: int | None = None
    """Message ids as JSON integers counting up from this (some providers' are past 64 bits)."""

    def authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def delivery_reports(self, status: str = "DELIVRD") -> list[dict[str, str]]:
        """The delivery report of every message taken, as the providers post them
        back: the request id warnd sent (``out_id``), the number, the message id."""
        return [
            {"out_id": out_id, "phone": number, "msg_id": mid, "status": status}
            for (out_id, number), mid in self.taken.items()
        ]

    async def handle_query(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return web.json_response({"code": "Unauthorized"}, status=401)
        body = json.loads(await request.read())
        self.queries.append(body)
        if self.query_mode == "500":
            return web.json_response({"code": "InternalError"}, status=500)
        if self.query_mode == "garbage":
            return web.Response(text="<html>busy</html>")
        results = []
        for phone in body.get("phones", []):
            mid = self.taken.get((str(body.get("out_id")), phone))
            if self.query_mode == "unknown":
                results.append({"phone": phone, "status": "PROCESSING?"})
            elif mid is None:
                results.append({"phone": phone, "status": "NOT_FOUND"})
            else:
                results.append({"phone": phone, "status": self.report, "msg_id": mid})
        return web.json_response({"code": "OK", "results": results})

    async def handle(self, request: web.Request) -> web.Response:
        if not self.authorised(request):
            return web.json_response({"code": "Unauthorized"}, status=401)
        body = json.loads(await request.read())
        self.requests.append(body)
        once, self.hang_once = self.hang_once, ""
        if once == "dropped":
            await asyncio.sleep(self.hang_seconds)
            return web.json_response({"code": "Timeout"}, status=504)
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
                base = self.numeric_ids_from
                mid: str | int = f"m{self.next_id}" if base is None else base + self.next_id
                results.append({"phone": phone, "code": "OK", "msg_id": mid})
                self.taken[(str(body.get("out_id")), phone)] = str(mid)
        if once == "accepted":
            await asyncio.sleep(self.hang_seconds)
        return web.json_response({"code": "OK", "results": results})
