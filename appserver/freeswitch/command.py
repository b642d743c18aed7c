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
    [rurl] = settings.required_urls("redis_url")
    return serve(args, settings, specs, apps, listen, rurl)


def serve(args: argparse.Namespace, settings: Settings, specs: list[str],
          apps: list[FlowFactory], listen: tuple[str, int], rurl: str) -> int:
    """Serve calls until SIGTERM / SIGINT; gevent is already patched in."""
    import json
    import logging
    import os
    import resource
    import signal
    import socket
    import sys

    import gevent
    import redis

    from appserver.agents.bridge import BrowserAgentBridge
    from appserver.apps import AppRouter, MenuFlows
    from appserver.cdr.gevent_ops import WorkerOps
    from appserver.freeswitch.driver import DriverConfig
    from appserver.freeswitch.inbound import NodeManager
    from appserver.freeswitch.worker import FreeswitchWorker
    from appserver.gc_policy import settle_gc
    from appserver.queues.runtime import GeventQueueRuntime
    from ivr.calls import CallFlow

    log = logging.getLogger("callyard.freeswitch")
    host, port = listen
    menus = MenuFlows(rurl)  # the IVR: always asked last
    menus.start()
    router = AppRouter([*apps, menus])
    queues: list[GeventQueueRuntime] = []  # set once the worker exists (it delivers events)

    def wrap_queue(flow: CallFlow) -> CallFlow:
        # Outside the queue runtime: browser agents are dialled into the call's LiveKit room.
        return BrowserAgentBridge(queues[0].wrap(flow), settings.livekit_sip_uri)

    # one socket per call in progress: allow as many as the hard limit permits
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    config = DriverConfig(dial_template=settings.freeswitch_dial_template,
                          sip_template=settings.freeswitch_sip_template)
    ops = WorkerOps(settings, rurl, args.health_listen, queue_wrap=wrap_queue,  # CDRs, health
                    menus=menus)
    worker = FreeswitchWorker((host, port), ops.wrap_factory(router), config,
                              max_calls=settings.freeswitch_max_calls,
                              connect_timeout=settings.freeswitch_connect_timeout)
    nodes = NodeManager(settings.freeswitch_esl)
    nodes.start()
    stop = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    queues.append(GeventQueueRuntime(
        redis.Redis.from_url(rurl, decode_responses=True),
        f"freeswitch-{socket.gethostname()}-{os.getpid()}",
        worker.deliver,
    ))
    queues[0].start()
    try:
        worker.start()
    except OSError as exc:
        print(f"callyard freeswitch: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    log.info("serving calls with %s; %d FreeSWITCH node(s)",
             ", ".join([*specs, "IVR menus"]), len(nodes.links))
    ops.start(worker, nodes)
    settle_gc()
    stop.wait()
    log.info("stopping; stats %s", json.dumps(worker.stats()))
    ops.drain(worker)
    nodes.stop()
    queues[0].stop()
    menus.stop()
    return 0
