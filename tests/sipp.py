"""Run the SIPp caller scenarios of tests/sipp/ (Debian package ``sip-tester``) against a
target: ``caller.xml`` (PCMU audio, RFC 2833 DTMF from the Debian pcaps) and
``caller_silent.xml`` (no RTP at all).

    result = await run_sipp("sip:9999@127.0.0.1:5060", digits=[(1.0, "1"), (0.5, "#")])
    assert result.successful == 1 and not result.hung_up_by_far_end
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import re
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sip_ua import G711_FRAMES, uri_host_port, uri_user

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parent / "sipp"
DTMF_PCAPS = Path("/usr/share/sip-tester")
_PCAP_NAMES = {**{d: d for d in "0123456789"}, "*": "star", "#": "pound"}
DIGIT_PLAY = 0.2  # seconds a digit pcap needs (140 ms of events) before the audio resumes


@dataclass
class SippResult:
    returncode: int  # 0: every call succeeded; 1: some failed; others: SIPp errors
    stats: dict[str, str]  # SIPp's final statistics line (e.g. "SuccessfulCall(C)": "1")
    messages: list[tuple[str, str]]  # ("sent" | "received", first line), in order
    errors: str  # SIPp's error log: unexpected messages, retransmission timeouts, ...
    output: str  # what SIPp printed

    @property
    def successful(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", 0))

    @property
    def failed(self) -> int:
        return int(self.stats.get("FailedCall(C)", 0))

    @property
    def hung_up_by_far_end(self) -> bool:
        return any(d == "received" and line.startswith("BYE ") for d, line in self.messages)


def free_udp_port(host: str = "127.0.0.1", even: bool = False) -> int:
    """A UDP port free on ``host`` right now (``even``: for RTP)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        if not even or port % 2 == 0:
            return port


def _dtmf_actions(digits: Sequence[tuple[float, str]]) -> str:
    """Scenario steps playing each digit's pcap ``delay`` seconds after the previous digit
    (after the answer for the first), with the audio stream paused meanwhile."""
    steps = []
    for delay, digit in digits:
        pcap = DTMF_PCAPS / f"dtmf_2833_{_PCAP_NAMES[digit]}.pcap"
        steps.append(
            f'  <pause milliseconds="{round(delay * 1000)}"/>\n'
            f'  <nop><action><exec rtp_stream="pause"/>'
            f'<exec play_pcap_audio="{pcap}"/></action></nop>\n'
            f'  <pause milliseconds="{round(DIGIT_PLAY * 1000)}"/>\n'
            f'  <nop><action><exec rtp_stream="resume"/></action></nop>'
        )
    return "\n".join(steps)


def _messages(log: Path) -> list[tuple[str, str]]:
    """("sent" | "received", first line) of each message in SIPp's -trace_msg log."""
    if not log.exists():
        return []
    found = re.findall(
        r"UDP message (sent|received)[^\n]*\n\s*\n([^\n]+)", log.read_text(errors="replace")
    )
    return [(direction, line.strip()) for direction, line in found]


def _stats(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else {}


async def run_sipp(
    target: str,
    *,
    digits: Sequence[tuple[float, str]] = (),
    silent: bool = False,
    hold: float = 2.0,
    timeout: float = 30.0,
    local_ip: str = "127.0.0.1",
    scenario: Path | None = None,
) -> SippResult:
    """Place one call to ``target`` (``sip:user@host:port``) with SIPp: ``caller.xml`` (audio
    and ``digits``: (seconds after the previous digit or the answer, digit 0-9 * #)) or, with
    ``silent``, ``caller_silent.xml`` (no RTP); hang up ``hold`` seconds after the last digit
    unless the far end hangs up first. SIPp gives up after ``timeout`` seconds."""
    bad = [(d, k) for d, k in digits if k not in _PCAP_NAMES or d < 0]
    if bad:
        raise ValueError(f"digits must be (seconds >= 0, one of 0-9 * #), got {bad}")
    if silent and digits:
        raise ValueError("a silent caller sends no RTP, hence no DTMF")
    scenario = scenario or SCENARIOS / ("caller_silent.xml" if silent else "caller.xml")
    xml = scenario.read_text().replace("<!-- DTMF -->", _dtmf_actions(digits))
    host, port = uri_host_port(target)
    args = [
        "-sf", scenario.name, "-s", uri_user(target) or "service",
        "-i", local_ip, "-p", str(free_udp_port(local_ip)),
        "-mi", local_ip, "-mp", str(free_udp_port(local_ip, even=True)),
        "-m", "1", "-l", "1", "-d", str(round(hold * 1000)), "-aa",
        "-timeout", f"{timeout}s", "-timeout_error",
        f"{host}:{port}",
    ]  # fmt: skip
    files = {scenario.name: xml.encode(), "tone.ulaw": G711_FRAMES[(0, "tone")] * 50}
    return await run_sipp_command(args, files=files, timeout=timeout + 10)


async def run_sipp_command(
    args: Sequence[str], *, files: dict[str, bytes] | None = None, timeout: float = 30.0
) -> SippResult:
    """Run ``sipp`` with ``args`` (plus message, error and statistics traces) in a fresh
    directory holding ``files`` (name -> content); killed after ``timeout`` seconds."""
    if SIPP is None:
        raise RuntimeError("sipp is not installed (Debian package sip-tester)")
    with tempfile.TemporaryDirectory(prefix="sipp-") as tmp:
        run = Path(tmp)
        for name, content in (files or {}).items():
            (run / name).write_bytes(content)
        traces = [
            "-nostdin",
            "-trace_msg", "-message_file", str(run / "messages.log"),
            "-trace_err", "-error_file", str(run / "errors.log"),
            "-trace_stat", "-stf", str(run / "stats.csv"),
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            SIPP,
            *traces,
            *args,
            cwd=run,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(timeout):
                output, _ = await process.communicate()
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        assert process.returncode is not None
        errors = run / "errors.log"
        return SippResult(
            returncode=process.returncode,
            stats=_stats(run / "stats.csv"),
            messages=_messages(run / "messages.log"),
            errors=errors.read_text(errors="replace") if errors.exists() else "",
            output=output.decode(errors="replace"),
        )
