"""Metrics: the API's /metrics, the Redis poller's gauges, the workers' health server."""

from __future__ import annotations

from functools import partial

import aiohttp
import httpx
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from appserver.api.app import create_app
from appserver.cdr import STREAM
from appserver.cdr.writer import stream_backlog
from appserver.devkit.embedded import free_port
from appserver.health import HealthServer
from appserver.metrics import RedisStatsPoller
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.store import QueueStore, now_ms


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_api_serves_metrics() -> None:
    app = create_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://api") as client:
        resp = await client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "callyard_calls_in_progress" in resp.text


async def test_poller_reads_queues_agents_and_cdr_backlog(redis_client: aioredis.Redis) -> None:
    store = QueueStore(redis_client)
    await store.sync_agent(AgentConfig("m_ann"))
    await store.sync_agent(AgentConfig("m_bob"))
    await store.sync_queue(QueueConfig("m_sales"), [Member("m_ann"), Member("m_bob")])
    await store.agent_action("m_ann", "login")
    await store.agent_action("m_bob", "login")
    await store.agent_action("m_bob", "break", "lunch")
    t0 = now_ms()
    await store.enqueue("m_sales", "m-call-1", "w1", now=t0 - 20_000)
    await store.enqueue("m_sales", "m-call-2", "w1", now=t0 - 5_000)
    for i in range(3):
        await redis_client.xadd(STREAM, {"call_id": f"x{i}"})
    poller = RedisStatsPoller(store, partial(stream_backlog, redis_client))
    await poller.poll()
    assert sample("callyard_queue_waiting", queue="m_sales") == 2
    longest = sample("callyard_queue_longest_wait_seconds", queue="m_sales")
    assert longest is not None and 19 <= longest <= 25
    assert sample("callyard_queue_service_level", queue="m_sales") is not None
    assert sample("callyard_agents", state="available") == 1
    assert sample("callyard_agents", state="break") == 1
    assert sample("callyard_cdr_backlog") == 3
    assert sample("callyard_cdr_pending") == 0
    await store.drop_queue("m_sales")
    await poller.poll()
    assert sample("callyard_queue_waiting", queue="m_sales") is None  # gone with its queue


async def test_health_server_ready_not_ready_and_stopping() -> None:
    state = {"redis": "ok"}

    async def checks() -> dict[str, str]:
        return dict(state)

    port = free_port()
    server = HealthServer(f"127.0.0.1:{port}", checks)
    await server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/readyz") as resp:
                assert resp.status == 200 and (await resp.json())["ready"] is True
            state["redis"] = "error: connection refused"
            async with http.get(base + "/readyz") as resp:
                body = await resp.json()
                assert resp.status == 503 and body["checks"]["redis"].startswith("error")
            state["redis"] = "ok"
            server.stopping = True
            async with http.get(base + "/readyz") as resp:
                assert resp.status == 503
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "stopping"
            async with http.get(base + "/metrics") as resp:
                assert resp.status == 200 and "callyard_" in await resp.text()
    finally:
        await server.stop()


async def test_api_metrics_merge_peer_processes_in_dev_mode() -> None:
    """callyard dev's /metrics: this process and a peer (a worker's health server), one
    HELP/TYPE per family, samples told apart by ``process``; a peer down says so."""
    from prometheus_client.parser import text_string_to_metric_families

    from appserver.metrics import CallMetrics
    from ivr.calls import CallInfo

    call = CallInfo(call_id="m1", caller="+1555", called="9999", engine="freeswitch", node="merge")
    CallMetrics().call_started(call)
    worker = HealthServer(f"127.0.0.1:{free_port()}", _no_checks)
    await worker.start()  # same registry as this process: both expose the same families
    try:
        peers = {"freeswitch-worker": f"http://127.0.0.1:{worker.port}/metrics",
                 "asterisk-worker": f"http://127.0.0.1:{free_port()}/metrics"}  # nobody there
        app = create_app(metrics_peers=peers)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api") as client:
            text = (await client.get("/metrics")).text
    finally:
        await worker.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    calls = [(s.labels["process"], s.labels["engine"]) for s in families["callyard_calls"].samples
             if s.name == "callyard_calls_total" and s.labels.get("node") == "merge"]
    assert sorted(calls) == [("api", "freeswitch"), ("freeswitch-worker", "freeswitch")]
    up = {s.labels["process"]: s.value for s in families["callyard_process_up"].samples}
    assert up == {"api": 1, "freeswitch-worker": 1, "asterisk-worker": 0}
    for kind in ("# HELP ", "# TYPE "):
        names = [line.split()[2] for line in text.splitlines() if line.startswith(kind)]
        assert len(names) == len(set(names))


async def _no_checks() -> dict[str, str]:
    return {}
