"""Reader for the raw FreeSWITCH ESL captures in ``../shared/reference/captures`` (tests only).

Each block is the text between its marker line and the next marker, note or section line
(minus the layout LF added after ``no-trailing-LF`` blocks). ``intact`` tells whether the
text still has the byte count the marker announces: a few captured file paths were edited
after recording, so those blocks no longer match their own ``Content-Length``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "captures"
FILES = (
    "freeswitch-esl-inbound.txt",
    "freeswitch-esl-outbound.txt",
    "freeswitch-esl-outbound-sip.txt",
)
_MARKER = re.compile(rb"^(>>> sent|<<< received) \[([^\]]+)\] t=\+([0-9.]+)s (\d+) bytes(.*)$")
_BOUNDARY = re.compile(rb"^(>>> sent |<<< received |### note|====)")


@dataclass(frozen=True)
class Block:
    direction: str  # "sent" (client -> FreeSWITCH) or "received"
    connection: str
    t: float
    declared: int
    data: bytes

    @property
    def intact(self) -> bool:
        return len(self.data) == self.declared


def read_blocks(name: str) -> list[Block]:
    lines = (CAPTURES / name).read_bytes().split(b"\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _MARKER.match(lines[i])
        i += 1
        if not m:
            continue
        start = i
        while i < len(lines) and not _BOUNDARY.match(lines[i]):
            i += 1
        data = b"\n".join(lines[start:i]) + b"\n"
        if b"no-trailing-LF" in m.group(5):
            data = data[:-1]
        while len(data) > int(m.group(4)) and data.endswith(b"\n\n\n"):  # section spacing
            data = data[:-1]
        direction = "sent" if m.group(1).startswith(b">>>") else "received"
        blocks.append(
            Block(direction, m.group(2).decode(), float(m.group(3)), int(m.group(4)), data)
        )
    return blocks
