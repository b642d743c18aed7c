"""The console's voicemail in headless Chromium: the agent's messages are listed with a
player, a new one appears without a reload, and "Mark handled" records who handled it."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from api_support import api_app, serving
from test_console_browser import ARGS, CHROMIUM, console_page
from test_voicemail_api import _leave, _setup

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium not installed")


async def test_console_lists_plays_pushes_and_marks_voicemail(
    pg_pool: asyncpg.Pool, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    async with api_app(pg_pool, redis_client, recordings_dir=str(tmp_path)) as api, \
            serving(api) as base, async_playwright() as pw:
        await _setup(pg_pool, tmp_path)
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await console_page(browser, base, "agent1")
        rows = page.locator("#voicemail tbody tr")
        await expect(rows).to_have_count(1)  # support's message; boss's is not theirs
        await expect(rows.first).to_contain_text("2.0 s")
        await expect(page.locator("#voicemail-new")).to_have_text("1 new")
        src = await rows.first.locator("audio").get_attribute("src")
        status = await page.evaluate(
            "async (u) => (await fetch(u, {headers: {Range: 'bytes=0-3'}})).status", src)
        assert status == 206

        await _leave(pg_pool, "c9", "support", 7.0)  # arrives while the console is open
        await expect(rows).to_have_count(2, timeout=5000)
        await expect(rows.first).to_contain_text("7.0 s")
        await expect(page.locator("#voicemail-new")).to_have_text("2 new")

        await rows.first.locator("button").click()
        await expect(rows.first).to_contain_text("handled by agent1")
        await expect(page.locator("#voicemail-new")).to_have_text("1 new")
        await browser.close()
