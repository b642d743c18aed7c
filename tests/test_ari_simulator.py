"""The ARI simulator against what a real Asterisk 22 does (see ../shared/reference/captures)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.devkit.sim.ari.models import media_to_prompt

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "captures"


class Ari:
    """A raw ARI client: REST with basic auth and the events WebSocket with api_key."""

    def __init__(self, sim: AriSimulator, http: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.http = http
        self.events: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def request(self, method: str, path: str, **params: str) -> tuple[int, Any]:
        async with self.http.request(
            method, f"{self.sim.base_url}/ari{path}", params=params,
            headers={"Authorization": "Basic " + base64.b64encode(
                f"{self.sim.username}:{self.sim.password}".encode()).decode()},
        ) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def connect(self, app: str = "callyard") -> None:
        self.ws = await self.http.ws_connect(
            f"{self.sim.base_url}/ari/events",
            params={"app": app, "api_key": f"{self.sim.username}:{self.sim.password}"},
        )
        self._reader = asyncio.ensure_future(self._read())
        await self.sim.wait_app_connected(app)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            self.events.append(json.loads(msg.data))

    async def wait_event(self, kind: str, timeout: float = 3.0, **match: Any) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                for event in self.events:
                    if event["type"] == kind and all(
                        _dig(event, k) == v for k, v in match.items()
                    ):
                        return event
                await asyncio.sleep(0.01)

        return await asyncio.wait_for(find(), timeout)


def _dig(event: dict[str, Any], path: str) -> Any:
    value: Any = event
    for part in path.split("__"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@pytest_asyncio.fixture(loop_scope="session")
async def ari() -> AsyncIterator[Ari]:
    sim = AriSimulator(
        sounds=SoundCatalog(default_seconds=0.3, missing={"no-such-sound-xyz"}),
        endpoints=[SimEndpoint("PJSIP", "1001"), SimEndpoint("PJSIP", "1002", state="offline")],
    )
    await sim.start()
    async with aiohttp.ClientSession() as http:
        client = Ari(sim, http)
        yield client
        if client.ws is not None:
            await client.ws.close()
    await sim.stop()


async def test_auth_required(ari: Ari) -> None:
    async with ari.http.get(f"{ari.sim.base_url}/ari/asterisk/ping") as resp:
        assert resp.status == 401
        assert await resp.json() == {"message": "Authentication required"}
    async with ari.http.get(f"{ari.sim.base_url}/ari/asterisk/ping",
                            params={"api_key": "callyard:wrong"}) as resp:
        assert resp.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await ari.http.ws_connect(f"{ari.sim.base_url}/ari/events", params={"app": "x"})


async def test_info_ping_endpoints_applications(ari: Ari) -> None:
    status, info = await ari.request("GET", "/asterisk/info")
    assert status == 200 and info["system"]["entity_id"] == ari.sim.asterisk_id
    status, ping = await ari.request("GET", "/asterisk/ping")
    assert ping["ping"] == "pong" and ping["asterisk_id"] == ari.sim.asterisk_id
    assert ping["timestamp"].endswith("+0000")
    status, endpoints = await ari.request("GET", "/endpoints")
    assert {"technology": "PJSIP", "resource": "1002", "state": "offline",
            "channel_ids": []} in endpoints
    status, body = await ari.request("GET", "/endpoints/PJSIP/9999")
    assert status == 404
    status, body = await ari.request("GET", "/applications/callyard")
    assert (status, body) == (404, {"message": "Application not found"})
    await ari.connect()
    status, body = await ari.request("GET", "/applications/callyard")
    assert status == 200 and body == {
        "name": "callyard", "channel_ids": [], "bridge_ids": [], "endpoint_ids": [],
        "device_names": [], "events_allowed": [], "events_disallowed": []}


async def test_call_playback_dtmf_barge_in_and_errors(ari: Ari) -> None:
    await ari.connect()
    call = await ari.sim.place_call("9999", caller="5551000", caller_name="Probe")
    start = await ari.wait_event("StasisStart")
    cid = call.call_id
    assert start["args"] == ["9999"] and start["channel"]["id"] == cid
    assert start["channel"]["caller"] == {"name": "Probe", "number": "5551000"}
    assert start["channel"]["dialplan"]["app_name"] == "Stasis"
    assert set(start) == {"type", "timestamp", "args", "channel", "asterisk_id", "application"}

    assert await ari.request("POST", f"/channels/{cid}/answer") == (204, None)
    await ari.wait_event("ChannelStateChange", channel__state="Up")
    status, pb = await ari.request("POST", f"/channels/{cid}/play", media="sound:tt-monkeys",
                                   playbackId="pb-1")
    assert status == 201
    assert pb == {"id": "pb-1", "media_uri": "sound:tt-monkeys",
                  "target_uri": f"channel:{cid}", "language": "en", "state": "queued"}
    await ari.wait_event("PlaybackStarted", playback__id="pb-1")
    await call.press("1")
    dtmf = await ari.wait_event("ChannelDtmfReceived")
    assert dtmf["digit"] == "1" and dtmf["duration_ms"] == 100
    # Barge-in: deleting the playback finishes it with state "done".
    assert await ari.request("DELETE", "/playbacks/pb-1") == (204, None)
    finished = await ari.wait_event("PlaybackFinished", playback__id="pb-1")
    assert finished["playback"]["state"] == "done"
    assert await ari.request("GET", "/playbacks/pb-1") == (
        404, {"message": "Playback not found"})
    # A missing sound is accepted, then fails.
    status, _ = await ari.request("POST", f"/channels/{cid}/play",
                                  media="sound:no-such-sound-xyz", playbackId="pb-2")
    assert status == 201
    failed = await ari.wait_event("PlaybackFinished", playback__id="pb-2")
    assert failed["playback"]["state"] == "failed"
    # Variables.
    assert await ari.request("POST", f"/channels/{cid}/variable", variable="IVR", value="m") == (
        204, None)
    assert await ari.request("GET", f"/channels/{cid}/variable", variable="IVR") == (
        200, {"value": "m"})
    assert (await ari.request("GET", f"/channels/{cid}/variable",
                              variable="CALLERID(num)"))[1] == {"value": "5551000"}
    # Leave Stasis: the channel lives on; commands that need Stasis get 409.
    assert await ari.request("POST", f"/channels/{cid}/continue", context="callyard-transfer",
                             extension="1000", priority="1") == (204, None)
    await ari.wait_event("StasisEnd")
    assert await ari.request("POST", f"/channels/{cid}/answer") == (
        409, {"message": "Channel not in Stasis application"})
    assert await ari.request("DELETE", f"/channels/{cid}") == (204, None)
    await ari.wait_event("ChannelDestroyed", channel__id=cid)
    assert await ari.request("DELETE", f"/channels/{cid}") == (
        404, {"message": "Channel not found"})
    assert [e.kind for e in call.transcript.entries][-2:] == ["transferred", "hangup"]
    assert call.prompts() == ["file:tt-monkeys", "file:no-such-sound-xyz"]


async def test_hangup_event_order_matches_asterisk(ari: Ari) -> None:
    await ari.connect()
    call = await ari.sim.place_call("9999")
    await ari.wait_event("StasisStart")
    await call.hangup()
    await ari.wait_event("ChannelDestroyed")
    kinds = [e["type"] for e in ari.events if e["type"] != "StasisStart"]
    assert kinds == ["ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"]
    destroyed = ari.events[-1]
    assert (destroyed["cause"], destroyed["cause_txt"]) == (16, "Normal Clearing")
    assert call.transcript.lines()[-1] == "hangup NORMAL_CLEARING caller"


async def test_no_application_means_stasis_fails_and_fallback_plays() -> None:
    async with AriSimulator(sounds=SoundCatalog(default_seconds=0.05)) as sim:
        call = await sim.place_call("9999")
        await call.wait_ended()
        assert call.transcript.lines()[1:] == [
            "answered",
            "prompt_started file:cannot-complete-temp-error",
            "prompt_finished file:cannot-complete-temp-error done",
            "hangup NORMAL_CLEARING engine",
        ]


async def test_bridge_originate_and_dial_outcomes(ari: Ari) -> None:
    await ari.connect()
    call = await ari.sim.place_call("9999")
    await ari.wait_event("StasisStart")
    cid = call.call_id
    status, leg = await ari.request("POST", "/channels", endpoint="PJSIP/1001", app="callyard",
                                    appArgs="dial,x", channelId="leg-1", originator=cid)
    assert status == 200 and leg["id"] == "leg-1" and leg["state"] == "Down"
    start = await ari.wait_event("StasisStart", channel__id="leg-1")
    assert start["args"] == ["dial", "x"]
    status, bridge = await ari.request("POST", "/bridges", type="mixing", bridgeId="br-1")
    assert bridge["bridge_type"] == "mixing" and bridge["technology"] == "simple_bridge"
    assert await ari.request("POST", "/bridges/br-1/addChannel", channel=f"{cid},leg-1") == (
        204, None)
    await ari.wait_event("ChannelEnteredBridge", channel__id="leg-1")
    status, bridge = await ari.request("GET", "/bridges/br-1")
    assert bridge["channels"] == [cid, "leg-1"]
    assert await ari.request("POST", "/bridges/br-1/addChannel", channel="nope") == (
        400, {"message": "Channel not found"})
    # The far end hangs up after its talk time.
    await ari.wait_event("ChannelLeftBridge", channel__id="leg-1")
    assert await ari.request("DELETE", "/bridges/br-1") == (204, None)
    await ari.wait_event("BridgeDestroyed")
    assert await ari.request("GET", "/bridges/br-1") == (404, {"message": "Bridge not found"})
    # An offline endpoint: the channel is destroyed with cause 20.
    await ari.request("POST", "/channels", endpoint="PJSIP/1002", app="callyard",
                      channelId="leg-2")
    gone = await ari.wait_event("ChannelDestroyed", channel__id="leg-2")
    assert gone["cause"] == 20
    assert await ari.request("POST", "/channels", endpoint="bogus", app="callyard") == (
        400, {"message": "Endpoint must be in the format technology/resource"})
    assert call.transcript.lines()[1:3] == ["dialed 1001", "bridged 1001"]


async def test_dropped_socket_keeps_channels_in_stasis(ari: Ari) -> None:
    await ari.connect()
    call = await ari.sim.place_call("9999")
    await ari.wait_event("StasisStart")
    await ari.sim.drop_event_sockets()
    status, app = await ari.request("GET", "/applications/callyard")
    assert status == 200 and app["channel_ids"] == [call.call_id]
    assert await ari.request("POST", f"/channels/{call.call_id}/answer") == (204, None)
    # A new call while no application is connected goes to the fallback.
    other = await ari.sim.place_call("9999")
    await other.wait_for_prompt("file:cannot-complete-temp-error")


def test_media_to_prompt() -> None:
    assert media_to_prompt("sound:ivr/welcome") == "file:ivr/welcome"
    assert media_to_prompt("digits:42") == "digits:42"
    assert media_to_prompt("number:42") == "number:42"
    assert media_to_prompt("sound:silence/2") == "silence:2000"


def test_error_bodies_match_capture() -> None:
    path = CAPTURES / "asterisk-ari-appserver-session.jsonl"
    if not path.exists():
        pytest.skip("captures not available")
    errors = {
        (r["status"], json.dumps(r["body"]))
        for r in map(json.loads, path.read_text().splitlines())
        if r["kind"] == "rest" and r["status"] >= 400
    }
    assert (404, json.dumps({"message": "Channel not found"})) in errors
    assert (409, json.dumps({"message": "Channel not in Stasis application"})) in errors


async def test_hold_by_leaving_the_bridge(ari: Ari) -> None:
    """removeChannel while the peer stays = hold; addChannel back = resume; the peer's leg
    ending leaves the caller alone (transcripts read the same on both engines)."""
    await ari.connect()
    call = await ari.sim.place_call("9999")
    await ari.wait_event("StasisStart")
    cid = call.call_id
    await ari.request("POST", f"/channels/{cid}/answer")
    ari.sim.endpoints["PJSIP/1001"].talk_seconds = 30.0
    await ari.request("POST", "/channels", endpoint="PJSIP/1001", app="callyard",
                      appArgs="dial", channelId="leg-h", originator=cid)
    await ari.wait_event("StasisStart", channel__id="leg-h")
    await ari.request("POST", "/bridges", type="mixing", bridgeId="br-h")
    await ari.request("POST", "/bridges/br-h/addChannel", channel=f"{cid},leg-h")
    assert await ari.request("POST", "/bridges/br-h/removeChannel", channel=cid) == (204, None)
    left = await ari.wait_event("ChannelLeftBridge", channel__id=cid)
    assert left["bridge"]["channels"] == ["leg-h"]
    assert await ari.request("POST", "/bridges/br-h/removeChannel", channel=cid) == (
        422, {"message": "Channel not in this bridge"})
    assert await ari.request("POST", f"/channels/{cid}/moh", mohClass="default") == (204, None)
    assert await ari.request("DELETE", f"/channels/{cid}/moh") == (204, None)
    assert await ari.request("POST", "/bridges/br-h/addChannel", channel=cid) == (204, None)
    entered = await ari.wait_event("ChannelEnteredBridge", channel__id=cid,
                                   bridge__channels=["leg-h", cid])
    assert entered["bridge"]["id"] == "br-h"
    assert await ari.request("DELETE", "/channels/leg-h") == (204, None)
    await ari.wait_event("ChannelLeftBridge", channel__id="leg-h")
    assert await ari.request("GET", f"/channels/{cid}") != (404, {"message": "Channel not found"})
    assert call.transcript.lines()[2:] == [
        "dialed 1001", "bridged 1001", "held on", "moh default", "moh", "held off",
        "unbridged 1001",
    ]
    # A party hanging up while the caller is on hold also leaves the caller alone.
    await ari.request("POST", "/channels", endpoint="PJSIP/1001", app="callyard",
                      appArgs="dial", channelId="leg-i", originator=cid)
    await ari.wait_event("StasisStart", channel__id="leg-i")
    await ari.request("POST", "/bridges/br-h/addChannel", channel="leg-i")
    await ari.request("POST", "/bridges/br-h/removeChannel", channel=cid)
    await ari.request("DELETE", "/channels/leg-i")
    await ari.wait_event("ChannelDestroyed", channel__id="leg-i")
    assert call.transcript.lines()[-4:] == [
        "dialed 1001", "bridged 1001", "held on", "unbridged 1001"]
    assert ari.sim.channels[cid].held_bridge is None and not ari.sim.bridges["br-h"].held


def _playback_events(ari: Ari, playback_id: str) -> list[tuple[str, str, str | None, str]]:
    return [(e["type"], e["playback"]["media_uri"], e["playback"].get("next_media_uri"),
             e["playback"]["state"])
            for e in ari.events if (e.get("playback") or {}).get("id") == playback_id]


async def test_media_list_events_and_missing_sounds_as_asterisk(ari: Ari) -> None:
    """Real Asterisk 22.10.1 (tests/real, 2026-12-03) sends, per media of one play,
    PlaybackStarted, then PlaybackContinuing (``next_media_uri`` naming the next one) for
    all but the last, then one PlaybackFinished. A missing sound is skipped (Started at once
    followed by Continuing) and the playback still ends ``done``, unless the missing sound
    is the last one: then it ends ``failed`` although the others played."""
    await ari.connect()
    call = await ari.sim.place_call("9999")
    await ari.wait_event("StasisStart")
    cid, missing = call.call_id, "sound:no-such-sound-xyz"
    await ari.request("POST", f"/channels/{cid}/answer")
    await ari.request("POST", f"/channels/{cid}/play", playbackId="m1",
                      media=f"sound:beep,{missing},sound:beep")
    await ari.wait_event("PlaybackFinished", playback__id="m1")
    assert _playback_events(ari, "m1") == [
        ("PlaybackStarted", "sound:beep", missing, "playing"),
        ("PlaybackContinuing", "sound:beep", missing, "continuing"),
        ("PlaybackStarted", missing, "sound:beep", "playing"),
        ("PlaybackContinuing", missing, "sound:beep", "continuing"),
        ("PlaybackStarted", "sound:beep", None, "playing"),
        ("PlaybackFinished", "sound:beep", None, "done"),
    ]
    await ari.request("POST", f"/channels/{cid}/play", playbackId="m2",
                      media=f"sound:beep,{missing}")
    await ari.wait_event("PlaybackFinished", playback__id="m2")
    assert _playback_events(ari, "m2")[-1] == ("PlaybackFinished", missing, None, "failed")
    assert call.transcript.lines()[-4:] == [
        "prompt_started file:beep", "prompt_finished file:beep done",
        "prompt_started file:no-such-sound-xyz", "prompt_finished file:no-such-sound-xyz failed"]


async def test_stopping_a_queued_playback_finishes_it_in_its_turn(ari: Ari) -> None:
    """Real Asterisk 22.10.1 (tests/real, 2026-12-03): plays on one channel queue; DELETE of
    a queued playback answers 204 and GET shows it ``done`` at once, but its PlaybackFinished
    (with no PlaybackStarted) comes only when the playbacks before it have finished. DELETE
    of the playing one ends it at once and the next queued one starts."""
    await ari.connect()
    call = await ari.sim.place_call("9999")
    await ari.wait_event("StasisStart")
    cid = call.call_id
    await ari.request("POST", f"/channels/{cid}/answer")
    for playback_id in ("q1", "q2", "q3"):
        await ari.request("POST", f"/channels/{cid}/play", media="sound:beep",
                          playbackId=playback_id)
    await ari.wait_event("PlaybackStarted", playback__id="q1")
    assert await ari.request("DELETE", "/playbacks/q3") == (204, None)
    assert (await ari.request("GET", "/playbacks/q3"))[1]["state"] == "done"
    await asyncio.sleep(0.05)
    assert _playback_events(ari, "q3") == []
    assert await ari.request("DELETE", "/playbacks/q1") == (204, None)
    await ari.wait_event("PlaybackFinished", playback__id="q3")
    order = [(e["type"], e["playback"]["id"]) for e in ari.events if "playback" in e]
    assert order == [("PlaybackStarted", "q1"), ("PlaybackFinished", "q1"),
                     ("PlaybackStarted", "q2"), ("PlaybackFinished", "q2"),
                     ("PlaybackFinished", "q3")]


async def test_channel_commands_wait_for_the_playbacks_before_them(ari: Ari) -> None:
    """Real Asterisk 22.10.1 (tests/real, 2026-12-03) runs a channel's ARI commands on the
    channel's thread, where a playback runs to its end: ``POST /variable`` sent 0.2 s into a
    3.2 s prompt was answered (and ChannelVarset sent) when the prompt ended; ``POST /continue``
    was answered at once but the channel left Stasis (StasisEnd) only when the prompt ended.
    A playback's own DELETE acts at once."""
    await ari.connect()
    ari.sim.sounds.durations["sound:ivr/long"] = 0.6
    call = await ari.sim.place_call("9999")
    await ari.wait_event("StasisStart")
    cid = call.call_id
    await ari.request("POST", f"/channels/{cid}/answer")
    loop = asyncio.get_running_loop()
    await ari.request("POST", f"/channels/{cid}/play", media="sound:ivr/long", playbackId="v1")
    sent = loop.time()
    assert await ari.request("POST", f"/channels/{cid}/variable", variable="x", value="1") == (
        204, None)
    assert loop.time() - sent >= 0.5
    varset = await ari.wait_event("ChannelVarset", variable="x")
    assert ari.events.index(varset) > ari.events.index(
        await ari.wait_event("PlaybackFinished", playback__id="v1"))
    await ari.request("POST", f"/channels/{cid}/play", media="sound:ivr/long", playbackId="v2")
    sent = loop.time()
    assert await ari.request("POST", f"/channels/{cid}/continue", context="callyard-transfer",
                             extension="1000") == (204, None)
    assert loop.time() - sent < 0.3
    end = await ari.wait_event("StasisEnd")
    assert loop.time() - sent >= 0.5
    assert ari.events.index(end) > ari.events.index(
        await ari.wait_event("PlaybackFinished", playback__id="v2"))


async def test_stasis_tries_each_application_in_order() -> None:
    """As the shipped dialplan: ``Stasis(<app>)`` of an application with no connected
    WebSocket fails at once (``STASISSTATUS=FAILED``) and the next is tried."""
    async with AriSimulator(sounds=SoundCatalog(default_seconds=0.05),
                            stasis_apps=("first", "second")) as sim:
        ari = Ari(sim, aiohttp.ClientSession())
        try:
            await ari.connect("second")
            call = await sim.place_call("9999")
            start = await ari.wait_event("StasisStart")
            assert start["application"] == "second" and start["args"] == ["9999"]
            assert start["channel"]["dialplan"]["app_data"] == "second,9999"
            status, body = await ari.request(
                "GET", f"/channels/{call.call_id}/variable", variable="STASISSTATUS")
            assert (status, body) == (200, {"value": "FAILED"})  # the first Stasis() failed
            await ari.connect("first")  # the first connected again takes the next call
            await sim.place_call("9999")
            start = await ari.wait_event("StasisStart", application="first")
            assert start["args"] == ["9999"]
        finally:
            await ari.http.close()
        await sim.drop_event_sockets()
        call = await sim.place_call("9999")
        await call.wait_ended()
        assert call.prompts() == ["file:cannot-complete-temp-error"]
