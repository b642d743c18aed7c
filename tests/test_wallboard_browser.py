"""The supervisors' wallboard in real headless Chromium beside an agent's console, fed by
simulated calls through the Asterisk worker (the console test's stack: ARI simulator +
worker + queue runtime in this process): callers queue, one is answered in the console, one
abandons, and the board follows each within a second; then the supervisor puts the agent on
break, raises a caller's priority, moves them to another queue (the worker plays that
queue's music), hangs them up and makes the agent available again, all from the board.
And: the supervisor listens to, whispers on and barges in on a connected call from the
board, heard in the page over LiveKit.

With CALLYARD_UPDATE_SCREENSHOTS=1 the test also refreshes docs/wallboard.png (the README's
picture of the wallboard).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from api_support import LK_KEY, LK_SECRET, PASSWORDS
from test_console_browser import CHROMIUM, SIP_URI, console_stack

from appserver.agents.sip import room_address, sip_address, supervisor_room
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint
from appserver.queues import config as queue_config
from appserver.store.queues import Queue, save_queue
from livekit import api as lkapi

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
        page = await open_wallboard(console)
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


async def open_wallboard(console: Any) -> Any:
    """super1 logged in to the wallboard, in a new page of the console's browser."""
    from playwright.async_api import expect

    page = await console.context.browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{api_base(console)}/supervisor")
    await page.fill("input[name=username]", "super1")
    await page.fill("input[name=password]", PASSWORDS["super1"])
    await page.click("button[type=submit]")
    await expect(page.locator("#conn")).to_have_text("online")
    return page


async def test_the_supervisor_listens_whispers_and_barges_from_the_wallboard(
        pg_pool: Any, redis_client: Any) -> None:
    """Listen on a connected caller from the board: the page POSTs and joins the LiveKit room
    with the token the API issued, the engine dials that room; Whisper and Barge PATCH the
    same leg; Stop DELETEs it; refusals show beside the call; leaving the page ends the leg;
    an agent's session is refused."""
    from playwright.async_api import expect

    async with console_stack(pg_pool, redis_client) as (api, sim, console):
        page = await open_wallboard(console)
        call = await queued(sim, "+15550101")
        sup_room = supervisor_room(call.call_id)
        leg = SimEndpoint("PJSIP", f"livekit/{room_address(sup_room, SIP_URI)}", talk_seconds=600)
        sim.add_endpoint(leg)
        row = page.locator(f'#calls tr[data-call="{call.call_id}"]')
        await expect(row).to_have_count(1, timeout=1000)
        await expect(row.locator('[data-action="listen"]')).to_have_count(0)  # not connected yet
        await console.click("#accept")
        await call.transcript.wait_for(lambda e: e.kind == "bridged", timeout=10)
        listen = row.locator('[data-action="listen"]')
        await expect(listen).to_have_accessible_name("Listen")
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        supervise = f"**/api/calls/{call.call_id}/supervise"

        # Listen, from the keyboard: POST, the page joins the room the API answered with.
        await listen.focus()
        async with page.expect_response(supervise) as answered:
            await page.keyboard.press("Enter")
        response = await answered.value
        assert response.request.method == "POST" and response.status == 200
        grant = (await response.json())["livekit"]
        claims = lkapi.TokenVerifier(LK_KEY, LK_SECRET).verify(grant["token"])
        assert grant["room"] == sup_room == claims.video.room and sup_room in api.livekit.rooms
        assert claims.identity == "supervisor-super1"
        await expect(row.locator(".supervise-mode")).to_contain_text("listening")
        await expect(listen).to_have_attribute("aria-pressed", "true")
        await expect(listen).to_be_focused()  # kept through the re-render
        await _wait_for(lambda: any(f"access_token={grant['token']}" in u for u in sockets))
        await call.transcript.wait_for(
            lambda e: e.kind == "supervised" and e.detail.endswith("heard_by=nobody"))
        assert len(leg.channel_ids) == 1  # the engine dialled the supervisor's room
        await expect(console.locator("#supervisor")).to_have_text("Supervisor super1 is listening")

        # Whisper, then Barge: PATCH, same leg, no new dial.
        for mode, heard_by, label in (("whisper", "agent", "whispering to the agent"),
                                      ("barge", "caller,agent", "barged in")):
            async with page.expect_response(supervise) as answered:
                await row.locator(f'[data-action="{mode}"]').click()
            response = await answered.value
            assert response.request.method == "PATCH" and response.status == 200
            await expect(row.locator(".supervise-mode")).to_contain_text(label)
            await expect(row.locator(f'[data-action="{mode}"]')).to_have_attribute(
                "aria-pressed", "true")
            await call.transcript.wait_for(
                lambda e, h=heard_by: e.kind == "supervised" and e.detail.endswith(f"heard_by={h}"))
        assert len(leg.channel_ids) == 1
        assert all(grant["token"] in u for u in sockets)  # no other room joined

        # Stop: DELETE, the leg and the room are gone, the buttons say so.
        async with page.expect_response(supervise) as answered:
            await row.locator('[data-action="stop"]').click()
        response = await answered.value
        assert response.request.method == "DELETE" and response.status == 200
        await call.transcript.wait_for(
            lambda e: e.kind == "supervised" and e.detail == f"{sup_room} gone")
        assert sup_room not in api.livekit.rooms
        await expect(row.locator('[data-action="stop"]')).to_have_count(0)
        await expect(row.locator(".supervise-mode")).to_have_text("")
        await expect(listen).to_have_attribute("aria-pressed", "false")
        await expect(console.locator("#supervisor")).to_be_hidden()

        # Another supervisor is on the call: the refusal shows beside it.
        url = f"/api/calls/{call.call_id}/supervise"
        async with api.client(await api.token("admin1")) as admin:
            assert (await admin.post(url, json={"mode": "listen"})).status_code == 200
            await listen.click()
            await expect(row.locator(".supervise-error")).to_have_text(
                "another supervisor is on this call")
            await expect(row.locator('[data-action="stop"]')).to_have_count(0)
            # The admin's leg is in the call before it is stopped (a leg hung up while it
            # still rings never joined, so the caller's transcript would not say it left).
            listening = f"supervised {sup_room} heard_by=nobody"
            await _wait_for(lambda: call.transcript.lines().count(listening) == 2, 15)
            assert (await admin.delete(url)).status_code == 200
        legs_gone = lambda: call.transcript.lines().count(f"supervised {sup_room} gone")  # noqa: E731
        await _wait_for(lambda: legs_gone() == 2, 15)  # the page's first leg, the admin's

        # Leaving the page while listening ends the leg.
        await listen.click()
        await expect(row.locator(".supervise-mode")).to_contain_text("listening")
        await _wait_for(lambda: sum(line.endswith("heard_by=nobody")
                                    for line in call.transcript.lines()) == 3, 15)  # attached
        await page.goto("about:blank")
        await _wait_for(lambda: legs_gone() == 3, 15)
        assert await api.ctx.queues.supervision(call.call_id) is None

        # An agent's session may not supervise.
        status = await console.evaluate(
            "(url) => fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},"
            " body: JSON.stringify({mode: 'listen'})}).then((r) => r.status)", url)
        assert status == 403
        await call.hangup()


async def _wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def api_base(page: Any) -> str:
    """The API's address, from the console page's."""
    return str(page.url).removesuffix("/console")
