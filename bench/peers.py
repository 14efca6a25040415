"""What a team would build instead of warnd, and the machine's own limit.

    .venv-arq/bin/python bench/peers.py arq-worker --redis URL --sink URL
    .venv-arq/bin/python bench/peers.py arq-enqueue --redis URL --recipients N
    .venv/bin/python bench/peers.py apprise --sink URL --recipients N
    .venv/bin/python bench/peers.py limit --redis URL --sink URL --recipients N

Each peer reaches the same sink (``bench/sink.py``) and the same recipients
as warnd (number ``i`` is ``+86139`` + ``i`` in 8 digits, or the Apprise
target ``/apprise/<i>``), one process each:

* **arq**: one job per recipient that renders a jinja2 template and POSTs one
  number to the SMS route — how a Python team would build fan-out on an
  asyncio Redis job queue: a worker (``--max-jobs``, ``--poll-delay``) and
  the jobs enqueued one call each (``arq-enqueue``). arq pins redis-py
  below 6, so both run from their own virtualenv (``.venv-arq``).
* **Apprise**: one ``Apprise`` object holding the recipients' ``json://`` URLs
  and one ``notify()``, which Apprise 2 sends from its thread pool.
* **limit**: only the unavoidable work — pre-built batches of 1,000 numbers
  XADDed into a Redis stream in pipelines, read back with XREADGROUP, one
  POST per batch (response read and checked), XACK — the ceiling for this
  machine, Redis and Python. With ``--robots``: batches of 50 robot keys
  and one webhook POST per recipient, the ceiling for scenario 2. It runs
  on the event loop warnd runs on (uvloop when installed) and posts with
  the leanest HTTP client warnd has (``warnd_channels._http1``), so the ceiling
  is not lower than what warnd itself could reach.

``arq-enqueue``, ``apprise`` and ``limit`` print one JSON line with their timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import jinja2

TEMPLATE = (
    "【{{ office }}】{{ office }}{{ time }}发布{{ event }}：{{ description }}"
    "防御指南：{{ instruction }}（有效期至{{ expires }}）"
)
ALERT = {
    "office": "菏泽市气象台",
    "time": "7月1日08时00分",
    "event": "暴雨红色预警信号",
    "description": "预计未来3小时菏泽市降雨量将达100毫米以上，请注意防范。",
    "instruction": "停止集会、停课、停业；做好山洪、滑坡、泥石流等灾害的防御。",
    "expires": "7月2日20时00分",
}
SIGN = "菏泽应急"


def phone(i: int) -> str:
    return f"+86139{i:08d}"


# ------------------------------------------------------------------- arq
# arq pins redis-py below 6 and warnd uses a newer one, so arq runs from its
# own virtualenv (.venv-arq, made by `make bench`): only these functions
# import it, and only in that interpreter.

QUEUE = "bench:arq"


async def send_one(ctx: dict[str, Any], number: str, alert: dict[str, str]) -> str:
    """One recipient: render the message, POST it, check the gateway's answer."""
    text = ctx["template"].render(**alert)
    body = {"phones": [number], "content": text, "sign_name": SIGN}
    async with ctx["http"].post(ctx["sms_url"], json=body) as resp:
        doc = await resp.json()
    code = str(doc["results"][0]["code"])
    if code != "OK":
        raise RuntimeError(f"gateway refused {number}: {code}")
    return code


async def _startup(ctx: dict[str, Any]) -> None:
    env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)  # noqa: S701 - SMS text, not HTML
    ctx["template"] = env.from_string(TEMPLATE)
    ctx["http"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    ctx["sms_url"] = os.environ["BENCH_SINK_URL"] + "/sms"
    print("arq worker ready", flush=True)


async def _shutdown(ctx: dict[str, Any]) -> None:
    await ctx["http"].close()


def arq_worker(redis_url: str, sink_url: str, max_jobs: int, poll_delay: float) -> None:
    from arq.connections import RedisSettings  # type: ignore[import-not-found]
    from arq.worker import func, run_worker  # type: ignore[import-not-found]

    os.environ["BENCH_SINK_URL"] = sink_url

    class WorkerSettings:
        functions = [func(send_one, name="send_one")]  # noqa: RUF012 - arq reads class attributes
        on_startup = _startup
        on_shutdown = _shutdown
        redis_settings = RedisSettings.from_dsn(redis_url)
        queue_name = QUEUE

    run_worker(WorkerSettings, max_jobs=max_jobs, poll_delay=poll_delay)


async def arq_enqueue(redis_url: str, recipients: int) -> dict[str, Any]:
    """Enqueue one job per recipient, one call each, as an API handler would."""
    from arq.connections import RedisSettings, create_pool  # type: ignore[import-not-found, unused-ignore]

    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    start = time.time()
    for i in range(recipients):
        await pool.enqueue_job("send_one", phone(i), ALERT, _queue_name=QUEUE)
    took = time.time() - start
    await pool.aclose()
    return {"start": start, "enqueue_seconds": took, "recipients": recipients}


# ---------------------------------------------------------------- Apprise


def apprise_run(sink_url: str, recipients: int) -> dict[str, Any]:
    import apprise

    env = jinja2.Environment(autoescape=False)  # noqa: S701 - plain text
    host = sink_url.removeprefix("http://")
    start = time.perf_counter()
    text = env.from_string(TEMPLATE).render(**ALERT)
    notifier = apprise.Apprise()
    notifier.add([f"json://{host}/apprise/{i:08d}" for i in range(recipients)])
    ok = notifier.notify(body=text, title=ALERT["event"])
    return {"seconds": time.perf_counter() - start, "ok": bool(ok), "recipients": recipients}


# ------------------------------------------------------------------ limit


async def limit_run(
    redis_url: str,
    sink_url: str,
    recipients: int,
    batch: int,
    concurrency: int,
    connections: int,
    robots: bool,
) -> dict[str, Any]:
    """Pre-built batches through a Redis stream to the sink; seconds from the first XADD
    to the last answer. ``robots``: one POST per recipient (a batch's POSTs at most
    ``connections`` at once), else one POST per batch. ``concurrency`` batches in flight."""
    from redis.asyncio import Redis
    from warnd_channels._http1 import OriginPool

    redis = Redis.from_url(redis_url)
    stream = f"bench:limit:{secrets.token_hex(4)}"
    await redis.xgroup_create(stream, "g", id="0", mkstream=True)
    text = jinja2.Environment(autoescape=False).from_string(TEMPLATE).render(**ALERT)  # noqa: S701
    spans = [range(lo, min(recipients, lo + batch)) for lo in range(0, recipients, batch)]
    if robots:
        message = json.dumps(
            {"msgtype": "text", "text": {"content": text}}, ensure_ascii=False
        ).encode()
        bodies = [",".join(f"bench-{i:08d}" for i in span).encode() for span in spans]
    else:
        doc = {"content": text, "sign_name": SIGN}
        bodies = [
            json.dumps({"phones": [phone(i) for i in span], **doc}, ensure_ascii=False).encode()
            for span in spans
        ]
    done = asyncio.Event()
    sent = 0
    headers = {"Content-Type": "application/json; charset=utf-8"}
    http = OriginPool(sink_url, limit=connections, timeout=120.0)

    async def produce() -> None:
        for lo in range(0, len(bodies), 100):
            pipe = redis.pipeline(transaction=False)
            for body in bodies[lo : lo + 100]:
                pipe.xadd(stream, {"b": body})
            await pipe.execute()

    # The leanest client in the project (warnd's WeChat channel uses it too):
    # pre-encoded headers, keep-alive connections, llhttp for the answer.
    sms_head = http.head("POST", "/sms", headers)
    robot_head = http.head("POST", "/cgi-bin/webhook/send?key={key}", headers)
    robot_start, _, robot_end = robot_head.partition(b"{key}")
    message_bytes = message if robots else b""

    async def post_batch(body: bytes) -> None:
        answer = await http.request(sms_head, body)
        doc = json.loads(answer.body)
        if answer.status != 200 or len(doc["results"]) != len(json.loads(body)["phones"]):
            raise RuntimeError(f"sink answered {answer.status}")

    async def post_each(body: bytes) -> None:
        limit = asyncio.Semaphore(connections)

        async def one(key: str) -> None:
            async with limit:
                head = b"%s%s%s" % (robot_start, key.encode(), robot_end)
                doc = json.loads((await http.request(head, message_bytes)).body)
                if doc.get("errcode") != 0:
                    raise RuntimeError(f"sink answered {doc}")

        await asyncio.gather(*(one(k) for k in body.decode().split(",")))

    post = post_each if robots else post_batch

    async def consume(name: str) -> None:
        nonlocal sent
        while not done.is_set():
            got: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = (
                await redis.xreadgroup("g", name, {stream: ">"}, count=1, block=50)  # type: ignore[assignment]
            ) or []
            for _, entries in got:
                for entry_id, fields in entries:
                    await post(fields[b"b"])
                    await redis.xack(stream, "g", entry_id)
                    sent += 1
                    if sent == len(bodies):
                        done.set()

    start, cpu0, wait0 = time.perf_counter(), time.process_time(), _run_queue_s()
    try:
        await asyncio.gather(produce(), *(consume(f"c{k}") for k in range(concurrency)))
    finally:
        await http.close()
    seconds = time.perf_counter() - start
    cpu, wait = time.process_time() - cpu0, _run_queue_s() - wait0
    await redis.delete(stream)
    await redis.aclose()
    return {
        "seconds": seconds,
        "batches": len(bodies),
        "recipients": recipients,
        "cpu_s": round(cpu, 2),
        "run_queue_s": round(wait, 2),
    }


def _run_queue_s() -> float:
    """Seconds this process's threads have waited for a core (schedstat; 0 if unreadable)."""
    total = 0
    for stat in Path("/proc/self/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[1])
    return total / 1e9


def _loop_factory() -> Any:
    """warnd's event loop: uvloop when installed (see ``warnd.cli``)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("peer", choices=["arq-worker", "arq-enqueue", "apprise", "limit"])
    parser.add_argument("--redis", default="")
    parser.add_argument("--sink", default="")
    parser.add_argument("--recipients", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4, help="limit: batches in flight")
    parser.add_argument("--connections", type=int, default=10, help="limit: connections")
    parser.add_argument(
        "--robots", action="store_true", help="limit: one webhook POST per recipient"
    )
    parser.add_argument("--max-jobs", type=int, default=10, help="arq: jobs at once (arq's 10)")
    parser.add_argument(
        "--poll-delay", type=float, default=0.5, help="arq: seconds between polls (arq's 0.5)"
    )
    args = parser.parse_args()
    if args.peer == "arq-worker":
        arq_worker(args.redis, args.sink, args.max_jobs, args.poll_delay)
        return
    if args.peer == "arq-enqueue":
        out = asyncio.run(arq_enqueue(args.redis, args.recipients))
        print(json.dumps(out), flush=True)
        return
    if args.peer == "apprise":
        out = apprise_run(args.sink, args.recipients)
    else:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            out = runner.run(
                limit_run(
                    args.redis,
                    args.sink,
                    args.recipients,
                    args.batch,
                    args.concurrency,
                    args.connections,
                    args.robots,
                )
            )
    print(json.dumps(out), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
