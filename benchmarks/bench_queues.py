"""Queue matching throughput and latency at call-centre scale.

Default shape: 100 queues, 1,000 agents (each in 3 queues, tiers 1-2, every strategy in
rotation), 5,000 waiting callers. Two phases, both against a real Redis:

1. burst: all agents log in at once and every queue is matched: offers per second when
   many agents are free.
2. steady state: every agent is busy and 5,000 callers wait; repeatedly one agent ends a
   call, the queue is matched (timed: the match latency a caller sees), the offer is
   accepted and a new caller joins. Reports offers/s and p50/p99/max match latency.
3. the per-second heartbeat of a worker owning every caller, and reading all stats.

    .venv/bin/python benchmarks/bench_queues.py [--seconds 10] [--queues 100] ...

Uses CALLYARD_REDIS_URL when set (the database is FLUSHED), else an embedded Redis.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import redis

from appserver.queues.model import STRATEGIES, AgentConfig, Member, QueueConfig
from appserver.queues.store import QueueStore
from appserver.shells.green import run


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queues", type=int, default=100)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--callers", type=int, default=5000)
    ap.add_argument("--per-agent-queues", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="steady-state duration")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    url = os.environ.get("CALLYARD_REDIS_URL")
    server = None
    if not url:
        from appserver.devkit.embedded import EmbeddedRedis

        server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-queues-")))
        url = server.start()
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    store = QueueStore(client)
    try:
        queues = [f"q{i:03d}" for i in range(args.queues)]
        agents = [f"a{i:04d}" for i in range(args.agents)]
        members: dict[str, list[Member]] = {q: [] for q in queues}
        agent_queues: dict[str, list[str]] = {}
        t = time.perf_counter()
        pipe_skills = ["english", "french", "billing"]
        for a in agents:
            skills = {s: rng.randint(1, 10) for s in pipe_skills}
            run(store.sync_agent(AgentConfig(a, skills=skills)))
            agent_queues[a] = rng.sample(queues, args.per_agent_queues)
            for q in agent_queues[a]:
                members[q].append(Member(a, tier=rng.randint(1, 2), penalty=rng.randint(0, 5)))
        for i, q in enumerate(queues):
            strategy = STRATEGIES[i % len(STRATEGIES)]
            skills = {"english": 3} if strategy == "skills" else {}
            run(store.sync_queue(QueueConfig(q, strategy=strategy, wrapup_seconds=0,  # type: ignore[arg-type]
                                             tier_widen_seconds=0, required_skills=skills),
                                 members[q]))
        n = 0
        for _ in range(args.callers):
            n += 1
            run(store.enqueue(rng.choice(queues), f"c{n}", "bench", rng.choice([0, 0, 0, 5]),
                              lease_ms=3_600_000))
        print(f"setup: {args.queues} queues, {args.agents} agents, {args.callers} callers "
              f"in {time.perf_counter() - t:.1f}s")

        # Phase 1: everyone logs in, every queue is matched.
        for a in agents:
            run(store.agent_action(a, "login"))
        t = time.perf_counter()
        burst = []
        for q in queues:
            burst += run(store.match(q))
        dt = time.perf_counter() - t
        print(f"burst: {len(burst)} offers from {len(queues)} matches in {dt * 1000:.0f} ms "
              f"= {len(burst) / dt:,.0f} offers/s")
        busy: list[tuple[str, str]] = []
        for o in burst:
            if run(store.accept(o.agent, o.call_id)).ok:
                busy.append((o.agent, o.call_id))
        for q in queues:  # ring_all queues may leave losers free: keep matching until stable
            for o in run(store.match(q)):
                if run(store.accept(o.agent, o.call_id)).ok:
                    busy.append((o.agent, o.call_id))
        waiting = sum(client.zcard(store.keys.waiting(q)) for q in queues)
        for _ in range(args.callers - waiting):
            n += 1
            run(store.enqueue(rng.choice(queues), f"c{n}", "bench", lease_ms=3_600_000))

        # Phase 2: steady state.
        latencies: list[float] = []
        offers = 0
        end = time.monotonic() + args.seconds
        t = time.perf_counter()
        while time.monotonic() < end and busy:
            agent, call = busy.pop(rng.randrange(len(busy)))
            run(store.finish(call))
            n += 1
            run(store.enqueue(rng.choice(queues), f"c{n}", "bench", lease_ms=3_600_000))
            for q in agent_queues[agent]:
                t0 = time.perf_counter()
                got = run(store.match(q))
                latencies.append(time.perf_counter() - t0)
                for o in got:
                    offers += 1
                    if run(store.accept(o.agent, o.call_id)).ok:
                        busy.append((o.agent, o.call_id))
                if got:
                    break
        dt = time.perf_counter() - t
        waiting = sum(client.zcard(store.keys.waiting(q)) for q in queues)
        ms = [v * 1000 for v in latencies]
        run(store.tick("bench", lease_ms=3_600_000))
        client.config_resetstat()
        t0 = time.perf_counter()
        for _ in range(5):
            owned = len(run(store.tick("bench", lease_ms=3_600_000)))
        tick_ms = (time.perf_counter() - t0) / 5 * 1000
        server_ms = client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"] / 1000
        t0 = time.perf_counter()
        for q in queues:
            run(store.stats(q))
        stats_ms = (time.perf_counter() - t0) * 1000
        print(f"steady: {offers} offers in {dt:.1f}s = {offers / dt:,.0f} offers/s "
              f"(each with finish + enqueue + accept); {len(ms)} matches, "
              f"p50 {statistics.median(ms):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
              f"max {max(ms):.2f} ms; {waiting} callers waiting at the end")
        print(f"heartbeat: one worker owning {owned} callers renews leases and reads positions "
              f"in {tick_ms:.1f} ms ({server_ms:.1f} ms inside Redis); stats of all "
              f"{len(queues)} queues in {stats_ms:.1f} ms")
    finally:
        client.close()
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
