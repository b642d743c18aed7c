"""Worker load benchmark, both engines, at the targets of the engine issues.

    .venv/bin/python benchmarks/bench_workers.py                 # 60 s, 2,000 calls, 200/s
    .venv/bin/python benchmarks/bench_workers.py --duration 20 --engines asterisk

Runs ``callyard bench`` (one worker process against the simulator in another) for each
engine: every call walks three menus of the demo IVR with barge-in, queues, holds on music
and hangs up. Prints each run's JSON, then a table against the targets: at least 2,000 calls
in progress, 200 new calls per second, p99 from a key press to the next prompt under 20 ms,
and the worker's resident memory per call in progress.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_CALLS, TARGET_CPS, TARGET_P99_MS = 2000, 200.0, 20.0


def run(engine: str, args: argparse.Namespace) -> dict[str, object]:
    cmd = [sys.executable, "-m", "appserver.cli", "bench", "--engine", engine,
           "--concurrent", str(args.concurrent), "--cps", str(args.cps),
           "--duration", str(args.duration), "--json"]
    env = {**os.environ, "CALLYARD_LOG_LEVEL": "WARNING"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if not out.stdout.strip():
        raise SystemExit(f"{engine}: callyard bench printed nothing\n{out.stderr[-2000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="freeswitch,asterisk")
    parser.add_argument("--concurrent", type=int, default=TARGET_CALLS)
    parser.add_argument("--cps", type=float, default=TARGET_CPS)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    ok = True
    rows = []
    for engine in args.engines.split(","):
        r = run(engine, args)
        peak = int(r["peak_in_progress"])  # type: ignore[call-overload]
        p99 = float(r["latency_ms"]["p99"])  # type: ignore[index]
        rss = float(r["worker"]["peak_rss_mb"])  # type: ignore[index]
        per_call = float(r["worker"]["rss_kib_per_call"])  # type: ignore[index]
        met = peak >= TARGET_CALLS and p99 < TARGET_P99_MS and r["failed"] == 0
        ok &= met
        rows.append(f"{engine:10} calls in progress {peak:5d}  p99 {p99:6.2f} ms  "
                    f"failed {r['failed']}  peak RSS {rss:6.1f} MB ({per_call:.1f} KiB/call)  "
                    f"{'meets targets' if met else 'BELOW TARGET'}")
    print("\n".join(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
