"""The queue runtime a worker runs beside its calls.

A worker creates one runtime, wraps each call's flow with :meth:`wrap` (the queueing layer
of :mod:`appserver.worker.pipeline`) and starts it with its ``deliver(call_id, event)``
callback (which hands the event to that call's flow and executes the returned commands;
given to the constructor instead when the worker exists first). The runtime then

* carries out the callers' :data:`~appserver.queues.caller_flow.RuntimeAction` values in
  Redis (join, leave, dial failed, finish), in order: those queued at the same moment in
  one round trip (at most one per caller: a caller's next waits for the next one), then
  the matches of the queues they changed in a second; a write that cannot reach Redis (down,
  restarting, stalled past the socket timeout) is retried with backoff until it lands, so
  the queue entry follows the caller (every write is idempotent: one whose reply was lost
  is harmless to repeat);
* withdraws callers it owns in Redis but no longer has (:class:`Withdraw`): a queue entry
  exists only while its caller is really there, and an agent who took such a caller is
  free again at once;
* delivers :class:`~ivr.calls.QueueUpdate` (position, estimated wait, staffed agents) when
  they change, :class:`~ivr.calls.AgentAssigned` when an agent takes a caller,
  :class:`~ivr.calls.AgentRequest` when the connected agent asks for hold or a transfer or
  hangs up, :class:`~ivr.calls.SuperviseRequest` when a supervisor listens, whispers,
  barges in or stops, :class:`~ivr.calls.QueueMoved` / :class:`~ivr.calls.SupervisorHangup`
  when a supervisor moves or hangs up one of its callers (``lua/move.lua``,
  ``lua/hangup.lua``), and
  :class:`~ivr.calls.QueueResult` ``overflow`` (``full`` / ``joinempty``) or ``failed``
  (unknown queue, lease lost) when the queue ends a caller's stay;
* every ``tick`` seconds renews its callers' leases, matches the queues they wait in,
  reaps callers of dead workers (not for a lease after Redis was unreachable: live workers
  renew theirs first), refreshes queue definitions and (one worker at a time) publishes
  live stats on ``callyard:q:stats``.

One class for both workers: it runs on the shell that goes with its Redis client
(:mod:`appserver.shells`): asyncio tasks with ``redis.asyncio`` (Asterisk), greenlets with
``redis.Redis`` on gevent-patched sockets (FreeSWITCH; drive its coroutines with
:func:`appserver.shells.green.run`).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias, TypeVar, get_args

from redis import exceptions as redis_errors

from appserver.queues.caller_flow import (
    CALLBACK_VARIABLE,
    CallbackAnswered,
    CallerFlow,
    DialFailed,
    Finish,
    Join,
    Leave,
    RequestCallback,
    RuntimeAction,
)
from appserver.queues.flow import QueueingFlow, QueueObserver
from appserver.queues.model import (
    KEY_PREFIX,
    MAX_PRIORITY,
    AnsweredCallback,
    CallbackDial,
    CallStatus,
    EnqueueResult,
    QueueConfig,
    TakenOver,
)
from appserver.queues.store import Op, QueueError, QueueStore, now_ms
from appserver.shells import Shell, for_client
from appserver.worker.renewals import Renewals
from ivr.calls import (
    AgentAssigned,
    AgentRequest,
    CallFlow,
    CallInfo,
    Enqueue,
    Event,
    QueueMoved,
    QueueResult,
    QueueUpdate,
    SuperviseRequest,
    SuperviseRequestMode,
    SupervisorHangup,
)

log = logging.getLogger(__name__)
Deliver = Callable[[str, Event], object]  # a worker's deliver(call_id, event); result unused
AgentRequestKind: TypeAlias = Literal["hold", "unhold", "transfer", "hangup", "record"]
AGENT_REQUESTS: tuple[AgentRequestKind, ...] = get_args(AgentRequestKind)
SUPERVISE_REQUESTS: tuple[SuperviseRequestMode, ...] = get_args(SuperviseRequestMode)

# Redis could not be reached: down, restarting, loading its data, stalled past the socket
# timeout, a replica after a failover. A write sent meanwhile may or may not have landed.
UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError,
               redis_errors.ReadOnlyError, OSError)
RETRY_MIN, RETRY_MAX = 0.2, 1.0  # seconds between attempts at a write Redis did not take
MAX_BATCH = 200  # actions written in one round trip
TAKEOVER_GRACE = 10.0  # seconds from taking a caller over to their flow resuming the stay
CALLBACK_CLAIM_MARGIN = 30.0  # seconds a dialling claim outlasts the customer's ring time
CALLBACK_AFFINITY_GRACE = 30.0  # default of CALLYARD_CALLBACK_AFFINITY_GRACE
DialOutcome: TypeAlias = Literal["answered", "busy", "no_answer", "failed"]
Node = TypeVar("Node")


class CallbackDialer(Protocol):
    """The engine side of callbacks: call the customer of ``dial`` (from ``dial.node`` when
    connected to it, else from any node connected) and send their answered leg to a worker
    (any) with :data:`CALLBACK_VARIABLE` set to ``variable``; returns how it went and the
    engine's cause (FreeSWITCH ``originate``; Asterisk ``POST /channels``)."""

    engine: str  # the engine kind, as in CallInfo.engine

    def nodes_up(self) -> list[str]:
        """The engine nodes connected now, named as their calls' ``CallInfo.node`` (none:
        leave callbacks to others)."""
        ...

    async def dial(self, dial: CallbackDial, config: QueueConfig,
                   variable: str) -> tuple[DialOutcome, str]: ...


def caller_node_or_any(connected: Sequence[Node], name: Callable[[Node], str],
                       node: str) -> Node | None:
    """What a dialler dials a callback from: of its ``connected`` nodes, the caller's
    ``node`` (matched by ``name``), else the first (the caller's is gone); None if none."""
    return next((n for n in connected if name(n) == node), connected[0] if connected else None)


@dataclass(frozen=True, slots=True)
class Withdraw:
    """A caller this worker owns in Redis but has no flow for (a Join that landed after
    the runtime gave up on it; an agent took a caller who is gone): remove it from the
    queue, counted lost. An agent assigned to it is available again (no wrap-up: the call
    never connected); offers for it are withdrawn."""

    call_id: str


@dataclass(frozen=True, slots=True)
class Dialled:
    """This worker's call to the customer of callback ``call_id`` ended ``outcome``."""

    call_id: str
    outcome: DialOutcome
    cause: str


Action: TypeAlias = RuntimeAction | Withdraw | Dialled
# The store's script call carrying out an action (the same every attempt).
Write: TypeAlias = Callable[[QueueStore], Op[Any]]


class QueueRuntime:
    """``await start(deliver)`` once, ``await stop()`` at shutdown (under gevent: through
    :func:`~appserver.shells.green.run`)."""

    def __init__(self, redis: Any, worker_id: str, deliver: Deliver | None = None, *,
                 lease_seconds: float = 15.0, tick_seconds: float = 1.0,
                 prefix: str = KEY_PREFIX, dialer: CallbackDialer | None = None,
                 callback_grace_seconds: float = CALLBACK_AFFINITY_GRACE) -> None:
        self.worker_id = worker_id
        self.deliver = deliver
        self.dialer = dialer  # None: this worker never dials callbacks (others do)
        # How long a callback's node must be gone before another node of its engine dials it.
        self.callback_grace_ms = int(callback_grace_seconds * 1000)
        self.lease_ms = int(lease_seconds * 1000)
        self.tick_seconds = tick_seconds
        self.prefix = prefix
        self.shell: Shell = for_client(redis)
        self.store = QueueStore(redis, prefix)
        self.flows: dict[str, CallerFlow] = {}
        self.configs: dict[str, QueueConfig] = {}
        self._last: dict[str, tuple[int, int, int]] = {}
        # Callers whose entry in Redis is ours, each with the serial of the write that made
        # it so: a tick judges only the entries that were there when it was sent.
        self._joined: dict[str, int] = {}
        self._joins = itertools.count(1)
        self._withdrawing: set[str] = set()
        # Callers being taken over, until their flow resumes the stay (at most TAKEOVER_GRACE
        # seconds): what the script answered, and inbox messages that came in meanwhile.
        self._taken_over: dict[str, TakenOver] = {}
        self._early: dict[str, list[dict[str, str]]] = {}
        self._takeover_until: dict[str, float] = {}
        self._ticks = 0
        self._leases = Renewals(tick_seconds, lease_seconds)  # this worker renews at its ticks
        self._actions = self.shell.queue()
        self._held: Action | None = None  # got from the queue, opens the next batch
        self._tasks: list[Any] = []
        self._stopping = False

    def wrap(self, flow: CallFlow, observer: QueueObserver | None = None) -> QueueingFlow:
        """The flow to run for a call instead of ``flow``: queues on ``Enqueue`` (the
        queueing layer of :mod:`appserver.worker.pipeline`)."""
        return QueueingFlow(flow, self, observer)

    def caller_flow(self, call: CallInfo, enqueue: Enqueue) -> CallerFlow | None:
        config = self.configs.get(enqueue.queue)
        if config is None:
            return None
        priority = min(MAX_PRIORITY, max(0, enqueue.priority))
        language = call.variables.get("language", "en")
        flow = CallerFlow(config, priority, self._submit, language=language,
                          configs=lambda queue: self.configs.get(queue))
        self.flows[call.call_id] = flow
        return flow

    def callback_caller(self, call: CallInfo) -> tuple[CallerFlow, str] | None:
        """The flow of a callback's customer who answered (their channel carries
        :data:`CALLBACK_VARIABLE`) and the callback's entry; None for any other call."""
        queue, sep, entry = call.variables.get(CALLBACK_VARIABLE, "").partition(":")
        if not sep or not entry:
            return None
        flow = self.caller_flow(call, Enqueue(queue))
        return (flow, entry) if flow is not None else None

    # ------------------------------------------------------------------ taking callers over

    async def take_over(self, call: CallInfo) -> TakenOver | None:
        """Before this worker starts a call another worker served (it died; the engine gave
        the call here): take its queue entry over, if it has one that may be taken (see
        ``lua/takeover.lua``). One script, one round trip. The call's flow then resumes the
        stay (:meth:`resumed_caller`) instead of starting from the top."""
        call_id = call.call_id
        self._early[call_id] = []  # an agent's accept may come in before the flow exists
        self._takeover_until[call_id] = time.monotonic() + TAKEOVER_GRACE
        try:
            taken = await self.store.take_over(call_id, self.worker_id, self.lease_ms)
        except Exception as exc:
            self._end_takeover(call_id)
            if isinstance(exc, QueueError):
                log.info("no queue entry to take over (%s)", exc.code,
                         extra={"call_id": call_id})
            elif isinstance(exc, UNREACHABLE):  # the call starts from the top
                log.warning("cannot take a queue entry over, Redis unreachable: %s",
                            str(exc) or type(exc).__name__, extra={"call_id": call_id})
            else:
                log.exception("taking a queue entry over failed", extra={"call_id": call_id})
            return None
        if taken.queue not in self.configs:
            await self.refresh_configs()
        log.info("took a queued caller over", extra={
            "call_id": call_id, "queue": taken.queue, "from_worker": taken.previous_owner})
        self._taken_over[call_id] = taken
        return taken

    def resumed_caller(self, call: CallInfo) -> tuple[CallerFlow, TakenOver] | None:
        """The flow resuming the stay of a caller :meth:`take_over` took (None for any
        other call), registered as joined: heartbeats report its position from now on."""
        if call.call_id not in self._takeover_until:
            return None
        taken, early = self._end_takeover(call.call_id)
        if taken is None:
            return None
        flow = self.caller_flow(call, Enqueue(taken.queue, taken.priority))
        if flow is None:  # the queue was deleted meanwhile: the tick withdraws the entry
            return None
        self._mark_joined(call.call_id)
        for msg in early:
            self.shell.spawn(self._replay(msg), "queues-early-message")
        return flow, taken

    async def _replay(self, msg: dict[str, str]) -> None:
        self._inbox_message(msg)

    def _end_takeover(self, call_id: str) -> tuple[TakenOver | None, list[dict[str, str]]]:
        self._takeover_until.pop(call_id, None)
        return self._taken_over.pop(call_id, None), self._early.pop(call_id, [])

    def _taking_over(self, call_id: str) -> bool:
        """Whether ``call_id`` is being taken over (its flow not started yet); one whose
        flow never came (the call went elsewhere) is forgotten after TAKEOVER_GRACE."""
        until = self._takeover_until.get(call_id)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        self._end_takeover(call_id)
        return False

    # ------------------------------------------------------------------ running

    async def start(self, deliver: Deliver | None = None) -> None:
        """Load the queue definitions, then run the three loops: actions, inbox, ticks."""
        self.deliver = deliver or self.deliver
        self._stopping = False
        await self.refresh_configs()
        spawn = self.shell.spawn
        self._tasks = [spawn(self._run_actions(), "queues-actions"),
                       spawn(self._run_inbox(), "queues-inbox"),
                       spawn(self._run_ticks(), "queues-tick")]

    async def stop(self) -> None:
        # The loops also watch this flag: redis-py can swallow a cancellation mid-command.
        self._stopping = True
        await self.shell.cancel(self._tasks, self.tick_seconds + 2)
        self._tasks = []

    async def refresh_configs(self) -> None:
        configs = {}
        for name in await self.store.queue_names():
            try:
                cfg = await self.store.queue_config(name)
            except (ValueError, TypeError) as exc:
                log.error("queue %s: unusable definition in Redis: %s", name, exc)
                continue
            if cfg is not None:
                configs[name] = cfg
        self.configs = configs

    async def drain(self) -> None:
        """Wait until every submitted action has been carried out (tests, shutdown)."""
        await self._actions.join()

    def _submit(self, action: Action) -> None:
        self._actions.put_nowait(action)

    async def _run_actions(self) -> None:
        while not self._stopping:
            await self._action_once()

    async def _action_once(self) -> None:
        """Carry out the next batch: the actions queued now (waiting for the first), up to
        the first one of a caller already in the batch, which opens the next batch, so
        each caller's actions, and all actions, land in the order submitted."""
        batch = [self._held or await self._actions.get()]
        self._held = None
        callers = {batch[0].call_id}
        while len(batch) < MAX_BATCH and not self._actions.empty():
            action = self._actions.get_nowait()
            if action.call_id in callers:
                self._held = action
                break
            callers.add(action.call_id)
            batch.append(action)
        try:
            await self._carry_out(batch)
        finally:
            for _ in batch:
                self._actions.task_done()

    async def _carry_out(self, batch: list[Action]) -> None:
        """Write ``batch`` in one round trip, then match the queues it changed in a second;
        writes Redis did not take are sent again, in order, until they land (the next
        batch waits for them)."""
        writes = [(action, write) for action in batch
                  if (write := self._write(action)) is not None]
        for attempt in itertools.count(1):
            if not writes:
                return
            delay, writes = await self._apply(writes, attempt)
            if delay is None or self._stopping:  # redis-py can swallow a cancellation
                return
            self.shell.honour_cancel()  # (the writes' errors were caught in _round_trip)
            await self.shell.sleep(delay)

    async def _apply(self, writes: list[tuple[Action, Write]],
                     attempt: int) -> tuple[float | None, list[tuple[Action, Write]]]:
        """One attempt at ``writes``: their bookkeeping once landed, and the matches that
        follow; returns the writes to try again and in how many seconds (None: none)."""
        results = await self._round_trip(writes)
        again: list[tuple[Action, Write]] = []
        delay: float | None = None
        queues: dict[str, None] = {}  # to match, in order, each once
        for (action, write), result in zip(writes, results, strict=True):
            if isinstance(result, Exception) and not isinstance(result, QueueError):
                retry_in = self._retry_in(action, result, attempt)
                if retry_in is not None:
                    again.append((action, write))
                    delay = max(delay or 0.0, retry_in)
                continue
            try:
                queue = self._written(action, result)
            except Exception:
                log.exception("queue action failed", extra={"call_id": action.call_id})
                continue
            if queue is not None:
                queues[queue] = None
        await self._match(list(queues))
        return delay, again

    async def _round_trip(self, writes: list[tuple[Action, Write]]) -> list[Any]:
        """``writes`` in one round trip: each one's reply, or its exception (its arguments
        refused, Redis refusing it, or the round trip failing: then it may or may not be
        in)."""
        ops: list[Op[Any] | Exception] = []
        for _, write in writes:
            try:
                ops.append(write(self.store))
            except Exception as exc:  # arguments refused: that action's error alone
                ops.append(exc)
        sent = [op for op in ops if isinstance(op, Op)]
        try:
            replies = iter(await self.store.batch(sent))
        except Exception as exc:
            replies = itertools.repeat(exc)
        return [next(replies) if isinstance(op, Op) else op for op in ops]

    async def _match(self, queues: list[str]) -> None:
        """Match ``queues`` in one round trip. One that fails is left to the next tick,
        which matches every queue with callers waiting."""
        if not queues:
            return
        try:
            results = await self.store.batch([self.store.match_op(q) for q in queues])
        except UNREACHABLE:
            return
        except Exception:
            log.exception("matching failed, left to the next tick")
            return
        for queue, result in zip(queues, results, strict=True):
            if isinstance(result, Exception) and not isinstance(result, UNREACHABLE):
                log.warning("matching failed, left to the next tick: %s", result,
                            extra={"queue": queue})

    async def _run_inbox(self) -> None:
        while not self._stopping:
            try:
                await self._inbox_once()
            except UNREACHABLE as exc:  # expected in an outage or a failover: one line
                self.shell.honour_cancel()
                log.warning("queue inbox waits for Redis: %s", str(exc) or type(exc).__name__)
                await self.shell.sleep(1)
            except Exception:
                self.shell.honour_cancel()
                log.exception("queue inbox read failed; retrying")
                await self.shell.sleep(1)

    async def _inbox_once(self) -> None:
        msg = await self.store.pop_inbox(self.worker_id, timeout=1)
        if msg:
            self._inbox_message(msg)

    async def _run_ticks(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            try:
                await self.tick()
            except UNREACHABLE as exc:
                self.shell.honour_cancel()
                log.warning("queue tick waits for Redis: %s", str(exc) or type(exc).__name__)
            except Exception:
                self.shell.honour_cancel()
                log.exception("queue tick failed")
            await self.shell.sleep(max(0.0, self.tick_seconds - (time.monotonic() - started)))

    async def tick(self) -> None:
        store = self.store
        joined, had = dict(self._joined), set(self.flows)
        self._updates(await store.tick(self.worker_id, self.lease_ms), joined, had)
        if self._may_reap():
            await store.reap()
        for queue in self._queues_waiting() | self._queues_calling_back():
            await store.match(queue)
        await self._dial_callbacks()
        self._ticks += 1
        if self._ticks % 5 == 0:
            await self.refresh_configs()
        if await store.take_stats_turn(self.worker_id, self.tick_seconds * 2):
            await store.publish_stats()

    # ------------------------------------------------------------------ callbacks

    def _queues_calling_back(self) -> set[str]:
        """Queues offering callbacks: their callbacks wait with no worker's caller there,
        so every worker matches them."""
        return {name for name, cfg in self.configs.items() if cfg.callback_key}

    async def _dial_callbacks(self) -> None:
        """Claim the callbacks agents accepted and call their customers (one worker each,
        one from the node the caller came in on while a worker reaches it)."""
        dialer = self.dialer
        if dialer is None or not self._queues_calling_back():
            return
        nodes = dialer.nodes_up()
        if not nodes:
            return
        ring = max(self.configs[q].callback_ring_seconds for q in self._queues_calling_back())
        claim_ms = int((ring + CALLBACK_CLAIM_MARGIN) * 1000)
        claimed = await self.store.claim_callbacks(
            self.worker_id, claim_ms, engine=dialer.engine, nodes=nodes,
            grace_ms=self.callback_grace_ms)
        for dial in claimed:
            self.shell.spawn(self._dial_callback(dial), "queues-callback")

    async def _dial_callback(self, dial: CallbackDial) -> None:
        config = self.configs.get(dial.queue)
        outcome: DialOutcome = "failed"
        cause = "no such queue"
        extra = {"call_id": dial.entry, "queue": dial.queue, "attempt": dial.attempt,
                 "agent": dial.agent, "node": dial.node}
        if config is not None and self.dialer is not None:
            try:
                outcome, cause = await self.dialer.dial(dial, config,
                                                        f"{dial.queue}:{dial.entry}")
            except Exception as exc:
                cause = str(exc)[:100] or type(exc).__name__
                log.warning("calling back failed: %s", cause, extra=extra)
        log.info("callback dialled: %s %s", outcome, cause, extra=extra)
        self._submit(Dialled(dial.entry, outcome, cause))

    def _callback_answered(self, action: CallbackAnswered, r: AnsweredCallback) -> bool:
        """The answered customer's entry is ours: connect the agent who accepted it."""
        self._mark_joined(action.call_id)
        if r.state == "assigned" and r.agent:
            kind: Literal["browser", "sip"] = "sip" if r.kind == "sip" else "browser"
            self._send(action.call_id, AgentAssigned(r.queue, r.agent, r.target, kind))
            return False
        return True

    # ------------------------------------------------------------------ bookkeeping

    def _write(self, action: Action) -> Write | None:
        """The store call that carries ``action`` out, every attempt the same; None when
        nothing is left to do (a withdrawn caller whose call id came back, e.g. queued
        again from the menu)."""
        call_id = action.call_id
        if isinstance(action, Join):
            return lambda store: store.enqueue_op(
                action.queue, call_id, self.worker_id, action.priority, caller=action.caller,
                lease_ms=self.lease_ms, menu_path=action.menu_path)
        if isinstance(action, Leave):
            return lambda store: store.leave_op(call_id, action.outcome)
        if isinstance(action, DialFailed):
            failed_at = now_ms()  # the same in every attempt: see lua/dial_failed.lua
            return lambda store: store.dial_failed_op(call_id, action.agent, now=failed_at)
        if isinstance(action, Finish):
            return lambda store: store.finish_op(call_id)
        if isinstance(action, RequestCallback):
            return lambda store: store.request_callback_op(
                call_id, action.number, engine=action.engine, node=action.node)
        if isinstance(action, CallbackAnswered):
            return lambda store: store.callback_answered_op(action.entry, call_id,
                                                            self.worker_id, self.lease_ms)
        if isinstance(action, Dialled):
            return lambda store: store.callback_result_op(call_id, action.outcome, action.cause,
                                                          self.lease_ms)
        self._withdrawing.discard(call_id)
        if call_id in self.flows:
            return None
        return lambda store: store.leave_op(call_id, "lost", owner=self.worker_id)

    def _written(self, action: Action, result: Any) -> str | None:
        """Bookkeeping once ``action`` landed (``result``: the store's answer, or the
        :class:`QueueError` it raised); returns the queue to match now, if any."""
        if isinstance(action, Join):
            if isinstance(result, QueueError):
                self._join_failed(action, result.code)
                return None
            return action.queue if self._joined_queue(action, result) else None
        if isinstance(action, Dialled):
            return None
        flow = self.flows.get(action.call_id)
        if isinstance(action, RequestCallback | CallbackAnswered) and flow is not None:
            return self._callback_written(action, flow, result)
        if isinstance(action, Leave | Finish):
            self._forget(action.call_id)
        if flow is None or isinstance(action, Leave | Withdraw):
            return None
        return flow.config.name

    def _callback_written(self, action: RequestCallback | CallbackAnswered, flow: CallerFlow,
                          result: Any) -> str | None:
        queue = flow.config.name
        if isinstance(result, QueueError):
            if result.code != "assigned":  # assigned: the agent's AgentAssigned is coming
                log.warning("callback refused: %s", result.code,
                            extra={"call_id": action.call_id})
                self._send(action.call_id, QueueResult(queue, "failed", f"callback {result}"))
                self._forget(action.call_id)
            return None
        if isinstance(action, CallbackAnswered):
            return queue if self._callback_answered(action, result) else None
        # The entry is no caller's of ours any more: the caller hears goodbye and hangs up.
        self._last.pop(action.call_id, None)
        self._joined.pop(action.call_id, None)
        self.flows.pop(action.call_id, None)
        return None

    def _retry_in(self, action: Action, exc: Exception, attempt: int) -> float | None:
        """After attempt number ``attempt`` at ``action`` failed with ``exc``: seconds to
        wait before the next one, or None to give up (a Join then fails the caller)."""
        if isinstance(exc, UNREACHABLE):
            if attempt == 1 or attempt % 30 == 0:
                log.warning("queue write waits for Redis: %s", str(exc) or type(exc).__name__,
                            extra={"call_id": action.call_id, "attempt": attempt,
                                   "action": type(action).__name__})
            return min(RETRY_MAX, RETRY_MIN * 2 ** (attempt - 1))
        log.error("queue action failed", exc_info=exc, extra={"call_id": action.call_id})
        if isinstance(action, Join):
            self._join_failed(action, "redis error")
        return None

    def _may_reap(self) -> bool:
        """Whether this tick may reap other workers' callers. Not for a lease after a gap
        between ticks (Redis was unreachable, or this worker stalled): every lease may have
        run out meanwhile, and live workers need that long to renew theirs."""
        self._leases.renewed()
        return self._leases.judging()

    def _withdraw(self, call_id: str) -> None:
        if call_id not in self._withdrawing:
            log.warning("withdrawing a caller this worker no longer has",
                        extra={"call_id": call_id})
            self._withdrawing.add(call_id)
            self._submit(Withdraw(call_id))

    def _send(self, call_id: str, event: Event) -> None:
        flow = self.flows.get(call_id)
        if flow is None or flow.done or self.deliver is None:
            return
        try:
            self.deliver(call_id, event)
        except Exception:
            log.exception("delivering a queue event failed", extra={"call_id": call_id})

    def _forget(self, call_id: str) -> None:
        """Drop a finished caller. A caller that overflowed into another queue already has
        its next flow registered under the same call id: that one stays."""
        self._last.pop(call_id, None)
        self._joined.pop(call_id, None)
        flow = self.flows.get(call_id)
        if flow is None or flow.done:
            self.flows.pop(call_id, None)

    def _join_failed(self, action: Join, detail: str) -> None:
        self._send(action.call_id, QueueResult(action.queue, "failed", detail))
        self._forget(action.call_id)

    def _joined_queue(self, action: Join, r: EnqueueResult) -> bool:
        """Tell the caller how its Join went; True when it now waits (match the queue)."""
        if r.status != "ok":
            reason = "full" if r.status == "full" else "joinempty"
            self._send(action.call_id, QueueResult(action.queue, "overflow", reason))
            self._forget(action.call_id)
            return False
        self._mark_joined(action.call_id)
        self._last[action.call_id] = (r.position, 0, r.staffed)
        self._send(action.call_id, QueueUpdate(action.queue, r.position, 0.0, r.staffed))
        return True

    def _mark_joined(self, call_id: str) -> None:
        self._joined[call_id] = next(self._joins)

    def _updates(self, statuses: list[CallStatus], joined_before: dict[str, int],
                 flows_before: set[str]) -> None:
        """Deliver changed positions; waiting callers joined before the tick but unknown to
        Redis now were reaped by another worker (this one stalled past its lease).

        A caller Redis gives as ours with no flow here is withdrawn only if it had none
        when the tick was sent either (``flows_before``): a flow dropped while the reply
        was on its way went with an action that landed after the tick read Redis (a
        confirmed callback: the entry is nobody's now, and waits to be called back; a
        Leave), so for that caller the reply is stale. A real leftover is still withdrawn,
        by the next tick."""
        seen = set()
        for st in statuses:
            seen.add(st.call_id)
            flow = self.flows.get(st.call_id)
            if flow is None:
                if st.call_id not in flows_before and not self._taking_over(st.call_id):
                    self._withdraw(st.call_id)
                continue
            # Not joined yet: the Join's reply, still on its way, gives the first position.
            if st.state == "assigned" or flow.config.name != st.queue \
                    or st.call_id not in self._joined:
                continue
            key = (st.position, round(st.estimated_wait), st.staffed)
            if self._last.get(st.call_id) != key:
                self._last[st.call_id] = key
                self._send(st.call_id, QueueUpdate(st.queue, st.position, st.estimated_wait,
                                                   st.staffed))
        for call_id, serial in joined_before.items():
            # Judged only by a tick sent after the entry was made: a caller that left and
            # joined again meanwhile (an agent's transfer to another queue) may have been
            # between its two entries when the tick read Redis.
            if call_id in seen or self._joined.get(call_id) != serial:
                continue
            flow = self.flows.get(call_id)
            # A connected caller's entry also ends when the agent hangs up first: the
            # conversation goes on until the engine ends the agent's leg.
            if flow is not None and flow.phase == "waiting":
                log.warning("queue lease lost", extra={"call_id": call_id})
                self._send(call_id, QueueResult(flow.config.name, "failed", "lease lost"))
            self._forget(call_id)

    def _inbox_message(self, msg: dict[str, str]) -> None:
        """A message another process left in this worker's inbox (see ``lua/common.lua``
        ``push_owner``): an agent took one of our callers, or asks for hold / transfer, or a
        supervisor joins, changes mode or leaves."""
        if self._taking_over(msg.get("call", "")):  # for its flow, once it exists
            self._early[msg["call"]].append(msg)
            return
        kind = msg.get("type")
        if kind == "assigned":
            flow = self.flows.get(msg["call"])
            if flow is None:  # the caller is gone: free the agent
                self._withdraw(msg["call"])
                return
            if flow.config.name != msg["queue"]:
                return  # it left that queue: its pending Leave frees the agent
            agent_kind: Literal["browser", "sip"] = "sip" if msg.get("kind") == "sip" \
                else "browser"
            self._send(msg["call"], AgentAssigned(msg["queue"], msg["agent"], msg["target"],
                                                  agent_kind))
        elif kind == "moved":
            self._moved(msg["call"], msg.get("queue", ""), int(msg.get("priority") or 0))
        elif kind == "hangup":
            self._send(msg["call"], SupervisorHangup())
        elif kind == "agent_request" and msg.get("action") in AGENT_REQUESTS:
            action: AgentRequestKind = msg["action"]  # type: ignore[assignment]
            self._send(msg["call"], AgentRequest(action, msg.get("target", "")))
        elif kind == "supervise" and msg.get("mode") in SUPERVISE_REQUESTS:
            mode: SuperviseRequestMode = msg["mode"]  # type: ignore[assignment]
            self._send(msg["call"], SuperviseRequest(msg.get("supervisor", ""), mode,
                                                     join=msg.get("op") == "start"))
        else:
            log.warning("unknown inbox message ignored", extra={"message": repr(msg)[:200]})

    def _moved(self, call_id: str, queue: str, priority: int) -> None:
        """A supervisor moved one of our waiting callers (``lua/move.lua``): its flow takes
        the new queue's definition (read again first when this worker lacks it)."""
        if call_id not in self.flows:
            return
        if queue not in self.configs:
            self.shell.spawn(self._moved_later(call_id, queue, priority), "queues-moved")
            return
        self._last.pop(call_id, None)  # the next heartbeat reports the new position
        self._send(call_id, QueueMoved(queue, priority))

    async def _moved_later(self, call_id: str, queue: str, priority: int) -> None:
        await self.refresh_configs()
        if queue in self.configs:
            self._moved(call_id, queue, priority)
        else:
            log.error("caller moved to a queue this worker cannot read", extra={
                "call_id": call_id, "queue": queue})

    def _queues_waiting(self) -> set[str]:
        return {f.config.name for f in self.flows.values() if f.phase == "waiting"}
