"""Workers and engines going away, on the FreeSWITCH targets (simulated and real).

The shipped dialplan tries each worker's ``socket`` in turn, then plays a polite message:
a worker killed mid-call hands the caller to the next worker (the flow starts again there),
and with no worker left the caller hears the message and is hung up. A restarted engine is
reconnected by the worker (its inbound Event Socket link) and new calls are served.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from conftest import FsWorkers
from engines import FreeswitchConf, start_freeswitch
from engines import stop as stop_engine
from fs_probe import FreeswitchProbe
from test_scenarios_real import cdrs_of

from appserver.devkit.sim.caller import SimulatedCall
from appserver.devkit.sim.esl.simulator import FreeswitchSimulator

FALLBACK = "file:ivr/ivr-call_cannot_be_completed_as_dialed"


async def _welcome_count(call: SimulatedCall, count: int, timeout: float) -> None:
    await call.transcript.wait_for(
        lambda _: call.prompts().count("file:ivr/welcome") >= count, timeout)


async def _kill_mid_call(engine: FreeswitchProbe | FreeswitchSimulator, workers: FsWorkers,
                         database: str, scale: float) -> None:
    second = workers.start(1)
    first = workers.stack.process(workers.names[0])
    try:
        call = await engine.place_call("9999", caller="+15550901")
        await _welcome_count(call, 1, 5 * scale)
        first.kill()
        await _welcome_count(call, 2, 5 * scale)  # the next socket: worker 2, from the top
        await call.press("1")
        await call.wait_for_prompt("file:ivr/sales", 5 * scale)
        await call.hangup()
        await call.wait_ended(5 * scale)
        rows = await cdrs_of(database, call.call_id, 15)
        assert [(r["disposition"], r["called"]) for r in rows] == [("hangup", "9999")]

        # no worker left: the dialplan's polite message, then hang up (no CDR: no app ran)
        call = await engine.place_call("9999", caller="+15550902")
        await _welcome_count(call, 1, 5 * scale)
        second.kill()
        await call.wait_for_prompt(FALLBACK, 5 * scale)
        await call.wait_ended(10 * scale)
    finally:
        second.stop()
        if first.proc is not None and first.proc.poll() is not None:
            workers.start(0)


async def test_worker_killed_mid_call_next_worker_then_polite_message_sim(
    freeswitch_sim_workers: tuple[FreeswitchSimulator, FsWorkers], real_database: str
) -> None:
    sim, workers = freeswitch_sim_workers
    await _kill_mid_call(sim, workers, real_database, 1.0)


async def test_worker_killed_mid_call_next_worker_then_polite_message(
    freeswitch: FreeswitchProbe, freeswitch_workers: FsWorkers, real_database: str
) -> None:
    await _kill_mid_call(freeswitch, freeswitch_workers, real_database, 3.0)


async def _readyz(port: int) -> int:
    async with aiohttp.ClientSession() as http, http.get(
        f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(total=3)
    ) as response:
        return response.status


async def _until_ready(port: int, status: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await _readyz(port) != status:
        if time.monotonic() > deadline:
            raise TimeoutError(f"/readyz never answered {status}")
        await asyncio.sleep(0.25)


async def test_engine_restart_worker_reconnects_and_serves_new_calls(
    freeswitch: FreeswitchProbe, freeswitch_workers: FsWorkers,
    freeswitch_engine: FreeswitchConf, real_database: str,
) -> None:
    worker = freeswitch_workers.stack.process(freeswitch_workers.names[0])
    await _until_ready(worker.health_port, 200, 10)
    await freeswitch.stop()
    stop_engine("freeswitch")
    await _until_ready(worker.health_port, 503, 20)  # the node link is down
    start_freeswitch(freeswitch_engine.directory)
    await _until_ready(worker.health_port, 200, 40)  # reconnected (backoff up to 30 s)
    await freeswitch.start()
    call = await freeswitch.place_call("9999", caller="+15550903")
    await call.wait_for_prompt("file:ivr/welcome", 15)
    await call.press("0")
    await call.wait_ended(20)
    rows = await cdrs_of(real_database, call.call_id, 15)
    assert [r["disposition"] for r in rows] == ["transferred"]
    assert worker.proc is not None and worker.proc.poll() is None
