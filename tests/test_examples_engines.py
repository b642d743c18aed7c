"""The example apps (examples/) on both engines, same scenarios: the ARI simulator with the
Asterisk worker in this process, and the ESL simulator with a ``callyard freeswitch``
worker subprocess started with ``CALLYARD_APPS=examples:app``. Includes the misbehaving
flows: each ends only its own call and the worker keeps serving others."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from scenarios import Scenario, expect, hangup, never, press, prompt, run_scenario

from appserver.asterisk.worker import AsteriskWorker
from appserver.devkit.sim.ari import AriSimulator, SimEndpoint, SoundCatalog
from appserver.devkit.sim.caller import EngineSimulator
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
from appserver.settings import AriNode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples/ lives at the repo root
examples: Any = importlib.import_module("examples")

ENDPOINTS = {"1001": "answer"}
END = expect("hangup", "", timeout=8)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("order status: found, talk to someone", "8100", (
        expect("answered"), prompt("orders/welcome"), prompt("orders/enter-account"),
        press("1234#"), prompt("orders/your-order"), expect("prompt_started", "digits:5551"),
        prompt("orders/status-shipped"), prompt("orders/options"), press("1"),
        expect("dialed", "1001"), expect("bridged", "1001"), END, never("transferred"),
    ), ENDPOINTS),
    Scenario("order status: unknown account, then found, hear again, leave", "8100", (
        prompt("orders/enter-account"), press("1111#"), prompt("orders/not-found"),
        prompt("orders/enter-account"), press("98765#"), prompt("orders/status-processing"),
        prompt("orders/options"), press("2"), prompt("orders/your-order"),
        prompt("orders/options"), press("*"), prompt("orders/goodbye"), END, never("dialed"),
    ), ENDPOINTS),
    Scenario("order status: three unknown accounts go to the operator", "8100", (
        prompt("orders/enter-account"), press("1111#"), prompt("orders/not-found"),
        prompt("orders/enter-account"), press("2222#"), prompt("orders/not-found"),
        prompt("orders/enter-account"), press("3333#"), prompt("orders/not-found"),
        expect("transferred", "1000"),
    ), ENDPOINTS),
    Scenario("after hours: callback to another number", "8200", (
        expect("answered"), prompt("afterhours/closed"), press("1"),
        prompt("afterhours/callback-this-number"), press("2"), prompt("afterhours/enter-number"),
        press("5557788#"), prompt("afterhours/we-will-call"),
        expect("prompt_started", "digits:5557788"), prompt("afterhours/press-1-confirm"),
        press("1"), prompt("afterhours/thanks"), END,
    )),
    Scenario("after hours: no callback", "8200", (
        prompt("afterhours/closed"), press("9"), prompt("afterhours/goodbye"), END,
        never("prompt_started", "file:afterhours/callback-this-number"),
    )),
    Scenario("pin menu: right pin, message count, operator", "8301", (
        prompt("pin/enter-pin"), press("4321"), prompt("pin/menu"), press("1"),
        prompt("pin/you-have"), expect("prompt_started", "number:3"),
        prompt("pin/new-messages"), prompt("pin/menu"), press("0"),
        expect("transferred", "1000"),
    )),
    Scenario("pin menu: no such queue, back to the menu", "8399", (
        prompt("pin/enter-pin"), press("4321"), prompt("pin/menu"), press("2"),
        prompt("pin/queue-unavailable"), prompt("pin/menu"), press("*"), prompt("pin/goodbye"),
        END,
    )),
    Scenario("pin menu: three wrong pins", "8300", (
        prompt("pin/enter-pin"), press("0000"), prompt("pin/wrong-pin"),
        prompt("pin/enter-pin"), press("1111"), prompt("pin/wrong-pin"),
        prompt("pin/enter-pin"), press("2222"), prompt("pin/wrong-pin"), prompt("pin/goodbye"),
        END, never("prompt_started", "file:pin/menu"),
    )),
    Scenario("a flow that raises: polite message, hangup", "8901", (
        expect("answered"), prompt("errors/about-to-fail"), prompt("errors/sorry"), END,
    )),
    Scenario("a flow that never returns: step timeout, polite message", "8902", (
        expect("answered"), prompt("errors/sorry", timeout=4), END,
    )),
    Scenario("a flow that ignores the hangup: nothing more runs", "8903", (
        prompt("errors/looping"), hangup(), expect("hangup", "NORMAL_CLEARING caller"),
        never("prompt_started", "file:errors/sorry"),
    )),
)  # fmt: skip

CONTAINMENT = [s for s in SCENARIOS if s.number.startswith("89")]
ORDER_FOUND = SCENARIOS[0]


async def contained_alongside_good_calls(sim: EngineSimulator) -> None:
    """Misbehaving calls and good ones at the same time; afterwards the worker still serves."""
    good = [ORDER_FOUND, SCENARIOS[3]]
    results = await asyncio.gather(*(run_scenario(sim, s) for s in (*CONTAINMENT, *good)),
                                   return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    after = await run_scenario(sim, ORDER_FOUND)
    assert after.ended


# ---------------------------------------------------------------- Asterisk (ARI simulator)


@pytest_asyncio.fixture(loop_scope="session")
async def ari_sim() -> AsyncIterator[AriSimulator]:
    simulator = AriSimulator(sounds=SoundCatalog(default_seconds=0.15))
    await simulator.start()
    worker = AsteriskWorker(
        [AriNode(url=simulator.base_url, username=simulator.username,
                 password=simulator.password)],
        examples.app,
    )
    await worker.start()
    await worker.wait_connected()
    simulator.add_endpoint(SimEndpoint("PJSIP", "1001", behaviour="answer", talk_seconds=0.1))
    yield simulator
    await worker.stop()
    await simulator.stop()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_asterisk(ari_sim: AriSimulator, scenario: Scenario) -> None:
    closed_before = len(examples.misbehaving.CLOSED)
    call = await run_scenario(ari_sim, scenario)
    assert call.ended
    if scenario.number == "8903":  # in this process: the flow's finally block ran
        await asyncio.sleep(0.2)
        assert len(examples.misbehaving.CLOSED) == closed_before + 1


async def test_asterisk_containment_spares_other_calls(ari_sim: AriSimulator) -> None:
    await contained_alongside_good_calls(ari_sim)


# ---------------------------------------------------------------- FreeSWITCH (ESL simulator)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fs_worker_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fs-worker") / "stderr.log"


@pytest.fixture(scope="module")
def fs_worker(fs_worker_log: Path, worker_redis_url: str) -> Iterator[int]:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CALLYARD_APPS": "examples:app",
        "CALLYARD_FREESWITCH_LISTEN": f"127.0.0.1:{port}",
        "CALLYARD_FREESWITCH_ESL": "",
        "CALLYARD_LOG_LEVEL": "WARNING",
        "CALLYARD_REDIS_URL": worker_redis_url,
    }
    log_file = fs_worker_log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "appserver.cli", "freeswitch"], cwd=ROOT,
                            env=env, stderr=log_file)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {fs_worker_log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("worker did not start listening") from None
            time.sleep(0.05)
    yield port
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log_file.close()


@pytest.fixture
async def fs_sim(fs_worker: int) -> AsyncIterator[FreeswitchSimulator]:
    sim = FreeswitchSimulator(
        [("127.0.0.1", fs_worker)],
        Behaviour(endpoints=dict(ENDPOINTS), prompt_seconds=0.15, talk_seconds=0.1,
                  no_answer_seconds=0.1),
    )
    yield sim
    await sim.stop()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_freeswitch(fs_sim: FreeswitchSimulator, scenario: Scenario) -> None:
    call = await run_scenario(fs_sim, scenario)
    assert call.ended


async def test_freeswitch_containment_spares_other_calls(
    fs_sim: FreeswitchSimulator, fs_worker_log: Path
) -> None:
    await contained_alongside_good_calls(fs_sim)
    raised = await run_scenario(fs_sim, CONTAINMENT[0])
    await asyncio.sleep(0.3)
    log = fs_worker_log.read_text()
    assert f"misbehaving:raises failed on call {raised.call_id}" in log
    assert "RuntimeError: lookup service exploded" in log
    assert "misbehaving:ignores_hangup ignored the hangup" in log


async def test_asterisk_pin_menu_through_the_real_queue_runtime(redis_client: Any) -> None:
    """enqueue() with the worker's queue runtime (Redis): hold, position, agent, hang up."""
    from appserver.queues.agent_control import AgentControl
    from appserver.queues.model import AgentConfig, Member, QueueConfig
    from appserver.queues.runtime import QueueRuntime
    from appserver.queues.store import QueueStore
    from ivr.calls import CallFlow, CallInfo

    store = QueueStore(redis_client)
    await store.sync_agent(AgentConfig("ann", kind="sip", extension="1001"))
    await store.sync_queue(QueueConfig("support", announce_interval=1, announce_wait=False,
                                       moh_class="default", wrapup_seconds=0), [Member("ann")])
    sim = AriSimulator(sounds=SoundCatalog(default_seconds=0.1),
                       endpoints=[SimEndpoint("PJSIP", "1001", talk_seconds=0.3)])
    await sim.start()
    runtimes: list[QueueRuntime] = []

    def factory(info: CallInfo) -> CallFlow | None:
        flow = examples.app(info)
        return runtimes[0].wrap(flow) if flow is not None else None

    worker = AsteriskWorker([AriNode(url=sim.base_url, username=sim.username,
                                     password=sim.password)], factory, redis=redis_client)
    runtimes.append(QueueRuntime(redis_client, "examples-queue", worker.deliver,
                                 tick_seconds=0.1))
    await runtimes[0].start()
    await worker.start()
    try:
        await worker.wait_connected()
        call = await sim.place_call("8301", caller="+15550100")
        await call.wait_for_prompt("file:pin/enter-pin")
        await call.press("4321")
        await call.wait_for_prompt("file:pin/menu")
        await call.press("2")
        await call.transcript.wait_for(lambda e: e.kind == "moh" and e.detail == "default")
        await call.wait_for_prompt("number:1")  # first in line
        await AgentControl(store).login("ann")
        await call.transcript.wait_for(
            lambda e: e.kind == "bridged" and e.detail.endswith("1001"), timeout=10)
        end = await call.wait_ended(10)
        assert end.detail.endswith("app")  # the flow hung up after QueueResult(answered)
        assert "file:pin/queue-unavailable" not in call.prompts()
        await runtimes[0].drain()
        assert (await store.stats("support")).answered == 1
    finally:
        await worker.stop()
        await runtimes[0].stop()
        await sim.stop()
