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
    started = {uuid: dead.claim(info(uuid)) for uuid in ("gone", "bridged", "moved")}
    client.set(f"{PREFIX}alive:fs-live", 1)  # fs-live's heartbeat; fs-dead has none
    assert live.claim(info("moved")) == started["moved"]  # the next socket: keeps its start

    lost: list[tuple[CallInfo, float]] = []
    on_engine = {"gone": False, "bridged": True}
    assert live.reap(on_engine.__getitem__, lambda call, at: lost.append((call, at))) == 1
    assert [(call.call_id, call.caller, call.called, at) for call, at in lost] == [
        ("gone", "+15550100", "9999", started["gone"])]
    assert not client.exists(f"{PREFIX}call:gone")
    assert client.smembers(f"{PREFIX}owner:fs-dead") == {"bridged"}  # still up: kept

    # A second reaper, or a second round, finds nothing more to record.
    other = CallRecords(client, "fs-other")
    client.set(f"{PREFIX}alive:fs-other", 1)
    assert other.reap(on_engine.__getitem__, lambda call, at: lost.append((call, at))) == 0
    # The bridged call ends too; then the dead worker has nothing left and is forgotten.
    on_engine["bridged"] = False
    assert other.reap(on_engine.__getitem__, lambda call, at: lost.append((call, at))) == 1
    assert other.reap(on_engine.__getitem__, lambda call, at: lost.append((call, at))) == 0
    assert "fs-dead" not in client.smembers(f"{PREFIX}workers")
    assert [call.call_id for call, _ in lost] == ["gone", "bridged"]

    # The moved call is fs-live's; it ends there and its record goes.
    live.release("moved")
    assert not client.exists(f"{PREFIX}call:moved")


def test_live_workers_and_unanswering_nodes_are_left_alone(client: redis.Redis) -> None:
    busy, reaper = CallRecords(client, "fs-busy"), CallRecords(client, "fs-reaper")
    busy.claim(info("a"))
    client.set(f"{PREFIX}alive:fs-busy", 1)
    lost: list[str] = []
    assert reaper.reap(lambda uuid: False, lambda call, at: lost.append(call.call_id)) == 0
    client.delete(f"{PREFIX}alive:fs-busy")  # it died; the node that had the call is down
    assert reaper.reap(lambda uuid: None, lambda call, at: lost.append(call.call_id)) == 0
    assert reaper.reap(lambda uuid: False, lambda call, at: lost.append(call.call_id)) == 1
    assert lost == ["a"]


def test_release_by_a_worker_that_lost_the_call_keeps_the_new_owners_record(
        client: redis.Redis) -> None:
    first, second = CallRecords(client, "fs-1"), CallRecords(client, "fs-2")
    first.claim(info("x"))
    second.claim(info("x"))
    first.release("x")  # the old socket's late end
    assert client.hget(f"{PREFIX}call:x", "owner") == "fs-2"
    assert client.smembers(f"{PREFIX}owner:fs-1") == set()
