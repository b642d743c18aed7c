"""ACD queues shared by every worker through Redis.

* :mod:`~appserver.queues.model` definitions and results; :mod:`~appserver.queues.config`
  PostgreSQL -> Redis publishing with live reload.
* :mod:`~appserver.queues.store` typed calls of the Lua scripts in ``lua/`` (every queue and
  agent transition is one atomic script); :mod:`~appserver.queues.scripts` loads them.
* :mod:`~appserver.queues.caller_flow` what a queued caller hears and does (pure flow);
  :mod:`~appserver.queues.flow` wraps any call flow so ``Enqueue`` runs it.
* :mod:`~appserver.queues.runtime` the per-worker runtime (asyncio and gevent);
  :mod:`~appserver.queues.agent_control` agent operations for the console and API.
"""
