"""The FreeSWITCH worker: greenswitch's OutboundESLServer running one CallFlow per call.

Must run under gevent (``gevent.monkey.patch_all()`` first, as ``callyard freeswitch``
does). Construct it with a flow factory and serve::

    from appserver.apps import load_app
    from appserver.freeswitch.worker import FreeswitchWorker
    worker = FreeswitchWorker(("127.0.0.1", 8084), load_app("tests.flows:factory"))
    worker.serve_forever()          # or worker.start() for a background greenlet

``flow_factory(call_info)`` returns a CallFlow, or None when nothing serves that number
(the caller then hears a polite message and is hung up). Other components reach a call
with :meth:`FreeswitchWorker.deliver` (e.g. the queue runtime's ``QueueResult``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections import deque
from typing import Any

import gevent
import gevent.event
import gevent.socket
from greenswitch.esl import NotConnectedError, OutboundESLServer, OutboundSessionHasGoneAway

from appserver.apps import FlowFactory
from appserver.freeswitch.driver import CallDriver, DriverConfig, QueueRuntime, call_info_from
from appserver.freeswitch.session import CallSession
from ivr import calls as c

log = logging.getLogger("callyard.freeswitch")



class _Server(OutboundESLServer):
    """OutboundESLServer with a blocking cooperative accept (greenswitch polls every
    100 ms) and an accept path that survives callers who hang up during ``connect``
    (greenswitch #57: NotConnectedError escaped). Every open socket counts against
    ``max_calls``, calls and handshakes alike: a refused one is closed at once, and
    FreeSWITCH's dialplan goes on to the next worker or its fallback."""

    def __init__(self, worker: FreeswitchWorker, host: str, port: int, max_calls: int) -> None:
        super().__init__(host, port, application=object, max_connections=max_calls)
        self.worker = worker
        self.ready = gevent.event.Event()

    def listen(self) -> None:
        self.server = gevent.socket.socket()
        self.server.setsockopt(gevent.socket.SOL_SOCKET, gevent.socket.SO_REUSEADDR, 1)
        self.server.bind((self.bind_address, self.bind_port[0]))
        self.bound_port = self.server.getsockname()[1]
        self.server.listen(1024)
        self._running = True
        self.ready.set()
        log.info("FreeSWITCH worker listening on %s:%s", self.bind_address, self.bound_port)
        while self._running:
            try:
                sock, address = self.server.accept()
            except OSError as exc:
                if not self._running or exc.errno in (errno.EBADF, errno.EINVAL):
                    break
                log.warning("accept failed: %s", exc)
                gevent.sleep(0.05)
                continue
            if len(self._greenlets) >= self.max_connections:
                log.warning("refusing a connection from %s:%s: %d connections open "
                            "(CALLYARD_FREESWITCH_MAX_CALLS)", *address[:2], len(self._greenlets))
                sock.close()
                continue
            sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
            greenlet = gevent.spawn(self.worker.handle_connection, sock, address)
            self._greenlets.add(greenlet)
            greenlet.link(self._greenlets.discard)

    def stop(self) -> None:
        self._running = False
        if self.server is not None:
            with contextlib.suppress(OSError):
                self.server.close()


class FreeswitchWorker:
    def __init__(
        self,
        listen: tuple[str, int],
        flow_factory: FlowFactory,
        config: DriverConfig | None = None,
        queue_runtime: QueueRuntime | None = None,
        max_calls: int = 20000,
        connect_timeout: float = 5.0,
    ) -> None:
        self.flow_factory = flow_factory
        self.config = config or DriverConfig()
        self.queue_runtime = queue_runtime
        self.calls: dict[str, CallDriver] = {}
        self._sessions: dict[str, CallSession] = {}  # the socket of each call in self.calls
        self.calls_total = 0
        self.calls_failed = 0
        self.dtmf_latencies: deque[float] = deque(maxlen=100_000)
        self.max_calls = max_calls
        self.connect_timeout = connect_timeout
        self._server = _Server(self, listen[0], listen[1], max_calls)

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return int(self._server.bound_port or 0)

    def serve_forever(self) -> None:
        self._server.listen()

    def start(self) -> gevent.Greenlet:
        greenlet = gevent.spawn(self.serve_forever)
        self._server.ready.wait(5)
        return greenlet

    def stop(self) -> None:
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

    def handle_connection(self, sock: Any, address: tuple[str, int]) -> None:
        session = CallSession(address, sock)
        closed = gevent.event.Event()
        session.close_callback = lambda reason: closed.set()
        driver: CallDriver | None = None
        try:
            try:
                data = session.send("connect", timeout=self.connect_timeout).headers
            except (OutboundSessionHasGoneAway, NotConnectedError, OSError):
                log.info("caller left before connect completed (%s:%s)", *address)
                return
            except gevent.Timeout:
                log.warning("no reply to connect within %.1fs from %s:%s; closing",
                            self.connect_timeout, *address)
                return
            info = call_info_from(data, data.get("FreeSWITCH-Hostname", address[0]))
            session.log_context["call_id"] = info.call_id
            live = self._sessions.get(info.call_id)
            if live is not None and live.controls_call:
                log.warning("refusing a second socket for live call %s from %s:%s",
                            info.call_id, *address, extra=session.log_context)
                return
            driver = CallDriver(
                info,
                session.send_nowait,
                self.config,
                self.queue_runtime,
                context=data.get("Caller-Context", "default"),
                latency_sink=self.dtmf_latencies.append,
            )
            session.event_callback = driver.on_event
            self.calls[info.call_id] = driver
            self._sessions[info.call_id] = session
            self.calls_total += 1
            driver.start(self._flow_for(info))
            closed.wait()
            driver.on_socket_closed()
        except Exception:
            self.calls_failed += 1
            call_id = driver.info.call_id if driver else ""
            log.exception("call failed", extra={"call_id": call_id})
        finally:
            if driver is not None:
                if self.calls.get(driver.info.call_id) is driver:  # not yet a newer socket's
                    del self.calls[driver.info.call_id]
                    del self._sessions[driver.info.call_id]
                driver.flow = None  # the call is over: free its flows now (no late events)
            session.close()
            session.release()

    def _flow_for(self, info: c.CallInfo) -> c.CallFlow | None:
        try:
            return self.flow_factory(info)
        except Exception:
            log.exception("flow factory failed", extra={"call_id": info.call_id})
            return None
