"""Several OS processes hammer shared queues: worker processes enqueue, connect, fail and
abandon callers; agent processes accept, decline, take breaks and log in and out. An
atomic audit script checks the invariants many times during the run; afterwards every
caller has exactly one outcome and nothing is left behind in Redis."""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from collections import Counter
from typing import Any

import redis

from appserver.queues.model import KEY_PREFIX, AgentConfig, Member, QueueConfig
from appserver.queues.store import QueueStore
from appserver.shells.green import run

RUN_SECONDS = 3.0
DRAIN_SECONDS = 2.0
QUEUES = {"sales": "longest_idle", "support": "ring_all", "billing": "round_robin",
          "vip": "skills"}
AGENTS = [f"agent{i}" for i in range(10)]

# Checked atomically inside Redis: one snapshot of every agent and caller.
AUDIT = """
local P = ARGV[1]
local errs = {}
local holder = {}
for _, a in ipairs(redis.call('SMEMBERS', P .. 'agents')) do
  local k = P .. 'agent:' .. a
  local state = redis.call('HGET', k, 'state')
  local offer = redis.call('HGET', k, 'offer')
  local call = redis.call('HGET', k, 'call')
  if state == 'offered' then
    if not offer or redis.call('SISMEMBER', P .. 'call:' .. offer .. ':offered', a) == 0 then
      errs[#errs + 1] = a .. ' offered but not in the offer set of ' .. tostring(offer)
    end
  elseif offer then
    errs[#errs + 1] = a .. ' holds an offer while ' .. state
  end
  if state == 'on_call' then
    if not call then errs[#errs + 1] = a .. ' on_call without a call'
    elseif holder[call] then errs[#errs + 1] = call .. ' held by ' .. holder[call] .. ' and ' .. a
    else holder[call] = a end
    local c = redis.call('HGET', P .. 'call:' .. call, 'agent')
    if c ~= a then errs[#errs + 1] = call .. ' assigned to ' .. tostring(c) .. ' not ' .. a end
  elseif call then
    errs[#errs + 1] = a .. ' holds call ' .. call .. ' while ' .. state
  end
end
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  local strategy = redis.call('HGET', P .. 'queue:' .. q .. ':conf', 'strategy')
  for _, c in ipairs(redis.call('ZRANGE', P .. 'queue:' .. q .. ':waiting', 0, -1)) do
    local ck = P .. 'call:' .. c
    local state = redis.call('HGET', ck, 'state')
    local n = redis.call('SCARD', ck .. ':offered')
    if state == 'offered' and n == 0 then errs[#errs + 1] = c .. ' offered to nobody' end
    if state == 'waiting' and n > 0 then errs[#errs + 1] = c .. ' waiting with offers' end
    if n > 1 and strategy ~= 'ring_all' then
      errs[#errs + 1] = c .. ' offered to ' .. n .. ' agents in ' .. q
    end
    for _, a in ipairs(redis.call('SMEMBERS', ck .. ':offered')) do
      if redis.call('HGET', P .. 'agent:' .. a, 'offer') ~= c then
        errs[#errs + 1] = c .. ' lists ' .. a .. ' who is not ringing for it'
      end
    end
  end
end
return errs
"""


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def worker_process(url: str, worker: str, seed: int, out: Any) -> None:
    rng = random.Random(seed)
    client = _client(url)
    store = QueueStore(client)
    audit = client.register_script(AUDIT)
    queues = list(QUEUES)
    waiting: set[str] = set()
    talking: dict[str, tuple[float, str]] = {}  # call -> (ends at, agent)
    outcomes: dict[str, str] = {}
    answered_by: Counter[str] = Counter()
    errors: list[str] = []
    audits = 0
    n = 0
    start = time.monotonic()
    last_tick = 0.0
    while True:
        now = time.monotonic()
        phase_run = now - start < RUN_SECONDS
        if not phase_run and now - start >= RUN_SECONDS + DRAIN_SECONDS:
            break
        r = rng.random()
        if phase_run and r < 0.2:
            n += 1
            call = f"{worker}-{n}"
            res = run(store.enqueue(rng.choice(queues), call, worker, rng.choice([0, 0, 0, 5]),
                                    skills={"french": 2} if rng.random() < 0.2 else None,
                                    lease_ms=5000))
            if res.status == "ok":
                waiting.add(call)
            else:
                outcomes[call] = "overflow"
        elif phase_run and r < 0.25 and waiting:
            call = rng.choice(sorted(waiting))
            outcome = rng.choice(["abandoned", "left", "timeout"])
            run(store.leave(call, outcome))
            waiting.discard(call)
            outcomes[call] = outcome
        run(store.match(rng.choice(queues)))
        while (raw := client.lpop(store.keys.inbox(worker))) is not None:
            msg = json.loads(str(raw))
            call = msg["call"]
            if call not in waiting:
                continue  # the caller already left; the Lua side freed the agent
            if rng.random() < 0.85:
                waiting.discard(call)
                talking[call] = (now + rng.uniform(0.01, 0.2), msg["agent"])
            else:
                run(store.dial_failed(call, msg["agent"]))
        for call, (ends, agent) in list(talking.items()):
            if ends <= now:
                if not run(store.finish(call)):
                    errors.append(f"finish of {call} refused")
                del talking[call]
                outcomes[call] = "answered"
                answered_by[agent] += 1
        if now - last_tick > 0.1:
            run(store.tick(worker, lease_ms=5000))
            last_tick = now
        errors.extend(audit(args=[KEY_PREFIX]))
        audits += 1
    for call in sorted(waiting):  # end of the run: the rest hang up
        run(store.leave(call, "abandoned"))
        outcomes[call] = "abandoned"
    for call, (_, agent) in talking.items():
        run(store.finish(call))
        outcomes[call] = "answered"
        answered_by[agent] += 1
    out.put({"worker": worker, "created": n, "outcomes": outcomes,
             "answered_by": dict(answered_by), "errors": errors, "audits": audits})


def agent_process(url: str, agents: list[str], seed: int, out: Any) -> None:
    rng = random.Random(seed)
    client = _client(url)
    store = QueueStore(client)
    audit = client.register_script(AUDIT)
    errors: list[str] = []
    accepted = 0
    start = time.monotonic()
    while time.monotonic() - start < RUN_SECONDS + DRAIN_SECONDS - 0.3:
        draining = time.monotonic() - start > RUN_SECONDS
        a = rng.choice(agents)
        st = run(store.agent(a))
        assert st is not None
        r = rng.random()
        try:
            if st.state == "offered":
                if draining or r < 0.75:
                    accepted += run(store.accept(a, st.offer)).ok
                elif r < 0.9:
                    run(store.decline(a, st.offer))
            elif st.state == "logged_out" and (draining or r < 0.5):
                run(store.agent_action(a, "login"))
            elif st.state in ("break", "away", "wrap_up") and (draining or r < 0.3):
                run(store.agent_action(a, "available"))
            elif st.state == "available" and not draining and r < 0.03:
                run(store.agent_action(a, rng.choice(["break", "logout"]), "random"))
        except Exception as exc:  # a refused transition is fine; anything else is recorded
            if getattr(exc, "code", "") not in ("on_call", "logged_out", "not_on_call"):
                errors.append(repr(exc))
        errors.extend(audit(args=[KEY_PREFIX]))
    out.put({"agents": agents, "accepted": accepted, "errors": errors})


def test_many_processes_keep_the_invariants(redis_url: str) -> None:
    client = _client(redis_url)
    store = QueueStore(client)
    for i, a in enumerate(AGENTS):
        run(store.sync_agent(AgentConfig(a, kind="sip" if i % 3 == 0 else "browser",
                                         extension=f"20{i:02d}" if i % 3 == 0 else "",
                                         skills={"french": i % 4})))
    for qi, (q, strategy) in enumerate(QUEUES.items()):
        members = [Member(a, tier=1 + (i + qi) % 2) for i, a in enumerate(AGENTS)
                   if (i + qi) % 3 != 0]
        cfg = QueueConfig(q, strategy=strategy, max_length=25, ring_timeout=1,  # type: ignore[arg-type]
                          wrapup_seconds=0, max_no_answer=3, tier_widen_seconds=1)
        run(store.sync_queue(cfg, members))
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker_process, args=(redis_url, f"w{i}", i, out))
             for i in range(3)]
    procs += [ctx.Process(target=agent_process, args=(redis_url, AGENTS[i::2], 100 + i, out))
              for i in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    workers = [r for r in results if "worker" in r]
    errors = [e for r in results for e in r["errors"]]
    assert errors == []
    assert sum(r["audits"] for r in workers) > 300
    outcomes: Counter[str] = Counter()
    answered_by: Counter[str] = Counter()
    for r in workers:
        # Every caller created ended exactly once: answered, overflowed or abandoned/left.
        assert len(r["outcomes"]) == r["created"]
        outcomes.update(r["outcomes"].values())
        answered_by.update(r["answered_by"])
    assert outcomes["answered"] > 20 and outcomes["abandoned"] > 0
    # Redis agrees with what the workers saw, and nothing is left behind.
    stats = [run(store.stats(q)) for q in QUEUES]
    assert sum(s.answered for s in stats) == outcomes["answered"]
    assert sum(s.abandoned for s in stats) == outcomes["abandoned"]
    assert sum(s.exited for s in stats) == outcomes["left"]
    assert sum(s.overflowed for s in stats) == outcomes["overflow"] + outcomes["timeout"]
    assert sum(s.waiting for s in stats) == 0
    assert client.keys(f"{KEY_PREFIX}call:*") == []
    assert client.zcard(f"{KEY_PREFIX}leases") == 0 and client.zcard(f"{KEY_PREFIX}offers") == 0
    for a in AGENTS:
        st = run(store.agent(a))
        assert st is not None and st.state not in ("offered", "on_call")
        assert st.calls_handled == answered_by[a]
    client.close()
