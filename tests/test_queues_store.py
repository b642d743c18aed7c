"""Queue and agent transitions in real Redis: strategies, priorities, skills and tiers,
wrap-up, auto-away, overflow, join/leave when empty, leases, the ring-all race."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from appserver.queues import scripts
from appserver.queues.model import AgentConfig, EnqueueResult, Member, QueueConfig, QueueConfigError
from appserver.queues.store import Op, QueueError, QueueStore
from appserver.shells.green import run

T0 = 1_700_000_000_000  # ms; tests pass their own clock


async def setup(client: aioredis.Redis, agents: list[str], *, kinds: dict[str, str] | None = None,
                skills: dict[str, dict[str, int]] | None = None,
                members: list[Member] | None = None, login: bool = True,
                **queue: object) -> QueueStore:
    store = QueueStore(client)
    for i, name in enumerate(agents):
        kind = (kinds or {}).get(name, "browser")
        await store.sync_agent(AgentConfig(name, kind=kind,  # type: ignore[arg-type]
                                           extension=f"10{i:02d}" if kind == "sip" else "",
                                           skills=(skills or {}).get(name, {})), now=T0)
    cfg = QueueConfig(name=str(queue.pop("name", "support")), **queue)  # type: ignore[arg-type]
    await store.sync_queue(cfg, members or [Member(a) for a in agents])
    if login:
        for i, name in enumerate(agents):  # logged in 1 s apart: agents[0] idle longest
            await store.agent_action(name, "login", now=T0 + i * 1000)
    return store


async def offer_one(store: QueueStore, call: str, now: int, queue: str = "support") -> str:
    await store.enqueue(queue, call, "w1", now=now)
    offers = await store.match(queue, now=now + 1)
    assert len(offers) == 1, offers
    return offers[0].agent


async def serve(store: QueueStore, call: str, agent: str, now: int) -> None:
    assert (await store.accept(agent, call, now=now)).ok
    assert await store.finish(call, now=now + 1000)


async def test_longest_idle_picks_the_agent_idle_longest(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann", "bob", "cid"], strategy="longest_idle")
    t = T0 + 10_000
    assert await offer_one(store, "c1", t) == "ann"
    await serve(store, "c1", "ann", t + 10)  # ann is idle again, newest
    assert await offer_one(store, "c2", t + 2000) == "bob"
    assert await offer_one(store, "c3", t + 2010) == "cid"
    assert await offer_one(store, "c4", t + 2020) == "ann"


async def test_round_robin_remembers_the_last_agent(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann", "bob", "cid"], strategy="round_robin")
    t = T0 + 10_000
    picks = []
    for i in range(6):
        agent = await offer_one(store, f"c{i}", t + i * 100)
        await serve(store, f"c{i}", agent, t + i * 100 + 1)
        picks.append(agent)
    assert picks == ["ann", "bob", "cid", "ann", "bob", "cid"]
    # Memory survives an agent dropping out: after bob, cid is next even if bob is away.
    await store.agent_action("cid", "break", "lunch", now=t + 5000)
    agent = await offer_one(store, "c9", t + 6000)
    assert agent == "ann"


async def test_fewest_calls_prefers_the_least_busy(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann", "bob"], strategy="fewest_calls")
    t = T0 + 10_000
    await store.enqueue("support", "c1", "w1", now=t)
    await store.accept("ann", "c1", now=t)  # not offered: refused
    assert not (await store.accept("ann", "c1", now=t)).ok
    assert (await store.match("support", now=t))[0].agent == "ann"
    await serve(store, "c1", "ann", t + 1)
    await serve(store, "c2", await offer_one(store, "c2", t + 2000), t + 2001)
    # ann 1 call, bob 1 call now; ann idle longer breaks the tie
    assert (await store.stats("support", now=t + 3000)).agent_calls == {"ann": 1, "bob": 1}
    assert await offer_one(store, "c3", t + 4000) == "ann"


async def test_random_spreads_offers(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann", "bob", "cid"], strategy="random")
    seen: Counter[str] = Counter()
    for i in range(60):
        agent = await offer_one(store, f"c{i}", T0 + 10_000 + i)
        await store.decline(agent, f"c{i}", "declined", now=T0 + 10_000 + i)
        await store.leave(f"c{i}", "abandoned", now=T0 + 10_000 + i)
        await store.agent_action(agent, "available", now=T0 + 10_000 + i)
        seen[agent] += 1
    assert set(seen) == {"ann", "bob", "cid"} and min(seen.values()) >= 5


async def test_skills_require_min_levels_and_prefer_the_best(redis_client: aioredis.Redis) -> None:
    skills = {"ann": {"french": 2}, "bob": {"french": 5, "billing": 3}, "cid": {"billing": 9}}
    store = await setup(redis_client, ["ann", "bob", "cid"], strategy="skills", skills=skills,
                        required_skills={"billing": 2})
    t = T0 + 10_000
    assert await offer_one(store, "c1", t) == "cid"  # billing 9 beats bob's 3; ann lacks it
    # A caller needing French 3 on top of the queue's billing 2: only bob qualifies.
    await store.enqueue("support", "c2", "w1", now=t + 10, skills={"french": 3})
    assert [o.agent for o in await store.match("support", now=t + 11)] == ["bob"]
    await store.enqueue("support", "c3", "w1", now=t + 20)
    assert await store.match("support", now=t + 21) == []  # ann alone is free: no billing


async def test_tiers_widen_with_waiting_time(redis_client: aioredis.Redis) -> None:
    members = [Member("ann", tier=1), Member("bob", tier=2, penalty=0),
               Member("cid", tier=2, penalty=5)]
    store = await setup(redis_client, ["ann", "bob", "cid"], members=members,
                        tier_widen_seconds=30)
    await store.agent_action("ann", "break", "training", now=T0 + 5000)
    t = T0 + 10_000
    await store.enqueue("support", "c1", "w1", now=t)
    assert await store.match("support", now=t + 29_000) == []  # tier 2 not yet reachable
    offers = await store.match("support", now=t + 30_000)
    assert [o.agent for o in offers] == ["bob"]  # tier 2, lowest penalty first
    # Without widening, every tier is eligible at once but lower tiers go first.
    await store.sync_queue(QueueConfig("support", tier_widen_seconds=0), members)
    await store.agent_action("ann", "available", now=t + 31_000)
    await store.enqueue("support", "c2", "w1", now=t + 32_000)
    assert [o.agent for o in await store.match("support", now=t + 32_001)] == ["ann"]


async def test_priority_then_fifo(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], login=False)
    t = T0 + 10_000
    await store.enqueue("support", "normal1", "w1", 0, now=t)
    await store.enqueue("support", "normal2", "w1", 0, now=t + 1)
    r = await store.enqueue("support", "vip", "w1", 5, now=t + 2)
    assert r.position == 1
    await store.enqueue("support", "vip2", "w1", 5, now=t + 3)
    await store.agent_action("ann", "login", now=t + 4)
    order = []
    for i in range(4):
        offers = await store.match("support", now=t + 10 + i)
        order.append(offers[0].call_id)
        await serve(store, offers[0].call_id, "ann", t + 10 + i)
    assert order == ["vip", "vip2", "normal1", "normal2"]


async def test_callers_joining_in_the_same_millisecond_keep_their_order(
        redis_client: aioredis.Redis) -> None:
    """Found by the Redis-outage test: two callers queued within one millisecond had equal
    scores and Redis ordered them by call id, so the second was offered first half the time.
    Arrival order wins; a worker whose clock is behind cannot jump the line either."""
    store = await setup(redis_client, ["ann"], login=False)
    t = T0 + 10_000
    for call in ("zz-first", "mm-second", "aa-third"):  # ids in reverse order
        await store.enqueue("support", call, "w1", 0, now=t)
    await store.enqueue("support", "late-clock", "w2", 0, now=t - 500)
    await store.enqueue("support", "vip", "w1", 5, now=t)  # priority still first
    assert [(await store.enqueue("support", c, "w1", 0, now=t)).position
            for c in ("zz-first", "aa-third")] == [2, 4]  # a join repeated: same place
    await store.agent_action("ann", "login", now=t + 4)
    order = []
    for i in range(5):
        offers = await store.match("support", now=t + 10 + i)
        order.append(offers[0].call_id)
        await serve(store, offers[0].call_id, "ann", t + 10 + i)
    assert order == ["vip", "zz-first", "mm-second", "aa-third", "late-clock"]
    stats = await store.stats("support")
    assert stats.answered == 5


async def test_wrap_up_then_available(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], wrapup_seconds=10)
    t = T0 + 10_000
    agent = await offer_one(store, "c1", t)
    assert (await store.accept(agent, "c1", now=t + 100)).ok
    assert (await store.agent("ann")).state == "on_call"  # type: ignore[union-attr]
    await store.finish("c1", now=t + 60_000)
    st = await store.agent("ann")
    assert st is not None and st.state == "wrap_up" and st.wrapup_until_ms == t + 70_000
    await store.enqueue("support", "c2", "w1", now=t + 61_000)
    assert await store.match("support", now=t + 69_999) == []
    assert [o.agent for o in await store.match("support", now=t + 70_000)] == ["ann"]
    stats = await store.stats("support", now=t + 70_000)
    assert stats.answered == 1 and stats.avg_handle == pytest.approx(59.9)
    assert stats.avg_wait == pytest.approx(0.1) and stats.service_level == 100.0


async def test_break_requested_on_a_call_applies_after_it(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], wrapup_seconds=0)
    t = T0 + 10_000
    await store.accept(await offer_one(store, "c1", t), "c1", now=t)
    assert await store.agent_action("ann", "break", "lunch", now=t + 1) == "pending:break"
    with pytest.raises(QueueError) as err:
        await store.agent_action("ann", "logout", now=t + 2)
    assert err.value.code == "on_call"
    await store.finish("c1", now=t + 5000)
    st = await store.agent("ann")
    assert st is not None and (st.state, st.reason) == ("break", "lunch")


async def test_no_answer_sends_agent_away(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann", "bob"], max_no_answer=2, ring_timeout=15)
    t = T0 + 10_000
    await store.enqueue("support", "c1", "w1", now=t)
    assert (await store.match("support", now=t))[0].agent == "ann"
    await store.tick("w1", now=t + 15_000)  # ring timeout expires the offer
    st = await store.agent("ann")
    assert st is not None and st.state == "available" and st.no_answer == 1
    offers = await store.match("support", now=t + 15_001)
    assert offers[0].agent == "bob"  # ann went to the back of the line
    await store.decline("bob", "c1", "declined", now=t + 16_000)
    assert (await store.match("support", now=t + 16_001))[0].agent == "ann"
    assert await store.decline("ann", "c1", "no_answer", now=t + 17_000)
    st = await store.agent("ann")
    assert st is not None and (st.state, st.reason) == ("away", "no_answer")
    assert (await store.match("support", now=t + 17_001))[0].agent == "bob"
    # Answering resets the counter.
    assert (await store.accept("bob", "c1", now=t + 18_000)).ok
    assert (await store.agent("bob")).no_answer == 0  # type: ignore[union-attr]


async def test_sip_agent_is_assigned_directly_and_dial_failure_requeues(
    redis_client: aioredis.Redis,
) -> None:
    store = await setup(redis_client, ["ann"], kinds={"ann": "sip"}, max_no_answer=3)
    t = T0 + 10_000
    await store.enqueue("support", "c0", "w1", now=t - 5)
    await store.enqueue("support", "c1", "w1", now=t)
    offers = await store.match("support", now=t + 1)
    assert [(o.call_id, o.agent, o.mode) for o in offers] == [("c0", "ann", "assigned")]
    msg = await store.pop_inbox("w1", 0.1)
    assert msg == {"type": "assigned", "call": "c0", "queue": "support", "agent": "ann",
                   "target": "1000", "kind": "sip"}
    assert await store.dial_failed("c0", "ann", now=t + 20_000)
    statuses = {s.call_id: s for s in await store.tick("w1", now=t + 20_001)}
    assert statuses["c0"].state == "waiting" and statuses["c0"].position == 1  # kept its place
    assert (await store.agent("ann")).no_answer == 1  # type: ignore[union-attr]


async def test_sip_agent_whose_phone_cannot_be_dialled_goes_away(
    redis_client: aioredis.Redis,
) -> None:
    """Seen on the ARI simulator with a SIP agent whose extension does not exist: the dial
    failed at once, the caller went back in line and the same agent was assigned again,
    thousands of times in ten seconds - each assignment reset the no-answer count. Dial
    failures in a row must add up to max_no_answer like unanswered offers."""
    store = await setup(redis_client, ["ann"], kinds={"ann": "sip"}, max_no_answer=3)
    t = T0 + 10_000
    await store.enqueue("support", "c1", "w1", now=t)
    for attempt in range(3):
        offers = await store.match("support", now=t + attempt * 10 + 1)
        assert [(o.agent, o.mode) for o in offers] == [("ann", "assigned")], attempt
        assert await store.dial_failed("c1", "ann", now=t + attempt * 10 + 2)
    assert await store.match("support", now=t + 100) == []
    ann = await store.agent("ann")
    assert ann is not None and (ann.state, ann.reason) == ("away", "no_answer")


async def test_agent_in_two_queues_gets_one_call_at_a_time(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"])
    await store.sync_queue(QueueConfig("sales"), [Member("ann")])
    t = T0 + 10_000
    await store.enqueue("support", "c1", "w1", now=t)
    await store.enqueue("sales", "c2", "w1", now=t)
    offers = await store.match("support", now=t) + await store.match("sales", now=t)
    assert len(offers) == 1
    assert (await store.accept("ann", "c1", now=t)).ok
    assert await store.match("sales", now=t + 1) == []


async def test_ring_all_exactly_one_accept_wins(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    agents = [f"a{i}" for i in range(8)]
    store = await setup(redis_client, agents, strategy="ring_all")
    t = T0 + 10_000
    await store.enqueue("support", "c1", "w1", now=t)
    offers = await store.match("support", now=t)
    assert sorted(o.agent for o in offers) == agents
    # Every agent answers "at the same moment" on its own connection.
    clients = [aioredis.Redis.from_url(redis_url, decode_responses=True) for _ in agents]
    try:
        results = await asyncio.gather(*(QueueStore(c).accept(a, "c1", now=t + 1)
                                         for c, a in zip(clients, agents, strict=True)))
    finally:
        for c in clients:
            await c.aclose()
    winners = [a for a, r in zip(agents, results, strict=True) if r.ok]
    assert len(winners) == 1
    assert {r.error for r in results if not r.ok} == {"taken"}
    states = Counter([(await store.agent(a)).state for a in agents])  # type: ignore[union-attr]
    assert states == {"on_call": 1, "available": 7}
    assert [m async for m in _drain(store, "w1")] == [winners[0]]


async def _drain(store: QueueStore, worker: str) -> AsyncIterator[str]:
    while (msg := await store.pop_inbox(worker, 0.05)) is not None:
        yield msg["agent"]


async def test_overflow_by_length_and_join_when_empty(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], login=False, max_length=2, join_when_empty=False)
    t = T0 + 10_000
    assert (await store.enqueue("support", "c1", "w1", now=t)).status == "empty"
    await store.agent_action("ann", "login", now=t)
    await store.agent_action("ann", "break", "", now=t)
    assert (await store.enqueue("support", "c1", "w1", now=t)).status == "empty"
    await store.agent_action("ann", "available", now=t)
    await store.agent_action("ann", "logout", now=t)
    await store.sync_queue(QueueConfig("support", max_length=2), [Member("ann")])
    assert (await store.enqueue("support", "c1", "w1", now=t)).status == "ok"
    assert (await store.enqueue("support", "c2", "w1", now=t)).position == 2
    assert (await store.enqueue("support", "c3", "w1", now=t)).status == "full"
    stats = await store.stats("support", now=t + 5000)
    assert (stats.waiting, stats.overflowed, stats.longest_wait) == (2, 3, 5.0)
    with pytest.raises(QueueError):
        await store.enqueue("support", "c1", "w2", now=t)  # already queued, by another worker
    with pytest.raises(QueueError):
        await store.enqueue("nope", "c9", "w1", now=t)
    with pytest.raises(QueueConfigError):
        await store.enqueue("support", "c9", "w1", priority=1000, now=t)


async def test_leave_counts_outcomes_and_frees_offered_agents(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann", "bob"], strategy="ring_all")
    t = T0 + 10_000
    await store.enqueue("support", "c1", "w1", now=t)
    await store.match("support", now=t)
    assert await store.leave("c1", "abandoned", now=t + 3000) == "offered"
    for a in ("ann", "bob"):
        st = await store.agent(a)
        assert st is not None and st.state == "available" and st.offer == ""
    assert not (await store.accept("ann", "c1", now=t + 3001)).ok
    for i, outcome in enumerate(("left", "timeout", "overflow")):
        await store.enqueue("support", f"x{i}", "w1", now=t)
        await store.leave(f"x{i}", outcome, now=t + 1)
    s = await store.stats("support", now=t + 5000)
    assert (s.abandoned, s.exited, s.overflowed, s.waiting) == (1, 1, 2, 0)
    assert s.service_level == 0.0


async def test_lease_expiry_reaps_callers_of_a_dead_worker(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], strategy="ring_all")
    t = T0 + 10_000
    await store.enqueue("support", "dead1", "w-dead", lease_ms=5000, now=t)
    await store.enqueue("support", "dead2", "w-dead", lease_ms=5000, now=t)
    await store.enqueue("support", "live", "w-live", lease_ms=5000, now=t)
    await store.match("support", now=t)  # dead1 is ringing ann
    await store.tick("w-live", lease_ms=5000, now=t + 4000)  # w-live heartbeats, w-dead not
    assert await store.reap(now=t + 4999) == []
    assert sorted(await store.reap(now=t + 5000)) == ["dead1", "dead2"]
    assert [s.call_id for s in await store.tick("w-live", now=t + 5001)] == ["live"]
    assert [s.call_id for s in await store.tick("w-dead", now=t + 5001)] == []
    st = await store.agent("ann")
    assert st is not None and st.state == "available"  # dead1's offer was withdrawn
    assert [o.call_id for o in await store.match("support", now=t + 5002)] == ["live"]
    stats = await store.stats("support", now=t + 5001)
    assert (stats.lost, stats.abandoned, stats.waiting) == (2, 2, 1)
    # A worker handed the live caller takes over its lease.
    assert (await store.take_over("live", "w-new", now=t + 5003)).state == "offered"
    assert [s.call_id for s in await store.tick("w-new", now=t + 5004)] == ["live"]
    assert await store.tick("w-live", now=t + 5005) == []


async def test_agent_actions_validate(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann"], login=False)
    with pytest.raises(QueueError) as err:
        await store.agent_action("ann", "available", now=T0)
    assert err.value.code == "logged_out"
    with pytest.raises(QueueError) as err:
        await store.agent_action("ghost", "login", now=T0)
    assert err.value.code == "no_such_agent"
    await store.sync_agent(AgentConfig("ann", enabled=False), now=T0)
    with pytest.raises(QueueError) as err:
        await store.agent_action("ann", "login", now=T0)
    assert err.value.code == "disabled"
    with pytest.raises(QueueConfigError):
        QueueConfig("support", strategy="loudest")  # type: ignore[arg-type]
    with pytest.raises(QueueConfigError):
        QueueConfig("support", overflow_action="menu")
    with pytest.raises(QueueConfigError):
        Member("ann", tier=10)


async def test_estimated_wait_from_handle_time_and_staffing(redis_client: aioredis.Redis) -> None:
    store = await setup(redis_client, ["ann", "bob"])
    t = T0 + 10_000
    await store.accept(await offer_one(store, "c1", t), "c1", now=t)
    await store.finish("c1", now=t + 120_000)  # one call handled in 120 s
    await store.agent_action("ann", "break", "", now=t + 120_001)
    await store.agent_action("bob", "break", "", now=t + 120_001)
    for i in range(3):
        await store.enqueue("support", f"w{i}", "w1", now=t + 130_000 + i)
    by_call = {s.call_id: s for s in await store.tick("w1", now=t + 131_000)}
    assert by_call["w2"].position == 3 and by_call["w2"].staffed == 0
    await store.agent_action("ann", "available", now=t + 131_001)  # no match run: both stay
    await store.agent_action("bob", "available", now=t + 131_002)  # free, the line stays
    by_call = {s.call_id: s for s in await store.tick("w1", now=t + 131_006)}
    st = by_call["w2"]
    assert (st.position, st.staffed, st.avg_handle_seconds) == (3, 2, 120.0)
    assert st.estimated_wait == 180.0  # 3 callers x 120 s over 2 agents


async def test_a_join_repeated_after_its_reply_was_lost_lands_once(
    redis_client: aioredis.Redis,
) -> None:
    """Redis stalled past the client's socket timeout: the worker's enqueue timed out but
    ran once Redis resumed, and the worker sends it again. The repeat answers like the first
    (same place in line) and counts nothing twice; another worker's or another queue's join
    of that call id is still refused."""
    store = await setup(redis_client, ["ann"], login=False)
    await store.sync_queue(QueueConfig("sales"), [])
    first = await store.enqueue("support", "c1", "w1", now=T0)
    await store.enqueue("support", "c2", "w1", now=T0 + 1)
    again = await store.enqueue("support", "c1", "w1", now=T0 + 5000)
    assert (again.status, again.position) == ("ok", first.position) == ("ok", 1)
    stats = await store.stats("support", now=T0 + 5000)
    assert (stats.joined, stats.waiting, stats.longest_wait) == (2, 2, 5.0)
    for queue, owner in (("support", "w2"), ("sales", "w1")):
        with pytest.raises(QueueError, match="duplicate call"):
            await store.enqueue(queue, "c1", owner, now=T0 + 6000)


async def test_a_new_worker_takes_a_live_caller_over_at_their_place(
    redis_client: aioredis.Redis,
) -> None:
    """The worker of c1 and c2 died; c2 (second in line, offered to ann) is handed to w2:
    the entry is w2's (sets moved, lease renewed to w2's clock), joined time, priority, place
    and the offer stay, and ann's accept is pushed to w2. The same takeover again answers the
    same; a call with no entry or with an agent assigned is refused, and enqueue still refuses
    the same call joining twice."""
    store = await setup(redis_client, ["ann"], login=False)
    await store.enqueue("support", "c1", "w1", 5, now=T0, menu_path="main/sales")
    await store.enqueue("support", "c2", "w1", 5, now=T0 + 1, menu_path="main/sales")
    await store.agent_action("ann", "login", now=T0 + 2)
    assert [o.call_id for o in await store.match("support", now=T0 + 3)] == ["c1"]

    taken = await store.take_over("c1", "w2", lease_ms=15000, now=T0 + 4000)
    assert (taken.queue, taken.state, taken.priority, taken.joined_ms, taken.menu_path,
            taken.previous_owner) == ("support", "offered", 5, T0, "main/sales", "w1")
    assert await store.take_over("c1", "w2", now=T0 + 4001) == taken  # a retry
    prefix = store.prefix
    assert await redis_client.smembers(f"{prefix}worker:w1:calls") == {"c2"}
    assert await redis_client.smembers(f"{prefix}worker:w2:calls") == {"c1"}
    assert await redis_client.zscore(f"{prefix}leases", "c1") == T0 + 4001 + 15000
    # w1's heartbeat no longer renews c1; w2's reports it first in line, still offered
    assert [s.call_id for s in await store.tick("w1", now=T0 + 5000)] == ["c2"]
    [status] = await store.tick("w2", now=T0 + 5000)
    assert (status.call_id, status.state, status.position) == ("c1", "offered", 1)
    assert await store.reap(now=T0 + 5000 + 15000 - 1) == []
    # ann accepts: w2 is told to connect her
    assert (await store.accept("ann", "c1", now=T0 + 6000)).ok
    msg = await store.pop_inbox("w2", 0.01)
    assert msg is not None and (msg["type"], msg["call"]) == ("assigned", "c1")
    assert await store.pop_inbox("w1", 0.01) is None
    with pytest.raises(QueueError) as err:
        await store.take_over("c1", "w3", now=T0 + 6001)
    assert err.value.code == "assigned"
    with pytest.raises(QueueError) as err:
        await store.take_over("nobody", "w2", now=T0 + 6001)
    assert err.value.code == "no_entry"
    with pytest.raises(QueueError, match="duplicate call"):
        await store.enqueue("support", "c2", "w2", now=T0 + 6002)
    stats = await store.stats("support", now=T0 + 6002)
    assert (stats.joined, stats.lost) == (2, 0)


async def test_accepting_an_offer_whose_caller_is_gone_withdraws_it(
    redis_client: aioredis.Redis,
) -> None:
    """The agent still holds an offer for a call whose record is gone: accepting it says so
    (caller_left) and the agent is available again, the offer not counted as missed."""
    store = await setup(redis_client, ["ann"])
    assert await offer_one(store, "c1", T0 + 10_000) == "ann"
    await redis_client.delete(f"{store.prefix}call:c1")
    result = await store.accept("ann", "c1", now=T0 + 11_000)
    assert (result.ok, result.error) == (False, "caller_left")
    ann = await store.agent("ann")
    assert ann is not None and (ann.state, ann.offer, ann.no_answer) == ("available", "", 0)


async def test_a_worker_withdraws_only_a_caller_still_its_own(
    redis_client: aioredis.Redis,
) -> None:
    """A withdrawal (leave ``lost`` with ``owner``) removes the caller only while the entry
    is that worker's: not once it became a callback (nobody's) nor once another worker took
    it over; the worker's own leftover goes, counted lost."""
    store = await setup(redis_client, ["ann"], login=False, callback_key="5")
    t = T0 + 10_000
    for call in ("c1", "c2", "c3"):
        await store.enqueue("support", call, "w1", now=t)
    await store.request_callback("c1", "+15550100", now=t + 1)
    await store.take_over("c2", "w2", now=t + 2)
    for call in ("c1", "c2", "c3"):
        await store.leave(call, "lost", now=t + 3, owner="w1")
    assert await store.queued_call("c1") is not None  # the callback waits
    assert await redis_client.hget(store.keys.call("c2"), "owner") in ("w2", b"w2")
    assert await store.queued_call("c3") is None
    stats = await store.stats("support")
    assert (stats.lost, stats.callbacks_waiting, stats.waiting) == (1, 1, 1)  # c1; c2


async def test_a_dial_failure_repeated_after_its_reply_was_lost_keeps_a_later_assignment(
    redis_client: aioredis.Redis,
) -> None:
    """The worker's dial_failed ran but its reply was lost (Redis stalled), the caller was
    assigned to ann again meanwhile; the worker's repeat (same time stamp) changes nothing."""
    store = await setup(redis_client, ["ann"], kinds={"ann": "sip"}, max_no_answer=0)
    t = T0 + 10_000
    await store.enqueue("support", "c0", "w1", now=t)
    assert [o.mode for o in await store.match("support", now=t)] == ["assigned"]
    assert await store.dial_failed("c0", "ann", now=t + 20_000)
    assert [o.mode for o in await store.match("support", now=t + 20_500)] == ["assigned"]
    assert not await store.dial_failed("c0", "ann", now=t + 20_000)
    (status,) = await store.tick("w1", now=t + 21_000)
    assert status.state == "assigned"
    ann = await store.agent("ann")
    # one failed dial, counted once (a SIP agent's count restarts when a call connects)
    assert ann is not None and (ann.state, ann.call, ann.no_answer) == ("on_call", "c0", 1)


async def test_a_batch_sends_its_scripts_in_one_round_trip_each_result_its_own(
    redis_client: aioredis.Redis,
) -> None:
    """QueueStore.batch: one pipeline; a refusal (QueueError), a Redis error or a bad reply
    is that op's result alone, the others land; scripts Redis lost are loaded again."""
    store = await setup(redis_client, ["ann"], max_length=1)
    await redis_client.set(store.keys.call("c-4"), "not a hash")  # its script fails
    unparsable = Op("leave", ("c-5", "ended", T0), int)  # no entry: nil, not an int
    for name in ("enqueue", "leave", "match"):
        await redis_client.script_load(scripts.source(name))
    pipelines = 0
    pipeline = redis_client.pipeline

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal pipelines
        pipelines += 1
        return pipeline(*args, **kwargs)  # type: ignore[arg-type]

    redis_client.pipeline = counted  # type: ignore[method-assign]
    try:
        first, full, refused, failed, bad, offers = await store.batch([
            store.enqueue_op("support", "c-1", "w1", now=T0),
            store.enqueue_op("support", "c-2", "w1", now=T0 + 1),
            store.enqueue_op("nope", "c-3", "w1", now=T0 + 2),
            store.enqueue_op("support", "c-4", "w1", now=T0 + 2),
            unparsable,
            store.match_op("support", now=T0 + 3),
        ])
        assert pipelines == 1
    finally:
        del redis_client.pipeline
    assert first == EnqueueResult("ok", 1, 1) and full == EnqueueResult("full")
    assert isinstance(refused, QueueError) and refused.code == "no_such_queue"
    assert isinstance(failed, ResponseError) and "WRONGTYPE" in str(failed)
    assert isinstance(bad, TypeError)
    assert [(o.call_id, o.agent) for o in offers] == [("c-1", "ann")]
    assert await store.batch([]) == []
    # Redis restarted (no scripts): loaded, then the ops are sent again from the first.
    await redis_client.script_flush()
    left, gone = await store.batch([store.leave_op("c-1", "abandoned", now=T0 + 4),
                                    store.leave_op("c-9", "abandoned", now=T0 + 4)])
    assert (left, gone) == ("offered", "")  # c-1 was offered to ann; c-9 never joined
    assert not await redis_client.exists(store.keys.call("c-1"))
    status = await store.agent("ann")
    assert status is not None and status.state == "available"


def test_a_batch_runs_on_the_blocking_client_too(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)  # bytes replies, as the gevent worker's
    store = QueueStore(client)
    run(store.sync_queue(QueueConfig("support"), []))
    client.script_flush()
    joined, refused = run(store.batch([store.enqueue_op("support", "c-1", "w1", now=T0),
                                       store.enqueue_op("nope", "c-2", "w1", now=T0)]))
    assert joined == EnqueueResult("ok", 1, 0)
    assert isinstance(refused, QueueError) and refused.code == "no_such_queue"
    client.close()
