"""Where things may be done, checked on the source: one class per concept whatever the
runtime (the two shells are the only modules that know asyncio or gevent), and queue state
read through the queue store, never by raw keys."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APPSERVER = Path(__file__).resolve().parents[1] / "appserver"
# Written once for both runtimes: they reach asyncio or gevent through appserver.shells only.
SHARED = ["queues/store.py", "queues/runtime.py", "cdr/sink.py", "menus/readers.py",
          "health.py", "worker/services.py", "worker/pipeline.py"]
RUNTIMES = {"asyncio", "gevent", "threading", "redis.asyncio"}
# Redis reads of the keys and streams the stores own.
RAW_READS = {"hget", "hgetall", "hkeys", "smembers", "zrange", "zcard", "xlen",
             "xpending", "lrange", "llen"}
# Read queue and agent state through appserver.queues.store.QueueStore.
THROUGH_STORES = [*sorted(p.relative_to(APPSERVER).as_posix()
                          for p in (APPSERVER / "api").glob("*.py")), "metrics.py"]


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", SHARED)
def test_shared_modules_run_on_either_shell(module: str) -> None:
    runtimes = {name for name in imported(APPSERVER / module)
                if name in RUNTIMES or name.split(".")[0] in {"asyncio", "gevent"}}
    assert runtimes == set(), f"{module} imports {sorted(runtimes)}: use appserver.shells"


@pytest.mark.parametrize("module", THROUGH_STORES)
def test_queue_state_is_read_through_the_store(module: str) -> None:
    path = APPSERVER / module
    names = imported(path)
    assert "appserver.queues.model.KEY_PREFIX" not in names
    assert not {n for n in names if n.startswith("appserver.cdr")}, "the CDR stream: a store"
    tree = ast.parse(path.read_text())
    keys = [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.startswith(("callyard:q:", "{callyard:q}:"))]
    assert keys == [], f"{module} names queue keys itself: {keys}"
    reads = [node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr in RAW_READS]
    assert reads == [], f"{module} reads Redis itself: {reads}"


def test_redis_clients_are_made_in_one_place() -> None:
    """Every process gets its Redis clients from appserver/redisconn.py (so a Sentinel URL
    works everywhere): no other module makes a client or a connection pool."""
    makers = {"from_url", "from_pool", "Redis", "ConnectionPool", "BlockingConnectionPool",
              "Sentinel", "RedisCluster"}
    found = []
    for path in sorted(APPSERVER.rglob("*.py")):
        if path.name == "redisconn.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in makers:
                    found.append(f"{path.relative_to(APPSERVER)}:{node.lineno} {name}")
    assert found == [], found
