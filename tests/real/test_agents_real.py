"""Agents take queued callers, on every target: a SIP agent's phone is rung directly; a browser
agent accepts in the console (over the HTTP API, as the page does), the engine dials the call's
LiveKit room over SIP, and the agent holds, resumes and blind-transfers the caller.

On the real engines LiveKit SIP is a SIP user agent (tests/sip_ua.py) at
``CALLYARD_LIVEKIT_SIP_URI``: the INVITE must name the call's room in its Request-URI and
offer a codec LiveKit SIP accepts, and hold must never re-INVITE it (LiveKit SIP has no hold).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import ivr_menus
import pytest
from api_support import LiveKitStandIn
from conftest import REAL_TARGETS, TARGETS, time_scale
from sip_ua import LIVEKIT_CODECS, SipEndpoint
from stack import Stack
from test_scenarios_real import cdrs_of

from appserver.devkit.sim.caller import EngineSimulator, SimulatedCall


@pytest.fixture
async def console(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=15) as http:
        yield http


async def login(http: httpx.AsyncClient, agent: str) -> dict[str, str]:
    """Log in as the console does and go available in the agent's queues."""
    r = await http.post("/api/auth/login", json={"username": agent,
                                                 "password": ivr_menus.PASSWORD})
    assert r.status_code == 200, r.text
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    assert (await http.post("/api/agent/login", headers=auth)).status_code == 200
    return auth


async def logout(http: httpx.AsyncClient, auth: dict[str, str]) -> None:
    deadline = time.monotonic() + 20
    while (await http.post("/api/agent/logout", headers=auth)).status_code != 200:
        assert time.monotonic() < deadline, "the agent could not log out"
        await _pause()


async def status(http: httpx.AsyncClient, auth: dict[str, str]) -> dict[str, object]:
    r = await http.get("/api/agent/status", headers=auth)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def offered(http: httpx.AsyncClient, auth: dict[str, str], call: SimulatedCall,
                  timeout: float) -> None:
    """Wait until the agent's console offers ``call`` (a real engine's probe learns the call's
    id only once its leg exists: until then both are empty)."""
    deadline = time.monotonic() + timeout
    while not call.call_id or (await status(http, auth)).get("offer") != call.call_id:
        assert time.monotonic() < deadline, await status(http, auth)
        await _pause()


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.2)


async def seen(call: SimulatedCall, kind: str, detail: str, timeout: float,
               start: int = 0) -> int:  # fmt: skip
    """Wait for ``kind detail`` (detail ``*``-suffixed: a prefix) after entry ``start``;
    returns the index after it."""
    entry = await call.transcript.wait_for(
        lambda e: e.kind == kind and (e.detail.startswith(detail[:-1]) if detail.endswith("*")
                                      else e.detail == detail), timeout, start=start)
    return call.transcript.entries.index(entry) + 1


@pytest.mark.parametrize("target", TARGETS)
async def test_sip_agent_is_rung_and_answers_a_queued_caller(
    engine: EngineSimulator, target: str, console: httpx.AsyncClient, real_database: str
) -> None:
    scale = time_scale(target)
    call = await engine.place_call("8111", caller="+15550801")
    await seen(call, "moh", "default", 5 * scale)
    auth = await login(console, "t-sip")
    try:
        at = await seen(call, "dialed", "1101", 10 * scale)
        at = await seen(call, "bridged", "1101", 10 * scale, at)
        await call.hangup()
        await call.wait_ended(10 * scale)
        rows = await cdrs_of(real_database, call.call_id, 15)
        assert [(r["disposition"], r["queue"], r["agent"]) for r in rows] == [
            ("answered", "t-phones", "t-sip")]
    finally:
        await logout(console, auth)


@pytest.mark.parametrize("target", TARGETS)
async def test_browser_agent_accepts_holds_resumes_and_transfers(
    engine: EngineSimulator, target: str, console: httpx.AsyncClient, real_database: str,
    livekit: tuple[LiveKitStandIn, SipEndpoint],
) -> None:
    scale = time_scale(target)
    rooms, livekit_sip = livekit
    invites_before = len(livekit_sip.invites)
    call = await engine.place_call("8112", caller="+15550802")
    await seen(call, "moh", "default", 5 * scale)
    auth = await login(console, "t-web")
    try:
        await offered(console, auth, call, 10 * scale)
        r = await console.post("/api/agent/accept", json={"call": call.call_id}, headers=auth)
        assert r.status_code == 200 and r.json()["livekit"]["room"] == f"call-{call.call_id}"
        room = f"call-{call.call_id}"
        at = await seen(call, "bridged", f"{room}*", 10 * scale)
        if target in REAL_TARGETS:
            invite = livekit_sip.invites[invites_before]
            assert invite.user == room, invite.request_uri
            assert set(invite.offered_codecs) & set(LIVEKIT_CODECS), invite.offered_codecs
            assert invite.chosen_codec in LIVEKIT_CODECS
        for action, lines in (("hold", ("held on", "moh default")), ("unhold", ("moh ",
                                                                                "held off"))):
            assert (await console.post(f"/api/agent/{action}", headers=auth)).status_code == 202
            for line in lines:
                kind, _, detail = line.partition(" ")
                at = await seen(call, kind, detail, 10 * scale, at)
        r = await console.post("/api/agent/transfer", headers=auth,
                               json={"kind": "extension", "target": "1000"})
        assert r.status_code == 202, r.text
        at = await seen(call, "unbridged", f"{room}*", 10 * scale, at)
        await seen(call, "transferred", "1000", 10 * scale, at)
        await call.wait_ended(20 * scale)
        if target in REAL_TARGETS:  # no re-INVITE ever reached LiveKit SIP (no hold there)
            leg = next(c for c in livekit_sip.calls if c.invite is invite)
            assert [m.method for m in leg.requests if m.method == "INVITE"][1:] == []
        deadline = time.monotonic() + 5  # the API deletes it once the agent left the call
        while ("DeleteRoom", room) not in [(name, getattr(req, "room", "")) for name, req
                                           in rooms.calls]:  # fmt: skip
            assert time.monotonic() < deadline, rooms.calls
            await _pause()
        rows = await cdrs_of(real_database, call.call_id, 15)
        assert [(r["disposition"], r["agent"]) for r in rows] == [("transferred", "t-web")]
    finally:
        await logout(console, auth)


@pytest.mark.parametrize("target", TARGETS)
async def test_caller_hangs_up_while_offered_then_while_held(
    engine: EngineSimulator, target: str, console: httpx.AsyncClient, real_database: str
) -> None:
    """The caller gives up while the browser agent's console rings: the offer is withdrawn and
    the agent is free at once (no wrap-up); the next caller, put on hold, hangs up: the agent's
    leg ends and the agent goes to wrap-up. One CDR each: abandoned, then answered."""
    scale = time_scale(target)
    auth = await login(console, "t-web")
    try:
        call = await engine.place_call("8112", caller="+15550803")
        await offered(console, auth, call, 10 * scale)
        await call.hangup()
        await call.wait_ended(10 * scale)
        deadline = time.monotonic() + 10
        while (now := await status(console, auth)).get("offer") or now["state"] != "available":
            assert time.monotonic() < deadline, now
            await _pause()
        rows = await cdrs_of(real_database, call.call_id, 15)
        assert [(r["disposition"], r["agent"]) for r in rows] == [("abandoned", None)]

        call = await engine.place_call("8112", caller="+15550804")
        await offered(console, auth, call, 10 * scale)
        r = await console.post("/api/agent/accept", json={"call": call.call_id}, headers=auth)
        assert r.status_code == 200, r.text
        at = await seen(call, "bridged", f"call-{call.call_id}*", 10 * scale)
        assert (await console.post("/api/agent/hold", headers=auth)).status_code == 202
        await seen(call, "held", "on", 10 * scale, at)
        await call.hangup()
        await call.wait_ended(10 * scale)
        deadline = time.monotonic() + 10
        while (now := await status(console, auth))["state"] == "on_call":
            assert time.monotonic() < deadline, now
            await _pause()
        assert now["state"] in ("wrap_up", "available"), now
        rows = await cdrs_of(real_database, call.call_id, 15)
        assert [(r["disposition"], r["agent"]) for r in rows] == [("answered", "t-web")]
    finally:
        await logout(console, auth)
