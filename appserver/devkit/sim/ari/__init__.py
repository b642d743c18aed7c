"""ARI simulator: a simulated Asterisk speaking ARI over real HTTP and WebSocket."""

from appserver.devkit.sim.ari.call import AriSimulatedCall
from appserver.devkit.sim.ari.models import SimEndpoint, SoundCatalog
from appserver.devkit.sim.ari.server import AriSimulator

__all__ = ["AriSimulatedCall", "AriSimulator", "SimEndpoint", "SoundCatalog"]
