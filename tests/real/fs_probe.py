"""Callers on the real FreeSWITCH, and what happened to them told by FreeSWITCH's own events.

A :class:`FreeswitchProbe` keeps one inbound Event Socket connection to the engine. A call is
``originate loopback/<number>/callyard &park()``: the parked ``-a`` leg is the caller's phone
(digits go out of it with ``uuid_send_dtmf``, hanging it up is the caller hanging up) and the
``-b`` leg enters the project's ``callyard`` context, where the ``socket`` application hands it
to a Callyard worker. The ``-b`` leg's events become the same :class:`Transcript` entries the
simulators write, so the engine-neutral scenarios run unchanged on the real engine:

=====================================  ==========================================
FreeSWITCH event on the ``-b`` leg      transcript entry
=====================================  ==========================================
CHANNEL_ANSWER                          answered
CHANNEL_EXECUTE playback/speak/say      prompt_started ``kind:value``
CHANNEL_EXECUTE_COMPLETE of it          prompt_finished ``kind:value done|stopped|failed``
playback local_stream://X (+complete)   moh X (moh "")
DTMF                                    dtmf
CHANNEL_EXECUTE bridge / set / transfer dialed target / variable n=v / transferred dest
API uuid_setvar_multi                   variable n=v (each)
CHANNEL_BRIDGE / CHANNEL_UNBRIDGE       bridged / unbridged (the dialled target)
MEDIA_BUG_START/STOP displace           held on + moh X / moh "" + held off
CHANNEL_HANGUP_COMPLETE                 hangup ``cause by`` (by: caller | engine)
=====================================  ==========================================

A supervisor's leg is found by its ``CHANNEL_EXECUTE eavesdrop <the -b leg>``: its events are
transcribed too, as ``supervised "<room> heard_by=..."`` (mod_eavesdrop's mixing, from the
leg's ``eavesdrop_whisper_aleg`` / ``_bleg`` variables, then from each DTMF event on the leg:
FreeSWITCH fires one when eavesdrop takes a digit, 0 1 2 3 setting the mixing as
switch_ivr_async.c does) and ``supervised "<room> gone"`` on its CHANNEL_HANGUP_COMPLETE.

A prompt counts as stopped when FreeSWITCH reported ``Playback-Status: break`` for it, or a
``uuid_break`` for the channel ran while it played, or the channel (or the probe, for the
caller) hung up meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid as uuidlib
import wave
from dataclasses import dataclass, field

from engines import FS_SOUNDS

from appserver.devkit.sim.caller import SimulatedCall, Transcript
from appserver.freeswitch import esl_codec as codec
from appserver.freeswitch.prompts import file_string_parts, from_app

EVENTS = (
    "CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE DTMF CHANNEL_BRIDGE "
    "CHANNEL_UNBRIDGE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE PLAYBACK_STOP API "
    "MEDIA_BUG_START MEDIA_BUG_STOP"
)
PROMPT_APPS = ("playback", "speak", "say")
FAILED = ("FILE NOT FOUND", "PLAYBACK ERROR")
_LEG_VARS = re.compile(r"^(\{[^}]*\}|\[[^\]]*\])+")


# digit -> (ED_MUX_READ: the bridged party hears, ED_MUX_WRITE: the caller hears)
EAVESDROP_DIGITS = {"0": (False, False), "1": (True, False), "2": (False, True),
                    "3": (True, True)}


def switch_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "yes", "on", "1", "enabled", "active", "allow")


def dial_target(data: str) -> str:
    """The party a ``bridge`` dials: ``{..}loopback/1001/ctx`` -> 1001,
    ``sofia/callyard/sip:call-x@h:5070`` -> call-x, ``user/1001@dom`` -> 1001."""
    dial = _LEG_VARS.sub("", data).split(",")[0].split("|")[0]
    parts = dial.split("/")
    if parts[0] == "loopback" and len(parts) > 1:
        return parts[1]
    return parts[-1].removeprefix("sip:").split("@")[0]


@dataclass
class _Prompt:
    """One prompt application: a file_string's files play one after the other inside it, and
    FreeSWITCH reports only the application's start and end (one PLAYBACK_START/STOP too):
    its files are transcribed at the times their lengths give, the last at the end."""

    details: list[str]
    seconds: list[float | None]  # each file's length (None: missing, the engine skips it)
    at: int = 0  # the file playing now
    stopped: bool = False
    timer: asyncio.TimerHandle | None = None


def file_seconds(part: str) -> float | None:
    """How long FreeSWITCH plays one file of a file_string (None: it has no such file)."""
    if part.startswith("silence_stream://"):
        return int(part.removeprefix("silence_stream://").split(",")[0]) / 1000
    try:
        with wave.open(str(FS_SOUNDS / part)) as w:
            return w.getnframes() / w.getframerate()
    except (OSError, wave.Error, EOFError):
        return None


@dataclass
class RealFsCall(SimulatedCall):
    """One caller on the real FreeSWITCH."""

    probe: FreeswitchProbe
    caller_leg: str  # the parked -a leg: the caller's phone ("" for a caller from outside)
    call_id: str = ""  # the -b leg Callyard controls (its Unique-ID), once created
    transcript: Transcript = field(default_factory=Transcript)
    hung_up_by_caller: bool = False
    variables: dict[str, str] = field(default_factory=dict)  # the -b leg's, at hang-up
    _prompts: dict[str, _Prompt] = field(default_factory=dict)  # Application-UUID -> prompt
    _moh: dict[str, str] = field(default_factory=dict)  # Application-UUID -> class
    executed: list[str] = field(default_factory=list)  # Application-UUIDs of CHANNEL_EXECUTE
    _dialed: str = ""
    _spies: dict[str, tuple[str, bool, bool]] = field(default_factory=dict)  # leg -> mixing

    async def press(self, digits: str, gap: float = 0.05) -> None:
        for i, digit in enumerate(digits):
            if i and gap:
                await asyncio.sleep(gap)
            self.transcript.add("dtmf", digit)
            await self.probe.api(f"uuid_send_dtmf {self.caller_leg} {digit}")

    async def hangup(self) -> None:
        """Hang up the way a phone's BYE does: on the leg Callyard serves, once it exists.
        Killing the loopback's -a leg ends the -b leg only from the -a leg's hangup thread;
        meanwhile -b's reads fail, its socket application returns and the dialplan goes on to
        the next worker and the fallback prompt, whose ``hangup`` could win the cause."""
        self.hung_up_by_caller = True
        await self.probe.api(f"uuid_kill {self.call_id or self.caller_leg} NORMAL_CLEARING")

    # ------------------------------------------------------------ the -b leg's events

    def on_event(self, event: codec.EslEvent) -> None:
        name, t = event.name, self.transcript
        app, data = event.get("Application"), event.get("Application-Data")
        key = event.get("Application-UUID")
        if name == "CHANNEL_ANSWER":
            t.add("answered")
        elif name == "CHANNEL_EXECUTE":
            self.executed.append(key)
            if app == "playback" and data.startswith("local_stream://"):
                self._moh[key] = data.removeprefix("local_stream://")
                t.add("moh", self._moh[key])
            elif app in PROMPT_APPS:
                # a file_string's files play one after the other inside one application:
                # the engine tells when it starts and ends, so its files are transcribed then
                parts = file_string_parts(data) if app == "playback" else [data]
                details = [from_app(app, part) or f"file:{part}" for part in parts]
                seconds = [file_seconds(part) for part in parts] if len(parts) > 1 else [0.0]
                self._prompts[key] = prompt = _Prompt(details, seconds)
                self._play_files(prompt)
            elif app == "bridge":
                self._dialed = dial_target(data)
                t.add("dialed", self._dialed)
            elif app == "set":
                t.add("variable", data)
            elif app == "transfer":
                t.add("transferred", data.split(" ")[0])
        elif name == "CHANNEL_EXECUTE_COMPLETE":
            if key in self._moh:
                del self._moh[key]
                t.add("moh", "")
            elif key in self._prompts:
                prompt = self._prompts.pop(key)
                if prompt.timer is not None:
                    prompt.timer.cancel()
                failed = event.get("Application-Response") in FAILED and not self.hung_up
                # The caller's hang-up may reach us after the playback's completion: a prompt
                # still running when the probe hung up was stopped by it.
                stopped = prompt.stopped or self.hung_up_by_caller
                status = "failed" if failed else "stopped" if stopped else "done"
                if prompt.at < len(prompt.details):
                    t.add("prompt_finished", f"{prompt.details[prompt.at]} {status}")
                    prompt.at += 1
                    if status == "done":  # the engine was quicker than the files' lengths
                        self._play_files(prompt, timed=False)
        elif name == "PLAYBACK_STOP" and event.get("Playback-Status") == "break":
            self._stop_prompts()
        elif name == "API" and event.get("API-Command") == "uuid_break":
            if event.get("API-Command-Argument").split(" ")[0] == self.call_id:
                self._stop_prompts()
        elif name == "API" and event.get("API-Command") == "uuid_setvar_multi":
            uuid, _, assignments = event.get("API-Command-Argument").partition(" ")
            if uuid == self.call_id:
                for assignment in assignments.split(";"):
                    t.add("variable", assignment)
        elif name == "DTMF":  # the probe's own callers' digits are transcribed when sent
            if not self.caller_leg:
                t.add("dtmf", event.get("DTMF-Digit"))
        elif name == "CHANNEL_BRIDGE":
            t.add("bridged", self._dialed)
        elif name == "CHANNEL_UNBRIDGE":
            t.add("unbridged", self._dialed)
        elif name in ("MEDIA_BUG_START", "MEDIA_BUG_STOP"):
            if event.get("Media-Bug-Function") == "displace":
                stream = event.get("Media-Bug-Target").removeprefix("local_stream://")
                if name == "MEDIA_BUG_START":
                    t.add("held", "on")
                    t.add("moh", stream)
                else:
                    t.add("moh", "")
                    t.add("held", "off")
        elif name == "CHANNEL_HANGUP":  # before the running application completes
            self._stop_prompts()
        elif name == "CHANNEL_HANGUP_COMPLETE":
            self.variables = {k[9:]: v for k, v in event.headers.items()
                              if k.startswith("variable_")}  # fmt: skip
            by = "caller" if self.hung_up_by_caller else "engine"
            t.add("hangup", f"{event.get('Hangup-Cause')} {by}")

    def on_spy_event(self, leg: str, event: codec.EslEvent) -> None:
        """An event of a supervisor's eavesdropping leg (see the module doc)."""
        room, to_agent, to_caller = self._spies[leg]
        if event.name == "CHANNEL_HANGUP_COMPLETE":
            self.transcript.add("supervised", f"{room} gone")
            return
        if event.name != "DTMF" or event.get("DTMF-Digit") not in EAVESDROP_DIGITS:
            return
        to_agent, to_caller = EAVESDROP_DIGITS[event.get("DTMF-Digit")]
        self._spies[leg] = (room, to_agent, to_caller)
        self._supervised(leg)

    def add_spy(self, leg: str, event: codec.EslEvent) -> None:
        room = dial_target(event.get("variable_sip_to_user")
                           or event.get("Caller-Destination-Number"))
        self._spies[leg] = (room, switch_true(event.get("variable_eavesdrop_whisper_aleg")),
                            switch_true(event.get("variable_eavesdrop_whisper_bleg")))
        self._supervised(leg)

    def _supervised(self, leg: str) -> None:
        room, to_agent, to_caller = self._spies[leg]
        who = (["caller"] if to_caller else []) + (["agent"] if to_agent else [])
        self.transcript.add("supervised", f"{room} heard_by={','.join(who) or 'nobody'}")

    @property
    def hung_up(self) -> bool:
        return self.ended or self.hung_up_by_caller

    def _stop_prompts(self) -> None:
        for prompt in self._prompts.values():
            prompt.stopped = True
            if prompt.timer is not None:
                prompt.timer.cancel()
                prompt.timer = None

    def _play_files(self, prompt: _Prompt, timed: bool = True) -> None:
        """Transcribe the files from ``prompt.at`` on: a missing one at once (skipped), the
        next one's start after a file's length; the last one ends with the application."""
        t = self.transcript
        while prompt.at < len(prompt.details):
            detail, seconds = prompt.details[prompt.at], prompt.seconds[prompt.at]
            t.add("prompt_started", detail)
            if timed and prompt.at == len(prompt.details) - 1 and seconds is not None:
                return
            if seconds is None:
                t.add("prompt_finished", f"{detail} failed")
                prompt.at += 1
                continue
            if timed:
                prompt.timer = asyncio.get_running_loop().call_later(
                    seconds, self._file_played, prompt)
                return
            t.add("prompt_finished", f"{detail} done")
            prompt.at += 1

    def _file_played(self, prompt: _Prompt) -> None:
        prompt.timer = None
        if prompt.stopped:
            return
        self.transcript.add("prompt_finished", f"{prompt.details[prompt.at]} done")
        prompt.at += 1
        self._play_files(prompt)


class FreeswitchProbe:
    """An inbound Event Socket client that places calls and transcribes them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8021, password: str = "ClueCon",
                 context: str = "callyard") -> None:  # fmt: skip
        self.host, self.port, self.password, self.context = host, port, password, context
        self.calls: dict[str, RealFsCall] = {}  # by either leg's uuid
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._replies: asyncio.Queue[codec.Frame] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._incoming: dict[str, list[RealFsCall]] = {}  # number -> calls expected over SIP

    async def start(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._task = asyncio.create_task(self._read())
        await self._replies.get()  # auth/request
        await self._command(f"auth {self.password}")
        await self._command(f"event plain {EVENTS}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()

    async def api(self, line: str) -> str:
        return (await self._command(f"api {line}")).text

    async def place_call(
        self, to: str, caller: str = "+15550100", caller_name: str = ""
    ) -> RealFsCall:
        leg = str(uuidlib.uuid4())
        call = RealFsCall(self, leg)
        self.calls[leg] = call
        variables = f"origination_uuid={leg},origination_caller_id_number={caller}"
        if caller_name:
            variables += f",origination_caller_id_name='{caller_name}'"
        call.transcript.add("ringing")
        reply = await self._command(
            f"bgapi originate {{{variables}}}loopback/{to}/{self.context} &park()")
        if not reply.reply_text.startswith("+OK"):
            raise RuntimeError(f"originate refused: {reply.reply_text}")
        return call

    def expect_call(self, number: str) -> RealFsCall:
        """Transcribe the next call to ``number`` that reaches the engine over SIP (placed by
        another phone, e.g. SIPp through the Kamailio edge)."""
        call = RealFsCall(self, "")
        self._incoming.setdefault(number, []).append(call)
        call.transcript.add("ringing")
        return call

    async def _command(self, line: str) -> codec.Frame:
        assert self._writer is not None
        async with self._lock:
            self._writer.write(codec.encode_command(line))
            await self._writer.drain()
            return await asyncio.wait_for(self._replies.get(), 10)

    async def _read(self) -> None:
        assert self._reader is not None
        parser = codec.FrameParser()
        while data := await self._reader.read(65536):
            for frame in parser.feed(data):
                if frame.content_type.startswith("text/event"):
                    self._route(codec.parse_event(frame))
                elif frame.content_type in ("auth/request", "command/reply", "api/response"):
                    self._replies.put_nowait(frame)

    def _route(self, event: codec.EslEvent) -> None:
        uid = event.get("Unique-ID")
        if event.name == "CHANNEL_CREATE":
            waiting = self._incoming.get(event.get("Caller-Destination-Number"))
            if waiting and event.get("Channel-Name").startswith("sofia/"):
                call = waiting.pop(0)
                call.call_id = uid
                self.calls[uid] = call
                return
            call = self.calls.get(event.get("variable_other_loopback_leg_uuid"))
            if call is not None and not call.call_id and uid != call.caller_leg:
                call.call_id = uid
                self.calls[uid] = call
            return
        if event.name == "API":
            for call in {id(c): c for c in self.calls.values()}.values():
                call.on_event(event)
            return
        if event.name == "CHANNEL_EXECUTE" and event.get("Application") == "eavesdrop":
            call = self.calls.get(event.get("Application-Data"))
            if call is not None and event.get("Application-Data") == call.call_id:
                self.calls[uid] = call
                call.add_spy(uid, event)
            return
        call = self.calls.get(uid)
        if call is not None and uid == call.call_id:
            call.on_event(event)
        elif call is not None and uid in call._spies:
            call.on_spy_event(uid, event)
