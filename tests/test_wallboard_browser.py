"""The supervisors' wallboard in real headless Chromium, fed by simulated calls through the
Asterisk worker (ARI simulator + worker + queue runtime in this process): callers queue,
one is answered, one abandons, and the board follows each within a second; then the
supervisor raises a caller's priority, moves them to another queue (the worker plays that
queue's music), hangs them up, and puts an agent on break, all from the page.

With CALLYARD_UPDATE_SCREENSHOTS=1 the test also refreshes docs/wallboard.png (the README's
picture of the wallboard).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import flows
import pytest
from api_support import PASSWORDS, api_app, serving
from test_console_browser import ARGS, CHROMIUM, SIP_URI

from appserver.agents.bridge import BrowserAgentBridge
from appserver.agents.sip import sip_address
from appserver.asterisk.driver import DriverConfig
from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.queues import config as queue_config
from appserver.queues.runtime import QueueRuntime
from appserver.settings import AriNode
from appserver.store.members import QueueMember, save_member
from appserver.store.queues import Queue, save_queue
from ivr.calls import CallFlow, CallInfo

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

    await save_queue(pg_pool, Queue(name="support", announce_interval=0,
                                    service_level_seconds=20))
    await save_queue(pg_pool, Queue(name="billing", announce_interval=0, moh_class="billing"))
    async with api_app(pg_pool, redis_client, livekit_sip_uri=SIP_URI) as api, \
            serving(api) as base:
        await save_member(pg_pool, QueueMember("support", "agent1"))
        await queue_config.reload(pg_pool, api.ctx.queues)
        sim = AriSimulator(sounds=SoundCatalog(default_seconds=0.1))
        await sim.start()
        runtime: QueueRuntime | None = None

        def factory(info: CallInfo) -> CallFlow | None:
            flow = flows.factory(info)
            assert runtime is not None and flow is not None
            return BrowserAgentBridge(runtime.wrap(flow), SIP_URI)

        worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                         password=sim.password)], factory, redis=redis_client,
                                config=DriverConfig(sip_template="PJSIP/livekit/{target}"))
        runtime = QueueRuntime(redis_client, "asterisk-wallboard", worker.deliver,
                               tick_seconds=0.1)
        await runtime.start()
        await worker.start()
        agent = api.client(await api.token("agent1"))
        try:
            await worker.wait_connected()
            await api.ctx.wallboard.take_sample()
            async with chromium_page() as page:
                await page.goto(f"{base}/supervisor")
                await page.fill("input[name=username]", "super1")
                await page.fill("input[name=password]", PASSWORDS["super1"])
                await page.click("button[type=submit]")
                await expect(page.locator("#conn")).to_have_text("online")
                support = page.locator('#queues tr[data-queue="support"]')
                billing = page.locator('#queues tr[data-queue="billing"]')
                agent1 = page.locator('#agents tr[data-agent="agent1"]')
                await expect(support.locator(".waiting")).to_have_text("0")
                assert await page.evaluate("typeof uPlot") == "function"
                await expect(page.locator("#chart-waiting .uplot")).to_be_visible()

                # A caller queues; the agent takes them.
                first = await queued(sim, "+15550101")
                await expect(support.locator(".waiting")).to_have_text("1", timeout=1000)
                await expect(page.locator("#calls tbody tr")).to_have_count(1)
                assert (await agent.post("/api/agent/login")).status_code == 200
                offered = (await agent.get("/api/agent/status")).json()
                assert offered["state"] == "offered"
                assert (await agent.post("/api/agent/accept",
                                         json={"call": offered["offer"]})).json()["ok"]
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

                # Supervisor actions on a third caller: priority, move, hang up.
                await agent.post("/api/agent/break", json={"reason": "lunch"})
                third = await queued(sim, "+15550103")
                row = page.locator("#calls tbody tr")
                await expect(row).to_have_count(1)
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

                # An agent on break made available, then sent on break, from the board.
                await expect(agent1.locator(".state")).to_have_text("break")
                await agent1.locator('[data-action="available"]').click()
                await expect(agent1.locator(".state")).to_have_text("available", timeout=1000)
                await agent1.locator('[data-action="break"]').click()
                await expect(agent1.locator(".state")).to_have_text("break", timeout=1000)

                # A reload shows the same day (it comes from Redis, not the page).
                await page.reload()
                await expect(support.locator(".answered")).to_have_text("1")
                await expect(support.locator(".abandoned")).to_have_text("1")
                await expect(billing.locator(".waiting")).to_have_text("0")
            shot = tmp_path / "wallboard.png"
            assert 0 < shot.stat().st_size < 150_000
            if UPDATE_SCREENSHOT:
                shutil.copyfile(shot, SCREENSHOT)
            audited = {(e["resource"], e["actor"]) for e in
                       (await (api.client(api.admin_key)).get("/api/audit")).json()}
            assert {("queued_call", "super1"), ("call", "super1"),
                    ("agent_state", "super1")} <= audited
        finally:
            await agent.aclose()
            await worker.stop()
            await runtime.stop()
            await sim.stop()


@contextlib.asynccontextmanager
async def chromium_page() -> AsyncIterator[Any]:
    """Chromium with one page, 1280 px wide."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield await browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            await browser.close()
