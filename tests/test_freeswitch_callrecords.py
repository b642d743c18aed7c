"""FreeSWITCH call records (appserver/freeswitch/callrecords.py) on a real Redis: a call that
ended while no worker had it (its worker died, the caller hung up before the next one got
the call) gets its one CDR from a live worker's reaper; a call another worker took is not
reaped; a live worker's calls are never looked at."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from appserver.freeswitch.callrecords import PREFIX, CallRecords
from ivr.calls import CallInfo


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    r.close()


def info(uuid: str) -> CallInfo:
    return CallInfo(uuid, "freeswitch", "+15550100", "9999", node="fs1")


def test_a_dead_workers_call_gone_from_the_engine_gets_one_cdr(client: redis.Redis) -> None:
    dead, live = CallRecords(client, "fs-dead"), CallRecords(client, "fs-live")
    for uuid in ("gone", "bridged", "moved"):
        dead.claim(info(uuid))
    dead.flush()
    started = {uuid: float(client.hget(f"{PREFIX}call:{uuid}", "started_at") or 0)
               for uuid in ("gone", "bridged", "moved")}
    client.set(f"{PREFIX}alive:fs-live", 1)  # fs-live's heartbeat; fs-dead has none
    live.claim(info("moved"))
    live.flush()
    assert client.hget(f"{PREFIX}call:moved", "owner") == "fs-live"
    # the next socket: the call keeps its start
    assert float(client.hget(f"{PREFIX}call:moved", "started_at") or 0) == started["moved"]

    lost: list[tuple[CallInfo, float]] = []
    on_engine = {"gone": False, "bridged": True}

    def on_node(uuid: str, node: str) -> bool:
        assert node == "fs1"  # asked of the node the call came in on
        return on_engine[uuid]

    assert live.reap(on_node, lambda call, at: lost.append((call, at))) == 1
    assert [(call.call_id, call.caller, call.called, at) for call, at in lost] == [
        ("gone", "+15550100", "9999", started["gone"])]
    assert not client.exists(f"{PREFIX}call:gone")
    assert client.smembers(f"{PREFIX}owner:fs-dead") == {"bridged"}  # still up: kept

    # A second reaper, or a second round, finds nothing more to record.
    other = CallRecords(client, "fs-other")
    client.set(f"{PREFIX}alive:fs-other", 1)
    assert other.reap(on_node, lambda call, at: lost.append((call, at))) == 0
    # The bridged call ends too; then the dead worker has nothing left and is forgotten.
    on_engine["bridged"] = False
    assert other.reap(on_node, lambda call, at: lost.append((call, at))) == 1
    assert other.reap(on_node, lambda call, at: lost.append((call, at))) == 0
    assert "fs-dead" not in client.smembers(f"{PREFIX}workers")
    assert [call.call_id for call, _ in lost] == ["gone", "bridged"]

    # The moved call is fs-live's; it ends there and its record goes.
    live.release("moved")
    live.flush()
    assert not client.exists(f"{PREFIX}call:moved")


def test_live_workers_and_unanswering_nodes_are_left_alone(client: redis.Redis) -> None:
    busy, reaper = CallRecords(client, "fs-busy"), CallRecords(client, "fs-reaper")
    busy.claim(info("a"))
    busy.flush()
    client.set(f"{PREFIX}alive:fs-busy", 1)
    lost: list[str] = []
    assert reaper.reap(lambda uuid, node: False, lambda call, at: lost.append(call.call_id)) == 0
    client.delete(f"{PREFIX}alive:fs-busy")  # it died; the node that had the call is down
    assert reaper.reap(lambda uuid, node: None, lambda call, at: lost.append(call.call_id)) == 0
    assert reaper.reap(lambda uuid, node: False, lambda call, at: lost.append(call.call_id)) == 1
    assert lost == ["a"]


def test_release_by_a_worker_that_lost_the_call_keeps_the_new_owners_record(
        client: redis.Redis) -> None:
    first, second = CallRecords(client, "fs-1"), CallRecords(client, "fs-2")
    first.claim(info("x"))
    first.flush()
    second.claim(info("x"))
    second.flush()
    first.release("x")  # the old socket's late end
    first.flush()
    assert client.hget(f"{PREFIX}call:x", "owner") == "fs-2"
    assert client.smembers(f"{PREFIX}owner:fs-1") == set()


def test_claims_and_releases_are_written_together_in_order_releases_after_the_cdrs(
        client: redis.Redis) -> None:
    """A worker queues its calls' claims and releases and writes them in one round trip a
    tick; a release only once the CDRs handed over before it are in Redis."""
    durable: list[int] = []
    records = CallRecords(client, "fs-batch", durable=lambda: durable.append(1))
    records.claim(info("p"))
    records.claim(info("q"))
    assert not client.exists(f"{PREFIX}call:p")  # queued, not yet written
    records.flush()
    assert client.smembers(f"{PREFIX}owner:fs-batch") == {"p", "q"} and durable == []
    records.release("p")
    records.claim(info("r"))
    records.release("r")  # a call over within the tick: claimed, then forgotten
    records.flush()
    assert durable == [1]
    assert client.smembers(f"{PREFIX}owner:fs-batch") == {"q"}
    assert not client.exists(f"{PREFIX}call:p") and not client.exists(f"{PREFIX}call:r")
    records.flush()  # nothing queued: no round trip, no wait for the CDRs
    assert durable == [1]


def test_the_flusher_writes_queued_claims_without_being_asked(client: redis.Redis) -> None:
    import gevent

    records = CallRecords(client, "fs-tick")
    records.start(lambda uuid: True, lambda call, at: None)
    try:
        records.claim(info("t"))
        deadline = 50
        while not client.exists(f"{PREFIX}call:t") and deadline:
            gevent.sleep(0.01)
            deadline -= 1
        assert client.hget(f"{PREFIX}call:t", "owner") == "fs-tick"
        records.release("t")
    finally:
        records.stop()  # writes what is still queued
    assert not client.exists(f"{PREFIX}call:t")


def script_calls(client: redis.Redis) -> dict[str, int]:
    """Commands Redis ran so far: EVALSHA, EVAL and SCRIPT (Redis 6: EXISTS and LOAD
    together)."""
    stats = client.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in ("evalsha", "eval", "script")}


def test_a_flush_is_one_round_trip_of_evalsha_and_survives_lost_scripts(
        client: redis.Redis) -> None:
    """The flush sends its scripts by EVALSHA with no SCRIPT EXISTS before (one round trip);
    when Redis lost them (restarted), it loads them and sends the writes again, in order,
    from the first refused (a claim then its release: the record is gone)."""
    records = CallRecords(client, "fs-sha")
    records.claim(info("warm"))
    records.release("warm")
    records.flush()  # the scripts are in Redis now
    before = script_calls(client)
    records.claim(info("s"))
    records.claim(info("t"))
    records.flush()
    after = script_calls(client)
    assert after["evalsha"] - before["evalsha"] == 2
    assert (after["script"], after["eval"]) == (before["script"], before["eval"])
    client.script_flush()  # Redis restarted
    after = script_calls(client)
    records.release("s")
    records.claim(info("u"))
    records.release("u")
    records.flush()
    assert script_calls(client)["script"] - after["script"] == 2  # two SCRIPT LOADs
    assert client.smembers(f"{PREFIX}owner:fs-sha") == {"t"}
    assert not client.exists(f"{PREFIX}call:s") and not client.exists(f"{PREFIX}call:u")


def test_a_parked_call_is_taken_by_one_live_worker(client: redis.Redis) -> None:
    """Ingress park: every worker hears the park, the first claim wins; a live owner keeps
    its calls, a dead one's (heartbeat gone) are takeable, and so are a worker's own."""
    a, b = CallRecords(client, "fs-a"), CallRecords(client, "fs-b")
    for worker in ("fs-a", "fs-b"):
        client.set(f"{PREFIX}alive:{worker}", 1)
    assert a.take(info("p1"))
    assert not b.take(info("p1"))  # fs-a has it, alive
    assert client.hget(f"{PREFIX}call:p1", "owner") == "fs-a"
    assert a.take(info("p1"))  # its own: yes (after its connection came back)
    assert b.takeable(["p1", "p2"]) == ["p2"] and a.takeable(["p1", "p2"]) == ["p1", "p2"]
    assert a.takeable([]) == []

    client.delete(f"{PREFIX}alive:fs-a")  # fs-a died
    assert b.takeable(["p1"]) == ["p1"]
    assert b.take(info("p1"))
    assert client.hget(f"{PREFIX}call:p1", "owner") == "fs-b"
    assert client.smembers(f"{PREFIX}owner:fs-a") == set()
    assert client.smembers(f"{PREFIX}owner:fs-b") == {"p1"}
    b.release("p1")
    b.flush()
    assert not client.exists(f"{PREFIX}call:p1")
