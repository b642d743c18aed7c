"""End to end: the ESL simulator (real TCP, asyncio, in this process) calls a real
``callyard freeswitch`` worker running in a subprocess (gevent stays out of pytest). The
shared scenario list runs on every engine target in tests/real/test_scenarios_real.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis
from scenarios import ENDPOINTS, expect, press, prompt, walk
from test_cdr_asterisk import drain_cdrs

from appserver.devkit.sim.esl.behaviour import FALLBACK_PROMPT, Behaviour
from appserver.devkit.sim.esl.channel import encode_connect_reply
from appserver.devkit.sim.esl.simulator import FreeswitchSimulator

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(prompt_seconds=0.15, talk_seconds=0.1, no_answer_seconds=0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(port: int, redis_url: str, stderr: IO[str] | int = subprocess.PIPE,
                 **extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
        "CALLYARD_FREESWITCH_LISTEN": f"127.0.0.1:{port}",
        "CALLYARD_FREESWITCH_ESL": "",
        "CALLYARD_LOG_LEVEL": "WARNING",
        "CALLYARD_REDIS_URL": redis_url,  # no queues: the scenarios expect none
        **extra,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "appserver.cli", "freeswitch", "--flow-factory", "flows:factory"],
        cwd=ROOT,
        env=env,
        stderr=stderr,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"worker exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("worker did not start listening")


def stop_worker(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode() if err else ""


@pytest.fixture(scope="module")
def worker_port(worker_redis_url: str) -> Iterator[int]:
    port = free_port()
    proc = start_worker(port, worker_redis_url)
    yield port
    stop_worker(proc)


@pytest.fixture
async def sim(worker_port: int) -> AsyncIterator[FreeswitchSimulator]:
    s = FreeswitchSimulator([("127.0.0.1", worker_port)], Behaviour(endpoints=ENDPOINTS, **FAST))
    yield s
    await s.stop()


async def test_worker_not_running_falls_back_to_polite_message() -> None:
    sim = FreeswitchSimulator([("127.0.0.1", free_port()), ("127.0.0.1", free_port())])
    call = await sim.place_call("9999")
    await call.wait_ended(5)
    assert call.transcript.lines() == [
        "ringing",
        "answered",
        "prompt_started file:ivr/ivr-call_cannot_be_completed_as_dialed",
        "prompt_finished file:ivr/ivr-call_cannot_be_completed_as_dialed done",
        "hangup NORMAL_CLEARING engine",
    ]


async def test_first_worker_down_second_serves(worker_port: int) -> None:
    sim = FreeswitchSimulator(
        [("127.0.0.1", free_port()), ("127.0.0.1", worker_port)], Behaviour(**FAST)
    )
    call = await sim.place_call("9999")
    await walk(call, (prompt("ivr/welcome"), press("0"), expect("transferred", "1000")))


async def test_worker_dies_mid_call_dialplan_continues(worker_port: int,
                                                       worker_redis_url: str) -> None:
    port = free_port()
    doomed = start_worker(port, worker_redis_url)
    sim = FreeswitchSimulator(
        [("127.0.0.1", port), ("127.0.0.1", worker_port)],
        Behaviour(durations={"file:ivr/welcome": 3.0}, **FAST),
    )
    call = await sim.place_call("9999")
    await call.wait_for_prompt("file:ivr/welcome")
    doomed.kill()
    doomed.wait()
    # the second worker picks the call up: the caller hears the greeting again
    await call.transcript.wait_for(
        lambda e: (
            e.kind == "prompt_started" and sum(p == "file:ivr/welcome" for p in call.prompts()) == 2
        )
    )
    await walk(call, (press("0"), expect("transferred", "1000")))


async def test_malformed_frame_on_one_call_spares_the_others(worker_port: int) -> None:
    sim = FreeswitchSimulator([("127.0.0.1", worker_port)], Behaviour(**FAST))
    victim = await sim.place_call("9999", caller="+1000")
    other = await sim.place_call("9999", caller="+2000")
    await victim.wait_for_prompt("file:ivr/welcome")
    await other.wait_for_prompt("file:ivr/welcome")
    victim._send(b"Content-Type: text/event-plain\nContent-Length: oops\n\n")  # type: ignore[attr-defined]
    # the worker drops that socket; the simulated dialplan goes on to its fallback
    await victim.wait_ended(5)
    assert (
        "prompt_started file:ivr/ivr-call_cannot_be_completed_as_dialed"
        in victim.transcript.lines()
    )
    await walk(other, (press("1"), prompt("ivr/sales"), press("1"), expect("bridged", "1001")))


async def test_two_hundred_concurrent_calls_without_cross_talk(sim: FreeswitchSimulator) -> None:
    paths = {
        "11": ("dialed", "1001"),
        "0": ("transferred", "1000"),
        "22": ("transferred", "2000"),
        "131": ("dialed", "1003"),
    }
    keys = list(paths)

    async def one(i: int) -> None:
        digits = keys[i % len(keys)]
        call = await sim.place_call("9999", caller=f"+1555{i:04d}")
        steps = [prompt("ivr/welcome", timeout=20)]
        for d in digits:
            steps.append(press(d))
            steps.append(expect("dtmf", d))
        steps.append(expect(*paths[digits], timeout=20))
        await walk(call, tuple(steps))
        lines = call.transcript.lines()
        assert [ln for ln in lines if ln.startswith("dtmf")] == [f"dtmf {d}" for d in digits]
        wrong = [v for k, v in paths.items() if k != digits and f"{v[0]} {v[1]}" in lines]
        assert not wrong, lines

    sim.behaviour.endpoints = {"1003": "answer"}
    results = await asyncio.gather(*(one(i) for i in range(200)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]


async def test_caller_gone_during_connect_does_not_hurt_the_worker(
    sim: FreeswitchSimulator, worker_port: int
) -> None:
    # greenswitch #57: a caller hanging up during accept raised NotConnectedError
    for payload in (b"", b"Content-Type: command/reply\n", b"garbage without colon\n\n"):
        _, writer = await asyncio.open_connection("127.0.0.1", worker_port)
        writer.write(payload)
        await writer.drain()
        writer.close()
    call = await sim.place_call("9999")
    await walk(call, (prompt("ivr/welcome"), press("0"), expect("transferred", "1000")))


def test_command_reports_a_bad_flow_factory_clearly() -> None:
    env = {**os.environ, "CALLYARD_APPS": ""}
    bad = subprocess.run(
        [sys.executable, "-m", "appserver.cli", "freeswitch", "--flow-factory", "no_such_mod:f"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot import 'no_such_mod'" in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "appserver.cli", "freeswitch", "--flow-factory", "json:nope"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert missing.returncode == 2 and "has no attribute 'nope'" in missing.stderr


# ------------------------------------------------------------ the listener's limits

LIMITS = dict(CALLYARD_FREESWITCH_MAX_CALLS="20", CALLYARD_FREESWITCH_CONNECT_TIMEOUT="1",
              CALLYARD_LOG_LEVEL="INFO")


@pytest.fixture
def limited_worker(worker_redis_url: str, tmp_path: Path
                   ) -> Iterator[tuple[int, subprocess.Popen[bytes], Path]]:
    """A worker taking at most 20 connections, 1 s to answer ``connect``; its log file."""
    port, log = free_port(), tmp_path / "worker.log"
    with log.open("w") as stderr:
        proc = start_worker(port, worker_redis_url, stderr, **LIMITS)
    deadline = time.monotonic() + 5  # start_worker's probe connection must not hold a slot
    while "caller left before connect" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)
    time.sleep(0.1)
    yield port, proc, log
    stop_worker(proc)


async def test_silent_sockets_time_out_and_count_against_max_calls(
    limited_worker: tuple[int, subprocess.Popen[bytes], Path]
) -> None:
    """Finding: 200 sockets that never answered ``connect`` were held forever and were not
    counted against the worker's maximum of calls."""
    port, _, log = limited_worker
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
    for reader, _ in silent:
        assert await asyncio.wait_for(reader.readuntil(b"\n\n"), 5) == b"connect\n\n"
    sim = FreeswitchSimulator([("127.0.0.1", port)], Behaviour(**FAST))
    try:
        # every slot is taken by a handshake: a real call is refused and falls back
        call = await sim.place_call("9999")
        await call.wait_for_prompt("file:" + FALLBACK_PROMPT.removesuffix(".wav"), 10)
        for reader, writer in silent:  # closed once the connect timeout (1 s) passed
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        call = await sim.place_call("9999")
        await walk(call, (prompt("ivr/welcome"), press("0"), expect("transferred", "1000")))
    finally:
        await sim.stop()
    text = log.read_text()
    assert "no reply to connect within 1.0s" in text and "20 connections open" in text, text


def test_oversized_frames_are_refused_at_their_header(
    limited_worker: tuple[int, subprocess.Popen[bytes], Path]
) -> None:
    """Finding: a 16 MB frame body was buffered whole per connection (4 connections took the
    worker from 58 to 122 MB). FreeSWITCH's largest frames are tens of KB: above 1 MiB the
    connection is closed at the frame's header, with a clear log line."""
    port, proc, log = limited_worker
    worker = psutil.Process(proc.pid)
    before = worker.memory_info().rss
    socks = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", port), 5)
        assert sock.recv(64) == b"connect\n\n"
        sock.sendall(b"Content-Type: command/reply\nContent-Length: 16000000\n\n")
        socks.append(sock)
    for sock in socks:  # all the body but its last byte: the frame never completes
        with contextlib.suppress(OSError):  # the worker closed it: what we want
            sock.sendall(b"x" * (16_000_000 - 1))
    grown = worker.memory_info().rss - before
    for sock in socks:
        sock.close()
    assert grown < 16 * 2**20, f"the worker grew {grown / 2**20:.0f} MiB"
    text = log.read_text()
    assert text.count("frame body of 16000000 bytes exceeds the 1048576-byte limit") == 4, text


async def test_a_second_socket_with_a_live_call_id_is_refused(
    redis_url: str, redis_client: aioredis.Redis, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """Finding: a connection that reused a live call's Unique-ID got a call flow of its own:
    it wrote a forged CDR, and the real call's CDR was then dropped by the writer's
    ``ON CONFLICT DO NOTHING``. The second socket is refused; the real call goes on."""
    port, log = free_port(), tmp_path / "worker.log"
    with log.open("w") as stderr:
        proc = start_worker(port, redis_url, stderr, CALLYARD_LOG_LEVEL="INFO")
    # a long greeting: the real call waits in it, undisturbed, while the forger connects
    sim = FreeswitchSimulator([("127.0.0.1", port)],
                              Behaviour(durations={"file:ivr/welcome": 8.0}, **FAST))
    try:
        call = await sim.place_call("9999", caller="+15550100")
        await call.wait_for_prompt("file:ivr/welcome")
        forged = [(k, "+16660000" if k.endswith("Caller-ID-Number") else v)
                  for k, v in call.channel.channel_data()]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.readuntil(b"\n\n") == b"connect\n\n"
        writer.write(encode_connect_reply(forged))
        try:
            refused = await asyncio.wait_for(reader.read(), 3) == b""
        except TimeoutError:
            refused = False
        writer.close()
        await walk(call, (press("1"), prompt("ivr/sales")))
        await call.hangup()
        assert await drain_cdrs(redis_client, pg_pool, 1) == 1
        await asyncio.sleep(1)
        assert await drain_cdrs(redis_client, pg_pool, 2, timeout=1) == 1
        rows = await pg_pool.fetch("SELECT caller, disposition FROM cdrs")
        assert [(r["caller"], r["disposition"]) for r in rows] == [("+15550100", "hangup")]
        assert refused, "the worker kept the second socket for a live call id"
    finally:
        await sim.stop()
        stop_worker(proc)
    assert f"refusing a second socket for live call {call.call_id}" in log.read_text()
