"""What the simulators leave behind for a recording: a WAV file of the recorded length.

The engines write the caller's audio; the simulators have none, so they write silence
(8 kHz, 16-bit mono, as the engines' default ``wav``) lasting as long as the recording did,
where the engine would have put the file. Playback, checksums and retention then work on
real files in tests and under ``callyard dev``.
"""

from __future__ import annotations

import wave
from pathlib import Path

RATE = 8000


def write_silence(path: Path, seconds: float) -> None:
    """Write (or replace) ``path`` with ``seconds`` of silence; OSError when it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = max(0, int(seconds * RATE))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(b"\0\0" * frames)
