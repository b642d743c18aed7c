"""Fixtures of the real Asterisk (imported by conftest.py): the engine with the project's
rendered configuration, a ``callyard asterisk`` worker serving it (fault tests kill and
restart it), and a probe placing calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
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
from sip_ua import SipEndpoint
from stack import Process, Stack
from test_cdr_asterisk import wait_ready

from appserver.devkit.embedded import free_port


@dataclass
class RealAsterisk:
    conf: AsteriskConf
    directory: Path  # its configuration

    def restart(self) -> None:
        stop_engine("asterisk")
        start_asterisk(self.directory)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asterisk_engine(real_dir: Path, test_sounds: None) -> AsyncIterator[RealAsterisk]:
    """The real Asterisk; the shipped transfer context dials the SIP edge (Kamailio), here a
    SIP user agent refusing every call (no phone is registered in the tests) at once."""
    edge = SipEndpoint(user="edge", policy="reject")
    await edge.start()
    with exclusive("asterisk"):
        conf = AsteriskConf(edge_port=edge.port)
        engine = RealAsterisk(conf, build_asterisk_conf(real_dir / "asterisk", conf))
        AST_LOG.parent.mkdir(parents=True, exist_ok=True)
        start_asterisk(engine.directory)
        yield engine
        stop_engine("asterisk")
    edge.close()


@dataclass
class AsteriskWorker:
    """A ``callyard asterisk`` process serving the real engine with the Stasis application
    ``app`` (one process per application: a second one would take it over). ``start``
    returns once it is connected."""

    stack: Stack
    conf: AsteriskConf
    dial_template: str  # the phones it dials: the SIP parties of the session
    app: str = "callyard"
    process: Process | None = None
    starts: int = 0
    health_port: int = 0  # the current process's /readyz

    async def start(self, timeout: float = 30) -> Process:
        self.starts += 1
        health = self.health_port = free_port()
        self.process = self.stack.start(
            f"asterisk-{self.app}-{self.starts}", "asterisk", CALLYARD_APPS="flows:factory",
            CALLYARD_ASTERISK_ARI=self.conf.ari_url, CALLYARD_ASTERISK_AMI=self.conf.ami,
            CALLYARD_ASTERISK_APP=self.app, CALLYARD_ASTERISK_DIAL_TEMPLATE=self.dial_template,
            CALLYARD_HEALTH_LISTEN=f"127.0.0.1:{health}",
        )  # fmt: skip
        async with aiohttp.ClientSession() as http:
            try:
                await wait_ready(http, health, timeout)  # connected to Asterisk and Redis
            except AssertionError as exc:
                raise AssertionError(self.process.output()[-3000:]) from exc
        return self.process

    @property
    def running(self) -> bool:
        proc = self.process.proc if self.process is not None else None
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.proc is not None
        return self.process.proc.pid

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    async def ensure_running(self) -> None:
        if not self.running:
            await self.start()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asterisk_worker(asterisk_engine: RealAsterisk, stack: Stack,
                          sip_parties: SipEndpoint) -> AsteriskWorker:
    """Dials over the shipped edge endpoint, to the session's SIP parties (as FreeSWITCH)."""
    dial = f"PJSIP/kamailio/sip:{{target}}@{sip_parties.host}:{sip_parties.port}"
    worker = AsteriskWorker(stack, asterisk_engine.conf, dial, asterisk_engine.conf.app)
    await worker.start()
    return worker


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asterisk_probe(asterisk_engine: RealAsterisk) -> AsyncIterator[AsteriskProbe]:
    conf = asterisk_engine.conf
    probe = AsteriskProbe(f"http://127.0.0.1:{conf.http_port}", ARI_USER, ARI_PASSWORD,
                          AST_SOUNDS, ami=("127.0.0.1", conf.ami_port, AMI_USER, AMI_SECRET))
    await probe.start()
    yield probe
    await probe.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def asterisk(asterisk_worker: AsteriskWorker, asterisk_probe: AsteriskProbe) -> AsteriskProbe:
    """A probe placing calls on the real Asterisk, where a ``callyard asterisk`` worker
    serves them (restarted first if a fault test left none)."""
    await asterisk_worker.ensure_running()
    return asterisk_probe
