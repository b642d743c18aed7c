"""Capacity: one worker, then two side by side, sharing one Redis and one PostgreSQL.

    .venv/bin/python benchmarks/bench_capacity.py                       # FreeSWITCH, 30 s
    .venv/bin/python benchmarks/bench_capacity.py --engine asterisk --concurrent 1000 --cps 100

Each "node" is one ``callyard bench`` (an engine simulator and its own worker process, every
call walking the demo menu, queueing and holding on music), all against the same embedded
Redis and PostgreSQL, as several engine nodes with a worker each would share them. Prints per
run: calls in progress, new calls/s, p99 key press -> next prompt, failures, each worker's CPU,
and the shared stores' load per call: Redis commands and CDR records (entries added to the CDR
stream, each one PostgreSQL row for ``callyard cdr-writer``); at R new calls/s the stores see
about R times these: the figures the README's sizing rule comes from. On a 2-core machine two nodes
share the cores with their simulators, so the two-node run shows where the machine, not the
worker, runs out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def redis_counters(client: Any) -> tuple[int, int]:
    """(commands processed so far, CDR stream length)."""
    from appserver.cdr import STREAM

    return int(client.info("stats")["total_commands_processed"]), int(client.xlen(STREAM))


def run_nodes(n: int, args: argparse.Namespace, dsn: str, redis_url: str,
              client: Any) -> dict[str, Any]:
    env = {**os.environ, "CALLYARD_DATABASE_URL": dsn, "CALLYARD_REDIS_URL": redis_url,
           "CALLYARD_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "appserver.cli", "bench", "--engine", args.engine,
           "--concurrent", str(args.concurrent), "--cps", str(args.cps),
           "--duration", str(args.duration), "--json"]
    commands0, cdrs0 = redis_counters(client)
    started = time.monotonic()
    nodes = []
    for _ in range(n):
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
        time.sleep(2)  # one at a time through migrations and the demo seed
    results = []
    for node in nodes:
        out, err = node.communicate()
        if not out.strip():
            raise SystemExit(f"callyard bench printed nothing\n{err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    elapsed = time.monotonic() - started
    commands1, cdrs1 = redis_counters(client)
    completed = sum(int(r["completed"]) for r in results)
    failed = sum(int(r["failed"]) for r in results)
    placed = max(completed + failed, 1)  # a failed call cost the stores too
    return {
        "nodes": n,
        "calls_in_progress": sum(int(r["peak_in_progress"]) for r in results),
        "new_calls_per_s": round(sum(float(r["cps"]) for r in results), 1),
        "completed": completed,
        "failed": failed,
        "p99_ms": [r["latency_ms"]["p99"] for r in results],
        "worker_cpu_percent": [r["worker"]["cpu_percent"] for r in results],
        # Per call placed (set-up and wind-down included): at R new calls/s the stores see
        # about R times these, whatever the number of nodes.
        "redis_commands_per_call": round((commands1 - commands0) / placed, 1),
        "cdr_records_per_call": round((cdrs1 - cdrs0) / placed, 2),
        "elapsed_s": round(elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("freeswitch", "asterisk"), default="freeswitch")
    parser.add_argument("--concurrent", type=int, default=2000, help="per node")
    parser.add_argument("--cps", type=float, default=200.0, help="new calls/s per node")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--nodes", default="1,2", help="node counts to run, in order")
    args = parser.parse_args()

    import redis

    from appserver.devkit.embedded import EmbeddedPostgres, EmbeddedRedis, guard_directory

    data = Path(tempfile.mkdtemp(prefix="cy-capacity-"))
    os.chmod(data, 0o755)
    guard_directory(data)  # stops both servers and removes the folder however we exit
    pg, rd = EmbeddedPostgres(data / "postgres", fast=True), EmbeddedRedis(data / "redis")
    dsn, redis_url = pg.start(), rd.start()
    client = redis.Redis.from_url(redis_url)
    rows = []
    try:
        for n in (int(v) for v in args.nodes.split(",")):
            row = run_nodes(n, args, dsn, redis_url, client)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        client.close()
        rd.stop()
        pg.stop()
    print(f"\n{args.engine}: nodes  calls  new/s  failed  p99 ms (each)  worker CPU % (each)  "
          "Redis cmds/call  CDRs/call")
    for r in rows:
        print(f"{r['nodes']:>17}  {r['calls_in_progress']:5d}  {r['new_calls_per_s']:5.0f}  "
              f"{r['failed']:6d}  {r['p99_ms']!s:13}  {r['worker_cpu_percent']!s:19}  "
              f"{r['redis_commands_per_call']:15.1f}  {r['cdr_records_per_call']:9.2f}")
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
