"""The shared end-to-end scenarios (tests/scenarios.py) on Asterisk: the ARI simulator over
real HTTP/WebSocket, the worker (aioari) in this process, the test flow of tests/flows.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from flows import factory
from scenarios import SCENARIOS, Scenario, run_scenario

from appserver.asterisk.worker import AsteriskWorker
from appserver.settings import AriNode
from appserver.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.sim.ari.models import Behaviour

BEHAVIOURS: dict[str, Behaviour] = {
    "answer": "answer", "busy": "busy", "no_answer": "no_answer", "fail": "reject"}


@pytest_asyncio.fixture(loop_scope="session")
async def sim() -> AsyncIterator[AriSimulator]:
    simulator = AriSimulator(sounds=SoundCatalog(default_seconds=0.15))
    await simulator.start()
    worker = AsteriskWorker(
        [AriNode(url=simulator.base_url, username=simulator.username,
                 password=simulator.password)],
        factory,
    )
    await worker.start()
    await worker.wait_connected()
    yield simulator
    await worker.stop()
    await simulator.stop()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_scenario(sim: AriSimulator, scenario: Scenario) -> None:
    for number, behaviour in scenario.endpoints.items():
        sim.add_endpoint(SimEndpoint("PJSIP", number, behaviour=BEHAVIOURS[behaviour],
                                     talk_seconds=0.1, no_answer_after=0.1))
    call = await run_scenario(sim, scenario)
    assert call.ended
