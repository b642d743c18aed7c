"""The two runtime shells run the same async code: asyncio, and gevent without an event loop
(appserver.shells.green.run). Redis is a real server; these tests need no monkey-patching:
everything the gevent side waits on is cooperative."""

from __future__ import annotations

import asyncio
import json

import gevent
import gevent.socket
import pytest
import redis

from appserver.cdr import STREAM
from appserver.cdr.record import CdrRecord
from appserver.cdr.sink import CdrSink
from appserver.devkit.embedded import free_port
from appserver.health import HealthServer
from appserver.shells import Shell, aio, green


async def relay(shell: Shell, items: list[str]) -> list[str]:
    """A worker task takes items off a queue; the caller waits for it with an event."""
    queue, done = shell.queue(), shell.event()
    seen: list[str] = []

    async def worker() -> None:
        while True:
            seen.append(await queue.get())
            queue.task_done()
            if len(seen) == len(items):
                done.set()

    task = shell.spawn(worker(), "relay")
    assert not await done.wait(0.05)  # nothing put yet: the wait times out
    for item in items:
        queue.put_nowait(item)
    await queue.join()
    assert await done.wait(1.0)
    await shell.cancel([task], 1.0)
    return seen


async def test_asyncio_shell() -> None:
    assert await relay(aio, ["a", "b", "c"]) == ["a", "b", "c"]


def test_gevent_shell_runs_the_same_code() -> None:
    assert green.run(relay(green, ["a", "b", "c"])) == ["a", "b", "c"]


def test_gevent_shell_refuses_a_coroutine_that_waits_on_asyncio() -> None:
    with pytest.raises(RuntimeError, match="awaited something that suspends"):
        green.run(asyncio.sleep(0))


def record(n: int) -> CdrRecord:
    return CdrRecord(call_id=f"green-{n}", engine="freeswitch", node="n1", caller="+1555",
                     called="9999", started_at=1.0, ended_at=2.0, disposition="hangup",
                     hangup_cause="NORMAL_CLEARING")


def test_gevent_cdr_sink_buffers_while_redis_is_unreachable(redis_url: str) -> None:
    sink = CdrSink(redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2))
    sink.start()
    sink(record(1))
    sink(record(2))
    assert not green.run(sink.flush(0.5))
    assert sink.backlog == 2
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    sink.redis = client  # "Redis is back"
    assert green.run(sink.stop(5))
    ids = [fields["call_id"] for _, fields in client.xrange(STREAM)]
    assert [i for i in ids if i.startswith("green-")] == ["green-1", "green-2"]
    client.close()


async def test_health_server_answers_in_bytes() -> None:
    server = HealthServer("127.0.0.1:1", lambda: asyncio.sleep(0, {"redis": "ok"}))
    assert await server.respond("POST", "/healthz") == (405, "text/plain",
                                                        b"method not allowed\n")
    status, _, body = await server.respond("GET", "/nothing")
    assert status == 404 and b"/readyz" in body
    server.stopping = True
    status, content_type, body = await server.respond("GET", "/readyz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body)["checks"] == {"redis": "ok",
                                          "shutdown": "stopping: not taking new calls"}


def http_get(port: int, path: str) -> tuple[int, bytes]:
    sock = gevent.socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_gevent_health_server() -> None:
    async def checks() -> dict[str, str]:
        return {"redis": "error: down"}

    server = HealthServer(f"127.0.0.1:{free_port()}", checks, green)
    green.run(server.start())
    try:
        assert http_get(server.port, "/healthz") == (200, b'{"status": "ok"}')
        status, body = http_get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["checks"] == {"redis": "error: down"}
        status, body = http_get(server.port, "/metrics")
        assert status == 200 and b"callyard_" in body
    finally:
        green.run(server.stop())
    gevent.sleep(0)


def test_redis_readiness_checks_ask_the_os_when_they_must_not_wait(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """redis-py's check of a pooled connection (poll, timeout 0) answers from the OS's poll;
    a poll that waits stays gevent's: other greenlets run meanwhile. A real client works
    through it, and a connection holding unread data is still not handed out."""
    import socket

    from redis._parsers import hiredis

    monkeypatch.setattr(hiredis, "select", hiredis.select)  # put back afterwards
    assert green.quick_redis_checks()
    a, b = socket.socketpair()
    with a, b:
        assert not hiredis._socket_can_read(a, 0)
        b.send(b"+OK\r\n")
        assert hiredis._socket_can_read(a, 0)
        a.recv(16)
        writer = gevent.spawn_later(0.05, b.send, b"x")  # runs only if the poll yields
        assert hiredis._socket_can_read(a, 2.0)
        assert writer.dead
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.set("callyard:test:ready", "1")
        assert client.get("callyard:test:ready") == "1"
        conn = client.connection_pool.get_connection()
        conn.send_command("PING")  # its reply left unread, then the connection given back
        client.connection_pool.release(conn)
        assert client.ping()  # the pool noticed, reconnected
    finally:
        client.delete("callyard:test:ready")
        client.close()
