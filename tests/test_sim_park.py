"""The ESL simulator's park ingress (``FreeswitchSimulator(ingress="park")``).

First over raw inbound connections (no Callyard driver): a call is parked, unanswered, with
``callyard_ingress=park`` as the shipped park extension sets it; its CHANNEL_PARK reaches the
sessions subscribed whose filter lets it through; any session drives it with ``sendmsg
<uuid>``; ``show channels as json`` lists it as :func:`parked_calls` reads it; ``uuid_transfer``
parks it again (to a number of the extension) or takes it out of Callyard.

Then with real ``callyard freeswitch`` worker processes in park mode (real Redis and
PostgreSQL fixtures), the same checks as tests/real/test_fs_park_real.py on the real engine:
each call driven by exactly one worker with one CDR; a killed worker's call taken by the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from esl_raw_client import RawClient
from park_checks import (
    LOSE_KEYS,
    dead_workers_call_ending_unwatched_gets_one_cdr,
    dead_workers_call_is_taken_by_the_other,
    dead_workers_queued_caller_is_taken_over,
    each_call_driven_by_one_worker,
    lost_records_leave_a_live_workers_call_alone,
)
from test_faults import callyard, stop, until
from test_queue_outages import QUEUE, eventually, queued

from appserver.cdr.writer import CdrWriter
from appserver.devkit.embedded import free_port
from appserver.devkit.sim.caller import SimulatedCall
from appserver.devkit.sim.esl.simulator import Behaviour, FreeswitchSimulator
from appserver.freeswitch import esl_codec as c
from appserver.freeswitch.callrecords import PREFIX
from appserver.freeswitch.parked import EVENTS, MARKER_VALUE, MARKER_VARIABLE, parked_calls
from appserver.queues.model import AgentConfig, Member, QueueConfig
from appserver.queues.store import QueueStore

Process = asyncio.subprocess.Process

CONTEXT = "callyard"


def _event(name: str, app: str = "", uuid: str = ""):  # type: ignore[no-untyped-def]
    def match(f: c.Frame) -> bool:
        if not f.content_type.startswith("text/event"):
            return False
        event = c.parse_event(f)
        return event.name == name and (not app or event.headers.get("Application") == app) \
            and (not uuid or event.headers.get("Unique-ID") == uuid)

    return match


@pytest.fixture
async def park_sim() -> AsyncIterator[FreeswitchSimulator]:
    sim = FreeswitchSimulator(workers=[], behaviour=Behaviour(prompt_seconds=0.05),
                              ingress="park")
    await sim.start(esl_port=0)
    yield sim
    await sim.stop()


async def _session(sim: FreeswitchSimulator, context: str = CONTEXT) -> RawClient:
    """An inbound session set up as a parked-calls worker's (parked.py)."""
    client = RawClient(*await asyncio.open_connection("127.0.0.1", sim.esl_port))
    assert (await client.next()).content_type == "auth/request"
    assert (await client.reply("auth ClueCon")).reply_text == "+OK accepted"
    assert (await client.reply(f"filter Caller-Context {context}")).reply_text.startswith("+OK")
    assert (await client.reply(f"event plain {' '.join(EVENTS)}")).reply_text.startswith("+OK")
    return client


async def _sendmsg(client: RawClient, uuid: str, *headers: tuple[str, str]) -> str:
    await client.send(f"sendmsg {uuid}", list(headers))
    return (await client.until(lambda f: f.content_type == "command/reply")).reply_text


async def _execute(client: RawClient, uuid: str, app: str, arg: str = "") -> str:
    return await _sendmsg(client, uuid, ("call-command", "execute"),
                          ("execute-app-name", app), ("execute-app-arg", arg),
                          ("event-lock", "true"))


async def _api(client: RawClient, line: str) -> str:
    return (await client.reply(f"api {line}")).text


def test_unknown_ingress_is_refused() -> None:
    with pytest.raises(ValueError):
        FreeswitchSimulator(workers=[], ingress="carrier-pigeon")


async def test_a_call_parks_and_any_session_drives_it(park_sim: FreeswitchSimulator) -> None:
    one, two = await _session(park_sim), await _session(park_sim)
    other_context = await _session(park_sim, "elsewhere")
    call = await park_sim.place_call("9999", caller="+15550100")
    parks = [c.parse_event(await s.until(_event("CHANNEL_PARK"))) for s in (one, two)]
    for park in parks:
        assert park.get("Unique-ID") == call.call_id
        assert park.get(f"variable_{MARKER_VARIABLE}") == MARKER_VALUE
        assert park.get("variable_playback_terminators") == "none"
        assert park.get("variable_current_application") == "park"
        assert (park.get("Caller-Context"), park.get("Caller-Destination-Number"),
                park.get("Caller-Caller-ID-Number")) == (CONTEXT, "9999", "+15550100")
        assert park.get("Answer-State") == "ringing"  # the park extension does not answer
    # the filter keeps the call's events from a session of another context
    with pytest.raises(TimeoutError):
        await other_context.until(_event("CHANNEL_PARK"), 0.3)

    # driven through the second session: both hear the events
    app_uuid = "4a7e1c84-0000-4000-8000-000000000001"
    await two.send(f"sendmsg {call.call_id}", [
        ("call-command", "execute"), ("execute-app-name", "answer"),
        ("Event-UUID", app_uuid), ("event-lock", "true")])
    assert (await two.until(lambda f: f.content_type == "command/reply")).reply_text == "+OK"
    for session in (one, two):
        done = c.parse_event(await session.until(_event("CHANNEL_EXECUTE_COMPLETE", "answer")))
        assert done.get("Application-UUID") == app_uuid
    assert await _execute(one, call.call_id, "playback", "ivr/welcome.wav") == "+OK"
    await call.wait_for_prompt("file:ivr/welcome", 3)
    await call.press("5")
    dtmf = c.parse_event(await two.until(_event("DTMF")))
    assert dtmf.get("DTMF-Digit") == "5"
    await two.until(_event("CHANNEL_EXECUTE_COMPLETE", "playback"))
    assert (await two.reply("sendmsg 00000000-0000-0000-0000-000000000000")).reply_text \
        .startswith("-ERR invalid session id")
    assert await _sendmsg(one, call.call_id, ("call-command", "hangup"),
                          ("hangup-cause", "NORMAL_CLEARING")) == "+OK"
    await two.until(_event("CHANNEL_HANGUP"))
    await two.until(_event("CHANNEL_EXECUTE_COMPLETE", "park"))  # the park ends with the call
    await call.wait_ended(3)
    for client in (one, two, other_context):
        client.writer.close()


async def test_show_channels_getvar_and_transfer(park_sim: FreeswitchSimulator) -> None:
    session = await _session(park_sim)
    assert await _api(session, "show channels as json") == '{"row_count": 0}\n'
    assert parked_calls('{"row_count": 0}\n', CONTEXT) == []
    call = await park_sim.place_call("9999", caller="+15550101")
    await session.until(_event("CHANNEL_PARK"))
    rows = parked_calls(await _api(session, "show channels as json"), CONTEXT)
    assert [(r["uuid"], r["dest"], r["cid_num"], r["application"]) for r in rows] == [
        (call.call_id, "9999", "+15550101", "park")]
    assert await _api(session, f"uuid_getvar {call.call_id} {MARKER_VARIABLE}") == MARKER_VALUE
    assert await _api(session, f"uuid_getvar {call.call_id} no_such_var") == "_undef_"

    # a worker's prompt, then the sweep's transfer back into the extension: parked again
    assert await _execute(session, call.call_id, "playback", "ivr/welcome.wav") == "+OK"
    await call.wait_for_prompt("file:ivr/welcome", 3)
    rows = parked_calls(await _api(session, "show channels as json"), CONTEXT)
    assert rows[0]["application"] == "playback"
    assert await _api(session, f"uuid_transfer {call.call_id} 9999 XML {CONTEXT}") == "+OK\n"
    stopped = c.parse_event(await session.until(_event("CHANNEL_EXECUTE_COMPLETE", "playback")))
    assert stopped.get("Unique-ID") == call.call_id
    await session.until(_event("CHANNEL_EXECUTE_COMPLETE", "park"))
    again = c.parse_event(await session.until(_event("CHANNEL_PARK")))
    assert again.get("Unique-ID") == call.call_id
    assert again.get(f"variable_{MARKER_VARIABLE}") == MARKER_VALUE
    assert call.channel.alive

    # the worker's Transfer to a number outside the extension: out of the park, then gone
    assert await _execute(session, call.call_id, "transfer", f"1000 XML {CONTEXT}") == "+OK"
    await session.until(_event("CHANNEL_EXECUTE_COMPLETE", "transfer"))
    await session.until(_event("CHANNEL_EXECUTE_COMPLETE", "park"))
    await call.wait_ended(3)
    assert ("transferred", "1000") in [(e.kind, e.detail) for e in call.transcript.entries]
    with contextlib.suppress(TimeoutError):
        await session.until(_event("CHANNEL_PARK"), 0.3)
        raise AssertionError("parked again after a transfer out of the extension")
    session.writer.close()


# ---------------------------------------------------------------- with worker processes


async def _park_worker(sim: FreeswitchSimulator, redis_url: str) -> Process:
    return await callyard("freeswitch", "--flow-factory", "flows:factory",
                          CALLYARD_REDIS_URL=redis_url,
                          CALLYARD_FREESWITCH_INGRESS="park",
                          CALLYARD_FREESWITCH_PARK_CONTEXT=sim.context,
                          CALLYARD_FREESWITCH_LISTEN=f"127.0.0.1:{free_port()}",
                          CALLYARD_FREESWITCH_ESL=f"127.0.0.1:{sim.esl_port}:{sim.password}")


def _parks_heard(sim: FreeswitchSimulator) -> int:
    """Inbound sessions subscribed to CHANNEL_PARK (a parked-calls worker's, once set up)."""
    return sum(1 for s in list(sim._listeners) if s.hears("CHANNEL_PARK"))


Workers = tuple[FreeswitchSimulator, dict[str, Process]]


@asynccontextmanager
async def _two_park_workers(redis_url: str) -> AsyncIterator[Workers]:
    """The simulator in park mode and two worker processes taking its parked calls, by
    worker id (as call records name their owners)."""
    sim = FreeswitchSimulator(workers=[], behaviour=Behaviour(prompt_seconds=0.1),
                              ingress="park")
    await sim.start()
    procs = [await _park_worker(sim, redis_url) for _ in range(2)]
    try:
        await until(lambda: _parks_heard(sim) == 2, 30, "both workers taking parked calls")
        yield sim, {f"freeswitch-{socket.gethostname()}-{p.pid}": p for p in procs}
    finally:
        errors = [await stop(p) for p in procs]
        await sim.stop()
        for proc, error in zip(procs, errors, strict=True):
            if proc.returncode not in (0, -signal.SIGKILL):
                print(error[-4000:])


@pytest.fixture
async def two_park_workers(redis_url: str) -> AsyncIterator[Workers]:
    async with _two_park_workers(redis_url) as workers:
        yield workers


@pytest.fixture
async def queue_and_two_park_workers(redis_url: str, redis_client: aioredis.Redis
                                     ) -> AsyncIterator[tuple[QueueStore, Workers]]:
    """tests/flows.py's queue (key 9 in the menu) with agent alice logged out, so a caller
    waits in it; then the workers (which read the queues as they start)."""
    store = QueueStore(redis_client)
    await store.sync_agent(AgentConfig("alice"))
    await store.sync_queue(QueueConfig(QUEUE), [Member("alice")])
    async with _two_park_workers(redis_url) as workers:
        yield store, workers


def _dispositions(redis_client: aioredis.Redis, pg_pool: asyncpg.Pool):  # type: ignore[no-untyped-def]
    """A call's CDR dispositions, once the worker's record reached PostgreSQL (a CDR
    writer step at a time, in the test)."""
    async def dispositions(call_id: str) -> list[str]:
        writer = CdrWriter(redis_client, pg_pool, block_ms=50)
        await writer.ensure_group()
        deadline = time.monotonic() + 15
        while True:
            await writer.step()
            rows = await pg_pool.fetch("SELECT disposition FROM cdrs WHERE call_id = $1",
                                       call_id)
            if rows or time.monotonic() > deadline:
                return [r["disposition"] for r in rows]

    return dispositions


def _place(sim: FreeswitchSimulator):  # type: ignore[no-untyped-def]
    async def place(number: str, caller: str) -> SimulatedCall:
        return await sim.place_call(number, caller=caller)

    return place


async def test_parked_calls_each_driven_by_one_worker(
    two_park_workers: Workers,
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool,
) -> None:
    sim, _ = two_park_workers
    await each_call_driven_by_one_worker(_place(sim), _dispositions(redis_client, pg_pool))


async def test_a_dead_workers_parked_call_is_taken_by_the_other(
    two_park_workers: Workers,
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool,
) -> None:
    sim, workers = two_park_workers
    await dead_workers_call_is_taken_by_the_other(
        _place(sim), _dispositions(redis_client, pg_pool), _owner(redis_client), workers,
        _killer(workers))


def _killer(workers: dict[str, Process]):  # type: ignore[no-untyped-def]
    async def kill(worker_id: str) -> None:
        workers[worker_id].send_signal(signal.SIGKILL)
        await workers[worker_id].wait()

    return kill


async def _queued_call(sim: FreeswitchSimulator, store: QueueStore,
                       redis_client: aioredis.Redis, caller: str) -> SimulatedCall:
    """A caller waiting in tests/flows.py's queue, once a worker has their queue entry."""
    call = await queued(sim, caller)
    await eventually("the queue entry", lambda: redis_client.hgetall(store.keys.call(call.call_id)),
                     lambda e: bool(e.get("owner")))
    return call


def _owner(redis_client: aioredis.Redis):  # type: ignore[no-untyped-def]
    async def owner(call_id: str) -> str:
        return str(await redis_client.hget(f"{PREFIX}call:{call_id}", "owner") or "")

    return owner


async def test_a_dead_workers_queued_caller_is_taken_over_at_their_place(
    queue_and_two_park_workers: tuple[QueueStore, Workers],
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool,
) -> None:
    """As tests/real/test_fs_park_real.py's (tests/park_checks.py)."""
    store, (sim, workers) = queue_and_two_park_workers

    async def entry(call_id: str) -> dict[str, str]:
        return dict(await redis_client.hgetall(store.keys.call(call_id)))

    call = await _queued_call(sim, store, redis_client, "+15550921")
    await dead_workers_queued_caller_is_taken_over(
        call, _dispositions(redis_client, pg_pool), _owner(redis_client), entry, workers,
        _killer(workers))


async def test_lost_call_records_leave_a_live_workers_call_alone(
    queue_and_two_park_workers: tuple[QueueStore, Workers],
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool,
) -> None:
    """As tests/real/test_fs_park_real.py's (tests/park_checks.py)."""
    store, (sim, workers) = queue_and_two_park_workers

    async def lose_records() -> None:
        await redis_client.eval(LOSE_KEYS, 0, PREFIX)  # type: ignore[misc]

    call = await _queued_call(sim, store, redis_client, "+15550923")
    await lost_records_leave_a_live_workers_call_alone(
        call, _dispositions(redis_client, pg_pool), _owner(redis_client), workers, lose_records)


async def test_a_dead_workers_call_that_ends_unwatched_gets_one_cdr(
    queue_and_two_park_workers: tuple[QueueStore, Workers],
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool,
) -> None:
    """As tests/real/test_fs_park_real.py's (tests/park_checks.py)."""
    store, (sim, workers) = queue_and_two_park_workers
    call = await _queued_call(sim, store, redis_client, "+15550924")
    await dead_workers_call_ending_unwatched_gets_one_cdr(
        call, _dispositions(redis_client, pg_pool), _owner(redis_client), workers,
        _killer(workers))


async def test_calls_parked_while_no_worker_was_up_are_all_taken_by_the_first_sweep(
    redis_url: str, redis_client: aioredis.Redis,
) -> None:
    """Calls wait parked (unanswered, silent) while no worker is up. The first worker's
    sweep takes them all: each step (the marker, the take, the transfer back to the park)
    a round trip per batch of calls, not per call."""
    await redis_client.set(f"{PREFIX}epoch", "e0")  # a Redis that has its data
    sim = FreeswitchSimulator(workers=[], behaviour=Behaviour(prompt_seconds=30),
                              ingress="park")
    await sim.start()
    proc = None
    try:
        calls = [await sim.place_call("9999", caller=f"+155509{i:02d}") for i in range(40)]
        proc = await _park_worker(sim, redis_url)
        started = time.monotonic()
        for call in calls:
            await call.wait_for_prompt("file:ivr/welcome", 20)
        print(f"{len(calls)} parked calls taken in {time.monotonic() - started:.2f} s")
        owners = {str(await redis_client.hget(f"{PREFIX}call:{c.call_id}", "owner"))
                  for c in calls}
        assert owners == {f"freeswitch-{socket.gethostname()}-{proc.pid}"}
        for call in calls:
            await call.hangup()
    finally:
        if proc is not None:
            await stop(proc)
        await sim.stop()


async def test_a_dead_workers_call_gone_as_the_sweep_takes_it_gets_one_cdr(
    queue_and_two_park_workers: tuple[QueueStore, Workers],
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool,
) -> None:
    """The other worker's sweep looks at the dead worker's queued caller (its marker), and
    the caller hangs up right then: the sweep has claimed the call, its transfer back to
    the park is refused (no such channel). Nobody else would write the call's CDR (its
    record is the live worker's now, and the call gone): the sweep writes it, ``failed``."""
    store, (sim, workers) = queue_and_two_park_workers
    call = await _queued_call(sim, store, redis_client, "+15550925")
    first = str(await redis_client.hget(f"{PREFIX}call:{call.call_id}", "owner"))
    getvar = sim._api_uuid_getvar

    def hang_up_as_looked_at(args: list[str]) -> str:
        reply = getvar(args)
        if args[0] == call.call_id and args[1:] == [MARKER_VARIABLE]:
            sim.calls[call.call_id].end("NORMAL_CLEARING", "caller")
        return reply

    sim._api_uuid_getvar = hang_up_as_looked_at  # type: ignore[method-assign]
    await _killer(workers)(first)
    await call.wait_ended(20)
    assert await _dispositions(redis_client, pg_pool)(call.call_id) == ["failed"]
    assert not await redis_client.exists(f"{PREFIX}call:{call.call_id}")


async def test_a_dead_workers_call_gone_as_its_new_park_is_taken_gets_one_cdr(
    queue_and_two_park_workers: tuple[QueueStore, Workers],
    redis_client: aioredis.Redis, pg_pool: asyncpg.Pool,
) -> None:
    """The other worker's sweep sends the dead worker's queued caller back to the park, and
    the caller hangs up as it is parked again: the hangup comes while the park is being
    taken, before any flow starts. The record was there (the sweep claimed it), so this is
    no new call gone before its menu: the taker writes its CDR, ``failed``."""
    store, (sim, workers) = queue_and_two_park_workers
    call = await _queued_call(sim, store, redis_client, "+15550926")
    first = str(await redis_client.hget(f"{PREFIX}call:{call.call_id}", "owner"))
    sim_call = sim.calls[call.call_id]
    emit = sim_call.emit

    def hang_up_once_parked_again(name: str, *args: Any, **kwargs: Any) -> None:
        emit(name, *args, **kwargs)
        if name == "CHANNEL_PARK":
            sim_call.end("NORMAL_CLEARING", "caller")

    sim_call.emit = hang_up_once_parked_again  # type: ignore[method-assign]
    await _killer(workers)(first)
    await call.wait_ended(20)
    assert await _dispositions(redis_client, pg_pool)(call.call_id) == ["failed"]
    assert not await redis_client.exists(f"{PREFIX}call:{call.call_id}")
