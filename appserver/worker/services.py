"""What a worker runs beside its calls, opened in one place from the settings.

``callyard freeswitch`` (gevent) and ``callyard asterisk`` (asyncio) each open one
:class:`WorkerServices` on their shell (:mod:`appserver.shells`):

* one Redis client (``CALLYARD_REDIS_URL``) for everything below;
* the menu-set reader behind the IVR app (:class:`appserver.apps.MenuFlows`), asked after the
  apps of ``--flow-factory`` and ``CALLYARD_APPS``;
* the queue runtime (:class:`appserver.queues.runtime.QueueRuntime`);
* the CDR sink and the worker's CDRs (:class:`appserver.cdr.flow.CdrCalls`);
* the health server (``CALLYARD_HEALTH_LISTEN`` or ``--health-listen``): ``/readyz`` checks
  Redis, the engine links and whether a menu set is loaded (a warning only);
* :attr:`WorkerServices.flows`: each call's flow (:mod:`appserver.worker.pipeline`).

A command uses it in four calls (under gevent through :func:`appserver.shells.green.run`)::

    services = WorkerServices(settings, redis_url, aio, engine="asterisk", apps=apps)
    worker = AsteriskWorker(nodes, services.flows, redis=services.redis, ...)
    await services.start(worker.deliver, worker.links, engine_checks)
    ...                                                 # SIGTERM
    await services.drain(lambda: worker.active_calls)   # the calls get the grace period
    ...                                                 # the engine's own ending
    await services.close()                              # flushes the CDRs

Draining says "stopping" on ``/readyz`` (load balancers stop sending calls) and gives the calls
in progress ``CALLYARD_SHUTDOWN_GRACE`` seconds; what becomes of a call still up after that is
the engine's business (the FreeSWITCH worker records it as failed, the Asterisk worker leaves
it in Stasis for re-adoption).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from appserver.apps import AppRouter, MenuFlows
from appserver.cdr.flow import CdrCalls
from appserver.cdr.sink import CdrSink
from appserver.health import HealthServer, storage_checks
from appserver.menus.readers import MenuSetReader
from appserver.metrics import ENGINE_CONNECTED, CallMetrics
from appserver.queues.flow import callback_app
from appserver.queues.runtime import Deliver, QueueRuntime
from appserver.shells import Shell, close
from appserver.worker.pipeline import worker_pipeline

if TYPE_CHECKING:
    from appserver.apps import FlowFactory
    from appserver.settings import Settings

log = logging.getLogger("callyard.worker")


class EngineLink(Protocol):
    """A worker's connection to one engine node (FreeSWITCH inbound ESL, Asterisk ARI)."""

    connected: Any  # an event: is_set() while the link is up

    @property
    def name(self) -> str: ...


class WorkerServices:
    def __init__(self, settings: Settings, redis_url: str, shell: Shell, *, engine: str,
                 apps: Sequence[FlowFactory], health_listen: str | None = None) -> None:
        self.settings = settings
        self.shell = shell
        self.engine = engine
        self.redis = shell.redis(redis_url)
        self.reader = MenuSetReader(self.redis, trials=settings.menu_trials)
        self.menus = MenuFlows(self.reader)
        self.sink = CdrSink(self.redis, maxlen=settings.cdr_stream_maxlen)
        self.cdrs = CdrCalls(self.sink, observer=CallMetrics())
        self.queues = QueueRuntime(self.redis, f"{engine}-{socket.gethostname()}-{os.getpid()}",
                                   callback_grace_seconds=settings.callback_affinity_grace)
        self.flows = worker_pipeline(AppRouter([callback_app, *apps, self.menus]), cdrs=self.cdrs,
                                     queues=self.queues,
                                     livekit_sip_uri=settings.livekit_sip_uri)
        listen = health_listen or settings.health_listen
        self.health = HealthServer(listen, self.readiness, shell) if listen else None
        self._engine_checks: Callable[[], dict[str, str]] = dict

    async def start(self, deliver: Deliver, links: Iterable[EngineLink],
                    engine_checks: Callable[[], dict[str, str]]) -> None:
        """Serve beside the worker: queue events go to ``deliver``; ``links`` feed the
        ``callyard_engine_connected`` metric; ``engine_checks`` add to ``/readyz``."""
        for link in links:
            ENGINE_CONNECTED.labels(self.engine, link.name).set_function(link.connected.is_set)
        self._engine_checks = engine_checks
        await self.reader.start()
        self.sink.start()
        await self.queues.start(deliver)
        if self.health is not None:
            await self.health.start()

    async def readiness(self) -> dict[str, str]:
        checks = await storage_checks(redis=self.redis)
        checks.update(self._engine_checks())
        checks["menus"] = self.menus.readiness()
        return checks

    async def drain(self, calls_in_progress: Callable[[], int]) -> None:
        """Shutdown: not ready any more; wait up to the grace period for the calls to end."""
        if self.health is not None:
            self.health.stopping = True
        grace = self.settings.shutdown_grace
        log.info("stopping: %d call(s) in progress, up to %.0fs to finish",
                 calls_in_progress(), grace)
        deadline = time.monotonic() + grace
        while calls_in_progress() and time.monotonic() < deadline:
            await self.shell.sleep(0.1)

    async def close(self) -> None:
        """Stop everything started, flushing the CDRs still buffered."""
        await self.queues.stop()
        await self.sink.stop(10.0)
        if self.health is not None:
            await self.health.stop()
        await self.reader.stop()
        await close(self.redis)
