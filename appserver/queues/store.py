"""Queue and agent state in Redis: typed calls of the Lua scripts.

Every operation is sans-IO: a script of ``lua/`` (or a plain read) with its arguments, built
and checked by an argument builder, and a parser of its reply, both pure functions below.
:class:`QueueStore` only sends them through the client it is given: ``redis.asyncio.Redis``
(the API, the Asterisk worker) or ``redis.Redis`` (the gevent FreeSWITCH worker, scripts,
benchmarks; run its coroutines with :func:`appserver.shells.green.run`). Replies may be
bytes or str. Timestamps are milliseconds and default to the wall clock, so tests can pass
their own. Nothing else reads or writes these keys directly: the API and the metrics go
through this store.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.exceptions import NoScriptError

from appserver.queues import scripts
from appserver.queues.model import (
    HASH_TAG_RE,
    KEY_PREFIX,
    MAX_PRIORITY,
    AcceptResult,
    AgentConfig,
    AgentStatus,
    AnsweredCallback,
    CallbackDial,
    CallbackResult,
    CallerMoved,
    CallStatus,
    EnqueueResult,
    Member,
    Offer,
    QueueConfig,
    QueueConfigError,
    QueuedCall,
    QueueStats,
    TakenOver,
    check_call_id,
    check_name,
)
from appserver.shells import reply
from ivr.calls import SUPERVISE_MODES

STATS_CHANNEL = "callyard:q:stats"
AGENTS_CHANNEL = "callyard:q:agents"
CALLS_CHANNEL = "callyard:q:calls"  # a queue's name when a caller joined, left or moved there
LEAVE_OUTCOMES = ("abandoned", "left", "overflow", "timeout", "lost", "ended")
AGENT_ACTIONS = ("login", "logout", "available", "break", "end_call")
CALL_CONTROLS = ("hold", "unhold", "transfer", "record")
RECORD_OPERATIONS = ("start", "pause", "resume", "stop")
SUPERVISE_OPS = ("start", "change", "stop")
EXTENSION_RE = re.compile(r"^[0-9*#+]{1,32}$")
CALLBACK_NUMBER_RE = re.compile(r"^\+?[0-9]{3,20}$")
CALLBACK_OUTCOMES = ("answered", "busy", "no_answer", "failed")
T = TypeVar("T")


class QueueError(Exception):
    """A queue operation refused by the current state (e.g. unknown queue, agent on a call)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def now_ms() -> int:
    return int(time.time() * 1000)


def _s(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode()
    return "" if v is None else str(v)


def _strs(values: Any) -> list[str]:
    return [_s(v) for v in values or []]


def _hash(h: Mapping[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in h.items()}


# ---------------------------------------------------------------- argument builders / parsers
# One place for each script's arguments and result shape.


def _enqueue_args(queue: str, call_id: str, priority: int, owner: str, now: int, lease_ms: int,
                  caller: str, skills: Mapping[str, int] | None, menu_path: str) -> list[Any]:
    check_name("queue", queue)
    check_call_id(call_id)
    check_name("worker", owner)
    if not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise QueueConfigError(f"priority must be an integer 0..{MAX_PRIORITY}, got {priority!r}")
    return [queue, call_id, priority, now, owner, lease_ms, caller, json.dumps(skills or {}),
            menu_path[:500]]


def _enqueue_result(r: Any) -> EnqueueResult:
    items = _strs(r)
    if items[0] == "err":
        raise QueueError(items[1], f"cannot enqueue: {items[1].replace('_', ' ')}")
    if items[0] == "ok":
        return EnqueueResult("ok", int(items[1]), int(items[2]))
    return EnqueueResult("full" if items[0] == "full" else "empty")


def _taken_over(call_id: str, r: Any) -> TakenOver:
    items = _strs(r)
    if items[0] == "err":
        raise QueueError(items[1], f"cannot take the caller over: {items[1].replace('_', ' ')}")
    return TakenOver(call_id, items[1], items[2], int(items[3]), int(float(items[4])), items[5],
                     items[6])


def _offers(r: Any) -> list[Offer]:
    items = _strs(r)
    return [
        Offer(items[i], items[i + 1], "assigned" if items[i + 2] == "assigned" else "offer")
        for i in range(0, len(items), 3)
    ]


def _accept_result(r: Any) -> AcceptResult:
    items = _strs(r)
    if items[0] == "ok":
        return AcceptResult(True, items[1], items[2], items[3])
    return AcceptResult(False, error=items[1])


def _statuses(r: Any) -> list[CallStatus]:
    items = _strs(r)
    return [
        CallStatus(items[i], items[i + 1], items[i + 2], int(items[i + 3]), int(items[i + 4]),
                   int(float(items[i + 5])) / 1000.0)
        for i in range(0, len(items), 6)
    ]


def _agent_result(r: Any) -> str:
    items = _strs(r)
    if items[0] == "err":
        raise QueueError(items[1], f"agent action refused: {items[1].replace('_', ' ')}")
    return items[1] if items[0] == "ok" else f"pending:{items[1]}"


def _agent_args(agent: str, action: str, now: int, reason: str) -> list[Any]:
    check_name("agent", agent)
    if action not in AGENT_ACTIONS:
        raise QueueConfigError(f"unknown agent action {action!r}")
    return [agent, action, now, reason[:100]]


def _sync_queue_args(cfg: QueueConfig, members: list[Member]) -> list[Any]:
    return [cfg.name, json.dumps(cfg.to_redis()),
            json.dumps({m.agent: f"{m.tier}:{m.penalty}" for m in members})]


def _sync_agent_args(a: AgentConfig, now: int) -> list[Any]:
    return [a.username, a.kind, a.extension, json.dumps(a.skills) if a.skills else "{}",
            "1" if a.enabled else "0", a.display_name, now]


def _agent_status(agent: str, h: dict[str, str], queues: list[str]) -> AgentStatus | None:
    if not h.get("state"):
        return None
    return AgentStatus(
        username=agent, state=h["state"], reason=h.get("reason", ""),  # type: ignore[arg-type]
        since_ms=int(h.get("since") or 0), offer=h.get("offer", ""), call=h.get("call", ""),
        calls_handled=int(h.get("calls") or 0), no_answer=int(h.get("no_answer") or 0),
        queues=tuple(sorted(queues)), kind=h.get("kind", "browser"),
        wrapup_until_ms=int(h.get("wrapup_until") or 0),
    )


def _stats(queue: str, r: Any) -> QueueStats:
    items = _strs(r)
    c = {k: int(v) for k, v in json.loads(items[2]).items()}
    answered, abandoned = c.get("answered", 0), c.get("abandoned", 0)
    judged = answered + abandoned
    return QueueStats(
        callbacks_waiting=int(items[5]), callbacks_dialing=int(items[6]),
        callback_estimate=int(float(items[7])) / 1000.0,
        callbacks_requested=c.get("callbacks_requested", 0),
        callbacks_answered=c.get("callbacks_answered", 0),
        callbacks_failed=c.get("callbacks_failed", 0),
        queue=queue, waiting=int(items[0]), longest_wait=int(float(items[1])) / 1000.0,
        joined=c.get("joined", 0), answered=answered, abandoned=abandoned,
        overflowed=c.get("overflowed", 0), exited=c.get("exited", 0), lost=c.get("lost", 0),
        service_level=round(100.0 * c.get("answered_in_sl", 0) / judged, 1) if judged else 100.0,
        avg_wait=round(c.get("wait_ms", 0) / answered / 1000.0, 3) if answered else 0.0,
        avg_handle=round(c.get("handle_ms", 0) / answered / 1000.0, 3) if answered else 0.0,
        agents={k: int(v) for k, v in json.loads(items[4]).items()},
        agent_calls={k: int(v) for k, v in json.loads(items[3]).items()},
    )


def check_callback_number(number: str) -> str:
    if not isinstance(number, str) or not CALLBACK_NUMBER_RE.match(number):
        raise QueueConfigError(f"callback number {number!r} is invalid: 3-20 digits, "
                               "optionally after +")
    return number


def _callback_request_result(r: Any) -> int:
    items = _strs(r)
    if items[0] == "err":
        raise QueueError(items[1], f"cannot register the callback: {items[1].replace('_', ' ')}")
    return int(items[2])


def _callback_dials(r: Any) -> list[CallbackDial]:
    items = _strs(r)
    return [CallbackDial(items[i], items[i + 1], items[i + 2], items[i + 3], int(items[i + 4]),
                         items[i + 5])
            for i in range(0, len(items), 6)]


def _callback_result(r: Any) -> CallbackResult:
    items = _strs(r)
    status: Any = items[0]
    return CallbackResult(status, int(items[1]) if len(items) > 1 else 0,
                          int(float(items[2])) if len(items) > 2 else 0)


def _answered_callback(r: Any) -> AnsweredCallback:
    items = _strs(r)
    if items[0] == "err":
        raise QueueError(items[1], "the callback is gone")
    return AnsweredCallback(items[1], items[2], items[3], items[4], items[5], int(items[6]),
                            int(float(items[7])))


def _call_control_args(agent: str, action: str, target: str, now: int) -> list[Any]:
    if action not in CALL_CONTROLS:
        raise QueueError("bad_action", f"call control {action!r}: use one of {CALL_CONTROLS}")
    if action == "transfer":
        kind, _, value = target.partition(":")
        if kind == "queue":
            check_name("queue", value)
        elif kind != "extension" or not EXTENSION_RE.match(value):
            raise QueueError("bad_target", "transfer to 'extension:<digits, * # +>' or "
                             f"'queue:<name>', not {target!r}")
    elif action == "record":
        if target not in RECORD_OPERATIONS:
            raise QueueError("bad_target", f"record takes one of {RECORD_OPERATIONS}")
    elif target:
        raise QueueError("bad_target", f"{action} takes no target")
    return [agent, action, target, now]


def _refused(r: Any, messages: Mapping[str, str]) -> None:
    """A script's ``{'err', reason}`` -> :class:`QueueError` (its text from ``messages``)."""
    if _s(r[0]) == "err":
        reason = _s(r[1])
        raise QueueError(reason, messages.get(reason, reason))


def _ok_or_refused(r: Any, messages: Mapping[str, str]) -> str:
    """A script's ``{'ok', value}`` -> value; ``{'err', reason}`` -> :class:`QueueError`."""
    _refused(r, messages)
    return _s(r[1])


CALL_CONTROL_REFUSALS = {
    "no_such_agent": "no such agent",
    "not_on_call": "you are not connected to a caller",
    "transferring": "the call is already being transferred",
    "no_such_queue": "no such queue",
}
SUPERVISE_REFUSALS = {
    "not_connected": "the call is not connected to an agent",
    "supervised": "another supervisor is on this call",
    "not_supervising": "you are not supervising this call",
}
# A supervisor moving or hanging up a waiting caller (move.lua, hangup.lua).
WAITING_CALLER_REFUSALS = {
    "no_entry": "that call is not in a queue (any more)",
    "connected": "an agent already has that caller",
    "no_such_queue": "no such queue",
}


def _move_args(call_id: str, queue: str, priority: int | None, now: int) -> list[Any]:
    check_call_id(call_id)
    if queue:
        check_name("queue", queue)
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)
                                 or not 0 <= priority <= MAX_PRIORITY):
        raise QueueConfigError(f"priority must be an integer 0..{MAX_PRIORITY}, got {priority!r}")
    return [call_id, queue, -1 if priority is None else priority, now]


def _moved(call_id: str, r: Any) -> CallerMoved:
    _refused(r, WAITING_CALLER_REFUSALS)
    items = _strs(r)
    return CallerMoved(call_id, items[1], items[2], int(items[3]), int(items[4]))


def _hung_up(r: Any) -> str:
    _refused(r, WAITING_CALLER_REFUSALS)
    return _s(r[0])


def _check_leave(outcome: str) -> None:
    if outcome not in LEAVE_OUTCOMES:
        raise QueueConfigError(f"leave outcome must be one of {LEAVE_OUTCOMES}, got {outcome!r}")


def _check_decline(reason: str) -> None:
    if reason not in ("no_answer", "declined"):
        raise QueueConfigError("decline reason must be no_answer or declined")


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """One script call, ready to send: the script of ``lua/``, its arguments after the
    prefix, and the parser of its reply (which may raise :class:`QueueError`). Built by the
    ``*_op`` methods of :class:`QueueStore`; run alone (:meth:`QueueStore.run`) or with
    others in one round trip (:meth:`QueueStore.batch`)."""

    script: str
    args: tuple[Any, ...]
    parse: Callable[[Any], T]


class _Keys:
    def __init__(self, prefix: str) -> None:
        if not HASH_TAG_RE.match(prefix):
            raise ValueError(f"queue key prefix {prefix!r} must start with a hash tag, "
                             "e.g. '{callyard:q}:'")
        self.prefix = prefix

    def inbox(self, worker: str) -> str:
        return f"{self.prefix}worker:{worker}:inbox"

    def agent(self, agent: str) -> str:
        return f"{self.prefix}agent:{agent}"

    def conf(self, queue: str) -> str:
        return f"{self.prefix}queue:{queue}:conf"

    def members(self, queue: str) -> str:
        return f"{self.prefix}queue:{queue}:members"

    def queues(self) -> str:
        return f"{self.prefix}queues"

    def agents(self) -> str:
        return f"{self.prefix}agents"

    def waiting(self, queue: str) -> str:
        return f"{self.prefix}queue:{queue}:waiting"

    def call(self, call_id: str) -> str:
        return f"{self.prefix}call:{call_id}"

    def stats_lock(self) -> str:
        return f"{self.prefix}stats:lock"

    def samples(self, queue: str) -> str:
        return f"{self.prefix}queue:{queue}:samples"

    def samples_lock(self) -> str:
        return f"{self.prefix}samples:lock"


class QueueStore:
    """The queue operations, over ``client`` (``redis.asyncio.Redis`` or ``redis.Redis``).

    Redis Cluster: a script computes the keys it touches from the prefix (ARGV[1]), which
    starts with a hash tag, so every key is in the prefix's slot; each script declares one key
    of that slot (``KEYS[1]``, the set of queue names) so a cluster client sends it there."""

    def __init__(self, client: Any, prefix: str = KEY_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self.keys = _Keys(prefix)
        self._slot_key = [self.keys.queues()]
        self._scripts = scripts.register(client)

    async def _run(self, name: str, *args: Any) -> Any:
        return await reply(self._scripts[name](keys=self._slot_key, args=[self.prefix, *args]))

    async def run(self, op: Op[T]) -> T:
        """``op`` alone: its parsed reply (one round trip)."""
        return op.parse(await self._run(op.script, *op.args))

    async def batch(self, ops: Sequence[Op[Any]]) -> list[Any]:
        """``ops`` in one round trip (a pipeline of EVALSHA, no transaction: Redis runs them
        in order, each script atomic): each one's parsed reply or, in its place, the
        exception it met (a :class:`QueueError` refusal, a Redis error), so one op's error
        is that op's alone. Raises only when the round trip itself failed (Redis
        unreachable), after which any of ``ops`` may or may not have run."""
        if not ops:
            return []
        replies = await self._evalsha(ops)
        first_missing = next((i for i, r in enumerate(replies) if isinstance(r, NoScriptError)),
                             None)
        if first_missing is not None:
            # Redis lost its scripts (a restart, SCRIPT FLUSH): load them and send again from
            # the first op that found none, in order (queue writes are idempotent).
            for name in dict.fromkeys(op.script for op in ops[first_missing:]):
                await reply(self.client.script_load(scripts.source(name)))
            replies[first_missing:] = await self._evalsha(ops[first_missing:])
        results: list[Any] = []
        for op, r in zip(ops, replies, strict=True):
            if isinstance(r, Exception):
                results.append(r)
                continue
            try:
                results.append(op.parse(r))
            except Exception as exc:  # handed to that op's caller
                results.append(exc)
        return results

    async def _evalsha(self, ops: Sequence[Op[Any]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for op in ops:
            pipe.evalsha(self._scripts[op.script].sha, 1, *self._slot_key, self.prefix,
                         *op.args)
        return list(await reply(pipe.execute(raise_on_error=False)))

    # definitions
    async def sync_queue(self, cfg: QueueConfig, members: list[Member]) -> None:
        await self._run("sync_queue", *_sync_queue_args(cfg, members))

    async def drop_queue(self, queue: str) -> None:
        await self._run("drop_queue", check_name("queue", queue))

    async def sync_agent(self, agent: AgentConfig, now: int | None = None) -> None:
        await self._run("sync_agent", *_sync_agent_args(agent, now or now_ms()))

    async def drop_agent(self, agent: str, now: int | None = None) -> None:
        r = await self._run("drop_agent", check_name("agent", agent), now or now_ms())
        if isinstance(r, list):
            raise QueueError("on_call", f"agent {agent} is on a call; remove after it ends")

    async def queue_names(self) -> list[str]:
        return sorted(_strs(await reply(self.client.smembers(self.keys.queues()))))

    async def queue_config(self, queue: str) -> QueueConfig | None:
        h = _hash(await reply(self.client.hgetall(self.keys.conf(queue))))
        return QueueConfig.from_redis(h) if h else None

    async def members(self, queue: str) -> list[str]:
        """The agents of ``queue``."""
        return sorted(_strs(await reply(self.client.hkeys(self.keys.members(queue)))))

    async def agent_names(self) -> list[str]:
        """Every agent defined (published from PostgreSQL)."""
        return sorted(_strs(await reply(self.client.smembers(self.keys.agents()))))

    # callers
    # Each write a worker's runtime makes is also an Op (``*_op``), for :meth:`batch`.
    def enqueue_op(self, queue: str, call_id: str, owner: str, priority: int = 0, *,
                   caller: str = "", skills: Mapping[str, int] | None = None,
                   lease_ms: int = 15000, now: int | None = None,
                   menu_path: str = "") -> Op[EnqueueResult]:
        args = _enqueue_args(queue, call_id, priority, owner, now or now_ms(), lease_ms, caller,
                             skills, menu_path)
        return Op("enqueue", tuple(args), _enqueue_result)

    async def enqueue(self, queue: str, call_id: str, owner: str, priority: int = 0, *,
                      caller: str = "", skills: Mapping[str, int] | None = None,
                      lease_ms: int = 15000, now: int | None = None,
                      menu_path: str = "") -> EnqueueResult:
        return await self.run(self.enqueue_op(queue, call_id, owner, priority, caller=caller,
                                              skills=skills, lease_ms=lease_ms, now=now,
                                              menu_path=menu_path))

    def match_op(self, queue: str, now: int | None = None, scan: int = 100) -> Op[list[Offer]]:
        return Op("match", (queue, now or now_ms(), random.random(), scan), _offers)

    async def match(self, queue: str, now: int | None = None, scan: int = 100) -> list[Offer]:
        return await self.run(self.match_op(queue, now, scan))

    def dial_failed_op(self, call_id: str, agent: str, now: int | None = None) -> Op[bool]:
        return Op("dial_failed", (call_id, agent, now or now_ms()), bool)

    async def dial_failed(self, call_id: str, agent: str, now: int | None = None) -> bool:
        return await self.run(self.dial_failed_op(call_id, agent, now))

    def finish_op(self, call_id: str, now: int | None = None) -> Op[bool]:
        return Op("finish", (call_id, now or now_ms()), bool)

    async def finish(self, call_id: str, now: int | None = None) -> bool:
        return await self.run(self.finish_op(call_id, now))

    def leave_op(self, call_id: str, outcome: str, now: int | None = None, *,
                 owner: str = "") -> Op[str]:
        """``owner``: only while the entry is that worker's (a worker withdrawing a caller
        it has no flow for); "" when it is not (the previous state otherwise)."""
        _check_leave(outcome)
        return Op("leave", (call_id, outcome, now or now_ms(), owner), _s)

    async def leave(self, call_id: str, outcome: str, now: int | None = None, *,
                    owner: str = "") -> str:
        return await self.run(self.leave_op(call_id, outcome, now, owner=owner))

    async def tick(self, owner: str, lease_ms: int = 15000,
                   now: int | None = None) -> list[CallStatus]:
        return _statuses(await self._run("tick", owner, now or now_ms(), lease_ms))

    async def reap(self, now: int | None = None, limit: int = 500) -> list[str]:
        return _strs(await self._run("reap", now or now_ms(), limit))

    async def take_over(self, call_id: str, owner: str, lease_ms: int = 15000,
                        now: int | None = None) -> TakenOver:
        """Make ``owner`` the owner of the live caller ``call_id``'s queue entry (see
        ``lua/takeover.lua``); :class:`QueueError` ``no_entry`` or ``assigned`` when it
        cannot."""
        r = await self._run("takeover", check_call_id(call_id), check_name("worker", owner),
                            now or now_ms(), lease_ms)
        return _taken_over(call_id, r)

    # callbacks (see README "Callback in queue")
    async def request_callback(self, call_id: str, number: str, now: int | None = None, *,
                               engine: str = "", node: str = "") -> int:
        """Turn the waiting caller ``call_id``'s entry into a callback to ``number`` (it keeps
        its place; no worker owns it any more); returns its position. ``engine`` and
        ``node``: where the caller came in, where the callback is dialled from (none: any
        worker's engine)."""
        return await self.run(self.request_callback_op(call_id, number, now, engine=engine,
                                                       node=node))

    def request_callback_op(self, call_id: str, number: str, now: int | None = None, *,
                            engine: str = "", node: str = "") -> Op[int]:
        return Op("callback_request", (check_call_id(call_id), check_callback_number(number),
                                       now or now_ms(), engine, node), _callback_request_result)

    async def claim_callbacks(self, owner: str, claim_ms: int, now: int | None = None,
                              limit: int = 50, *, engine: str = "", nodes: Sequence[str] = (),
                              grace_ms: int = 30_000) -> list[CallbackDial]:
        """Callbacks accepted by an agent, for ``owner`` to dial (each claimed by one
        worker at a time, for ``claim_ms``): those whose caller came in on one of ``nodes``
        (of ``engine``, reached by ``owner`` now), those of another node of ``engine`` no
        worker has reached for ``grace_ms``, and those with no node."""
        r = await self._run("callback_claim", check_name("worker", owner), now or now_ms(),
                            claim_ms, limit, engine, grace_ms, *nodes)
        return _callback_dials(r)

    async def callback_result(self, entry: str, outcome: str, cause: str = "",
                              lease_ms: int = 15000, now: int | None = None) -> CallbackResult:
        return await self.run(self.callback_result_op(entry, outcome, cause, lease_ms, now))

    def callback_result_op(self, entry: str, outcome: str, cause: str = "",
                           lease_ms: int = 15000, now: int | None = None) -> Op[CallbackResult]:
        if outcome not in CALLBACK_OUTCOMES:
            raise QueueConfigError(f"callback outcome must be one of {CALLBACK_OUTCOMES}")
        return Op("callback_result", (check_call_id(entry), outcome, cause[:100],
                                      now or now_ms(), lease_ms), _callback_result)

    async def callback_answered(self, entry: str, channel: str, owner: str,
                                lease_ms: int = 15000,
                                now: int | None = None) -> AnsweredCallback:
        return await self.run(self.callback_answered_op(entry, channel, owner, lease_ms, now))

    def callback_answered_op(self, entry: str, channel: str, owner: str,
                             lease_ms: int = 15000,
                             now: int | None = None) -> Op[AnsweredCallback]:
        return Op("callback_answered", (check_call_id(entry), check_call_id(channel),
                                        check_name("worker", owner), now or now_ms(), lease_ms),
                  _answered_callback)

    async def pop_inbox(self, owner: str, timeout: float) -> dict[str, str] | None:
        r = await reply(self.client.blpop([self.keys.inbox(owner)], timeout=timeout))
        return json.loads(_s(r[1])) if r else None

    async def queued_call(self, call_id: str) -> QueuedCall | None:
        """A caller's queue entry, or None when it has none."""
        h = _hash(await reply(self.client.hgetall(self.keys.call(call_id))))
        return QueuedCall.from_redis(call_id, h) if h else None

    async def queue_calls(self, queue: str, limit: int = 1000) -> list[QueuedCall]:
        """The callers of ``queue``: waiting or offered (first in line first, at most
        ``limit``), then those connected to one of its agents."""
        return await self.calls_in([queue], limit)

    async def calls_in(self, queues: list[str], limit: int = 1000) -> list[QueuedCall]:
        """:meth:`queue_calls` of each of ``queues`` in turn, in three round trips."""
        lines = await self._pipelined([read for q in queues for read in (
            ("zrange", self.keys.waiting(q), 0, limit - 1), ("hkeys", self.keys.members(q)))])
        members = [_strs(m) for m in lines[1::2]]
        connected = iter(await self._pipelined([("hget", self.keys.agent(a), "call")
                                                for agents in members for a in agents]))
        wanted: list[tuple[str, str]] = []  # (queue, call id)
        for q, waiting, agents in zip(queues, lines[0::2], members, strict=True):
            ids = _strs(waiting)
            ids += [c for c in (_s(next(connected)) for _ in agents) if c and c not in ids]
            wanted += [(q, c) for c in ids]
        found = await self._pipelined([("hgetall", self.keys.call(c)) for _, c in wanted])
        calls = [(q, QueuedCall.from_redis(c, _hash(h)))
                 for (q, c), h in zip(wanted, found, strict=True) if h]
        return [call for q, call in calls if call.queue == q]

    async def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Plain commands in one round trip: (command, *args) each; their replies in order."""
        if not commands:
            return []
        pipe = self.client.pipeline(transaction=False)
        for command, *args in commands:
            getattr(pipe, command)(*args)
        return list(await reply(pipe.execute()))

    # agents
    async def agent_action(self, agent: str, action: str, reason: str = "",
                           now: int | None = None) -> str:
        return _agent_result(await self._run("agent", *_agent_args(agent, action,
                                                                   now or now_ms(), reason)))

    async def accept(self, agent: str, call_id: str, now: int | None = None) -> AcceptResult:
        return _accept_result(await self._run("accept", agent, call_id, now or now_ms()))

    async def decline(self, agent: str, call_id: str, reason: str = "declined",
                      now: int | None = None) -> bool:
        _check_decline(reason)
        return bool(await self._run("decline", agent, call_id, reason, now or now_ms()))

    async def call_control(self, agent: str, action: str, target: str = "",
                           now: int | None = None) -> str:
        """Ask the worker owning ``agent``'s call to hold / unhold / transfer it (see
        ``lua/call_control.lua``); returns the call id or raises :class:`QueueError`."""
        args = _call_control_args(agent, action, target, now or now_ms())
        return _ok_or_refused(await self._run("call_control", *args), CALL_CONTROL_REFUSALS)

    async def supervise(self, call_id: str, supervisor: str, op: str,
                        mode: str = "") -> str:
        """``supervisor`` starts, changes or stops (``op``) listening / whispering / barging
        (``mode``) on ``call_id`` (see ``lua/supervise.lua``); returns the call's agent or
        raises :class:`QueueError` (``not_connected``, ``supervised``, ``not_supervising``)."""
        if op not in SUPERVISE_OPS or (op != "stop" and mode not in SUPERVISE_MODES):
            raise QueueError("bad_action", f"supervise {op} {mode!r}: use one of "
                             f"{SUPERVISE_MODES}")
        r = await self._run("supervise", check_call_id(call_id), supervisor, op, mode)
        return _ok_or_refused(r, SUPERVISE_REFUSALS)

    async def supervision(self, call_id: str) -> tuple[str, str] | None:
        """``(supervisor, mode)`` of the supervisor on ``call_id``, None when there is none."""
        found = await reply(self.client.hmget(self.keys.call(call_id), "supervisor",
                                              "supervise_mode"))
        supervisor, mode = _s(found[0]), _s(found[1])
        return (supervisor, mode) if supervisor else None

    async def agent(self, agent: str) -> AgentStatus | None:
        return (await self.agents([agent]))[0]

    async def agents(self, names: list[str]) -> list[AgentStatus | None]:
        """The status of each of ``names`` (None for one not defined), in one round trip."""
        replies = await self._pipelined([read for a in names for read in (
            ("hgetall", self.keys.agent(a)), ("smembers", self.keys.agent(a) + ":queues"))])
        return [_agent_status(a, _hash(replies[2 * i]), _strs(replies[2 * i + 1]))
                for i, a in enumerate(names)]

    # supervisors
    async def move_call(self, call_id: str, queue: str = "", priority: int | None = None,
                        now: int | None = None) -> CallerMoved:
        """Move a waiting caller to ``queue`` and/or give them ``priority`` (see
        ``lua/move.lua``); :class:`QueueError` ``no_entry``, ``connected`` or
        ``no_such_queue`` when it cannot."""
        return _moved(call_id, await self._run("move", *_move_args(call_id, queue, priority,
                                                                    now or now_ms())))

    async def hang_up(self, call_id: str, now: int | None = None) -> str:
        """Hang a queued or connected caller up (see ``lua/hangup.lua``): ``sent`` to the
        worker owning the call, or ``removed`` (nobody owns it any more)."""
        return _hung_up(await self._run("hangup", check_call_id(call_id), now or now_ms()))

    async def today(self, queue: str, since_ms: int, now: int | None = None) -> dict[str, int]:
        """``queue``'s counters since ``since_ms`` (5-minute resolution; two days kept)."""
        r = await self._run("today", check_name("queue", queue), since_ms, now or now_ms())
        return {k: int(v) for k, v in json.loads(_s(r)).items()}

    # stats
    async def stats(self, queue: str, now: int | None = None) -> QueueStats:
        return _stats(queue, await self._run("stats", queue, now or now_ms()))

    async def take_stats_turn(self, worker: str, seconds: float) -> bool:
        """True when ``worker`` may publish the stats for the next ``seconds`` (one worker
        at a time does)."""
        return bool(await reply(self.client.set(self.keys.stats_lock(), worker, nx=True,
                                                px=int(seconds * 1000))))

    # the wallboard's last hour: samples per queue, [t_ms, waiting, service_level or None]
    async def add_sample(self, queue: str, sample: list[Any], keep: int,
                         ttl_seconds: int) -> None:
        key = self.keys.samples(check_name("queue", queue))
        await self._pipelined([("rpush", key, json.dumps(sample)), ("ltrim", key, -keep, -1),
                               ("expire", key, ttl_seconds)])

    async def samples(self, queue: str, since_ms: int) -> list[list[Any]]:
        raw = await reply(self.client.lrange(self.keys.samples(queue), 0, -1))
        return [p for p in (json.loads(_s(r)) for r in raw) if p[0] >= since_ms]

    async def take_sample_turn(self, sampler: str, seconds: float) -> bool:
        """True when ``sampler`` may take the samples for the next ``seconds``."""
        return bool(await reply(self.client.set(self.keys.samples_lock(), sampler, nx=True,
                                                px=int(seconds * 1000))))

    async def publish_stats(self, now: int | None = None) -> list[QueueStats]:
        all_stats = [await self.stats(q, now) for q in await self.queue_names()]
        await reply(self.client.publish(STATS_CHANNEL,
                                        json.dumps([s.to_dict() for s in all_stats])))
        return all_stats
