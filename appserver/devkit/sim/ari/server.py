"""A simulated Asterisk speaking ARI (REST + events WebSocket) over real HTTP.

Behaviour follows Asterisk 22 as recorded in ``../shared/reference/captures/asterisk-ari-*``:
JSON models and field names, ``asterisk_id`` / ``application`` / ``timestamp`` on every event,
status codes and error bodies (404 ``{"message": "Channel not found"}``, 409 ``{"message":
"Channel not in Stasis application"}``), barge-in (DELETE of a playback finishes it with state
``done``), a missing sound (201, then PlaybackFinished with state ``failed``), and channels that
stay in Stasis when the application's WebSocket drops (events during the gap are lost).

Simulated dialplan (mirrors ``dialplans/asterisk/extensions.conf.j2``): a called number that
matches ``ivr_numbers`` runs ``Stasis(<app>,<number>)`` for each of ``stasis_apps`` in order:
when no WebSocket is connected for an application ``STASISSTATUS=FAILED`` at once and the next
is tried; when all fail the dialplan goes to ``fallback_context``,
extension ``s``: answer, play ``cannot-complete-temp-error``, hang up (extension ``noservice``
plays ``ss-noservice``; the worker sends calls there when no flow serves the number).
``continue`` into another context records a transfer; the far end hangs up after
``transfer_talk_seconds``. Endpoints (agents' phones) answer, are busy, do not answer
or reject according to their :class:`SimEndpoint` behaviour.

Multiple media in one play run in order, each with PlaybackStarted and all but the last with
PlaybackContinuing, then one PlaybackFinished; a missing sound in the list is skipped (the
playback ends ``failed`` only when the missing one is the last), as on Asterisk 22.10.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from appserver.devkit.sim.ari import snoop, swagger
from appserver.devkit.sim.ari.call import AriSimulatedCall
from appserver.devkit.sim.ari.models import (
    CAUSES,
    HANGUP_REASONS,
    Json,
    PlaybackState,
    SimBridge,
    SimChannel,
    SimEndpoint,
    SimPlayback,
    SimRecording,
    Snoop,
    SoundCatalog,
    media_to_prompt,
    party,
    timestamp,
)
from appserver.devkit.sim.caller import EntryKind
from appserver.devkit.sim.recordings import write_silence

log = logging.getLogger(__name__)

ASTERISK_VERSION = "22.10.1"


class AriError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    apps: tuple[str, ...]
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AriSimulator:
    """``await sim.start()``, point ``aioari`` at ``sim.base_url``, then ``sim.place_call()``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "callyard",
        password: str = "callyard",
        stasis_app: str = "callyard",
        stasis_apps: Sequence[str] = (),  # the dialplan's, in order (none: stasis_app alone)
        ivr_numbers: str = r"[0-9]{4}|\*99[0-9]{8}",  # extensions.conf: _XXXX, _*99XXXXXXXX
        transfer_context: str = "callyard-transfer",
        fallback_context: str = "callyard-unavailable",
        fallback_sounds: dict[str, str] | None = None,
        transfer_talk_seconds: float = 0.2,
        sounds: SoundCatalog | None = None,
        endpoints: list[SimEndpoint] | None = None,
        unknown_endpoint: SimEndpoint | None = None,
        asterisk_id: str = "02:fc:00:00:00:01",
        recording_dir: Path | None = None,  # astspooldir/recording; None: no files written
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.stasis_apps = tuple(stasis_apps) or (stasis_app,)
        self.stasis_app = self.stasis_apps[0]
        self.ivr_numbers = re.compile(ivr_numbers)
        self.transfer_context = transfer_context
        self.fallback_context = fallback_context
        # extension of the fallback context -> the sound it plays before hanging up
        self.fallback_sounds = fallback_sounds or {
            "s": "cannot-complete-temp-error",
            "noservice": "ss-noservice",
        }
        self.transfer_talk_seconds = transfer_talk_seconds
        self.sounds = sounds or SoundCatalog()
        # Real Asterisk fails a dial to an endpoint it does not know (CHANUNAVAIL), and so do
        # we by default; given a template, any other dialled endpoint behaves like it
        # (`callyard dev`: everyone answers and stays on the line).
        self.unknown_endpoint = unknown_endpoint
        self.endpoints: dict[str, SimEndpoint] = {
            f"{e.technology}/{e.resource}": e for e in (endpoints or [])
        }
        self.asterisk_id = asterisk_id
        self.recording_dir = recording_dir
        self.recordings: dict[str, SimRecording] = {}  # live recordings by name
        self.channels: dict[str, SimChannel] = {}
        self.snoops: set[str] = set()  # ids of the snoop channels among them
        self.bridges: dict[str, SimBridge] = {}
        self.playbacks: dict[str, tuple[SimPlayback, str]] = {}  # id -> (playback, target id)
        self.calls: dict[str, AriSimulatedCall] = {}
        # Calls to phones the application originated with no originator (callbacks): the
        # number dialled and the phone's side of the call.
        self.originated: list[tuple[str, AriSimulatedCall | None]] = []
        self.sockets: dict[str, list[_Socket]] = {}  # app -> connected sockets
        self.known_apps: set[str] = set()
        # app -> (allowed, disallowed) event types (PUT /applications/{app}/eventFilter)
        self.event_filters: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        # Called with (channel id, operation nickname) for every REST command on a channel.
        self.on_command: Callable[[str, str], None] | None = None
        # Seconds from a ChannelDtmfReceived event queued for the application to the next
        # REST command on that channel (the worker's reaction time), for benchmarks.
        self.dtmf_latencies: deque[float] = deque(maxlen=1_000_000)
        self._dtmf_sent: dict[str, float] = {}
        self._seq = itertools.count(1)
        self._epoch = int(time.time())
        self._started = time.time()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url_with_credentials(self) -> str:
        """The value for ``CALLYARD_ASTERISK_ARI``."""
        return f"http://{self.username}:{self.password}@{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("ARI simulator listening", extra={"url": self.base_url})

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.drop_event_sockets()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AriSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception():
            log.error("simulator task failed", exc_info=task.exception())

    # ------------------------------------------------------------------ test controls

    def app_connected(self, app: str) -> bool:
        return bool(self.sockets.get(app))

    async def wait_app_connected(self, app: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.app_connected(app):
            if time.monotonic() > deadline:
                raise TimeoutError(f"application {app!r} did not connect within {timeout}s")
            await asyncio.sleep(0.01)

    async def drop_event_sockets(self, app: str | None = None) -> None:
        """Close the events WebSockets (all, or those of ``app``), as when Asterisk restarts
        its HTTP server or the network drops. Channels stay in Stasis."""
        for name, socks in list(self.sockets.items()):
            if app is None or name == app:
                for sock in list(socks):
                    sock.queue.put_nowait(None)
                    with contextlib.suppress(Exception):
                        await sock.ws.close()
                self.sockets.pop(name, None)

    def forget_subscription(self, app: str) -> None:
        """Stop delivering events for ``app`` without closing its socket (a subscription lost
        silently): only a liveness probe notices."""
        self.sockets.pop(app, None)

    def add_endpoint(self, endpoint: SimEndpoint) -> None:
        self.endpoints[f"{endpoint.technology}/{endpoint.resource}"] = endpoint

    # ------------------------------------------------------------------ callers

    async def place_call(
        self, to: str, caller: str = "+15550100", caller_name: str = ""
    ) -> AriSimulatedCall:
        seq = next(self._seq)
        chan = SimChannel(
            id=f"{self._epoch}.{seq}",
            name=f"PJSIP/trunk-{seq:08x}",
            created=time.time(),
            caller_name=caller_name,
            caller_number=caller,
            exten=to,
            protocol_id=f"{uuid.uuid4().hex[:12]}@sim",
        )
        call = AriSimulatedCall(self, chan.id, to, caller)
        chan.call = call
        self.channels[chan.id] = chan
        self.calls[chan.id] = call
        call.transcript.add("ringing", to)
        self._spawn(self._run_inbound(chan))
        return call

    async def _run_inbound(self, chan: SimChannel) -> None:
        if not self.ivr_numbers.fullmatch(chan.exten):
            await self._destroy(chan, 1, by="engine")
            return
        for i, app in enumerate(self.stasis_apps):
            chan.priority, chan.app_name = 2 + 2 * i, "Stasis"
            chan.app_data = f"{app},{chan.exten}"
            if self.app_connected(app):
                chan.variables.setdefault("STASISSTATUS", "")  # set when Stasis() returns
                self._enter_stasis(chan, app, [chan.exten])
                return
            chan.variables["STASISSTATUS"] = "FAILED"  # Stasis() returns at once: next one
        await self._run_fallback(chan, "s")

    async def _run_fallback(self, chan: SimChannel, exten: str) -> None:
        """The fallback context: Answer(), Playback(<sound>), Hangup()."""
        sound = self.fallback_sounds.get(exten, self.fallback_sounds["s"])
        chan.context, chan.exten = self.fallback_context, exten
        chan.priority, chan.app_name, chan.app_data = 2, "Playback", sound
        self._set_up(chan)
        pb = SimPlayback(f"fallback-{chan.id}", [f"sound:{sound}"],
                         f"channel:{chan.id}", chan.language)
        await self._run_playback(pb, chan.id)
        if not chan.hungup:
            await self._destroy(chan, 16, by="engine")

    def _enter_stasis(self, chan: SimChannel, app: str, args: list[str]) -> None:
        chan.stasis_app = chan.subscribed_app = app
        self.known_apps.add(app)
        self._emit_channel("StasisStart", chan, args=args)

    def _set_up(self, chan: SimChannel) -> None:
        if chan.state != "Up":
            chan.state = "Up"
            chan.answered.set()
            self._emit_channel("ChannelStateChange", chan)
            if chan.call:
                chan.call.transcript.add("answered")

    async def caller_dtmf(self, channel_id: str, digits: str, gap: float) -> None:
        for i, digit in enumerate(digits):
            chan = self.channels.get(channel_id)
            if chan is None or chan.hungup:
                return
            if chan.call:
                chan.call.transcript.add("dtmf", digit)
            rec = chan.recording
            if rec is not None and rec.state == "recording" and rec.ends_on(digit):
                rec.how = "dtmf"
                rec.stop.set()
            if chan.stasis_app:
                self._emit_channel("ChannelDtmfReceived", chan, digit=digit, duration_ms=100)
                self._dtmf_sent[chan.id] = time.monotonic()
            if i + 1 < len(digits):
                await asyncio.sleep(gap)

    async def caller_hangup(self, channel_id: str) -> None:
        chan = self.channels.get(channel_id)
        if chan is None or chan.hungup:
            return
        await self._destroy(chan, 16, by="caller")

    # ------------------------------------------------------------------ events

    def _event(self, event_type: str, app: str, fields: Json) -> str:
        return json.dumps(
            {
                "type": event_type,
                "timestamp": timestamp(),
                **fields,
                "asterisk_id": self.asterisk_id,
                "application": app,
            }
        )

    def _emit(self, app: str | None, event_type: str, **fields: Any) -> None:
        if not app:
            return
        socks = self.sockets.get(app)
        if not socks:
            return  # no application connected: the event is lost, as on a real Asterisk
        if app in self.event_filters and not self._event_allowed(app, event_type):
            return
        text = self._event(event_type, app, fields)
        for sock in socks:
            sock.queue.put_nowait(text)

    def _emit_channel(self, event_type: str, chan: SimChannel, **fields: Any) -> None:
        if chan.subscribed_app:
            self._emit(chan.subscribed_app, event_type, **fields, channel=chan.to_json())

    # ------------------------------------------------------------------ HTTP plumbing

    def _authorized(self, request: web.Request) -> bool:
        key = request.query.get("api_key")
        if key is not None:
            return key == f"{self.username}:{self.password}"
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return (user, password) == (self.username, self.password)
        return False

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response(
                {"message": "Authentication required"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="Asterisk REST Interface"'},
            )
        try:
            return await handler(request)
        except AriError as exc:
            return web.json_response({"message": exc.message}, status=exc.status)
        except web.HTTPNotFound:
            return web.json_response({"message": "Resource not found"}, status=404)
        except web.HTTPMethodNotAllowed:
            return web.json_response({"message": "Invalid method"}, status=405)

    def _add_routes(self, r: web.UrlDispatcher) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/ari/api-docs/resources.json", self.h_resources),
            ("GET", "/ari/api-docs/{name}.json", self.h_declaration),
            ("GET", "/ari/events", self.h_events),
            ("POST", "/ari/events/user/{eventName}", self.h_user_event),
            ("GET", "/ari/asterisk/info", self.h_info),
            ("GET", "/ari/asterisk/ping", self.h_ping),
            ("GET", "/ari/endpoints", self.h_endpoints),
            ("GET", "/ari/endpoints/{tech}", self.h_endpoints_tech),
            ("GET", "/ari/endpoints/{tech}/{resource}", self.h_endpoint),
            ("GET", "/ari/applications", self.h_applications),
            ("GET", "/ari/applications/{applicationName}", self.h_application),
            ("PUT", "/ari/applications/{applicationName}/eventFilter", self.h_event_filter),
            ("GET", "/ari/channels", self.h_channels),
            ("POST", "/ari/channels", self.h_originate),
            ("POST", "/ari/channels/create", self.h_create),
            ("GET", "/ari/channels/{channelId}", self.h_channel),
            ("POST", "/ari/channels/{channelId}", self.h_originate),
            ("DELETE", "/ari/channels/{channelId}", self.h_hangup),
            ("POST", "/ari/channels/{channelId}/continue", self.h_continue),
            ("POST", "/ari/channels/{channelId}/redirect", self.h_redirect),
            ("POST", "/ari/channels/{channelId}/answer", self.h_answer),
            ("POST", "/ari/channels/{channelId}/dtmf", self.h_send_dtmf),
            ("POST", "/ari/channels/{channelId}/moh", self.h_moh_start),
            ("DELETE", "/ari/channels/{channelId}/moh", self.h_moh_stop),
            ("POST", "/ari/channels/{channelId}/play", self.h_play),
            ("POST", "/ari/channels/{channelId}/play/{playbackId}", self.h_play),
            ("POST", "/ari/channels/{channelId}/snoop", self.h_snoop),
            ("POST", "/ari/channels/{channelId}/record", self.h_record),
            ("POST", "/ari/bridges/{bridgeId}/record", self.h_bridge_record),
            ("POST", "/ari/recordings/live/{recordingName}/pause", self.h_recording_pause),
            ("DELETE", "/ari/recordings/live/{recordingName}/pause", self.h_recording_pause),
            ("POST", "/ari/recordings/live/{recordingName}/stop", self.h_recording_stop),
            ("GET", "/ari/channels/{channelId}/variable", self.h_get_var),
            ("POST", "/ari/channels/{channelId}/variable", self.h_set_var),
            ("GET", "/ari/bridges", self.h_bridges),
            ("POST", "/ari/bridges", self.h_bridge_create),
            ("POST", "/ari/bridges/{bridgeId}", self.h_bridge_create),
            ("GET", "/ari/bridges/{bridgeId}", self.h_bridge),
            ("DELETE", "/ari/bridges/{bridgeId}", self.h_bridge_destroy),
            ("POST", "/ari/bridges/{bridgeId}/addChannel", self.h_bridge_add),
            ("POST", "/ari/bridges/{bridgeId}/removeChannel", self.h_bridge_remove),
            ("POST", "/ari/bridges/{bridgeId}/moh", self.h_bridge_moh_start),
            ("DELETE", "/ari/bridges/{bridgeId}/moh", self.h_bridge_moh_stop),
            ("POST", "/ari/bridges/{bridgeId}/play", self.h_bridge_play),
            ("GET", "/ari/playbacks/{playbackId}", self.h_playback),
            ("DELETE", "/ari/playbacks/{playbackId}", self.h_playback_stop),
        ]
        for method, path, handler in routes:
            r.add_route(method, path, handler)

    @staticmethod
    def _ok(data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status)

    @staticmethod
    def _no_content() -> web.Response:
        return web.Response(status=204)

    @staticmethod
    def _param(request: web.Request, name: str, required: bool = False) -> str | None:
        value = request.query.get(name)
        if required and not value:
            raise AriError(400, f"{name}: missing required parameter")
        return value

    def _int_param(self, request: web.Request, name: str, default: int) -> int:
        value = self._param(request, name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise AriError(400, f"{name}: expected an integer, got {value!r}") from None

    def _channel(self, request: web.Request, in_stasis: bool = True) -> SimChannel:
        chan = self.channels.get(request.match_info["channelId"])
        if chan is None or chan.hungup:
            raise AriError(404, "Channel not found")
        if in_stasis and chan.stasis_app is None:
            raise AriError(409, "Channel not in Stasis application")
        self._note_command(chan.id, request.path.rsplit("/", 1)[-1])
        return chan

    def _note_command(self, channel_id: str, operation: str) -> None:
        sent = self._dtmf_sent.pop(channel_id, None)
        if sent is not None:
            self.dtmf_latencies.append(time.monotonic() - sent)
        if self.on_command:
            self.on_command(channel_id, operation)

    def _bridge(self, request: web.Request) -> SimBridge:
        bridge = self.bridges.get(request.match_info["bridgeId"])
        if bridge is None:
            raise AriError(404, "Bridge not found")
        return bridge

    def _base_path(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}/ari"

    # ------------------------------------------------------------------ api-docs, asterisk

    async def h_resources(self, request: web.Request) -> web.Response:
        return self._ok(swagger.resource_listing(self._base_path(request)))

    async def h_declaration(self, request: web.Request) -> web.Response:
        decl = swagger.api_declaration(request.match_info["name"], self._base_path(request))
        if decl is None:
            raise AriError(404, "Resource not found")
        return self._ok(decl)

    async def h_info(self, request: web.Request) -> web.Response:
        info = {
            "build": {"os": "Linux", "kernel": "", "machine": "x86_64",
                      "options": "OPTIONAL_API", "date": timestamp(self._started), "user": "sim"},
            "system": {"version": ASTERISK_VERSION, "entity_id": self.asterisk_id},
            "config": {"name": "", "default_language": "en",
                       "setid": {"user": "", "group": ""}},
            "status": {"startup_time": timestamp(self._started),
                       "last_reload_time": timestamp(self._started)},
        }
        only = self._param(request, "only")
        if only:
            info = {k: v for k, v in info.items() if k in only.split(",")}
        return self._ok(info)

    async def h_ping(self, request: web.Request) -> web.Response:
        return self._ok({"ping": "pong", "timestamp": timestamp(),
                         "asterisk_id": self.asterisk_id})

    async def h_endpoints(self, request: web.Request) -> web.Response:
        return self._ok([e.to_json() for e in self.endpoints.values()])

    async def h_endpoints_tech(self, request: web.Request) -> web.Response:
        tech = request.match_info["tech"]
        found = [e.to_json() for e in self.endpoints.values() if e.technology == tech]
        if not found:
            raise AriError(404, "No Endpoints found - invalid tech " + tech)
        return self._ok(found)

    async def h_endpoint(self, request: web.Request) -> web.Response:
        ep = self.endpoints.get(f"{request.match_info['tech']}/{request.match_info['resource']}")
        if ep is None:
            raise AriError(404, "Endpoint not found")
        return self._ok(ep.to_json())

    # ------------------------------------------------------------------ applications, events

    def _app_json(self, name: str) -> Json:
        return {
            "name": name,
            "channel_ids": [c.id for c in self.channels.values() if c.stasis_app == name],
            "bridge_ids": [b.id for b in self.bridges.values() if b.app == name],
            "endpoint_ids": [],
            "device_names": [],
            "events_allowed": [{"type": t} for t in self.event_filters.get(name, ((), ()))[0]],
            "events_disallowed": [{"type": t}
                                  for t in self.event_filters.get(name, ((), ()))[1]],
        }

    def _app_exists(self, name: str) -> bool:
        """Registered while connected, or while it still owns channels or bridges."""
        if self.app_connected(name):
            return True
        return name in self.known_apps and (
            any(c.stasis_app == name for c in self.channels.values())
            or any(b.app == name for b in self.bridges.values())
        )

    async def h_applications(self, request: web.Request) -> web.Response:
        return self._ok([self._app_json(n) for n in sorted(self.known_apps)
                         if self._app_exists(n)])

    async def h_application(self, request: web.Request) -> web.Response:
        name = request.match_info["applicationName"]
        if not self._app_exists(name):
            raise AriError(404, "Application not found")
        return self._ok(self._app_json(name))

    async def h_event_filter(self, request: web.Request) -> web.Response:
        """As res_ari_applications: an empty body clears both lists, a list given replaces
        that list alone; each item must be ``{"type": name}``."""
        name = request.match_info["applicationName"]
        if not self._app_exists(name):
            raise AriError(404, "Application not found")
        body: Any = {}
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                raise AriError(400, "Invalid JSON body") from None
        if not isinstance(body, dict):
            raise AriError(400, "Invalid filter")
        allowed, disallowed = self.event_filters.get(name, ((), ()))
        lists = []
        for key, current in (("allowed", allowed), ("disallowed", disallowed)):
            items = body.get(key, None if body else [])
            if items is None:
                lists.append(current)
                continue
            if not isinstance(items, list) or not all(
                    isinstance(i, dict) and isinstance(i.get("type"), str) for i in items):
                raise AriError(400, "Invalid filter")
            lists.append(tuple(i["type"] for i in items))
        self.event_filters[name] = (lists[0], lists[1])
        return self._ok(self._app_json(name))

    def _event_allowed(self, app: str, event_type: str) -> bool:
        allowed, disallowed = self.event_filters.get(app, ((), ()))
        return (not allowed or event_type in allowed) and event_type not in disallowed

    async def h_user_event(self, request: web.Request) -> web.Response:
        app = self._param(request, "application", required=True) or ""
        if not self._app_exists(app):
            raise AriError(404, "Application not found")
        variables: Json = {}
        if request.can_read_body:
            with contextlib.suppress(ValueError):
                body = await request.json()
                variables = body.get("variables", {}) if isinstance(body, dict) else {}
        self._emit(app, "ChannelUserevent", eventname=request.match_info["eventName"],
                   userevent=variables)
        return self._no_content()

    async def h_events(self, request: web.Request) -> web.StreamResponse:
        apps = tuple(a for a in (self._param(request, "app") or "").split(",") if a)
        if not apps:
            raise AriError(400, "Missing parameter app")
        ws = web.WebSocketResponse(protocols=("ari",), heartbeat=None)
        await ws.prepare(request)
        sock = _Socket(ws, apps)
        for app in apps:
            # A new connection for an application replaces the previous one.
            old = self.sockets.get(app, [])
            self.sockets[app] = [sock]
            for other in old:
                other.queue.put_nowait(None)
            self.known_apps.add(app)
        writer = asyncio.ensure_future(self._write_events(sock))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            writer.cancel()
            for app in apps:
                if sock in self.sockets.get(app, []):
                    self.sockets[app].remove(sock)
                    if not self.sockets[app]:
                        del self.sockets[app]
        return ws

    async def _write_events(self, sock: _Socket) -> None:
        while True:
            text = await sock.queue.get()
            if text is None:
                return
            try:
                await sock.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    # ------------------------------------------------------------------ channels

    async def h_channels(self, request: web.Request) -> web.Response:
        return self._ok([c.to_json() for c in self.channels.values() if not c.hungup])

    async def h_channel(self, request: web.Request) -> web.Response:
        return self._ok(self._channel(request, in_stasis=False).to_json())

    async def _variables_body(self, request: web.Request) -> dict[str, str]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except ValueError:
            raise AriError(400, "Invalid JSON body") from None
        variables = body.get("variables", {}) if isinstance(body, dict) else {}
        if not isinstance(variables, dict):
            raise AriError(400, "variables: expected an object")
        return {str(k): str(v) for k, v in variables.items()}

    async def h_originate(self, request: web.Request) -> web.Response:
        endpoint = self._param(request, "endpoint", required=True) or ""
        app = self._param(request, "app")
        if not app and not self._param(request, "extension"):
            raise AriError(400, "Application or extension must be specified")
        chan_id = request.match_info.get("channelId") or self._param(request, "channelId")
        return self._ok(await self._originate(request, endpoint, app, chan_id, dial=True))

    async def h_create(self, request: web.Request) -> web.Response:
        endpoint = self._param(request, "endpoint", required=True) or ""
        app = self._param(request, "app", required=True)
        chan_id = self._param(request, "channelId")
        return self._ok(await self._originate(request, endpoint, app, chan_id, dial=False))

    async def _originate(
        self, request: web.Request, endpoint: str, app: str | None, chan_id: str | None,
        dial: bool,
    ) -> Json:
        tech, sep, resource = endpoint.partition("/")
        if not sep or not tech or not resource:
            raise AriError(400, "Endpoint must be in the format technology/resource")
        if chan_id and chan_id in self.channels:
            raise AriError(409, "Channel with given unique ID already exists")
        timeout = self._int_param(request, "timeout", 30)
        variables = await self._variables_body(request)
        seq = next(self._seq)
        chan = SimChannel(
            id=chan_id or f"{self._epoch}.{seq}",
            name=f"{endpoint}-{seq:08x}",
            created=time.time(),
            state="Down",
            context="default",
            exten="s",
            app_name="AppDial2",
            app_data="(Outgoing Line)",
            endpoint=endpoint,
            originator=self._param(request, "originator"),
            variables=variables,
        )
        caller_id = self._param(request, "callerId") or ""
        match = re.fullmatch(r'\s*(?:"?([^"<]*)"?\s*)?<([^>]*)>\s*', caller_id)
        chan.caller_name, chan.caller_number = (
            (match.group(1) or "").strip(), match.group(2)) if match else ("", caller_id)
        chan.subscribed_app = app
        self.channels[chan.id] = chan
        args = [a for a in (self._param(request, "appArgs") or "").split(",") if a != ""]
        if app:
            self.known_apps.add(app)
        if dial:
            owner = self.channels.get(chan.originator or "")
            if owner and owner.call:
                owner.call.transcript.add("dialed", party(endpoint))
            if not chan.originator:  # a call out to someone (a callback's customer)
                chan.call = AriSimulatedCall(self, chan.id, endpoint, caller_id)
                self.calls[chan.id] = chan.call
                self.originated.append((party(endpoint), chan.call))
            self._spawn(self._run_outbound(chan, app, args, timeout))
        elif app:
            chan.stasis_app = app
        return chan.to_json()

    async def _run_outbound(
        self, chan: SimChannel, app: str | None, args: list[str], timeout: int
    ) -> None:
        ep = self.endpoints.get(chan.endpoint)
        if ep is None and self.unknown_endpoint is not None:
            tech, _, resource = chan.endpoint.partition("/")
            ep = self.endpoints[chan.endpoint] = dataclasses.replace(
                self.unknown_endpoint, technology=tech, resource=resource, channel_ids=[]
            )
        dialstring = chan.endpoint.partition("/")[2]
        self._emit(app, "Dial", peer=chan.to_json(), dialstring=dialstring, dialstatus="")
        await asyncio.sleep(0)
        if ep is None or ep.state == "offline":
            self._emit(app, "Dial", peer=chan.to_json(), dialstring=dialstring,
                       dialstatus="CHANUNAVAIL")
            await self._destroy(chan, 3 if ep is None else 20, by="engine")
            return
        ep.channel_ids.append(chan.id)
        chan.state = "Ringing"
        self._emit_channel("ChannelStateChange", chan)
        self._emit(app, "Dial", peer=chan.to_json(), dialstring=dialstring, dialstatus="RINGING")
        wait = ep.answer_after
        if ep.behaviour == "no_answer":
            wait = ep.no_answer_after if ep.no_answer_after is not None else float(timeout)
        await asyncio.sleep(min(wait, float(timeout)) if timeout > 0 else wait)
        if chan.hungup:
            return
        if ep.behaviour != "answer" or (0 < timeout < ep.answer_after):
            status, cause = {"busy": ("BUSY", 17), "reject": ("CONGESTION", 21)}.get(
                ep.behaviour, ("NOANSWER", 19))
            self._emit(app, "Dial", peer=chan.to_json(), dialstring=dialstring,
                       dialstatus=status)
            await self._destroy(chan, cause, by="engine")
            return
        chan.state = "Up"
        chan.answered.set()
        self._emit_channel("ChannelStateChange", chan)
        self._emit(app, "Dial", peer=chan.to_json(), dialstring=dialstring, dialstatus="ANSWER")
        if app:
            chan.app_name, chan.app_data = "Stasis", ",".join([app, *args])
            self._enter_stasis(chan, app, args)
        await asyncio.sleep(ep.talk_seconds)
        if not chan.hungup:
            await self._destroy(chan, 16, by="engine")

    async def h_hangup(self, request: web.Request) -> web.Response:
        chan = self._channel(request, in_stasis=False)
        reason = self._param(request, "reason")
        code = self._param(request, "reason_code")
        if code is not None:
            if not code.isdigit():
                raise AriError(400, "Invalid reason_code")
            cause = int(code)
        elif reason is not None:
            if reason not in HANGUP_REASONS:
                raise AriError(400, "Invalid reason for hangup provided")
            cause = HANGUP_REASONS[reason]
        else:
            cause = 16
        await self._destroy(chan, cause, by="app", request_cause=32 if code is None else cause)
        return self._no_content()

    async def _destroy(
        self, chan: SimChannel, cause: int, by: str, request_cause: int | None = None
    ) -> None:
        if chan.hungup:
            return
        chan.hungup = True
        self._end_hold(chan)
        if chan.recording is not None:
            chan.recording.how = "hangup"
            chan.recording.stop.set()
        for pb in chan.playbacks:
            if pb.state == "playing" and not pb.transcribed_end and chan.call:
                pb.transcribed_end = True
                prompt = media_to_prompt(pb.media[pb.index])
                chan.call.transcript.add("prompt_finished", f"{prompt} stopped")
            pb.stop.set()
        if by == "app":
            self._emit_channel("ChannelHangupRequest", chan, cause=request_cause or 32, soft=True)
        else:
            self._emit_channel("ChannelHangupRequest", chan, cause=cause)
        if chan.bridge_id and chan.bridge_id in self.bridges:
            bridge = self.bridges[chan.bridge_id]
            self._leave_bridge(bridge, chan)
            self._transcribe_unbridged(bridge, chan)
        if chan.stasis_app:
            chan.stasis_app = None
            self._emit_channel("StasisEnd", chan)
        cause_name, cause_txt = CAUSES.get(cause, (f"CAUSE_{cause}", "Unknown"))
        self._emit_channel("ChannelDestroyed", chan, cause=cause, cause_txt=cause_txt)
        self.channels.pop(chan.id, None)
        self._dtmf_sent.pop(chan.id, None)
        ep = self.endpoints.get(chan.endpoint)
        if ep and chan.id in ep.channel_ids:
            ep.channel_ids.remove(chan.id)
        if chan.call and not chan.call.ended:
            chan.call.transcript.add("hangup", f"{cause_name} {by}")
        self.calls.pop(chan.id, None)
        if chan.supervising is not None and chan.supervising.call:
            chan.supervising.call.transcript.add("supervised", f"{self._party(chan)} gone")
        self.snoops.discard(chan.id)
        spies = [self.channels[i] for i in self.snoops if i in self.channels]
        for spy in [c for c in spies if c.snoop and c.snoop.target == chan.id]:
            await self._destroy(spy, 16, by="engine")  # a snoop goes with its channel

    def _leave_stasis(self, chan: SimChannel) -> None:
        if chan.bridge_id and chan.bridge_id in self.bridges:
            self._leave_bridge(self.bridges[chan.bridge_id], chan)
        for pb in chan.playbacks:
            pb.stop.set()
        chan.stasis_app = None
        chan.variables["STASISSTATUS"] = "SUCCESS"
        self._emit_channel("StasisEnd", chan)

    async def _after_queued_playbacks(self, chan: SimChannel) -> None:
        """Asterisk runs a channel's commands (set a variable, continue ...) one after the other
        on the channel's own thread, where a playback runs to its end: a command sent while
        playbacks play or wait runs once they have finished."""
        for pb in list(chan.playbacks):
            await pb.finished.wait()

    async def h_continue(self, request: web.Request) -> web.Response:
        """204 at once; the channel leaves Stasis after its playbacks (as Asterisk 22.10.1)."""
        chan = self._channel(request)
        context = self._param(request, "context") or chan.context
        exten = self._param(request, "extension")
        priority = self._int_param(request, "priority", 1 if exten else chan.priority + 1)
        self._spawn(self._continue(chan, context, exten, priority))
        return self._no_content()

    async def _continue(self, chan: SimChannel, context: str, exten: str | None,
                        priority: int) -> None:
        await self._after_queued_playbacks(chan)
        if chan.hungup or chan.stasis_app is None:
            return
        self._leave_stasis(chan)
        chan.context, chan.priority = context, priority
        if context == self.fallback_context:
            self._spawn(self._run_fallback(chan, exten or "s"))
        elif exten:
            chan.exten = exten
            if chan.call:
                chan.call.transcript.add("transferred", exten)
            self._spawn(self._far_end_hangup(chan, self.transfer_talk_seconds))
        else:
            # The next priority after Stasis() in the IVR extension is Hangup().
            self._spawn(self._far_end_hangup(chan, 0.0))

    async def h_redirect(self, request: web.Request) -> web.Response:
        chan = self._channel(request)
        endpoint = self._param(request, "endpoint", required=True) or ""
        if "/" not in endpoint:
            raise AriError(400, "Endpoint parameter is invalid")
        self._leave_stasis(chan)
        if chan.call:
            chan.call.transcript.add("transferred", endpoint)
        self._spawn(self._far_end_hangup(chan, self.transfer_talk_seconds))
        return self._no_content()

    async def _far_end_hangup(self, chan: SimChannel, after: float) -> None:
        await asyncio.sleep(after)
        if not chan.hungup:
            await self._destroy(chan, 16, by="engine")

    async def h_answer(self, request: web.Request) -> web.Response:
        self._set_up(self._channel(request))
        return self._no_content()

    async def h_send_dtmf(self, request: web.Request) -> web.Response:
        self._channel(request)
        dtmf = self._param(request, "dtmf")
        if not dtmf:
            raise AriError(400, "DTMF is required")
        if not re.fullmatch(r"[0-9A-D*#,]+", dtmf):
            raise AriError(400, "Invalid DTMF")
        return self._no_content()

    async def h_moh_start(self, request: web.Request) -> web.Response:
        chan = self._channel(request)
        if chan.call:
            chan.call.transcript.add("moh", self._param(request, "mohClass") or "default")
        return self._no_content()

    async def h_moh_stop(self, request: web.Request) -> web.Response:
        chan = self._channel(request)
        if chan.call:
            chan.call.transcript.add("moh", "")
        return self._no_content()

    async def h_get_var(self, request: web.Request) -> web.Response:
        chan = self._channel(request)
        name = self._param(request, "variable", required=True) or ""
        functions = {
            "CHANNEL(name)": chan.name,
            "CALLERID(num)": chan.caller_number,
            "CALLERID(name)": chan.caller_name,
            "EXTEN": chan.exten,
            "CONTEXT": chan.context,
        }
        if name in functions:
            return self._ok({"value": functions[name]})
        if name not in chan.variables:
            raise AriError(404, "Provided variable was not found")
        return self._ok({"value": chan.variables[name]})

    async def h_set_var(self, request: web.Request) -> web.Response:
        """Answered once set, which is after the channel's playbacks (as Asterisk 22.10.1)."""
        chan = self._channel(request)
        name = self._param(request, "variable", required=True) or ""
        value = self._param(request, "value") or ""
        await self._after_queued_playbacks(chan)
        if chan.hungup:
            raise AriError(404, "Channel not found")
        chan.variables[name] = value
        self._emit_channel("ChannelVarset", chan, variable=name, value=value)
        if chan.call:
            chan.call.transcript.add("variable", f"{name}={value}")
        return self._no_content()

    # ------------------------------------------------------------------ playbacks

    def _new_playback(self, request: web.Request, target_uri: str, language: str) -> SimPlayback:
        media = [m for m in request.query.getall("media", []) for m in m.split(",") if m]
        if not media:
            raise AriError(400, "media: missing required parameter")
        pb_id = (request.match_info.get("playbackId") or self._param(request, "playbackId")
                 or str(uuid.uuid4()))
        if pb_id in self.playbacks:
            raise AriError(409, "Playback with given id already exists")
        lang = self._param(request, "lang") or language
        return SimPlayback(pb_id, media, target_uri, lang)

    async def h_play(self, request: web.Request) -> web.Response:
        chan = self._channel(request)
        pb = self._new_playback(request, f"channel:{chan.id}", chan.language)
        self.playbacks[pb.id] = (pb, chan.id)
        chan.playbacks.append(pb)
        if chan.player is None:
            chan.player = self._spawn(self._channel_player(chan))
        body = pb.to_json()
        return self._ok(body, status=201)

    async def h_record(self, request: web.Request) -> web.Response:
        """res_ari_channels record: stasis_app_control_record. Writes silence as long as the
        recording lasted (see appserver.devkit.sim.recordings) when ``recording_dir`` is set."""
        chan = self._channel(request)
        if chan.bridge_id:
            raise AriError(409, "Channel is currently bridged with other channels")
        return self._record(request, chan, "channel", chan.subscribed_app)

    async def h_bridge_record(self, request: web.Request) -> web.Response:
        """res_ari_bridges record: the bridge's mix until stopped or the bridge goes."""
        bridge = self._bridge(request)
        return self._record(request, bridge, "bridge", bridge.app)

    def _record(self, request: web.Request, target: SimChannel | SimBridge, scheme: str,
                app: str | None) -> web.Response:
        rec, path = self._new_recording(request, f"{scheme}:{target.id}")
        target.recording = rec

        def finished() -> None:
            if target.recording is rec:
                target.recording = None

        self._spawn(self._run_recording(rec, path, app, target.id, finished))
        return self._ok(rec.to_json(), status=201)

    def _live(self, request: web.Request) -> SimRecording:
        rec = self.recordings.get(request.match_info["recordingName"])
        if rec is None:
            raise AriError(404, "Recording not found")
        return rec

    async def h_recording_pause(self, request: web.Request) -> web.Response:
        rec = self._live(request)
        if request.method == "POST":
            rec.pause(time.monotonic())
        else:
            rec.unpause(time.monotonic())
        self._transcribe(rec.target_uri.partition(":")[2], "recording",
                         f"{rec.name} {'paused' if request.method == 'POST' else 'resumed'}")
        return self._no_content()

    async def h_recording_stop(self, request: web.Request) -> web.Response:
        rec = self._live(request)
        rec.how = "stop"
        rec.stop.set()
        return self._no_content()

    def _new_recording(self, request: web.Request, target_uri: str
                       ) -> tuple[SimRecording, Path | None]:
        name = self._param(request, "name", required=True) or ""
        fmt = self._param(request, "format", required=True) or ""
        if fmt not in ("wav", "gsm", "ulaw", "alaw", "sln", "g722"):
            raise AriError(422, "The format specified is unknown on this system")
        terminate_on = self._param(request, "terminateOn") or "none"
        if terminate_on not in ("none", "any", "*", "#"):
            raise AriError(400, f"terminateOn: invalid value {terminate_on!r}")
        if_exists = self._param(request, "ifExists") or "fail"
        path = self.recording_dir / f"{name}.{fmt}" if self.recording_dir else None
        if name in self.recordings or (if_exists == "fail" and path and path.exists()):
            raise AriError(409, "Recording with the same name already exists")
        rec = SimRecording(name, fmt, target_uri,
                           self._int_param(request, "maxDurationSeconds", 0), terminate_on,
                           (self._param(request, "beep") or "false") == "true")
        self.recordings[name] = rec
        return rec, path

    async def _run_recording(self, rec: SimRecording, path: Path | None, app: str | None,
                             target_id: str, finished: Callable[[], None]) -> None:
        # the parties' transcripts, kept: a caller who hangs up leaves the channel list
        transcripts = [c.call.transcript for c in self._listeners(target_id) if c.call]

        def transcribe(kind: EntryKind, detail: str = "") -> None:
            for transcript in transcripts:
                transcript.add(kind, detail)

        try:
            if rec.beep:
                transcribe("beep")
                await asyncio.sleep(0.25)
            rec.state = "recording"
            self._emit(app, "RecordingStarted", recording=rec.to_json())
            transcribe("recording", f"{rec.name} started")
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rec.stop.wait(), rec.max_seconds or None)
            now = time.monotonic()
            rec.unpause(now)
            seconds = now - started - rec.paused_total  # paused audio is not written
            transcribe("recording", f"{rec.name} {round(seconds, 3)}s {rec.how}")
            rec.duration = round(seconds)
            event = "RecordingFinished"
            rec.state = "done"
            if path is not None and rec.format == "wav":
                try:
                    write_silence(path, seconds)
                except OSError as exc:
                    event, rec.state = "RecordingFailed", "failed"
                    log.warning("cannot write recording %s: %s", path, exc)
            self._emit(app, event, recording=rec.to_json())
        finally:
            self.recordings.pop(rec.name, None)
            finished()

    async def _channel_player(self, chan: SimChannel) -> None:
        try:
            while chan.playbacks:
                pb = chan.playbacks[0]
                await self._run_playback(pb, chan.id)
                if chan.playbacks and chan.playbacks[0] is pb:
                    chan.playbacks.pop(0)
        finally:
            chan.player = None

    def _listeners(self, target_id: str) -> list[SimChannel]:
        if target_id in self.bridges:
            return [self.channels[c] for c in self.bridges[target_id].channels
                    if c in self.channels]
        chan = self.channels.get(target_id)
        return [chan] if chan else []

    def _target_app(self, target_id: str) -> str | None:
        if target_id in self.bridges:
            return self.bridges[target_id].app
        chan = self.channels.get(target_id)
        return chan.subscribed_app if chan else None

    def _transcribe(self, target_id: str, kind: str, detail: str) -> None:
        for chan in self._listeners(target_id):
            if chan.call:
                chan.call.transcript.add(kind, detail)  # type: ignore[arg-type]

    async def _run_playback(self, pb: SimPlayback, target_id: str) -> None:
        """As res_stasis_playback: per media PlaybackStarted, then PlaybackContinuing (all but
        the last) or PlaybackFinished; a missing sound is skipped, but ends the playback
        ``failed`` when it is the last; a stop ends the whole playback ``done``; a playback
        cancelled while queued reports only its PlaybackFinished, when its turn comes."""
        app = self._target_app(target_id) if not pb.id.startswith("fallback-") else None
        if pb.stop.is_set():  # cancelled while queued, or the channel left meanwhile
            self._finish_playback(pb, app, "done")
            return
        last = len(pb.media) - 1
        for i, media in enumerate(pb.media):
            pb.index, pb.state = i, "playing"
            self._emit(app, "PlaybackStarted", playback=pb.to_json())
            prompt = media_to_prompt(media)
            self._transcribe(target_id, "prompt_started", prompt)
            if not self.sounds.exists(media):
                self._transcribe(target_id, "prompt_finished", f"{prompt} failed")
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pb.stop.wait(), self.sounds.seconds(media))
                if pb.stop.is_set():
                    if not pb.transcribed_end:
                        self._transcribe(target_id, "prompt_finished", f"{prompt} stopped")
                    break
                self._transcribe(target_id, "prompt_finished", f"{prompt} done")
            if i < last:
                pb.state = "continuing"
                self._emit(app, "PlaybackContinuing", playback=pb.to_json())
            elif not self.sounds.exists(media):
                self._finish_playback(pb, app, "failed")
                return
        self._finish_playback(pb, app, "done")

    def _finish_playback(self, pb: SimPlayback, app: str | None, state: PlaybackState) -> None:
        pb.state = state
        pb.finished.set()
        self.playbacks.pop(pb.id, None)
        self._emit(app, "PlaybackFinished", playback=pb.to_json())

    async def h_playback(self, request: web.Request) -> web.Response:
        entry = self.playbacks.get(request.match_info["playbackId"])
        if entry is None:
            raise AriError(404, "Playback not found")
        return self._ok(entry[0].to_json())

    async def h_playback_stop(self, request: web.Request) -> web.Response:
        entry = self.playbacks.get(request.match_info["playbackId"])
        if entry is None:
            raise AriError(404, "Playback not found")
        pb, target = entry
        self._note_command(target, "stop")
        if pb.state == "queued":  # cancelled: reads "done" now, finishes when its turn comes
            pb.state = "done"
        pb.stop.set()
        return self._no_content()

    # ------------------------------------------------------------------ bridges

    async def h_bridges(self, request: web.Request) -> web.Response:
        return self._ok([b.to_json() for b in self.bridges.values()])

    async def h_bridge(self, request: web.Request) -> web.Response:
        return self._ok(self._bridge(request).to_json())

    async def h_bridge_create(self, request: web.Request) -> web.Response:
        bridge_id = request.match_info.get("bridgeId") or self._param(request, "bridgeId")
        if bridge_id and bridge_id in self.bridges:
            raise AriError(409, "Bridge with id already exists")
        types = (self._param(request, "type") or "mixing").split(",")
        kind = "holding" if "holding" in types else "mixing"
        bridge = SimBridge(
            id=bridge_id or str(uuid.uuid4()),
            name=self._param(request, "name") or "",
            bridge_type=kind,
            created=time.time(),
        )
        self.bridges[bridge.id] = bridge
        return self._ok(bridge.to_json())

    def _bridge_channels(self, request: web.Request) -> list[SimChannel]:
        ids = [c for v in request.query.getall("channel", []) for c in v.split(",") if c]
        if not ids:
            raise AriError(400, "channel: missing required parameter")
        chans = []
        for cid in ids:
            chan = self.channels.get(cid)
            if chan is None or chan.hungup:
                raise AriError(400, "Channel not found")
            chans.append(chan)
        return chans

    async def h_bridge_add(self, request: web.Request) -> web.Response:
        bridge = self._bridge(request)
        chans = self._bridge_channels(request)
        for chan in chans:
            if chan.stasis_app is None:
                raise AriError(422, "Channel not in Stasis application")
        entering = []
        for chan in chans:
            if chan.bridge_id == bridge.id:
                continue
            if chan.bridge_id and chan.bridge_id in self.bridges:
                self._leave_bridge(self.bridges[chan.bridge_id], chan)
            bridge.app = bridge.app or chan.stasis_app
            bridge.channels.append(chan.id)
            chan.bridge_id = bridge.id
            self._emit(bridge.app, "ChannelEnteredBridge", bridge=bridge.to_json(),
                       channel=chan.to_json())
            resumed = self._end_hold(chan) == bridge.id
            if resumed:  # back from hold, to the party that stayed in the bridge
                if chan.call:
                    chan.call.transcript.add("held", "off")
            else:
                entering.append(chan)
        members = [self.channels[c] for c in bridge.channels if c in self.channels]
        self._transcribe_supervisors(entering, members)
        for i, chan in enumerate(entering):
            for other in members:
                if other is not chan and other not in entering[:i]:  # each pair once
                    if chan.call:
                        chan.call.transcript.add("bridged", self._party(other))
                    if other.call:
                        other.call.transcript.add("bridged", self._party(chan))
        return self._no_content()

    def _transcribe_supervisors(self, entering: list[SimChannel],
                                members: list[SimChannel]) -> None:
        """A leg that joins a snoop, or a bridge already holding a conversation, is a
        supervisor: its caller's transcript tells who hears it (see :mod:`.snoop`)."""
        snooped = any(c.snoop for c in members)
        for chan in members:
            joins_talk = chan in entering and len(members) >= 3
            if chan.call or chan.snoop or not (snooped or joins_talk):
                continue
            caller = snoop.call_of(chan, self.channels, self.bridges)
            if caller is not None and caller.call:
                chan.supervising = caller
                heard = snoop.hearers(chan, self.channels, self.bridges)
                caller.call.transcript.add(
                    "supervised", f"{self._party(chan)} heard_by={snoop.heard_by(heard)}")

    async def h_snoop(self, request: web.Request) -> web.Response:
        """A snoop channel on the channel, put into ``app`` (it needs not be in Stasis)."""
        target = self._channel(request, in_stasis=False)
        spy = self._param(request, "spy") or "none"
        whisper = self._param(request, "whisper") or "none"
        if spy not in snoop.DIRECTIONS or whisper not in snoop.DIRECTIONS:
            raise AriError(400, "Invalid direction specified")
        if spy == whisper == "none":
            raise AriError(400, "Direction must be specified for at least spy or whisper")
        app = self._param(request, "app", required=True) or ""
        snoop_id = self._param(request, "snoopId")
        if snoop_id and snoop_id in self.channels:
            raise AriError(400, "Channel with given unique ID already exists")
        seq = next(self._seq)
        chan = SimChannel(id=snoop_id or f"{self._epoch}.{seq}",
                          name=f"Snoop/{target.id}-{seq:08x}", created=time.time(), state="Up",
                          snoop=Snoop(target.id, spy, whisper))
        self.channels[chan.id] = chan
        self.snoops.add(chan.id)
        args = [a for a in (self._param(request, "appArgs") or "").split(",") if a != ""]
        chan.app_name, chan.app_data = "Stasis", ",".join([app, *args])
        self._enter_stasis(chan, app, args)
        return self._ok(chan.to_json())

    @staticmethod
    def _party(chan: SimChannel) -> str:
        return party(chan.endpoint) if chan.endpoint else chan.caller_number

    def _leave_bridge(self, bridge: SimBridge, chan: SimChannel) -> None:
        if chan.id in bridge.channels:
            bridge.channels.remove(chan.id)
        chan.bridge_id = None
        self._emit(bridge.app, "ChannelLeftBridge", bridge=bridge.to_json(),
                   channel=chan.to_json())

    async def h_bridge_remove(self, request: web.Request) -> web.Response:
        bridge = self._bridge(request)
        chans = self._bridge_channels(request)
        for chan in chans:
            if chan.id not in bridge.channels:
                raise AriError(422, "Channel not in this bridge")
        for chan in chans:
            self._leave_bridge(bridge, chan)
            if any(c in self.channels for c in bridge.channels):
                # Its peer stays in the bridge: the caller is on hold (MOH follows separately).
                self._end_hold(chan)
                chan.held_bridge = bridge.id
                bridge.held.append(chan.id)
                if chan.call:
                    chan.call.transcript.add("held", "on")
        return self._no_content()

    def _transcribe_unbridged(self, bridge: SimBridge, gone: SimChannel) -> None:
        """``gone`` hung up: whoever it was connected to (in the bridge, or out of it on
        hold) stays on the line without it."""
        peers = [self.channels[c] for c in (*bridge.channels, *bridge.held)
                 if c in self.channels and c != gone.id]
        if not any(c.id in bridge.channels for c in peers):
            for chan in peers:  # nobody left to be held from
                self._end_hold(chan)
        for chan in peers:
            if chan.call and not chan.hungup:
                chan.call.transcript.add("unbridged", self._party(gone))

    def _end_hold(self, chan: SimChannel) -> str | None:
        """Forget that ``chan`` is on hold; return the bridge it was held from."""
        held, chan.held_bridge = chan.held_bridge, None
        bridge = self.bridges.get(held or "")
        if bridge and chan.id in bridge.held:
            bridge.held.remove(chan.id)
        return held

    async def h_bridge_destroy(self, request: web.Request) -> web.Response:
        bridge = self._bridge(request)
        if bridge.recording is not None:  # its recording ends with it
            bridge.recording.how = "bridge gone"
            bridge.recording.stop.set()
            await asyncio.sleep(0)
        for cid in list(bridge.channels):
            chan = self.channels.get(cid)
            if chan:
                self._leave_bridge(bridge, chan)
        del self.bridges[bridge.id]
        self._emit(bridge.app, "BridgeDestroyed", bridge=bridge.to_json())
        return self._no_content()

    async def h_bridge_moh_start(self, request: web.Request) -> web.Response:
        bridge = self._bridge(request)
        bridge.moh_class = self._param(request, "mohClass") or "default"
        self._transcribe(bridge.id, "moh", bridge.moh_class)
        return self._no_content()

    async def h_bridge_moh_stop(self, request: web.Request) -> web.Response:
        bridge = self._bridge(request)
        if bridge.moh_class is None:
            raise AriError(409, "Bridge isn't playing music on hold")
        bridge.moh_class = None
        self._transcribe(bridge.id, "moh", "")
        return self._no_content()

    async def h_bridge_play(self, request: web.Request) -> web.Response:
        bridge = self._bridge(request)
        pb = self._new_playback(request, f"bridge:{bridge.id}", "en")
        self.playbacks[pb.id] = (pb, bridge.id)
        self._spawn(self._run_playback(pb, bridge.id))
        return self._ok(pb.to_json(), status=201)
