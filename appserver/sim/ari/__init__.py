"""ARI simulator: a simulated Asterisk speaking ARI over real HTTP and WebSocket."""

from appserver.sim.ari.ami import AmiSimulator
from appserver.sim.ari.call import AriSimulatedCall
from appserver.sim.ari.models import SimEndpoint, SoundCatalog
from appserver.sim.ari.server import AriSimulator

__all__ = ["AmiSimulator", "AriSimulatedCall", "AriSimulator", "SimEndpoint", "SoundCatalog"]
