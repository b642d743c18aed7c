"""``callyard freeswitch``: the gevent worker for FreeSWITCH.

Serves the outbound ESL socket (``CALLYARD_FREESWITCH_LISTEN``), giving each call to the first
app that takes it: those named by ``--flow-factory``, then ``CALLYARD_APPS``, then the IVR
menus published to Redis (:mod:`appserver.apps`); queued callers are handled by the queue
runtime. Keeps inbound ESL links to every node in ``CALLYARD_FREESWITCH_ESL``. Top-level
imports stay light: gevent patches the standard library first thing in :func:`run`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.apps import FlowFactory
    from appserver.settings import Settings

HELP = "Run the FreeSWITCH call-control worker (outbound ESL server, inbound ESL links)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flow-factory",
        action="append",
        metavar="MODULE:ATTR",
        help="an app to ask first, flow_factory(call_info) -> CallFlow | None; repeatable "
        "(then CALLYARD_APPS, then the IVR menus)",
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="override CALLYARD_FREESWITCH_LISTEN")
    parser.add_argument("--health-listen", metavar="HOST:PORT",
                        help="/healthz /readyz /metrics here (default CALLYARD_HEALTH_LISTEN)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import gevent
    from gevent import monkey

    gevent.config.track_greenlet_tree = False  # no spawn-tree capture per call greenlet
    monkey.patch_all()
    from appserver.shells import green

    green.quick_redis_checks()

    import sys

    from appserver.apps import AppLoadError, load_app
    from appserver.settings import parse_hostport

    specs: list[str] = [*(args.flow_factory or []), *settings.apps]
    try:
        apps = [load_app(spec) for spec in specs]
        listen = parse_hostport(args.listen or settings.freeswitch_listen)
    except (AppLoadError, ValueError) as exc:
        print(f"callyard freeswitch: {exc}", file=sys.stderr)
        return 2
    if settings.freeswitch_ingress == "park" and not settings.freeswitch_esl:
        print("callyard freeswitch: CALLYARD_FREESWITCH_INGRESS=park takes the calls over "
              "CALLYARD_FREESWITCH_ESL: set it (host:port:password of each node)",
              file=sys.stderr)
        return 2
    [rurl] = settings.required_urls("redis_url")
    return serve(args, settings, specs, apps, listen, rurl)


def serve(args: argparse.Namespace, settings: Settings, specs: list[str],
          apps: list[FlowFactory], listen: tuple[str, int], rurl: str) -> int:
    """Serve calls until SIGTERM / SIGINT; gevent is already patched in.

    Stopping closes the listening socket first, so FreeSWITCH's ``socket`` application fails
    for new calls and the dialplan's fallback runs; calls in progress get
    ``CALLYARD_SHUTDOWN_GRACE`` seconds. A call still up after that is recorded as ``failed``
    with cause ``WORKER_SHUTDOWN`` (its socket closes when the process exits)."""
    import json
    import logging
    import resource
    import signal
    import sys

    import gevent

    from appserver.freeswitch.callbacks import FreeswitchCallbackDialer
    from appserver.freeswitch.callrecords import CallRecords
    from appserver.freeswitch.driver import DriverConfig
    from appserver.freeswitch.inbound import NodeManager
    from appserver.freeswitch.worker import FreeswitchWorker
    from appserver.gc_policy import settle_gc
    from appserver.queues.caller_flow import QUEUED_VARIABLE
    from appserver.shells import green
    from appserver.worker.services import WorkerServices
    from ivr.calls import CallInfo

    log = logging.getLogger("callyard.freeswitch")
    host, port = listen
    services = WorkerServices(settings, rurl, green, engine="freeswitch", apps=apps,
                              health_listen=args.health_listen)
    # one socket per call in progress: allow as many as the hard limit permits
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    config = DriverConfig(dial_template=settings.freeswitch_dial_template,
                          sip_template=settings.freeswitch_sip_template,
                          recordings_dir=settings.freeswitch_recordings_dir)
    def take_over(call: CallInfo) -> None:
        """A caller queued before (the channel says so) may be one a dead worker left."""
        if QUEUED_VARIABLE in call.variables:
            green.run(services.queues.take_over(call))

    # A call is forgotten once its CDR is in Redis (killed before: another worker reaps).
    records = CallRecords(services.redis, services.queues.worker_id,
                          durable=lambda: green.run(services.sink.durable()))

    worker = FreeswitchWorker((host, port), services.flows, config,
                              max_calls=settings.freeswitch_max_calls,
                              connect_timeout=settings.freeswitch_connect_timeout,
                              take_over=take_over, call_started=records.claim,
                              call_ended=records.release)
    nodes = NodeManager(settings.freeswitch_esl)
    nodes.start()
    if nodes.links:  # callbacks are dialled over inbound ESL
        services.queues.dialer = FreeswitchCallbackDialer(
            nodes, settings.freeswitch_callback_destination)

    stop = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)

    def engine_checks() -> dict[str, str]:
        links = list(nodes.links.values())
        connected = not links or any(link.connected.is_set() for link in links)
        return {"listening": "ok" if worker.port else "error: not yet",
                "freeswitch": "ok" if connected else
                "error: no FreeSWITCH node connected over inbound ESL"}

    green.run(services.start(worker.deliver, nodes.links.values(), engine_checks))
    try:
        worker.start()
    except OSError as exc:
        print(f"callyard freeswitch: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        nodes.stop()
        green.run(services.close())
        return 1
    parked = []
    if settings.freeswitch_ingress == "park":
        from appserver.freeswitch.parked import ParkedCalls

        parked = [ParkedCalls(worker, node, settings.freeswitch_park_context, records,
                              nodes.link(node.name))
                  for node in settings.freeswitch_esl]
    # a worker found dead: its parked calls are swept now, not at the next round
    records.calls = lambda: [driver.info for driver in list(worker.calls.values())]
    records.start(nodes.calls_exist, services.cdrs.lost,
                  died=lambda: [gevent.spawn(ingress.sweep) for ingress in parked])
    for ingress in parked:
        ingress.start()
    log.info("serving calls with %s; %d FreeSWITCH node(s)",
             ", ".join([*specs, "IVR menus"]), len(nodes.links))
    settle_gc()
    stop.wait()
    log.info("stopping; stats %s", json.dumps(worker.stats()))
    worker.stop()  # closes the listening socket: new calls take the dialplan fallback
    for ingress in parked:
        ingress.stop_taking()  # parked calls: new ones are the other workers'
    green.run(services.drain(lambda: len(worker.calls)))
    for ingress in parked:
        ingress.stop()  # calls still up stay parked: the other workers' sweeps take them
    left = services.cdrs.abandon_all("WORKER_SHUTDOWN")
    if left:
        log.warning("grace period over: %d call(s) recorded as failed", left)
    records.stop()
    nodes.stop()
    green.run(services.close())
    return 0
