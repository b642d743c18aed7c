"""Workers and engines going away, on the FreeSWITCH targets (simulated and real).

The shipped dialplan tries each worker's ``socket`` in turn, then plays a polite message:
a worker killed mid-call hands the caller to the next worker (the flow starts again there;
a bridged caller stays with the called party until one hangs up, then goes on), and with no
worker left the caller hears the message and is hung up. A restarted engine is
reconnected by the worker (its inbound Event Socket link) and new calls are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

import aiohttp
from conftest import FsWorkers
from engines import FreeswitchConf, start_freeswitch
from engines import stop as stop_engine
from fs_probe import FreeswitchProbe
from stack import Process
from test_scenarios_real import cdrs_of

from appserver.devkit.sim.caller import SimulatedCall
from appserver.devkit.sim.esl.simulator import FreeswitchSimulator
from appserver.freeswitch.driver import MOH_STRETCH_SECONDS

FALLBACK = "file:ivr/ivr-call_cannot_be_completed_as_dialed"
WELCOME = "file:callyard-test/welcome"  # menu 8100's first prompt (tests/ivr_menus.py)


async def _welcome_count(call: SimulatedCall, count: int, timeout: float) -> None:
    await call.transcript.wait_for(
        lambda _: call.prompts().count("file:ivr/welcome") >= count, timeout)


@contextlib.contextmanager
def _both_workers(workers: FsWorkers) -> Iterator[tuple[Process, Process]]:
    """Worker 2 started beside worker 1 (both in the dialplan); afterwards worker 2 is stopped
    and worker 1 runs again if the test killed it."""
    second = workers.start(1)
    first = workers.stack.process(workers.names[0])
    try:
        yield first, second
    finally:
        second.stop()
        if first.proc is not None and first.proc.poll() is not None:
            workers.start(0)


async def _kill_mid_call(engine: FreeswitchProbe | FreeswitchSimulator, workers: FsWorkers,
                         database: str, scale: float) -> None:
    with _both_workers(workers) as (first, second):
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



async def _kill_while_bridged(engine: FreeswitchProbe | FreeswitchSimulator, workers: FsWorkers,
                              database: str, scale: float) -> None:
    """Menu 8100 option 3 dials 1001, which answers and hangs up after 1.5 s of talk. Worker 1
    is killed 0.3 s into the bridge: the bridge carries on until the called party hangs up,
    and only then does the dialplan hand the caller to worker 2 (the menu from the top)."""
    with _both_workers(workers) as (first, _):
        call = await engine.place_call("8100", caller="+15550904")
        await call.wait_for_prompt(WELCOME, 5 * scale)
        await call.press("3")
        bridged = await call.wait_for("bridged", 5 * scale)
        await asyncio.sleep(0.3)
        first.kill()
        unbridged = await call.wait_for("unbridged", 5 * scale)
        entries = call.transcript.entries
        after = entries.index(unbridged)
        assert entries[after - 1] is bridged, call.transcript.lines()  # nothing in between
        assert unbridged.at - bridged.at > 1.2, call.transcript.lines()  # the party's 1.5 s
        await call.transcript.wait_for(lambda e: e.kind == "prompt_started" and e.detail == WELCOME,
                                       5 * scale, start=after)  # worker 2, from the top
        await call.hangup()
        await call.wait_ended(5 * scale)
        # one CDR, worker 2's: the answered dial died with worker 1
        rows = await cdrs_of(database, call.call_id, 15)
        assert [(r["disposition"], r["called"]) for r in rows] == [("hangup", "8100")]


async def test_worker_killed_while_bridged_bridge_lasts_then_next_worker_sim(
    freeswitch_sim_workers: tuple[FreeswitchSimulator, FsWorkers], real_database: str
) -> None:
    sim, workers = freeswitch_sim_workers
    await _kill_while_bridged(sim, workers, real_database, 1.0)


async def test_worker_killed_while_bridged_bridge_lasts_then_next_worker(
    freeswitch: FreeswitchProbe, freeswitch_workers: FsWorkers, real_database: str
) -> None:
    await _kill_while_bridged(freeswitch, freeswitch_workers, real_database, 3.0)


async def _kill_while_queued(engine: FreeswitchProbe | FreeswitchSimulator, workers: FsWorkers,
                             database: str, scale: float) -> None:
    """A caller waiting in queue t-queue (8110: no agent) when worker 1 dies: once the
    stretch of music playing ends (the running application outlives the socket), the engine
    hands the call to worker 2, which takes the queue entry over; the caller hears the hold
    music again, no menu, and keeps their place. One CDR, worker 2's, naming worker 1.
    Without the stretches the caller heard music for good and reached nobody (real 1.10.12)."""
    with _both_workers(workers) as (first, _):
        call = await engine.place_call("8110", caller="+15550906")
        # in line: "you are caller N" (every 10 s) follows the join's landing in Redis
        number = await call.transcript.wait_for(
            lambda e: e.kind == "prompt_started" and e.detail.startswith("number:"), 20 * scale)
        await call.transcript.wait_for(lambda e: e.kind == "moh" and e.detail == "default",
                                       5 * scale, start=call.transcript.entries.index(number))
        after = len(call.transcript.entries)
        first.kill()  # the music plays on to the end of its stretch, then worker 2 has it
        await call.transcript.wait_for(lambda e: e.kind == "moh" and e.detail == "default",
                                       (MOH_STRETCH_SECONDS + 5) * scale, start=after)
        heard = [e.detail for e in call.transcript.entries[after:] if e.kind == "prompt_started"]
        assert not [p for p in heard if not p.startswith(("file:queue/", "number:"))], (
            call.transcript.lines())
        await call.hangup()
        await call.wait_ended(5 * scale)
        rows = await cdrs_of(database, call.call_id, 15)
        assert [(r["disposition"], r["queue"]) for r in rows] == [("abandoned", "t-queue")]
        extra = rows[0]["extra"]
        assert "taken_over_from" in (json.loads(extra) if isinstance(extra, str) else extra), (
            dict(rows[0]), call.transcript.lines())


async def test_worker_killed_while_queued_next_worker_keeps_the_caller_in_line_sim(
    freeswitch_sim_workers: tuple[FreeswitchSimulator, FsWorkers], real_database: str
) -> None:
    sim, workers = freeswitch_sim_workers
    await _kill_while_queued(sim, workers, real_database, 1.0)


async def test_worker_killed_while_queued_next_worker_keeps_the_caller_in_line(
    freeswitch: FreeswitchProbe, freeswitch_workers: FsWorkers, real_database: str
) -> None:
    await _kill_while_queued(freeswitch, freeswitch_workers, real_database, 3.0)
