"""The console's recording controls in headless Chromium, through the API, Redis, the
Asterisk worker and the ARI simulator: the agent records an on-demand queue's call, pauses
and resumes it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_console_browser import CHROMIUM, console_stack, queued_caller

from appserver.queues import config as queue_config
from appserver.store.queues import Queue, save_queue

pytestmark = pytest.mark.skipif(__import__("shutil").which(CHROMIUM) is None,
                                reason="chromium not installed")


async def test_agent_records_pauses_and_resumes(pg_pool: Any, redis_client: Any) -> None:
    from playwright.async_api import expect

    async with console_stack(pg_pool, redis_client) as (api, sim, page):
        await save_queue(pg_pool, Queue(name="support", wrapup_seconds=2, announce_interval=0,
                                        recording="on_demand"))
        await queue_config.reload(pg_pool, api.ctx.queues)
        await asyncio.sleep(1)  # the worker's queue runtime reads definitions every 0.5 s
        call, room, _ = await queued_caller(sim, page)
        await page.click("#accept")
        await call.transcript.wait_for(lambda e: e.kind == "bridged" and e.detail == room,
                                       timeout=10)
        name = f"recording-support-{call.call_id}"
        async with page.expect_response("**/api/agent/recording/start") as started:
            await page.click("#record-start")
        assert (await started.value).status == 202, await (await started.value).text()
        await call.transcript.wait_for(lambda e: e.detail == f"{name} started")
        await expect(page.locator("#recording-state")).to_have_text("recording")
        await page.click("#record-pause")
        await call.transcript.wait_for(lambda e: e.detail == f"{name} paused")
        await expect(page.locator("#recording-state")).to_have_text("paused")
        await page.click("#record-resume")
        await call.transcript.wait_for(lambda e: e.detail == f"{name} resumed")
        await page.click("#record-stop")
        await call.transcript.wait_for(lambda e: e.detail.startswith(f"{name} ")
                                       and e.detail.endswith(" stop"))
        await page.click("#record-pause")  # nothing records any more: the worker ignores it
        await expect(page.locator("#recording-state")).to_have_text("paused")
        await call.hangup()
