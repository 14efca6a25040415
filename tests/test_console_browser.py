"""The console end to end in headless Chromium: log in, issue, watch it reach everyone, cancel.

Debian's ``chromium`` (installed by ``make test`` through ``make peers``)
driven by Playwright's Python package with ``executable_path``; no browser
is downloaded. warnd runs for real: real Redis, 菏泽's areas and
boundaries, subscribers, dispatch through the sandbox SMS provider. Any
JavaScript error or console error (a CSP violation, a failed request)
fails the test. The alert page's screenshot is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from console_data import CAOXIAN, Console, heze_with_subscribers, start_console
from dispatch_data import sandbox_sends
from redis.asyncio import Redis

from warnd.settings import Settings

CHROMIUM = Path(os.environ.get("WARND_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SUBSCRIBERS = 40
WAIT_MS = 60_000


@pytest.fixture
async def console(
    redis: Redis, tmp_path: Path, make_settings: Callable[..., Settings]
) -> AsyncIterator[Console]:
    await heze_with_subscribers(redis, tmp_path, SUBSCRIBERS)
    c = await start_console(redis, make_settings, console={"refresh_seconds": 2})
    try:
        yield c
    finally:
        await c.client.close()


async def test_duty_officer_issues_watches_and_cancels_a_red_warning_in_chromium(
    console: Console, redis: Redis
) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `make peers` (apt-get install chromium)"
    from playwright.async_api import async_playwright, expect

    base = str(console.client.make_url("")).rstrip("/")
    problems: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = await browser.new_context(
                viewport={"width": 1366, "height": 768}, locale="zh-CN"
            )
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)

            def on_console(msg: Any) -> None:
                if msg.type == "error":
                    problems.append(f"console: {msg.text}")

            page.on("console", on_console)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

            # Log in with the operator's API token.
            await page.goto(f"{base}/console/")
            assert "/console/login" in page.url
            await page.fill("#token", console.tokens["operator"])
            await page.click("#login")
            await page.wait_for_url("**/console/alerts")

            # Issue: 暴雨, red, 曹县. The script prefills the text for the level.
            await page.click("header nav a[href='/console/issue']")
            await page.wait_for_url("**/console/issue")
            await page.select_option("#f-hazard", "rainstorm")
            await page.check(f"input[name=areas][value='{CAOXIAN}']")
            await page.select_option("#f-level", "red")
            # A locator assertion polls without evaluating a string in the page
            # (wait_for_function would: the console's CSP refuses eval).
            await expect(page.locator("#f-headline")).to_have_value(
                re.compile("红色"), timeout=WAIT_MS
            )
            await page.click("#preview")
            await page.wait_for_selector("#audience")
            assert await page.inner_text("#preview-subscribers") == str(SUBSCRIBERS)
            await page.screenshot(path=str(ARTIFACTS / "console-preview.png"), full_page=True)
            await page.click("#send")
            await page.wait_for_url("**/console/alerts/*?notice=issued")
            alert_url = page.url.split("?")[0]

            # The page refreshes itself until every subscriber is reached.
            await page.wait_for_selector("#reach-total[data-rate='1.0000']")
            await page.wait_for_selector("#coverage-final")
            assert await page.inner_text("#reach-total") == "100%"
            row = page.locator("#channels tr[data-channel='sms']")
            assert (await row.locator("td").nth(1).inner_text()) == str(SUBSCRIBERS)
            county = page.locator(f"#area-map path[data-code='{CAOXIAN}']")
            assert await county.get_attribute("data-rate") == "1.0000"
            assert await county.get_attribute("fill") == "#1a9850"
            await page.screenshot(path=str(ARTIFACTS / "console-alert.png"), full_page=True)
            sent = [r for r in await sandbox_sends(redis) if r.get("level") == "red"]
            assert len(sent) == SUBSCRIBERS

            # Cancel from the alert page.
            await page.click("#cancel summary")
            await page.fill("#cancel-note", "降雨减弱，解除暴雨红色预警")
            await page.click("#cancel-submit")
            await page.wait_for_url("**notice=cancelled**")
            assert page.url.startswith(alert_url)
            await page.wait_for_selector("#cancelled-by")
            assert "已解除" in await page.inner_text(".page-head")
            await page.screenshot(path=str(ARTIFACTS / "console-cancelled.png"), full_page=True)

            # The list shows it cancelled, in English after the language switch.
            await page.goto(f"{base}/console/alerts")
            await page.click("button[name=lang][value=en]")
            await page.wait_for_selector("html[lang=en]")
            assert "Cancelled" in await page.inner_text("#alerts-live")
            await page.screenshot(path=str(ARTIFACTS / "console-alerts-en.png"))
        finally:
            await browser.close()
    assert not problems, problems
