"""Soak benchmark: M calls in progress for N minutes through both workers, every call
accounted for by exactly one CDR in PostgreSQL.

    .venv/bin/python benchmarks/bench_soak.py                      # 10 min, 500 calls
    .venv/bin/python benchmarks/bench_soak.py --minutes 2 --calls 200

Runs embedded PostgreSQL and Redis (or CALLYARD_DATABASE_URL / CALLYARD_REDIS_URL), the
ARI and ESL simulators in this process, and as subprocesses ``callyard asterisk``,
``callyard freeswitch`` (flows of ``tests/flows.py``) and ``callyard cdr-writer``. Half the
calls go to each engine; each caller hears the menu, walks main -1-> sales -*-> main a few
times over ``--hold`` seconds and hangs up, and a new call replaces it at once.

Reports calls placed, calls per second, the resident memory of every process once the
load is up and at the end, and the CDR count against the calls placed (must be equal).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appserver.devkit.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402
from appserver.devkit.sim.ari import AriSimulator  # noqa: E402
from appserver.devkit.sim.caller import SimulatedCall  # noqa: E402
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Load:
    def __init__(self, sims: list[AriSimulator | FreeswitchSimulator], hold: float) -> None:
        self.sims = sims
        self.hold = hold
        self.placed: dict[str, int] = {"asterisk": 0, "freeswitch": 0}
        self.served_ids: set[str] = set()  # calls that reached the menu (a flow served them)
        self.failures = 0
        self.stopping = False

    async def caller(self, slot: int) -> None:
        sim = self.sims[slot % len(self.sims)]
        engine = "asterisk" if isinstance(sim, AriSimulator) else "freeswitch"
        await asyncio.sleep(random.random() * self.hold)  # spread the starts
        while not self.stopping:
            self.placed[engine] += 1
            call: SimulatedCall = await sim.place_call("9999", caller=f"+1999{slot:05d}")
            try:
                await call.wait_for_prompt("file:ivr/welcome", 30)
                self.served_ids.add(call.call_id)
                end = time.monotonic() + self.hold * (0.5 + random.random())
                while time.monotonic() < end:
                    await asyncio.sleep(min(2.0, max(0.0, end - time.monotonic())))
                    await call.press("1")
                    await call.wait_for_prompt("file:ivr/sales", 30)
                    await asyncio.sleep(0.5)
                    await call.press("*")
                    await call.wait_for_prompt("file:ivr/welcome", 30)
            except TimeoutError:
                self.failures += 1
            await call.hangup()


async def run(args: argparse.Namespace) -> int:
    data = Path(tempfile.mkdtemp(prefix="callyard-soak-"))
    pg = redis = None
    dsn = os.environ.get("CALLYARD_DATABASE_URL")
    redis_url = os.environ.get("CALLYARD_REDIS_URL")
    if not dsn:
        pg = EmbeddedPostgres(data / "pg", fast=True)
        dsn = pg.start()
    if not redis_url:
        redis = EmbeddedRedis(data / "redis")
        redis_url = redis.start().rsplit("/", 1)[0] + "/0"
    from appserver.store.db import create_pool
    from appserver.store.migrations import migrate

    await migrate(dsn)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    before = int(await pool.fetchval("SELECT count(*) FROM cdrs"))
    ari = AriSimulator()
    await ari.start()
    fs_listen = free_port()
    esl = FreeswitchSimulator([("127.0.0.1", fs_listen)], Behaviour(prompt_seconds=1.0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
               CALLYARD_DATABASE_URL=dsn, CALLYARD_REDIS_URL=redis_url,
               CALLYARD_LOG_LEVEL="WARNING", CALLYARD_TEST_FLOW_TIMEOUT="60",
               CALLYARD_ASTERISK_ARI=ari.url_with_credentials,
               CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{fs_listen}")
    cli = [sys.executable, "-m", "appserver.cli"]
    procs = {
        "asterisk": subprocess.Popen([*cli, "asterisk", "--flow-factory", "flows:factory"],
                                     env=env),
        "freeswitch": subprocess.Popen([*cli, "freeswitch", "--flow-factory", "flows:factory"],
                                       env=env),
        "cdr-writer": subprocess.Popen([*cli, "cdr-writer"], env=env),
    }
    sims: list[AriSimulator | FreeswitchSimulator] = []
    if "asterisk" in args.engines:
        sims.append(ari)
    if "freeswitch" in args.engines:
        sims.append(esl)
    load = Load(sims, args.hold)
    try:
        if "asterisk" in args.engines:
            await ari.wait_app_connected("callyard", 30)
        await asyncio.sleep(2.0)  # the FreeSWITCH worker listening
        started = time.monotonic()
        tasks = [asyncio.create_task(load.caller(i)) for i in range(args.calls)]
        await asyncio.sleep(min(args.hold * 2, args.minutes * 30))
        mem_start = {name: rss_mb(p.pid) for name, p in procs.items()}
        mem_start["bench (simulators)"] = rss_mb(os.getpid())
        print(f"load up after {time.monotonic() - started:.0f}s: "
              f"{sum(load.placed.values())} calls placed", flush=True)
        deadline = started + args.minutes * 60
        while time.monotonic() < deadline:
            await asyncio.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
            in_progress = len(ari.channels) + sum(1 for c in esl.calls.values() if not c.ended)
            rss = " ".join(f"{name}={rss_mb(p.pid):.1f}MB" for name, p in procs.items())
            print(f"  t={time.monotonic() - started:4.0f}s placed={sum(load.placed.values())} "
                  f"simulated channels={in_progress} {rss}", flush=True)
        mem_end = {name: rss_mb(p.pid) for name, p in procs.items()}
        mem_end["bench (simulators)"] = rss_mb(os.getpid())
        load.stopping = True
        await asyncio.wait_for(asyncio.gather(*tasks), args.hold * 2 + 60)
        elapsed = time.monotonic() - started
        placed = sum(load.placed.values())
        served = len(load.served_ids)
        cdrs = before
        for _ in range(120):
            cdrs = int(await pool.fetchval("SELECT count(*) FROM cdrs")) - before
            if cdrs >= placed:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)
        cdrs = int(await pool.fetchval("SELECT count(*) FROM cdrs")) - before
        print(f"\nsoak: {args.minutes} min target, {elapsed:.0f}s run, {args.calls} calls in "
              f"progress, hold ~{args.hold:.0f}s")
        print(f"calls placed {placed} (asterisk {load.placed['asterisk']}, freeswitch "
              f"{load.placed['freeswitch']}), {placed / elapsed:.1f}/s; served by a flow "
              f"{served}; caller-side timeouts {load.failures}")
        print(f"CDRs stored {cdrs}  ->  {'EQUAL' if cdrs == placed else 'MISMATCH'} "
              f"to calls placed")
        print("resident memory (MB)     at load-up   at end")
        for name in mem_start:
            print(f"  {name:22s} {mem_start[name]:9.1f} {mem_end[name]:8.1f}")
        return 0 if cdrs == placed else 1
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
        await esl.stop()
        await ari.stop()
        await pool.close()
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="duration (10)")
    parser.add_argument("--calls", type=int, default=500, help="calls in progress (500)")
    parser.add_argument("--hold", type=float, default=20.0,
                        help="average seconds a caller stays (20)")
    parser.add_argument("--engines", default="asterisk,freeswitch",
                        help="comma-separated engines to load (both)")
    args = parser.parse_args()
    args.engines = {e.strip() for e in args.engines.split(",") if e.strip()}
    if not args.engines or not args.engines <= {"asterisk", "freeswitch"}:
        parser.error("--engines: asterisk and/or freeswitch")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
