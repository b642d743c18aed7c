"""``callyard freeswitch``: the gevent worker for FreeSWITCH.

Serves the outbound ESL socket (``CALLYARD_FREESWITCH_LISTEN``) with the call-flow factory
named by ``--flow-factory`` (default: the entries of ``CALLYARD_APPS``, asked in order) and keeps
inbound ESL links to every node in ``CALLYARD_FREESWITCH_ESL``. Top-level imports stay
light: gevent patches the standard library first thing in :func:`run`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings

HELP = "Run the FreeSWITCH call-control worker (outbound ESL server, inbound ESL links)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flow-factory",
        action="append",
        metavar="MODULE:ATTR",
        help="call-flow factory, flow_factory(call_info) -> CallFlow | None; repeatable, "
        "asked in order (default: the entries of CALLYARD_APPS)",
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="override CALLYARD_FREESWITCH_LISTEN")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from gevent import monkey

    monkey.patch_all()

    import json
    import logging
    import resource
    import signal
    import sys

    import gevent

    from appserver.freeswitch.driver import DriverConfig
    from appserver.freeswitch.inbound import NodeManager
    from appserver.freeswitch.worker import FreeswitchWorker, chain_factories, load_factory
    from appserver.settings import parse_hostport

    log = logging.getLogger("callyard.freeswitch")
    specs: list[str] = args.flow_factory or settings.apps
    if not specs:
        print(
            "callyard freeswitch: no call flow: pass --flow-factory module:attr "
            "or set CALLYARD_APPS",
            file=sys.stderr,
        )
        return 2
    try:
        factory = chain_factories([load_factory(spec) for spec in specs])
        host, port = parse_hostport(args.listen or settings.freeswitch_listen)
    except ValueError as exc:
        print(f"callyard freeswitch: {exc}", file=sys.stderr)
        return 2
    # one socket per call in progress: allow as many as the hard limit permits
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    config = DriverConfig(dial_template=settings.freeswitch_dial_template)
    worker = FreeswitchWorker((host, port), factory, config)
    nodes = NodeManager(settings.freeswitch_esl)
    nodes.start()
    stop = gevent.event.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    try:
        worker.start()
    except OSError as exc:
        print(f"callyard freeswitch: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    log.info("serving calls with %s; %d FreeSWITCH node(s)", ", ".join(specs), len(nodes.links))
    stop.wait()
    log.info("stopping; stats %s", json.dumps(worker.stats()))
    worker.stop()
    nodes.stop()
    return 0
