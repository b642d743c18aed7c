"""Callbacks on Asterisk: the worker that claimed a callback calls the customer with
``POST /channels`` (``app`` this worker's application, ``appArgs``
``callback,<queue>:<entry>``) on the node the caller came in on (its ARI address as
configured, ``host:port``), or another node's when that one is gone.

Answered, the channel enters the application (``StasisStart``) on whichever worker of the
application gets it: its flow sees the callback and connects the agent. Not answered, the
channel is destroyed with the Q.850 cause (17 busy, 19 no answer, ...), an event the
application receives because it is subscribed to the channels it originates.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import cast

from appserver.asterisk.node import NodeCalls
from appserver.asterisk.port import AriError
from appserver.asterisk.worker import AsteriskWorker
from appserver.queues.model import CallbackDial, QueueConfig
from appserver.queues.runtime import DialOutcome, caller_node_or_any

EVENT_MARGIN = 15.0  # seconds past the ring time before the outcome is given up


class AsteriskCallbackDialer:
    engine = "asterisk"

    def __init__(self, worker: AsteriskWorker) -> None:
        self.worker = worker

    def nodes_up(self) -> list[str]:
        return [node.name for node in self._connected()]

    def _connected(self) -> list[NodeCalls]:
        return [node for link, node in zip(self.worker.links, self.worker.nodes, strict=True)
                if link.connected.is_set()]

    def _node(self, name: str) -> NodeCalls:
        node = caller_node_or_any(self._connected(), lambda node: node.name, name)
        if node is None:
            raise ConnectionError("no Asterisk node is connected")
        return node

    async def dial(self, dial: CallbackDial, config: QueueConfig,
                   variable: str) -> tuple[DialOutcome, str]:
        node = self._node(dial.node)
        channel_id = f"callback-{uuid.uuid4().hex}"
        endpoint = config.callback_asterisk_endpoint.replace("{number}", dial.number)
        waiter: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        node.callback_dials[channel_id] = waiter
        try:
            await node.client.originate(channel_id, endpoint, app_args=f"callback,{variable}",
                                        originator="", caller_id="",
                                        timeout=config.callback_ring_seconds)
            outcome, cause = await asyncio.wait_for(
                waiter, config.callback_ring_seconds + EVENT_MARGIN)
        except AriError as exc:
            return "failed", f"HTTP {exc.status}"
        except TimeoutError:
            return "failed", "no outcome from Asterisk"
        finally:
            node.callback_dials.pop(channel_id, None)
        return cast(DialOutcome, outcome), cause
