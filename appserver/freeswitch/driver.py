"""One call: a CallFlow's commands -> ESL, ESL events -> the flow's events.

Implements the driver contract of :mod:`ivr.calls` on an outbound ESL socket, or, for a
parked call (:mod:`appserver.freeswitch.parked`), on a node connection shared by many calls:
then every ``sendmsg`` names the call (``address``) and the connection is subscribed already. Every
``sendmsg execute`` carries ``event-lock: true``: FreeSWITCH then runs the applications one
after the other, in the order sent (without it, one that arrives while a playback runs is
executed nested inside it and plays first: a greeting would be heard last prompt first).

* ``Play``: one ``sendmsg execute`` per prompt, consecutive files and silences joined in one
  ``playback file_string://...`` (see :mod:`appserver.freeswitch.prompts`), each tagged with
  ``Event-UUID`` so its ``CHANNEL_EXECUTE_COMPLETE`` (same ``Application-UUID``) is matched
  back; the last one completes the play.
* ``StopPlay``: ``api uuid_break <uuid> all`` (stops the prompt and flushes queued ones);
  every outstanding play gets ``PlayFinished(stopped)`` at once.
* ``StartMoh`` / ``StopMoh``: ``playback local_stream://<class>`` / ``uuid_break``.
* ``Dial``: ``bridge {leg_timeout=N,origination_uuid=<B>,media_mix_inbound_outbound_codecs=
  true}<dial template>``: the B-leg's uuid is chosen up front so the driver can end it while
  the dial runs; the leg offers the caller's codec and the profile's (not the caller's
  alone). The outcome comes from ``variable_originate_disposition`` when the bridge
  application completes.
* ``Hold`` / ``Unhold``: ``uuid_displace <caller> start|stop local_stream://<class>`` (see
  :meth:`CallDriver._hold`); ``EndDial``: ``uuid_kill`` on the B-leg.
* ``Supervise``: ``bgapi originate {origination_uuid=<S>,eavesdrop_whisper_aleg=..,
  eavesdrop_whisper_bleg=..}<SIP template> &eavesdrop(<caller>)``: the supervisor's leg hears
  the caller and the party; mod_eavesdrop mixes the supervisor into the caller's read stream
  (``whisper_aleg``: the bridged party hears them) and/or write stream (``whisper_bleg``: the
  caller hears them). A mode change is a digit on that leg (``uuid_recv_dtmf <S> 0|1|3``,
  eavesdrop's DTMF control: see :data:`EAVESDROP_DIGITS`); ``EndSupervise`` and the end of
  the dial ``uuid_kill`` it (eavesdrop ends by itself when the caller hangs up).
* ``Transfer``: ``transfer <dest> XML <context>``; ``TransferResult(ok=True)`` when the
  socket closes (FreeSWITCH took the call into its dialplan). ``Hangup``:
  ``call-command: hangup``. Both act at once: a prompt or music still running (which would
  hold the event-locked queue) is broken off first with ``uuid_break <uuid> all``.
  ``Hangup(after_play=id)`` while that play runs: ``execute hangup``, queued behind it.
* ``Record``: ``set playback_terminators=<keys>``, a beep (``playback tone_stream://...``),
  ``record <recordings_dir>/<name>.wav <max_seconds>``, ``set playback_terminators=none``; its
  ``CHANNEL_EXECUTE_COMPLETE`` gives ``RecordFinished`` with ``variable_record_ms`` (absent:
  the file could not be written, ``failed``). The record application ends on a terminator key,
  the time limit or the hangup (the file is kept).
* ``StartRecording``: ``uuid_setvar <uuid> RECORD_BRIDGE_REQ true`` (the file starts when the
  caller is bridged) and ``uuid_record <uuid> start <path>``; ``PauseRecording`` /
  ``ResumeRecording``: ``uuid_record ... mask|unmask`` (silence while masked);
  ``StopRecording``: ``uuid_record ... stop``. ``RECORD_START`` / ``RECORD_STOP`` (subscribed
  with the first recording) give ``RecordingStarted`` /
  ``RecordingStopped`` (``variable_record_ms``).
* Barge-in in the engine: a prompt plays with ``playback_terminators`` set to its Play's
  ``stop_keys`` (``none`` without), so FreeSWITCH stops it in the very frame it reads such
  a key. Stopped by the worker's ``uuid_break`` instead, it ran a frame longer and the
  next application started a frame later again: 40 ms more per barge-in, measured on
  1.10.12. The variable is changed only when a play needs another value: ``uuid_setvar``
  (no application) when nothing that reads it runs or waits, else an in-order ``set``.
  The DTMF event still comes (FreeSWITCH fires it as it reads the key), and the flow's
  StopPlay still sends ``uuid_break <uuid> all`` (the rest of that play is queued).
* Timers run as gevent greenlets; the engine consumes no digit outside a play's
  ``stop_keys``.
* The last line of defence: no value is written that holds a control character (it would
  end its header line, and "\n\n" the command, so the rest would run as a command of its
  own) or ``${`` (FreeSWITCH expands it in application arguments, ``${system(...)}``
  included); dial targets and transfer destinations are single tokens, variable names plain
  names, file prompts relative sound names. Such a command is refused alone and logged with
  the call id: an unsafe prompt is skipped (the rest of the Play goes on), a Dial answers
  ``DialResult(failed)``, a Transfer ``TransferResult(ok=False)``, a Hangup still hangs up
  with ``NORMAL_CLEARING``, anything else is dropped.

The driver never blocks on FreeSWITCH: commands are written without waiting for replies,
events are handled on the connection's reader greenlet, and a per-call lock keeps timers,
external deliveries and events from interleaving.
"""

from __future__ import annotations

import logging
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
import gevent.lock

from appserver.freeswitch import esl_codec as codec
from appserver.freeswitch.prompts import to_apps
from ivr import calls as c
from ivr.model import VARIABLE_RE, is_safe_text

log = logging.getLogger("callyard.freeswitch")

# mod_event_socket reads a command one byte per recv(), each followed by a sched_yield(), so
# commands are kept short. The socket hears the four event types the driver reads, of its own
# channel alone: ``filter Unique-ID <uuid>`` rather than ``myevents``. For every event of a
# subscribed type FreeSWITCH asks each socket, under one lock, whether it wants it; a
# ``myevents`` socket looks up the event's Unique-ID and then its Job-Owner-UUID, which
# channel events lack: a search through all of the event's headers (every channel variable),
# for every socket, so the cost of a call grows with the calls in progress. A filter looks up
# the Unique-ID alone (mod_event_socket.c, event_handler).
NEEDED_EVENTS = ("CHANNEL_ANSWER", "CHANNEL_EXECUTE_COMPLETE", "DTMF", "CHANNEL_HANGUP")
_SUBSCRIBE = [
    codec.encode_command(f"event plain {' '.join(NEEDED_EVENTS)}"),
    codec.encode_command("linger"),
]


def setup_commands(call_id: str) -> list[bytes]:
    """A call's socket setup: its own channel's events (the filter first: no other
    channel's event gets through in between), then ``linger``."""
    return [codec.encode_command(f"filter Unique-ID {call_id}"), *_SUBSCRIBE]


FAILED_PLAYBACK = ("FILE NOT FOUND", "PLAYBACK ERROR")
_DIAL_OUTCOMES: dict[str, str] = {
    "SUCCESS": "answered",
    "USER_BUSY": "busy",
    "NO_ANSWER": "no_answer",
    "NO_USER_RESPONSE": "no_answer",
    "ALLOTTED_TIMEOUT": "no_answer",
    "ORIGINATOR_CANCEL": "no_answer",
}
BEEP = "tone_stream://%(250,0,1000)"  # before a Record: a quarter second at 1 kHz
MOH_STRETCH_SECONDS = 10  # see FreeswitchCall._moh_stretch
_MOH_CLASS = re.compile(r"^[\w./-]+$")  # a local_stream name: one token in an api line
# A dialled leg would otherwise offer only the caller's codec (switch_core_media.c,
# prepare_codecs: "originator codec"): L16 for a loopback caller, G.729 for some phones, which
# LiveKit SIP refuses. Offer the caller's codec first, then the profile's list.
OFFER_ALL_CODECS = "media_mix_inbound_outbound_codecs=true"
# mod_eavesdrop on the caller's channel (switch_ivr_async.c, switch_ivr_eavesdrop_session):
# ED_MUX_READ mixes the supervisor into what the caller says (the bridged party hears them),
# ED_MUX_WRITE into what the caller hears. Set at the start by the eavesdrop_whisper_aleg /
# _bleg variables, changed by a digit on the eavesdropper's leg: 0 none, 1 read, 2 write, 3 both.
EAVESDROP_DIGITS: dict[str, str] = {"listen": "0", "whisper": "1", "barge": "3"}
EAVESDROP_VARS: dict[str, str] = {
    "listen": "eavesdrop_whisper_aleg=false,eavesdrop_whisper_bleg=false",
    "whisper": "eavesdrop_whisper_aleg=true,eavesdrop_whisper_bleg=false",
    "barge": "eavesdrop_whisper_aleg=true,eavesdrop_whisper_bleg=true",
}
# Dial targets and transfer destinations are one token of a dial string / dialplan command:
# no blank (transfer's context), no , | (more legs), no {} [] <> ^ ' " (variables, quoting).
_MULTI_UNSAFE = re.compile(r"[;'\"\\]")
_NOT_ONE_TOKEN = re.compile(r"[\s,|{}\[\]<>^'\"]")


def refuse_unsafe(value: str) -> str:
    """``value`` if FreeSWITCH may receive it in a command, else :class:`codec.UnsafeValue`."""
    if not is_safe_text(value):
        raise codec.UnsafeValue(f"control character or '${{' in {value[:80]!r}")
    return value


def refuse_unsafe_token(value: str) -> str:
    if _NOT_ONE_TOKEN.search(value) or not value:
        raise codec.UnsafeValue(f"not a single dial-string token: {value[:80]!r}")
    return refuse_unsafe(value)


def _multi_settable(cmd: c.SetVariable) -> bool:
    """Whether ``uuid_setvar_multi`` sets this variable exactly: a plain name, and a safe
    value it will not split (``;``), unquote, unescape or trim (switch_separate_string)."""
    value = cmd.value
    return (VARIABLE_RE.fullmatch(cmd.name) is not None and is_safe_text(value)
            and not _MULTI_UNSAFE.search(value) and value == value.strip())


def call_info_from(data: dict[str, str], node: str) -> c.CallInfo:
    """CallInfo from the ``connect`` reply (channel data, already URL-decoded)."""
    variables = {k[9:]: v for k, v in data.items() if k.startswith("variable_")}
    return c.CallInfo(
        call_id=data.get("Unique-ID", ""),
        engine="freeswitch",
        caller=data.get("Caller-Caller-ID-Number", ""),
        called=data.get("Caller-Destination-Number", ""),
        node=node,
        caller_name=data.get("Caller-Caller-ID-Name", ""),
        variables=variables,
    )


@dataclass(slots=True)
class _Play:
    play_id: str
    tags: list[str]
    failed: bool = False


@dataclass
class DriverConfig:
    dial_template: str = "user/{target}"
    sip_template: str = "sofia/callyard/{target}"  # for Dial(kind="sip"), target a SIP URI
    transfer_context: str = ""  # "" = the call's own dialplan context
    fallback_prompt: str = "ivr/ivr-call_cannot_be_completed_as_dialed.wav"
    recordings_dir: str = "/var/lib/freeswitch/recordings"  # where the engine writes recordings


QueueRuntime = Callable[[c.CallInfo, c.Enqueue], None]
_AFTER_HANDOVER = (c.HungUp, c.TransferResult)  # what a flow still hears after Hangup/Transfer


@dataclass
class CallDriver:
    """Runs one CallFlow on one call. ``write`` sends a batch of encoded ESL commands."""

    info: c.CallInfo
    write: Callable[[list[bytes]], object]
    config: DriverConfig
    queue_runtime: QueueRuntime | None = None
    context: str = "default"
    # the call's uuid when it is driven over a connection shared by many calls (a parked
    # call over inbound ESL: its sendmsg commands name it); "" on its own outbound socket
    address: str = ""
    # called with seconds from reading a DTMF event to writing the next command
    latency_sink: Callable[[float], object] | None = None
    flow: c.CallFlow | None = None
    hung_up: bool = False
    handed_away: bool = False
    commands_sent: int = 0
    _plays: dict[str, _Play] = field(default_factory=dict)  # play_id -> play
    _tags: dict[str, str] = field(default_factory=dict)  # Event-UUID -> play_id | dial target
    _dial_tag: str = ""
    _bleg: str = ""  # the running Dial's B-leg (its origination_uuid), "" when no dial runs
    _transfer_to: str = ""  # a Transfer sent, until FreeSWITCH takes the call
    _hangup_queued: bool = False  # Hangup(after_play): the flow still hears HungUp
    _held: str = ""  # the hold music displacing the caller's audio, "" when not on hold
    _moh: str = ""  # the music class StartMoh plays (until StopMoh), "" when none
    _moh_tag: str = ""  # the Event-UUID of the running stretch of it
    _ending_dial: bool = False  # EndDial sent uuid_kill for the running dial
    _spy: str = ""  # the supervisor's eavesdropping leg, "" when none
    _spy_mode: str = ""
    _record_tag: str = ""  # the Event-UUID of the running Record's record application
    _record_id: str = ""
    _terminators: str = ""  # playback_terminators on the channel ("": not known)
    # the Event-UUID of the set of them queued behind a playback, music or recording, until
    # it ran: a uuid_break all may drop it
    _terminators_tag: str = ""
    _session_recording: tuple[str, str] | None = None  # (name, path) of StartRecording's file
    _recordings_seen: dict[str, str] = field(default_factory=dict)  # path -> name, ever
    _timers: dict[str, gevent.Greenlet] = field(default_factory=dict)
    _seq: int = 0
    _unsent: list[bytes] = field(default_factory=list)  # the setup, until the first write
    _salt: str = field(default_factory=lambda: f"{random.getrandbits(24):06x}-")
    _answered: bool = False
    _inbox: deque[c.Event] = field(default_factory=deque)
    _draining: bool = False
    _lock: gevent.lock.RLock = field(default_factory=gevent.lock.RLock)

    @property
    def log_extra(self) -> dict[str, str]:
        return {"call_id": self.info.call_id}

    # ------------------------------------------------------------ entry points

    def start(self, flow: c.CallFlow | None) -> None:
        """Set the session up and start ``flow`` (None: polite message and hangup)."""
        self.flow = flow
        # the session's setup goes out with the flow's first commands, in one write (a
        # parked call's connection is subscribed already)
        self._unsent = [] if self.address else setup_commands(self.info.call_id)
        # the dialplan's value ("none" in the shipped one); a play sets what it needs
        self._terminators = self.info.variables.get("playback_terminators", "")
        try:
            if flow is None:
                self._polite_end()
                return
            with self._lock:
                try:
                    commands = flow.start(self.info)
                except Exception:
                    log.exception("call flow failed to start", extra=self.log_extra)
                    self._polite_end()
                    return
                self._run(commands)
                self._drain()
        finally:
            self._send([])  # the setup, if no command went with it

    def on_event(self, event: codec.LazyEvent) -> None:
        """An ESL event for this call (reader greenlet)."""
        name = event.name
        if name == "DTMF":
            before = self.commands_sent
            self.deliver(c.Dtmf(event.get("DTMF-Digit")))
            if self.latency_sink is not None and self.commands_sent != before and event.received:
                self.latency_sink(time.perf_counter() - event.received)
        elif name == "CHANNEL_EXECUTE_COMPLETE":
            self._execute_complete(event)
        elif name == "CHANNEL_ANSWER":
            if not self._answered:
                self._answered = True
                self.deliver(c.Answered())
        elif name == "CHANNEL_HANGUP":
            self._hangup(event.get("Hangup-Cause") or "NORMAL_CLEARING")
        elif name in ("RECORD_START", "RECORD_STOP"):
            self._record_event(name, event)

    def on_socket_closed(self) -> None:
        """The socket ended; if FreeSWITCH never said the caller hung up, say it now. After
        a ``Transfer`` this is FreeSWITCH taking the call into its dialplan."""
        if self._transfer_to and not self.hung_up:
            destination, self._transfer_to = self._transfer_to, ""
            self.deliver(c.TransferResult(destination, ok=True))
        elif not self.hung_up and (not self.handed_away or self._hangup_queued):
            self._hangup("SOCKET_CLOSED")
        self._cancel_timers()

    def deliver(self, event: c.Event) -> None:
        """Deliver an event to the flow (engine events, timers, the queue runtime).

        After ``Hangup``/``Transfer`` or the caller's hangup only ``HungUp`` gets through.
        """
        if self.flow is None:
            return
        if (self.hung_up or self.handed_away) and not isinstance(event, _AFTER_HANDOVER):
            return
        with self._lock:
            self._inbox.append(event)
            self._drain()

    def _drain(self) -> None:
        if self._draining or self.flow is None:
            return  # an outer call on this greenlet is already draining the inbox
        self._draining = True
        try:
            while self._inbox:
                current = self._inbox.popleft()
                if self.handed_away and not isinstance(current, _AFTER_HANDOVER):
                    continue
                try:
                    commands = self.flow.handle(current)
                except Exception:
                    log.exception("call flow failed on %r", current, extra=self.log_extra)
                    self._inbox.clear()
                    if not self.hung_up and not self.handed_away:
                        self._polite_end()
                    return
                if not self.hung_up:
                    self._run(commands)
        finally:
            self._draining = False

    # ------------------------------------------------------------ commands -> ESL

    def _tag(self) -> str:
        """A short Event-UUID (see setup_commands): unique on this socket, and a random part
        keeps it apart from the tags of an earlier worker's applications on the same call."""
        self._seq += 1
        return f"{self._salt}{self._seq}"

    def _execute(self, app: str, arg: str = "", tag: str = "", checked: bool = False) -> bytes:
        if not checked:  # already checked: the values in it, not the operator's template
            refuse_unsafe(arg)
        self.commands_sent += 1
        return codec.sendmsg(app, arg, event_uuid=tag, uuid=self.address, lock=True)

    def _api(self, line: str) -> bytes:
        self.commands_sent += 1
        return codec.encode_command(f"api {line}")

    def _run(self, commands: list[c.Command]) -> None:
        out: list[bytes] = []
        variables: list[str] = []  # name=value of this batch, set by one api command
        at = 0  # where in ``out`` it goes: at the first of them
        for command in commands:
            if self.hung_up or self.handed_away:
                break
            if isinstance(command, c.SetVariable) and _multi_settable(command):
                if not variables:
                    at = len(out)
                variables.append(f"{command.name}={command.value}")
                continue
            out += self._command(command)
        if variables:
            out.insert(at, self._api(f"uuid_setvar_multi {self.info.call_id} "
                                     + ";".join(variables)))
        if out:
            self._send(out)

    def _send(self, out: list[bytes]) -> None:
        if self._unsent:
            out, self._unsent = [*self._unsent, *out], []
        if out:
            self.write(out)

    def _command(self, cmd: c.Command) -> list[bytes]:
        try:
            sent = self._command_bytes(cmd)
        except codec.UnsafeValue as exc:
            sent = self._refuse(cmd, exc)
        return sent if isinstance(sent, list) else [sent] if sent else []

    def _refuse(self, cmd: c.Command, exc: codec.UnsafeValue) -> bytes | list[bytes]:
        """``cmd`` carried a value FreeSWITCH must not receive: nothing of it was written."""
        log.error("refused %s: %s", type(cmd).__name__, exc, extra=self.log_extra)
        if isinstance(cmd, c.Dial):
            self._inbox.append(c.DialResult(cmd.target, "failed", "refused: unsafe target"))
        elif isinstance(cmd, c.Transfer):
            self._inbox.append(
                c.TransferResult(cmd.destination, ok=False, cause="refused: unsafe destination")
            )
        elif isinstance(cmd, c.Hangup):
            return self._command_bytes(c.Hangup())  # the call still ends
        return b""

    def _command_bytes(self, cmd: c.Command) -> bytes | list[bytes]:
        if isinstance(cmd, c.Play):
            return self._play(cmd)
        if isinstance(cmd, c.StopPlay):
            return self._stop_play()
        if isinstance(cmd, c.Answer):
            return self._execute("answer")
        if isinstance(cmd, c.StartTimer):
            self._start_timer(cmd.name, cmd.seconds)
            return b""
        if isinstance(cmd, c.CancelTimer):
            timer = self._timers.pop(cmd.name, None)
            if timer is not None:
                timer.kill(block=False)
            return b""
        if isinstance(cmd, c.SetVariable):
            if not VARIABLE_RE.fullmatch(cmd.name):
                raise codec.UnsafeValue(f"not a variable name: {cmd.name[:80]!r}")
            return self._execute("set", f"{cmd.name}={cmd.value}")
        if isinstance(cmd, c.StartMoh):
            self._moh = cmd.moh_class
            return self._moh_stretch()
        if isinstance(cmd, c.StopMoh):
            if not self._moh:
                return b""
            self._moh = self._moh_tag = ""
            return self._api(f"uuid_break {self.info.call_id}")
        if isinstance(cmd, c.Dial):
            return self._dial(cmd)
        if isinstance(cmd, c.Record):
            return self._record(cmd)
        if isinstance(cmd, c.StartRecording | c.PauseRecording | c.ResumeRecording
                      | c.StopRecording):
            return self._session_record(cmd)
        if isinstance(cmd, c.Hold):
            return self._hold(cmd)
        if isinstance(cmd, c.Unhold):
            return self._unhold()
        if isinstance(cmd, c.EndDial):
            return self._end_dial()
        if isinstance(cmd, c.Supervise):
            return self._supervise(cmd)
        if isinstance(cmd, c.EndSupervise):
            return self._end_supervise()
        if isinstance(cmd, c.Transfer):
            refuse_unsafe_token(cmd.destination)
            context = self.config.transfer_context or self.context
            transfer = self._execute("transfer", f"{cmd.destination} XML {context}")
            # a media bug stays on the channel: hold music would follow it into the dialplan
            unhold = self._unhold() if self._held else []
            stop = self._stop_all()
            keys = self._terminators_for("")  # the dialplan gets the call as it gave it
            self.handed_away = True
            self._transfer_to = cmd.destination
            return [*unhold, *stop, *keys, transfer]
        if isinstance(cmd, c.Hangup):
            self.handed_away = True
            if cmd.after_play in self._plays:  # queued behind that play's applications
                self._hangup_queued = True
                return self._execute("hangup", cmd.cause)
            hangup = codec.encode_command(
                f"sendmsg {self.address}".rstrip(),
                [("call-command", "hangup"), ("hangup-cause", cmd.cause)])
            self.commands_sent += 1
            return [*self._stop_all(), hangup]
        if isinstance(cmd, c.Enqueue):
            if self.queue_runtime is None:
                self._inbox.append(c.QueueResult(cmd.queue, "failed", "no queue runtime"))
            else:
                self.queue_runtime(self.info, cmd)
            return b""
        log.warning("unsupported command %r", cmd, extra=self.log_extra)
        return b""

    def _play(self, cmd: c.Play) -> list[bytes]:
        tags: list[str] = []
        out: list[bytes] = []
        apps, refused = to_apps(cmd.prompts, cmd.language)
        for reason in refused:  # not a prompt FreeSWITCH can play
            log.error("refused prompt: %s", reason, extra=self.log_extra)
        for app, arg in apps:
            tag = self._tag()
            try:
                command = self._execute(app, arg, tag)
            except ValueError as exc:  # unsafe
                log.error("refused prompt: %s", exc, extra=self.log_extra)
                continue
            tags.append(tag)
            self._tags[tag] = cmd.play_id
            out.append(command)
        if not tags:
            self._inbox.append(c.PlayFinished(cmd.play_id, "failed"))
            return []
        keys = "".join(k for k in cmd.stop_keys if k in c.ALL_KEYS)
        out[:0] = self._terminators_for(keys)  # before this play is one that waits
        self._plays[cmd.play_id] = _Play(cmd.play_id, tags)
        return out

    def _terminators_for(self, keys: str) -> list[bytes]:
        """``playback_terminators`` := ``keys`` (``none`` if empty), if it is not already:
        at once when no playback, music or recording runs or waits ahead of the next
        application (``uuid_setvar``, which runs no application), else in order (``set``)."""
        wanted = keys or "none"
        if wanted == self._terminators:
            return []
        self._terminators = wanted
        if self._plays or self._moh_tag or self._record_tag:
            self._terminators_tag = self._tag()
            return [self._execute("set", f"playback_terminators={wanted}", self._terminators_tag)]
        self._terminators_tag = ""
        return [self._api(f"uuid_setvar {self.info.call_id} playback_terminators {wanted}")]

    def _flush(self) -> bytes:
        """``uuid_break <uuid> all``: stops what runs and drops what is queued."""
        if self._terminators_tag:  # perhaps among what is dropped
            self._terminators = self._terminators_tag = ""
        return self._api(f"uuid_break {self.info.call_id} all")

    def _stop_play(self) -> bytes:
        if not self._plays:
            return b""
        for play in self._plays.values():
            for tag in play.tags:
                self._tags.pop(tag, None)
            self._inbox.append(c.PlayFinished(play.play_id, "stopped"))
        self._plays.clear()
        return self._flush()

    def _stop_all(self) -> list[bytes]:
        """Break off prompts and music so the next command runs at once (its PlayFinished
        follows as ``stopped``)."""
        if not self._plays and not self._moh:
            return []
        self._moh = self._moh_tag = ""
        if self._plays:
            return [self._stop_play()]
        return [self._flush()]

    def _dial(self, cmd: c.Dial) -> bytes:
        refuse_unsafe_token(cmd.target)
        template = self.config.sip_template if cmd.kind == "sip" else self.config.dial_template
        dial = template.format(target=cmd.target)
        tag = self._tag()
        self._dial_tag = tag
        self._tags[tag] = cmd.target
        self._reset_dial(str(uuid.uuid4()))
        leg_vars = (f"{{leg_timeout={int(cmd.timeout)},origination_uuid={self._bleg},"
                    f"{OFFER_ALL_CODECS}}}")
        return self._execute("bridge", f"{leg_vars}{dial}", tag, checked=True)

    def _record(self, cmd: c.Record) -> list[bytes]:
        refuse_unsafe_token(cmd.name)
        if ".." in cmd.name or cmd.name.startswith("/"):
            raise codec.UnsafeValue(f"not a relative recording name: {cmd.name[:80]!r}")
        keys = "".join(k for k in cmd.terminators if k in "0123456789*#") or "none"
        self._record_tag = self._tag()
        self._record_id = cmd.record_id
        path = f"{self.config.recordings_dir.rstrip('/')}/{cmd.name}.wav"
        beep = [self._execute("playback", BEEP, checked=True)] if cmd.beep else []
        self._terminators, self._terminators_tag = "none", self._tag()  # once the record ends
        return [self._execute("set", f"playback_terminators={keys}"), *beep,
                self._execute("record", f"{path} {int(cmd.max_seconds)}", self._record_tag),
                self._execute("set", "playback_terminators=none", self._terminators_tag)]

    def _session_record(self, cmd: c.StartRecording | c.PauseRecording | c.ResumeRecording
                        | c.StopRecording) -> list[bytes]:
        uid = self.info.call_id
        if isinstance(cmd, c.StartRecording):
            if self._session_recording is not None:
                log.info("StartRecording ignored: already recording", extra=self.log_extra)
                return []
            refuse_unsafe_token(cmd.name)
            if ".." in cmd.name or cmd.name.startswith("/"):
                raise codec.UnsafeValue(f"not a relative recording name: {cmd.name[:80]!r}")
            path = f"{self.config.recordings_dir.rstrip('/')}/{cmd.name}.wav"
            first = not self._recordings_seen
            self._session_recording = (cmd.name, path)
            self._recordings_seen[path] = cmd.name
            self.commands_sent += 1
            subscribe = [codec.encode_command("event plain RECORD_START RECORD_STOP")] \
                if first and not self.address else []
            return [*subscribe, self._api(f"uuid_setvar {uid} RECORD_BRIDGE_REQ true"),
                    self._api(f"uuid_record {uid} start {path}")]
        if self._session_recording is None:
            log.info("%s ignored: no recording", type(cmd).__name__, extra=self.log_extra)
            return []
        path = self._session_recording[1]
        if isinstance(cmd, c.StopRecording):
            self._session_recording = None
            return [self._api(f"uuid_record {uid} stop {path}")]
        verb = "mask" if isinstance(cmd, c.PauseRecording) else "unmask"
        return [self._api(f"uuid_record {uid} {verb} {path}")]

    def _record_event(self, name: str, event: codec.LazyEvent) -> None:
        recording = self._recordings_seen.get(event.get("Record-File-Path"))
        if recording is None:
            return  # a voicemail's record application, or not ours
        if name == "RECORD_START":
            self.deliver(c.RecordingStarted(recording))
            return
        ms = event.get("variable_record_ms")
        self.deliver(c.RecordingStopped(recording, int(ms) / 1000 if ms and ms.isdigit() else 0.0))

    def _reset_dial(self, bleg: str = "") -> None:
        self._bleg = bleg
        self._ending_dial = False

    def _hold(self, cmd: c.Hold) -> list[bytes]:
        """``uuid_displace <caller> start local_stream://<class> 0``: a media bug on the
        caller that replaces what they hear with the music and blanks what they say
        (switch_ivr_async.c, write_displace_callback without ``mux``), so neither party hears
        the other while the bridge itself stays up. Nothing is signalled to the dialled
        party: ``uuid_hold`` would re-INVITE it, which LiveKit SIP does not support
        (ENGINE-NOTES; livekit/sip#552). Works while the party still rings, too."""
        if not self._bleg:
            log.warning("Hold ignored: no dial running", extra=self.log_extra)
            return []
        if self._held:
            log.info("Hold ignored: already on hold", extra=self.log_extra)
            return []
        if not _MOH_CLASS.match(cmd.moh_class):
            log.warning("Hold ignored: bad music class %r", cmd.moh_class, extra=self.log_extra)
            return []
        self._held = f"local_stream://{cmd.moh_class}"
        return [self._api(f"uuid_displace {self.info.call_id} start {self._held} 0")]

    def _unhold(self) -> list[bytes]:
        if not self._held:
            log.warning("Unhold ignored: the call is not on hold", extra=self.log_extra)
            return []
        stream, self._held = self._held, ""
        return [self._api(f"uuid_displace {self.info.call_id} stop {stream}")]

    def _end_dial(self) -> list[bytes]:
        if not self._bleg:
            log.warning("EndDial ignored: no dial running", extra=self.log_extra)
            return []
        if self._ending_dial:
            return []
        self._ending_dial = True
        return [self._api(f"uuid_kill {self._bleg}")]

    def _supervise(self, cmd: c.Supervise) -> list[bytes]:
        if not self._bleg:
            log.warning("Supervise ignored: no dial running", extra=self.log_extra)
            return []
        if self._spy and not cmd.join:
            if cmd.mode == self._spy_mode:
                return []
            self._spy_mode = cmd.mode
            return [self._api(f"uuid_recv_dtmf {self._spy} {EAVESDROP_DIGITS[cmd.mode]}")]
        refuse_unsafe_token(cmd.target)
        out = self._end_supervise()
        self._spy, self._spy_mode = str(uuid.uuid4()), cmd.mode
        dial = self.config.sip_template.format(target=cmd.target)
        leg_vars = f"{{origination_uuid={self._spy},{EAVESDROP_VARS[cmd.mode]}}}"
        self.commands_sent += 1
        # bgapi: an api originate would hold this socket until the supervisor answers
        out.append(codec.encode_command(
            f"bgapi originate {leg_vars}{dial} &eavesdrop({self.info.call_id})"))
        log.info("supervisor dialled", extra={**self.log_extra, "leg": self._spy,
                                              "mode": cmd.mode})
        return out

    def _end_supervise(self) -> list[bytes]:
        if not self._spy:
            return []
        spy, self._spy, self._spy_mode = self._spy, "", ""
        return [self._api(f"uuid_kill {spy}")]

    def _polite_end(self) -> None:
        self.handed_away = True
        self._send(
            [
                self._execute("answer"),
                *self._terminators_for(""),
                self._execute("playback", self.config.fallback_prompt),
                self._execute("hangup", "NORMAL_CLEARING"),
            ]
        )

    # ------------------------------------------------------------ ESL -> events

    def _moh_stretch(self) -> list[bytes]:
        """Hold music in stretches of MOH_STRETCH_SECONDS, the next one started when one
        ends: on FreeSWITCH a running application outlives the worker's socket, so music
        without an end would keep a caller whose worker died from ever reaching the next
        worker (the dialplan goes on only once it ends). ``playback_timeout_sec`` bounds
        this playback alone: it is unset right after. No key stops the music."""
        terminators = self._terminators_for("")
        self._moh_tag = self._tag()
        return [*terminators,
                self._execute("set", f"playback_timeout_sec={MOH_STRETCH_SECONDS}"),
                self._execute("playback", f"local_stream://{self._moh}", self._moh_tag),
                self._execute("unset", "playback_timeout_sec")]

    def _execute_complete(self, event: codec.LazyEvent) -> None:
        tag = event.get("Application-UUID")
        if not tag:  # FreeSWITCH names every application it runs: not one of the worker's
            return
        if tag == self._terminators_tag:  # they are on the channel now
            self._terminators_tag = ""
            return
        if tag == self._moh_tag and not self.hung_up:
            self._send(self._moh_stretch())  # the music goes on
            return
        if tag == self._record_tag:
            self._record_tag = ""
            ms = event.get("variable_record_ms")
            if ms and ms.isdigit():
                self.deliver(c.RecordFinished(self._record_id, "done", int(ms) / 1000))
            else:
                self.deliver(c.RecordFinished(self._record_id, "failed"))
            return
        owner = self._tags.pop(tag, None)
        if owner is None:
            return
        if tag == self._dial_tag:
            self._dial_tag = ""
            ended_by_flow = self._ending_dial
            self._reset_dial()
            if self._spy:  # nobody left to supervise
                self._send(self._end_supervise())
            if self._held:  # the party left while the caller was on hold
                self._send(self._unhold())
            disposition = event.get("variable_originate_disposition")
            outcome = _DIAL_OUTCOMES.get(disposition, "failed")
            if ended_by_flow and outcome != "answered":
                outcome = "no_answer"  # EndDial hung up a party that was still ringing
            cause = event.get("variable_last_bridge_hangup_cause") or disposition
            self.deliver(c.DialResult(owner, outcome, cause))  # type: ignore[arg-type]
            return
        play = self._plays.get(owner)
        if play is None:
            return
        if event.get("Application-Response") in FAILED_PLAYBACK:
            play.failed = True
        if tag == play.tags[-1]:
            del self._plays[owner]
            self.deliver(c.PlayFinished(owner, "failed" if play.failed else "done"))

    def _hangup(self, cause: str) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        self._reset_dial()
        self._cancel_timers()
        self._plays.clear()
        self._tags.clear()
        self.deliver(c.HungUp(cause))

    # ------------------------------------------------------------ timers

    def _start_timer(self, name: str, seconds: float) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.kill(block=False)
        self._timers[name] = gevent.spawn_later(max(seconds, 0), self._timer_fired, name)

    def _timer_fired(self, name: str) -> None:
        if self._timers.get(name) is gevent.getcurrent():
            del self._timers[name]
            self.deliver(c.TimerFired(name))

    def _cancel_timers(self) -> None:
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            timer.kill(block=False)
