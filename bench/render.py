"""Rendering cost: renders per second for one variant, and a 1,000,000-recipient alert.

    .venv/bin/python bench/render.py [--recipients N] [--areas N]

Prints figures; asserts nothing. The recipients are spread over four
channels, two languages (90 % Simplified Chinese, some as ``zh-CN`` or
``zh``) and ``--areas`` township names; :class:`warnd.render.Variants`
renders each distinct message once and hands the rest from its memo.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from warnd.limits import LengthUnit, MessageLimits
from warnd.model import Level
from warnd.render import Renderer, sample_alert
from warnd.settings import Settings
from warnd.taxonomy import load_default

CHANNELS = {
    "sms": MessageLimits(LengthUnit.UCS2, max_parts=3),
    "wechat": MessageLimits(LengthUnit.UTF8_BYTES, max_length=4096, markdown=True),
    "email": MessageLimits(LengthUnit.CHARS, max_subject=78),
    "board": MessageLimits(LengthUnit.CHARS, line_chars=16, lines=8),
}


def per_second(fn: Callable[[], object], seconds: float = 1.0) -> float:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        count += 1
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--areas", type=int, default=150)
    args = parser.parse_args()

    taxonomy = load_default()
    start = time.perf_counter()
    renderer = Renderer.load(Settings(), taxonomy)
    print(f"load (compile + trial renders): {time.perf_counter() - start:.3f} s")

    alert, info = sample_alert("rainstorm", Level.RED, "zh-Hans")
    areas = [f"第{i}镇" for i in range(args.areas)]
    print("\nrenders/s of one variant (no memo):")
    for channel, limits in CHANNELS.items():
        out = renderer.render(alert, info, channel, limits, "zh-Hans", areas[:3])
        once = functools.partial(
            renderer.render, alert, info, channel, limits, "zh-Hans", areas[:3]
        )
        rate = per_second(once)
        note = " (shortened)" if out.shortened else ""
        print(f"  {channel:<7} {rate:>9,.0f}/s  {out.length} {limits.unit.value}{note}")

    rng = random.Random(7)  # noqa: S311 (reproducible bench data, not secrets)
    channels = list(CHANNELS.items())
    languages = ["zh-Hans"] * 6 + ["zh-CN", "zh", "zh-Hans", "en"]
    recipients = [
        (n, *rng.choice(channels), rng.choice(languages), (rng.choice(areas),))
        for n in range(args.recipients)
    ]
    start = time.perf_counter()
    variants = renderer.variants(alert, info)
    groups = variants.group(recipients)
    elapsed = time.perf_counter() - start
    print(f"\n{args.recipients:,} recipients, {len(CHANNELS)} channels, 2 languages,"
          f" {args.areas} areas:")  # fmt: skip
    print(f"  renders: {variants.renders:,} (variants: {len(groups):,})")
    print(f"  total:   {elapsed:.2f} s  ({args.recipients / elapsed:,.0f} recipients/s,"
          f" {elapsed / args.recipients * 1e6:.2f} µs each)")  # fmt: skip
    start = time.perf_counter()
    variants.group(recipients)  # every variant rendered already: look-ups only
    lookups = time.perf_counter() - start
    print(f"  of which grouping look-ups: {lookups:.2f} s"
          f" ({lookups / args.recipients * 1e6:.2f} µs per recipient),"
          f" rendering: {max(elapsed - lookups, 0):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
