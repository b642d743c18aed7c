"""One simulated caller on the simulated FreeSWITCH: the dialplan, the outbound socket and
the dialplan applications the worker executes through ``sendmsg``.

The shipped dialplan is mirrored: ``socket <worker> async full`` for each configured
worker in turn (the next one when a worker refuses the connection or drops the socket
while the caller is still there; the application running then goes on to its end: a prompt,
a stretch of music, a bridge until a party hangs up), then a polite message and hangup. With
the simulator's ingress ``park``, the park extension instead: ``multiset`` (with
``callyard_ingress=park``) and ``park``, where the applications that ``sendmsg <uuid>`` from
any inbound connection queues run, as they would in a socket's call.

Queued applications run as on FreeSWITCH 1.10 (switch_ivr.c, switch_core_session.c): one
after the other when each ``sendmsg`` carries ``event-lock: true``; without it, an
application that arrives while a playback, music or sleep runs is executed *nested* inside
it (the running one pauses, the newer one plays to its end first, then the older resumes),
so a multi-prompt greeting sent unlocked is heard last prompt first. ``uuid_break <uuid>
all`` flushes the queued ones and stops every nested playback at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from appserver.devkit.sim.caller import Signal, SimulatedCall, Transcript, first_of
from appserver.devkit.sim.esl import server_codec as codec
from appserver.devkit.sim.esl.behaviour import Behaviour
from appserver.devkit.sim.esl.channel import (
    MYEVENTS,
    Filters,
    Pairs,
    SimChannel,
    Subscription,
    encode_connect_reply,
)
from appserver.devkit.sim.recordings import write_silence
from appserver.freeswitch.esl_codec import ESLProtocolError
from appserver.freeswitch.prompts import file_string_parts, from_app

log = logging.getLogger("callyard.sim.esl")

INTERRUPTIBLE = {"playback", "speak", "say", "play_and_get_digits", "read", "sleep", "record"}
_VARS = re.compile(r"^\{[^}]*\}")
# What the shipped park extension sets before parking (dialplans/freeswitch/callyard.xml.j2)
PARK_MULTISET = ("hangup_after_bridge=false continue_on_fail=true playback_terminators=none "
                 "callyard_ingress=park")


@dataclass(frozen=True, slots=True)
class _QueuedApp:
    """An application a ``sendmsg execute`` queued on the channel."""

    app: str
    arg: str
    app_uuid: str
    lock: bool  # the message carried ``event-lock: true``


@dataclass(slots=True)
class _SessionRecording:
    """A ``uuid_record`` media bug: waits for the bridge when ``RECORD_BRIDGE_REQ`` is set."""

    path: str
    started: float | None = None  # monotonic, once writing


class _Ended(Exception):
    """The channel hung up while an application was running."""


def dial_string(dial: str) -> tuple[dict[str, str], str]:
    """A dial string's ``{leg variables}`` and its target, the user part of the first leg:
    "user/1001" -> 1001, "sofia/gw/sip:call-x@host" -> call-x."""
    leg_vars: dict[str, str] = {}
    match = _VARS.match(dial)
    if match:
        for kv in match.group(0)[1:-1].split(","):
            key, _, value = kv.partition("=")
            leg_vars[key] = value
    first = _VARS.sub("", dial).split(",")[0].split("|")[0]
    return leg_vars, first.rsplit("/", 1)[-1].split("@")[0].removeprefix("sip:")


class DialledLeg:
    """The B-leg a ``bridge`` originates: rings, answers, can be killed by uuid."""

    def __init__(self, call: EslSimCall, uuid: str, target: str) -> None:
        self.call = call
        self.uuid = uuid
        self.target = target
        caller = call.channel
        self.channel = SimChannel(
            caller=caller.caller,
            called=target,
            caller_name=caller.caller_name,
            context=caller.context,
            uuid=uuid,
            direction="outbound",
            name=f"sofia/callyard/{target}",
            hostname=caller.hostname,
        )
        self.bridged = False
        self.ended = Signal()

    @property
    def alive(self) -> bool:
        return not self.ended.is_set()

    def answer(self) -> None:
        chan = self.channel
        chan.answer_state, chan.call_state = "answered", "ACTIVE"
        chan.answered_us = int(time.time() * 1_000_000)
        self.bridged = True

    def hangup(self, cause: str) -> None:
        """The leg hangs up; its ``api_hangup_hook`` runs, as in the core's hangup state."""
        if not self.alive:
            return
        chan = self.channel
        chan.hangup_cause = chan.variables["hangup_cause"] = cause
        chan.answer_state, chan.call_state = "hangup", "HANGUP"
        chan.hangup_us = int(time.time() * 1_000_000)
        self.ended.set()
        if self.call.sim.legs.get(self.uuid) is self:
            del self.call.sim.legs[self.uuid]
        hook = chan.variables.get("api_hangup_hook", "")
        if hook:
            self.call.sim.api(hook)


class EventListener(Protocol):
    """A socket that hears other channels' events (:meth:`Switch.broadcast`)."""

    def hears(self, name: str) -> bool: ...
    def deliver(self, name: str, pairs: Pairs, body: str = "") -> None: ...
    def close(self) -> None: ...


class Switch(Protocol):
    """What a call uses of the simulated node that places it
    (:class:`.simulator.FreeswitchSimulator`, which imports this module)."""

    workers: list[tuple[str, int]]  # the dialplan's socket targets, in order
    hostname: str  # FreeSWITCH-Hostname of its events
    ingress: str  # "socket" (the socket extension) or "park" (the park extension)
    context: str  # the dialplan context calls arrive in
    ivr_route: re.Pattern[str]  # the Callyard extension's numbers: a transfer runs it again
    behaviour: Behaviour
    legs: dict[str, DialledLeg]  # B-legs of running bridges, by uuid
    dtmf_latencies: list[float]

    @property
    def has_listeners(self) -> bool: ...
    def wants_event(self, name: str) -> bool: ...
    def api(self, line: str) -> str: ...
    def broadcast(self, name: str, pairs: Pairs, body: str = "") -> None: ...
    def listen(self, session: EventListener) -> None: ...
    def unlisten(self, session: EventListener) -> None: ...
    def forget(self, call: EslSimCall) -> None: ...


class EslSimCall(SimulatedCall):
    """A caller whose call is controlled by a Callyard worker over an outbound socket, or
    (ingress park) parked and driven over a worker's inbound connection."""

    def __init__(self, sim: Switch, to: str, caller: str, caller_name: str,
                 channel: SimChannel | None = None) -> None:
        self.sim = sim
        # ``channel``: a leg the switch originated, answered, now running the dialplan
        self.channel = channel or SimChannel(caller=caller, called=to, caller_name=caller_name,
                                             context=sim.context, hostname=sim.hostname)
        self.call_id = self.channel.uuid
        self.transcript = Transcript()
        self._writer: asyncio.StreamWriter | None = None
        self._subs = Subscription()
        self._filters = Filters()
        self._myevents = False  # this channel's events only
        self._fmt = "plain"
        self._lingering = False
        self._apps: deque[_QueuedApp] = deque()
        self._locked = False  # an event-locked application holds the channel (CF_EVENT_LOCK)
        self._break_all = False  # uuid_break ... all: every nested playback stops
        self._app_ready = Signal()
        self._app_ended = Signal()  # an application completed
        self._break = Signal()
        self._hungup = Signal()
        # the running applications stop: the hangup, or (park) a transfer out of the park
        self._stopped = Signal()
        self._parking = False  # the dialplan's ``park`` runs: queued applications run in it
        self._left_socket = Signal()  # transfer or hangup ended socket control
        self._exit = Signal()
        self._digits: deque[str] = deque()
        self._digit_evt = Signal()
        self._current_app = ""  # the innermost running application
        self._current_prompt = ""  # the innermost running prompt
        self._transferred = ""
        self._transfer_context = ""  # the transfer's context ("": the call's own)
        self._dtmf_at = 0.0  # when the last digit was sent, until the worker's next command
        self._displaced: dict[str, str] = {}  # uuid_displace streams -> their flags
        self._recordings: dict[str, _SessionRecording] = {}  # uuid_record paths running
        self.task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ caller actions

    async def press(self, digits: str, gap: float = 0.05) -> None:
        for i, digit in enumerate(digits):
            if i and gap:
                await asyncio.sleep(gap)
            self.send_dtmf(digit)

    async def hangup(self) -> None:
        self.end("NORMAL_CLEARING", "caller")
        await asyncio.sleep(0)

    def send_dtmf(self, digit: str) -> None:
        if not self.channel.alive:
            return
        self.transcript.add("dtmf", digit)
        self._dtmf_at = time.perf_counter()
        self._digits.append(digit)
        self._digit_evt.set()
        self.emit(
            "DTMF",
            [("DTMF-Digit", digit), ("DTMF-Duration", "2000"), ("DTMF-Source", "RTP")],
            with_variables=False,
        )
        terminators = self.channel.variables.get("playback_terminators", "*")
        if self._current_app in ("playback", "speak", "say", "record") and digit in terminators:
            self.channel.variables["playback_terminator_used"] = digit
            self._break.set()

    # ------------------------------------------------------------ dialplan

    async def run(self) -> None:
        self.transcript.add("ringing")
        try:
            if self.sim.ingress == "park":
                await self._park_extension()
                return
            await self._socket_extension()
            while self._transferred and self._reenters(self._transferred,
                                                       self._transfer_context):
                self._transferred = self._transfer_context = ""
                await self._socket_extension()
            if self.channel.alive and not self._transferred:
                # dialplan fallback: the polite message, then hangup
                await self._execute("answer", "", "")
                await self._execute("playback", self.sim.behaviour.fallback_prompt, "")
                self.end("NORMAL_CLEARING", "engine")
            elif self._transferred and self.channel.alive:
                await asyncio.sleep(self.sim.behaviour.transfer_seconds)
                self.end("NORMAL_CLEARING", "engine")
        except Exception:
            log.exception("simulated call failed", extra={"call_id": self.call_id})
            self.end("NORMAL_TEMPORARY_FAILURE", "engine")
        finally:
            self.sim.forget(self)

    async def _socket_extension(self) -> None:
        """The shipped socket extension: ``socket`` to each worker in turn, until one keeps
        the call to its end or transfers it."""
        for host, port in self.sim.workers:
            if not self.channel.alive or self._transferred:
                break
            await self._socket_app(host, port)

    def _reenters(self, destination: str, context: str) -> bool:
        """Whether a transfer to ``destination`` in ``context`` runs the Callyard extension
        again (one of its numbers, in the call's own context), as the dialplan would; then
        the call's profile has the new number."""
        if not self.channel.alive or context not in ("", self.channel.context) \
                or not self.sim.ivr_route.match(destination):
            return False
        self.channel.called = destination
        return True

    async def _park_extension(self) -> None:
        """The shipped park extension (dialplans/freeswitch/callyard.xml.j2, ingress park):
        ``multiset`` (``callyard_ingress=park`` among them), then ``park``, unanswered: the
        workers' inbound connections hear its CHANNEL_PARK and drive it with ``sendmsg``.
        A transfer (the ``transfer`` application, ``uuid_transfer``) to a number of the
        extension in this context parks it again, as the dialplan would; to any other, the
        call leaves Callyard (it ends ``transfer_seconds`` later, as a socket call's)."""
        while self.channel.alive:
            self._transferred = self._transfer_context = ""
            self._stopped.clear()
            await self._execute("multiset", PARK_MULTISET, "")
            self._parking = True
            try:
                await self._execute("park", "", "")
            finally:
                self._parking = False
            destination, context = self._transferred, self._transfer_context
            if not self.channel.alive or not destination:
                return
            if self._reenters(destination, context):
                continue
            await asyncio.sleep(self.sim.behaviour.transfer_seconds)
            self.end("NORMAL_CLEARING", "engine")
            return

    async def _park(self) -> str:
        """``park`` (switch_ivr_park): CHANNEL_PARK, then the applications ``sendmsg``
        queues (from any inbound connection), one after the other, until the hangup or a
        transfer; CHANNEL_UNPARK as it ends."""
        self.emit("CHANNEL_PARK")
        try:
            while not self._stopped.is_set():
                if not self._apps:
                    self._app_ready.clear()
                    await first_of([self._app_ready, self._stopped], None)
                    continue
                queued = self._apps.popleft()
                self._break.clear()
                self._break_all = False
                await self._execute(queued.app, queued.arg, queued.app_uuid, queued.lock)
        finally:
            self.emit("CHANNEL_UNPARK")
        return "_none_"

    async def _socket_app(self, host: str, port: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.sim.behaviour.connect_timeout
            )
        except (OSError, TimeoutError):
            log.info("socket %s:%s refused", host, port, extra={"call_id": self.call_id})
            return
        self._writer = writer
        self._subs, self._filters, self._myevents = Subscription(), Filters(), False
        self._lingering = False
        self._exit.clear()
        executor = asyncio.create_task(self._executor())
        parser = codec.RequestParser()
        try:
            while True:
                data = await reader.read(65536)  # b"" at the worker's close or our _leave()
                if not data:
                    break
                for request in parser.feed(data):
                    await self._command(request)
                parser.check()
                if self._exit.is_set():
                    break
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
        except ESLProtocolError as exc:
            log.warning("bad frame from worker: %s", exc, extra={"call_id": self.call_id})
        except ConnectionError:
            pass
        except asyncio.CancelledError:  # the simulator stops: nothing runs on
            executor.cancel()
            raise
        finally:
            self._writer = None
            self.sim.unlisten(self)
            self._apps.clear()
            with contextlib.suppress(Exception):
                writer.close()
        try:
            await self._until_running_app_ends()
        finally:
            executor.cancel()

    async def _until_running_app_ends(self) -> None:
        """The running application outlives the worker's socket: FreeSWITCH goes on in the
        dialplan only once it ends (a bridge when a party hangs up, music never unless
        bounded by ``playback_timeout_sec``; measured on 1.10.12,
        tests/real/test_faults_real.py). A transfer ends it."""
        while self._current_app and not self._transferred:
            self._app_ended.clear()
            await self._app_ended.wait()

    # ------------------------------------------------------------ socket commands

    def _leave(self) -> None:
        """Socket control ends (exit, transfer, hangup): the socket closes once the code
        running now has written its last frames; the reader then sees the end."""
        self._exit.set()
        if self._writer is not None:
            asyncio.get_running_loop().call_soon(self._writer.close)

    def _send(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    # as an EventListener: the socket subscribed without myevents hears every channel
    def hears(self, name: str) -> bool:
        return self._subs.hears(name)

    def deliver(self, name: str, pairs: Pairs, body: str = "") -> None:
        own = ("Unique-ID", self.call_id) in pairs  # sent already, by emit()
        if not own and self._writer is not None and self._subs.hears(name) \
                and self._filters.passes(pairs):
            self._send(codec.event_frame(pairs, body, self._fmt))

    def _listen_to_others(self) -> None:
        """Subscribed without ``myevents``, a socket hears every channel's events, unless
        its filters let through only its own channel's (the worker's ``filter Unique-ID``)."""
        if self._myevents or self._filters.only_channel(self.call_id):
            self.sim.unlisten(self)
        else:
            self.sim.listen(self)

    def close(self) -> None:
        self.sim.unlisten(self)

    def emit(
        self,
        name: str,
        extra: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        with_variables: bool = True,
        lead: list[tuple[str, str]] | None = None,
    ) -> None:
        chan, lead = self.channel, lead or []
        if self._writer is not None and self._subs.hears(name) and (
                not self._filters.lines or self._filters.only_channel(self.call_id)
                or self._filters.passes(chan.event_pairs(name, extra, with_variables, lead))):
            self._send(chan.event_frame(name, self._fmt, extra, with_variables, lead))
        if self.sim.wants_event(name):
            self.sim.broadcast(name, chan.event_pairs(name, extra, with_variables, lead))

    async def _command(self, req: codec.Request) -> None:
        if self._dtmf_at:
            self.sim.dtmf_latencies.append(time.perf_counter() - self._dtmf_at)
            self._dtmf_at = 0.0
        cmd, _, arg = req.command.partition(" ")
        reply = codec.command_reply
        if cmd == "connect":
            self._send(encode_connect_reply(self.channel.channel_data()))
        elif cmd == "myevents":
            if self._myevents:
                self._send(reply("-ERR aready enabled."))  # (sic) mod_event_socket's text
                return
            self._myevents = True
            self._subs.add(list(MYEVENTS))
            self._fmt = "json" if arg.split()[-1:] == ["json"] else "plain"
            self.sim.unlisten(self)
            self._send(reply("+OK Events Enabled"))
        elif cmd == "event":
            fmt, _, names = arg.partition(" ")
            self._fmt = fmt if fmt in ("plain", "json") else "plain"
            self._subs.add(names.split())
            self._listen_to_others()
            self._send(reply(f"+OK event listener enabled {self._fmt}"))
        elif cmd == "nixevent":
            self._subs.remove(arg.split())
            self._send(reply("+OK events nixed"))
        elif cmd == "noevents":
            self._subs.clear()
            self.sim.unlisten(self)
            self._send(reply("+OK no longer listening for events"))
        elif cmd == "filter":
            self._send(reply(self._filters.command(arg)))
            if self._subs.names or self._subs.every:
                self._listen_to_others()
        elif cmd == "linger":
            self._lingering = True
            self._send(reply("+OK will linger"))
        elif cmd == "nolinger":
            self._lingering = False
            self._send(reply("+OK will not linger"))
        elif cmd == "resume":
            self._send(reply("+OK"))
        elif cmd == "sendmsg":
            self._send(self._sendmsg(req.headers))
        elif cmd == "api":
            self._send(codec.api_response(self.sim.api(arg)))
        elif cmd == "bgapi":
            job = req.headers.get("Job-UUID") or str(uuidlib.uuid4())
            self._send(reply(f"+OK Job-UUID: {job}", [("Job-UUID", job)]))
            asyncio.get_running_loop().call_soon(self.sim.api, arg)
        elif cmd == "exit":
            self._send(reply("+OK bye"))
            self._send(codec.disconnect_notice(self.call_id, "disconnect"))
            self._leave()
        else:
            self._send(reply("-ERR command not found"))

    def _sendmsg(self, headers: dict[str, str]) -> bytes:
        command = headers.get("call-command", "")
        if command == "execute":
            app = headers.get("execute-app-name", "")
            if not app:
                return codec.command_reply("-ERR no application")
            if not self.channel.alive:
                return codec.command_reply("-ERR call is not active")
            self.queue_app(app, headers.get("execute-app-arg", ""), headers.get("Event-UUID", ""),
                           headers.get("event-lock", "").lower() == "true")
            return codec.command_reply("+OK")
        if command == "hangup":
            self.end(headers.get("hangup-cause", "NORMAL_CLEARING"), "app")
            return codec.command_reply("+OK")
        return codec.command_reply(f"-ERR invalid command {command}")

    # ------------------------------------------------------------ applications

    def queue_app(self, app: str, arg: str, app_uuid: str = "", lock: bool = False) -> None:
        """Queue an application on the channel (``sendmsg execute``, ``uuid_broadcast``)."""
        self._apps.append(_QueuedApp(app, arg, app_uuid, lock))
        self._app_ready.set()

    async def _executor(self) -> None:
        while True:
            while not self._apps:
                self._app_ready.clear()
                await self._app_ready.wait()
            queued = self._apps.popleft()
            if not self.channel.alive:
                continue
            self._break.clear()
            self._break_all = False
            await self._execute(queued.app, queued.arg, queued.app_uuid, queued.lock)

    async def _execute(self, app: str, arg: str, app_uuid: str, lock: bool = False) -> None:
        app_uuid = app_uuid or str(uuidlib.uuid4())
        chan = self.channel
        chan.variables["current_application"] = app
        if arg:
            chan.variables["current_application_data"] = arg
        ident = [("Application", app)] + ([("Application-Data", arg)] if arg else [])
        outer_app, outer_lock = self._current_app, self._locked
        self._current_app = app
        self._locked = lock
        self.emit("CHANNEL_EXECUTE", [*ident, ("Application-UUID", app_uuid)])
        response = "_none_"
        try:
            response = await self._run_app(app, arg)
        except _Ended:
            response = "_none_"
        finally:
            self._current_app, self._locked = outer_app, outer_lock
            self._app_ended.set()
        if response != "_none_":
            chan.variables["current_application_response"] = response
        self.emit(
            "CHANNEL_EXECUTE_COMPLETE",
            [*ident, ("Application-Response", response), ("Application-UUID", app_uuid)],
        )

    async def _wait(self, seconds: float, breakable: bool = True) -> str:
        """Let the running application last ``seconds``; returns "done", "break" or raises
        on hangup. Meanwhile, unless the channel is event-locked, applications that arrive
        run nested (switch_ivr_parse_all_events in the playback loop) and pause this one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if self._stopped.is_set():
                raise _Ended
            if breakable and self._break.is_set():
                if not self._break_all:
                    self._break.clear()  # a plain break stops only the innermost playback
                return "break"
            if self._apps and not self._locked:
                paused = loop.time()
                queued = self._apps.popleft()
                prompt, self._current_prompt = self._current_prompt, ""
                await self._execute(queued.app, queued.arg, queued.app_uuid, queued.lock)
                self._current_prompt = prompt
                deadline += loop.time() - paused
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "done"
            self._app_ready.clear()
            waits = [self._stopped, self._app_ready] + ([self._break] if breakable else [])
            await first_of(waits, remaining)

    async def _run_app(self, app: str, arg: str) -> str:
        chan = self.channel
        if app == "answer" or app == "pre_answer":
            if chan.answer_state != "answered":
                chan.answer_state = "answered"
                chan.call_state = "ACTIVE"
                chan.answered_us = int(time.time() * 1_000_000)
                chan.variables["endpoint_disposition"] = "ANSWER"
                self.transcript.add("answered")
                self.emit("CHANNEL_ANSWER")
            return "_none_"
        if app in ("playback", "speak", "say"):
            if app == "playback" and arg.startswith("local_stream://"):
                return await self._moh(arg.removeprefix("local_stream://"))
            if app == "playback" and arg.startswith("tone_stream://"):
                self.transcript.add("beep")
                await self._wait(0.25)
                return "FILE PLAYED"
            return await self._play(app, arg)
        if app == "play_and_get_digits":
            return await self._play_and_get_digits(arg)
        if app == "read":
            return await self._read(arg)
        if app == "multiset":  # "a=1 b=2", or "^^<delimiter>a=1<delimiter>b=2"
            delimiter = " "
            if arg.startswith("^^") and len(arg) > 2:
                delimiter, arg = arg[2], arg[3:]
            for item in arg.split(delimiter):
                name, _, value = item.partition("=")
                if name and value:
                    chan.variables[name] = value
                elif name:
                    chan.variables.pop(name, None)
            return "_none_"
        if app == "set":
            name, _, value = arg.partition("=")
            self.set_variable(name, value)
            return "_none_"
        if app == "unset":
            chan.variables.pop(arg, None)
            return "_none_"
        if app == "hangup":
            self.end(arg or "NORMAL_CLEARING", "app")
            return "_none_"
        if app == "transfer":  # <destination> [<dialplan> [<context>]]
            words = arg.split()
            self.transfer(words[0] if words else "", words[2] if len(words) > 2 else "")
            return "_none_"
        if app == "bridge":
            return await self._bridge(arg)
        if app == "sleep":
            await self._wait(int(arg or "0") / 1000, breakable=False)
            return "_none_"
        if app == "record":
            return await self._record(arg)
        if app == "park":
            return await self._park() if self._parking else "_none_"
        log.warning("unknown application %s", app, extra={"call_id": self.call_id})
        return "_none_"

    async def _play(self, app: str, arg: str) -> str:
        """One prompt, or the files of a ``file_string://`` one after the other: a missing
        one is skipped, ``FILE NOT FOUND`` only when none played (as the real engine); a
        break ends the whole playback."""
        parts = file_string_parts(arg) if app == "playback" else [arg]
        played = 0.0
        found = False
        for part in parts:
            prompt = from_app(app, part) or f"file:{part}"
            self.transcript.add("prompt_started", prompt)
            if prompt in self.sim.behaviour.missing:
                self.transcript.add("prompt_finished", f"{prompt} failed")
                continue
            found = True
            self._current_prompt = prompt
            try:
                result = await self._wait(self.sim.behaviour.duration(prompt))
            except BaseException:
                self._finish_prompt("stopped")
                raise
            self._finish_prompt("stopped" if result == "break" else "done")
            played += self.sim.behaviour.duration(prompt)
            if result == "break":
                break
        if not found:
            return "FILE NOT FOUND"
        ms = int(played * 1000)
        self.channel.variables.update(playback_ms=str(ms), playback_samples=str(ms * 8))
        return "FILE PLAYED"

    async def _record(self, arg: str) -> str:
        """mod_dptools ``record <path> [<limit_secs>]``: until a ``playback_terminators`` key,
        the limit or the hangup; sets ``record_ms`` (and ``playback_terminator_used``) and
        keeps the file in every case. A file it cannot write hangs the call up, as there."""
        path, _, limit = arg.partition(" ")
        name = path.rsplit("/", 1)[-1]
        chan = self.channel
        chan.variables["playback_terminator_used"] = ""
        chan.variables.pop("record_ms", None)
        self.transcript.add("recording", f"{name} started")
        started = time.monotonic()
        how = "hangup"
        try:
            limit_s = int(limit.split()[0]) if limit.strip() else 0
            result = await self._wait(limit_s or 86400)
            how = "dtmf" if result == "break" else "timeout"
        finally:
            seconds = round(time.monotonic() - started, 3)
            self.transcript.add("recording", f"{name} {seconds}s {how}")
            try:
                write_silence(Path(path), seconds)
                chan.variables["record_ms"] = str(int(seconds * 1000))
                chan.variables["record_samples"] = str(int(seconds * 8000))
            except OSError:
                log.warning("cannot write recording %s", path, extra={"call_id": self.call_id})
                if how != "hangup":
                    self.end("NORMAL_CLEARING", "engine")
        return "_none_"

    async def _moh(self, moh_class: str) -> str:
        self.transcript.add("moh", moh_class)
        try:
            await self._wait(float(self.channel.variables.get("playback_timeout_sec") or 86400))
        finally:
            self.transcript.add("moh", "")
        return "FILE PLAYED"

    async def _collect(
        self, max_digits: int, terminators: str, first_timeout: float, digit_timeout: float
    ) -> tuple[str, str]:
        """Digits until max, a terminator or a timeout: ``(digits, terminator_or_reason)``."""
        got = ""
        timeout = first_timeout
        while len(got) < max_digits:
            if not self._digits:
                self._digit_evt.clear()
                await first_of([self._digit_evt, self._stopped], timeout)
                if self._stopped.is_set():
                    raise _Ended
                if not self._digits:
                    return got, "timeout"
            digit = self._digits.popleft()
            if digit in terminators:
                return got, digit
            got += digit
            timeout = digit_timeout
        return got, ""

    async def _prompt_until_digit(self, sound: str) -> None:
        if not sound:
            return
        prompt = from_app("playback", sound) or f"file:{sound}"
        self.transcript.add("prompt_started", prompt)
        self._current_prompt = prompt
        seconds = self.sim.behaviour.duration(prompt)
        deadline = time.monotonic() + seconds
        status = "done"
        while not self._digits:
            self._digit_evt.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await first_of([self._digit_evt, self._stopped], remaining)
            if self._stopped.is_set():
                self._finish_prompt("stopped")
                raise _Ended
        if self._digits:
            status = "stopped"
        self._finish_prompt(status)

    async def _play_and_get_digits(self, arg: str) -> str:
        parts = arg.split(" ")
        if len(parts) < 8:
            log.warning("play_and_get_digits: bad arguments %r", arg)
            return "_none_"
        mn, mx, tries, timeout_ms, terms, sound, invalid, var = parts[:8]
        regex = parts[8] if len(parts) > 8 else ""
        digit_timeout = int(parts[9]) / 1000 if len(parts) > 9 else int(timeout_ms) / 1000
        for attempt in range(max(int(tries), 1)):
            await self._prompt_until_digit(sound)
            digits, _ = await self._collect(int(mx), terms, int(timeout_ms) / 1000, digit_timeout)
            if len(digits) >= int(mn) and (not regex or re.fullmatch(regex, digits)):
                self.channel.variables[var] = digits
                return "_none_"
            if attempt + 1 < int(tries) and invalid and invalid != "silence_stream://250":
                await self._prompt_until_digit(invalid)
        self.channel.variables[var] = ""
        return "_none_"

    async def _read(self, arg: str) -> str:
        parts = arg.split(" ")
        if len(parts) < 5:
            return "_none_"
        mn, mx, sound, var, timeout_ms = parts[:5]
        terms = parts[5] if len(parts) > 5 else "#"
        await self._prompt_until_digit(sound)
        digits, why = await self._collect(
            int(mx), terms, int(timeout_ms) / 1000, int(timeout_ms) / 1000
        )
        self.channel.variables[var] = digits
        ok = len(digits) >= int(mn)
        self.channel.variables["read_result"] = (
            "success" if ok else ("timeout" if why == "timeout" else "failure")
        )
        return "_none_"

    async def _bridge(self, arg: str) -> str:
        leg_vars, target = dial_string(arg)
        self.transcript.add("dialed", target)
        leg = DialledLeg(self, leg_vars.get("origination_uuid") or str(uuidlib.uuid4()), target)
        self.sim.legs[leg.uuid] = leg
        try:
            return await self._run_leg(leg, leg_vars)
        finally:
            # the caller hung up (or the dial failed): the B-leg goes too
            leg.hangup("NORMAL_CLEARING" if leg.bridged else "ORIGINATOR_CANCEL")

    async def _run_leg(self, leg: DialledLeg, leg_vars: dict[str, str]) -> str:
        b = self.sim.behaviour
        mode = b.endpoints.get(leg.target, b.default_endpoint)
        chan = self.channel
        if mode == "answer":
            if await self._leg_wait(leg, b.ring_seconds):
                return self._dial_failed(leg, leg.channel.hangup_cause)  # killed while ringing
            leg.answer()
            chan.other = leg.channel
            self.transcript.add("bridged", leg.target)
            chan.variables.update(
                originate_disposition="SUCCESS",
                bridge_to=leg.uuid,
                last_bridge_to=leg.uuid,
                bridge_uuid=leg.uuid,
                signal_bond=leg.uuid,
                bridge_channel=leg.channel.name,
            )
            ids = [("Bridge-A-Unique-ID", chan.uuid), ("Bridge-B-Unique-ID", leg.uuid)]
            self.emit("CHANNEL_BRIDGE", lead=ids)
            for rec in list(self._recordings.values()):
                if rec.started is None:
                    self._begin_recording(rec)
            if not await self._leg_wait(leg, b.talk.get(leg.target, b.talk_seconds)):
                leg.hangup("NORMAL_CLEARING")  # the party hangs up after talk_seconds
            leg.bridged = False
            self.transcript.add("unbridged", leg.target)
            for name in ("bridge_to", "bridge_uuid", "signal_bond", "bridge_channel"):
                chan.variables.pop(name, None)
            cause = leg.channel.hangup_cause or "NORMAL_CLEARING"
            chan.variables.update(bridge_hangup_cause=cause, last_bridge_hangup_cause=cause)
            self.emit("CHANNEL_UNBRIDGE", lead=ids)
            return "_none_"
        if mode == "busy":
            if await self._leg_wait(leg, b.ring_seconds):
                return self._dial_failed(leg, leg.channel.hangup_cause)
            return self._dial_failed(leg, "USER_BUSY")
        if mode == "no_answer":
            limit = float(leg_vars.get("leg_timeout", "60"))
            if await self._leg_wait(leg, min(limit, b.no_answer_seconds)):
                return self._dial_failed(leg, leg.channel.hangup_cause)
            return self._dial_failed(leg, "NO_ANSWER")
        return self._dial_failed(leg, "UNALLOCATED_NUMBER")

    def _dial_failed(self, leg: DialledLeg, cause: str) -> str:
        leg.hangup(cause)
        self.channel.variables.update(
            originate_disposition=cause,
            originate_failed_cause=cause,
            DIALSTATUS=cause,
            last_bridge_hangup_cause=cause,
        )
        return "_none_"

    async def _leg_wait(self, leg: DialledLeg, seconds: float) -> bool:
        """Wait up to ``seconds``; True if the B-leg hung up first; raises on caller hangup."""
        await first_of([leg.ended, self._stopped], seconds)
        if self._stopped.is_set():
            raise _Ended
        return leg.ended.is_set()

    # ------------------------------------------------------------ displace (a media bug)

    def displace(self, start: bool, stream: str, flags: str = "") -> bool:
        """``uuid_displace``; False when refused (already displacing / not displacing it).

        Without ``m`` (mux) or ``r`` the stream replaces what the caller hears and what they
        say is blanked (switch_ivr_async.c, write_displace_callback): that is how a worker
        holds a bridged caller, so it is transcribed as ``held`` with the music."""
        if start:
            if stream in self._displaced or not self.channel.alive:
                return False
            self._displaced[stream] = flags
            if not set(flags) & {"m", "r"}:
                self.transcript.add("held", "on")
                self.transcript.add("moh", stream.removeprefix("local_stream://"))
            return True
        if stream not in self._displaced:
            return False
        if not set(self._displaced.pop(stream)) & {"m", "r"}:
            self.transcript.add("moh", "")
            self.transcript.add("held", "off")
        return True

    def uuid_record(self, verb: str, path: str) -> str:
        rec = self._recordings.get(path)
        name = path.rsplit("/", 1)[-1]
        if verb == "start":
            if rec is None:
                rec = self._recordings[path] = _SessionRecording(path)
                bridge_req = self.channel.variables.get("RECORD_BRIDGE_REQ") == "true"
                if not bridge_req or self.channel.other is not None:
                    self._begin_recording(rec)
            return "+OK Success\n"
        if rec is None:
            return f"-ERR Cannot find media bug for {path}\n"
        if verb == "stop":
            self._end_recording(rec)
        else:
            self.transcript.add("recording", f"{name} {'paused' if verb == 'mask' else 'resumed'}")
        return "+OK Success\n"

    def _begin_recording(self, rec: _SessionRecording) -> None:
        rec.started = time.monotonic()
        self.transcript.add("recording", f"{rec.path.rsplit('/', 1)[-1]} started")
        self.emit("RECORD_START", [("Record-File-Path", rec.path)])

    def _end_recording(self, rec: _SessionRecording) -> None:
        """The media bug closes (stop or hangup): the file is written, RECORD_STOP sent."""
        self._recordings.pop(rec.path, None)
        if rec.started is None:
            return  # never bridged: no file
        seconds = round(time.monotonic() - rec.started, 3)
        self.transcript.add("recording", f"{rec.path.rsplit('/', 1)[-1]} {seconds}s stop")
        try:
            write_silence(Path(rec.path), seconds)
        except OSError:
            log.warning("cannot write recording %s", rec.path, extra={"call_id": self.call_id})
            return
        self.channel.variables["record_ms"] = str(int(seconds * 1000))
        self.emit("RECORD_STOP", [("Record-File-Path", rec.path)])

    def _finish_prompt(self, status: str) -> None:
        if self._current_prompt:
            self.transcript.add("prompt_finished", f"{self._current_prompt} {status}")
            self._current_prompt = ""

    # ------------------------------------------------------------ engine side

    def set_variable(self, name: str, value: str) -> None:
        """``set`` or ``uuid_setvar_multi``: an empty value unsets, as in FreeSWITCH."""
        if value:
            self.channel.variables[name] = value
        else:
            self.channel.variables.pop(name, None)
        self.transcript.add("variable", f"{name}={value}")

    def uuid_break(self, all_apps: bool) -> None:
        if all_apps:
            self._apps.clear()
        if self._current_app in INTERRUPTIBLE:
            self._break_all = all_apps
            self._break.set()

    def transfer(self, destination: str, context: str = "") -> None:
        """To ``destination`` in the dialplan (``context``: "" is the call's own). A parked
        call leaves the park: what runs on it stops (it completes), and ``run`` routes it."""
        if not self.channel.alive or self._transferred or not destination:
            return
        self._transferred, self._transfer_context = destination, context
        self.transcript.add("transferred", destination)
        self._apps.clear()
        self._break.set()
        if self._parking:
            self._stopped.set()
        self._send(codec.disconnect_notice(self.call_id, "disconnect"))
        self._leave()

    def end(self, cause: str, by: str) -> None:
        """Hang the channel up (caller, application or engine) and run the hangup events."""
        chan = self.channel
        if not chan.alive:
            return
        chan.hangup_cause = cause
        chan.hangup_us = int(time.time() * 1_000_000)
        chan.answer_state = "hangup"
        chan.variables["hangup_cause"] = cause
        self._displaced.clear()
        self._finish_prompt("stopped")
        self.transcript.add("hangup", f"{cause} {by}")
        self.emit("CHANNEL_HANGUP")
        for rec in list(self._recordings.values()):
            self._end_recording(rec)
        self._hungup.set()
        self._stopped.set()
        self._apps.clear()
        asyncio.get_running_loop().create_task(self._after_hangup())

    async def _after_hangup(self) -> None:
        # let a running application finish (it emits its EXECUTE_COMPLETE first)
        for _ in range(20):
            if not self._current_app:
                break
            await asyncio.sleep(0.001)
        chan = self.channel
        chan.call_state = "HANGUP"
        if self.sim.ingress != "park":  # (the park's own end says it, before its COMPLETE)
            self.emit("CHANNEL_UNPARK")
        chan.state = "CS_HANGUP"
        self.emit("CHANNEL_STATE", with_variables=False)
        chan.state = "CS_REPORTING"
        self.emit("CHANNEL_STATE", with_variables=False)
        self.emit("CHANNEL_HANGUP_COMPLETE", [("Hangup-Cause", chan.hangup_cause)])
        if self._writer is None:
            return
        if self._lingering:
            self._send(codec.disconnect_notice(self.call_id, "linger", chan.name, linger=True))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), self.sim.behaviour.linger_seconds)
        else:
            self._send(codec.disconnect_notice(self.call_id, "disconnect"))
        self._leave()
