"""Several ``callyard asterisk`` workers on one Asterisk node, each with its own Stasis
application (``CALLYARD_ASTERISK_APP``), sharing Redis and PostgreSQL: the shipped dialplan
tries the applications in order, then plays the polite message.

On the ARI simulator, two real worker processes: a caller queued on the first, which is then
SIGKILLed, is withdrawn from the queue by the second's lease reaper (the agent ringing for it is
freed, nothing waits for a dead worker), new calls go to the second, and the caller's channel
stays in Stasis in the first's application until a worker of that application comes back,
which reports the call (ended meanwhile) with one CDR. On the real Asterisk 22: the first
worker killed, a new call goes to the second; both killed, the polite message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest_asyncio
from ast_probe import AsteriskProbe
from asterisk_fixtures import AsteriskWorker, RealAsterisk
from redis.asyncio import Redis
from stack import Process, Stack
from test_agents_real import console, login, logout, offered, status  # noqa: F401
from test_asterisk_faults import WAIT, is_served, one_cdr_each
from test_scenarios_real import cdrs_of

from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.queues.store import QueueStore

APPS = ("callyard-1", "callyard-2")
LEASE = 15.0  # the queue runtime's lease of a waiting caller (seconds)


class SimWorkers:
    """The ARI simulator with the two applications in its dialplan, and a worker process per
    application (started by the test)."""

    def __init__(self, sim: AriSimulator, stack: Stack) -> None:
        self.sim, self.stack = sim, stack

    async def start(self, index: int) -> Process:
        app = APPS[index]
        process = self.stack.start(
            f"asterisk-sim-{app}", "asterisk", CALLYARD_APPS="flows:factory",
            CALLYARD_ASTERISK_ARI=self.sim.url_with_credentials, CALLYARD_ASTERISK_APP=app)
        await self.sim.wait_app_connected(app, timeout=30)
        return process


@pytest_asyncio.fixture(loop_scope="session")
async def sim_workers(stack: Stack) -> AsyncIterator[SimWorkers]:
    sim = AriSimulator(sounds=SoundCatalog(default_seconds=0.15), stasis_apps=APPS,
                       unknown_endpoint=SimEndpoint("PJSIP", "agents", talk_seconds=60))
    await sim.start()
    workers = SimWorkers(sim, stack)
    yield workers
    for process in stack.processes:
        if process.name.startswith("asterisk-sim-callyard-"):
            process.stop()
    await sim.stop()


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_dead_workers_queued_caller_is_released_across_processes(
    sim_workers: SimWorkers, stack: Stack, console: httpx.AsyncClient,  # noqa: F811
    real_database: str,
) -> None:
    sim = sim_workers.sim
    first = await sim_workers.start(0)
    second = await sim_workers.start(1)
    queues = QueueStore(Redis.from_url(stack.redis_url, decode_responses=True))
    auth = await login(console, "t-web")
    try:
        caller = await sim.place_call("8112", caller="+15550921")  # queue t-web
        await offered(console, auth, caller, 10)  # the agent's console rings for it
        assert sim.channels[caller.call_id].stasis_app == APPS[0]
        assert await queues.queued_call(caller.call_id) is not None

        first.kill()
        # The second worker's runtime reaps the caller once its lease ran out: out of the
        # queue, the agent's offer withdrawn and the agent available again.
        await _until(lambda: _gone(queues, caller.call_id), "caller still queued", 3 * LEASE)
        await _until(lambda: _free(console, auth), "the agent is stuck", 10)

        served = await sim.place_call("9999", caller="+15550922")  # new calls: the second
        await served.wait_for_prompt("file:ivr/welcome", 10)
        assert sim.channels[served.call_id].stasis_app == APPS[1]
        await served.press("0")
        await served.wait_ended(10)

        # The caller, on hold music but served by nobody, gives up; a worker of the first
        # application comes back and records the call ended unseen: one CDR.
        assert not caller.ended
        await caller.hangup()
        first = await sim_workers.start(0)
        rows = await cdrs_of(real_database, caller.call_id, 20)
        assert [(r["disposition"], r["hangup_cause"]) for r in rows] == [
            ("failed", "WORKER_LOST")]
        assert len(await cdrs_of(real_database, served.call_id, 20)) == 1
        assert second.proc is not None and second.proc.poll() is None
    finally:
        await logout(console, auth)
        await queues.client.aclose()


async def _gone(queues: QueueStore, call_id: str) -> bool:
    return await queues.queued_call(call_id) is None


async def _free(console: httpx.AsyncClient, auth: dict[str, str]) -> bool:  # noqa: F811
    state = await status(console, auth)
    return state.get("state") == "available" and not state.get("offer")


async def test_next_workers_application_then_polite_message(
    asterisk: AsteriskProbe, asterisk_worker: AsteriskWorker, asterisk_engine: RealAsterisk,
    stack: Stack, real_database: str,
) -> None:
    """The real Asterisk with the rendered dialplan: ``Stasis()`` of an application whose
    worker is gone fails at once and the next application takes the call. Each call has
    one CDR once the workers are back: a call that ended just before its worker was killed
    may not have had its CDR in Redis yet; its record then stays, and the next worker of
    its application writes the CDR (``WORKER_LOST``) when it re-adopts."""
    second = AsteriskWorker(stack, asterisk_engine.conf, asterisk_worker.dial_template,
                            asterisk_engine.conf.apps[1])
    await second.start()
    try:
        call = await is_served(asterisk)
        assert asterisk_worker.process is not None and second.process is not None
        assert call.call_id in asterisk_worker.process.output()  # the first in order
        asterisk_worker.kill()
        await asyncio.sleep(1)  # Asterisk reads the socket's end and deactivates the app
        other = await is_served(asterisk)
        assert other.call_id in second.process.output()
        second.kill()
        await asyncio.sleep(1)
        polite = await asterisk.place_call("9999")
        await polite.wait_for_prompt("file:cannot-complete-temp-error", WAIT)
        await polite.wait_ended(WAIT)
        # Both applications' workers come back, as under their supervisor.
        await asterisk_worker.ensure_running()
        await second.start()
        await one_cdr_each(real_database, call, other)
    finally:
        second.kill()
        await asterisk_worker.ensure_running()

