"""A simulated Asterisk Manager Interface (AMI) over TCP, framed like Asterisk 22.

Greeting ``Asterisk Call Manager/11.0.0``; CRLF lines; messages end with an empty line.
Actions: Login (then ``FullyBooted``), Logoff, Ping, Filter (``Operation: Add``),
CoreShowChannels (the ARI simulator's channels, as an event list). As Asterisk, a session
gets an event only when its ``Events:`` mask holds every class the event is in and its
filters let it through (any whitelist filter must match, no ``!`` one may). Device
registration helpers emit what a PJSIP phone's REGISTER / unREGISTER produces
(DeviceStateChange, PeerStatus, ContactStatus) and flip the endpoint's state in the linked
:class:`AriSimulator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass, field

from appserver.devkit.sim.ari.server import AriSimulator

log = logging.getLogger(__name__)

GREETING = "Asterisk Call Manager/11.0.0\r\n"
Fields = list[tuple[str, str]]


def frame(fields: Fields) -> bytes:
    return ("".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n").encode()


EVENT_CLASSES = ("system", "call", "log", "verbose", "command", "agent", "user", "config",
                 "dtmf", "reporting", "cdr", "dialplan", "originate", "agi", "cc", "aoc",
                 "test", "security", "message")
# POSIX bracket classes (Asterisk's filters are regcomp() extended regexes) in Python's re.
_POSIX_CLASSES = {"[:space:]": r"\s", "[:digit:]": r"\d", "[:alpha:]": "a-zA-Z",
                  "[:alnum:]": "a-zA-Z0-9", "[:upper:]": "A-Z", "[:lower:]": "a-z"}


def event_mask(value: str) -> frozenset[str]:
    """The classes a Login's ``Events:`` asks for (Asterisk's ``strings_to_mask``)."""
    value = value.strip().lower()
    if value in ("", "on", "yes", "true"):
        return frozenset(EVENT_CLASSES)
    if value in ("off", "no", "false"):
        return frozenset()
    return frozenset(part.strip() for part in value.split(",")) & frozenset(EVENT_CLASSES)


@dataclass
class _Client:
    writer: asyncio.StreamWriter
    authenticated: bool = False
    classes: frozenset[str] = frozenset(EVENT_CLASSES)
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    refused: list[re.Pattern[str]] = field(default_factory=list)

    def wants(self, privilege: str, text: str) -> bool:
        if not self.authenticated or not set(privilege.split(",")) - {"all"} <= self.classes:
            return False
        if self.allowed and not any(p.search(text) for p in self.allowed):
            return False
        return not any(p.search(text) for p in self.refused)


class AmiSimulator:
    def __init__(
        self,
        ari: AriSimulator | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "callyard",
        secret: str = "callyard",
    ) -> None:
        self.ari = ari
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.clients: list[_Client] = []
        self.actions: list[str] = []  # every action received, for tests
        self._server: asyncio.Server | None = None
        self._started = time.time()

    @property
    def address(self) -> str:
        """The value for ``CALLYARD_ASTERISK_AMI``."""
        return f"{self.host}:{self.port}:{self.username}:{self.secret}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for client in list(self.clients):
            client.writer.close()
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> AmiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ events

    def emit(self, event: str, privilege: str, fields: Fields) -> None:
        data = frame([("Event", event), ("Privilege", privilege), *fields])
        text = data.decode()
        for client in self.clients:
            if client.wants(privilege, text):
                client.writer.write(data)

    def register_device(self, resource: str, contact: str = "") -> None:
        """A PJSIP phone registered (e.g. an agent's desk phone)."""
        self._set_endpoint(resource, "online")
        uri = contact or f"sip:{resource}@127.0.0.1:5071"
        self.emit("DeviceStateChange", "call,all",
                  [("Device", f"PJSIP/{resource}"), ("State", "NOT_INUSE")])
        self.emit("PeerStatus", "system,all", [("ChannelType", "PJSIP"),
                                              ("Peer", f"PJSIP/{resource}"),
                                              ("PeerStatus", "Reachable")])
        self.emit("ContactStatus", "system,all", [
            ("URI", uri), ("ContactStatus", "NonQualified"), ("AOR", resource),
            ("EndpointName", resource), ("RoundtripUsec", "0")])

    def unregister_device(self, resource: str, contact: str = "") -> None:
        self._set_endpoint(resource, "offline")
        uri = contact or f"sip:{resource}@127.0.0.1:5071"
        self.emit("DeviceStateChange", "call,all",
                  [("Device", f"PJSIP/{resource}"), ("State", "UNAVAILABLE")])
        self.emit("PeerStatus", "system,all", [("ChannelType", "PJSIP"),
                                              ("Peer", f"PJSIP/{resource}"),
                                              ("PeerStatus", "Unreachable")])
        self.emit("ContactStatus", "system,all", [
            ("URI", uri), ("ContactStatus", "Removed"), ("AOR", resource),
            ("EndpointName", resource), ("RoundtripUsec", "0")])

    def device_state(self, device: str, state: str) -> None:
        self.emit("DeviceStateChange", "call,all", [("Device", device), ("State", state)])

    def _set_endpoint(self, resource: str, state: str) -> None:
        if self.ari is None:
            return
        endpoint = self.ari.endpoints.get(f"PJSIP/{resource}")
        if endpoint is not None:
            endpoint.state = "online" if state == "online" else "offline"

    # ------------------------------------------------------------------ connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        self.clients.append(client)
        writer.write(GREETING.encode())
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                fields: dict[str, str] = {}
                for line in raw.decode(errors="replace").split("\r\n"):
                    key, sep, value = line.partition(":")
                    if sep:
                        fields[key.strip().lower()] = value.strip()
                if not await self._action(client, fields):
                    return
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            self.clients.remove(client)
            with contextlib.suppress(Exception):
                writer.close()

    async def _action(self, client: _Client, fields: dict[str, str]) -> bool:
        """Answer one action; False closes the connection."""
        action = fields.get("action", "")
        self.actions.append(action)
        aid = [("ActionID", fields["actionid"])] if "actionid" in fields else []
        write = client.writer.write
        name = action.lower()
        if not action:
            write(frame([("Response", "Error"), *aid, ("Message", "Missing action in request")]))
            return True
        if name == "login":
            if (fields.get("username"), fields.get("secret")) != (self.username, self.secret):
                write(frame([("Response", "Error"), *aid,
                             ("Message", "Authentication failed")]))
                return False
            client.authenticated = True
            client.classes = event_mask(fields.get("events", "on"))
            write(frame([("Response", "Success"), *aid,
                         ("Message", "Authentication accepted")]))
            if "system" in client.classes:
                uptime = str(int(time.time() - self._started))
                write(frame([("Event", "FullyBooted"), ("Privilege", "system,all"),
                             ("Uptime", uptime), ("LastReload", uptime),
                             ("Status", "Fully Booted")]))
            return True
        if not client.authenticated:
            write(frame([("Response", "Error"), *aid, ("Message", "Permission denied")]))
            return True
        if name == "logoff":
            write(frame([("Response", "Goodbye"), *aid, ("Message", "Thanks for all the fish.")]))
            await client.writer.drain()
            return False
        if name == "ping":
            write(frame([("Response", "Success"), *aid, ("Ping", "Pong"),
                         ("Timestamp", f"{time.time():.6f}")]))
            return True
        if name == "filter":
            status, message = self._filter(client, fields)
            write(frame([("Response", status), *aid, ("Message", message)]))
            return True
        if name == "coreshowchannels":
            self._core_show_channels(client, aid)
            return True
        write(frame([("Response", "Error"), *aid, ("Message", "Invalid/unknown command")]))
        return True

    @staticmethod
    def _filter(client: _Client, fields: dict[str, str]) -> tuple[str, str]:
        """``Action: Filter``, as Asterisk answers it: the response and its message."""
        if fields.get("operation", "").lower() != "add":
            return "Error", "Unknown operation"
        text = fields.get("filter", "")
        refuse = text.startswith("!")
        pattern = text[1:] if refuse else text
        for posix, python in _POSIX_CLASSES.items():
            pattern = pattern.replace(posix, python)
        try:
            compiled = re.compile(pattern)
        except re.error:
            return "Error", "Filter did not compile.  Check the syntax of the filter given."
        (client.refused if refuse else client.allowed).append(compiled)
        return "Success", "Success"

    def _core_show_channels(self, client: _Client, aid: Fields) -> None:
        write = client.writer.write
        write(frame([("Response", "Success"), *aid, ("EventList", "start"),
                     ("Message", "Channels will follow")]))
        channels = list(self.ari.channels.values()) if self.ari else []
        for chan in channels:
            seconds = int(time.time() - chan.created)
            write(frame([
                ("Event", "CoreShowChannel"), *aid,
                ("Channel", chan.name),
                ("ChannelState", "6" if chan.state == "Up" else "4"),
                ("ChannelStateDesc", chan.state),
                ("CallerIDNum", chan.caller_number or "<unknown>"),
                ("CallerIDName", chan.caller_name or "<unknown>"),
                ("ConnectedLineNum", chan.connected_number or "<unknown>"),
                ("ConnectedLineName", chan.connected_name or "<unknown>"),
                ("Language", chan.language),
                ("AccountCode", ""),
                ("Context", chan.context),
                ("Exten", chan.exten),
                ("Priority", str(chan.priority)),
                ("Uniqueid", chan.id),
                ("Linkedid", chan.id),
                ("Application", chan.app_name),
                ("ApplicationData", chan.app_data),
                ("Duration", time.strftime("%H:%M:%S", time.gmtime(seconds))),
                ("BridgeId", chan.bridge_id or ""),
            ]))
        write(frame([("Event", "CoreShowChannelsComplete"), *aid, ("EventList", "Complete"),
                     ("ListItems", str(len(channels)))]))
