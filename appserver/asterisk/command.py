"""``callyard asterisk``: the asyncio worker for Asterisk (ARI, AMI via panoramisk).

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
    import signal

    from appserver.asterisk.ami import AmiMonitor
    from appserver.asterisk.callbacks import AsteriskCallbackDialer
    from appserver.asterisk.driver import DriverConfig
    from appserver.asterisk.link import LinkConfig
    from appserver.asterisk.worker import AsteriskWorker
    from appserver.gc_policy import settle_gc
    from appserver.shells import aio
    from appserver.worker.services import WorkerServices

    log = logging.getLogger("callyard.asterisk")
    ari_nodes, ami_nodes = list(settings.asterisk_ari), list(settings.asterisk_ami)
    services = WorkerServices(settings, redis_url, aio, engine="asterisk", apps=apps,
                              health_listen=args.health_listen)
    cdrs = services.cdrs
    worker = AsteriskWorker(
        ari_nodes, services.flows, app=settings.asterisk_app, redis=services.redis,
        config=DriverConfig(dial_template=settings.asterisk_dial_template,
                            sip_template=settings.asterisk_sip_template,
                            transfer_context=args.transfer_context,
                            fallback_context=args.fallback_context),
        link=LinkConfig(watchdog_interval=args.watchdog_interval),
        on_call_lost=lambda record: cdrs.lost(record.info, record.started_at),
        cdrs_durable=services.sink.durable,
        take_over=services.queues.take_over,
    )
    monitor = AmiMonitor(ami_nodes, redis=services.redis) if ami_nodes else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    def engine_checks() -> dict[str, str]:
        up = any(link.connected.is_set() for link in worker.links)
        return {"asterisk": "ok" if up else "error: no Asterisk node connected"}

    services.queues.dialer = AsteriskCallbackDialer(worker)
    await services.start(worker.deliver, worker.links, engine_checks)
    await worker.start()
    if monitor:
        await monitor.start()
    settle_gc()
    log.info("Stasis application %r on %d Asterisk node(s)", settings.asterisk_app,
             len(ari_nodes))
    try:
        await stop.wait()
        # Graceful: new calls go to the dialplan's fallback; calls in progress get the grace
        # period to end; those still up then stay in Stasis for the next worker to re-adopt.
        worker.draining = True
        await services.drain(lambda: worker.active_calls)
    finally:
        handed = cdrs.forget_all()
        log.info("stopping: %d call(s) stay in Stasis for re-adoption", handed)
        if monitor:
            await monitor.stop()
        await worker.stop()
        await services.close()
    return 0
