"""Asterisk worker load benchmark: one ``callyard asterisk`` worker process against the ARI
simulator running in this process (real HTTP + WebSocket), every call walking the same
three-level menu as the FreeSWITCH benchmark: welcome -1-> sales -3-> sales-deep -#-> hangup.

    .venv/bin/python benchmarks/bench_asterisk.py --rate 200 --duration 60 --hold 10

``--flow ivr`` (default) serves that menu with the real IVR engine (``ivr``, digit timeouts
long enough for ``--hold``); ``--flow flows`` uses the hand-written ``tests/flows.py`` menu,
whose 1 s input timeout caps the think time at 0.5 s per level (so calls are short).

Reports calls in progress (peak), new calls per second achieved, p50/p99 latency from a
ChannelDtmfReceived event queued by the simulator to the worker's next REST command on that
channel, the worker's CPU use and resident memory per call in progress. The simulator
shares the machine; the report prints both processes' CPU time. Redis: CALLYARD_REDIS_URL,
else an embedded server in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appserver.embedded import EmbeddedRedis  # noqa: E402
from appserver.sim.ari import AriSimulator, SoundCatalog  # noqa: E402
from ivr.calls import CallFlow, CallInfo  # noqa: E402
from ivr.model import MenuDef, OptionDef  # noqa: E402
from ivr.testing import build_menuset  # noqa: E402

_MENUS = build_menuset(
    [
        MenuDef("main", greeting=("file:ivr/welcome",), first_digit_timeout=30,
                options=(OptionDef("1", "submenu", "sales"),)),
        MenuDef("sales", greeting=("file:ivr/sales",), first_digit_timeout=30,
                options=(OptionDef("3", "submenu", "sales-deep"),)),
        MenuDef("sales-deep", greeting=("file:ivr/sales-deep",), first_digit_timeout=30,
                terminator="",
                options=(OptionDef("#", "hangup"),)),
    ],
    extensions={"9999": ("menu", "main")},
)


def ivr_factory(info: CallInfo) -> CallFlow | None:
    """The benchmark menu on the real IVR engine (``bench_asterisk:ivr_factory``)."""
    return _MENUS.flow_for(info.called)

CLK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    if os.environ.get("CALLYARD_REDIS_URL"):
        yield os.environ["CALLYARD_REDIS_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="bench-asterisk-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis")
        url = server.start()
        try:
            yield url
        finally:
            server.stop()


def start_worker(sim: AriSimulator, redis: str, flow: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "benchmarks"),
                                       str(ROOT)]),
        "CALLYARD_ASTERISK_ARI": sim.url_with_credentials,
        "CALLYARD_ASTERISK_AMI": "",
        "CALLYARD_REDIS_URL": redis,
        "CALLYARD_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "appserver.cli", "asterisk", "--flow-factory",
         "flows:factory" if flow == "flows" else "bench_asterisk:ivr_factory"],
        cwd=ROOT,
        env=env,
    )


async def one_call(sim: AriSimulator, i: int, think: float, stats: dict[str, int]) -> None:
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


async def main(args: argparse.Namespace, redis: str) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # digits come `think` s into each prompt; prompts last longer (barge-in every time)
    think = args.hold / 3 if args.flow == "ivr" else min(args.hold / 3, 0.5)
    sim = AriSimulator(sounds=SoundCatalog(default_seconds=think + 5))
    await sim.start()
    worker = start_worker(sim, redis, args.flow)
    await sim.wait_app_connected("callyard", timeout=30)
    await asyncio.sleep(0.5)
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
    worker.wait(20)
    await sim.stop()
    print(f"---- Asterisk worker benchmark (flow {args.flow}, {think:.2f}s per level) ----")
    print(f"calls placed {n} in {placed_for:.1f}s -> {n / placed_for:.1f} new calls/s "
          f"(target rate {args.rate}/s); completed {stats['ok']}, failed {stats['failed']}")
    print(f"peak calls in progress {peak_calls}")
    print(f"DTMF -> next command: p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, "
          f"max {pct(1.0):.2f} ms over {len(lat)} digits")
    print(f"worker CPU {worker_cpu:.1f}s over {elapsed:.1f}s ({100 * worker_cpu / elapsed:.0f}% "
          f"of a core); simulator CPU {sim_cpu:.1f}s")
    per_call = (peak_rss - idle_rss) / peak_calls if peak_calls else 0
    print(f"worker RSS idle {idle_rss / 1024:.1f} MiB, at peak {peak_rss / 1024:.1f} MiB "
          f"-> {per_call:.1f} KiB per call in progress")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100, help="new calls per second")
    parser.add_argument("--duration", type=float, default=20, help="seconds of call arrivals")
    parser.add_argument("--hold", type=float, default=6, help="seconds each menu walk takes")
    parser.add_argument("--flow", choices=("ivr", "flows"), default="ivr",
                        help="menu implementation the worker runs (default: ivr)")
    arguments = parser.parse_args()
    with redis_url() as url:
        asyncio.run(main(arguments, url))
