"""A supervisor listens, whispers, barges in and leaves, over the HTTP API as the wallboard
would, on every target: the worker owning the call has the engine dial the supervisor's own
LiveKit room (LiveKit SIP is a SIP user agent here) and attach that leg to the call.

What each engine says about who hears the supervisor: on FreeSWITCH mod_eavesdrop's events
(the leg runs ``eavesdrop <caller>`` with its whisper variables, then takes the mode digits:
tests/real/fs_probe.py); on Asterisk the bridges (a snoop on the party's leg bridged with the
supervisor, or the supervisor in the call's bridge: tests/real/ast_probe.py; ARI shows no
snoop's directions, so listening and whispering read alike there). And on the real
FreeSWITCH, the audio: LiveKit SIP's stand-in (answering G.711 here, to measure it) sends a
tone on every leg and the parked caller sends silence, so the agent's leg hears sound exactly
while the supervisor whispers or barges, and the supervisor's leg hears the agent
throughout. Not on Asterisk: the probe's caller (a Local channel) sends no frames at all, so
nothing flows towards the agent's leg for a whisper to be mixed into.
"""

from __future__ import annotations

import httpx
import ivr_menus
import pytest
from api_support import LiveKitStandIn
from conftest import REAL_TARGETS, TARGETS, time_scale
from sip_ua import Call, SipEndpoint, wait_until
from test_agents_real import console, login, logout, offered, seen  # noqa: F401

from appserver.agents.sip import supervisor_room
from appserver.devkit.sim.caller import EngineSimulator


def heard(target: str, mode: str) -> str:
    """The transcript's words for ``mode`` on ``target`` (see the module doc)."""
    if target == "asterisk" and mode != "barge":
        return "snoop"
    return "heard_by=" + {"listen": "nobody", "whisper": "agent", "barge": "caller,agent"}[mode]


def leg_of(livekit_sip: SipEndpoint, room: str) -> Call:
    return next(c for c in livekit_sip.calls if c.invite and c.invite.user == room)


async def hears(leg: Call, sound: bool, timeout: float) -> None:
    """Wait until ``leg`` has received sound (``sound``) or silence for the last second."""
    def now() -> bool:
        audible = leg.rtp.rate(1.0).audible
        return audible >= 20 if sound else audible <= 2

    try:
        await wait_until(now, timeout)
    except TimeoutError:
        raise AssertionError(f"{leg.invite.user if leg.invite else ''}: sound={sound}, "
                             f"{leg.rtp.rate(1.0)}, rx {leg.rtp.rx_packets} packets, "
                             f"{leg.rtp.rx_audible} audible, codec {leg.rtp.codec}, "
                             f"payload types {dict(leg.rtp.rx_payload_types)}") from None


@pytest.mark.parametrize("target", TARGETS)
async def test_supervisor_listens_whispers_barges_and_leaves(
    engine: EngineSimulator, target: str, console: httpx.AsyncClient,  # noqa: F811
    livekit: tuple[LiveKitStandIn, SipEndpoint],
) -> None:
    scale = time_scale(target)
    rooms, livekit_sip = livekit
    accept, livekit_sip.accept = livekit_sip.accept, ("PCMU", "PCMA")  # G.711: we measure it
    call = await engine.place_call("8112", caller="+15550805")
    await seen(call, "moh", "default", 5 * scale)
    auth = await login(console, "t-web")
    r = await console.post("/api/auth/login", json={"username": "t-super",
                                                   "password": ivr_menus.PASSWORD})
    assert r.status_code == 200, r.text
    sup = {"Authorization": f"Bearer {r.json()['token']}"}
    try:
        await offered(console, auth, call, 10 * scale)
        r = await console.post("/api/agent/accept", json={"call": call.call_id}, headers=auth)
        assert r.status_code == 200, r.text
        at = await seen(call, "bridged", f"call-{call.call_id}*", 10 * scale)
        url = f"/api/calls/{call.call_id}/supervise"
        assert (await console.post(url, json={"mode": "listen"}, headers=auth)).status_code \
            == 403  # an agent may not
        invites = len(livekit_sip.invites)
        r = await console.post(url, json={"mode": "listen"}, headers=sup)
        room = supervisor_room(call.call_id)
        assert r.status_code == 200 and r.json()["livekit"]["room"] == room, r.text
        assert room in rooms.rooms
        at = await seen(call, "supervised", f"{room} {heard(target, 'listen')}", 10 * scale, at)
        if target in REAL_TARGETS:
            assert livekit_sip.invites[invites].user == room
        real = target == "freeswitch"  # see the module doc
        if real:
            agent_leg = leg_of(livekit_sip, f"call-{call.call_id}")
            await hears(agent_leg, False, 10)  # the parked caller is silent
            await hears(leg_of(livekit_sip, room), True, 10)  # the supervisor hears the agent
        for mode in ("whisper", "barge", "listen"):
            r = await console.patch(url, json={"mode": mode}, headers=sup)
            assert r.status_code == 200, r.text
            at = await seen(call, "supervised", f"{room} {heard(target, mode)}", 10 * scale, at)
            if real:  # the agent hears the supervisor's tone while whispered to or barged
                await hears(agent_leg, mode != "listen", 10)
                await hears(leg_of(livekit_sip, room), True, 10)
        if target in REAL_TARGETS:  # every change on the same leg: one INVITE
            assert len(livekit_sip.invites) == invites + 1
        assert (await console.delete(url, headers=sup)).status_code == 200
        await seen(call, "supervised", f"{room} gone", 10 * scale, at)
        assert call.transcript.lines().count(f"dialed {room}") <= 1
        await call.hangup()
        await call.wait_ended(10 * scale)
    finally:
        livekit_sip.accept = accept
        await logout(console, auth)
