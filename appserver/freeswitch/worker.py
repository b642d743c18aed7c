"""The FreeSWITCH worker: an outbound ESL server running one CallFlow per call.

Must run under gevent (``gevent.monkey.patch_all()`` first, as ``callyard freeswitch``
does). Construct it with a flow factory and serve::

    from appserver.apps import load_app
    from appserver.freeswitch.worker import FreeswitchWorker
    worker = FreeswitchWorker(("127.0.0.1", 8084), load_app("tests.flows:factory"))
    worker.serve_forever()          # or worker.start() to accept calls in the background

``flow_factory(call_info)`` returns a CallFlow, or None when nothing serves that number
(the caller then hears a polite message and is hung up). Other components reach a call
with :meth:`FreeswitchWorker.deliver` (e.g. the queue runtime's ``QueueResult``).

Each socket FreeSWITCH opens (gevent's StreamServer accepts it) gets a greenlet: it sends
``connect``, reads the channel data, then a :class:`~appserver.freeswitch.driver.CallDriver`
runs the call on the socket's :class:`~appserver.freeswitch.connection.CallConnection`.
``take_over(call_info)``, if given, sees each call first (the queue runtime takes over a
caller who was queued on a worker that died).
Every open socket counts against ``max_calls``, calls and handshakes alike: one beyond it
is closed at once, and FreeSWITCH's dialplan goes on to the next worker or its fallback.

With ingress ``park`` (:mod:`appserver.freeswitch.parked`) calls come instead from the
worker's node connections: :meth:`FreeswitchWorker.start_call` runs a flow on a parked call,
:meth:`FreeswitchWorker.end_call` ends it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable

import gevent
import gevent.socket
from gevent.server import StreamServer

from appserver.apps import FlowFactory
from appserver.freeswitch.connection import CallConnection
from appserver.freeswitch.driver import CallDriver, DriverConfig, QueueRuntime, call_info_from
from ivr import calls as c

log = logging.getLogger("callyard.freeswitch")
# Called with each new call before its flow is built: a call another worker served (it died,
# and the dialplan went on to this worker's socket) may be taken over where it was.
TakeOver = Callable[[c.CallInfo], object]
# Called with each call the worker is handed (its record: see callrecords.py), and with each
# call's id once it ended here.
CallStarted = Callable[[c.CallInfo], object]
CallEnded = Callable[[str], object]


class FreeswitchWorker:
    def __init__(
        self,
        listen: tuple[str, int],
        flow_factory: FlowFactory,
        config: DriverConfig | None = None,
        queue_runtime: QueueRuntime | None = None,
        max_calls: int = 20000,
        connect_timeout: float = 5.0,
        take_over: TakeOver | None = None,
        call_started: CallStarted | None = None,
        call_ended: CallEnded | None = None,
    ) -> None:
        self.flow_factory = flow_factory
        self.take_over = take_over
        self.call_started = call_started
        self.call_ended = call_ended
        self.config = config or DriverConfig()
        self.queue_runtime = queue_runtime
        self.calls: dict[str, CallDriver] = {}
        self._connections: dict[str, CallConnection] = {}  # the socket of each call in calls
        self.calls_total = 0
        self.calls_failed = 0
        self.dtmf_latencies: deque[float] = deque(maxlen=100_000)
        self.max_calls = max_calls
        self.connect_timeout = connect_timeout
        self.port = 0  # the port listened on, once started
        self._open_sockets = 0  # calls and handshakes
        self._server = StreamServer(listen, self._accept, backlog=1024)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Listen (``OSError`` if the address is taken) and accept calls in the background."""
        self._server.start()
        self.port = self._server.server_port
        log.info("FreeSWITCH worker listening on %s:%s", self._server.server_host, self.port)

    def serve_forever(self) -> None:
        self.start()
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop accepting (calls in progress go on)."""
        self._server.stop()

    def stats(self) -> dict[str, float]:
        """Counters and the DTMF -> next command latency (ms) over recent digits."""
        lat = sorted(self.dtmf_latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(len(lat) * p))] * 1000, 3) if lat else 0.0

        return {
            "calls_in_progress": len(self.calls),
            "calls_total": self.calls_total,
            "calls_failed": self.calls_failed,
            "dtmf_latency_p50_ms": pct(0.5),
            "dtmf_latency_p99_ms": pct(0.99),
            "dtmf_latency_max_ms": pct(1.0),
            "dtmf_samples": len(lat),
        }

    # ------------------------------------------------------------ external events

    def deliver(self, call_id: str, event: c.Event) -> bool:
        """Deliver ``event`` to the call's flow; False if the call is not here (any more).

        Call from a greenlet of this worker's hub (not from another OS thread)."""
        driver = self.calls.get(call_id)
        if driver is None:
            return False
        driver.deliver(event)
        return True

    # ------------------------------------------------------------ one call

    def _accept(self, sock: gevent.socket.socket, address: tuple[str, int]) -> None:
        if self._open_sockets >= self.max_calls:
            log.warning("refusing a connection from %s:%s: %d connections open "
                        "(CALLYARD_FREESWITCH_MAX_CALLS)", *address[:2], self._open_sockets)
            return  # StreamServer closes the socket
        self._open_sockets += 1
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
            self.handle_connection(sock, address)
        finally:
            self._open_sockets -= 1

    def handle_connection(self, sock: gevent.socket.socket, address: tuple[str, int]) -> None:
        conn = CallConnection(sock)
        conn.start()
        driver: CallDriver | None = None
        try:
            try:
                data = conn.send("connect", timeout=self.connect_timeout).headers
            except OSError:
                log.info("caller left before connect completed (%s:%s)", *address)
                return
            except gevent.Timeout:
                log.warning("no reply to connect within %.1fs from %s:%s; closing",
                            self.connect_timeout, *address)
                return
            info = call_info_from(data, data.get("FreeSWITCH-Hostname", address[0]))
            conn.log_context["call_id"] = info.call_id
            live = self._connections.get(info.call_id)
            if live is not None and live.controls_call:
                log.warning("refusing a second socket for live call %s from %s:%s",
                            info.call_id, *address, extra=conn.log_context)
                return
            driver = self._driver(info, conn.send_nowait, data.get("Caller-Context", "default"))
            conn.event_callback = driver.on_event
            self._connections[info.call_id] = conn
            self._start(driver)
            conn.closed.wait()
            driver.on_socket_closed()
        except Exception:
            self.calls_failed += 1
            call_id = driver.info.call_id if driver else ""
            log.exception("call failed", extra={"call_id": call_id})
        finally:
            if driver is not None:
                self._end(driver)
            conn.close()
            conn.release()

    # ------------------------------------------------------------ a parked call (parked.py)

    def start_call(self, info: c.CallInfo, write: Callable[[list[bytes]], object],
                   context: str, address: str, claimed: bool = False) -> CallDriver | None:
        """Run a flow on a call driven over a shared connection (``address``: its uuid;
        ``claimed``: its record is this worker's already)."""
        if info.call_id in self.calls:
            return None
        driver = self._driver(info, write, context, address)
        try:
            self._start(driver, claimed)
        except Exception:
            self.calls_failed += 1
            log.exception("call failed", extra={"call_id": info.call_id})
        return driver

    def end_call(self, call_id: str, lost: bool = False) -> None:
        """The call left this worker: hung up, transferred out of the park, or (``lost``)
        its connection went away while it goes on in the engine."""
        driver = self.calls.get(call_id)
        if driver is None:
            return
        if not lost:
            driver.on_socket_closed()
        self._end(driver, ended=not lost)

    # ------------------------------------------------------------ both kinds of call

    def _driver(self, info: c.CallInfo, write: Callable[[list[bytes]], object], context: str,
                address: str = "") -> CallDriver:
        return CallDriver(info, write, self.config, self.queue_runtime, context=context,
                          latency_sink=self.dtmf_latencies.append, address=address)

    def _start(self, driver: CallDriver, claimed: bool = False) -> None:
        """Take the call in (counted), tell the callbacks (``claimed``: not call_started) and
        start its flow. Raises what they raise; the call stays in ``calls`` then."""
        info = driver.info
        self.calls[info.call_id] = driver
        self.calls_total += 1
        if self.call_started is not None and not claimed:
            self.call_started(info)
        if self.take_over is not None:
            self.take_over(info)
        driver.start(self._flow_for(info))

    def _end(self, driver: CallDriver, ended: bool = True) -> None:
        """Let the call go (with call_ended if it ``ended`` here) unless it is a newer
        socket's now, and free its flows (no late events)."""
        call_id = driver.info.call_id
        if self.calls.get(call_id) is driver:
            del self.calls[call_id]
            self._connections.pop(call_id, None)
            if ended and self.call_ended is not None:
                self.call_ended(call_id)
        driver.flow = None

    def _flow_for(self, info: c.CallInfo) -> c.CallFlow | None:
        try:
            return self.flow_factory(info)
        except Exception:
            log.exception("flow factory failed", extra={"call_id": info.call_id})
            return None
