"""`callyard bench --json` runs a short load and reports what the README promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("engine", "processes", "ingress"),
                         [("freeswitch", 1, ""), ("freeswitch", 2, ""), ("asterisk", 2, ""),
                          ("freeswitch", 2, "park")])
def test_bench_json(engine: str, processes: int, ingress: str) -> None:
    """One worker against ``processes`` simulated engine nodes, each placing its share
    (FreeSWITCH park: the worker takes the parked calls of every node over its inbound
    connection to each)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    out = subprocess.run(
        [sys.executable, "-m", "appserver.cli", "bench", "--engine", engine,
         "--concurrent", "20", "--cps", "10", "--duration", "2", "--json",
         "--sim-processes", str(processes), *(["--ingress", ingress] if ingress else [])],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ingress"] == (ingress or "socket" if engine == "freeswitch" else None)
    assert result["placed"] == result["completed"] == 20 and result["failed"] == 0
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert result["worker"]["peak_rss_mb"] > 10 and result["worker"]["cpu_percent"] >= 0
    # placed / duration, and CPU per call placed of the worker and of the load side
    assert result["achieved_cps"] == 10.0
    assert result["worker"]["cpu_ms_per_call"] > 0 and result["simulator_cpu_ms_per_call"] > 0
    shares = result["simulator_processes"]
    assert [p["placed"] for p in shares] == [20 // processes] * processes
    assert all(p["cpu_ms_per_call"] > 0 for p in shares)


@pytest.mark.parametrize("args", [["--cps", "0"], ["--sim-processes", "0"]])
def test_bench_rejects_nonsense(args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "appserver.cli", "bench", *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2 and "must be positive" in out.stderr


def test_bench_ingress_is_freeswitchs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "appserver.cli", "bench", "--engine", "asterisk",
         "--ingress", "park"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2 and "--ingress is FreeSWITCH's" in out.stderr
