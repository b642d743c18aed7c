"""Agent-facing operations for the console and REST API (asyncio).

Each call changes the agent's state atomically in Redis and then matches the queues the
agent serves, so a newly available agent is offered a waiting caller at once.
Refusals raise :class:`~appserver.queues.store.QueueError` with a ``code``
(``no_such_agent``, ``disabled``, ``logged_out``, ``on_call``, ``not_on_call``; for call
control also ``transferring``, ``no_such_queue``, ``bad_target``).
"""

from __future__ import annotations

from appserver.queues.model import AcceptResult, AgentStatus
from appserver.queues.store import QueueStore


class AgentControl:
    def __init__(self, store: QueueStore) -> None:
        self.store = store

    async def _match_for(self, agent: str) -> None:
        status = await self.store.agent(agent)
        if status is not None and status.state == "available":
            for queue in status.queues:
                await self.store.match(queue)

    async def login(self, agent: str) -> str:
        state = await self.store.agent_action(agent, "login")
        await self._match_for(agent)
        return state

    async def logout(self, agent: str) -> str:
        return await self.store.agent_action(agent, "logout")

    async def set_available(self, agent: str) -> str:
        state = await self.store.agent_action(agent, "available")
        await self._match_for(agent)
        return state

    async def set_break(self, agent: str, reason: str = "break") -> str:
        """Break now, or ``pending:break`` when on a call (applies after the call)."""
        return await self.store.agent_action(agent, "break", reason)

    async def accept(self, agent: str, call_id: str) -> AcceptResult:
        """Take an offered call. Exactly one agent wins a ring-all offer; others get
        ``error="taken"`` and are free again."""
        result = await self.store.accept(agent, call_id)
        if not result.ok:
            await self._match_for(agent)
        return result

    async def decline(self, agent: str, call_id: str) -> bool:
        ok = await self.store.decline(agent, call_id, "declined")
        status = await self.store.agent(agent)
        for queue in status.queues if status else ():
            await self.store.match(queue)
        return ok

    async def end_call(self, agent: str) -> str:
        """The agent ended the conversation: wrap-up (or available when the queue has none)."""
        state = await self.store.agent_action(agent, "end_call")
        await self._match_for(agent)
        return state

    async def hold(self, agent: str) -> str:
        """Put the agent's caller on hold (music on hold; neither side hears the other).
        Returns the call id; the owning worker carries it out."""
        return await self.store.call_control(agent, "hold")

    async def unhold(self, agent: str) -> str:
        return await self.store.call_control(agent, "unhold")

    async def transfer(self, agent: str, target: str) -> str:
        """Blind-transfer the agent's caller to ``extension:<number>`` or ``queue:<name>``.
        The worker ends the agent's leg, then the agent goes to wrap-up."""
        return await self.store.call_control(agent, "transfer", target)

    async def record(self, agent: str, operation: str) -> str:
        """Start (a queue recording on demand), pause, resume or stop (on demand) the
        recording of the agent's call; the owning worker carries it out."""
        return await self.store.call_control(agent, "record", operation)

    async def status(self, agent: str) -> AgentStatus | None:
        return await self.store.agent(agent)
