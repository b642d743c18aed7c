"""FreeSWITCH worker load benchmark: one ``callyard freeswitch`` worker process against the
ESL simulator running in this process, every call walking a three-level menu
(welcome -1-> sales -3-> sales-deep -#-> hangup) of ``tests/flows.py``.

    .venv/bin/python benchmarks/bench_freeswitch.py --rate 200 --duration 60 --hold 10

Reports calls in progress (peak), new calls per second achieved, p50/p99 latency from a
DTMF event written by the simulator to the worker's next command read back, the worker's
CPU use and resident memory per call in progress. The simulator shares the machine, so
its own CPU cost is part of what limits the figures; the report prints both processes'
CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appserver.sim.esl.simulator import Behaviour, FreeswitchSimulator  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def start_worker(port: int, menu_timeout: float, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CALLYARD_TEST_FLOW_TIMEOUT": str(menu_timeout),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
        "CALLYARD_FREESWITCH_LISTEN": f"127.0.0.1:{port}",
        "CALLYARD_FREESWITCH_ESL": "",
        "CALLYARD_LOG_LEVEL": "INFO",
        "CALLYARD_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "appserver.cli", "freeswitch", "--flow-factory", "flows:factory"],
        cwd=ROOT,
        env=env,
        stderr=log.open("wb"),
    )
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("worker did not start")


async def one_call(sim: FreeswitchSimulator, i: int, think: float, stats: dict[str, int]) -> None:
    call = await sim.place_call("9999", caller=f"+1{i:09d}")
    try:
        for expected, digit in (("file:ivr/welcome", "1"), ("file:ivr/sales", "3"),
                                ("file:ivr/sales-deep", "#")):  # fmt: skip
            await call.wait_for_prompt(expected, timeout=60)
            await asyncio.sleep(think)
            await call.press(digit)
        await call.wait_ended(60)
        stats["ok"] += 1
    except Exception:
        stats["failed"] += 1
        await call.hangup()


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "worker.log"
        worker = start_worker(port, menu_timeout=args.hold + 30, log=log)
        try:
            await measure(args, worker, port)
        finally:
            if worker.poll() is None:
                worker.kill()
        for line in log.read_text().splitlines():
            if "stopping; stats" in line:
                stats = json.loads(json.loads(line)["msg"].split("stats ", 1)[1])
                print(
                    f"measured in the worker (read DTMF -> command written): "
                    f"p50 {stats['dtmf_latency_p50_ms']} ms, "
                    f"p99 {stats['dtmf_latency_p99_ms']} ms, "
                    f"max {stats['dtmf_latency_max_ms']} ms over {stats['dtmf_samples']} digits"
                )
            elif '"level": "error"' in line or '"level": "warning"' in line:
                print("worker:", line[:300])


async def measure(args: argparse.Namespace, worker: subprocess.Popen[bytes], port: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # prompts last `hold` seconds overall per level; digits come `think` s into each prompt
    think = args.hold / 3
    sim = FreeswitchSimulator(
        [("127.0.0.1", port)], Behaviour(prompt_seconds=think + 5, connect_timeout=10)
    )
    idle_rss = rss_kb(worker.pid)
    cpu0, sim_cpu0 = cpu_seconds(worker.pid), time.process_time()
    stats = {"ok": 0, "failed": 0}
    tasks: list[asyncio.Task[None]] = []
    peak_calls, peak_rss = 0, idle_rss
    started = time.monotonic()
    n = 0
    next_report = started + 5
    while time.monotonic() - started < args.duration:
        due = int((time.monotonic() - started) * args.rate)
        while n < due:
            tasks.append(asyncio.create_task(one_call(sim, n, think, stats)))
            n += 1
        in_progress = len(sim.calls)
        if in_progress > peak_calls:
            peak_calls, peak_rss = in_progress, rss_kb(worker.pid)
        if time.monotonic() >= next_report:
            next_report += 5
            print(f"t={time.monotonic() - started:5.1f}s placed={n} in_progress={in_progress} "
                  f"ok={stats['ok']} failed={stats['failed']}", flush=True)  # fmt: skip
        await asyncio.sleep(0.01)
    placed_for = time.monotonic() - started
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    worker_cpu = cpu_seconds(worker.pid) - cpu0
    sim_cpu = time.process_time() - sim_cpu0
    lat = sorted(sim.dtmf_latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(len(lat) * p))] * 1000 if lat else float("nan")

    worker.send_signal(signal.SIGTERM)
    worker.wait(10)
    await sim.stop()
    print("---- FreeSWITCH worker benchmark ----")
    print(
        f"calls placed {n} in {placed_for:.1f}s -> {n / placed_for:.1f} new calls/s "
        f"(target rate {args.rate}/s); completed {stats['ok']}, failed {stats['failed']}"
    )
    print(f"peak calls in progress {peak_calls}")
    print(
        f"DTMF -> next command, seen from the simulator: p50 {pct(0.5):.2f} ms, "
        f"p99 {pct(0.99):.2f} ms, "
        f"max {pct(1.0):.2f} ms over {len(lat)} digits"
    )
    print(
        f"worker CPU {worker_cpu:.1f}s over {elapsed:.1f}s ({100 * worker_cpu / elapsed:.0f}% "
        f"of a core); simulator CPU {sim_cpu:.1f}s"
    )
    per_call = (peak_rss - idle_rss) / peak_calls if peak_calls else 0
    print(f"worker RSS idle {idle_rss / 1024:.1f} MiB, at peak {peak_rss / 1024:.1f} MiB "
          f"-> {per_call:.1f} KiB per call in progress")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100, help="new calls per second")
    parser.add_argument("--duration", type=float, default=20, help="seconds of call arrivals")
    parser.add_argument("--hold", type=float, default=6, help="seconds each menu walk takes")
    asyncio.run(main(parser.parse_args()))
