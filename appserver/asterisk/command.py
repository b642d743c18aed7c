"""``callyard asterisk``: the asyncio worker for Asterisk (ARI via aioari, AMI via panoramisk).

Runs the Stasis application ``CALLYARD_ASTERISK_APP`` on every node of
``CALLYARD_ASTERISK_ARI``, serving each call with the first app that takes it: the one named
by ``--flow-factory``, those of ``CALLYARD_APPS``, then the IVR menus published to Redis
(see :mod:`appserver.apps`), and watches ``CALLYARD_ASTERISK_AMI`` for device state.
Per-call records live in Redis (``CALLYARD_REDIS_URL``) for re-adoption.
Top-level imports stay light: everything heavy is imported in :func:`run`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.apps import FlowFactory
    from appserver.settings import Settings

HELP = "Run the Asterisk call-control worker (ARI Stasis application, AMI device state)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flow-factory",
        metavar="MODULE:ATTR",
        help="an app to ask first, flow_factory(call_info) -> CallFlow | None "
        "(then CALLYARD_APPS, then the IVR menus)",
    )
    parser.add_argument(
        "--transfer-context", default="callyard-transfer",
        help="dialplan context a Transfer continues in (default: %(default)s)",
    )
    parser.add_argument(
        "--fallback-context", default="callyard-unavailable",
        help="dialplan context with the polite endings s / noservice (default: %(default)s)",
    )
    parser.add_argument(
        "--watchdog-interval", type=float, default=5.0,
        help="seconds between checks that the events subscription is alive (default: 5)",
    )
    parser.add_argument("--health-listen", metavar="HOST:PORT",
                        help="/healthz /readyz /metrics here (default CALLYARD_HEALTH_LISTEN)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import sys

    from appserver.apps import AppLoadError, load_app

    specs = ([args.flow_factory] if args.flow_factory else []) + list(settings.apps)
    try:
        apps = [load_app(spec) for spec in specs]
    except AppLoadError as exc:
        print(f"callyard asterisk: {exc}", file=sys.stderr)
        return 2
    if not settings.asterisk_ari:
        print("callyard asterisk: no Asterisk node: set CALLYARD_ASTERISK_ARI "
              "(e.g. http://user:secret@127.0.0.1:8088; `callyard sim` serves a simulated one)",
              file=sys.stderr)
        return 2
    [url] = settings.required_urls("redis_url")
    return asyncio.run(serve(args, settings, apps, url))


async def serve(args: argparse.Namespace, settings: Settings, apps: list[FlowFactory],
                redis_url: str) -> int:
    import asyncio
    import contextlib
    import logging
    import os
    import signal
    import socket

    import redis.asyncio as aioredis

    from appserver.agents.bridge import BrowserAgentBridge
    from appserver.apps import AppRouter, MenuFlows
    from appserver.asterisk.ami import AmiMonitor
    from appserver.asterisk.worker import AsteriskWorker
    from appserver.cdr.flow import CdrCalls
    from appserver.cdr.sink import AsyncCdrSink
    from appserver.gc_policy import settle_gc
    from appserver.health import AsyncHealthServer, storage_checks
    from appserver.metrics import ENGINE_CONNECTED, CallMetrics
    from appserver.queues.runtime import QueueRuntime
    from ivr.calls import CallFlow, CallInfo

    log = logging.getLogger("callyard.asterisk")
    logging.getLogger("aioari.model").setLevel(logging.WARNING)
    ari_nodes, ami_nodes = list(settings.asterisk_ari), list(settings.asterisk_ami)
    # Bursts of calls share a bounded pool and wait for a free connection rather than fail
    # ("Too many connections" with redis-py's default pool of 100).
    redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        redis_url, decode_responses=True, max_connections=200, timeout=10))
    menus = MenuFlows(redis_url)
    await asyncio.to_thread(menus.start)
    router = AppRouter([*apps, menus])
    queues: list[QueueRuntime] = []  # set once the worker exists (it delivers queue events)
    cdr_sink = AsyncCdrSink(redis, maxlen=settings.cdr_stream_maxlen)

    def wrap_queue(flow: CallFlow) -> CallFlow:
        # Outside the queue runtime: browser agents are dialled into the call's LiveKit room.
        return BrowserAgentBridge(queues[0].wrap(flow), settings.livekit_sip_uri)

    cdrs = CdrCalls(cdr_sink, observer=CallMetrics(), queue_wrap=wrap_queue)

    def factory(call: CallInfo) -> CallFlow | None:
        flow = router(call)
        return cdrs.wrap(flow, call) if flow is not None else None

    worker = AsteriskWorker(
        ari_nodes, factory, app=settings.asterisk_app, redis=redis,
        dial_template=settings.asterisk_dial_template, sip_template=settings.asterisk_sip_template,
        transfer_context=args.transfer_context,
        fallback_context=args.fallback_context, watchdog_interval=args.watchdog_interval,
        on_call_lost=lambda record: cdrs.lost(record.info, record.started_at),
    )
    monitor = AmiMonitor(ami_nodes, redis=redis) if ami_nodes else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    queues.append(QueueRuntime(redis, f"asterisk-{socket.gethostname()}-{os.getpid()}",
                               worker.deliver))
    for link in worker.links:
        ENGINE_CONNECTED.labels("asterisk", link.name).set_function(link.connected.is_set)

    async def ready() -> dict[str, str]:
        checks = await storage_checks(redis=redis)
        up = [link.name for link in worker.links if link.connected.is_set()]
        checks["asterisk"] = "ok" if up else "error: no Asterisk node connected"
        checks["menus"] = menus.readiness()
        return checks

    health_listen = args.health_listen or settings.health_listen
    health = AsyncHealthServer(health_listen, ready) if health_listen else None
    cdr_sink.start()
    await queues[0].start()
    await worker.start()
    if monitor:
        await monitor.start()
    if health:
        await health.start()
    settle_gc()
    log.info("Stasis application %r on %d Asterisk node(s)", settings.asterisk_app,
             len(ari_nodes))
    try:
        await stop.wait()
        # Graceful: new calls go to the dialplan's fallback; calls in progress get the grace
        # period to end; those still up then stay in Stasis for the next worker to re-adopt.
        worker.draining = True
        if health:
            health.stopping = True
        grace = settings.shutdown_grace
        log.info("stopping: %d call(s) in progress, up to %.0fs to finish",
                 worker.active_calls, grace)
        deadline = loop.time() + grace
        while worker.active_calls and loop.time() < deadline:
            await asyncio.sleep(0.1)
    finally:
        handed = cdrs.forget_all()
        log.info("stopping: %d call(s) stay in Stasis for re-adoption", handed)
        if monitor:
            await monitor.stop()
        await worker.stop()
        await queues[0].stop()
        await cdr_sink.stop()
        if health:
            await health.stop()
        await asyncio.to_thread(menus.stop)
        await redis.aclose()
    return 0
