"""Several `warnd serve` processes share the lanes; one is SIGKILLed mid-fan-out.

Real processes on the test Redis, the sandbox recording every send in
Redis (with the sending process's pid), so sends are counted across
processes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from dispatch_data import (
    Daemon,
    add_subscribers,
    alert_body,
    daemon_config,
    duplicates,
    import_heze_codes,
    phone,
    sandbox_sends,
    wait_for,
)
from redis.asyncio import Redis

from warnd.audit import Audit
from warnd.auth import Role, TokenStore
from warnd.dispatch.store import DeliveryStore
from warnd.keys import Keys

N = 10_000

CHANNELS = """
[dispatch]
reclaim_idle = 3
sweep_interval = 0.5
concurrency = 2
[channels.sms]
provider = "sandbox"
record = "redis"
latency = 0.1
batch_size = 50
"""


async def state_counts(redis: Redis, aid: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, n in (await DeliveryStore(redis, Keys()).counters(aid)).items():
        out[key.rsplit("|", 1)[1]] += n
    return out


async def test_sigkill_of_one_of_two_processes_mid_fan_out_loses_and_repeats_nothing(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    registry = await import_heze_codes(redis, tmp_path)
    await add_subscribers(redis, registry, N)
    token, _ = await TokenStore(redis, Keys(), Audit(redis, Keys())).create(
        "ops", Role.OPERATOR, [], actor="test"
    )
    a = Daemon(daemon_config(tmp_path, "a", redis_url, CHANNELS), tmp_path / "a.log")
    b = Daemon(daemon_config(tmp_path, "b", redis_url, CHANNELS), tmp_path / "b.log")
    try:
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"{a.url}/v1/alerts",
                json=alert_body(),
                headers={"Authorization": f"Bearer {token}"},
            )
            doc: Any = await resp.json()
            assert resp.status == 202, doc
            aid = doc["id"]

        async def both_sending() -> bool:
            pids = Counter(r["pid"] for r in await sandbox_sends(redis))
            return pids[str(a.pid)] >= 500 and pids[str(b.pid)] >= 500

        await wait_for(both_sending, "both processes sending")
        b.kill()
        killed_at = len(await sandbox_sends(redis))
        assert killed_at < N, "the fan-out finished before the kill: make it slower"

        async def finished() -> bool:
            c = await state_counts(redis, aid)
            return c["sent"] == N

        await wait_for(finished, "the survivor finishes every delivery", within=100)
        rows = [r for r in await sandbox_sends(redis) if r["alert_id"] == aid]
        assert not duplicates(rows)
        assert {r["address"] for r in rows} == {phone(i) for i in range(N)}
        by_pid = Counter(r["pid"] for r in rows)
        assert by_pid[str(a.pid)] > N - killed_at  # the survivor did the rest
        c = await state_counts(redis, aid)
        assert c == Counter({"sent": N})
    finally:
        b.stop()
        a.stop()
