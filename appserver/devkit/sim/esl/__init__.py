"""Simulated FreeSWITCH speaking the Event Socket protocol (see :mod:`.simulator`)."""

from appserver.devkit.sim.esl.behaviour import Behaviour
from appserver.devkit.sim.esl.call import EslSimCall
from appserver.devkit.sim.esl.simulator import FreeswitchSimulator

__all__ = ["Behaviour", "EslSimCall", "FreeswitchSimulator"]
