"""Each call a FreeSWITCH worker serves is recorded in Redis while it lasts.

A worker that dies leaves its calls in the engine: the running application plays on, then the
dialplan hands each call to the next worker's ``socket``, which claims the record (and writes
the call's CDR when it ends). A call that ends before any worker has it again (the caller hangs
up during the dead worker's prompt, music stretch or bridge) would get no CDR at all; so every
worker also reaps: every few seconds it renews its own heartbeat and, for a worker whose
heartbeat ran out, asks the engine nodes whether that worker's calls still exist
(``uuid_exists``). A call gone everywhere gets its CDR (``failed``, ``WORKER_LOST``) from the
one worker whose claim of the record wins, then the record goes.

Keys (``callyard:fs:``): ``call:<uuid>`` a hash (owner, started_at, caller, called, node),
``owner:<worker>`` the set of its calls, ``alive:<worker>`` its heartbeat, ``workers`` every
worker that has recorded calls, ``epoch`` a token of the Redis data they are in.

A Redis that comes back without its data (no persistence, a new replica) has lost every
record, so each live worker's calls look like no worker's: a parked worker's sweep would take
them. The first worker to find the ``epoch`` gone (its heartbeat, or a sweep's look at the
records) writes a new one; each worker that finds the epoch changed writes its calls'
records again (``calls``, within a heartbeat) and judges nobody dead, nor takes anyone
else's call, for a heartbeat's lifetime. A worker that starts on a Redis with no epoch does
the same: it cannot tell a fresh Redis from one that lost its data. The epoch says when it
was written, so a worker that starts within that lifetime waits for the rest of it too (the
live workers' records may not be written again yet).

Claims and releases are queued and written together, in order, in one round trip per loop
tick (a greenlet flushes them; at thousands of new calls a second a round trip per call was
a tenth of the worker's CPU): a pipeline of EVALSHA, with no SCRIPT EXISTS before it (what
redis-py's script objects send ahead of every pipeline); only when Redis lost the scripts
(NOSCRIPT: a restart) are they loaded and the writes sent again from the first refused.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.event
from redis.exceptions import NoScriptError, RedisError

from appserver.worker.renewals import Renewals
from ivr.calls import CallInfo

log = logging.getLogger("callyard.freeswitch")

PREFIX = "callyard:fs:"
HEARTBEAT_SECONDS = 2.0  # how often a worker renews its heartbeat and reaps
HEARTBEAT_TTL_MS = 8_000  # a worker silent this long is dead
# a worker silent this long may be judged dead by the time its next write lands
STALE_SECONDS = HEARTBEAT_TTL_MS / 1000 - HEARTBEAT_SECONDS
# A dead parked worker's calls are taken at most TTL + HEARTBEAT_SECONDS after its death (the
# others' sweeps run as soon as their reaper sees it dead): that must stay well under the
# queue lease (QueueRuntime, 15 s from its last renewal), or its queued callers lose their
# place before another worker can take them over (tests/test_freeswitch_callrecords.py).
RECORD_TTL = 24 * 3600  # a record nobody could reap (its node never came back) expires
REAP_BATCH = 200  # calls of a dead worker looked at per round

# KEYS: call:<uuid>. ARGV: prefix, uuid, owner, now, caller, called, node, ttl. Makes the
# record ``owner``'s (a call taken from a dead worker keeps its first start time).
_OWN = """
if old and old ~= ARGV[3] then redis.call('SREM', ARGV[1] .. 'owner:' .. old, ARGV[2]) end
if not old then
  redis.call('HSET', KEYS[1], 'started_at', ARGV[4], 'caller', ARGV[5], 'called', ARGV[6],
             'node', ARGV[7])
end
redis.call('HSET', KEYS[1], 'owner', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[8]))
redis.call('SADD', ARGV[1] .. 'owner:' .. ARGV[3], ARGV[2])
redis.call('SADD', ARGV[1] .. 'workers', ARGV[3])
"""
_OLD_OWNER = "local old = redis.call('HGET', KEYS[1], 'owner')\n"
# The next socket's call: always. -> the call's first start time.
_CLAIM = _OLD_OWNER + _OWN + "return redis.call('HGET', KEYS[1], 'started_at')\n"
# A parked call (see parked.py): unless a live worker (its heartbeat is there) has it.
# -> a Taken: 0 not taken, 1 a record new, 2 a record that was there (a dead worker's call,
# or one this worker's sweep claimed).
_TAKE = _OLD_OWNER + """
if old and old ~= ARGV[3] and redis.call('EXISTS', ARGV[1] .. 'alive:' .. old) == 1 then
  return 0
end
""" + _OWN + "if old then return 2 end\nreturn 1\n"
# KEYS: call:<uuid>. ARGV: prefix, uuid, owner. Deletes the record if ``owner`` still owns
# it (1), else only the uuid from that owner's set (0: another worker has the call now).
_RELEASE = """
redis.call('SREM', ARGV[1] .. 'owner:' .. ARGV[3], ARGV[2])
if redis.call('HGET', KEYS[1], 'owner') == ARGV[3] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class Taken(enum.IntEnum):
    """What a take did (false only when the call was not taken)."""

    NOT = 0
    NEW = 1  # a call no worker had recorded
    OVER = 2  # a record that was there: a dead worker's call, or one this worker swept


# [(uuid, the node it came in on)] -> each one still on that node? None: cannot tell (a node
# did not answer, or it is not one of this worker's nodes: that node's own workers judge it)
Exists = Callable[[list[tuple[str, str]]], list[bool | None]]
Lost = Callable[[CallInfo, float], None]  # the CDR of a call that ended unwatched


def new_epoch() -> str:
    """A token for the Redis data the records are in, with when it was written (wall clock,
    ms: workers on other hosts read its age)."""
    return f"{secrets.token_hex(8)}@{int(time.time() * 1000)}"


def epoch_age(epoch: str) -> float:
    """Seconds since ``epoch`` was written (inf when it does not say; 0 if in the future)."""
    _, _, written = epoch.rpartition("@")
    if not written.isdigit():
        return float("inf")
    return max(0.0, time.time() - int(written) / 1000)


class CallRecords:
    def __init__(self, redis: Any, worker_id: str, *, prefix: str = PREFIX,
                 durable: Callable[[], object] = lambda: None) -> None:
        """``durable`` returns once the CDRs handed over so far are in Redis: releases wait
        for it (were the worker killed in between, neither the CDR nor the record would be
        left)."""
        self.redis = redis
        self.worker_id = worker_id
        self.prefix = prefix
        self.durable = durable
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._take = redis.register_script(_TAKE)
        self._pending: list[tuple[Any, list[str], list[Any]]] = []  # (script, keys, args)
        self._queued = gevent.event.Event()
        self._reaper: gevent.Greenlet | None = None
        self._flusher: gevent.Greenlet | None = None
        self._dead: set[str] = set()  # the workers the last round found dead
        self._beats = Renewals(HEARTBEAT_SECONDS, HEARTBEAT_TTL_MS / 1000)
        self._epoch: str | None = None  # the Redis data this worker's records are in
        self._restoring_until = 0.0  # (monotonic) after Redis lost its data: records missing
        # this worker's calls (the worker sets it): their records are written again when
        # Redis lost its data
        self.calls: Callable[[], Iterable[CallInfo]] = lambda: ()
        self.stalls = 0  # heartbeats renewed after STALE_SECONDS or more without one
        self._beat_ok = True  # the last renewal tried reached Redis
        self._judge: tuple[Exists, Lost] | None = None  # how the reaper judges (start)

    def _key(self, uuid: str) -> str:
        return f"{self.prefix}call:{uuid}"

    def claim(self, info: CallInfo) -> None:
        """Record the call as this worker's (taking it from a dead worker if it had it; the
        record keeps the call's first start time). Redis unreachable: not recorded, the
        call goes on."""
        self._queue(self._claim, info.call_id, [
            self.prefix, info.call_id, self.worker_id, repr(time.time()), info.caller,
            info.called, info.node, RECORD_TTL])

    def take(self, info: CallInfo) -> Taken:
        """A parked call: make it this worker's unless a live worker has it (one round trip,
        now: only the winner may drive the call). Redis unreachable: not taken."""
        return self.take_many([info])[0]

    def take_many(self, infos: list[CallInfo]) -> list[Taken]:
        """:meth:`take` of each call, all in one round trip (a sweep's)."""
        ops = [(self._take, [self._key(info.call_id)], [
            self.prefix, info.call_id, self.worker_id, repr(time.time()), info.caller,
            info.called, info.node, RECORD_TTL]) for info in infos]
        try:
            results = self._run_scripts(ops)
        except (RedisError, OSError) as exc:
            log.warning("cannot take %d parked call(s), Redis unreachable: %s", len(ops), exc,
                        extra={"call_id": infos[0].call_id} if len(infos) == 1 else {})
            return [Taken.NOT] * len(ops)
        for info, result in zip(infos, results, strict=True):
            if isinstance(result, Exception):
                log.warning("cannot take a parked call: %s", result,
                            extra={"call_id": info.call_id})
        return [Taken(r) if r in (Taken.NEW, Taken.OVER) else Taken.NOT for r in results]

    def takeable(self, uuids: list[str]) -> list[str]:
        """Of these calls, those no live worker but this one has (two round trips in all)."""
        if not uuids:
            return []
        owners = self._owners(uuids)
        if self._restoring():  # a call with no record may be a live worker's whose record
            # went with Redis's data: it is written again within a heartbeat
            return [u for u, o in zip(uuids, owners, strict=True) if o == self.worker_id]
        others = sorted({o for o in owners if o and o != self.worker_id})
        if not self.judging():
            return [u for u, o in zip(uuids, owners, strict=True) if o not in others]
        alive = dict(zip(others, self.redis.mget([f"{self.prefix}alive:{o}" for o in others])
                         if others else [], strict=True))
        return [u for u, o in zip(uuids, owners, strict=True) if alive.get(o) is None]

    def release(self, uuid: str) -> None:
        """The call ended and its CDR is handed over: forget it (if it is still this
        worker's), once the CDR is in Redis."""
        self._queue(self._release, uuid, [self.prefix, uuid, self.worker_id])

    def _queue(self, script: Any, uuid: str, args: list[Any]) -> None:
        self._pending.append((script, [self._key(uuid)], args))
        self._queued.set()

    def flush(self) -> None:
        """Write the claims and releases queued so far, in order, in one round trip."""
        ops, self._pending = self._pending, []
        if not ops:
            return
        if any(script is self._release for script, _, _ in ops):
            self.durable()
        try:
            results = self._run_scripts(ops)
        except (RedisError, OSError) as exc:
            log.warning("could not write %d call record change(s): %s", len(ops), exc)
            return
        for (_, keys, _), result in zip(ops, results, strict=True):
            if isinstance(result, Exception):
                log.warning("could not write the call record: %s", result,
                            extra={"call_id": keys[0].rpartition(":")[2]})

    def _run_scripts(self, ops: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        """``ops`` in one round trip, in order: each one's result, or its exception."""
        results = self._evalsha(ops)
        first = next((i for i, r in enumerate(results) if isinstance(r, NoScriptError)), None)
        if first is not None:  # Redis lost the scripts: load them, send the rest again
            for script in {script for script, _, _ in ops[first:]}:
                script.sha = self.redis.script_load(script.script)
            results[first:] = self._evalsha(ops[first:])
        return results

    def _evalsha(self, ops: list[tuple[Any, list[str], list[Any]]]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for script, keys, args in ops:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(pipe.execute(raise_on_error=False))

    def _flush_forever(self) -> None:
        while True:
            self._queued.wait()
            self._queued.clear()
            self.flush()

    # ------------------------------------------------------------ heartbeat and reaping

    def start(self, exists: Exists, lost: Lost, died: Callable[[], object] = lambda: None
              ) -> None:
        """``died`` is called when a round finds a worker dead that the last did not (the
        parked calls' sweeps then run at once)."""
        self._judge = (exists, lost)
        self._flusher = gevent.spawn(self._flush_forever)
        self._reaper = gevent.spawn(self._run, died)

    def unwatched(self, uuids: list[str], ended: bool = False) -> int:
        """This worker's calls that no flow of its drives (a sweep took them but could not
        send them back to the park): those gone from their node get their CDR now, as a dead
        worker's would; the others wait for the next sweep. How many were gone. ``ended``:
        their hangup was heard, the nodes are not asked."""
        if not uuids or self._judge is None:
            return 0
        exists, lost = self._judge
        if ended:  # their hangup was heard
            exists = self._gone
        return self._reap_calls(self.worker_id, uuids, exists, lost)

    @staticmethod
    def _gone(calls: list[tuple[str, str]]) -> list[bool | None]:
        return [False] * len(calls)

    def stop(self) -> None:
        for greenlet in (self._reaper, self._flusher):
            if greenlet is not None:
                greenlet.kill(block=True, timeout=2)
        self._reaper = self._flusher = None
        self.flush()  # the last calls' releases
        # a graceful stop: the others need not wait for the heartbeat to run out
        with contextlib.suppress(RedisError, OSError):
            self.redis.delete(f"{self.prefix}alive:{self.worker_id}")

    def beat(self) -> None:
        """Renew this worker's heartbeat. After a gap since the last (Redis was unreachable,
        or this worker stalled) the others' heartbeats may have run out meanwhile too: no
        worker is judged dead until they have had a heartbeat's lifetime to renew theirs."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(f"{self.prefix}alive:{self.worker_id}", 1, px=HEARTBEAT_TTL_MS)
            _, epoch, created = self._with_epoch(pipe)
        except (RedisError, OSError):
            self._beat_ok = False
            raise
        self._beat_ok = True
        self._check_epoch(epoch, created)
        gap = self._beats.renewed()
        if gap > STALE_SECONDS:
            self.stalls += 1
        if gap:
            log.warning("no heartbeat for %.1f s: no worker judged dead for %.0f s",
                        gap, self._beats.lifetime)

    def stale(self) -> bool:
        """Whether the others may have judged this worker dead and taken its calls: no
        heartbeat for :data:`STALE_SECONDS` although its last renewal reached Redis (it
        stalled). Not while Redis is unreachable: nobody takes a call without Redis, and
        asking it would hold the calls up. A heartbeat that comes after such a silence
        counts in :attr:`stalls` (the worker's timers may run before it asks)."""
        return self._beat_ok and time.monotonic() - self._beats.last > STALE_SECONDS

    def others_have(self, uuids: list[str]) -> set[str]:
        """Of these calls, those whose record another worker owns now (one round trip)."""
        if not uuids:
            return set()
        return {u for u, o in zip(uuids, self._owners(uuids), strict=True)
                if o and o != self.worker_id}

    def _owners(self, uuids: list[str]) -> list[str]:
        """The worker each call's record names ("": no record), in one round trip; first,
        whether Redis lost its data (then nobody else's call is judged takeable)."""
        pipe = self.redis.pipeline(transaction=False)
        for uuid in uuids:
            pipe.hget(self._key(uuid), "owner")
        owners, epoch, created = self._with_epoch(pipe)
        self._check_epoch(epoch, created)
        return [str(o or "") for o in owners]

    def _with_epoch(self, pipe: Any) -> tuple[list[Any], str, bool]:
        """Run ``pipe`` and read the epoch in the same round trip (writing one first if
        there is none): ``pipe``'s results, the epoch, whether this worker wrote it."""
        pipe.set(f"{self.prefix}epoch", new_epoch(), nx=True)
        pipe.get(f"{self.prefix}epoch")
        *results, created, epoch = pipe.execute()
        return results, str(epoch), bool(created)

    def _check_epoch(self, epoch: str, created: bool) -> None:
        """After a heartbeat or a look at the records: if Redis lost its data since the
        last look (the epoch changed, or there was none), write this worker's calls'
        records again and judge nobody dead for a lifetime (see the module's doc)."""
        if epoch == self._epoch and not created:
            return
        first = self._epoch is None
        self._epoch = epoch
        if first and not created:  # starting on a Redis whose data is there, but the live
            # workers may not have written their records again yet if it was lost lately
            age = epoch_age(epoch)
            if age < self._beats.lifetime:
                self._restoring_until = time.monotonic() + self._beats.lifetime - age
                log.info("the call records' epoch is %.1f s old: no other worker's call "
                         "taken for %.1f s", age, self._beats.lifetime - age)
            return
        self._restoring_until = time.monotonic() + self._beats.lifetime
        if first:
            log.info("no call records in Redis yet (a fresh Redis, or one that lost its "
                     "data): no other worker's call taken for %.0f s", self._beats.lifetime)
            return
        calls = list(self.calls())
        log.warning("Redis has lost its data (the call records' epoch is new): %d call "
                    "record(s) of this worker written again; nobody judged dead for %.0f s",
                    len(calls), self._beats.lifetime)
        for info in calls:
            self.claim(info)

    def judging(self) -> bool:
        """Whether a worker whose heartbeat is gone counts as dead now (see :meth:`beat`,
        and the module's doc for a Redis that lost its data)."""
        return self._beats.judging() and not self._restoring()

    def _restoring(self) -> bool:
        return time.monotonic() < self._restoring_until

    def _run(self, died: Callable[[], object]) -> None:
        assert self._judge is not None  # (set by start)
        while True:
            try:
                self.beat()
                self.reap(*self._judge, died)
            except (RedisError, OSError) as exc:
                log.warning("call records wait for Redis: %s", exc)
            gevent.sleep(HEARTBEAT_SECONDS)

    def dead_workers(self) -> list[str]:
        if not self.judging():
            return []
        workers = [str(w) for w in self.redis.smembers(f"{self.prefix}workers")]
        others = [w for w in workers if w != self.worker_id]
        if not others:
            return []
        alive = self.redis.mget([f"{self.prefix}alive:{w}" for w in others])
        return [w for w, beat in zip(others, alive, strict=True) if beat is None]

    def reap(self, exists: Exists, lost: Lost, died: Callable[[], object] = lambda: None
             ) -> int:
        """One round: the calls of dead workers that no node has any more get their CDR;
        ``died`` first if a worker is dead that the last round did not find so. Returns how
        many calls were reaped."""
        dead = self.dead_workers()
        if not self._dead.issuperset(dead):
            died()
        self._dead = set(dead)
        reaped = 0
        for worker in dead:
            owned = f"{self.prefix}owner:{worker}"
            calls = [str(u) for u in self.redis.srandmember(owned, REAP_BATCH) or []]
            if not calls:
                self.redis.srem(f"{self.prefix}workers", worker)
                continue
            reaped += self._reap_calls(worker, calls, exists, lost)
        return reaped

    def _reap_calls(self, worker: str, calls: list[str], exists: Exists, lost: Lost) -> int:
        """The batch's records in one round trip, and each node asked for its calls together
        (a dead worker may leave thousands of bridged calls, looked at every round)."""
        pipe = self.redis.pipeline(transaction=False)
        for uuid in calls:
            pipe.hgetall(self._key(uuid))
        records = dict(zip(calls, pipe.execute(), strict=True))
        if gone := [uuid for uuid, record in records.items() if not record]:
            self.redis.srem(f"{self.prefix}owner:{worker}", *gone)  # expired, or released
        # taken by another worker since: not this round's to judge
        still = [(uuid, record) for uuid, record in records.items()
                 if record and str(record.get("owner", "")) == worker]
        there = exists([(uuid, str(record.get("node", ""))) for uuid, record in still])
        reaped = 0
        for (uuid, record), on_node in zip(still, there, strict=True):
            if on_node is not False:  # still up, or a node did not answer
                continue
            if self._release(keys=[self._key(uuid)], args=[self.prefix, uuid, worker]) == 1:
                info = CallInfo(uuid, "freeswitch", str(record.get("caller", "")),
                                str(record.get("called", "")), node=str(record.get("node", "")))
                log.info("a call ended while no worker watched it", extra={"call_id": uuid})
                lost(info, float(record.get("started_at") or 0.0))
                reaped += 1
        return reaped
