"""Callers on the real Asterisk, and what happened to them told by Asterisk's own events.

An :class:`AsteriskProbe` is a Stasis application of its own (``callyard-probe``) with
``subscribeAll``: its events WebSocket carries every channel's and bridge's events. A call is
``POST /channels?endpoint=Local/<number>@callyard&app=callyard-probe``: the Local channel's
``;1`` half (``A``) enters the probe's application and is the caller's phone (digits go out of
it with ``POST /channels/A/dtmf``, ``DELETE /channels/A`` is the caller hanging up); the ``;2``
half (``B``) runs the project's ``callyard`` context and ``Stasis(callyard,<number>)``, where
the Callyard worker serves it. Every channel of the call (B, the legs the worker dials) carries
its *linked id*, which is A's id (the test configuration adds ``channelvars =
CHANNEL(linkedid)`` to ari.conf, so each event shows it). B's events become the same
:class:`Transcript` entries the simulators write, so the engine-neutral scenarios run
unchanged on the real engine:

============================================  ==============================================
Asterisk event                                 transcript entry
============================================  ==============================================
ChannelStateChange of B to ``Up``              answered
PlaybackStarted on ``channel:B``               prompt_started ``kind:value`` (one per media)
PlaybackContinuing / PlaybackFinished          prompt_finished ``kind:value done|stopped|failed``
ChannelDialplan of B running ``Playback(x)``   prompt_started ``file:x`` (dialplan prompts, e.g.
  (until B's next ChannelDialplan/hangup)        the fallback), then prompt_finished
Dial of a leg linked to the call (ARI          dialed ``target`` (the dial string's user part)
  originate: no ``caller``)
ChannelEnteredBridge: B and the leg together   bridged ``target`` (held off: B back in it)
ChannelLeftBridge of B, the leg staying        held on
ChannelLeftBridge of the leg, B staying up     unbridged ``target``
AMI MusicOnHoldStart / MusicOnHoldStop of B    moh ``class`` / moh ""
ChannelDialplan of B in the transfer context   transferred ``extension``
ChannelVarset on B (not Asterisk's own         variable ``name=value``
  ALL_CAPS variables)
ChannelDestroyed of B                          hangup ``CAUSE by`` (by: caller | engine;
                                                 cause: :data:`CAUSES`)
============================================  ==============================================

A supervisor's leg is any other leg the worker dials for the call; ``Snoop/<leg>-...``
channels on the call's legs are routed to the call too. ARI shows no snoop's directions, so
listening and whispering both read ``supervised "<room> snoop"`` (the supervisor bridged
with a snoop on the party's leg); barging reads ``supervised "<room> heard_by=caller,agent"``
(the supervisor in the call's bridge); its ChannelDestroyed reads ``supervised "<room> gone"``.

ARI reports a playback that was stopped (``DELETE /playbacks/{id}``) or played out alike, as
state ``done``. A prompt therefore counts as stopped when it finished before its sound had
played (its length read from the sound file; :data:`STOP_MARGIN`), or after B's hang-up
request; as failed when ARI said ``failed``, or, within a media list, its sound file is
missing (Asterisk skips it with PlaybackContinuing). A queued playback stopped before it
started ends with PlaybackFinished and no PlaybackStarted: nothing is transcribed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid as uuidlib
import wave
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from appserver.devkit.sim.ari.models import media_to_prompt
from appserver.devkit.sim.caller import SimulatedCall, Transcript

# Q.850 cause codes (ChannelDestroyed ``cause``) -> the names FreeSWITCH (and transcripts) use.
CAUSES: dict[int, str] = {
    0: "NONE", 1: "UNALLOCATED_NUMBER", 3: "NO_ROUTE_DESTINATION", 16: "NORMAL_CLEARING",
    17: "USER_BUSY", 18: "NO_USER_RESPONSE", 19: "NO_ANSWER", 21: "CALL_REJECTED",
    27: "DESTINATION_OUT_OF_ORDER", 28: "INVALID_NUMBER_FORMAT", 31: "NORMAL_UNSPECIFIED",
    34: "NORMAL_CIRCUIT_CONGESTION", 38: "NETWORK_OUT_OF_ORDER", 41: "NORMAL_TEMPORARY_FAILURE",
    127: "INTERWORKING",
}  # fmt: skip
STOP_MARGIN = 0.25  # seconds short of the sound's length that count as stopped
LINKEDID = "CHANNEL(linkedid)"
# Raw formats Asterisk plays: bytes per second.
_RAW_RATES = {".ulaw": 8000, ".alaw": 8000, ".gsm": 1650, ".sln": 16000, ".sln16": 32000,
              ".g722": 8000}  # fmt: skip


def sound_seconds(sounds: Path, name: str) -> float | None:
    """The length of sound ``name`` under ``sounds`` (a language folder), or None when no
    file of a format we can measure exists."""
    for path in sorted(sounds.glob(f"{name}.*")):
        if path.suffix == ".wav":
            with contextlib.suppress(wave.Error, OSError), wave.open(str(path)) as w:
                return w.getnframes() / w.getframerate()
        elif path.suffix in _RAW_RATES:
            return path.stat().st_size / _RAW_RATES[path.suffix]
    return None


def sound_exists(sounds: Path, name: str) -> bool:
    return any(sounds.glob(f"{name}.*"))


def event_time(event: dict[str, Any]) -> float:
    """An event's own timestamp (Asterisk's clock), in seconds."""
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


@dataclass
class _Prompt:
    media: str  # sound:x, digits:1 ...
    started: float  # event time

    @property
    def detail(self) -> str:
        return media_to_prompt(self.media)


@dataclass
class RealAstCall(SimulatedCall):
    """One caller on the real Asterisk."""

    probe: AsteriskProbe
    caller_leg: str  # A: the probe's half of the Local channel ("" for a caller from outside)
    call_id: str  # B: the half the Callyard worker controls (a SIP caller's own channel)
    transcript: Transcript = field(default_factory=Transcript)
    hung_up_by_caller: bool = False
    variables: dict[str, str] = field(default_factory=dict)  # set on B
    _prompts: dict[str, _Prompt] = field(default_factory=dict)  # playback id -> current media
    _dialplan_prompt: _Prompt | None = None
    _legs: dict[str, str] = field(default_factory=dict)  # leg channel id -> dialled target
    _bridge: str = ""  # the bridge B and a leg share
    _party: str = ""  # the leg bridged with B
    _snoops: set[str] = field(default_factory=set)  # snoop channels on the call's legs
    _held: bool = False
    _moh_on: bool = False
    _moh_pending: str | None = None  # music started, the caller's leaving not seen yet
    _held_off_pending: bool = False  # back in the bridge, the music's end not seen yet
    _answered: bool = False
    _phone_ready: asyncio.Event = field(default_factory=asyncio.Event)  # A in Stasis
    _hangup_requested: bool = False
    _transferred: bool = False

    async def press(self, digits: str, gap: float = 0.05) -> None:
        # A joins the probe's application a moment after B answered: only then can it dial.
        await asyncio.wait_for(self._phone_ready.wait(), 10)
        for i, digit in enumerate(digits):
            if i and gap:
                await asyncio.sleep(gap)
            self.transcript.add("dtmf", digit)
            await self.probe.request("POST", f"/channels/{self.caller_leg}/dtmf",
                                     dtmf=digit)

    async def hangup(self) -> None:
        self.hung_up_by_caller = True
        await self.probe.request("DELETE", f"/channels/{self.caller_leg}")

    # ------------------------------------------------------------ B's events

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(event, self._channel_id(event))

    @staticmethod
    def _channel_id(event: dict[str, Any]) -> str:
        channel = event.get("channel") or event.get("peer") or {}
        return str(channel.get("id", ""))

    def _on_ChannelDtmfReceived(self, event: dict[str, Any], channel: str) -> None:
        if channel == self.call_id and not self.caller_leg:  # the probe's own: when sent
            self.transcript.add("dtmf", str(event.get("digit", "")))

    def _on_StasisStart(self, event: dict[str, Any], channel: str) -> None:
        if channel == self.caller_leg:
            self._phone_ready.set()

    def _on_ChannelStateChange(self, event: dict[str, Any], channel: str) -> None:
        if channel == self.call_id and event["channel"]["state"] == "Up" and not self._answered:
            self._answered = True
            self.transcript.add("answered")

    def _on_PlaybackStarted(self, event: dict[str, Any], channel: str) -> None:
        playback = event["playback"]
        self._prompts[playback["id"]] = _Prompt(playback["media_uri"], event_time(event))
        self.transcript.add("prompt_started", media_to_prompt(playback["media_uri"]))

    def _on_PlaybackContinuing(self, event: dict[str, Any], channel: str) -> None:
        prompt = self._prompts.pop(event["playback"]["id"], None)
        if prompt is not None:
            self._finish(prompt, event_time(event), failed=not self._media_exists(prompt.media))

    def _on_PlaybackFinished(self, event: dict[str, Any], channel: str) -> None:
        prompt = self._prompts.pop(event["playback"]["id"], None)
        if prompt is not None:
            self._finish(prompt, event_time(event),
                         failed=event["playback"]["state"] == "failed")

    def _finish(self, prompt: _Prompt, at: float, failed: bool) -> None:
        if failed and not self._hangup_requested:
            status = "failed"
        elif self._hangup_requested or self._cut_short(prompt, at):
            status = "stopped"
        else:
            status = "done"
        self.transcript.add("prompt_finished", f"{prompt.detail} {status}")

    def _cut_short(self, prompt: _Prompt, at: float) -> bool:
        scheme, _, name = prompt.media.partition(":")
        seconds = sound_seconds(self.probe.sounds, name) if scheme == "sound" else None
        return seconds is not None and at - prompt.started < seconds - STOP_MARGIN

    def _media_exists(self, media: str) -> bool:
        scheme, _, name = media.partition(":")
        return scheme != "sound" or sound_exists(self.probe.sounds, name)

    def _on_ChannelDialplan(self, event: dict[str, Any], channel: str) -> None:
        if channel != self.call_id:
            return
        self._end_dialplan_prompt(event)
        dialplan = event["channel"]["dialplan"]
        if dialplan["app_name"] == "Playback":
            media = "sound:" + dialplan["app_data"].split(",")[0]
            self._dialplan_prompt = _Prompt(media, event_time(event))
            self.transcript.add("prompt_started", media_to_prompt(media))
        if dialplan["context"] == self.probe.transfer_context and not self._transferred:
            self._transferred = True
            self.transcript.add("transferred", dialplan["exten"])

    def _end_dialplan_prompt(self, event: dict[str, Any]) -> None:
        prompt, self._dialplan_prompt = self._dialplan_prompt, None
        if prompt is not None:
            self._finish(prompt, event_time(event), failed=not self._media_exists(prompt.media))

    def _on_Dial(self, event: dict[str, Any], channel: str) -> None:
        if (channel in (self.call_id, self.caller_leg) or "caller" in event
                or event.get("dialstatus") or self._transferred or channel in self._legs):
            return  # only the worker's originate (no calling channel), once per leg
        target = str(event.get("dialstring", "")).rpartition("/")[2]
        self._legs[channel] = target.removeprefix("sip:").partition("@")[0]
        self.transcript.add("dialed", self._legs[channel])

    def _on_ChannelEnteredBridge(self, event: dict[str, Any], channel: str) -> None:
        bridge = event["bridge"]
        if str(event["channel"].get("name", "")).startswith("Snoop/"):
            self._snoops.add(channel)
        members = set(bridge["channels"])
        legs = [self._legs[c] for c in members if c in self._legs]
        if channel == self.call_id and self._held and bridge["id"] == self._bridge:
            self._held = False
            if self._moh_on:  # its AMI MusicOnHoldStop is still on the way
                self._held_off_pending = True
            else:
                self.transcript.add("held", "off")
        elif self.call_id in members and legs and not self._bridge:
            self._bridge = bridge["id"]
            self._party = next(c for c in members if c in self._legs)
            self.transcript.add("bridged", legs[0])
        elif channel in self._legs and bridge["id"] == self._bridge:
            self.transcript.add("supervised", f"{self._legs[channel]} heard_by=caller,agent")
        elif members & self._snoops:
            for sup in members & set(self._legs):
                self.transcript.add("supervised", f"{self._legs[sup]} snoop")

    def _on_ChannelLeftBridge(self, event: dict[str, Any], channel: str) -> None:
        bridge = event["bridge"]
        if bridge["id"] != self._bridge or self._hangup_requested:
            return
        if channel == self.call_id and any(c in self._legs for c in bridge["channels"]):
            self._held = True
            self.transcript.add("held", "on")
            if self._moh_pending is not None:
                self.transcript.add("moh", self._moh_pending)
                self._moh_pending = None
        elif channel == self._party:
            self._bridge = ""
            self.transcript.add("unbridged", self._legs[channel])

    def _on_ChannelVarset(self, event: dict[str, Any], channel: str) -> None:
        name = str(event.get("variable", ""))
        if channel == self.call_id and name and not name.isupper():
            self.variables[name] = str(event.get("value", ""))
            self.transcript.add("variable", f"{name}={event.get('value', '')}")

    def _on_ChannelHangupRequest(self, event: dict[str, Any], channel: str) -> None:
        if channel == self.call_id:
            self._hangup_requested = True

    def _on_ChannelDestroyed(self, event: dict[str, Any], channel: str) -> None:
        if channel in self._legs and channel != self._party:
            self.transcript.add("supervised", f"{self._legs[channel]} gone")
        if channel != self.call_id:
            return
        self._hangup_requested = True
        self._end_dialplan_prompt(event)
        for playback_id in list(self._prompts):
            self._finish(self._prompts.pop(playback_id), event_time(event), failed=False)
        cause = int(event.get("cause", 0))
        if cause == 0 and self.hung_up_by_caller:
            # The probe hung up the caller's leg (normal clearing); Asterisk passes that cause
            # across the Local channel to B only when B is not already on its way down.
            cause = 16
        by = "caller" if self.hung_up_by_caller else "engine"
        self.transcript.add("hangup", f"{CAUSES.get(cause, f'CAUSE_{cause}')} {by}")

    def on_moh(self, moh_class: str) -> None:
        """AMI and ARI events come over two sockets: music for a hold can arrive before the
        ARI event of the caller leaving the bridge, and its end after the caller's return.
        Each is transcribed in the order Asterisk acted: held on, moh; moh "", held off."""
        self._moh_on = bool(moh_class)
        if moh_class and self._bridge and not self._held:
            self._moh_pending = moh_class
            return
        self.transcript.add("moh", moh_class)
        if not moh_class and self._held_off_pending:
            self._held_off_pending = False
            self.transcript.add("held", "off")


class AsteriskProbe:
    """Places calls on the real Asterisk over ARI and transcribes them (and MOH over AMI)."""

    def __init__(self, ari_url: str, ari_user: str, ari_password: str, sounds: Path, *,
                 ami: tuple[str, int, str, str] | None = None, app: str = "callyard-probe",
                 context: str = "callyard",
                 transfer_context: str = "callyard-transfer") -> None:  # fmt: skip
        self.base = ari_url.rstrip("/") + "/ari"
        self.auth = {"Authorization": aiohttp.encode_basic_auth(ari_user, ari_password)}
        self.sounds, self.ami, self.app = sounds, ami, app
        self.context, self.transfer_context = context, transfer_context
        self.calls: dict[str, RealAstCall] = {}  # by A's id (the linked id) and by B's
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ws_open = asyncio.Event()
        self._incoming: dict[str, list[RealAstCall]] = {}  # number -> calls expected over SIP

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers=self.auth)
        self._tasks.append(asyncio.create_task(self._read_events()))
        await asyncio.wait_for(self._ws_open.wait(), 10)
        if self.ami is not None:
            self._tasks.append(asyncio.create_task(self._read_ami(*self.ami)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, **params: str) -> Any:
        assert self._session is not None
        async with self._session.request(method, self.base + path, params=params) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise RuntimeError(f"ARI {method} {path}: {resp.status} {text}")
            return json.loads(text) if text else None

    async def app_registered(self, app: str) -> bool:
        """Whether Asterisk has the Stasis application ``app`` (with a worker on it)."""
        try:
            await self.request("GET", f"/applications/{app}")
        except (RuntimeError, aiohttp.ClientError, OSError):
            return False
        return True

    def expect_call(self, number: str) -> RealAstCall:
        """Transcribe the next call to ``number`` that reaches Asterisk over SIP (placed by
        another phone, e.g. SIPp through the Kamailio edge)."""
        call = RealAstCall(self, "", "")
        self._incoming.setdefault(number, []).append(call)
        call.transcript.add("ringing")
        return call

    async def place_call(
        self, to: str, caller: str = "+15550100", caller_name: str = ""
    ) -> RealAstCall:
        a = f"probe-{uuidlib.uuid4().hex[:12]}"
        call = RealAstCall(self, a, f"{a}-b")
        self.calls[a] = self.calls[call.call_id] = call
        call.transcript.add("ringing")
        await self.request("POST", "/channels", endpoint=f"Local/{to}@{self.context}",
                           app=self.app, channelId=a, otherChannelId=call.call_id,
                           callerId=f'"{caller_name}" <{caller}>')  # fmt: skip
        return call

    # ------------------------------------------------------------ events

    async def _read_events(self) -> None:
        """The events WebSocket, reopened whenever it closes (Asterisk restarted: events of
        the gap are lost)."""
        assert self._session is not None
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self._session.ws_connect(
                    self.base.replace("http", "ws", 1) + "/events",
                    params={"app": self.app, "subscribeAll": "true"}, heartbeat=20,
                ) as ws:
                    self._ws_open.set()
                    async for message in ws:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            self._route(json.loads(message.data))
            await asyncio.sleep(0.2)

    def _route(self, event: dict[str, Any]) -> None:
        playback = event.get("playback")
        if isinstance(playback, dict):
            scheme, _, target = str(playback.get("target_uri", "")).partition(":")
            call = self.calls.get(target) if scheme == "channel" else None
            if call is not None and target == call.call_id:
                call.on_event(event)
            return
        channel = event.get("channel") or event.get("peer")
        if not isinstance(channel, dict):
            return
        linked = (channel.get("channelvars") or {}).get(LINKEDID) or channel.get("id")
        call = self.calls.get(str(linked)) or self._snooped(str(channel.get("name", "")))
        waiting = self._incoming.get(str((channel.get("dialplan") or {}).get("exten")))
        if call is None and waiting and str(channel.get("name", "")).startswith("PJSIP/"):
            call = waiting.pop(0)
            call.call_id = str(channel["id"])
            self.calls[call.call_id] = call
        if call is not None:
            call.on_event(event)

    def _snooped(self, name: str) -> RealAstCall | None:
        """The call a ``Snoop/<channel>-<n>`` channel spies on, by one of its legs."""
        if not name.startswith("Snoop/"):
            return None
        target = name.removeprefix("Snoop/").rpartition("-")[0]
        return next((c for c in self.calls.values() if target in c._legs), None)

    async def _read_ami(self, host: str, port: int, user: str, secret: str) -> None:
        """Music on hold has no ARI event: AMI's MusicOnHoldStart/Stop name the channel."""
        while True:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    await self._ami_session(reader, writer, user, secret)
                finally:
                    writer.close()
            await asyncio.sleep(0.2)

    async def _ami_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           user: str, secret: str) -> None:  # fmt: skip
        await reader.readline()  # banner
        writer.write(f"Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\n"
                     "Events: call\r\n\r\n".encode())
        message: dict[str, str] = {}
        while line := await reader.readline():
            text = line.decode(errors="replace").rstrip("\r\n")
            if text:
                name, _, value = text.partition(": ")
                message[name] = value
                continue
            self._on_ami(message)
            message = {}

    def _on_ami(self, message: dict[str, str]) -> None:
        kind = message.get("Event")
        if kind not in ("MusicOnHoldStart", "MusicOnHoldStop"):
            return
        call = self.calls.get(message.get("Uniqueid", ""))
        if call is not None and message.get("Uniqueid") == call.call_id:
            call.on_moh(message.get("Class", "default") if kind == "MusicOnHoldStart" else "")
