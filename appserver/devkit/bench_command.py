"""``callyard bench``: load one worker process with simulated callers walking the demo menu.

This process runs the engine simulator and the callers (asyncio); the worker under test is
a separate ``callyard freeswitch`` / ``callyard asterisk`` process, exactly as in
production. Every call dials 9999 and walks three menus, pressing each key as the menu
starts (barge-in): ``1`` (sales, or after-hours when closed), ``*`` (back to main), ``2``
(the support queue), then holds on music until the caller hangs up. Latency is measured
from each DTMF event the simulator sends to the worker's next playback command it receives,
both timed by the simulator at the wire (so the simulator's own scheduling on a shared CPU
is included, the callers' is not).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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

    from appserver.devkit.sim.ari.server import AriSimulator
    from appserver.devkit.sim.caller import EngineSimulator, Entry, SimulatedCall
    from appserver.devkit.sim.esl.simulator import FreeswitchSimulator
    from appserver.settings import Settings

HELP = "load-test one worker with simulated calls walking the demo menu"

# (key to press, prompt that must start next)
WALK = (
    ("1", ("file:demo/sales-menu", "file:demo/sales-closed")),
    ("*", ("file:demo/welcome",)),
    ("2", ("file:demo/connecting-support",)),
)
STEP_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("freeswitch", "asterisk"), default="freeswitch")
    parser.add_argument("--concurrent", type=int, default=500,
                        help="calls in progress to hold (default 500)")
    parser.add_argument("--cps", type=float, default=50.0,
                        help="new calls per second (default 50)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds to place calls for (default 30)")
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
        await asyncio.sleep(hold)
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


async def _wait_connected(check: Any, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with status {worker.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not connect to the simulator within 30 s")
        await asyncio.sleep(0.1)


async def bench(args: argparse.Namespace, settings: Settings, dsn: str, redis_url: str) -> int:
    from appserver.api.services import Services
    from appserver.devkit.demo import seed_demo
    from appserver.devkit.embedded import free_port
    from appserver.gc_policy import settle_gc
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
    sim: FreeswitchSimulator | AriSimulator
    if args.engine == "freeswitch":
        from appserver.devkit.sim.esl.simulator import FreeswitchSimulator  # only the engine in use

        listen = ("127.0.0.1", free_port())
        sim = fs = FreeswitchSimulator(workers=[listen])
        await fs.start()
        env["CALLYARD_FREESWITCH_LISTEN"] = f"{listen[0]}:{listen[1]}"
        env["CALLYARD_FREESWITCH_ESL"] = f"127.0.0.1:{fs.esl_port}:{fs.password}"
        connected: Any = lambda: fs.has_listeners  # noqa: E731
    else:
        from appserver.devkit.sim.ari.server import AriSimulator

        sim = ari = AriSimulator(stasis_app=settings.asterisk_app)
        await ari.start()
        env["CALLYARD_ASTERISK_ARI"] = ari.url_with_credentials
        connected = lambda: bool(ari.sockets.get(settings.asterisk_app))  # noqa: E731

    hold = args.concurrent / args.cps
    tally = Tally()
    async with Services.started(dsn, redis_url):  # publishes menus and queues to Redis
        # The worker logs as in production (a line per call); kept in a file and read after.
        worker_log = tempfile.TemporaryFile()  # noqa: SIM115 - closed once read, below
        command = (shlex.split(args.worker_command) if args.worker_command
                   else [sys.executable, "-m", "appserver.cli", args.engine])
        worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=worker_log)
        try:
            await _wait_connected(connected, worker)
            await asyncio.sleep(1)  # menus and queue definitions reach the worker
            # The load side's own collector pauses would count in the latency measured.
            settle_gc()
            probe = WorkerProbe(worker.pid)
            own_cpu = time.process_time()  # the simulator and callers, in this process
            calls: set[asyncio.Task[None]] = set()
            started = time.monotonic()
            next_report = started + 1
            n = 0
            while (now := time.monotonic()) < started + args.duration:
                due = int((now - started) * args.cps) + 1
                while n < due:
                    n += 1
                    if tally.in_progress < args.concurrent:
                        task = asyncio.create_task(_walk(sim, hold, tally))
                        calls.add(task)
                        task.add_done_callback(calls.discard)
                if now >= next_report:
                    probe.sample()
                    next_report += 1
                    if not args.json:
                        print(f"{now - started:5.0f}s  in progress {tally.in_progress:5d}  "
                              f"completed {tally.completed:6d}  failed {tally.failed:4d}",
                              flush=True)
                await asyncio.sleep(0.005)
            while calls:  # let the calls in progress finish their walk and hold
                probe.sample()
                await asyncio.sleep(0.5)
            worker_stats = probe.summary()
            load_cpu_s = time.process_time() - own_cpu
            load_cpu = 100 * load_cpu_s / (time.monotonic() - started)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
            await sim.stop()

    worker_stats.update(_worker_latency(worker_log))
    worker_log.close()
    per_call = (probe.peak_rss - probe.start_rss) / max(tally.peak_in_progress, 1) / 1024
    worker_stats["rss_kib_per_call"] = round(per_call, 1)
    placed = max(tally.placed, 1)
    worker_stats["cpu_ms_per_call"] = round(1000 * worker_stats["cpu_s"] / placed, 3)
    result = {
        "engine": args.engine,
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
        # Near 100: the simulator side is saturated and its lag is part of the latency.
        "simulator_cpu_percent": round(load_cpu, 1),
        "simulator_cpu_ms_per_call": round(1000 * load_cpu_s / placed, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        lat = result["latency_ms"]
        print(f"\nengine      {args.engine}\nplaced      {tally.placed} "
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
              f"simulator   {result['simulator_cpu_percent']}% CPU (near 100: its lag counts "
              f"in the latency)")
    return 0 if tally.failed == 0 else 1


def run(args: argparse.Namespace, settings: Settings) -> int:
    from appserver.devkit.embedded import storage_urls

    if args.cps <= 0 or args.concurrent <= 0 or args.duration <= 0:
        print("callyard bench: --cps, --concurrent and --duration must be positive",
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
