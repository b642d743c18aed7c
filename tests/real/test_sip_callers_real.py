"""Real SIP callers through the whole chain: SIPp -> the project's kamailio.cfg -> the engine's
``callyard`` SIP profile / PJSIP endpoint -> the ``callyard`` context -> the worker, with
RTP audio and RFC 2833 DTMF; and a caller who sends no audio at all (silence suppression,
one-way NAT), for whom prompts must still play in real time."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from ast_probe import AsteriskProbe
from edge import Edge, running_edge
from engines import AsteriskConf, FreeswitchConf
from fs_probe import FreeswitchProbe
from scenarios import done
from sipp import run_sipp

from appserver.devkit.sim.caller import SimulatedCall


@pytest.fixture(scope="module")
def edge(real_dir: Path) -> Iterator[Edge]:
    """Kamailio in front of both engines (``*2`` before a number: Asterisk)."""
    with running_edge(real_dir / "kamailio", f"127.0.0.1:{FreeswitchConf(()).sip_port}",
                      f"127.0.0.1:{AsteriskConf().sip_port}") as e:  # fmt: skip
        yield e


def lines(call: SimulatedCall) -> list[str]:
    return [line for line in call.transcript.lines() if not line.startswith("variable")]


ENGINES = {"freeswitch": "8100", "asterisk": "*28100"}  # what the SIP caller dials


@pytest.fixture(params=list(ENGINES))
def target(request: pytest.FixtureRequest) -> tuple[FreeswitchProbe | AsteriskProbe, str]:
    """The real engine (its probe) and the number a caller dials at the edge to reach it."""
    return request.getfixturevalue(request.param), ENGINES[request.param]


async def test_sip_caller_with_rfc2833_digits_walks_the_menu(
    target: tuple[FreeswitchProbe | AsteriskProbe, str], edge: Edge
) -> None:
    probe, number = target
    call = probe.expect_call("8100")
    result = await run_sipp(edge.uri(number), digits=[(2.5, "1"), (2.0, "*")], hold=2.0,
                            timeout=30)  # fmt: skip
    assert result.successful == 1, (result.errors, result.output[-2000:])
    await call.wait_ended(10)
    walk = lines(call)
    assert walk[:6] == [
        "ringing", "answered",
        "prompt_started file:callyard-test/welcome",
        "prompt_finished file:callyard-test/welcome done",
        "prompt_started file:callyard-test/main-menu",
        "prompt_finished file:callyard-test/main-menu done",
    ], walk  # fmt: skip
    assert "dtmf 1" in walk and "dtmf *" in walk, walk
    after_1 = walk[walk.index("dtmf 1"):]
    assert "prompt_started file:callyard-test/sales" in after_1, walk
    after_star = walk[walk.index("dtmf *"):]
    assert "prompt_started file:callyard-test/welcome" in after_star, walk  # back to main


async def test_silent_caller_hears_prompts_in_real_time(
    target: tuple[FreeswitchProbe | AsteriskProbe, str], edge: Edge
) -> None:
    """A caller sending no RTP: without ``rtp-timer-name`` in the callyard profile FreeSWITCH
    played prompts only as fast as caller RTP arrived (a 9.9 s greeting did not finish in
    12 s; a 1.7 s prompt took 6.8 s). Asterisk played to a silent caller fine."""
    probe, number = target
    call = probe.expect_call("8100")
    sipp = asyncio.ensure_future(run_sipp(edge.uri(number), silent=True, hold=6.0, timeout=30))
    started = await call.transcript.wait_for(
        lambda e: e.detail == "file:callyard-test/welcome", 15)
    finished = await call.transcript.wait_for(
        lambda e: e.kind == "prompt_finished" and e.detail.startswith("file:callyard-test/main"),
        15)
    assert finished.at - started.at < 1.2 + 1.0, lines(call)  # two 0.6 s tones, in real time
    assert finished.detail == done("main-menu").detail, lines(call)
    result = await sipp
    assert result.successful == 1, (result.errors, result.output[-2000:])
