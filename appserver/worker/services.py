"""CDRs, health server and graceful stop for the gevent FreeSWITCH worker.

``callyard freeswitch`` uses it in three calls::

    ops = WorkerOps(settings, redis_url, health_listen)
    ops.cdrs                                # the CDR layer of every call's flow
    ops.start(worker, nodes)                # CDR sink greenlet, /healthz /readyz /metrics
    ...                                     # SIGTERM
    ops.drain(worker)                       # stop accepting, let calls finish, flush CDRs

Draining closes the outbound listening socket first, so FreeSWITCH's ``socket``
application fails for new calls and the dialplan's fallback runs; calls in progress get
``CALLYARD_SHUTDOWN_GRACE`` seconds. A call still up after that is recorded as ``failed``
with cause ``WORKER_SHUTDOWN`` (its socket closes when the process exits).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from appserver.cdr.flow import CdrCalls
from appserver.metrics import ENGINE_CONNECTED, CallMetrics

if TYPE_CHECKING:
    from appserver.apps import MenuFlows
    from appserver.settings import Settings

log = logging.getLogger("callyard.freeswitch")


class WorkerOps:
    def __init__(self, settings: Settings, redis_url: str, health_listen: str | None = None,
                 menus: MenuFlows | None = None) -> None:
        self.grace = settings.shutdown_grace
        self.menus = menus
        self._worker: Any = None
        self._nodes: Any = None
        import redis

        from appserver.cdr.sink import CdrSink

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.sink = CdrSink(self.redis, maxlen=settings.cdr_stream_maxlen)
        self.cdrs = CdrCalls(self.sink, observer=CallMetrics())
        self.health: Any = None
        listen = health_listen or settings.health_listen
        if listen:
            from appserver.health import HealthServer
            from appserver.shells import green

            self.health = HealthServer(listen, self.checks, green)

    def start(self, worker: Any, nodes: Any) -> None:
        self._worker, self._nodes = worker, nodes
        for link in nodes.links.values():
            ENGINE_CONNECTED.labels("freeswitch", link.name).set_function(link.connected.is_set)
        self.sink.start()
        if self.health is not None:
            from appserver.shells.green import run

            run(self.health.start())

    async def checks(self) -> dict[str, str]:
        """Readiness: Redis (when configured), the listening socket, the inbound links;
        whether a menu set is loaded (a warning only)."""
        checks: dict[str, str] = {}
        try:
            self.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:  # not ready; say why
            checks["redis"] = f"error: {type(exc).__name__}: {exc}"
        worker, nodes = self._worker, self._nodes
        checks["listening"] = "ok" if worker is not None and worker.port else "error: not yet"
        links = list(nodes.links.values()) if nodes is not None else []
        if links and not any(link.connected.is_set() for link in links):
            checks["freeswitch"] = "error: no FreeSWITCH node connected over inbound ESL"
        else:
            checks["freeswitch"] = "ok"
        if self.menus is not None:
            checks["menus"] = self.menus.readiness()
        return checks

    def drain(self, worker: Any) -> None:
        """Stop taking calls, give those in progress the grace period, flush CDRs."""
        import gevent

        from appserver.shells.green import run

        if self.health is not None:
            self.health.stopping = True
        worker.stop()  # closes the listening socket: new calls take the dialplan fallback
        log.info("stopping: %d call(s) in progress, up to %.0fs to finish",
                 len(worker.calls), self.grace)
        deadline = time.monotonic() + self.grace
        while worker.calls and time.monotonic() < deadline:
            gevent.sleep(0.1)
        left = self.cdrs.abandon_all("WORKER_SHUTDOWN")
        if left:
            log.warning("grace period over: %d call(s) recorded as failed", left)
        run(self.sink.stop(10.0))
        if self.health is not None:
            run(self.health.stop())
