"""The processes of a benchmark run: redis-server, the sink, `warnd serve`, peers.

Everything listens on 127.0.0.1 on a free port and is stopped by the run
that started it (only by its own process id). Nothing here times anything;
see ``bench/scenarios.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and load: what a figure was measured on."""
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


class Child:
    """A child process whose output goes to a log file; ready when a line appears."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def start(self, marker: str, within: float = 180.0) -> str:
        """Start it; the rest of the first log line containing ``marker``."""
        self._out = self.log.open("w")
        self._proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed argv; returns at once
            self.argv,
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if not k.startswith("WARND_")},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            at = text.find(marker)
            if at >= 0:
                return text[at + len(marker) :].split("\n", 1)[0].strip()
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not start (no {marker!r}); its log ends:\n{tail}")

    def stop(self, timeout: float = 30.0) -> None:
        if self._proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._out.close()

    def tree(self) -> list[psutil.Process]:
        if not self.running:
            return []
        try:
            me = psutil.Process(self.pid)
            return [me, *me.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        """Resident bytes of the process and its children now."""
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def peak_rss(self) -> int:
        """Highest resident bytes since start (``VmHWM``), summed over the tree."""
        total = 0
        for p in self.tree():
            try:
                with open(f"/proc/{p.pid}/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total


# ------------------------------------------------------------------- sink


class Sink:
    """``bench/sink.py`` in its own process, and its control API."""

    def __init__(self, work: Path) -> None:
        self.child = Child(
            "sink",
            [PYTHON, str(REPO / "bench" / "sink.py"), "--port", str(free_port())],
            work / "sink.log",
        )
        self.url = ""
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> Sink:
        self.url = await self.child.start("sink listening on ")
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("the sink was not started")
        return self._http

    async def reset(
        self, space: int, expect: list[int] | None = None, latency: float = 0.0
    ) -> None:
        """A new run: recipients ``0 … space-1``, those in ``expect`` (default all) expected."""
        doc = {"space": space, "expect": expect, "latency": latency}
        async with self.http.post(f"{self.url}/reset", json=doc) as resp:
            resp.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.url}/stats") as resp:
            doc: dict[str, Any] = await resp.json()
            return doc

    async def wait(self, count: int, *, stall: float = 60.0, every: float = 0.1) -> dict[str, Any]:
        """Stats once ``count`` distinct recipients arrived, or nothing arrived for ``stall`` s."""
        last_seen, last_change = -1, time.monotonic()
        while True:
            st = await self.stats()
            if st["distinct"] >= count:
                return st
            if st["deliveries"] != last_seen:
                last_seen, last_change = st["deliveries"], time.monotonic()
            elif time.monotonic() - last_change > stall:
                return st
            await asyncio.sleep(every)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
        self.child.stop()


# ------------------------------------------------------------------ warnd


def warnd_config(
    path: Path,
    *,
    data_dir: Path,
    port: int,
    redis_url: str,
    sink_url: str,
    log_level: str,
    concurrency: int | None,
) -> Path:
    """The benchmark's `warnd serve` configuration: the real HTTP SMS and robot providers.

    ``public`` subscribers (SMS) hear rainstorm warnings, ``robots`` (one
    WeChat robot each) gale warnings, so one registry serves both scenarios.
    The HTTP SMS provider's default rate (20 per second, meant for requests)
    is lifted: the sink has no limit to protect.
    """
    dispatch = f"concurrency = {concurrency}\n" if concurrency else ""
    path.write_text(
        f'data_dir = "{data_dir}"\n'
        "[http]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        "[redis]\n"
        f'url = "{redis_url}"\n'
        "[log]\n"
        f'level = "{log_level}"\n'
        'format = "json"\n'
        "[issuer]\n"
        'area_code = "371700"\n'
        'sender = "yjj@heze.gov.cn"\n'
        'sender_name = "菏泽市应急管理局"\n'
        "[groups.public]\n"
        'name = "公众"\n'
        'hazards = ["rainstorm"]\n'
        'channels = ["sms"]\n'
        "[groups.robots]\n"
        'name = "群机器人"\n'
        'hazards = ["gale"]\n'
        'channels = ["wechat"]\n'
        "[channels.sms]\n"
        'provider = "http"\n'
        f'url = "{sink_url}/sms"\n'
        'sender = "菏泽应急"\n'
        "numbers_per_request = 1000\n"
        "rate_count = 100000000\n"
        "[channels.wechat]\n"
        'provider = "robot"\n'
        f'base_url = "{sink_url}"\n'
        f"[dispatch]\n{dispatch}"
    )
    return path


class Warnd:
    """One `warnd serve` process on the benchmark's Redis."""

    def __init__(self, work: Path, name: str, redis_url: str, sink_url: str, **opts: Any) -> None:
        self.name = name
        self.port = free_port()
        self.config = warnd_config(
            work / f"{name}.toml",
            data_dir=work / name,
            port=self.port,
            redis_url=redis_url,
            sink_url=sink_url,
            **opts,
        )
        self.child = Child(
            name,
            [PYTHON, "-m", "warnd", "serve", "--config", str(self.config)],
            work / f"{name}.log",
        )
        self.url = f"http://127.0.0.1:{self.port}"

    async def start(self) -> Warnd:
        await self.child.start("listening on ", within=300)
        return self

    def stop(self) -> None:
        self.child.stop()


def cli(config: Path, *args: str, timeout: float = 900) -> str:
    """Run a ``warnd`` command on ``config``; its standard output."""
    done = subprocess.run(  # noqa: S603 - argv built here from fixed parts
        [PYTHON, "-m", "warnd", *args, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if not k.startswith("WARND_")},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"warnd {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return done.stdout
