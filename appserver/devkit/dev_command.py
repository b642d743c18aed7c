"""``callyard dev``: the whole server on a laptop, in one command.

Starts (or reuses) embedded PostgreSQL and Redis unless URLs are configured, applies
migrations, seeds the demo, runs both engine simulators and the API in this process,
and the FreeSWITCH and Asterisk workers as supervised child processes, exactly as they
run in production (``callyard freeswitch`` / ``callyard asterisk``), pointed at the
simulators. Ctrl-C or SIGTERM stops everything, embedded servers included (see
:mod:`appserver.stopping`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings
    from appserver.stopping import StopSignals

HELP = "run everything on this machine: embedded storage, simulators, API, both workers"
log = logging.getLogger("callyard.dev")

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument(
        "--data-dir", type=Path, help="embedded servers' data (default CALLYARD_DATA_DIR)"
    )
    parser.add_argument(
        "--no-seed", action="store_true", help="do not load the demo data set"
    )
    parser.add_argument(
        "--freeswitch-ingress", choices=("socket", "park"),
        help="how the simulated FreeSWITCH hands calls to the FreeSWITCH worker: an outbound "
        "socket per call, or parked for its inbound connection (default "
        "CALLYARD_FREESWITCH_INGRESS, socket)",
    )


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux; no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """A worker process kept running: restarted with backoff if it dies."""

    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    stopping: bool = field(default=False, repr=False)

    def spawn(self) -> None:
        # Own session: Ctrl-C reaches only us, and we stop the children in order. If we die
        # without that chance (SIGKILL), the kernel sends them SIGTERM.
        self.proc = subprocess.Popen(
            self.argv, env=self.env, start_new_session=True, preexec_fn=_die_with_parent
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %s)", self.name, self.proc.pid)

    async def supervise(self) -> None:
        self.spawn()
        while not self.stopping:
            assert self.proc is not None
            code = await asyncio.to_thread(self.proc.wait)
            if self.stopping:
                return
            if time.monotonic() - self.started_at > 30:
                self.restarts = 0  # it ran a good while: start the backoff over
            delay = RESTART_BACKOFF[min(self.restarts, len(RESTART_BACKOFF) - 1)]
            log.error("%s exited with status %s; restarting in %.1fs", self.name, code, delay)
            self.restarts += 1
            await asyncio.sleep(delay)
            if not self.stopping:
                self.spawn()

    def stop(self, grace: float = 5.0) -> None:
        self.stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, grace)
            self.proc.kill()
            self.proc.wait()


async def _prepare_database(dsn: str, seed: bool) -> None:
    from appserver.devkit.demo import seed_demo
    from appserver.store.db import connect
    from appserver.store.migrations import migrate

    for version in await migrate(dsn):
        log.info("applied migration %s", version)
    if seed:
        conn = await connect(dsn)
        try:
            await seed_demo(conn)
        finally:
            await conn.close()


def _banner(base: str, seed: bool, ingress: str = "socket") -> str:
    from appserver.devkit.demo import DEMO_ADMIN, DEMO_AGENTS, DEMO_NUMBER

    lines = [
        "",
        "Callyard is running.",
        f"  softphone       {base}/softphone   (dial {DEMO_NUMBER})",
        f"  admin           {base}/admin   (menus, queues, agents...)",
        f"  API docs        {base}/docs",
        f"  simulated calls {base}/sim/calls",
        f"  health          {base}/healthz  {base}/readyz",
        f"  metrics         {base}/metrics   (API and both workers)",
    ]
    if ingress == "park":
        lines.append("  FreeSWITCH      calls parked for the worker's inbound connection "
                     "(ingress park)")
    if seed:
        lines.append("  demo agents     " + ", ".join(f"{a.username} / {a.password}"
                                                    for a in DEMO_AGENTS))
        lines.append(f"  demo admin      {DEMO_ADMIN.username} / {DEMO_ADMIN.password}"
                     "   (/admin, /supervisor)")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


async def serve(args: argparse.Namespace, settings: Settings, dsn: str, redis_url: str,
                stop: StopSignals) -> int:
    from appserver.api.command import http_server
    from appserver.api.services import Services
    from appserver.cdr.writer import writer_running
    from appserver.devkit.embedded import free_port
    from appserver.devkit.sim_command import asterisk_simulator, freeswitch_simulator, start_http
    from appserver.devkit.sim_routes import SimCalls, add_sim_routes

    started = time.monotonic()
    await _prepare_database(dsn, seed=not args.no_seed)
    if stop.requested:
        return 0

    fs_listen = ("127.0.0.1", free_port())
    ingress = args.freeswitch_ingress or settings.freeswitch_ingress
    esl = freeswitch_simulator(fs_listen, ingress, settings.freeswitch_park_context)
    await esl.start()
    # Both simulated engines write recordings (voicemail) where the API reads them, and
    # trial calls into menu drafts are answered ("Try it" in /admin).
    recordings = (Path(settings.data_dir) / "recordings").resolve()
    settings = settings.model_copy(update={"recordings_dir": str(recordings),
                                           "menu_trials": True})
    ari = asterisk_simulator(settings, recording_dir=recordings)
    await ari.start()

    env = {
        **os.environ,
        "CALLYARD_DATABASE_URL": dsn,
        "CALLYARD_REDIS_URL": redis_url,
        "CALLYARD_FREESWITCH_LISTEN": f"{fs_listen[0]}:{fs_listen[1]}",
        "CALLYARD_FREESWITCH_ESL": f"127.0.0.1:{esl.esl_port}:{esl.password}",
        "CALLYARD_FREESWITCH_INGRESS": ingress,
        "CALLYARD_FREESWITCH_PARK_CONTEXT": esl.context,
        "CALLYARD_ASTERISK_ARI": ari.url_with_credentials,
        "CALLYARD_FREESWITCH_RECORDINGS_DIR": str(recordings),
        "CALLYARD_RECORDINGS_DIR": str(recordings),
        "CALLYARD_LOG_LEVEL": settings.log_level,
        "CALLYARD_LOG_FORMAT": settings.log_format,
        # Ctrl-C should not wait out production's 30 s drain (children get 5 s, below).
        "CALLYARD_SHUTDOWN_GRACE": "3",
        "CALLYARD_MENU_TRIALS": "1",
    }
    cli = [sys.executable, "-m", "appserver.cli"]
    # Each worker serves its metrics on a port of its own; the API's /metrics merges them.
    health = {engine: f"127.0.0.1:{free_port()}" for engine in ("freeswitch", "asterisk")}
    children = [
        Child(f"{engine} worker", [*cli, engine], {**env, "CALLYARD_HEALTH_LISTEN": listen})
        for engine, listen in health.items()
    ]
    metrics_peers = {f"{engine}-worker": f"http://{listen}/metrics"
                     for engine, listen in health.items()}
    supervisors = [asyncio.create_task(c.supervise(), name=c.name) for c in children]

    try:
        async with Services.started(dsn, redis_url, settings,
                                    require_livekit=False) as services, \
                writer_running(services.redis, services.pool,
                               settings.recordings_dir):  # CDRs -> PostgreSQL
            sim_calls = SimCalls({"freeswitch": esl, "asterisk": ari})
            # Ready once both workers are connected to their simulated engine.
            services.extra_checks["freeswitch"] = lambda: (
                "ok" if esl.worker_connected else "worker not connected"
            )
            services.extra_checks["asterisk"] = lambda: (
                "ok" if ari.sockets.get(settings.asterisk_app) else "worker not connected"
            )
            app = services.app(metrics_peers=metrics_peers)
            add_sim_routes(app, sim_calls)
            server = http_server(app, args.host, args.port)
            server_task = await start_http(server, stop)
            if server_task is None:
                return 0
            base = f"http://{args.host}:{args.port}"
            print(_banner(base, seed=not args.no_seed, ingress=ingress), flush=True)
            log.info("started in %.1fs", time.monotonic() - started)
            await server_task
            log.info("stopping: workers, simulators, then the embedded servers")
    finally:
        for child in children:
            await asyncio.to_thread(child.stop)
        for task in supervisors:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await esl.stop()
        await ari.stop()
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appserver.devkit.embedded import EmbeddedError, storage_urls
    from appserver.settings import is_loopback
    from appserver.stopping import StopSignals

    stop = StopSignals.install()  # from now on no signal interrupts a start or a clean-up
    if args.data_dir is not None:
        settings = settings.model_copy(update={"data_dir": args.data_dir})
    if not is_loopback(args.host):
        log.warning("callyard dev on %s, which is not a loopback address: the demo agents'"
                    " passwords and the unauthenticated /sim routes are open to the network",
                    args.host)
    try:
        with storage_urls(settings, "callyard dev") as (dsn, redis_url):
            if stop.requested:  # asked to stop while the embedded servers started
                return 0
            return asyncio.run(serve(args, settings, dsn, redis_url, stop))
    except (EmbeddedError, OSError) as exc:  # e.g. a port in use
        print(f"callyard dev: {exc}", file=sys.stderr)
        return 1
