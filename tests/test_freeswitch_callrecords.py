"""FreeSWITCH call records (appserver/freeswitch/callrecords.py) on a real Redis: a call that
ended while no worker had it (its worker died, the caller hung up before the next one got
the call) gets its one CDR from a live worker's reaper; a call another worker took is not
reaped; a live worker's calls are never looked at."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import pytest
import redis

from appserver.freeswitch.callrecords import (
    HEARTBEAT_SECONDS,
    HEARTBEAT_TTL_MS,
    PREFIX,
    CallRecords,
    Exists,
    Taken,
)
from appserver.queues.runtime import QueueRuntime
from ivr.calls import CallInfo


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.set(f"{PREFIX}epoch", "e0")  # a Redis that has its data (see the last tests)
    yield r
    r.close()


def info(uuid: str) -> CallInfo:
    return CallInfo(uuid, "freeswitch", "+15550100", "9999", node="fs1")


def each(answer: Callable[[str, str], bool | None]) -> Exists:
    """The nodes' answer for a batch of (uuid, node), from ``answer`` per call."""
    return lambda calls: [answer(uuid, node) for uuid, node in calls]


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

    assert live.reap(each(on_node), lambda call, at: lost.append((call, at))) == 1
    assert [(call.call_id, call.caller, call.called, at) for call, at in lost] == [
        ("gone", "+15550100", "9999", started["gone"])]
    assert not client.exists(f"{PREFIX}call:gone")
    assert client.smembers(f"{PREFIX}owner:fs-dead") == {"bridged"}  # still up: kept

    # A second reaper, or a second round, finds nothing more to record.
    other = CallRecords(client, "fs-other")
    client.set(f"{PREFIX}alive:fs-other", 1)
    assert other.reap(each(on_node), lambda call, at: lost.append((call, at))) == 0
    # The bridged call ends too; then the dead worker has nothing left and is forgotten.
    on_engine["bridged"] = False
    assert other.reap(each(on_node), lambda call, at: lost.append((call, at))) == 1
    assert other.reap(each(on_node), lambda call, at: lost.append((call, at))) == 0
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

    def reap(answer: bool | None) -> int:
        return reaper.reap(each(lambda uuid, node: answer),
                           lambda call, at: lost.append(call.call_id))

    assert reap(False) == 0
    client.delete(f"{PREFIX}alive:fs-busy")  # it died; the node that had the call is down
    assert reap(None) == 0
    assert reap(False) == 1
    assert lost == ["a"]


def test_a_round_asks_the_nodes_once_for_all_of_a_dead_workers_calls(
        client: redis.Redis) -> None:
    """A dead worker's bridged calls are looked at every round while they last: the round's
    calls go to the nodes as one batch (NodeManager.calls_exist asks each node 100 to a
    write), not a question per call."""
    dead, reaper = CallRecords(client, "fs-gone"), CallRecords(client, "fs-reaper")
    client.set(f"{PREFIX}alive:fs-reaper", 1)
    for n in range(150):
        dead.claim(info(f"c{n}"))
    dead.flush()
    client.delete(f"{PREFIX}call:c0")  # expired meanwhile: no question, off its set
    reaper.claim(info("c1"))  # taken since (the next socket): not to judge
    reaper.flush()
    asked: list[list[tuple[str, str]]] = []

    def exists(calls: list[tuple[str, str]]) -> list[bool | None]:
        asked.append(calls)
        return [uuid not in ("c2", "c3") for uuid, _ in calls]  # those two ended

    lost: list[str] = []
    assert reaper.reap(exists, lambda call, at: lost.append(call.call_id)) == 2
    assert len(asked) == 1
    assert sorted(asked[0]) == sorted((f"c{n}", "fs1") for n in range(2, 150))
    assert sorted(lost) == ["c2", "c3"]
    assert client.scard(f"{PREFIX}owner:fs-gone") == 146  # c0, c2, c3 gone; c1 not here
    assert not client.sismember(f"{PREFIX}owner:fs-gone", "c0")


def test_a_round_that_finds_a_worker_newly_dead_says_so_first(client: redis.Redis) -> None:
    """``died`` runs when a round finds a worker dead that the round before did not (the
    parked calls' sweeps then take its calls at once), before that round's reaping."""
    a, b, reaper = (CallRecords(client, w) for w in ("fs-a", "fs-b", "fs-reaper"))
    for records, uuid in ((a, "a1"), (b, "b1")):
        records.claim(info(uuid))
        records.flush()
        client.set(f"{PREFIX}alive:{records.worker_id}", 1)
    events: list[str] = []

    def exists(uuid: str, node: str) -> bool:
        events.append(f"exists {uuid}")
        return True

    def reap() -> int:
        return reaper.reap(each(exists), lambda call, at: None, died=lambda: events.append("died"))

    assert reap() == 0 and events == []
    client.delete(f"{PREFIX}alive:fs-a")
    reap()
    assert events == ["died", "exists a1"]
    events.clear()
    reap()  # fs-a is still dead: not news
    assert events == ["exists a1"]
    events.clear()
    client.delete(f"{PREFIX}alive:fs-b")
    reap()
    assert events[0] == "died" and sorted(events[1:]) == ["exists a1", "exists b1"]


def test_a_dead_workers_calls_are_swept_before_its_queue_leases_run_out() -> None:
    """A dead worker is found at most TTL + one round after its death, and its parked calls
    swept then; its queued callers' leases run out 15 s after their last renewal (one tick
    before it died at worst): the take-over (park, take, take_over) needs a margin left."""
    lease = inspect.signature(QueueRuntime).parameters["lease_seconds"].default
    tick = inspect.signature(QueueRuntime).parameters["tick_seconds"].default
    assert lease - tick >= HEARTBEAT_TTL_MS / 1000 + HEARTBEAT_SECONDS + 3


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
    records.start(lambda uuid, node: True, lambda call, at: None)
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
    assert a.take(info("p1")) is Taken.NEW
    assert b.take(info("p1")) is Taken.NOT  # fs-a has it, alive
    assert client.hget(f"{PREFIX}call:p1", "owner") == "fs-a"
    assert a.take(info("p1")) is Taken.OVER  # its own: yes (after its connection came back)
    assert b.takeable(["p1", "p2"]) == ["p2"] and a.takeable(["p1", "p2"]) == ["p1", "p2"]
    assert a.takeable([]) == []

    client.delete(f"{PREFIX}alive:fs-a")  # fs-a died
    assert b.takeable(["p1"]) == ["p1"]
    assert b.take(info("p1")) is Taken.OVER
    assert client.hget(f"{PREFIX}call:p1", "owner") == "fs-b"
    assert client.smembers(f"{PREFIX}owner:fs-a") == set()
    assert client.smembers(f"{PREFIX}owner:fs-b") == {"p1"}
    b.release("p1")
    b.flush()
    assert not client.exists(f"{PREFIX}call:p1")


def test_after_its_own_heartbeat_gap_a_worker_judges_nobody_dead_for_a_ttl(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis unreachable (or this worker stalled) longer than a heartbeat's lifetime: every
    heartbeat may have run out meanwhile, live workers' too. Until they have had a TTL to
    renew theirs, this worker takes no other worker's parked call and reaps nothing; its own
    and unowned calls stay takeable."""
    clock = [1000.0]
    monkeypatch.setattr("appserver.freeswitch.callrecords.time.monotonic", lambda: clock[0])
    a, b = CallRecords(client, "fs-a"), CallRecords(client, "fs-b")
    assert a.take(info("p1")) and b.take(info("p2"))
    client.delete(f"{PREFIX}alive:fs-a")  # (fs-a's heartbeat: gone)
    b.beat()
    assert b.judging() and b.takeable(["p1", "p2", "p3"]) == ["p1", "p2", "p3"]
    assert b.dead_workers() == ["fs-a"]

    clock[0] += HEARTBEAT_TTL_MS / 1000 + 5  # no heartbeat that long
    b.beat()
    assert not b.judging()
    assert b.takeable(["p1", "p2", "p3"]) == ["p2", "p3"] and b.dead_workers() == []
    clock[0] += HEARTBEAT_SECONDS
    b.beat()  # beating again, but fs-a has not had its TTL yet
    assert not b.judging()
    while clock[0] < 1000 + HEARTBEAT_TTL_MS / 1000 + 5 + HEARTBEAT_TTL_MS / 1000:
        clock[0] += HEARTBEAT_SECONDS
        b.beat()
    assert b.judging() and b.takeable(["p1"]) == ["p1"] and b.dead_workers() == ["fs-a"]


def test_a_worker_that_went_without_a_heartbeat_knows_it_and_which_calls_it_lost(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stale: no heartbeat for about a TTL (the others may have judged it dead and taken its
    parked calls); ``others_have`` says which calls their records give to another worker."""
    clock = [1000.0]
    monkeypatch.setattr("appserver.freeswitch.callrecords.time.monotonic", lambda: clock[0])
    a, b = CallRecords(client, "fs-a"), CallRecords(client, "fs-b")
    assert a.take(info("s1")) and a.take(info("s2"))
    a.beat()
    assert not a.stale()
    clock[0] += HEARTBEAT_TTL_MS / 1000 - HEARTBEAT_SECONDS - 0.5
    assert not a.stale()
    clock[0] += 1
    assert a.stale()
    client.delete(f"{PREFIX}alive:fs-a")
    assert b.take(info("s2"))  # fs-a judged dead: its call taken
    assert a.others_have(["s1", "s2", "s3"]) == {"s2"} and a.others_have([]) == set()
    assert a.stalls == 0
    a.beat()  # (its reaper's heartbeat may come first as it wakes: still a stall, counted)
    assert not a.stale() and a.stalls == 1
    clock[0] += HEARTBEAT_SECONDS
    a.beat()
    assert a.stalls == 1


def test_a_worker_that_cannot_reach_redis_is_not_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """While Redis is unreachable nobody can take a call, and asking Redis would hold every
    call's commands up: a worker whose last renewal failed does not count as stale."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from appserver.devkit.embedded import free_port

    clock = [1000.0]
    monkeypatch.setattr("appserver.freeswitch.callrecords.time.monotonic", lambda: clock[0])
    down = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)
    records = CallRecords(down, "fs-cut")
    with pytest.raises(redis.ConnectionError):
        records.beat()
    clock[0] += HEARTBEAT_TTL_MS / 1000 * 3
    assert not records.stale()
    down.close()


def test_a_redis_that_lost_its_data_takes_no_live_workers_call(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis came back without its data: every record is gone, so a live worker's parked
    call looks like no worker's. The first worker to look finds the epoch gone, takes
    nobody's call and judges nobody dead for a heartbeat's lifetime; each worker that finds
    the epoch changed writes its calls' records again meanwhile."""
    clock = [1000.0]
    monkeypatch.setattr("appserver.freeswitch.callrecords.time.monotonic", lambda: clock[0])
    a, b = CallRecords(client, "fs-a"), CallRecords(client, "fs-b")
    a.calls, b.calls = (lambda: [info("p1")]), (lambda: [info("p2")])
    assert a.take(info("p1")) and b.take(info("p2"))
    a.beat()
    b.beat()
    assert client.get(f"{PREFIX}epoch") == "e0"  # adopted, nothing written again
    assert b.takeable(["p1", "p2", "p3"]) == ["p2", "p3"]

    for key in client.scan_iter(f"{PREFIX}*"):
        client.delete(key)  # the records' data lost
    assert b.takeable(["p1", "p2", "p3"]) == []  # the epoch is gone: b writes a new one
    assert client.get(f"{PREFIX}epoch") not in (None, "e0")
    assert not b.judging() and b.dead_workers() == []
    b.flush()
    assert client.hget(f"{PREFIX}call:p2", "owner") == "fs-b"  # b's record written again
    clock[0] += HEARTBEAT_SECONDS
    a.beat()  # a finds the epoch changed: its record too
    a.flush()
    assert client.hget(f"{PREFIX}call:p1", "owner") == "fs-a"
    while clock[0] < 1000 + HEARTBEAT_TTL_MS / 1000:
        assert not b.judging()
        clock[0] += HEARTBEAT_SECONDS
        a.beat()
        b.beat()
    assert b.judging()
    assert b.takeable(["p1", "p2", "p3"]) == ["p2", "p3"]  # a's call is a live worker's again


def test_a_worker_starting_on_a_redis_with_no_epoch_waits_before_taking_unowned_calls(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """It cannot tell a fresh Redis from one that lost its data (the live workers' records
    may not be written again yet): unowned calls wait a heartbeat's lifetime."""
    clock = [1000.0]
    monkeypatch.setattr("appserver.freeswitch.callrecords.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("appserver.freeswitch.callrecords.time.time", lambda: 5e8 + clock[0])
    client.delete(f"{PREFIX}epoch")
    fresh = CallRecords(client, "fs-new")
    fresh.beat()
    assert fresh.takeable(["x"]) == [] and not fresh.judging()
    clock[0] += HEARTBEAT_TTL_MS / 1000
    assert fresh.takeable(["x"]) == ["x"] and fresh.judging()
    later = CallRecords(client, "fs-later")  # the epoch is there, a lifetime old: no wait
    later.beat()
    assert later.takeable(["x"]) == ["x"]


def test_a_worker_starting_soon_after_redis_lost_its_data_waits_the_rest_of_the_lifetime(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live worker found the data lost and wrote a new epoch; its records come in its next
    write. A worker that starts meanwhile finds an epoch there: its age says to wait, for
    what is left of the lifetime (on the wall clock, which the hosts share)."""
    clock = [1000.0]
    monkeypatch.setattr("appserver.freeswitch.callrecords.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("appserver.freeswitch.callrecords.time.time", lambda: 5e8 + clock[0])
    live = CallRecords(client, "fs-live")
    live.calls = lambda: [info("p1")]
    live.beat()  # adopts "e0"
    client.delete(f"{PREFIX}epoch", f"{PREFIX}call:p1")  # the data lost
    live.beat()  # a new epoch; p1's record queued, not written yet
    clock[0] += HEARTBEAT_SECONDS
    starting = CallRecords(client, "fs-starting")
    assert starting.takeable(["p1", "x"]) == [] and not starting.judging()
    live.flush()
    clock[0] += HEARTBEAT_TTL_MS / 1000 - HEARTBEAT_SECONDS  # the epoch's lifetime is over
    assert starting.takeable(["p1", "x"]) == ["x"] and starting.judging()


def test_takes_with_redis_unreachable_take_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """No claim, no call: a parked call nobody could claim waits for the next sweep. A
    sweep's batch says so once, not once per call."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from appserver.devkit.embedded import free_port

    client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0), socket_connect_timeout=1)
    records = CallRecords(client, "fs-cut-off")
    assert records.take(info("t1")) is Taken.NOT
    caplog.clear()
    assert records.take_many([info("t2"), info("t3")]) == [Taken.NOT, Taken.NOT]
    assert [r.getMessage()[:33] for r in caplog.records] == ["cannot take 2 parked call(s), Red"]
    client.close()


def test_own_unwatched_calls_gone_from_the_node_get_their_cdr(client: redis.Redis) -> None:
    """A sweep took these calls (the records are this worker's) but could not send them
    back to the park: the one gone from its node gets its CDR and its record goes; the one
    still there stays this worker's, for the next sweep."""
    records = CallRecords(client, "fs-sweeper")
    for uuid in ("hung-up", "still-there"):
        records.claim(info(uuid))
    records.flush()
    lost: list[str] = []
    assert records.unwatched(["hung-up", "still-there"]) == 0  # not started: no judge yet
    records.start(each(lambda uuid, node: uuid == "still-there"),
                  lambda call, at: lost.append(call.call_id))
    try:
        assert records.unwatched(["hung-up", "still-there"]) == 1
    finally:
        records.stop()
    assert lost == ["hung-up"]
    assert not client.exists(f"{PREFIX}call:hung-up")
    assert client.hget(f"{PREFIX}call:still-there", "owner") == "fs-sweeper"
