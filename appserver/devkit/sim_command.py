"""``callyard sim``: the engine simulators alone, for workers you start yourself.

    callyard sim [--engine freeswitch|asterisk] [--port 8090] [--esl-port 8021]
                 [--ari-port 8088] [--ami-port 5038]

Serves the simulated FreeSWITCH (inbound ESL; each call connects out to the worker at
``CALLYARD_FREESWITCH_LISTEN``, or with ``CALLYARD_FREESWITCH_INGRESS=park`` is parked in
``CALLYARD_FREESWITCH_PARK_CONTEXT`` for the workers' inbound connections) and the simulated
Asterisk (ARI for the Stasis application ``CALLYARD_ASTERISK_APP``, AMI), as ``callyard dev``
runs them, with ``/sim`` and the softphone on ``--port`` to place calls. It prints the
``CALLYARD_*`` values that point a worker at them. Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn

    from appserver.devkit.sim.ari.server import AriSimulator
    from appserver.devkit.sim.caller import EngineSimulator
    from appserver.devkit.sim.esl.simulator import FreeswitchSimulator
    from appserver.settings import Settings
    from appserver.stopping import StopSignals

HELP = "run the engine simulators alone (ESL, ARI + AMI), with /sim and the softphone"
log = logging.getLogger("callyard.sim")

ENGINES = ("freeswitch", "asterisk")
TALK_SECONDS = 4 * 3600.0  # simulated parties stay on the line until the caller hangs up


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINES, action="append",
                        help="only this engine's simulator (repeatable; default: both)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090,
                        help="HTTP port of /sim and /softphone (default 8090)")
    parser.add_argument("--esl-port", type=int, default=8021,
                        help="FreeSWITCH inbound ESL port (default 8021)")
    parser.add_argument("--ari-port", type=int, default=8088, help="Asterisk ARI port (8088)")
    parser.add_argument("--ami-port", type=int, default=5038, help="Asterisk AMI port (5038)")


def freeswitch_simulator(worker: tuple[str, int], ingress: str = "socket",
                         park_context: str = "callyard") -> FreeswitchSimulator:
    """The simulated FreeSWITCH of ``callyard dev`` and ``callyard sim``: calls go to the
    worker at ``worker`` (``ingress`` "socket"), or are parked in ``park_context`` for the
    workers connected to its inbound ESL (``ingress`` "park"); whoever a call is bridged to
    (an extension, an agent's room) answers and stays on the line until the caller hangs up,
    so calls can be walked by hand."""
    from appserver.devkit.sim.esl.behaviour import Behaviour
    from appserver.devkit.sim.esl.simulator import FreeswitchSimulator

    return FreeswitchSimulator(workers=[worker], behaviour=Behaviour(talk_seconds=TALK_SECONDS),
                               ingress=ingress,
                               context=park_context if ingress == "park" else None)


def asterisk_simulator(settings: Settings, host: str = "127.0.0.1", port: int = 0,
                       recording_dir: Path | None = None) -> AriSimulator:
    """The simulated Asterisk of ``callyard dev`` and ``callyard sim`` (every dialled party
    answers and stays on the line, as above)."""
    from appserver.devkit.sim.ari.models import SimEndpoint
    from appserver.devkit.sim.ari.server import AriSimulator

    return AriSimulator(host=host, port=port, stasis_app=settings.asterisk_app,
                        unknown_endpoint=SimEndpoint("", "", talk_seconds=TALK_SECONDS),
                        recording_dir=recording_dir)


async def start_http(server: uvicorn.Server, stop: StopSignals) -> asyncio.Task[None] | None:
    """Serve ``server`` until a stop is requested, in a task returned once it listens; None
    when a stop came first. (uvicorn exits the process when it cannot bind.)"""
    from appserver.stopping import serve_http

    task = asyncio.create_task(serve_http(server, stop))
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        return task
    await task
    if not stop.requested:
        raise OSError(f"the HTTP server on {server.config.host}:{server.config.port} ended"
                      " before it listened")
    return None


async def serve(args: argparse.Namespace, settings: Settings, stop: StopSignals) -> int:
    from fastapi import FastAPI

    from appserver import __version__
    from appserver.api.command import http_server
    from appserver.devkit.sim.ami import AmiSimulator
    from appserver.devkit.sim_routes import SimCalls, add_sim_routes
    from appserver.settings import parse_hostport

    simulators: dict[str, EngineSimulator] = {}
    stoppable: list[FreeswitchSimulator | AriSimulator | AmiSimulator] = []
    lines = ["", "Engine simulators are running; point workers at them with:"]
    try:
        if "freeswitch" in args.engine:
            esl = freeswitch_simulator(parse_hostport(settings.freeswitch_listen),
                                       settings.freeswitch_ingress,
                                       settings.freeswitch_park_context)
            stoppable.append(esl)
            await esl.start(args.host, args.esl_port)
            simulators["freeswitch"] = esl
            lines += [f"  CALLYARD_FREESWITCH_ESL={args.host}:{esl.esl_port}:{esl.password}"]
            if esl.ingress == "park":
                lines += ["  CALLYARD_FREESWITCH_INGRESS=park",
                          f"  CALLYARD_FREESWITCH_PARK_CONTEXT={esl.context}",
                          "    (calls are parked for the workers' inbound connections)"]
            else:
                lines += [f"    (calls go to the worker at CALLYARD_FREESWITCH_LISTEN="
                          f"{settings.freeswitch_listen})"]
        if "asterisk" in args.engine:
            ari = asterisk_simulator(settings, args.host, args.ari_port)
            stoppable.append(ari)
            await ari.start()
            ami = AmiSimulator(ari, host=args.host, port=args.ami_port)
            stoppable.append(ami)
            await ami.start()
            simulators["asterisk"] = ari
            lines += [f"  CALLYARD_ASTERISK_ARI={ari.url_with_credentials}",
                      f"  CALLYARD_ASTERISK_AMI={ami.address}",
                      f"    (Stasis application {settings.asterisk_app!r})"]
        app = FastAPI(title="Callyard engine simulators", version=__version__)
        add_sim_routes(app, SimCalls(simulators))
        server = http_server(app, args.host, args.port)
        task = await start_http(server, stop)
        if task is None:
            return 0
        base = f"http://{args.host}:{args.port}"
        lines += [f"Simulated calls {base}/sim/calls, softphone {base}/softphone.",
                  "Press Ctrl-C to stop."]
        print("\n".join(lines), flush=True)
        await task
    except OSError as exc:
        print(f"callyard sim: {exc}", file=sys.stderr)
        return 1
    finally:
        for simulator in reversed(stoppable):
            await simulator.stop()
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appserver.stopping import StopSignals

    stop = StopSignals.install()
    args.engine = args.engine or list(ENGINES)
    return asyncio.run(serve(args, settings, stop))
