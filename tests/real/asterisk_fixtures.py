"""Fixtures of the real Asterisk (imported by conftest.py): the engine with the project's
rendered configuration, a ``callyard asterisk`` worker serving it, and a probe placing calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from ast_probe import AsteriskProbe
from engines import (
    AMI_SECRET,
    AMI_USER,
    ARI_PASSWORD,
    ARI_USER,
    AST_LOG,
    AST_SOUNDS,
    AsteriskConf,
    build_asterisk_conf,
    exclusive,
    start_asterisk,
)
from engines import stop as stop_engine
from sip_edge import SipEdge
from stack import Process, Stack

DIAL_TEMPLATE = "Local/{target}@callyard-test-parties"


@pytest.fixture(scope="session")
def asterisk_engine(real_dir: Path, test_sounds: None) -> Iterator[AsteriskConf]:
    with exclusive("asterisk"), SipEdge() as edge:
        conf = AsteriskConf(edge_port=edge.port)
        directory = build_asterisk_conf(real_dir / "asterisk", conf)
        AST_LOG.parent.mkdir(parents=True, exist_ok=True)
        start_asterisk(directory)
        yield conf
        stop_engine("asterisk")


async def wait_app_registered(conf: AsteriskConf, app: str, timeout: float = 30,
                              process: Process | None = None) -> None:
    """Until Asterisk lists the Stasis application ``app`` (a worker's events socket is up)."""
    url = f"http://127.0.0.1:{conf.http_port}/ari/applications/{app}"
    deadline = time.monotonic() + timeout
    auth = {"Authorization": aiohttp.encode_basic_auth(ARI_USER, ARI_PASSWORD)}
    async with aiohttp.ClientSession(headers=auth) as http:
        while time.monotonic() < deadline:
            if process is not None and process.proc is not None and process.proc.poll() is not None:
                raise RuntimeError(f"{process.name} exited: {process.output()[-3000:]}")
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"Stasis application {app!r} not registered after {timeout} s")


def start_asterisk_worker(stack: Stack, conf: AsteriskConf, name: str = "asterisk",
                          **env: str) -> Process:  # fmt: skip
    return stack.start(
        name, "asterisk", CALLYARD_APPS="flows:factory", CALLYARD_ASTERISK_ARI=conf.ari_url,
        CALLYARD_ASTERISK_AMI=conf.ami, CALLYARD_ASTERISK_APP=conf.app,
        CALLYARD_ASTERISK_DIAL_TEMPLATE=DIAL_TEMPLATE, **env,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asterisk(asterisk_engine: AsteriskConf, stack: Stack) -> AsyncIterator[AsteriskProbe]:
    """A ``callyard asterisk`` worker serving the real engine, and a probe placing calls."""
    worker = start_asterisk_worker(stack, asterisk_engine)
    await wait_app_registered(asterisk_engine, asterisk_engine.app, process=worker)
    probe = AsteriskProbe(
        f"http://127.0.0.1:{asterisk_engine.http_port}", ARI_USER, ARI_PASSWORD, AST_SOUNDS,
        ami=("127.0.0.1", asterisk_engine.ami_port, AMI_USER, AMI_SECRET),
    )
    await probe.start()
    yield probe
    await probe.stop()
