"""The supervisors' wallboard in real headless Chromium beside an agent's console, fed by
simulated calls through the Asterisk worker (the console test's stack: ARI simulator +
worker + queue runtime in this process): callers queue, one is answered in the console, one
abandons, and the board follows each within a second; then the supervisor puts the agent on
break, raises a caller's priority, moves them to another queue (the worker plays that
queue's music), hangs them up and makes the agent available again, all from the board.

With CALLYARD_UPDATE_SCREENSHOTS=1 the test also refreshes docs/wallboard.png (the README's
picture of the wallboard).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from api_support import PASSWORDS
from test_console_browser import CHROMIUM, SIP_URI, console_stack

from appserver.agents.sip import sip_address
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint
from appserver.queues import config as queue_config
from appserver.store.queues import Queue, save_queue

SCREENSHOT = Path(__file__).parent.parent / "docs" / "wallboard.png"
UPDATE_SCREENSHOT = os.environ.get("CALLYARD_UPDATE_SCREENSHOTS") == "1"

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium not installed")


async def queued(sim: AriSimulator, caller: str) -> Any:
    """A caller walks 9999 -> support -> queue and hears the hold music."""
    call = await sim.place_call("9999", caller=caller)
    sim.add_endpoint(SimEndpoint("PJSIP", f"livekit/{sip_address(call.call_id, SIP_URI)}",
                                 talk_seconds=600))
    await call.wait_for_prompt("file:ivr/welcome")
    await call.press("2")
    await call.wait_for_prompt("file:ivr/support")
    await call.press("1")
    await call.transcript.wait_for(lambda e: e.kind == "moh")
    return call


async def test_the_wallboard_follows_calls_and_acts_on_them(
        pg_pool: Any, redis_client: Any, tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with console_stack(pg_pool, redis_client) as (api, sim, console):
        await save_queue(pg_pool, Queue(name="billing", announce_interval=0, moh_class="billing"))
        await queue_config.reload(pg_pool, api.ctx.queues)
        await api.ctx.wallboard.take_sample()
        page = await console.context.browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(f"{api_base(console)}/supervisor")
        await page.fill("input[name=username]", "super1")
        await page.fill("input[name=password]", PASSWORDS["super1"])
        await page.click("button[type=submit]")
        await expect(page.locator("#conn")).to_have_text("online")
        support = page.locator('#queues tr[data-queue="support"]')
        billing = page.locator('#queues tr[data-queue="billing"]')
        agent1 = page.locator('#agents tr[data-agent="agent1"]')
        await expect(support.locator(".waiting")).to_have_text("0")
        await expect(agent1.locator(".state")).to_have_text("available")
        assert await page.evaluate("typeof uPlot") == "function"
        await expect(page.locator("#chart-waiting .uplot")).to_be_visible()

        # A caller queues and is offered to the agent, who takes them in the console.
        first = await queued(sim, "+15550101")
        await expect(page.locator("#calls tbody tr")).to_have_count(1, timeout=1000)
        await expect(agent1.locator(".state")).to_have_text("offered", timeout=1000)
        await console.click("#accept")
        await expect(agent1.locator(".state")).to_have_text("on call", timeout=1000)
        await expect(agent1.locator(".caller")).to_have_text("+15550101")
        await expect(support.locator(".waiting")).to_have_text("0", timeout=1000)

        # Another caller waits, then gives up.
        second = await queued(sim, "+15550102")
        await expect(support.locator(".waiting")).to_have_text("1", timeout=1000)
        await page.wait_for_timeout(1500)  # a wait worth showing
        await api.ctx.wallboard.take_sample()
        await page.screenshot(path=tmp_path / "wallboard.png", full_page=True)
        await second.hangup()
        await expect(support.locator(".abandoned")).to_have_text("1", timeout=1000)
        await expect(support.locator(".waiting")).to_have_text("0", timeout=1000)

        # The first caller's conversation ends: answered, within the target.
        await first.hangup()
        await expect(support.locator(".answered")).to_have_text("1", timeout=1000)
        await expect(support.locator(".sl")).to_have_text("50 %")
        await expect(agent1.locator(".calls-today")).to_have_text("1")

        # The supervisor sends the agent on break from the board (the console follows).
        await agent1.locator('[data-action="break"]').click()
        await expect(agent1.locator(".state")).to_have_text("break", timeout=1000)
        await expect(console.locator("#state")).to_have_text("break")

        # Actions on a waiting caller: priority, move (the worker plays the new queue's
        # music), hang up.
        third = await queued(sim, "+15550103")
        row = page.locator("#calls tbody tr")
        await expect(row).to_have_count(1, timeout=1000)
        await row.locator('[data-action="priority"]').click()
        await expect(row.locator(".priority")).to_have_text("1", timeout=1000)
        await row.locator("select").select_option("billing")
        start = len(third.transcript.entries)
        await row.locator('[data-action="move"]').click()
        await expect(row.locator(".queue")).to_have_text("billing", timeout=1000)
        await expect(billing.locator(".waiting")).to_have_text("1")
        await third.transcript.wait_for(
            lambda e: e.kind == "moh" and e.detail == "billing", start=start)
        page.once("dialog", lambda dialog: dialog.accept())
        await row.locator('[data-action="hangup"]').click()
        await third.transcript.wait_for(lambda e: e.kind == "hangup", start=start)
        await expect(page.locator("#calls tbody tr")).to_have_count(0, timeout=1000)

        # Back to available from the board.
        await agent1.locator('[data-action="available"]').click()
        await expect(agent1.locator(".state")).to_have_text("available", timeout=1000)
        await expect(console.locator("#state")).to_have_text("available")

        # A reload shows the same day (it comes from Redis, not the page).
        await page.reload()
        await expect(support.locator(".answered")).to_have_text("1")
        await expect(support.locator(".abandoned")).to_have_text("1")
        await expect(billing.locator(".waiting")).to_have_text("0")
        shot = tmp_path / "wallboard.png"
        assert 0 < shot.stat().st_size < 150_000
        if UPDATE_SCREENSHOT:
            shutil.copyfile(shot, SCREENSHOT)
        async with api.client(api.admin_key) as admin:
            audited = {(e["resource"], e["actor"]) for e in (await admin.get("/api/audit")).json()}
        assert {("queued_call", "super1"), ("call", "super1"),
                ("agent_state", "super1")} <= audited


def api_base(page: Any) -> str:
    """The API's address, from the console page's."""
    return str(page.url).removesuffix("/console")
