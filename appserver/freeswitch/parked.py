"""Parked calls over one inbound Event Socket per node (``CALLYARD_FREESWITCH_INGRESS=park``).

The dialplan parks each call (``park``) instead of opening an outbound socket per call to a
worker. Each worker keeps one connection to each node in ``CALLYARD_FREESWITCH_ESL``,
subscribed once to the events of the calls in the Callyard context (``filter Caller-Context``),
and drives the calls it takes with ``sendmsg <uuid>``, through the same
:class:`~appserver.freeswitch.driver.CallDriver` as a socket's call. FreeSWITCH then runs no
thread and no 20 ms poll per call, and offers each event to one connection per worker instead
of one per call in progress (README, "Parked calls").

* A call is taken at its ``CHANNEL_PARK`` by the worker whose claim of its record wins
  (:meth:`CallRecords.take`: no live worker has it); every worker of the node hears the park,
  the others let it be. Its flow ends at its ``CHANNEL_HANGUP``, or when a ``Transfer``
  takes it out of the park (the ``transfer`` application completes).
* Every :data:`SWEEP_SECONDS` each worker lists the node's calls in the context
  (``show channels``) and sends those no live worker has back into the park extension
  (``uuid_transfer`` to their number, which stops what ran on them): calls parked while no
  worker was up, a dead worker's calls, its own after its connection came back. Parked
  again, they are taken as any new call, their flow from the top; a call in a bridge is
  left to it until the bridge ends (as after a worker's death in socket mode). A queued
  caller is taken over where it was (the queue runtime's ``take_over``). The marker checks,
  claims and transfers go in batches (a round trip per batch, not per call); a call claimed whose
  transfer is refused because it just ended gets its CDR here (nobody else would write it), as
  does one that ends as its new park is taken.
* A worker stalled past its heartbeat (judged dead, its calls swept by another): as it wakes,
  before its calls send anything it renews its heartbeat and lets go of those another worker
  has now (their records say so); a call's new ``CHANNEL_PARK`` says so too. Their flows here
  end without a CDR; the new owner writes it. (Whichever runs first as it wakes, a call's
  write or the reaper's heartbeat, the check comes before the write: a heartbeat after such
  a silence counts as a stall, ``CallRecords.stalls``.)
* The connection lost: the worker's flows on that node end without a CDR (the calls go on
  in the engine, parked); once it is back, the sweep takes them again.
* Stopping, the worker takes no new call (:meth:`stop_taking`); its calls get the grace
  period, and those still up after it stay parked for the other workers' sweeps.
* Redis unreachable: no call can be claimed, so none is taken (they wait, unanswered).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import gevent
import gevent.event
from redis.exceptions import RedisError

from appserver.freeswitch import esl_codec as codec
from appserver.freeswitch.callrecords import CallRecords, Taken
from appserver.freeswitch.connection import NodeConnection
from appserver.freeswitch.driver import NEEDED_EVENTS, call_info_from
from appserver.freeswitch.inbound import NodeLink, NodeUnavailable
from appserver.freeswitch.worker import FreeswitchWorker
from appserver.settings import EslNode
from ivr.calls import CallInfo

log = logging.getLogger("callyard.freeswitch.parked")

EVENTS = ("CHANNEL_PARK", *NEEDED_EVENTS, "RECORD_START", "RECORD_STOP")
SWEEP_SECONDS = 5.0
# Set by the park extension (dialplans/freeswitch/callyard.xml.j2): only such calls are taken
# (a call originated with &park() by something else may share the context).
MARKER_VARIABLE, MARKER_VALUE = "callyard_ingress", "park"
SKIPPED_WHILE_RUNNING = ("bridge",)  # a sweep does not take a call running these
CHECK_WAIT = 1.0  # how long a call's write waits for another's check of the calls (stale)


def decoded_headers(pairs: list[tuple[str, str]]) -> dict[str, str]:
    data: dict[str, str] = {}
    for name, value in pairs:
        data.setdefault(name, codec.url_decode(value))
    return data


def channel_data(event: codec.LazyEvent) -> dict[str, str]:
    """Every header of ``event``, URL-decoded (the first of a repeated one)."""
    if not event.head:
        return {k: event.get(k) for k in event.raw}
    return decoded_headers(codec.split_plain_pairs(event.head)[0])


def parked_calls(show_channels_json: str, context: str) -> list[dict[str, str]]:
    """The calls in ``context`` (uuid, application running, dest, cid_num, ...), from ``show
    channels as json`` (``{"row_count": 0}`` when there are none)."""
    rows = json.loads(show_channels_json or "{}").get("rows") or []
    return [{k: str(v) for k, v in r.items()} for r in rows
            if r.get("context") == context and r.get("uuid") and r.get("dest")]


class ParkedCalls:
    """The parked calls of one node that this worker takes, served by ``worker``'s flows."""

    def __init__(self, worker: FreeswitchWorker, node: EslNode, context: str,
                 records: CallRecords, link: NodeLink, retry_seconds: float = 1.0,
                 sweep_seconds: float = SWEEP_SECONDS) -> None:
        self.worker = worker
        self.node = node
        self.context = context
        self.records = records
        self.link = link  # the node's own inbound link: queries that may take a while
        self.retry_seconds = retry_seconds
        self.sweep_seconds = sweep_seconds
        self.conn: NodeConnection | None = None
        self.taken = 0
        self.taking = True  # False once the worker stops: new calls are left to the others
        self._mine: set[str] = set()  # the calls of this node this worker drives
        # calls being taken (their claim on its way): the events heard meanwhile
        self._taking: dict[str, list[codec.LazyEvent]] = {}
        self._greenlets: list[gevent.Greenlet] = []
        self._sweeping = self._sweep_again = False
        self._checked = gevent.event.Event()  # clear while a write checks the calls
        self._checked.set()
        self._stalls_checked = records.stalls  # the stalls this node's calls were checked for
        # calls a sweep sent back to the park, until their CHANNEL_PARK (uuid -> when sent)
        self._reparking: dict[str, float] = {}

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self._run), gevent.spawn(self._sweep_forever)]

    def stop_taking(self) -> None:
        """The worker is stopping: its calls go on here, new ones are the other workers'."""
        self.taking = False

    def stop(self) -> None:
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        if self.conn is not None:
            self.conn.close()

    # ------------------------------------------------------------ the connection

    def _run(self) -> None:
        while True:
            try:
                conn = NodeConnection.open(self.node.host, self.node.port, self.node.password,
                                           on_event=self._event)
                conn.send(f"filter Caller-Context {self.context}")
                conn.send(f"event plain {' '.join(EVENTS)}")
            except OSError as exc:
                log.warning("FreeSWITCH node %s: %s; retry in %.1fs", self.node.name,
                            exc or type(exc).__name__, self.retry_seconds)
                gevent.sleep(self.retry_seconds)
                continue
            self.conn = conn
            log.info("taking parked calls of %s (context %s)", self.node.name, self.context)
            gevent.spawn(self.sweep)  # what was parked while this worker was away
            conn.closed.wait()
            self.conn = None
            for uuid in list(self._mine):  # no events for them any more
                self._end(uuid, lost=True)
            log.warning("FreeSWITCH node %s lost; its calls wait parked until it is back",
                        self.node.name)

    def _event(self, event: codec.LazyEvent) -> None:
        uuid = event.get("Unique-ID")
        if event.name == "CHANNEL_PARK":
            self._reparking.pop(uuid, None)
        if uuid in self._mine:
            if event.name != "CHANNEL_PARK":
                self._on_call_event(uuid, event)
                return
            # Parked again, not by its flow (a Transfer ends the flow first): another
            # worker's sweep took it while this one stalled past its heartbeat, or someone
            # ran uuid_transfer. Its flow here ends; the park is taken as any (the other
            # worker's claim wins; an operator's re-park is taken again, from the top).
            log.warning("a call this worker drives was parked again: its flow here ends",
                        extra={"call_id": uuid})
            self._end(uuid, lost=True)
        if uuid in self._taking:
            self._taking[uuid].append(event)
        elif event.name == "CHANNEL_PARK" and self.conn is not None and self.taking \
                and event.get(f"variable_{MARKER_VARIABLE}") == MARKER_VALUE:
            data = channel_data(event)
            self._taking[uuid] = []
            gevent.spawn(self._take, self._info(data), data.get("Caller-Context", self.context),
                         self.conn)

    def _on_call_event(self, uuid: str, event: codec.LazyEvent) -> None:
        driver = self.worker.calls.get(uuid)
        if driver is None:
            self._mine.discard(uuid)
            return
        driver.on_event(event)
        name = event.name
        if name == "CHANNEL_HANGUP":
            self._end(uuid)
        elif name == "CHANNEL_EXECUTE_COMPLETE" and event.get("Application") == "transfer" \
                and driver.handed_away:
            self._end(uuid)  # out of the park, into the dialplan

    def _info(self, data: dict[str, str]) -> CallInfo:
        return call_info_from(data, data.get("FreeSWITCH-Hostname") or self.link.hostname
                              or self.node.name)

    # ------------------------------------------------------------ taking a call

    def _take(self, info: CallInfo, context: str, conn: NodeConnection) -> None:
        """Claim the parked call; the winner starts its flow."""
        uuid = info.call_id
        try:
            taken = self.records.take(info)
        finally:
            early = self._taking.pop(uuid, [])
        if not taken or conn is not self.conn:
            return
        if any(e.name == "CHANNEL_HANGUP" for e in early):  # gone before its flow started
            if taken is Taken.NEW:
                self.records.release(uuid)  # a new call: nothing to record
                return
            try:  # a dead worker's call, or one swept: its CDR, as nobody else will write it
                self.records.unwatched([uuid], ended=True)
            except (RedisError, OSError) as exc:  # (its record expires, with no CDR)
                log.warning("cannot write the CDR of a call that ended as it was taken: %s",
                            exc, extra={"call_id": uuid})
            return
        self._mine.add(uuid)  # (its writer sends only while it is)
        driver = self.worker.start_call(info, self._writer(uuid, conn), context, address=uuid,
                                        claimed=True)
        if driver is None:
            self._mine.discard(uuid)
            return
        self.taken += 1
        for event in early:
            self._on_call_event(uuid, event)

    def _writer(self, uuid: str, conn: NodeConnection) -> Callable[[list[bytes]], object]:
        """What the call's driver sends with: the node connection, unless this worker was
        stalled long enough to be judged dead (a timer that fired as it woke, before it
        heard the call parked again) and another worker has the call now."""
        send, records, checked = conn.send_nowait, self.records, self._checked

        def write(frames: list[bytes]) -> object:
            if not checked.is_set():  # another call's write is checking
                checked.wait(CHECK_WAIT)
            elif records.stale() or records.stalls != self._stalls_checked:
                self._check_calls()
            if uuid not in self._mine:
                return None
            return send(frames)
        return write

    def _check_calls(self) -> None:
        """After a stall: renew the heartbeat, let go of the calls other workers took
        meanwhile (their records say so). Redis unreachable: they are kept."""
        self._checked.clear()
        try:
            try:
                self.records.beat()
                taken = self.records.others_have(sorted(self._mine))
            except (RedisError, OSError) as exc:
                log.warning("cannot check this worker still has its calls: %s", exc)
                return
            finally:
                self._stalls_checked = self.records.stalls
            for uuid in taken:  # (ended once the driver sending now is done)
                log.warning("a call this worker drives was taken by another while it "
                            "stalled", extra={"call_id": uuid})
                self._mine.discard(uuid)
                gevent.spawn(self.worker.end_call, uuid, True)
        finally:
            self._checked.set()

    def _end(self, uuid: str, lost: bool = False) -> None:
        self._mine.discard(uuid)
        self.worker.end_call(uuid, lost=lost)

    # ------------------------------------------------------------ the sweep

    def _sweep_forever(self) -> None:
        while True:
            gevent.sleep(self.sweep_seconds)
            self.sweep()

    def sweep(self) -> int:
        """Send the node's calls in the context that no live worker has back into the park
        extension (``uuid_transfer`` to their number: it stops whatever runs on them), where
        their new ``CHANNEL_PARK`` is taken as any; claimed first, so one worker sends each.
        How many. Called while a sweep runs (a worker just died): that one sweeps again
        when done, so none listed too early is missed. A call sent is not sent again until
        its park was heard (or a sweep period passed)."""
        if self._sweeping:
            self._sweep_again = True
            return 0
        self._sweeping, self._sweep_again, sent = True, True, 0
        try:
            while self._sweep_again:
                self._sweep_again = False
                sent += self._sweep_once()
        finally:
            self._sweeping = False
        return sent

    def _sweep_once(self) -> int:
        """One listing of the node; how many calls it sent back to the park."""
        if self.conn is None or not self.taking or not self.link.connected.is_set():
            return 0  # (the node link reconnects by itself: the next sweep)
        now = time.monotonic()
        self._reparking = {uuid: at for uuid, at in self._reparking.items()
                           if now - at < self.sweep_seconds}
        try:
            listed = parked_calls(self.link.bgapi("show channels as json"), self.context)
            candidates = {row["uuid"]: row for row in listed
                          if row.get("application") not in SKIPPED_WHILE_RUNNING
                          and row["uuid"] not in self._mine and row["uuid"] not in self._taking
                          and row["uuid"] not in self._reparking}
            takeable = self.records.takeable(list(candidates))
        except Exception as exc:  # the node or Redis unreachable, a bad reply: the next sweep
            log.warning("sweep of %s failed: %s", self.node.name, exc)
            return 0
        try:  # each step a round trip for many calls (NodeLink.api_many), not one per call
            markers = self.link.api_many([f"uuid_getvar {u} {MARKER_VARIABLE}" for u in takeable])
            # not parked by the park extension (or gone meanwhile): left alone
            marked = [u for u, m in zip(takeable, markers, strict=True)
                      if m.strip() == MARKER_VALUE]
            infos = [CallInfo(u, "freeswitch", candidates[u].get("cid_num", ""),
                              candidates[u]["dest"], node=self.node.name) for u in marked]
            taken = [info for info, won in zip(infos, self.records.take_many(infos),
                                                strict=True) if won]
            replies = self.link.api_many([f"uuid_transfer {info.call_id} {info.called} XML "
                                          f"{self.context}" for info in taken])
        except NodeUnavailable as exc:
            log.warning("sweep of %s: %s", self.node.name, exc)
            return 0
        sent, refused = 0, []
        for info, reply in zip(taken, replies, strict=True):
            if reply.startswith("+OK"):
                log.info("a parked call no live worker had, back to the park",
                         extra={"call_id": info.call_id})
                self._reparking[info.call_id] = time.monotonic()
                sent += 1
            else:  # gone meanwhile (the caller hung up): its CDR, as nobody else will write it
                refused.append(info.call_id)
        try:
            self.records.unwatched(refused)
        except (RedisError, OSError) as exc:  # the next sweep retakes those still there
            log.warning("sweep of %s: %s", self.node.name, exc)
        return sent


