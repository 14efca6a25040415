"""CAP and ATOM/RSS index feeds against a real local upstream and Redis."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path
from typing import Any

import pytest
from feedkit import CAP, StartWarnd, Upstream, atom, hub, poll, rss
from redis.asyncio import Redis

from warnd.feeds.poller import FEEDS, backoff_delay
from warnd.identifiers import alert_id
from warnd.keys import Keys
from warnd.store import AlertState, AlertStore

REPO = Path(__file__).resolve().parents[1]
RAIN = [CAP / "zh" / f"tw-cwa-heavy-rain-{n}.xml" for n in ("1-alert", "2-update", "3-update")]
RAIN_CANCEL = CAP / "zh" / "tw-cwa-heavy-rain-4-cancel.xml"
RAIN_IDS = [
    alert_id("weather@cwa.gov.tw", f"CWA-Weather_extremely-rain_20240422{t}")
    for t in ("1405001", "1445001", "1705001", "2105001")
]
CWA = ["weather@cwa.gov.tw"]


def feed(url: str, kind: str = "cap-index", **kw: Any) -> dict[str, Any]:
    return {"kind": kind, "url": url, "trusted_senders": CWA, "interval": 60, "timeout": 2} | kw


async def test_atom_index_that_grows_is_fetched_entry_by_entry_once(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    urls = [upstream.serve(f"cap/{i}.xml", p) for i, p in enumerate(RAIN)]
    index = upstream.serve("index.atom", atom(("e1", "2024-04-22T14:12:12+08:00", urls[0])))
    client = await start_warnd({"cwa": feed(index)})

    first = await poll(client, "cwa")
    assert (first.outcome, first.accepted, first.rejected) == ("processed", 1, 0)

    # The index grows by two entries (newest first, as ATOM feeds list them).
    upstream.serve(
        "index.atom",
        atom(
            ("e3", "2024-04-22T17:12:20+08:00", urls[2]),
            ("e2", "2024-04-22T14:57:47+08:00", urls[1]),
            ("e1", "2024-04-22T14:12:12+08:00", urls[0]),
        ),
    )
    second = await poll(client, "cwa")
    assert (second.accepted, second.duplicates, second.rejected) == (2, 0, 0)
    assert [upstream.hits[f"/cap/{i}.xml"] for i in range(3)] == [1, 1, 1]

    store = AlertStore(redis, Keys())
    recs = {r.id: r for r in await store.get_many(RAIN_IDS[:3])}
    assert recs[RAIN_IDS[0]].state is AlertState.SUPERSEDED
    assert recs[RAIN_IDS[1]].state is AlertState.SUPERSEDED
    assert recs[RAIN_IDS[2]].source == "feed:cwa"
    assert {r.chain for r in recs.values()} == {RAIN_IDS[0]}
    # Long expired (2024): recorded, not disseminated.
    assert any("already expired when received" in w for w in recs[RAIN_IDS[2]].warnings)


async def test_304_not_modified_and_gzip(upstream: Upstream, start_warnd: StartWarnd) -> None:
    url = upstream.serve("cap/1.xml", RAIN[0], gzip=True)
    index = upstream.serve("index.atom", atom(("e1", "2024-04-22T14:12:12+08:00", url)), gzip=True)
    client = await start_warnd({"cwa": feed(index)})
    assert (await poll(client, "cwa")).accepted == 1
    again = await poll(client, "cwa")
    assert again.outcome == "not_modified"
    index_requests = [h for p, h in upstream.seen if p == "/index.atom"]
    assert "If-None-Match" not in index_requests[0]
    assert index_requests[1]["If-None-Match"].startswith('"')
    assert "If-Modified-Since" in index_requests[1]
    assert "gzip" in index_requests[0]["Accept-Encoding"]
    assert upstream.hits["/cap/1.xml"] == 1


async def test_unchanged_body_without_validators_is_not_reprocessed(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    url = upstream.serve("one.xml", RAIN[0], etag=False)
    client = await start_warnd({"cwa": feed(url, kind="cap")})
    assert (await poll(client, "cwa")).accepted == 1
    assert (await poll(client, "cwa")).outcome == "unchanged"


async def test_rss_index_is_read_too(upstream: Upstream, start_warnd: StartWarnd) -> None:
    urls = [upstream.serve(f"r/{i}.xml", p) for i, p in enumerate(RAIN[:2])]
    index = upstream.serve(
        "index.rss",
        rss(("g2", "Mon, 22 Apr 2024 06:57:47 GMT", urls[1]), ("g1", "x", "r/0.xml")),
    )
    client = await start_warnd({"cwa": feed(index)})
    result = await poll(client, "cwa")
    assert (result.accepted, result.rejected) == (2, 0)  # the relative link resolved too


async def test_500_backs_off_keeps_last_good_state_and_recovers(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    url = upstream.serve("one.xml", RAIN[0])
    client = await start_warnd({"cwa": feed(url, kind="cap", interval=10, backoff_max=1000)})
    ok = await poll(client, "cwa")
    good = await client.app[FEEDS].health("cwa")
    assert good["status"] == "ok" and good["consecutive_failures"] == 0

    upstream.routes["/one.xml"].mode = "500"
    waits = []
    for n in (1, 2, 3):
        failed = await poll(client, "cwa")
        assert failed.outcome == "failed" and "HTTP 500" in (failed.error or "")
        health = await client.app[FEEDS].health("cwa")
        assert health["consecutive_failures"] == n
        assert health["status"] == "failing"
        assert health["last_success_at"] == good["last_success_at"]  # last good state kept
        waits.append(failed.next_poll_at - health["last_poll_at"])
    # Equal jitter: failure n waits between 10 * 2**n / 2 and 10 * 2**n.
    for n, wait in enumerate(waits, start=1):
        assert 10 * 2**n / 2 <= wait <= 10 * 2**n + 0.01
    assert ok.next_poll_at - good["last_poll_at"] == pytest.approx(10, abs=0.01)

    upstream.routes["/one.xml"].mode = "ok"
    back = await poll(client, "cwa")
    assert back.error is None
    health = await client.app[FEEDS].health("cwa")
    assert health["consecutive_failures"] == 0 and health["failures"] == 3
    assert health["last_error"] and "HTTP 500" in health["last_error"]


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after() -> None:
    assert backoff_delay(1, 30, 3600, rand=lambda: 0.0) == 30
    assert backoff_delay(1, 30, 3600, rand=lambda: 1.0) == 60
    assert backoff_delay(4, 30, 3600, rand=lambda: 1.0) == 480
    assert backoff_delay(40, 30, 3600, rand=lambda: 1.0) == 3600
    assert backoff_delay(1, 30, 3600, rand=lambda: 0.0, retry_after=300) == 300
    assert backoff_delay(1, 30, 100, rand=lambda: 0.0, retry_after=300) == 100
    spread = {backoff_delay(3, 30, 3600) for _ in range(20)}
    assert len(spread) > 1 and all(120 <= d <= 240 for d in spread)


async def test_429_retry_after_is_honoured(upstream: Upstream, start_warnd: StartWarnd) -> None:
    url = upstream.serve("one.xml", RAIN[0], mode="429")
    client = await start_warnd({"cwa": feed(url, kind="cap", interval=1)})
    failed = await poll(client, "cwa")
    health = await client.app[FEEDS].health("cwa")
    assert "HTTP 429" in (failed.error or "")
    assert failed.next_poll_at - health["last_poll_at"] >= 6.99  # Retry-After: 7


async def test_timeout_and_truncated_entry_are_retried_so_nothing_is_missed(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    slow = upstream.serve("cap/slow.xml", RAIN[0], mode="slow", times=1)
    cut = upstream.serve("cap/cut.xml", RAIN[1], mode="truncated", times=1)
    index = upstream.serve(
        "index.atom",
        atom(("e2", "2024-04-22T14:57:47+08:00", cut), ("e1", "2024-04-22T14:12:12+08:00", slow)),
    )
    client = await start_warnd({"cwa": feed(index, timeout=1.0)})
    first = await poll(client, "cwa")
    assert first.outcome == "failed"
    assert "2 of 2 new index entries could not be fetched" in (first.error or "")
    store = AlertStore(redis, Keys())
    assert await store.get_many(RAIN_IDS[:2]) == []

    second = await poll(client, "cwa")  # the index itself is read again, not a 304
    assert (second.outcome, second.accepted) == ("processed", 2)
    assert upstream.hits["/index.atom"] == 2
    assert [r.id for r in await store.get_many(RAIN_IDS[:2])] == RAIN_IDS[:2]


async def test_timeout_and_truncation_of_the_document_itself_are_feed_failures(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    slow = upstream.serve("slow.xml", RAIN[0], mode="slow")
    cut = upstream.serve("cut.xml", RAIN[0], mode="truncated")
    client = await start_warnd(
        {"slow": feed(slow, kind="cap", timeout=0.3), "cut": feed(cut, kind="cap")}
    )
    timed_out = await poll(client, "slow")
    assert "no complete answer within 0.3 s" in (timed_out.error or "")
    truncated = await poll(client, "cut")
    assert "truncated" in (truncated.error or "")
    for name in ("slow", "cut"):
        health = await client.app[FEEDS].health(name)
        assert health["rejected"] == 0 and health["consecutive_failures"] == 1


async def test_unreachable_host_and_oversized_body_are_failures(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/alerts.xml"
    big = upstream.serve("big.xml", b"<x>" + b" " * 4096 + b"</x>")
    client = await start_warnd(
        {"dead": feed(dead, kind="cap"), "big": feed(big, kind="cap", max_bytes=1024)}
    )
    assert "cannot connect" in ((await poll(client, "dead")).error or "")
    assert "over the feed's limit of 1024 bytes" in ((await poll(client, "big")).error or "")


async def test_html_page_in_place_of_cap_is_quarantined_and_the_rest_processed(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    html = upstream.serve("cap/gone.xml", CAP / "invalid" / "tw-html-404-page-saved-as-cap.xml")
    good = upstream.serve("cap/1.xml", RAIN[0])
    index = upstream.serve(
        "index.atom",
        atom(("e2", "2024-04-22T14:57:47+08:00", html), ("e1", "2024-04-22T14:12:12+08:00", good)),
    )
    client = await start_warnd({"cwa": feed(index)})
    result = await poll(client, "cwa")
    assert (result.outcome, result.accepted, result.rejected) == ("processed", 1, 1)

    rejects, total = await hub(client).ingests["cwa"].state.rejects()
    assert total == 1
    assert rejects[0].item == html
    assert "HTML page" in rejects[0].reason
    assert rejects[0].body_bytes > 0 and rejects[0].body

    # The same broken document on the next polls is not counted again.
    upstream.serve("index.atom", atom(("e3", "2024-04-22T15:00:00+08:00", html)))
    await poll(client, "cwa")
    health = await hub(client).health("cwa")
    assert health["rejected"] == 1 and health["accepted"] == 1
    assert health["last_reject"] and "HTML" in health["last_reject"]


async def test_cap_feed_serving_html_is_quarantined_with_the_reason(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    url = upstream.serve(
        "alert.cap", CAP / "invalid" / "tw-html-404-page-saved-as-cap.xml", content_type="text/html"
    )
    client = await start_warnd({"tw": feed(url, kind="cap")})
    result = await poll(client, "tw")
    assert (result.accepted, result.rejected) == (0, 1)
    rejects, _ = await hub(client).ingests["tw"].state.rejects()
    assert "HTML page" in rejects[0].reason and "not a CAP alert" in rejects[0].reason


async def test_alerts_wrapper_root_is_unwrapped_each_alert_on_its_own(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    url = upstream.serve("smhi.xml", CAP / "invalid" / "se-smhi-alerts-wrapper-root.xml")
    client = await start_warnd(
        {"smhi": feed(url, kind="cap", trusted_senders=["noreplyvarning@smhi.se"])}
    )
    result = await poll(client, "smhi")
    assert (result.accepted, result.rejected) == (17, 0)
    rec = await AlertStore(redis, Keys()).get(
        alert_id("noreplyvarning@smhi.se", "smhi-bpm-1552396920785")
    )
    assert rec is not None and rec.source == "feed:smhi"
    assert rec.effective_state() is AlertState.EXPIRED
    assert "already expired when received: recorded, not disseminated" in rec.warnings


async def test_untrusted_sender_and_invalid_cap_are_quarantined(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    other = upstream.serve(
        "cap/nws.xml", CAP / "oasis" / "oasis-cap12-A2-severe-thunderstorm-polygon.xml"
    )
    bad = upstream.serve("cap/bad.xml", CAP / "invalid" / "missing-scope.xml")
    ns = upstream.serve("cap/ns.xml", CAP / "invalid" / "tw-wrong-namespace-alerts-1.2.xml")
    good = upstream.serve("cap/1.xml", RAIN[0])
    index = upstream.serve(
        "index.atom",
        atom(("a", "1", other), ("b", "1", bad), ("c", "1", ns), ("d", "1", good)),
    )
    client = await start_warnd({"cwa": feed(index)})
    result = await poll(client, "cwa")
    assert (result.accepted, result.rejected) == (1, 3)
    rejects, _ = await hub(client).ingests["cwa"].state.rejects()
    reasons = {r.item.rsplit("/", 1)[-1]: r.reason for r in rejects}
    assert "'KSTO@NWS.NOAA.GOV' is not trusted by feed 'cwa'" in reasons["nws.xml"]
    assert "schema" in reasons["bad.xml"]
    assert "namespace 'urn:oasis:names:tc:emergency:alerts:1.2'" in reasons["ns.xml"]


async def test_same_alert_on_two_feeds_is_one_alert(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    a = upstream.serve("a/alert.xml", RAIN[0])
    b = upstream.serve("b/alert.xml", RAIN[0], gzip=True)
    client = await start_warnd({"one": feed(a, kind="cap"), "two": feed(b, kind="cap")})
    first, second = await poll(client, "one"), await poll(client, "two")
    assert (first.accepted, second.accepted, second.duplicates) == (1, 0, 1)
    assert await redis.zcard(Keys().alerts_by_time) == 1
    rec = await AlertStore(redis, Keys()).get(RAIN_IDS[0])
    assert rec is not None and rec.source == "feed:one"


async def test_cancel_on_another_feed_links_the_chain(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    a = upstream.serve("a.xml", RAIN[2])
    b = upstream.serve("b.xml", RAIN_CANCEL)
    client = await start_warnd({"one": feed(a, kind="cap"), "two": feed(b, kind="cap")})
    await poll(client, "one")
    await poll(client, "two")
    rec = await AlertStore(redis, Keys()).get(RAIN_IDS[2])
    assert rec is not None and rec.state is AlertState.CANCELLED
    assert rec.cancelled_by == RAIN_IDS[3]


async def test_restart_between_polls_neither_duplicates_nor_misses(
    upstream: Upstream, start_warnd: StartWarnd, redis: Redis
) -> None:
    urls = [upstream.serve(f"cap/{i}.xml", p) for i, p in enumerate([*RAIN, RAIN_CANCEL])]
    entries = [("e1", "1", urls[0]), ("e2", "2", urls[1])]
    index = upstream.serve("index.atom", atom(*reversed(entries)))
    first_run = await start_warnd({"cwa": feed(index)})
    assert (await poll(first_run, "cwa")).accepted == 2
    await first_run.close()  # warnd stops

    entries += [("e3", "3", urls[2]), ("e4", "4", urls[3])]
    upstream.serve("index.atom", atom(*reversed(entries)))
    second_run = await start_warnd({"cwa": feed(index)})  # a new process, same Redis
    result = await poll(second_run, "cwa")
    assert (result.accepted, result.duplicates) == (2, 0)
    assert [upstream.hits[f"/cap/{i}.xml"] for i in range(4)] == [1, 1, 1, 1]
    assert await redis.zcard(Keys().alerts_by_time) == 4
    last = await AlertStore(redis, Keys()).get(RAIN_IDS[2])
    assert last is not None and last.state is AlertState.CANCELLED
    health = await hub(second_run).health("cwa")
    assert health["accepted"] == 4 and health["polls"] == 2


async def test_dead_entry_link_is_quarantined_after_repeated_failures(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    index = upstream.serve("index.atom", atom(("gone", "1", upstream.url("cap/missing.xml"))))
    client = await start_warnd({"cwa": feed(index)})
    for _ in range(4):
        assert (await poll(client, "cwa")).outcome == "failed"
    last = await poll(client, "cwa")
    assert (last.outcome, last.rejected) == ("processed", 1)
    rejects, _ = await hub(client).ingests["cwa"].state.rejects()
    assert "gave up after 5 attempts" in rejects[0].reason and "HTTP 404" in rejects[0].reason
    assert (await poll(client, "cwa")).outcome == "not_modified"
    assert upstream.hits["/cap/missing.xml"] == 5


async def test_garbage_index_is_a_failure_and_is_kept_for_inspection(
    upstream: Upstream, start_warnd: StartWarnd
) -> None:
    index = upstream.serve("index.atom", gzip.compress(b"not xml at all"))
    client = await start_warnd({"cwa": feed(index)})
    result = await poll(client, "cwa")
    assert result.outcome == "failed" and "not XML" in (result.error or "")
    health = await hub(client).health("cwa")
    assert health["rejected"] == 1 and health["consecutive_failures"] == 1
