"""Callbacks on FreeSWITCH: the worker that claimed a callback calls the customer with
``bgapi originate`` on the inbound connection to the node the caller came in on (named by
its host name, ``FreeSWITCH-Hostname``), or another node's when that one is gone.

``originate {callyard_callback=<queue>:<entry>,originate_timeout=<ring>,...}<endpoint>
<destination>``: the job's reply is ``+OK <uuid>`` once the customer answered (their leg then
runs the dialplan at ``destination``, e.g. ``9999 XML callyard``, whose ``socket`` hands it
to a worker: its flow sees the variable and connects the agent), or ``-ERR <cause>``
(``USER_BUSY``, ``NO_ANSWER``, ...) when they did not.
"""

from __future__ import annotations

import uuid

from appserver.freeswitch.driver import _DIAL_OUTCOMES, refuse_unsafe_token
from appserver.freeswitch.inbound import NodeLink, NodeManager, NodeUnavailable
from appserver.queues.model import CallbackDial, QueueConfig
from appserver.queues.runtime import DialOutcome, caller_node_or_any

JOB_MARGIN = 15.0  # seconds past the ring time before the job is given up


def outcome_of(reply: str) -> tuple[DialOutcome, str]:
    """``+OK <uuid>`` -> answered; ``-ERR USER_BUSY`` -> busy, ... (anything else failed)."""
    reply = reply.strip()
    if reply.startswith("+OK"):
        return "answered", "SUCCESS"
    cause = reply.removeprefix("-ERR").strip() or "UNKNOWN"
    outcome = _DIAL_OUTCOMES.get(cause, "failed")
    return outcome if outcome != "answered" else "failed", cause  # type: ignore[return-value]


class FreeswitchCallbackDialer:
    engine = "freeswitch"

    def __init__(self, nodes: NodeManager, destination: str) -> None:
        self.nodes = nodes
        self.destination = destination  # "<extension> XML <context>"

    def nodes_up(self) -> list[str]:
        return [link.hostname for link in self._connected()]

    def _connected(self) -> list[NodeLink]:
        return [link for link in self.nodes.links.values() if link.connected.is_set()]

    def _link(self, node: str) -> NodeLink:
        link = caller_node_or_any(self._connected(), lambda link: link.hostname, node)
        if link is None:
            raise NodeUnavailable("no FreeSWITCH node is connected")
        return link

    def command(self, dial: CallbackDial, config: QueueConfig, variable: str) -> str:
        endpoint = config.callback_freeswitch_endpoint.replace("{number}", dial.number)
        variables = {
            "origination_uuid": str(uuid.uuid4()),
            "callyard_callback": refuse_unsafe_token(variable),
            "originate_timeout": str(config.callback_ring_seconds),
            "ignore_early_media": "true",
        }
        pairs = ",".join(f"{k}={v}" for k, v in variables.items())
        return f"originate {{{pairs}}}{refuse_unsafe_token(endpoint)} {self.destination}"

    async def dial(self, dial: CallbackDial, config: QueueConfig,
                   variable: str) -> tuple[DialOutcome, str]:
        link = self._link(dial.node)
        reply = link.bgapi(self.command(dial, config, variable),
                           timeout=config.callback_ring_seconds + JOB_MARGIN)
        return outcome_of(reply)
