"""`make bench` works: the harness at a tiny scale, and the sink's count of arrivals.

Only correctness is asserted (every delivery arrived exactly once, the JSON
has what the README promises), never a time: figures are bench/'s to print.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from sink import Tally  # noqa: E402


def test_harness_runs_every_scenario_and_every_delivery_arrives_once(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            *("--subscribers", "300", "--endpoints", "120", "--slow-endpoints", "30"),
            *("--peer-recipients", "60", "--reps", "1", "--probes", "1", "--match-runs", "2"),
            *("--stall", "20", "--out", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["exactly_once"] == {"ok": True, "problems": []}
    assert {"date", "command", "machine", "versions", "settings", "rows", "targets"} <= set(doc)
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["cpu_model"]
    assert {"python", "redis", "warnd", "arq", "apprise"} <= set(doc["versions"])
    assert "--subscribers 300" in doc["command"]
    rows = {r["key"]: r for r in doc["rows"]}
    for key in (
        "bulk.deliveries_per_s",
        "bulk.first_p99_ms",
        "bulk.final_s",
        "bulk.peak_rss_mib",
        "bulk.redis_bytes",
        "probe.first_ms",
        "scaleout.ratio",
        "webhook0.deliveries_per_s",
        "webhook50.deliveries_per_s",
        "match.geocode.p95_ms",
        "match.polygon.p95_ms",
        "bulk.redis_record_bytes",
        "limit.deliveries_per_s",
        "limit_each.deliveries_per_s",
        "arq.deliveries_per_s",
        "apprise.deliveries_per_s",
        "bulk.x_arq",
        "bulk.of_limit",
        "webhook0.x_apprise",
        "webhook0.of_limit",
    ):
        assert key in rows, key
        assert rows[key]["median"] > 0, rows[key]
    assert all(r["n"] == 1 for r in doc["rows"] if r["unit"] != "×")
    assert [t["met"] in (True, False) for t in doc["targets"]] == [True] * 9
    details = doc["details"]
    assert [r["deliveries"] for r in details["bulk"]] == [300]
    assert [r["deliveries"] for r in details["webhook0"]] == [120]
    assert (out.with_suffix(".md")).read_text().count("\n|") > 10


@pytest.mark.parametrize("together", [False, True], ids=["one by one", "one request"])
def test_the_sink_tells_lost_repeated_and_stray_recipients_apart(together: bool) -> None:
    allowed = np.zeros(10, np.bool_)
    allowed[[2, 4, 6]] = True
    tally = Tally(space=10, expect=3, allowed=allowed, counts=np.zeros(10, np.uint8))
    addresses = ["+8613900000002", "+8613900000004", "+8613900000004", "bench-00000005"]
    addresses += ["bench-00000099"]  # beyond the space
    if together:
        tally.add_many(addresses)  # every address ends in 8 digits: the numpy pass
    else:
        for address in addresses:
            tally.add(address)
    tally.add("not-a-recipient")
    st = tally.stats()
    assert (st["distinct"], st["missing"], st["duplicates"], st["unexpected"]) == (2, 1, 1, 3)
    assert st["deliveries"] == 6
    assert tally.counts.tolist() == [0, 0, 1, 0, 2, 0, 0, 0, 0, 0]
