"""A worker with no published menu set says so (log, /readyz, metric) until one appears:
otherwise every call to a menu number is "not in service" and nothing says why."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from test_freeswitch_e2e import free_port

from appserver.apps import MenuFlows
from appserver.devkit.sim.ari import AriSimulator
from appserver.menus.publisher import MenuPublisher
from appserver.menus.readers import NO_MENUS, MenuSetReader
from ivr.model import MenuDef
from ivr.testing import build_menuset

ROOT = Path(__file__).resolve().parents[1]
MENUSET = build_menuset([MenuDef("main", greeting=("file:demo/welcome",))])


def _warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum(r.levelno == logging.WARNING and r.getMessage() == NO_MENUS
               for r in caplog.records)


async def test_warns_at_start_and_periodically_until_menus_are_published(
    redis_url: str, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callyard.menus")
    flows = MenuFlows(MenuSetReader(aioredis.Redis.from_url(redis_url), warn_interval=0.2))
    await flows.reader.start()
    try:
        assert _warnings(caplog) == 1  # at start, before the first call can arrive
        assert flows.readiness() == f"warning: {NO_MENUS}"
        assert "`callyard api`" in NO_MENUS and "`callyard menus publish`" in NO_MENUS
        assert REGISTRY.get_sample_value("callyard_worker_menu_version") == 0
        await asyncio.sleep(2.3)  # the reader's loop wakes every second
        assert _warnings(caplog) >= 3  # and again while none appears
        _, version = await MenuPublisher(redis_client).publish(MENUSET)
        assert await flows.reader.wait_for_version(version)
        caplog.clear()
        await asyncio.sleep(0.5)
        assert _warnings(caplog) == 0
        assert flows.readiness() == "ok"
        assert REGISTRY.get_sample_value("callyard_worker_menu_version") == version
    finally:
        await flows.reader.stop()


async def _readyz(http: aiohttp.ClientSession, port: int, timeout: float = 30) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                body = await resp.json()
                if resp.status == 200:
                    return body
        except aiohttp.ClientError:
            pass
        assert asyncio.get_running_loop().time() < deadline, "the worker never became ready"
        await asyncio.sleep(0.1)


async def _metric(http: aiohttp.ClientSession, port: int) -> str:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return next(line for line in text.splitlines()
                if line.startswith("callyard_worker_menu_version "))


@pytest.mark.parametrize("engine", ["freeswitch", "asterisk"])
async def test_worker_started_alone_says_it_has_no_menus(
    engine: str, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    health = free_port()
    ari = AriSimulator()
    await ari.start()
    env = {**os.environ, "CALLYARD_REDIS_URL": redis_url, "CALLYARD_APPS": "",
           "CALLYARD_HEALTH_LISTEN": f"127.0.0.1:{health}",
           "CALLYARD_FREESWITCH_LISTEN": f"127.0.0.1:{free_port()}",
           "CALLYARD_FREESWITCH_ESL": "", "CALLYARD_ASTERISK_ARI": ari.url_with_credentials}
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "appserver.cli", engine], cwd=ROOT,
                                env=env, stderr=err)
    try:
        async with aiohttp.ClientSession() as http:
            body = await _readyz(http, health)  # ready: apps could still serve calls
            assert body["checks"]["menus"] == f"warning: {NO_MENUS}"
            assert NO_MENUS in log.read_text()
            assert await _metric(http, health) == "callyard_worker_menu_version 0.0"
            _, version = await MenuPublisher(redis_client).publish(MENUSET)
            for _ in range(100):
                if (await _readyz(http, health))["checks"]["menus"] == "ok":
                    break
                await asyncio.sleep(0.1)
            assert (await _readyz(http, health))["checks"]["menus"] == "ok"
            assert await _metric(http, health) == f"callyard_worker_menu_version {version}.0"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 15)  # the loop serves the simulator meanwhile
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        await ari.stop()
    assert "menu set loaded" in log.read_text()
