"""``callyard sim``: the engine simulators alone, as a process; workers started by hand
connect to them with the values it prints, and calls placed over its /sim routes reach them."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from test_cdr_asterisk import wait_ready
from test_faults import callyard, env, stop

from appserver.devkit.embedded import free_port


async def _banner(proc: asyncio.subprocess.Process) -> dict[str, str]:
    """The ``CALLYARD_*=value`` lines ``callyard sim`` prints once it serves."""
    assert proc.stdout is not None
    values: dict[str, str] = {}
    while not (line := (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
               ).startswith("Press Ctrl-C"):
        assert line, "callyard sim exited before it was ready"
        name, sep, value = line.strip().partition("=")
        if sep and name.startswith("CALLYARD_"):
            values[name] = value
    return values


@pytest.fixture
async def sim() -> AsyncIterator[tuple[asyncio.subprocess.Process, int, dict[str, str]]]:
    http, worker = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver.cli", "sim", "--port", str(http), "--esl-port",
        str(free_port()), "--ari-port", str(free_port()), "--ami-port", str(free_port()),
        env=env(CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{worker}"),
        stdout=asyncio.subprocess.PIPE)
    try:
        values = await _banner(proc)
        values["CALLYARD_FREESWITCH_LISTEN"] = f"127.0.0.1:{worker}"
        yield proc, http, values
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _call(http: aiohttp.ClientSession, port: int, engine: str) -> list[str]:
    """Place a call to 9999 on ``engine``, wait for the menu's greeting, hang up: the
    prompts the caller heard."""
    base = f"http://127.0.0.1:{port}/sim/calls"
    async with http.post(base, json={"to": "9999", "engine": engine}) as resp:
        assert resp.status == 201, await resp.text()
        call = await resp.json()
    for _ in range(200):
        async with http.get(f"{base}/{call['id']}") as resp:
            call = await resp.json()
        if call["prompts"]:
            break
        await asyncio.sleep(0.05)
    async with http.post(f"{base}/{call['id']}/hangup") as resp:
        assert resp.status == 200
    return list(call["prompts"])


async def test_workers_serve_calls_on_the_simulators_it_runs(
    sim: tuple[asyncio.subprocess.Process, int, dict[str, str]], redis_url: str
) -> None:
    proc, port, values = sim
    assert set(values) == {"CALLYARD_FREESWITCH_ESL", "CALLYARD_FREESWITCH_LISTEN",
                           "CALLYARD_ASTERISK_ARI", "CALLYARD_ASTERISK_AMI"}
    health = {engine: free_port() for engine in ("freeswitch", "asterisk")}
    workers = [await callyard(engine, "--flow-factory", "flows:factory", **values,
                              CALLYARD_REDIS_URL=redis_url,
                              CALLYARD_HEALTH_LISTEN=f"127.0.0.1:{health[engine]}")
               for engine in health]
    try:
        async with aiohttp.ClientSession() as http:
            for engine, health_port in health.items():
                await wait_ready(http, health_port)
                assert (await _call(http, port, engine))[:1] == ["file:ivr/welcome"], engine
            async with http.get(f"http://127.0.0.1:{port}/softphone") as resp:
                assert resp.status == 200 and "Callyard softphone" in await resp.text()
    finally:
        for worker in workers:
            await stop(worker)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_one_engine_only() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver.cli", "sim", "--engine", "asterisk", "--port",
        str(free_port()), "--ari-port", str(free_port()), "--ami-port", str(free_port()),
        env=env(), stdout=asyncio.subprocess.PIPE)
    try:
        assert set(await _banner(proc)) == {"CALLYARD_ASTERISK_ARI", "CALLYARD_ASTERISK_AMI"}
    finally:
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_freeswitch_park_ingress(redis_url: str) -> None:
    """With ``CALLYARD_FREESWITCH_INGRESS=park`` the simulated FreeSWITCH parks its calls and
    prints the values for a park-mode worker, which takes them over its inbound connection."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appserver.cli", "sim", "--engine", "freeswitch", "--port",
        str(port), "--esl-port", str(free_port()),
        env=env(CALLYARD_FREESWITCH_INGRESS="park"), stdout=asyncio.subprocess.PIPE)
    worker = None
    try:
        values = await _banner(proc)
        assert set(values) == {"CALLYARD_FREESWITCH_ESL", "CALLYARD_FREESWITCH_INGRESS",
                               "CALLYARD_FREESWITCH_PARK_CONTEXT"}
        assert (values["CALLYARD_FREESWITCH_INGRESS"],
                values["CALLYARD_FREESWITCH_PARK_CONTEXT"]) == ("park", "callyard")
        health = free_port()
        worker = await callyard("freeswitch", "--flow-factory", "flows:factory", **values,
                                CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{free_port()}",
                                CALLYARD_REDIS_URL=redis_url,
                                CALLYARD_HEALTH_LISTEN=f"127.0.0.1:{health}")
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, health)
            assert (await _call(http, port, "freeswitch"))[:1] == ["file:ivr/welcome"]
    finally:
        if worker is not None:
            await stop(worker)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
