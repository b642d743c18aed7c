"""The agent console in real headless Chromium, end to end through the Asterisk worker.

An agent logs in and goes available; a simulated caller walks the menu into the queue (ARI
simulator + Asterisk worker + queue runtime in this process); the console shows the offer;
the agent accepts; the engine dials the LiveKit SIP address of that call's room; the
console's token is valid for that room only; the caller hangs up; the console shows
wrap-up, then available. And: the agent holds, resumes and blind-transfers a caller, and
sees a supervisor listen, whisper and barge in.
LiveKit itself is the Twirp stand-in (no media server here).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import flows
import pytest
from api_support import LK_KEY, LK_SECRET, PASSWORDS, api_app, serving

from appserver.agents.bridge import BrowserAgentBridge
from appserver.agents.sip import room_address, room_name, sip_address, supervisor_room
from appserver.asterisk.driver import DriverConfig
from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.queues import config as queue_config
from appserver.queues.runtime import QueueRuntime
from appserver.settings import AriNode
from appserver.store.members import QueueMember, save_member
from appserver.store.queues import Queue, save_queue
from ivr.calls import CallFlow, CallInfo
from livekit import api as lkapi

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SIP_URI = "sip:127.0.0.1:5070"

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium not installed")


@asynccontextmanager
async def console_stack(pg_pool: Any, redis_client: Any) -> AsyncIterator[tuple[Any, Any, Any]]:
    """API + ARI simulator + Asterisk worker + queue runtime, and an agent logged in to the
    console in Chromium: yields (api, sim, page)."""
    from playwright.async_api import async_playwright, expect

    await save_queue(pg_pool, Queue(name="support", wrapup_seconds=2, announce_interval=0))
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
        runtime = QueueRuntime(redis_client, "asterisk-console", worker.deliver,
                               tick_seconds=0.1)
        await runtime.start()
        await worker.start()
        try:
            await worker.wait_connected()
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = await console_page(browser, base, "agent1")
                await expect(page.locator("#state")).to_have_text("available")
                await expect(page.locator("#conn")).to_have_text("online")
                yield api, sim, page
                await browser.close()
        finally:
            await worker.stop()
            await runtime.stop()
            await sim.stop()


async def console_page(browser: Any, base: str, agent: str) -> Any:
    """A new page of the console at ``base``, ``agent`` logged in."""
    page = await browser.new_page()
    await page.goto(f"{base}/console")
    await page.fill("input[name=username]", agent)
    await page.fill("input[name=password]", PASSWORDS[agent])
    await page.click("button[type=submit]")
    return page


async def queued_caller(sim: Any, page: Any) -> tuple[Any, str, SimEndpoint]:
    """A caller walks 9999 -> support -> queue; the console shows the offer."""
    from playwright.async_api import expect

    call = await sim.place_call("9999", caller="+15550123")
    endpoint = SimEndpoint("PJSIP", f"livekit/{sip_address(call.call_id, SIP_URI)}",
                           talk_seconds=60)
    sim.add_endpoint(endpoint)
    await call.wait_for_prompt("file:ivr/welcome")
    await call.press("2")
    await call.wait_for_prompt("file:ivr/support")
    await call.press("1")
    await call.transcript.wait_for(lambda e: e.kind == "moh")
    await expect(page.locator("#offer")).to_be_visible()
    await expect(page.locator("#offer-caller")).to_have_text("+15550123")
    await expect(page.locator("#offer-queue")).to_have_text("support")
    return call, room_name(call.call_id), endpoint


async def test_agent_takes_a_call_in_the_browser(pg_pool, redis_client) -> None:
    from playwright.async_api import expect

    async with console_stack(pg_pool, redis_client) as (api, sim, page):
        # livekit-client comes from npm (node_modules), served by the app.
        assert await page.evaluate("typeof LivekitClient.Room") == "function"
        call, room, endpoint = await queued_caller(sim, page)
        async with page.expect_response("**/api/agent/accept") as accepted:
            await page.click("#accept")
        grant = (await (await accepted.value).json())["livekit"]
        claims = lkapi.TokenVerifier(LK_KEY, LK_SECRET).verify(grant["token"])
        assert grant["room"] == room == claims.video.room
        assert claims.video.room_join and not claims.video.room_admin
        assert not claims.video.room_create and not claims.video.room_list
        assert room in api.livekit.rooms
        await expect(page.locator("#call-room")).to_have_text(room)
        await expect(page.locator("#state")).to_have_text("on_call")

        # The engine bridges the caller to LiveKit SIP, to this call's room.
        await call.transcript.wait_for(
            lambda e: e.kind == "bridged" and e.detail == room, timeout=10)
        assert f"dialed {room}" in call.transcript.lines()
        assert endpoint.channel_ids

        await call.hangup()
        await expect(page.locator("#state")).to_have_text("wrap_up", timeout=5000)
        await expect(page.locator("#wrapup")).to_be_visible()
        assert room not in api.livekit.rooms
        await expect(page.locator("#state")).to_have_text("available", timeout=6000)
        await expect(page.locator("#call")).to_be_hidden()


async def test_agent_holds_resumes_and_transfers_in_the_browser(pg_pool, redis_client) -> None:
    from playwright.async_api import expect

    async with console_stack(pg_pool, redis_client) as (api, sim, page):
        call, room, _ = await queued_caller(sim, page)
        await page.click("#accept")
        bridged = await call.transcript.wait_for(
            lambda e: e.kind == "bridged" and e.detail == room, timeout=10)
        start = call.transcript.entries.index(bridged)

        await page.click("#hold")
        await expect(page.locator("#held")).to_be_visible()
        await expect(page.locator("#hold")).to_have_text("Resume")
        await call.transcript.wait_for(lambda e: e.kind == "held" and e.detail == "on",
                                       start=start)
        await call.transcript.wait_for(lambda e: e.kind == "moh" and e.detail == "default",
                                       start=start)
        await page.click("#hold")
        await expect(page.locator("#held")).to_be_hidden()
        await call.transcript.wait_for(lambda e: e.kind == "held" and e.detail == "off",
                                       start=start)

        await page.select_option("#transfer-kind", "extension")
        await page.fill("#transfer-target", "1002")
        await page.click("#transfer")
        await call.transcript.wait_for(lambda e: e.kind == "unbridged", start=start)
        await call.transcript.wait_for(lambda e: e.kind == "transferred" and e.detail == "1002",
                                       start=start)
        await expect(page.locator("#state")).to_have_text("wrap_up", timeout=5000)
        assert room not in api.livekit.rooms
        await expect(page.locator("#call")).to_be_hidden()
        await expect(page.locator("#state")).to_have_text("available", timeout=6000)
        assert call.transcript.lines().count("held on") == 1


async def test_agent_sees_a_supervisor_listen_whisper_and_barge(pg_pool, redis_client) -> None:
    """A supervisor joins the agent's call over the API: the engine dials the supervisor's
    own room; the console says who is there and how while it lasts."""
    from playwright.async_api import expect

    async with console_stack(pg_pool, redis_client) as (api, sim, page):
        call, room, _ = await queued_caller(sim, page)
        sup_room = supervisor_room(call.call_id)
        sim.add_endpoint(SimEndpoint("PJSIP", f"livekit/{room_address(sup_room, SIP_URI)}",
                                     talk_seconds=60))
        await page.click("#accept")
        await call.transcript.wait_for(lambda e: e.kind == "bridged" and e.detail == room,
                                       timeout=10)
        url = f"/api/calls/{call.call_id}/supervise"
        async with api.client(await api.token("super1")) as supervisor:
            r = await supervisor.post(url, json={"mode": "listen"})
            assert r.status_code == 200 and r.json()["livekit"]["room"] == sup_room
            await expect(page.locator("#supervisor")).to_have_text(
                "Supervisor super1 is listening")
            await call.transcript.wait_for(
                lambda e: e.kind == "supervised" and e.detail.endswith("heard_by=nobody"))
            assert (await supervisor.patch(url, json={"mode": "whisper"})).status_code == 200
            await expect(page.locator("#supervisor")).to_have_text(
                "Supervisor super1 is whispering to you")
            await call.transcript.wait_for(
                lambda e: e.kind == "supervised" and e.detail.endswith("heard_by=agent"))
            assert (await supervisor.patch(url, json={"mode": "barge"})).status_code == 200
            await expect(page.locator("#supervisor")).to_have_text("Supervisor super1 barged in")
            await page.reload()  # the console learns it from the status too
            await expect(page.locator("#supervisor")).to_have_text("Supervisor super1 barged in")
            assert (await supervisor.delete(url)).status_code == 200
            await expect(page.locator("#supervisor")).to_be_hidden()
            await call.transcript.wait_for(
                lambda e: e.kind == "supervised" and e.detail == f"{sup_room} gone")
        await call.hangup()
        await expect(page.locator("#state")).to_have_text("wrap_up", timeout=5000)
