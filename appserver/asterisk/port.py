"""What a call needs from ARI: the port the driver (:mod:`appserver.asterisk.driver`) talks
to, implemented by :class:`appserver.asterisk.ari.AriClient`.

Every operation either succeeds, raises :class:`AriError` (Asterisk answered with an error
status: 404 the channel, playback or bridge is gone ...) or raises ``OSError`` (no answer).
"""

from __future__ import annotations

from typing import Any, Protocol


class AriError(Exception):
    """ARI answered a request with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"ARI {status}: {text}")
        self.status = status
        self.text = text


class AriPort(Protocol):
    async def answer(self, channel_id: str) -> None: ...

    async def hangup(self, channel_id: str, reason: str = "") -> None: ...

    async def play(self, channel_id: str, playback_id: str, media: list[str],
                   lang: str = "") -> None: ...

    async def stop_playback(self, playback_id: str) -> None: ...

    async def record(self, channel_id: str, name: str, max_seconds: int, beep: bool,
                     terminate_on: str) -> None: ...

    async def start_moh(self, channel_id: str, moh_class: str = "") -> None: ...

    async def stop_moh(self, channel_id: str) -> None: ...

    async def set_variable(self, channel_id: str, name: str, value: str) -> None: ...

    async def continue_in_dialplan(self, channel_id: str, context: str,
                                   extension: str) -> None: ...

    async def originate(self, leg_id: str, endpoint: str, *, app_args: str, originator: str,
                        caller_id: str, timeout: int) -> None: ...

    async def snoop(self, channel_id: str, snoop_id: str, *, spy: str, whisper: str,
                    app_args: str) -> None: ...

    async def create_bridge(self, bridge_id: str, name: str) -> None: ...

    async def add_to_bridge(self, bridge_id: str, channel_ids: list[str]) -> None: ...

    async def remove_from_bridge(self, bridge_id: str, channel_id: str) -> None: ...

    async def destroy_bridge(self, bridge_id: str) -> None: ...

    async def record_bridge(self, bridge_id: str, name: str) -> None: ...

    async def live_recording(self, name: str, operation: str) -> None: ...

    async def channel(self, channel_id: str) -> dict[str, Any]: ...

    async def playback(self, playback_id: str) -> dict[str, Any]: ...
