"""A stand-in for the Kamailio edge where Asterisk sends transfers (tests only).

The shipped transfer context dials ``PJSIP/<extension>@kamailio``; in the real-engine tests no
phone is registered, so the edge answers every INVITE as Kamailio's registrar does for an
unknown user, ``404 Not Found``, and OPTIONS (Asterisk's qualify) with ``200 OK``. Without
it Asterisk would wait for SIP timer B (32 s) on every transfer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid

COPIED = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


def reply(request: str, status: str) -> str:
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")
    lines = [f"SIP/2.0 {status}"]
    for line in head[1:]:
        name = line.partition(":")[0].strip().lower()
        if name in COPIED:
            if name in ("to", "t") and ";tag=" not in line:
                line += f";tag={uuid.uuid4().hex[:8]}"
            lines.append(line)
    return "\r\n".join([*lines, "Content-Length: 0", "", ""])


class SipEdge:
    """``with SipEdge() as edge:`` listens on ``edge.port`` (UDP, loopback)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.invites: list[str] = []  # request lines, for tests
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SipEdge:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        self._thread.join(2)

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                data, peer = self.sock.recvfrom(65535)
                text = data.decode("utf-8", "replace")
                method = text.split(" ", 1)[0]
                if method == "INVITE":
                    self.invites.append(text.split("\r\n", 1)[0])
                    self.sock.sendto(reply(text, "404 Not Found").encode(), peer)
                elif method in ("OPTIONS", "BYE", "CANCEL"):
                    self.sock.sendto(reply(text, "200 OK").encode(), peer)
