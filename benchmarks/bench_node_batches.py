"""What batching buys the FreeSWITCH reaper and the park sweep: N questions asked of the real
FreeSWITCH one round trip each (``NodeLink.api``) against ``NodeLink.api_many`` (a write per
``API_BATCH``), and N call records read from Redis one ``HGETALL`` each against one pipeline
(the embedded Redis). Wall time per round, median of the repeats; nothing else running.

    .venv/bin/python benchmarks/bench_node_batches.py            # 200 calls, 10 repeats
    .venv/bin/python benchmarks/bench_node_batches.py --calls 1000

Needs root and ``../shared/engines`` for the FreeSWITCH part (skipped otherwise); the stock
FreeSWITCH configuration is used (ESL on 127.0.0.1:8021).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import redis  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "real")]

from engines import engines, exclusive, unavailable_reason  # noqa: E402
from engines import stop as stop_engine  # noqa: E402

from appserver.devkit.embedded import EmbeddedRedis  # noqa: E402
from appserver.freeswitch.inbound import NodeManager  # noqa: E402
from appserver.settings import EslNode  # noqa: E402


def median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def node_round(calls: int, repeats: int) -> tuple[float, float]:
    nodes = NodeManager([EslNode(host="127.0.0.1", port=8021, password="ClueCon")])
    nodes.start()
    try:
        link = next(iter(nodes.links.values()))
        if not link.connected.wait(10):
            raise SystemExit("FreeSWITCH's event socket did not answer")
        asked = [(str(uuid.uuid4()), link.hostname) for _ in range(calls)]
        assert nodes.calls_exist(asked) == [False] * calls
        one_by_one = median_ms(lambda: [link.api(f"uuid_exists {u}") for u, _ in asked], repeats)
        batched = median_ms(lambda: nodes.calls_exist(asked), repeats)
        return one_by_one, batched
    finally:
        nodes.stop()


def records_round(calls: int, repeats: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedRedis(Path(directory) / "redis")
        client = redis.Redis.from_url(server.start(), decode_responses=True)
        try:
            keys = [f"callyard:fs:call:{uuid.uuid4()}" for _ in range(calls)]
            for key in keys:
                client.hset(key, mapping={"owner": "fs-gone", "node": "fs1", "caller": "+1555",
                                          "called": "9999", "started_at": "1.0"})

            def piped() -> object:
                pipe = client.pipeline(transaction=False)
                for key in keys:
                    pipe.hgetall(key)
                return pipe.execute()

            return (median_ms(lambda: [client.hgetall(k) for k in keys], repeats),
                    median_ms(piped, repeats))
        finally:
            client.close()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    one, many = records_round(args.calls, args.repeats)
    print(f"Redis, {args.calls} call records: one HGETALL each {one:.1f} ms, "
          f"one pipeline {many:.1f} ms")
    reason = unavailable_reason()
    if reason:
        print(f"FreeSWITCH part skipped: {reason}")
        return
    with exclusive("freeswitch"):
        stop_engine("freeswitch")
        engines("start", "freeswitch")
        try:
            one, many = node_round(args.calls, args.repeats)
        finally:
            stop_engine("freeswitch")
    print(f"FreeSWITCH, {args.calls} calls: uuid_exists one by one {one:.1f} ms, "
          f"batched (NodeManager.calls_exist) {many:.1f} ms")


if __name__ == "__main__":
    main()
