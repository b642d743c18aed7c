"""The simulated FreeSWITCH node: outbound sockets to Callyard workers per call, and an
inbound Event Socket server (``auth``, ``api``, ``bgapi``, ``event``, ``filter``,
``sendmsg`` ...), over real TCP, on asyncio.

In-process use (tests, ``callyard dev``)::

    sim = FreeswitchSimulator(workers=[("127.0.0.1", 8084)])
    await sim.start(esl_port=8021)          # inbound ESL; port 0 picks a free port
    call = await sim.place_call("9999", caller="+15550100")
    await call.wait_for_prompt("file:ivr/welcome")
    await call.press("1")
    ...
    await sim.stop()

With ``ingress="park"`` calls enter the shipped park extension instead of the socket one
(``CALLYARD_FREESWITCH_INGRESS=park``): each is parked, unanswered, in ``context``; its
CHANNEL_PARK and later events reach the inbound sessions subscribed to them whose filters
let them through (the workers' ``filter Caller-Context <context>``), and any inbound session
drives it with ``sendmsg <uuid>``, through the same applications as a socket's. The workers'
sweep finds them with ``show channels as json``, ``uuid_getvar`` and ``uuid_transfer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid as uuidlib
from collections.abc import Callable

from appserver.devkit.sim.esl import eavesdrop
from appserver.devkit.sim.esl import server_codec as codec
from appserver.devkit.sim.esl.behaviour import Behaviour
from appserver.devkit.sim.esl.call import DialledLeg, EslSimCall, EventListener, dial_string
from appserver.devkit.sim.esl.channel import (
    HOSTNAME,
    Filters,
    Pairs,
    SimChannel,
    Subscription,
    Variables,
    core_headers,
)
from appserver.devkit.sim.esl.eavesdrop import EavesdropLeg
from appserver.freeswitch.esl_codec import ESLProtocolError

log = logging.getLogger("callyard.sim.esl")
_VARS_DIAL = re.compile(r"^(\{[^}]*\})?(\S+)$")  # originate's first argument
INGRESSES = ("socket", "park")
# The shipped dialplan's Callyard extension (render-config's freeswitch_ivr_pattern): a
# transfer to one of these numbers runs it again (socket: to a worker; park: parked again).
IVR_ROUTE = r"^([89][0-9]{3}|\*99[0-9]{8})$"

class FreeswitchSimulator:
    def __init__(
        self,
        workers: list[tuple[str, int]],
        behaviour: Behaviour | None = None,
        password: str = "ClueCon",
        route: str = r"^[0-9*#+]+$",
        hostname: str = HOSTNAME,
        ingress: str = "socket",
        context: str | None = None,
        ivr_route: str = IVR_ROUTE,
    ) -> None:
        """``ingress``: "socket" (each call opens an outbound socket to ``workers`` in turn)
        or "park" (each call is parked for the inbound sessions; ``workers`` unused).
        ``context``: the calls' dialplan context (default "default", or "callyard", the
        workers' CALLYARD_FREESWITCH_PARK_CONTEXT default, in park mode). ``ivr_route``:
        the numbers a transfer sends through the Callyard extension again (socket: to a
        worker; park: parked again); a transfer to any other leaves Callyard."""
        if ingress not in INGRESSES:
            raise ValueError(f"ingress must be one of {INGRESSES}, not {ingress!r}")
        self.ingress = ingress
        self.context = context or ("callyard" if ingress == "park" else "default")
        self.ivr_route = re.compile(ivr_route)
        self.workers = workers
        self.hostname = hostname  # FreeSWITCH-Hostname: a node's name (callback affinity)
        self.behaviour = behaviour or Behaviour()
        self.password = password
        self.route = re.compile(route)
        self.calls: dict[str, EslSimCall] = {}
        self.legs: dict[str, DialledLeg] = {}  # B-legs of running bridges, by uuid
        # Every ``originate`` to an endpoint (not loopback): (dialled number, answered call
        # running the dialplan or None), in order.
        self.originated: list[tuple[str, EslSimCall | None]] = []
        self.placed = 0
        # seconds from a caller's digit to the worker's next command on that call
        self.dtmf_latencies: list[float] = []
        self._listeners: set[EventListener] = set()  # inbound sockets, and outbound ones
        # subscribed without myevents: they hear every channel
        self._server: asyncio.Server | None = None
        self.esl_port = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self, esl_host: str = "127.0.0.1", esl_port: int = 0) -> None:
        """Start the inbound Event Socket server (``esl_port`` 0 picks a free port)."""
        self._server = await asyncio.start_server(self._inbound, esl_host, esl_port)
        self.esl_port = self._server.sockets[0].getsockname()[1]
        log.info("ESL simulator listening on %s:%s", esl_host, self.esl_port)

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            call.end("SYSTEM_SHUTDOWN", "engine")
        for session in list(self._listeners):
            session.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = [c.task for c in list(self.calls.values()) if c.task]
        if tasks:
            await asyncio.wait(tasks, timeout=2)

    async def place_call(
        self, to: str, caller: str = "+15550100", caller_name: str = ""
    ) -> EslSimCall:
        call = EslSimCall(self, to, caller, caller_name)
        self.calls[call.call_id] = call
        self.placed += 1
        if self.route.match(to):
            call.task = asyncio.get_running_loop().create_task(call.run())
        else:
            call.transcript.add("ringing")
            call.end("UNALLOCATED_NUMBER", "engine")
            self.forget(call)
        return call

    def forget(self, call: EslSimCall) -> None:
        self.calls.pop(call.call_id, None)

    # ------------------------------------------------------------ events to inbound listeners

    @property
    def has_listeners(self) -> bool:
        return bool(self._listeners)

    @property
    def worker_connected(self) -> bool:
        """Whether a worker can take calls: any inbound session (socket mode: a worker's
        node link), or (park) one subscribed to the parks (its parked-calls connection)."""
        return self.wants_event("CHANNEL_PARK") if self.ingress == "park" \
            else self.has_listeners

    def wants_event(self, name: str) -> bool:
        """Whether an inbound listener is subscribed to ``name`` (before any filter)."""
        return any(s.hears(name) for s in self._listeners)

    def broadcast(self, name: str, pairs: Pairs, body: str = "") -> None:
        for session in list(self._listeners):
            session.deliver(name, pairs, body)

    def listen(self, session: EventListener) -> None:
        self._listeners.add(session)

    def unlisten(self, session: EventListener) -> None:
        self._listeners.discard(session)

    # ------------------------------------------------------------ api commands

    def api(self, line: str) -> str:
        cmd, _, arg = line.strip().partition(" ")
        args = arg.split(" ", 1) if cmd == "uuid_setvar_multi" else arg.split()
        handler: Callable[[list[str]], str] | None = getattr(self, f"_api_{cmd}", None)
        if handler is None:
            return f"-ERR {cmd} Command not found!\n"
        try:
            return handler(args)
        except (IndexError, ValueError):
            return f"-ERR {cmd}: bad arguments\n"

    def _call(self, uuid: str) -> EslSimCall:
        call = self.calls.get(uuid)
        if call is None or not call.channel.alive:
            raise LookupError(uuid)
        return call

    def _with_call(self, args: list[str], action: Callable[[EslSimCall], str]) -> str:
        try:
            return action(self._call(args[0]))
        except LookupError:
            return "-ERR No such channel!\n"

    def _channel(self, uuid: str) -> SimChannel | None:
        """A live channel by uuid: a caller or a dialled B-leg."""
        call = self.calls.get(uuid)
        if call is not None:
            return call.channel if call.channel.alive else None
        leg = self.legs.get(uuid)
        return leg.channel if leg is not None and leg.alive else None

    def _api_status(self, args: list[str]) -> str:
        return (
            "UP 0 years, 0 days, 0 hours, 0 minutes, 1 seconds, 0 milliseconds, 0 microseconds\n"
            "FreeSWITCH (Version 1.10.12-release callyard-sim 64bit) is ready\n"
            f"{self.placed} session(s) since startup\n"
            f"{len(self.calls)} session(s) - peak {len(self.calls)}, last 5min 0 \n"
            "0 session(s) per Sec out of max 1000, peak 0, last 5min 0 \n"
            "10000 session(s) max\nmin idle cpu 0.00/100.00\n"
        )

    def _api_hostname(self, args: list[str]) -> str:
        return self.hostname  # as FreeSWITCH: gethostname(), what its events say

    def _api_show(self, args: list[str]) -> str:
        if args[:2] == ["channels", "count"]:
            return f"\n{len(self.calls)} total.\n"
        if args == ["channels", "as", "json"]:
            return self._channels_json()
        return "-ERR show: only 'show channels count' and 'show channels as json' are " \
            "simulated\n"

    def _channels_json(self) -> str:
        """``show channels as json``: a row per live channel (callers and B-legs) with the
        core's channels table columns (switch_core_sqldb.c), every value a string;
        ``{"row_count": 0}`` when there are none, as mod_commands prints it."""
        channels = [c.channel for c in self.calls.values() if c.channel.alive]
        channels += [leg.channel for leg in self.legs.values() if leg.alive]
        if not channels:
            return '{"row_count": 0}\n'
        rows = [_channel_row(chan) for chan in sorted(channels, key=lambda c: c.created_us)]
        return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))

    def _api_uuid_exists(self, args: list[str]) -> str:
        return "true" if self._channel(args[0]) is not None else "false"

    def _api_uuid_break(self, args: list[str]) -> str:
        def act(call: EslSimCall) -> str:
            call.uuid_break("all" in args[1:])
            return "+OK\n"

        return self._with_call(args, act)

    def _api_uuid_kill(self, args: list[str]) -> str:
        cause = args[1] if len(args) > 1 else "NORMAL_CLEARING"
        leg = self.legs.get(args[0])
        if leg is not None and leg.alive:
            leg.hangup(cause)
            return "+OK\n"

        def act(call: EslSimCall) -> str:
            call.end(cause, "engine")
            return "+OK\n"

        return self._with_call(args, act)

    def _api_uuid_getvar(self, args: list[str]) -> str:
        channel = self._channel(args[0])
        if channel is None:
            return "-ERR No such channel!\n"
        return channel.variables.get(args[1], "_undef_")

    def _api_uuid_setvar(self, args: list[str]) -> str:
        """``uuid_setvar <uuid> <var> [value]``: the value is the rest of the line; none unsets."""
        channel = self._channel(args[0])
        if channel is None:
            return "-ERR No such channel!\n"
        if len(args) > 2:
            channel.variables[args[1]] = " ".join(args[2:])
        else:
            channel.variables.pop(args[1], None)
        return "+OK\n"

    def _api_uuid_setvar_multi(self, args: list[str]) -> str:
        """``uuid_setvar_multi <uuid> a=1;b=2``: split on ``;``, each item trimmed (no
        quoting or escapes are sent by the worker); an item without a value unsets."""
        try:
            call = self._call(args[0])
        except LookupError:
            return "-ERR No such channel!\n"
        for item in args[1].split(";"):
            name, _, value = item.strip().partition("=")
            if not name:
                return "-ERR No variable specified\n"
            call.set_variable(name, value)
        return "+OK\n"

    def _api_uuid_record(self, args: list[str]) -> str:
        """``uuid_record <uuid> start|stop|mask|unmask <path>`` on a caller."""
        if len(args) < 3 or args[1] not in ("start", "stop", "mask", "unmask"):
            return "-USAGE: <uuid> [start|stop|mask|unmask] <path> [<limit>]\n"
        call = self.calls.get(args[0])
        if call is None or not call.channel.alive:
            return "-ERR Cannot locate session!\n"
        return call.uuid_record(args[1], args[2])

    def _api_uuid_displace(self, args: list[str]) -> str:
        """``uuid_displace <uuid> start|stop <path> [<limit>] [<flags>]`` on a caller."""
        if len(args) < 3 or args[1] not in ("start", "stop"):
            return "-USAGE: <uuid> [start|stop] <path> [<limit>] [mux]\n"
        call = self.calls.get(args[0])
        if call is None or not call.channel.alive:
            return "-ERR Cannot locate session!\n"
        if args[1] == "start":
            flags = args[4] if len(args) > 4 else ""
            return "+OK Success\n" if call.displace(True, args[2], flags) \
                else "-ERR Cannot displace session!\n"
        return "+OK Success\n" if call.displace(False, args[2]) \
            else "-ERR Cannot stop displace session!\n"

    def _api_uuid_send_dtmf(self, args: list[str]) -> str:
        def act(call: EslSimCall) -> str:
            for digit in args[1]:
                call.send_dtmf(digit)
            return f"+OK {call.call_id} sent DTMF {args[1]}.\n"

        return self._with_call(args, act)

    def _api_uuid_transfer(self, args: list[str]) -> str:
        """``uuid_transfer <uuid> [-bleg|-both] <dest> [<dialplan> [<context>]]``."""
        rest = args[2:] if args[1:2] == ["-bleg"] or args[1:2] == ["-both"] else args[1:]
        dest, context = rest[0], (rest[2] if len(rest) > 2 else "")

        def act(call: EslSimCall) -> str:
            call.transfer(dest, context)
            return "+OK\n"

        return self._with_call(args, act)

    def _api_uuid_broadcast(self, args: list[str]) -> str:
        def act(call: EslSimCall) -> str:
            app, _, app_arg = args[1].partition("::")
            if app_arg:
                call.queue_app(app, app_arg.replace("::", " "))
            else:
                call.queue_app("playback", args[1])
            return "+OK Message queued\n"

        return self._with_call(args, act)

    def _api_uuid_bridge(self, args: list[str]) -> str:
        def act(call: EslSimCall) -> str:
            other = self._call(args[1])
            call.transcript.add("bridged", other.channel.caller)
            other.transcript.add("bridged", call.channel.caller)
            return f"+OK {other.call_id}\n"

        return self._with_call(args, act)

    def _api_uuid_recv_dtmf(self, args: list[str]) -> str:
        """Digits as if received on a leg: what a supervisor's eavesdrop leg acts on."""
        leg = self.legs.get(args[0])
        if isinstance(leg, EavesdropLeg) and leg.alive:
            leg.receive_dtmf(args[1])
            return "+OK\n"

        def act(call: EslSimCall) -> str:
            for digit in args[1]:
                call.send_dtmf(digit)
            return "+OK\n"

        return self._with_call(args, act)

    def _api_originate(self, args: list[str]) -> str:
        """``originate [{vars}]loopback/<number>[/<context>] &park()``: a new simulated caller;
        ``originate [{vars}]<dial> &eavesdrop(<uuid>)``: a supervisor on call ``uuid``."""
        dial = args[0]
        app = re.fullmatch(r"&eavesdrop\(([^)]+)\)", args[1] if len(args) > 1 else "")
        if app:
            return self._eavesdrop(dial, app.group(1))
        match = re.match(r"^(\{[^}]*\})?loopback/([^/\s]+)", dial)
        if not match:
            return "-ERR DESTINATION_OUT_OF_ORDER\n"
        number = match.group(2)
        caller = "0000000000"
        if match.group(1):
            for kv in match.group(1)[1:-1].split(","):
                key, _, value = kv.partition("=")
                if key == "origination_caller_id_number":
                    caller = value
        call = EslSimCall(self, number, caller, "")
        self.calls[call.call_id] = call
        self.placed += 1
        call.task = asyncio.get_running_loop().create_task(call.run())
        return f"+OK {call.call_id}\n"

    def _eavesdrop(self, dial: str, uuid: str) -> str:
        leg_vars, target = dial_string(dial)
        call = self.calls.get(uuid)
        if call is None or not call.channel.alive:
            return "-ERR NO_ANSWER\n"  # as the real one: the leg answers, eavesdrop finds none
        leg = eavesdrop.start(call, leg_vars.get("origination_uuid") or str(uuidlib.uuid4()),
                              target, leg_vars)
        return f"+OK {leg.uuid}\n"

    async def originate(self, args: list[str]) -> str:
        """``originate [{vars}]<endpoint> <exten> [XML <context>]`` as a background job, as
        FreeSWITCH's: the endpoint's number (``sofia/gateway/pstn/5551234`` -> 5551234)
        rings per the behaviour's ``endpoints``; answered, the leg runs the dialplan at
        ``exten`` with the variables set and the job says ``+OK <uuid>``; busy / no answer
        (within ``originate_timeout``) / unknown hang it up with USER_BUSY / NO_ANSWER /
        UNALLOCATED_NUMBER and the job says ``-ERR <cause>``. Loopback: a new caller."""
        match = _VARS_DIAL.match(args[0])
        inline_app = len(args) > 1 and args[1].startswith("&")  # e.g. &eavesdrop(<uuid>)
        if not match or match.group(2).startswith("loopback/") or inline_app:
            return self._api_originate(args)
        variables = dict(kv.partition("=")[::2] for kv in (match.group(1) or "{}")[1:-1]
                         .split(",") if kv)
        endpoint = match.group(2)
        number = endpoint.rsplit("/", 1)[-1].split("@")[0]
        channel = SimChannel(
            caller=variables.get("origination_caller_id_number", "0000000000"),
            called=args[1] if len(args) > 1 else "",
            context=args[3] if len(args) > 3 else "default",
            uuid=variables.get("origination_uuid") or str(uuidlib.uuid4()),
            direction="outbound", name=endpoint, variables=Variables(variables),
            hostname=self.hostname)
        self.broadcast("CHANNEL_CREATE", channel.event_pairs("CHANNEL_CREATE"))
        b = self.behaviour
        mode = b.endpoints.get(number, b.default_endpoint)
        if mode == "answer":
            await asyncio.sleep(b.ring_seconds)
            channel.answer_state, channel.call_state = "answered", "ACTIVE"
            channel.answered_us = int(time.time() * 1_000_000)
            self.broadcast("CHANNEL_ANSWER", channel.event_pairs("CHANNEL_ANSWER"))
            call = EslSimCall(self, channel.called, channel.caller, "", channel=channel)
            self.calls[call.call_id] = call
            self.originated.append((number, call))
            call.task = asyncio.get_running_loop().create_task(call.run())
            return f"+OK {call.call_id}\n"
        cause, wait = {"busy": ("USER_BUSY", b.ring_seconds),
                       "no_answer": ("NO_ANSWER", min(b.no_answer_seconds, float(
                           variables.get("originate_timeout", "60"))))
                       }.get(mode, ("UNALLOCATED_NUMBER", 0.0))
        await asyncio.sleep(wait)
        self.originated.append((number, None))
        channel.hangup_cause = channel.variables["hangup_cause"] = cause
        channel.answer_state, channel.call_state = "hangup", "HANGUP"
        channel.hangup_us = int(time.time() * 1_000_000)
        for name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            self.broadcast(name, channel.event_pairs(name))
        return f"-ERR {cause}\n"

    # ------------------------------------------------------------ inbound server

    async def _inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _InboundSession(self, writer)
        await session.serve(reader)


def _channel_row(chan: SimChannel) -> dict[str, str]:
    variables = chan.variables
    created = chan.created_us // 1_000_000
    return {
        "uuid": chan.uuid, "direction": chan.direction,
        "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)),
        "created_epoch": str(created), "name": chan.name, "state": chan.state,
        "cid_name": chan.caller_name or chan.caller, "cid_num": chan.caller,
        "ip_addr": "127.0.0.1", "dest": chan.called,
        "application": variables.get("current_application", ""),
        "application_data": variables.get("current_application_data", ""),
        "dialplan": "XML", "context": chan.context,
        "read_codec": "PCMU", "read_rate": "8000", "read_bit_rate": "64000",
        "write_codec": "PCMU", "write_rate": "8000", "write_bit_rate": "64000",
        "secure": "", "hostname": chan.hostname, "presence_id": "", "presence_data": "",
        "accountcode": "", "callstate": chan.call_state, "callee_name": "", "callee_num": "",
        "callee_direction": "", "call_uuid": chan.uuid, "sent_callee_name": "",
        "sent_callee_num": "", "initial_cid_name": chan.caller_name or chan.caller,
        "initial_cid_num": chan.caller, "initial_ip_addr": "127.0.0.1",
        "initial_dest": chan.called, "initial_dialplan": "XML", "initial_context": chan.context,
    }  # fmt: skip


class _InboundSession:
    """One inbound Event Socket connection."""

    def __init__(self, sim: FreeswitchSimulator, writer: asyncio.StreamWriter) -> None:
        self.sim = sim
        self.writer = writer
        self.authed = False
        self.fmt = "plain"
        self.subs = Subscription()
        self.filters = Filters()

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def close(self) -> None:
        self.sim.unlisten(self)
        with contextlib.suppress(Exception):
            self.writer.close()

    def hears(self, name: str) -> bool:
        return self.subs.hears(name)

    def wants(self, name: str, pairs: Pairs) -> bool:
        if not self.subs.hears(name):
            return False
        return self.filters.passes(pairs)

    def deliver(self, name: str, pairs: Pairs, body: str = "") -> None:
        if self.wants(name, pairs):
            self.send(codec.event_frame(pairs, body, self.fmt))

    async def serve(self, reader: asyncio.StreamReader) -> None:
        self.send(codec.encode_frame([("Content-Type", "auth/request")]))
        parser = codec.RequestParser()
        try:
            while not self.writer.is_closing():
                data = await reader.read(65536)
                if not data:
                    break
                for request in parser.feed(data):
                    if not self.handle(request):
                        return
                await self.writer.drain()
                parser.check()
        except ESLProtocolError as exc:
            log.warning("inbound ESL: bad frame: %s", exc)
        except ConnectionError:
            pass
        finally:
            self.close()

    def _goodbye(self) -> bool:
        self.send(codec.disconnect_notice())
        self.close()
        return False

    def handle(self, req: codec.Request) -> bool:
        reply = codec.command_reply
        cmd, _, arg = req.command.partition(" ")
        if not self.authed:
            if cmd == "auth" and arg == self.sim.password:
                self.authed = True
                self.send(reply("+OK accepted"))
                return True
            if cmd == "auth":
                self.send(reply("-ERR invalid"))
                return self._goodbye()
            self.send(reply("-ERR command not found"))
            return True
        if cmd == "api":
            self.send(codec.api_response(self.sim.api(arg)))
        elif cmd == "bgapi":
            job = req.headers.get("Job-UUID") or str(uuidlib.uuid4())
            self.send(reply(f"+OK Job-UUID: {job}", [("Job-UUID", job)]))
            asyncio.get_running_loop().call_soon(self._background_job, job, arg)
        elif cmd == "event":
            fmt, _, names = arg.partition(" ")
            if fmt not in ("plain", "json"):
                self.send(reply("-ERR invalid event format"))
                return True
            self.fmt = fmt
            self.subs.add(names.split())
            self.sim.listen(self)
            self.send(reply(f"+OK event listener enabled {fmt}"))
        elif cmd == "nixevent":
            self.subs.remove(arg.split())
            self.send(reply("+OK events nixed"))
        elif cmd == "noevents":
            self.subs.clear()
            self.sim.unlisten(self)
            self.send(reply("+OK no longer listening for events"))
        elif cmd == "filter":
            self.send(reply(self.filters.command(arg)))
        elif cmd == "sendmsg":
            call = self.sim.calls.get(arg.strip())
            if call is None or not call.channel.alive:
                self.send(reply(f"-ERR invalid session id [{arg.strip()}]"))
            else:
                self.send(call._sendmsg(req.headers))
        elif cmd == "exit":
            self.send(reply("+OK bye"))
            return self._goodbye()
        else:
            self.send(reply("-ERR command not found"))
        return True

    def _background_job(self, job: str, line: str) -> None:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "originate":  # rings for a while: the job's reply comes when it is over
            task = asyncio.get_running_loop().create_task(self.sim.originate(arg.split()))
            task.add_done_callback(lambda t: self._job_done(job, line, t.result()))
            return
        self._job_done(job, line, self.sim.api(line))

    def _job_done(self, job: str, line: str, result: str) -> None:
        cmd, _, arg = line.strip().partition(" ")
        api_pairs = core_headers("API", ("switch_loadable_module.c", "switch_api_execute", 2954),
                                 self.sim.hostname)
        api_pairs += [("API-Command", cmd)] + ([("API-Command-Argument", arg)] if arg else [])
        self.sim.broadcast("API", api_pairs)
        pairs = core_headers("BACKGROUND_JOB", ("mod_event_socket.c", "api_exec", 1572),
                             self.sim.hostname)
        pairs += [("Job-UUID", job), ("Job-Command", cmd)]
        if arg:
            pairs.append(("Job-Command-Arg", arg))
        self.sim.broadcast("BACKGROUND_JOB", pairs, result)
