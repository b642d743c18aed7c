"""Prometheus metrics shared by every Callyard process (``prometheus-client``).

Per process (each serves its own ``/metrics``):

* ``callyard_calls_in_progress{engine,node}``, ``callyard_calls_total{engine,node}`` and
  ``callyard_calls_ended_total{engine,disposition}`` -- from :class:`CallMetrics`, the
  :class:`~appserver.cdr.flow.CdrObserver` the workers give their CDR wrappers;
* ``callyard_ivr_step_seconds{engine}`` -- event in to commands out, inside the flow;
* ``callyard_engine_connected{engine,node}`` -- 1 while the worker's link to the node is up;
* ``callyard_menu_reload_total`` / ``callyard_menu_version`` (menu publication, API process);
* ``callyard_worker_menu_version`` -- the menu set a worker serves (0: none published yet).

From Redis through the stores, refreshed by :class:`RedisStatsPoller` (the CDR writer runs
one):
``callyard_queue_waiting``, ``callyard_queue_longest_wait_seconds``,
``callyard_queue_service_level`` (per queue), ``callyard_agents{state}``,
``callyard_cdr_backlog`` (entries not yet stored) and ``callyard_cdr_pending`` (read, not
acknowledged).

``callyard dev`` runs the workers as processes of their own: its ``/metrics`` is
:func:`combined_exposition`, this process's families and the workers' (scraped from their
health ports) merged into one exposition, every sample labelled ``process``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from appserver.queues.model import AGENT_STATES
from appserver.shells.aio import honour_cancel

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from appserver.queues.store import QueueStore
    from ivr.calls import CallInfo

log = logging.getLogger("callyard.metrics")

CALLS_IN_PROGRESS = Gauge("callyard_calls_in_progress", "Calls being served by this process.",
                          ["engine", "node"])
CALLS = Counter("callyard_calls", "Calls handed to this process.", ["engine", "node"])
CALLS_ENDED = Counter("callyard_calls_ended", "Calls ended, by disposition.",
                      ["engine", "disposition"])
STEP_SECONDS = Histogram(
    "callyard_ivr_step_seconds", "Time from an event reaching a call flow to its commands.",
    ["engine"], buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                         0.1, 0.25, 1.0),
)
ENGINE_CONNECTED = Gauge("callyard_engine_connected",
                         "1 while the connection to the engine node is up.", ["engine", "node"])
WORKER_MENU_VERSION = Gauge("callyard_worker_menu_version",
                            "Version of the menu set this worker serves (0: none published).")
QUEUE_WAITING = Gauge("callyard_queue_waiting", "Callers waiting in the queue.", ["queue"])
QUEUE_LONGEST = Gauge("callyard_queue_longest_wait_seconds",
                      "Wait of the caller waiting longest.", ["queue"])
QUEUE_SERVICE_LEVEL = Gauge("callyard_queue_service_level",
                            "Percent of calls answered within the queue's service level.",
                            ["queue"])
AGENTS = Gauge("callyard_agents", "Agents by state.", ["state"])
CDR_BACKLOG = Gauge("callyard_cdr_backlog", "CDRs in the Redis stream not yet stored.")
CDR_PENDING = Gauge("callyard_cdr_pending", "CDRs read by a writer but not acknowledged.")
CDRS_STORED = Counter("callyard_cdrs_stored", "CDRs inserted into PostgreSQL.")
CDR_CONFLICTS = Counter("callyard_cdr_conflicts",
                        "CDRs whose call id already had a different record (kept in the dead "
                        "stream).")


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


class CallMetrics:
    """The CDR wrapper's observer: call counts and step latency (cheap, thread-safe)."""

    def __init__(self) -> None:
        self._steps: dict[str, Histogram] = {}  # STEP_SECONDS by engine: once per event

    def call_started(self, call: CallInfo) -> None:
        CALLS.labels(call.engine, call.node).inc()
        CALLS_IN_PROGRESS.labels(call.engine, call.node).inc()

    def step(self, call: CallInfo, seconds: float) -> None:
        histogram = self._steps.get(call.engine)
        if histogram is None:
            histogram = self._steps[call.engine] = STEP_SECONDS.labels(call.engine)
        histogram.observe(seconds)

    def call_ended(self, call: CallInfo, disposition: str) -> None:
        CALLS_IN_PROGRESS.labels(call.engine, call.node).dec()
        CALLS_ENDED.labels(call.engine, disposition).inc()


def set_engine_connected(engine: str, node: str, up: bool) -> None:
    ENGINE_CONNECTED.labels(engine, node).set(1 if up else 0)


class RedisStatsPoller:
    """Every ``interval`` seconds: queue stats and agent states (through ``queues``, a
    :class:`~appserver.queues.store.QueueStore`) and ``cdr_backlog()``: (entries in the CDR
    stream, entries read but not acknowledged)."""

    def __init__(self, queues: QueueStore, cdr_backlog: Callable[[], Awaitable[tuple[int, int]]],
                 *, interval: float = 5.0) -> None:
        self.queues = queues
        self.cdr_backlog = cdr_backlog
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._names: set[str] = set()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # Redis away: keep the last values, try again later
                honour_cancel()
                log.debug("metrics poll failed", extra={"error": str(exc)})
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        queues = self.queues
        names = set(await queues.queue_names())
        for gone in self._names - names:
            for gauge in (QUEUE_WAITING, QUEUE_LONGEST, QUEUE_SERVICE_LEVEL):
                gauge.remove(gone)
        self._names = names
        agents: set[str] = set()
        for queue in names:
            stats = await queues.stats(queue)
            QUEUE_WAITING.labels(queue).set(stats.waiting)
            QUEUE_LONGEST.labels(queue).set(stats.longest_wait)
            QUEUE_SERVICE_LEVEL.labels(queue).set(stats.service_level)
            agents.update(await queues.members(queue))
        counts = dict.fromkeys(AGENT_STATES, 0)
        for name in agents:
            status = await queues.agent(name)
            if status is not None:
                counts[status.state] = counts.get(status.state, 0) + 1
        for state, count in counts.items():
            AGENTS.labels(state).set(count)
        length, pending = await self.cdr_backlog()
        CDR_BACKLOG.set(length)
        CDR_PENDING.set(pending)


class _Families:
    """A collector of ready-made metric families (what ``generate_latest`` renders)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def merge_expositions(parts: Mapping[str, str | None]) -> bytes:
    """One exposition from several processes' (``{process: text}``; None: it did not
    answer): each family once, each sample labelled ``process``, and
    ``callyard_process_up{process}`` saying whose metrics are in."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    up = GaugeMetricFamily("callyard_process_up", "1 when the process's metrics are included.",
                           labels=["process"])
    families: dict[str, Metric] = {}
    for process, text in parts.items():
        up.add_metric([process], 0 if text is None else 1)
        for family in text_string_to_metric_families(text or ""):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit))
            merged.samples += [sample._replace(labels={**sample.labels, "process": process})
                               for sample in family.samples]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([up, *families.values()]))
    return generate_latest(registry)


async def combined_exposition(own: str, peers: Mapping[str, str], timeout: float = 2.0
                              ) -> bytes:
    """This process's metrics (as ``own``) and those at each peer's ``/metrics`` URL."""
    import aiohttp

    async def scrape(http: aiohttp.ClientSession, url: str) -> str | None:
        try:
            async with http.get(url) as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        texts = await asyncio.gather(*(scrape(http, url) for url in peers.values()))
    parts = {own: generate_latest().decode(), **dict(zip(peers, texts, strict=True))}
    return merge_expositions(parts)


def metrics_endpoint(peers: Mapping[str, str] | None = None
                     ) -> Callable[[Any], Awaitable[Any]]:
    """``/metrics`` for a Starlette/FastAPI app: this process's metrics or, given ``peers``
    (``{process: URL of its /metrics}``, ``callyard dev``), merged with theirs, this one
    labelled ``process="api"``."""

    async def endpoint(request: Any) -> Any:
        from starlette.responses import Response

        body = await combined_exposition("api", peers) if peers else generate_latest()
        return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return endpoint
