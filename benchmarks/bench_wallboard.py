"""Wallboard cost: one snapshot (every queue, agent and queued caller) and the delay from a
queue event to the snapshot reaching a subscriber, against real Redis.

    python benchmarks/bench_wallboard.py --queues 20 --agents 200 --callers 500

Uses CALLYARD_REDIS_URL if set (flushes that database!), else an embedded Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from appserver.api.wallboard import Wallboard
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.store import QueueStore, now_ms


async def measure(url: str, args: argparse.Namespace) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    await client.flushdb()
    store = QueueStore(client)
    queues = [f"q{i:03d}" for i in range(args.queues)]
    agents = [f"a{i:04d}" for i in range(args.agents)]
    for a in agents:
        await store.sync_agent(AgentConfig(a))
    for i, q in enumerate(queues):
        await store.sync_queue(QueueConfig(q), [Member(a) for a in agents[i::len(queues)]])
    start = now_ms() - 8 * 3600 * 1000  # a working day's intervals behind us
    for n in range(args.callers):
        await store.enqueue(queues[n % len(queues)], f"c{n}", "w1",
                            now=start + n * 3600 * 8000 // args.callers)
    for a in agents[: len(agents) // 2]:
        await store.agent_action(a, "login")
    for q in queues:
        await store.match(q)
    board = Wallboard(client, store, "UTC")
    times = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        await board.snapshot()
        times.append(time.perf_counter() - t)
    print(f"snapshot of {args.queues} queues, {args.agents} agents, {args.callers} callers: "
          f"median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")

    await board.start()
    sub = board.subscribe()
    delays = []
    for n in range(args.rounds):
        while not sub.empty():
            sub.get_nowait()
        t = time.perf_counter()
        await store.enqueue(queues[0], f"late{n}", "w1")
        await sub.get()
        delays.append(time.perf_counter() - t)
    await board.stop()
    print(f"event -> snapshot delivered: median {statistics.median(delays) * 1000:.0f} ms, "
          f"max {max(delays) * 1000:.0f} ms")
    await client.aclose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queues", type=int, default=20)
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--callers", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    url = os.environ.get("CALLYARD_REDIS_URL")
    server = None
    if not url:
        from appserver.devkit.embedded import EmbeddedRedis

        server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="bench-wallboard-")))
        url = server.start()
    try:
        asyncio.run(measure(url, args))
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
