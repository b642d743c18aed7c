"""Inbound ESL to every FreeSWITCH node in ``CALLYARD_FREESWITCH_ESL``.

Each node gets one :class:`NodeLink`: a greenlet that connects, authenticates, subscribes
to the events asked for, and reconnects with exponential backoff (0.5 s doubling to 30 s)
when the node goes away. A lost node is logged and reported by :meth:`NodeManager.status`;
it never stops the worker. Commands (``originate``, ``uuid_transfer``, ``uuid_bridge``,
``uuid_broadcast`` or any ``api``/``bgapi``) raise :class:`NodeUnavailable` while the node
is down.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from collections.abc import Callable

import gevent
import gevent.event

from appserver.freeswitch import esl_codec as codec
from appserver.freeswitch.connection import NodeConnection
from appserver.settings import EslNode

log = logging.getLogger("callyard.freeswitch.nodes")

NodeEventHandler = Callable[[str, codec.LazyEvent], None]
# api commands sent in one write by api_many. FreeSWITCH runs a connection's api commands one
# by one in its listener thread, which sends the connection's events only while no command
# waits to be read (mod_event_socket's read_packet): a long batch would hold up the link's
# other commands (a callback's originate, a sweep's listing) and their BACKGROUND_JOB events
API_BATCH = 100


class NodeUnavailable(RuntimeError):
    """The FreeSWITCH node is not connected right now."""


class NodeLink:
    def __init__(
        self,
        node: EslNode,
        events: tuple[str, ...] = ("BACKGROUND_JOB",),
        on_event: NodeEventHandler | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.node = node
        self.events = events
        self.on_event = on_event
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.conn: NodeConnection | None = None
        # The node's name as its calls report it (FreeSWITCH-Hostname), learnt on connecting.
        self.hostname = ""
        self.connected = gevent.event.Event()
        self.last_error = ""
        self.connects = 0
        self.down_since: float | None = time.monotonic()
        self._jobs: dict[str, gevent.event.AsyncResult] = {}
        self._greenlet: gevent.Greenlet | None = None
        self._running = False

    @property
    def name(self) -> str:
        return self.node.name

    def start(self) -> None:
        self._running = True
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        self._running = False
        if self.conn is not None:
            self.conn.close()
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        backoff = self.min_backoff
        while self._running:
            try:
                conn = NodeConnection.open(self.node.host, self.node.port, self.node.password,
                                           on_event=self._event)
                if self.events:
                    conn.send(f"event plain {' '.join(self.events)}")
                self.hostname = self._hostname(conn)
            except OSError as exc:  # NotConnectedError included
                self.last_error = str(exc) or type(exc).__name__
                log.warning(
                    "FreeSWITCH node %s unreachable: %s; retry in %.1fs",
                    self.name, self.last_error, backoff,
                )  # fmt: skip
                gevent.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.conn = conn
            self.connects += 1
            self.down_since = None
            self.connected.set()
            backoff = self.min_backoff
            log.info("FreeSWITCH node %s connected", self.name)
            conn.closed.wait()
            self.connected.clear()
            self.conn = None
            self.down_since = time.monotonic()
            self._fail_jobs()
            if self._running:
                self.last_error = "connection lost"
                log.warning("FreeSWITCH node %s lost; reconnecting", self.name)

    def _hostname(self, conn: NodeConnection) -> str:
        """``api hostname``: the node's host name, which its outbound sockets report as
        ``FreeSWITCH-Hostname`` (``CallInfo.node``); the configured address if it will not
        say."""
        reply = str(conn.send("api hostname").data).strip()
        if reply and not reply.startswith("-ERR"):
            return reply
        log.warning("FreeSWITCH node %s did not tell its host name (%s): its callbacks are "
                    "matched by its address", self.name, reply[:80])
        return self.name

    def _fail_jobs(self) -> None:
        jobs, self._jobs = self._jobs, {}
        for result in jobs.values():
            result.set_exception(NodeUnavailable(f"{self.name} disconnected"))

    def _event(self, event: codec.LazyEvent) -> None:
        if event.name == "BACKGROUND_JOB":
            result = self._jobs.pop(event.get("Job-UUID"), None)
            if result is not None:
                result.set(event.body)
        if self.on_event is not None:
            try:
                self.on_event(self.name, event)
            except Exception:
                log.exception("node event handler failed")

    # ------------------------------------------------------------ commands

    def _conn(self) -> NodeConnection:
        conn = self.conn
        if conn is None or not conn.connected:
            raise NodeUnavailable(f"FreeSWITCH node {self.name} is not connected")
        return conn

    def api(self, command: str) -> str:
        try:
            return str(self._conn().send(f"api {command}").data)
        except OSError as exc:
            raise NodeUnavailable(f"{self.name}: {exc or type(exc).__name__}") from None

    def api_many(self, commands: list[str]) -> list[str]:
        """``api`` each of ``commands``, a round trip per :data:`API_BATCH` of them (not per
        command); their results in order."""
        results: list[str] = []
        try:
            for at in range(0, len(commands), API_BATCH):
                chunk = commands[at:at + API_BATCH]
                replies = self._conn().send_many([f"api {command}" for command in chunk])
                results += [str(reply.data) for reply in replies]
        except OSError as exc:
            raise NodeUnavailable(f"{self.name}: {exc or type(exc).__name__}") from None
        return results

    def bgapi(self, command: str, timeout: float = 30.0) -> str:
        """Run ``command`` in the background and return its result text (the job body).

        The Job-UUID is ours (sent as a header, which FreeSWITCH honours), so the job is
        registered before the command leaves: a BACKGROUND_JOB that arrives right behind
        the reply cannot be missed.
        """
        job = str(uuidlib.uuid4())
        result = gevent.event.AsyncResult()
        self._jobs[job] = result
        try:
            reply = self._conn().send(f"bgapi {command}\nJob-UUID: {job}")
        except (OSError, NodeUnavailable) as exc:
            self._jobs.pop(job, None)
            raise NodeUnavailable(f"{self.name}: {exc or type(exc).__name__}") from None
        if not str(reply.data).startswith("+OK"):
            self._jobs.pop(job, None)
            raise NodeUnavailable(f"{self.name}: bgapi refused: {reply.data}")
        try:
            return str(result.get(timeout=timeout))
        except gevent.Timeout:
            raise TimeoutError(f"{self.name}: no BACKGROUND_JOB for {job}") from None
        finally:
            self._jobs.pop(job, None)

    def originate(self, dial: str, destination: str = "&park()", **variables: str) -> str:
        """Originate a call; returns the new channel's uuid (raises on ``-ERR``)."""
        prefix = "{" + ",".join(f"{k}={v}" for k, v in variables.items()) + "}" if variables else ""
        result = self.bgapi(f"originate {prefix}{dial} {destination}").strip()
        if not result.startswith("+OK"):
            raise RuntimeError(f"originate failed on {self.name}: {result}")
        return result.removeprefix("+OK").strip()

    def uuid_transfer(self, uuid: str, destination: str, context: str = "default") -> str:
        return self.api(f"uuid_transfer {uuid} {destination} XML {context}")

    def uuid_bridge(self, uuid: str, other: str) -> str:
        return self.api(f"uuid_bridge {uuid} {other}")

    def uuid_broadcast(self, uuid: str, path: str, leg: str = "aleg") -> str:
        return self.api(f"uuid_broadcast {uuid} {path} {leg}")


class NodeManager:
    """All configured nodes; the worker keeps working while any of them is down."""

    def __init__(
        self,
        nodes: list[EslNode],
        events: tuple[str, ...] = ("BACKGROUND_JOB",),
        on_event: NodeEventHandler | None = None,
    ) -> None:
        self.links = {n.name: NodeLink(n, events, on_event) for n in nodes}

    def start(self) -> None:
        for link in self.links.values():
            link.start()

    def stop(self) -> None:
        for link in self.links.values():
            link.stop()

    def link(self, name: str) -> NodeLink:
        try:
            return self.links[name]
        except KeyError:
            raise NodeUnavailable(f"unknown FreeSWITCH node {name!r}") from None

    def calls_exist(self, calls: list[tuple[str, str]]) -> list[bool | None]:
        """Is each call, a (uuid, the node it came in on), still on that node? ``None``
        when this worker cannot tell: the node is not one of its own (that node's own
        workers judge it) or did not answer. A call that names no node is asked of every
        node. Each node is asked for its calls together (``uuid_exists``, a round trip per
        :data:`API_BATCH`), not once per call."""
        there: set[int] = set()  # a node has it
        answered: set[int] = set()  # its nodes answered
        unsure: set[int] = set()  # one of its nodes did not answer
        for link in self.links.values():
            names = (link.hostname, link.name)
            mine = [i for i, (_, node) in enumerate(calls) if not node or node in names]
            if not mine:
                continue
            try:
                replies = link.api_many([f"uuid_exists {calls[i][0]}" for i in mine])
            except NodeUnavailable:
                unsure.update(mine)
                continue
            answered.update(mine)
            there.update(i for i, reply in zip(mine, replies, strict=True)
                         if reply.strip() == "true")
        return [True if i in there else None if i in unsure or i not in answered else False
                for i in range(len(calls))]

    def any_connected(self) -> NodeLink:
        for link in self.links.values():
            if link.connected.is_set():
                return link
        raise NodeUnavailable("no FreeSWITCH node is connected")

    def status(self) -> dict[str, dict[str, object]]:
        return {
            name: {
                "connected": link.connected.is_set(),
                "connects": link.connects,
                "last_error": link.last_error,
                "down_for": round(time.monotonic() - link.down_since, 1)
                if link.down_since is not None
                else 0.0,
            }
            for name, link in self.links.items()
        }
