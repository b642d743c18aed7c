"""``callyard bench``: load one worker process with simulated callers walking the demo menu.

The engine simulator and its callers (asyncio) run in ``--sim-processes`` load processes,
each its own simulated engine node placing its share of the calls; the worker under test is
a separate ``callyard freeswitch`` / ``callyard asterisk`` process connected to all of them,
as in production (a worker serving several engine nodes). Every call dials 9999 and walks
three menus, pressing each key as the menu starts (barge-in): ``1`` (sales, or after-hours
when closed), ``*`` (back to main), ``2`` (the support queue), then holds on music until the
caller hangs up, ``concurrent / cps`` seconds after dialling (so that many calls are in
progress at the rate asked). Latency is measured from each DTMF event the simulator sends
to the worker's next playback command it receives, both timed by the simulator at the wire
(so the simulator's own scheduling on a shared CPU is included, the callers' is not).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection

    from appserver.devkit.sim.caller import EngineSimulator, Entry, SimulatedCall
    from appserver.settings import Settings

HELP = "load-test one worker with simulated calls walking the demo menu"

# (key to press, prompt that must start next)
WALK = (
    ("1", ("file:demo/sales-menu", "file:demo/sales-closed")),
    ("*", ("file:demo/welcome",)),
    ("2", ("file:demo/connecting-support",)),
)
STEP_TIMEOUT = 10.0
INGRESSES = ("socket", "park")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("freeswitch", "asterisk"), default="freeswitch")
    parser.add_argument("--ingress", choices=INGRESSES,
                        help="FreeSWITCH: an outbound socket per call, or parked calls driven "
                        "over the worker's one inbound connection per node (default "
                        "CALLYARD_FREESWITCH_INGRESS, socket)")
    parser.add_argument("--concurrent", type=int, default=500,
                        help="calls in progress to hold (default 500)")
    parser.add_argument("--cps", type=float, default=50.0,
                        help="new calls per second (default 50)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds to place calls for (default 30)")
    parser.add_argument("--sim-processes", type=int, default=1, metavar="N",
                        help="load processes, each its own simulated engine node placing "
                        "its share of the calls (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--worker-command", metavar="COMMAND",
                        help="start the worker with this command line instead of "
                        "`callyard <engine>` (A/B benchmarks of a worker variant)")


@dataclass
class Tally:
    placed: int = 0
    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    peak_in_progress: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.errors[reason] = self.errors.get(reason, 0) + 1


def _worker_latency(log_file: Any) -> dict[str, Any]:
    """The worker's own DTMF -> next command latency, from its stop log line (the
    FreeSWITCH worker measures it from frame parsed to command written)."""
    log_file.seek(0)
    for raw in log_file:
        if b"stopping; stats" not in raw:
            continue
        with contextlib.suppress(ValueError, KeyError):
            stats = json.loads(json.loads(raw)["msg"].partition("stats ")[2])
            return {"dtmf_to_command_ms": {"p50": stats["dtmf_latency_p50_ms"],
                                           "p99": stats["dtmf_latency_p99_ms"],
                                           "max": stats["dtmf_latency_max_ms"]}}
    return {}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _prompt_in(expected: tuple[str, ...]) -> Callable[[Entry], bool]:
    return lambda e: e.kind == "prompt_started" and e.detail in expected


async def _walk(sim: EngineSimulator, hold: float, tally: Tally) -> None:
    """One caller: dial, walk the menu, wait for the queue's music, hang up ``hold`` seconds
    after dialling (the call's whole length, so calls in progress = rate x hold)."""
    hang_up_at = time.monotonic() + hold
    tally.placed += 1
    tally.in_progress += 1
    tally.peak_in_progress = max(tally.peak_in_progress, tally.in_progress)
    call: SimulatedCall | None = None
    step = "dial"
    try:
        call = await sim.place_call("9999", caller=f"+1555{tally.placed % 10_000_000:07d}")
        await call.wait_for_prompt("file:demo/main-menu", STEP_TIMEOUT)
        for key, expected in WALK:
            step = f"press {key}"
            seen = len(call.transcript.entries)
            await call.press(key, gap=0)
            entry = await call.transcript.wait_for(
                _prompt_in(expected), STEP_TIMEOUT, start=seen
            )
            # Both times are the simulator's, taken at the wire: the DTMF event sent, the
            # worker's playback command received (the caller task's own wake-up excluded).
            sent = next(e for e in call.transcript.entries[seen:] if e.kind == "dtmf")
            tally.latencies_ms.append((entry.at - sent.at) * 1000)
        step = "queue"
        await call.wait_for("moh", STEP_TIMEOUT)
        await asyncio.sleep(hang_up_at - time.monotonic())
        step = "hangup"
        if call.ended:
            raise RuntimeError("call ended before the caller hung up")
        await call.hangup()
        tally.completed += 1
    except Exception as exc:  # one failed call is counted, never fatal to the run
        tally.fail(f"{step}: {type(exc).__name__}")
        if call is not None and not call.ended:
            with contextlib.suppress(Exception):
                await call.hangup()
    finally:
        tally.in_progress -= 1


class WorkerProbe:
    """CPU and peak memory of the worker process, sampled while the load runs."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.cpu_start = self._cpu()
        self.wall_start = time.monotonic()
        self.start_rss = self.peak_rss = self.proc.memory_info().rss  # idle, menus loaded

    def _cpu(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def summary(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall_start
        cpu = self._cpu() - self.cpu_start
        return {
            "cpu_percent": round(100 * cpu / wall, 1),
            "cpu_s": round(cpu, 2),
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "start_rss_mb": round(self.start_rss / 2**20, 1),
        }


@dataclass(frozen=True)
class LoadShare:
    """What one load process is asked: its simulated node and its share of the calls."""

    engine: str
    cps: float
    concurrent: int
    duration: float
    hold: float  # seconds from dialling to the caller's hang-up
    worker_listen: tuple[str, int]  # FreeSWITCH: where the dialplan's socket connects
    ingress: str  # FreeSWITCH: "socket" or "park"
    park_context: str  # FreeSWITCH, park: the context the calls are parked in
    stasis_app: str  # Asterisk: the worker's Stasis application


def _load_process(conn: Connection, share: LoadShare) -> None:
    """A load process's main: talks to the bench process over ``conn``."""
    asyncio.run(_serve_load(conn, share))


async def _serve_load(conn: Connection, share: LoadShare) -> None:
    """Start a simulated node, report how to reach it, wait for the worker and the go, place
    this share of the calls, report the tally and this process's CPU."""
    from appserver.gc_policy import settle_gc

    sim: Any
    if share.engine == "freeswitch":
        from appserver.devkit.sim.esl.simulator import FreeswitchSimulator  # only the engine used

        sim = FreeswitchSimulator(workers=[share.worker_listen], ingress=share.ingress,
                                  context=share.park_context)
        await sim.start()
        conn.send(("node", f"127.0.0.1:{sim.esl_port}:{sim.password}"))
        connected: Callable[[], bool] = lambda: sim.worker_connected  # noqa: E731
    else:
        from appserver.devkit.sim.ari.server import AriSimulator

        sim = AriSimulator(stasis_app=share.stasis_app)
        await sim.start()
        conn.send(("node", sim.url_with_credentials))
        connected = lambda: bool(sim.sockets.get(share.stasis_app))  # noqa: E731
    try:
        while not connected():
            await asyncio.sleep(0.1)
        conn.send(("ready",))
        await _next_message(conn)  # go
        # The load side's own collector pauses would count in the latency measured.
        settle_gc()
        cpu_start, started = time.process_time(), time.monotonic()
        tally = await _place_calls(sim, share, lambda t: conn.send(("progress", t.in_progress,
                                                                     t.completed, t.failed)))
        wall = time.monotonic() - started
        conn.send(("done", {**tally.__dict__, "cpu_s": time.process_time() - cpu_start,
                            "wall_s": wall}))
        await _next_message(conn)  # stop: the worker is gone, its sessions closed
    finally:
        await sim.stop()
        await asyncio.sleep(0.1)  # the sessions it closed end their tasks


async def _next_message(conn: Connection) -> Any:
    while not conn.poll():
        await asyncio.sleep(0.02)
    return conn.recv()


async def _place_calls(sim: EngineSimulator, share: LoadShare,
                       each_second: Callable[[Tally], None]) -> Tally:
    """New calls at ``share.cps`` for ``share.duration`` seconds while fewer than
    ``share.concurrent`` are in progress, then until the last one ends."""
    tally = Tally()
    calls: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    next_report = started + 1
    n = 0
    while (now := time.monotonic()) < started + share.duration:
        due = int((now - started) * share.cps) + 1
        while n < due:
            n += 1
            if tally.in_progress < share.concurrent:
                task = asyncio.create_task(_walk(sim, share.hold, tally))
                calls.add(task)
                task.add_done_callback(calls.discard)
        if now >= next_report:
            next_report += 1
            each_second(tally)
        await asyncio.sleep(0.005)
    while calls:  # let the calls in progress finish their walk and hold
        await asyncio.sleep(0.5)
    return tally


class LoadProcesses:
    """The load processes of one run, seen from the bench process."""

    def __init__(self, shares: list[LoadShare]) -> None:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited loop
        self.conns: list[Connection] = []
        self.procs = []
        for share in shares:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_load_process, args=(theirs, share), daemon=True)
            proc.start()
            theirs.close()
            self.conns.append(ours)
            self.procs.append(proc)
        self.progress = [(0, 0, 0)] * len(shares)
        self.results: list[dict[str, Any] | None] = [None] * len(shares)

    async def receive(self, kind: str, worker: subprocess.Popen[bytes] | None = None,
                      timeout: float = 30, each_second: Callable[[], None] | None = None
                      ) -> list[tuple[Any, ...]]:
        """One ``kind`` message from each load process (progress messages are noted)."""
        got: list[tuple[Any, ...] | None] = [None] * len(self.conns)
        deadline = time.monotonic() + timeout
        next_second = time.monotonic() + 1
        while any(m is None for m in got):
            self._poll(got, kind)
            if worker is not None and worker.poll() is not None:
                raise RuntimeError(f"the worker exited with status {worker.returncode}")
            waiting = [proc for proc, m in zip(self.procs, got, strict=True) if m is None]
            if any(not proc.is_alive() for proc in waiting):
                raise RuntimeError("a load process exited early (its error is above)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the load processes sent no {kind!r} within {timeout:g} s")
            if each_second is not None and time.monotonic() >= next_second:
                next_second += 1
                each_second()
            await asyncio.sleep(0.05)
        return [m for m in got if m is not None]

    def _poll(self, got: list[tuple[Any, ...] | None], kind: str) -> None:
        for i, conn in enumerate(self.conns):
            while got[i] is None and conn.poll():
                message = conn.recv()
                if message[0] == "progress":
                    self.progress[i] = message[1:]
                elif message[0] == kind:
                    got[i] = message

    def totals(self) -> tuple[int, ...]:
        """Calls in progress, completed and failed, as last reported."""
        return tuple(sum(x) for x in zip(*self.progress, strict=True))

    def go(self) -> None:
        for conn in self.conns:
            conn.send(("go",))

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()


def _shares(args: argparse.Namespace, settings: Settings, listen: tuple[str, int]
            ) -> list[LoadShare]:
    n = args.sim_processes
    return [
        LoadShare(engine=args.engine, cps=args.cps / n,
                  concurrent=args.concurrent // n + (i < args.concurrent % n),
                  duration=args.duration, hold=args.concurrent / args.cps,
                  worker_listen=listen, stasis_app=settings.asterisk_app,
                  ingress=args.ingress, park_context=settings.freeswitch_park_context)
        for i in range(n)
    ]


def _merge(results: list[dict[str, Any]]) -> Tally:
    total = Tally()
    for r in results:
        total.placed += r["placed"]
        total.completed += r["completed"]
        total.failed += r["failed"]
        total.peak_in_progress += r["peak_in_progress"]  # each process's peak: an upper bound
        total.latencies_ms += r["latencies_ms"]
        for reason, count in r["errors"].items():
            total.errors[reason] = total.errors.get(reason, 0) + count
    return total


async def bench(args: argparse.Namespace, settings: Settings, dsn: str, redis_url: str) -> int:
    from appserver.api.services import Services
    from appserver.devkit.demo import seed_demo
    from appserver.devkit.embedded import free_port
    from appserver.store.db import connect
    from appserver.store.migrations import migrate

    await migrate(dsn)
    conn = await connect(dsn)
    try:
        await seed_demo(conn)
    finally:
        await conn.close()

    env = {**os.environ, "CALLYARD_DATABASE_URL": dsn, "CALLYARD_REDIS_URL": redis_url,
           "CALLYARD_LOG_LEVEL": "INFO", "CALLYARD_LOG_FORMAT": "json"}
    listen = ("127.0.0.1", free_port())
    load = LoadProcesses(_shares(args, settings, listen))
    try:
        nodes = ",".join(m[1] for m in await load.receive("node"))
        if args.engine == "freeswitch":
            env["CALLYARD_FREESWITCH_LISTEN"] = f"{listen[0]}:{listen[1]}"
            env["CALLYARD_FREESWITCH_ESL"] = nodes
            env["CALLYARD_FREESWITCH_INGRESS"] = args.ingress
            env["CALLYARD_FREESWITCH_PARK_CONTEXT"] = settings.freeswitch_park_context
        else:
            env["CALLYARD_ASTERISK_ARI"] = nodes
        async with Services.started(dsn, redis_url):  # publishes menus and queues to Redis
            return await _run_worker(args, env, load)
    finally:
        load.close()


async def _run_worker(args: argparse.Namespace, env: dict[str, str], load: LoadProcesses) -> int:
    # The worker logs as in production (a line per call); kept in a file and read after.
    worker_log = tempfile.TemporaryFile()  # noqa: SIM115 - closed once read, below
    command = (shlex.split(args.worker_command) if args.worker_command
               else [sys.executable, "-m", "appserver.cli", args.engine])
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=worker_log)
    try:
        await load.receive("ready", worker)  # the worker connected to every node
        await asyncio.sleep(1)  # menus and queue definitions reach the worker
        probe = WorkerProbe(worker.pid)
        started = time.monotonic()

        def each_second() -> None:
            probe.sample()
            if not args.json:
                in_progress, completed, failed = load.totals()
                print(f"{time.monotonic() - started:5.0f}s  in progress {in_progress:5d}  "
                      f"completed {completed:6d}  failed {failed:4d}", flush=True)

        load.go()
        hold = args.concurrent / args.cps
        done = await load.receive("done", worker, args.duration + hold + 2 * STEP_TIMEOUT + 60,
                                  each_second)
        worker_stats = probe.summary()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    worker_stats.update(_worker_latency(worker_log))
    worker_log.close()
    results = [m[1] for m in done]
    return _report(args, _merge(results), results, probe, worker_stats)


def _report(args: argparse.Namespace, tally: Tally, results: list[dict[str, Any]],
            probe: WorkerProbe, worker_stats: dict[str, Any]) -> int:
    per_call = (probe.peak_rss - probe.start_rss) / max(tally.peak_in_progress, 1) / 1024
    worker_stats["rss_kib_per_call"] = round(per_call, 1)
    placed = max(tally.placed, 1)
    worker_stats["cpu_ms_per_call"] = round(1000 * worker_stats["cpu_s"] / placed, 3)
    load_cpu_s = sum(r["cpu_s"] for r in results)
    wall = max(r["wall_s"] for r in results)
    result = {
        "engine": args.engine,
        # FreeSWITCH: how the calls reached the worker ("socket" or "park"); Asterisk: None
        "ingress": args.ingress,
        "placed": tally.placed,
        "completed": tally.completed,
        "failed": tally.failed,
        "errors": tally.errors,
        "peak_in_progress": tally.peak_in_progress,
        "cps": args.cps,
        # What the load side managed: below "cps" when it, not the worker, ran out of CPU.
        "achieved_cps": round(tally.placed / args.duration, 1),
        "duration_s": args.duration,
        "latency_ms": {f"p{q}": round(percentile(tally.latencies_ms, q), 2) for q in (50, 95, 99)},
        "worker": worker_stats,
        # The load processes together (100 = one core); near 100 per process: that process
        # is saturated and its lag is part of the latency.
        "simulator_cpu_percent": round(100 * load_cpu_s / wall, 1),
        "simulator_cpu_ms_per_call": round(1000 * load_cpu_s / placed, 3),
        "simulator_processes": [
            {"placed": r["placed"], "cpu_percent": round(100 * r["cpu_s"] / r["wall_s"], 1),
             "cpu_ms_per_call": round(1000 * r["cpu_s"] / max(r["placed"], 1), 3)}
            for r in results
        ],
    }
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_ms"]
        per_process = "  ".join(f"{p['cpu_percent']}%" for p in result["simulator_processes"])
        ingress = f" ({args.ingress} ingress)" if args.ingress else ""
        print(f"\nengine      {args.engine}{ingress}\nplaced      {tally.placed} "
              f"({result['achieved_cps']}/s of {args.cps:g}/s asked)\n"
              f"completed   {tally.completed}\nfailed      {tally.failed} {tally.errors or ''}\n"
              f"peak calls  {tally.peak_in_progress}\n"
              f"latency ms  p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}\n"
              f"worker      {worker_stats['cpu_percent']}% CPU "
              f"({worker_stats['cpu_ms_per_call']} ms per call), "
              f"peak RSS {worker_stats['peak_rss_mb']} MB "
              f"(from {worker_stats['start_rss_mb']} MB idle: "
              f"{worker_stats['rss_kib_per_call']} KiB per call in progress)\n"
              + (f"worker's own DTMF -> command ms {worker_stats['dtmf_to_command_ms']}\n"
                 if "dtmf_to_command_ms" in worker_stats else "") +
              f"simulator   {result['simulator_cpu_percent']}% CPU, "
              f"{result['simulator_cpu_ms_per_call']} ms per call ({per_process} per process; "
              f"near 100: its lag counts in the latency)")
    return 0 if tally.failed == 0 else 1


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appserver.devkit.embedded import storage_urls

    if args.cps <= 0 or args.concurrent <= 0 or args.duration <= 0 or args.sim_processes <= 0:
        print("callyard bench: --cps, --concurrent, --duration and --sim-processes must be "
              "positive", file=sys.stderr)
        return 2
    if args.sim_processes > args.concurrent:
        print("callyard bench: --sim-processes must not exceed --concurrent", file=sys.stderr)
        return 2
    if args.engine == "freeswitch":
        args.ingress = args.ingress or settings.freeswitch_ingress
    elif args.ingress:
        print("callyard bench: --ingress is FreeSWITCH's (--engine freeswitch)",
              file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if not (settings.database_url and settings.redis_url):
            # A throwaway data set, so the demo rows never land in a real database by accident.
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cy-bench-")))
            os.chmod(data_dir, 0o755)
            settings = settings.model_copy(update={"data_dir": data_dir})
        dsn, redis_url = stack.enter_context(storage_urls(settings, "callyard bench"))
        try:
            return asyncio.run(bench(args, settings, dsn, redis_url))
        except RuntimeError as exc:
            print(f"callyard bench: {exc}", file=sys.stderr)
            return 1
    return 1  # pragma: no cover - the with block always returns
