"""The Asterisk worker against the ARI simulator (real HTTP + WebSocket).

Menus are the real IVR (``ivr.testing.build_menuset``); a few hand-written flows exercise
driver features directly (dial outcomes, enqueue, external events, errors).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from appserver.asterisk.ari import UNUSED_EVENTS
from appserver.asterisk.callstore import CallRecord
from appserver.asterisk.driver import CallDriver, DriverConfig, LegRegistry
from appserver.asterisk.link import LinkConfig
from appserver.asterisk.port import AriError, AriPort
from appserver.asterisk.worker import AsteriskWorker
from appserver.cdr import STREAM
from appserver.cdr.flow import CdrCalls
from appserver.cdr.sink import CdrSink
from appserver.devkit.sim.ari import AriSimulatedCall, AriSimulator, SimEndpoint, SoundCatalog
from appserver.settings import load_settings
from ivr.calls import (
    Answer,
    CallFlow,
    CallInfo,
    Command,
    Dial,
    DialResult,
    Enqueue,
    Event,
    Hangup,
    HungUp,
    Play,
    PlayFinished,
    Prompt,
    QueueResult,
    SetVariable,
    StartMoh,
    StartTimer,
    StopMoh,
    StopPlay,
    TimerFired,
    Transfer,
    TransferResult,
)
from ivr.compile import MenuSet
from ivr.model import MenuDef, OptionDef
from ivr.testing import build_menuset

FlowFactory = Callable[[CallInfo], Any]
FAST_RECONNECT = LinkConfig(reconnect_min=0.05)


def menus(first_digit_timeout: float = 5.0) -> MenuSet:
    """Three levels: main -> sales -> sales_new, plus transfer, dial and hangup options."""
    return build_menuset(
        [
            MenuDef(
                "main",
                greeting=("file:ivr/welcome",),
                invalid_prompt=("file:ivr/invalid",),
                timeout_prompt=("file:ivr/timeout",),
                first_digit_timeout=first_digit_timeout,
                options=(
                    OptionDef("1", "submenu", "sales"),
                    OptionDef("2", "transfer", "1000"),
                    OptionDef("0", "hangup"),
                ),
            ),
            MenuDef(
                "sales",
                greeting=("file:ivr/sales", "digits:42"),
                first_digit_timeout=first_digit_timeout,
                options=(
                    OptionDef("1", "submenu", "sales_new"),
                    OptionDef("2", "dial", "200"),
                    OptionDef("*", "back"),
                ),
            ),
            MenuDef(
                "sales_new",
                greeting=("file:ivr/sales-new", "number:7"),
                first_digit_timeout=first_digit_timeout,
                options=(OptionDef("9", "hangup"),),
            ),
        ],
        extensions={"9999": ("menu", "main"), "200": ("user", "1001")},
    )


@pytest_asyncio.fixture(loop_scope="session")
async def sim() -> AsyncIterator[AriSimulator]:
    simulator = AriSimulator(
        sounds=SoundCatalog(default_seconds=0.15),
        endpoints=[
            SimEndpoint("PJSIP", "1001", talk_seconds=0.2),
            SimEndpoint("PJSIP", "1002", behaviour="busy"),
            SimEndpoint("PJSIP", "1003", behaviour="no_answer"),
        ],
    )
    await simulator.start()
    yield simulator
    await simulator.stop()


@dataclass
class Workers:
    sim: AriSimulator
    started: list[AsteriskWorker] = field(default_factory=list)

    async def start(self, factory: FlowFactory, link: LinkConfig = FAST_RECONNECT,
                    **kwargs: Any) -> AsteriskWorker:
        settings = load_settings(asterisk_ari=self.sim.url_with_credentials)
        worker = AsteriskWorker(settings.asterisk_ari, factory, link=link, **kwargs)
        await worker.start()
        await worker.wait_connected()
        self.started.append(worker)
        return worker


@pytest_asyncio.fixture(loop_scope="session")
async def workers(sim: AriSimulator) -> AsyncIterator[Workers]:
    pool = Workers(sim)
    yield pool
    for worker in pool.started:
        await worker.stop()


def ivr_factory(menuset: MenuSet) -> FlowFactory:
    return lambda info: menuset.flow_for(info.called)


# ---------------------------------------------------------------- scenarios (shared shape)

Step = tuple[str, str]
SCENARIOS: list[tuple[str, list[Step]]] = [
    ("three-level walk", [
        ("expect_prompt", "file:ivr/welcome"), ("press", "1"),
        ("expect_prompt", "file:ivr/sales"), ("expect_prompt", "digits:42"), ("press", "1"),
        ("expect_prompt", "file:ivr/sales-new"), ("expect_prompt", "number:7"), ("press", "9"),
        ("expect_hangup", "app"),
    ]),
    ("barge-in on greeting", [
        ("expect_prompt", "file:ivr/welcome"), ("press", "1"),
        ("expect_finished", "file:ivr/welcome stopped"), ("expect_prompt", "file:ivr/sales"),
    ]),
    ("invalid then back", [
        ("expect_prompt", "file:ivr/welcome"), ("press", "7"),
        ("expect_prompt", "file:ivr/invalid"), ("press", "1"),
        ("expect_prompt", "file:ivr/sales"), ("press", "*"),
        ("expect_prompt", "file:ivr/welcome"), ("press", "0"), ("expect_hangup", "app"),
    ]),
    ("transfer", [
        ("expect_prompt", "file:ivr/welcome"), ("press", "2"),
        ("expect_transferred", "1000"), ("expect_hangup", "engine"),
    ]),
    ("dial an extension", [
        ("expect_prompt", "file:ivr/welcome"), ("press", "1"),
        ("expect_prompt", "file:ivr/sales"), ("press", "2"),
        ("expect_dialed", "1001"), ("expect_bridged", "1001"),
        ("expect_hangup", "app"),
    ]),
]


async def run_steps(call: AriSimulatedCall, steps: list[Step], timeout: float = 5.0) -> None:
    t = call.transcript
    for action, value in steps:
        if action == "press":
            await call.press(value)
        elif action == "expect_prompt":
            await call.wait_for_prompt(value, timeout)
        elif action == "expect_finished":
            await t.wait_for(lambda e, v=value: e.kind == "prompt_finished" and e.detail == v,
                             timeout)
        elif action == "expect_hangup":
            entry = await call.wait_ended(timeout)
            assert entry.detail.endswith(value), t.lines()
        elif action in ("expect_transferred", "expect_dialed", "expect_bridged"):
            kind = action.removeprefix("expect_")
            await t.wait_for(lambda e, k=kind, v=value: e.kind == k and e.detail == v, timeout)
        else:
            raise AssertionError(f"unknown step {action}")


@pytest.mark.parametrize("steps", [s for _, s in SCENARIOS], ids=[n for n, _ in SCENARIOS])
async def test_scenario(sim: AriSimulator, workers: Workers, steps: list[Step]) -> None:
    await workers.start(ivr_factory(menus()))
    call = await sim.place_call("9999")
    await run_steps(call, steps)


async def test_timeout_prompt(sim: AriSimulator, workers: Workers) -> None:
    await workers.start(ivr_factory(menus(first_digit_timeout=0.5)))
    call = await sim.place_call("9999")
    await run_steps(call, [("expect_prompt", "file:ivr/welcome"),
                           ("expect_prompt", "file:ivr/timeout")])
    await call.hangup()


async def test_unknown_number_hears_polite_message(sim: AriSimulator, workers: Workers) -> None:
    await workers.start(ivr_factory(menus()))
    call = await sim.place_call("4321")
    await call.wait_ended()
    assert call.prompts() == ["file:ss-noservice"]
    assert call.transcript.lines()[-1] == "hangup NORMAL_CLEARING engine"


async def test_no_worker_means_dialplan_fallback(sim: AriSimulator) -> None:
    call = await sim.place_call("9999")
    await call.wait_ended()
    assert call.prompts() == ["file:cannot-complete-temp-error"]


async def test_reconnect_mid_menu_keeps_the_call(sim: AriSimulator, workers: Workers) -> None:
    worker = await workers.start(ivr_factory(menus()))
    call = await sim.place_call("9999")
    await run_steps(call, [("expect_prompt", "file:ivr/welcome"), ("press", "1"),
                           ("expect_prompt", "file:ivr/sales")])
    await sim.drop_event_sockets()
    link = worker.links[0]
    for _ in range(300):
        if link.connections >= 2 and sim.app_connected("callyard"):
            break
        await asyncio.sleep(0.01)
    assert link.connections == 2
    await asyncio.sleep(0.2)  # the sales greeting finished during or after the gap
    await run_steps(call, [("press", "1"), ("expect_prompt", "file:ivr/sales-new"),
                           ("press", "9"), ("expect_hangup", "app")])
    await wait_until(lambda: worker.active_calls == 0)


async def test_asterisk_is_asked_on_every_connection_to_leave_out_unread_events(
    sim: AriSimulator, workers: Workers
) -> None:
    """ARI's eventFilter: ChannelVarset (one per variable set), PlaybackStarted, bridge events
    ... each carry a snapshot Asterisk serialises and the worker parses, for nothing. Set again
    after a reconnection (a restarted Asterisk has forgotten it)."""
    worker = await workers.start(ivr_factory(menus()))
    assert sim.event_filters[worker.links[0].client.app] == ((), UNUSED_EVENTS)
    sim.event_filters.clear()
    await sim.drop_event_sockets()
    for _ in range(300):
        if sim.event_filters:
            break
        await asyncio.sleep(0.01)
    assert sim.event_filters == {"callyard": ((), UNUSED_EVENTS)}
    call = await sim.place_call("9999")
    await run_steps(call, [("expect_prompt", "file:ivr/welcome"), ("press", "1"),
                           ("expect_prompt", "file:ivr/sales"), ("press", "1"),
                           ("expect_prompt", "file:ivr/sales-new"), ("press", "9"),
                           ("expect_hangup", "app")])


async def test_watchdog_catches_a_silently_lost_subscription(
    sim: AriSimulator, workers: Workers
) -> None:
    worker = await workers.start(ivr_factory(menus()), LinkConfig(
        reconnect_min=0.05, watchdog_interval=0.1, watchdog_timeout=0.2))
    call = await sim.place_call("9999")
    await call.wait_for_prompt("file:ivr/welcome")
    sim.forget_subscription("callyard")  # the socket stays open but carries nothing
    for _ in range(300):
        if worker.links[0].connections >= 2 and sim.app_connected("callyard"):
            break
        await asyncio.sleep(0.01)
    assert worker.links[0].connections >= 2
    await run_steps(call, [("press", "1"), ("expect_prompt", "file:ivr/sales")])
    await call.hangup()


# ---------------------------------------------------------------- hand-written flows


class Recorder:
    """A small flow: answers, runs ``script`` on start and on each event, records events."""

    def __init__(self, on_start: list[Command],
                 react: Callable[[Event], list[Command]] | None = None) -> None:
        self.on_start = on_start
        self.react = react or (lambda e: [])
        self.events: list[Event] = []
        self.done = False

    def start(self, call: CallInfo) -> list[Command]:
        self.info = call
        return list(self.on_start)

    def handle(self, event: Event) -> list[Command]:
        self.events.append(event)
        if isinstance(event, HungUp):
            self.done = True
        return self.react(event)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize(
    ("target", "outcome"),
    [("1001", "answered"), ("1002", "busy"), ("1003", "no_answer"), ("9876", "failed")],
)
async def test_dial_outcomes(
    sim: AriSimulator, workers: Workers, target: str, outcome: str
) -> None:
    flows: list[Recorder] = []

    def factory(info: CallInfo) -> CallFlow:
        flow = Recorder([Answer(), StartMoh(), Dial(target, timeout=0.5)],
                        lambda e: [StopMoh(), Hangup()] if isinstance(e, DialResult) else [])
        flows.append(flow)
        return flow

    await workers.start(factory)
    call = await sim.place_call("9999")
    await call.wait_ended()
    results = [e for e in flows[0].events if isinstance(e, DialResult)]
    assert [r.outcome for r in results] == [outcome]
    assert "dialed " + target in call.transcript.lines()
    assert call.transcript.lines()[-1] == "hangup NORMAL_CLEARING app"
    assert not sim.bridges


async def test_enqueue_without_runtime_fails_at_once(sim: AriSimulator, workers: Workers) -> None:
    flow = Recorder([Answer(), Enqueue("support")],
                    lambda e: [Hangup()] if isinstance(e, QueueResult) else [])
    await workers.start(lambda info: flow)
    call = await sim.place_call("9999")
    await call.wait_ended()
    assert QueueResult("support", "failed", "no queue runtime") in flow.events


async def test_enqueue_with_runtime_and_external_delivery(
    sim: AriSimulator, workers: Workers
) -> None:
    flow = Recorder([Answer(), SetVariable("lang", "en"), Enqueue("support")],
                    lambda e: [Hangup()] if isinstance(e, QueueResult) else [])
    enqueued: list[tuple[str, str]] = []

    async def on_enqueue(info: CallInfo, cmd: Enqueue) -> None:
        enqueued.append((info.call_id, cmd.queue))

    worker = await workers.start(lambda info: flow, on_enqueue=on_enqueue)
    call = await sim.place_call("9999")
    await wait_until(lambda: bool(enqueued))
    assert enqueued == [(call.call_id, "support")]
    assert worker.has_call(call.call_id) and not worker.has_call("no-such-call")
    worker.deliver("no-such-call", QueueResult("support", "answered"))  # dropped, logged
    worker.deliver(call.call_id, QueueResult("support", "answered"))
    await call.wait_ended()
    assert "variable lang=en" in call.transcript.lines()


async def test_flow_crash_ends_politely(sim: AriSimulator, workers: Workers) -> None:
    def boom(event: Event) -> list[Command]:
        raise RuntimeError("bug in a flow")

    await workers.start(lambda info: Recorder([Answer(), StartTimer("t", 0.05)], boom))
    call = await sim.place_call("9999")
    await call.wait_ended()
    assert call.prompts() == ["file:cannot-complete-temp-error"]


async def test_gone_channel_ends_only_that_call(sim: AriSimulator, workers: Workers) -> None:
    """Events lost, caller gone: the next REST command gets 404 and ends that flow only."""

    def ticker(event: Event) -> list[Command]:
        if isinstance(event, TimerFired):
            return [Play(f"p{id(event)}", (Prompt("file", "tick"),)), StartTimer("t", 0.1)]
        return []

    flows: dict[str, Recorder] = {}

    def factory(info: CallInfo) -> CallFlow:
        flows[info.call_id] = Recorder([Answer(), StartTimer("t", 0.1)], ticker)
        return flows[info.call_id]

    worker = await workers.start(factory, LinkConfig(reconnect_min=0.05, watchdog_interval=60))
    a = await sim.place_call("9999")
    b = await sim.place_call("9999")
    await a.wait_for_prompt("file:tick")
    await b.wait_for_prompt("file:tick")
    sim.forget_subscription("callyard")
    await a.hangup()  # nobody hears about it
    await wait_until(lambda: flows[a.call_id].done)
    assert flows[a.call_id].events[-1] == HungUp("NORMAL_CLEARING")
    ticks = len(b.prompts())
    await wait_until(lambda: len(b.prompts()) > ticks + 1)
    assert worker.call(b.call_id) is not None
    assert worker.call(a.call_id) is None
    await b.hangup()


async def test_many_concurrent_calls_without_cross_talk(
    sim: AriSimulator, workers: Workers
) -> None:
    menuset = menus()
    seen: dict[str, str] = {}

    def factory(info: CallInfo) -> CallFlow | None:
        seen[info.call_id] = info.caller
        return menuset.flow_for(info.called)

    await workers.start(factory)
    paths = [("1", "1", "9"), ("1", "*", "0"), ("2",)]

    async def one(i: int) -> AriSimulatedCall:
        call = await sim.place_call("9999", caller=f"+1555{i:07d}")
        path = paths[i % len(paths)]
        await call.wait_for_prompt("file:ivr/welcome", 20)
        for n, digit in enumerate(path):
            before = len(call.prompts())
            await call.press(digit)
            if n + 1 < len(path):
                await call.transcript.wait_for(
                    lambda e, b=before, c=call: e.kind == "prompt_started"
                    and len(c.prompts()) > b,
                    20,
                )
        await call.wait_ended(20)
        return call

    calls = await asyncio.gather(*(one(i) for i in range(150)))
    for i, call in enumerate(calls):
        assert seen[call.call_id] == f"+1555{i:07d}"
        lines = call.transcript.lines()
        dtmf = [e.detail for e in call.transcript.entries if e.kind == "dtmf"]
        assert dtmf == list(paths[i % 3]), lines
        prompts = call.prompts()
        if i % 3 == 0:
            assert prompts[0] == "file:ivr/welcome" and "file:ivr/sales-new" in prompts, lines
            assert lines[-1] == "hangup NORMAL_CLEARING app"
        elif i % 3 == 1:
            assert prompts.count("file:ivr/welcome") == 2 and "file:ivr/sales" in prompts
            assert "file:ivr/sales-new" not in prompts, lines
            assert lines[-1] == "hangup NORMAL_CLEARING app"
        else:
            assert prompts == ["file:ivr/welcome"] and "transferred 1000" in lines
    await wait_until(lambda: not workers.started[-1].active_calls)


async def test_readopt_after_process_restart(
    sim: AriSimulator, workers: Workers, redis_client: Redis
) -> None:
    menuset = menus()
    first = await workers.start(ivr_factory(menuset), redis=redis_client)
    call = await sim.place_call("9999")
    await call.wait_for_prompt("file:ivr/welcome")
    assert await redis_client.exists(f"callyard:asterisk:call:{first.links[0].name}:"
                                     f"{call.call_id}")
    await first.stop()  # the process "dies": the channel stays in Stasis
    await sim.drop_event_sockets()
    second = await workers.start(ivr_factory(menuset), redis=redis_client)
    await wait_until(lambda: second.call(call.call_id) is not None)
    # The fresh flow starts over: the caller hears the welcome again, then walks on.
    await wait_until(lambda: call.prompts().count("file:ivr/welcome") == 2)
    await run_steps(call, [("press", "1"), ("expect_prompt", "file:ivr/sales"),
                           ("press", "1"), ("expect_prompt", "file:ivr/sales-new"),
                           ("press", "9"), ("expect_hangup", "app")])
    await wait_until(lambda: second.active_calls == 0)
    record = f"callyard:asterisk:call:{second.links[0].name}:{call.call_id}"
    for _ in range(100):  # deleted in the call records' next batch
        if not await redis_client.exists(record):
            break
        await asyncio.sleep(0.01)
    assert not await redis_client.exists(record)


async def test_an_ended_calls_record_stays_until_its_cdr_is_in_redis(
    sim: AriSimulator, workers: Workers, redis_client: Redis
) -> None:
    """The record of an ended call goes only once its CDR is in Redis: a worker killed in
    between leaves the record, and the next one records the call as lost (one CDR either
    way). Here the CDR stream's Redis is unreachable until the test lets it through."""
    menuset = menus()
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    sink = CdrSink(unreachable)
    sink.start()
    cdrs = CdrCalls(sink)
    worker = await workers.start(lambda info: cdrs.wrap(menuset.flow_for(info.called), info),
                                 redis=redis_client, cdrs_durable=sink.durable)
    call = await sim.place_call("9999")
    await run_steps(call, [("expect_prompt", "file:ivr/welcome"), ("press", "0"),
                           ("expect_hangup", "app")])
    record = f"callyard:asterisk:call:{worker.links[0].name}:{call.call_id}"
    await wait_until(lambda: sink.backlog == 1 and worker.active_calls == 0)
    await asyncio.sleep(0.5)
    assert await redis_client.exists(record), "the record went before the CDR"
    sink.redis = redis_client  # Redis reachable again: the CDR lands, then the record goes
    await wait_until(lambda: sink.backlog == 0)
    for _ in range(50):
        if not await redis_client.exists(record):
            break
        await asyncio.sleep(0.1)
    assert not await redis_client.exists(record)
    assert await redis_client.xlen(STREAM) == 1
    await sink.stop(5)
    await unreachable.aclose()


async def test_async_flow_factory(sim: AriSimulator, workers: Workers) -> None:
    menuset = menus()

    async def factory(info: CallInfo) -> CallFlow | None:
        await asyncio.sleep(0.05)  # e.g. loading the menu set from Redis
        return menuset.flow_for(info.called)

    await workers.start(factory)
    call = await sim.place_call("9999")
    await run_steps(call, [("expect_prompt", "file:ivr/welcome"), ("press", "0"),
                           ("expect_hangup", "app")])


async def test_unknown_events_and_fields_are_ignored(sim: AriSimulator, workers: Workers) -> None:
    await workers.start(ivr_factory(menus()))
    call = await sim.place_call("9999")
    await call.wait_for_prompt("file:ivr/welcome")
    # An event type this worker does not know, and a known one with fields it does not know.
    sim._emit("callyard", "SomethingNew", channel={"id": call.call_id}, gadget=[1, 2])
    sim._emit("callyard", "ChannelDtmfReceived", digit="1", duration_ms=100,
              channel={"id": call.call_id, "future_field": {"x": 1}}, extra=True)
    await run_steps(call, [("expect_prompt", "file:ivr/sales"), ("press", "*"),
                           ("expect_prompt", "file:ivr/welcome"), ("press", "0"),
                           ("expect_hangup", "app")])


async def test_two_nodes_one_worker(sim: AriSimulator) -> None:
    """CALLYARD_ASTERISK_ARI with two nodes: each node's calls are served, independently."""
    async with AriSimulator(sounds=SoundCatalog(default_seconds=0.15)) as other:
        settings = load_settings(
            asterisk_ari=f"{sim.url_with_credentials},{other.url_with_credentials}")
        worker = AsteriskWorker(settings.asterisk_ari, ivr_factory(menus()))
        await worker.start()
        try:
            await worker.wait_connected()
            a, b = await sim.place_call("9999"), await other.place_call("9999")
            await run_steps(a, [("expect_prompt", "file:ivr/welcome"), ("press", "1"),
                                ("expect_prompt", "file:ivr/sales")])
            await other.drop_event_sockets()  # node 2 blips; node 1 is unaffected
            await run_steps(a, [("press", "*"), ("expect_prompt", "file:ivr/welcome"),
                                ("press", "0"), ("expect_hangup", "app")])
            await wait_until(lambda: other.app_connected("callyard"))
            await run_steps(b, [("press", "2"), ("expect_transferred", "1000")])
            nodes = {link.name for link in worker.links}
            assert nodes == {f"127.0.0.1:{sim.port}", f"127.0.0.1:{other.port}"}
        finally:
            await worker.stop()


async def test_commands_keep_working_while_the_events_socket_is_down(
    sim: AriSimulator, workers: Workers
) -> None:
    """REST during the gap uses the same client: timers fire and prompts play meanwhile."""

    def ticker(event: Event) -> list[Command]:
        if isinstance(event, TimerFired):
            return [Play(f"p{id(event)}", (Prompt("file", "tick"),)), StartTimer("t", 0.05)]
        return []

    worker = await workers.start(lambda info: Recorder([Answer(), StartTimer("t", 0.05)], ticker),
                                 LinkConfig(reconnect_min=0.8))  # a long gap
    call = await sim.place_call("9999")
    await call.wait_for_prompt("file:tick")
    await sim.drop_event_sockets()
    await wait_until(lambda: not worker.links[0].connected.is_set())
    before = len(call.prompts())
    await wait_until(lambda: len(call.prompts()) >= before + 3, timeout=0.5)
    assert not sim.app_connected("callyard")  # still in the gap
    await wait_until(lambda: worker.links[0].connections == 2)
    await call.hangup()
    await wait_until(lambda: worker.active_calls == 0)


async def test_variables_are_set_before_what_follows_them(
    sim: AriSimulator, workers: Workers
) -> None:
    """SetVariable and StopPlay are sent without waiting for the answer; anything else
    (here the hangup) waits for them, so the dialplan never misses a variable."""
    flows: list[Recorder] = []
    greeting = Play("g", (Prompt("file", "ivr/welcome"),))

    def react(event: Event) -> list[Command]:
        if isinstance(event, PlayFinished):
            return [SetVariable("ivr_result", "done"), SetVariable("ivr_menu", "main"),
                    Hangup()]
        return []

    def factory(info: CallInfo) -> CallFlow:
        flows.append(Recorder([Answer(), SetVariable("lang", "en"), greeting], react))
        return flows[-1]

    await workers.start(factory)
    call = await sim.place_call("9999")
    await call.wait_ended()
    lines = call.transcript.lines()
    assert {"variable lang=en", "prompt_started file:ivr/welcome"} <= set(lines)
    assert lines[-3:] == ["variable ivr_result=done", "variable ivr_menu=main",
                          "hangup NORMAL_CLEARING app"]


async def test_a_refused_variable_ends_the_call(sim: AriSimulator, workers: Workers) -> None:
    flows: list[Recorder] = []

    def factory(info: CallInfo) -> CallFlow:
        flows.append(Recorder([Answer(), SetVariable("", "x"),  # 400: variable is required
                               Play("g", (Prompt("file", "ivr/welcome"),))]))
        return flows[-1]

    await workers.start(factory)
    call = await sim.place_call("9999")
    await call.wait_ended()
    assert call.transcript.lines()[-1] == "hangup NORMAL_CLEARING app"
    assert HungUp("ARI_ERROR") in flows[0].events


async def test_a_burst_of_external_events_arrives_in_order(
    sim: AriSimulator, workers: Workers
) -> None:
    flows: list[Recorder] = []

    def factory(info: CallInfo) -> CallFlow:
        flows.append(Recorder([Answer()]))
        return flows[-1]

    worker = await workers.start(factory)
    calls = [await sim.place_call("9999") for _ in range(3)]
    for call in calls:
        await call.wait_for("answered")
    for i in range(300):  # more than one batch per event-loop turn
        for call in calls:
            worker.deliver(call.call_id, TimerFired(f"t{i}"))
    expected = [TimerFired(f"t{i}") for i in range(300)]
    await wait_until(lambda: all(
        [e for e in f.events if isinstance(e, TimerFired)] == expected for f in flows))
    for call in calls:
        await call.hangup()


async def test_stop_play_stops_every_outstanding_play(sim: AriSimulator, workers: Workers) -> None:
    """A StopPlay ends every play still outstanding on the call, as on FreeSWITCH
    (``uuid_break all``): on the real Asterisk a flow that queued a re-prompt behind a
    greeting still playing, then stopped the re-prompt on a digit, left the caller hearing the
    old greeting to its end (ARI stops only the playback named)."""
    sim.sounds.durations["sound:ivr/long"] = 1.5
    flows: list[Recorder] = []

    def react(event: Event) -> list[Command]:
        if event == TimerFired("reprompt"):
            return [StopPlay("p2"), Play("p3", (Prompt("file", "ivr/sales"),))]
        return []

    def factory(info: CallInfo) -> CallFlow:
        flows.append(Recorder([Answer(), Play("p1", (Prompt("file", "ivr/long"),)),
                               Play("p2", (Prompt("file", "ivr/timeout"),)),
                               StartTimer("reprompt", 0.2)], react))
        return flows[-1]

    await workers.start(factory)
    call = await sim.place_call("9999")
    started = await call.wait_for_prompt("file:ivr/sales", timeout=5)
    assert started.at < 1.0, call.transcript.lines()  # not after the 1.5 s greeting
    assert "prompt_finished file:ivr/long stopped" in call.transcript.lines()
    await wait_until(lambda: PlayFinished("p3", "done") in flows[0].events)
    finished = [e for e in flows[0].events if isinstance(e, PlayFinished)]
    assert finished == [PlayFinished("p1", "stopped"), PlayFinished("p2", "stopped"),
                        PlayFinished("p3", "done")]
    assert "prompt_started file:ivr/timeout" not in call.transcript.lines()
    await call.hangup()


async def test_a_variable_set_before_a_play_is_not_held_up_by_it(
    sim: AriSimulator, workers: Workers
) -> None:
    """Asterisk sets a variable on the channel's thread, after the playbacks queued before
    it; a Play sent while the SetVariable before it was still on its way overtook it on the
    real Asterisk, and the variable (and its HTTP connection) waited for the prompt's end."""
    sim.sounds.durations["sound:ivr/long"] = 1.5

    def factory(info: CallInfo) -> CallFlow:
        return Recorder([Answer(), SetVariable("vip", "yes"),
                         Play("p1", (Prompt("file", "ivr/long"),))])

    await workers.start(factory)
    call = await sim.place_call("9999")
    await call.wait_for_prompt("file:ivr/long")
    entry = await call.transcript.wait_for(lambda e: e.kind == "variable", timeout=3)
    assert entry.at < 0.5, call.transcript.lines()
    lines = call.transcript.lines()
    assert lines.index("variable vip=yes") < lines.index("prompt_started file:ivr/long")
    await call.hangup()


async def test_transfer_breaks_off_the_running_prompt(sim: AriSimulator, workers: Workers) -> None:
    """Asterisk leaves Stasis for the dialplan only after the channel's playbacks (real
    Asterisk 22.10.1); the FreeSWITCH driver breaks prompts off on Transfer, so this one stops
    them first: the transfer happens at once, not after the prompt."""
    sim.sounds.durations["sound:ivr/long"] = 1.5
    flows: list[Recorder] = []

    def factory(info: CallInfo) -> CallFlow:
        flows.append(Recorder([Answer(), Play("p1", (Prompt("file", "ivr/long"),)),
                               Play("p2", (Prompt("file", "ivr/sales"),)), Transfer("1000")]))
        return flows[-1]

    await workers.start(factory)
    call = await sim.place_call("9999")
    entry = await call.transcript.wait_for(lambda e: e.kind == "transferred", timeout=3)
    assert entry.at < 0.5, call.transcript.lines()
    assert "prompt_finished file:ivr/long stopped" in call.transcript.lines()
    assert "prompt_started file:ivr/sales" not in call.transcript.lines()
    assert flows[0].events == [TransferResult("1000", ok=True)]


async def test_a_hangup_after_a_play_waits_for_its_end(sim: AriSimulator, workers: Workers) -> None:
    """Hangup(after_play): the goodbye is heard to its end, then the driver hangs up on its
    PlaybackFinished (ARI has no queued hangup); the flow hears only the end (its HungUp:
    the CDR ends then, not when the goodbye began)."""
    sim.sounds.durations["sound:ivr/long"] = 0.6
    flows: list[Recorder] = []

    def factory(info: CallInfo) -> CallFlow:
        flows.append(Recorder([Answer(), Play("bye", (Prompt("file", "ivr/long"),)),
                               Hangup(after_play="bye")]))
        return flows[-1]

    await workers.start(factory)
    call = await sim.place_call("9999")
    ended = await call.transcript.wait_for(lambda e: e.kind == "hangup", timeout=3)
    lines = call.transcript.lines()
    assert "prompt_finished file:ivr/long done" in lines, lines
    assert lines.index("prompt_finished file:ivr/long done") < lines.index(
        f"{ended.kind} {ended.detail}".strip()), lines
    assert ended.at >= 0.6, lines
    await wait_until(lambda: flows[0].events == [HungUp("NORMAL_CLEARING")])
    # the caller hangs up during the goodbye: nothing more is asked of Asterisk
    sim.sounds.durations["sound:ivr/long"] = 5
    call = await sim.place_call("9999")
    await call.wait_for_prompt("file:ivr/long")
    await call.hangup()
    await wait_until(lambda: workers.started[0].call(call.call_id) is None)
    assert [type(e) for e in flows[1].events] == [HungUp]


class _RefusedHangups:
    """An ARI port that starts playbacks and answers every DELETE of a channel with a 500."""

    def __init__(self) -> None:
        self.playbacks: list[str] = []
        self.hangups: list[str] = []  # the reasons asked for

    async def play(self, channel_id: str, playback_id: str, media: list[str],
                   lang: str = "") -> None:
        self.playbacks.append(playback_id)

    async def hangup(self, channel_id: str, reason: str = "") -> None:
        self.hangups.append(reason)
        raise AriError(500, "Internal Server Error")


async def test_a_refused_hangup_ends_the_flows_call() -> None:
    """Asterisk refuses the DELETE (500). ``Hangup``: the flow hears HungUp("ARI_ERROR") and
    the driver tries once more without a reason; ``Hangup(after_play)``, refused on the
    goodbye's end: the flow hears HungUp of its own cause at once (no channel end will come)."""
    for after_play in ("", "bye"):
        port = _RefusedHangups()
        flow = Recorder([])
        info = CallInfo("chan-1", "asterisk", "+15550100", "9999")
        driver = CallDriver(info, flow, cast(AriPort, port), DriverConfig(),
                            cast(LegRegistry, None))
        await driver._apply([Play("bye", (Prompt("file", "ivr/bye"),)),
                             Hangup("USER_BUSY", after_play=after_play)])
        if not after_play:
            assert port.hangups == ["busy", ""] and flow.events == [HungUp("ARI_ERROR")]
            assert driver.finished
            continue
        assert port.hangups == [] and flow.events == [] and not driver.finished
        await driver._on_channel_event({"type": "PlaybackFinished",
                                        "playback": {"id": port.playbacks[0], "state": "done"}})
        assert port.hangups == ["busy"] and flow.events == [HungUp("USER_BUSY")]
        assert driver.finished


async def test_one_application_per_worker(redis_client: Redis) -> None:
    """Two workers share a node and Redis, each with its own Stasis application, tried in the
    dialplan's order: the first takes calls while it is up, then the second; with neither, the
    polite message. A worker re-adopts (or reports lost) only its own application's calls: the
    second starting up left the first's call record alone (it once took it for a call ended
    unseen, a WORKER_LOST CDR for a live call)."""
    async with AriSimulator(sounds=SoundCatalog(default_seconds=0.15),
                            stasis_apps=("callyard-1", "callyard-2")) as sim:
        menuset, lost = menus(), []
        pool = Workers(sim)
        first = await pool.start(ivr_factory(menuset), app="callyard-1", redis=redis_client)
        a = await sim.place_call("9999")
        await a.wait_for_prompt("file:ivr/welcome")
        second = await pool.start(ivr_factory(menuset), app="callyard-2", redis=redis_client,
                                  on_call_lost=lost.append)
        await asyncio.sleep(0.2)  # the second's re-adoption ran
        assert lost == [] and first.call(a.call_id) is not None
        node = first.links[0].name
        assert await redis_client.exists(f"callyard:asterisk:call:{node}:{a.call_id}")

        await first.stop()  # the first worker dies: its caller stays in Stasis...
        await sim.drop_event_sockets("callyard-1")
        b = await sim.place_call("9999")  # ... and new calls go to the second
        await b.wait_for_prompt("file:ivr/welcome")
        assert sim.channels[b.call_id].stasis_app == "callyard-2"
        await run_steps(b, [("press", "0"), ("expect_hangup", "app")])
        await second.stop()
        await sim.drop_event_sockets("callyard-2")
        c = await sim.place_call("9999")
        await c.wait_ended()
        assert c.prompts() == ["file:cannot-complete-temp-error"]

        # The first worker's application comes back (restarted): it re-adopts its caller.
        again = await pool.start(ivr_factory(menuset), app="callyard-1", redis=redis_client)
        await wait_until(lambda: a.prompts().count("file:ivr/welcome") == 2)
        await run_steps(a, [("press", "0"), ("expect_hangup", "app")])
        await wait_until(lambda: again.active_calls == 0)
        await again.stop()
        assert lost == []


async def test_a_call_over_before_its_cdr_reached_redis_is_recorded_by_its_next_worker(
    redis_client: Redis,
) -> None:
    """The call is over (the app hung up, the channel is gone) but its CDR is still on its way
    to Redis when its worker dies (tests/real/test_asterisk_workers.py killed one right
    then): the call's record stays, a worker of another application leaves it alone, and the
    next worker of the same application records the call (its CDR: WORKER_LOST)."""
    async with AriSimulator(sounds=SoundCatalog(default_seconds=0.15),
                            stasis_apps=("callyard-1", "callyard-2")) as sim:
        menuset = menus()
        lost: list[CallRecord] = []
        other_lost: list[CallRecord] = []
        never = asyncio.Event()

        async def cdr_on_its_way() -> None:  # the worker dies before its sink wrote the CDR
            await never.wait()

        pool = Workers(sim)
        first = await pool.start(ivr_factory(menuset), app="callyard-1", redis=redis_client,
                                 cdrs_durable=cdr_on_its_way)
        call = await sim.place_call("9999")
        await call.wait_for_prompt("file:ivr/welcome")
        await run_steps(call, [("press", "0"), ("expect_hangup", "app")])
        await call.wait_ended()
        record = f"callyard:asterisk:call:{first.links[0].name}:{call.call_id}"
        await first.stop()
        await sim.drop_event_sockets("callyard-1")
        assert await redis_client.exists(record)

        other = await pool.start(ivr_factory(menuset), app="callyard-2", redis=redis_client,
                                 on_call_lost=other_lost.append)
        await asyncio.sleep(0.2)  # its re-adoption ran
        assert other_lost == [] and await redis_client.exists(record)

        again = await pool.start(ivr_factory(menuset), app="callyard-1", redis=redis_client,
                                 on_call_lost=lost.append)
        await wait_until(lambda: len(lost) == 1)
        assert lost[0].info.call_id == call.call_id and lost[0].started_at > 0
        for _ in range(100):
            if not await redis_client.exists(record):
                break
            await asyncio.sleep(0.02)
        assert not await redis_client.exists(record)
        await again.stop()
        await other.stop()
