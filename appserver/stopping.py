"""SIGINT and SIGTERM for the commands that serve HTTP (``callyard api``, ``dev``, ``sim``).

Both signals mean "stop cleanly". Neither may kill the process half-way: its clean-up must
run (the API's publishers and connections; under ``callyard dev`` also the workers and the
embedded PostgreSQL and Redis, which detach from the process that starts them and would be
left running). uvicorn alone kills it with SIGTERM: it shuts the HTTP server down, then
raises SIGTERM again with the default action (death) before the command's ``finally`` blocks
run. So :class:`StopSignals` only records the request (also while embedded servers start or
stop), and :func:`serve_http` stops the HTTP server on it; the command then stops everything
else in order.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn


class StopSignals:
    """Records SIGINT / SIGTERM instead of dying; call :meth:`install` first thing."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._on_stop: Callable[[], None] | None = None

    @classmethod
    def install(cls) -> StopSignals:
        stop = cls()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop._handle)
        return stop

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self._on_stop is not None:
            self._on_stop()

    def on_stop(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` on a stop request (at once when one came already)."""
        self._on_stop = callback
        if callback is not None and self.requested:
            callback()


async def serve_http(server: uvicorn.Server, stop: StopSignals) -> None:
    """Run a uvicorn server until it fails or a stop is requested (before or during)."""
    stop.on_stop(lambda: setattr(server, "should_exit", True))
    try:
        await server.serve()  # its own signal handling ends by calling ours: no death
    finally:
        stop.on_stop(None)
