"""The test SIP user agent (tests/sip_ua.py) and the SIPp helper (tests/sipp.py).

UA to UA (both roles, every endpoint policy, media, DTMF, codecs), then against SIPp, an
independent implementation (SIPp as UAS, as UAC, checking our digest credentials), and the
SIPp caller scenarios of tests/sipp/ against our endpoint. Through the real Kamailio edge:
tests/test_kamailio_edge.py.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import time
from collections.abc import AsyncIterator

import pytest
from sip_ua import (
    LIVEKIT_CODECS,
    Audio,
    Call,
    Sdp,
    SipCaller,
    SipEndpoint,
    SipMessage,
    build,
    new_branch,
    parse_sip,
    tag_of,
    wait_until,
)
from sipp import SCENARIOS, SIPP, free_udp_port, run_sipp, run_sipp_command

needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp not installed (Debian sip-tester)")
# SIPp replays pcaps (the DTMF digits) through a raw socket
needs_pcap_play = pytest.mark.skipif(
    SIPP is None or os.geteuid() != 0, reason="SIPp pcap play needs sipp and root (raw sockets)"
)


@pytest.fixture
async def endpoint() -> AsyncIterator[SipEndpoint]:
    async with SipEndpoint(audio="tone") as ep:
        yield ep


@pytest.fixture
async def phone() -> AsyncIterator[SipCaller]:
    async with SipCaller() as caller:
        yield caller


def address(ep: SipEndpoint, user: str = "9999") -> str:
    return f"sip:{user}@{ep.host}:{ep.port}"


async def answered(
    phone: SipCaller, ep: SipEndpoint, audio: Audio | None = "tone"
) -> tuple[Call, Call]:
    """A call from ``phone`` answered by ``ep``: (the caller's side, the endpoint's side)."""
    call = await phone.dial(address(ep), audio=audio)
    assert await call.wait_final(5) == 200
    return call, await ep.wait_invite(1)


# ----------------------------------------------------------------------------- UA to UA


async def test_an_answered_call_is_recorded_and_carries_audio_both_ways(
    endpoint: SipEndpoint, phone: SipCaller
) -> None:
    call = await phone.dial(address(endpoint), headers=[("X-Callyard-Test", "yes")])
    assert await call.wait_final(5) == 200
    far = await endpoint.wait_invite(1)

    invite = far.invite
    assert invite is not None and endpoint.invites == [invite]
    assert invite.request_uri == address(endpoint) and invite.user == "9999"
    assert invite.call_id == call.call_id
    assert tag_of(invite.from_header) == call.local_tag
    assert invite.to_header == f"<{address(endpoint)}>"
    assert invite.header("X-Callyard-Test") == "yes"
    assert invite.offered_codecs == ["PCMU", "telephone-event"]
    assert invite.chosen_codec == "PCMU"
    assert call.statuses == [100, 200] and far.statuses == [200]
    assert [m.method for m in far.requests] == ["ACK"]

    await asyncio.sleep(1.0)
    for side in (call.rtp, far.rtp):  # a 400 Hz tone, 20 ms PCMU packets
        rate = side.rate(0.5)
        assert 40 <= rate.packets <= 60, rate
        assert rate.bytes == 160 * rate.packets and rate.audible == rate.packets
        assert side.codec == "PCMU" and set(side.rx_payload_types) == {0}


@pytest.mark.parametrize("hangs_up", ["caller", "endpoint"])
async def test_either_side_hangs_up_and_the_media_stops(
    endpoint: SipEndpoint, phone: SipCaller, hangs_up: str
) -> None:
    call, far = await answered(phone, endpoint)
    ending, other = (call, far) if hangs_up == "caller" else (far, call)
    assert await ending.bye() == 200
    assert await other.wait_ended(2) == "remote_bye"
    assert ending.end_reason == "local_bye"

    bye = other.requests[-1]
    assert bye.method == "BYE" and bye.cseq[1] == "BYE"
    assert tag_of(bye.get("From") or "") == ending.local_tag  # its own side of the dialog
    assert tag_of(bye.get("To") or "") == other.local_tag
    received = other.rtp.rx_packets
    await asyncio.sleep(0.2)
    assert other.rtp.rx_packets == received
    with pytest.raises(RuntimeError):
        await ending.bye()


@pytest.mark.parametrize(("policy", "status"), [("busy", 486), ("reject", 503)])
async def test_busy_and_reject(
    endpoint: SipEndpoint, phone: SipCaller, policy: str, status: int
) -> None:
    endpoint.policy = policy  # type: ignore[assignment]
    call = await phone.dial(address(endpoint))
    assert await call.wait_final(5) == status
    far = await endpoint.wait_invite(1)
    assert call.end_reason == far.end_reason == "rejected"
    await wait_until(lambda: [m.method for m in far.requests] == ["ACK"], 2)
    assert len(endpoint.invites) == 1 and endpoint.invites[0].chosen_codec is None


async def test_no_answer_rings_until_cancelled(endpoint: SipEndpoint, phone: SipCaller) -> None:
    endpoint.policy = "no_answer"
    call = await phone.dial(address(endpoint))
    await call.wait_status(180, 2)
    await asyncio.sleep(0.5)
    assert call.status is None  # still ringing
    far = await endpoint.wait_invite(1)

    assert await call.cancel() == 487
    assert call.end_reason == "cancelled"
    assert await far.wait_ended(2) == "cancelled"
    assert far.statuses == [180, 487]
    await wait_until(lambda: [m.method for m in far.requests] == ["CANCEL", "ACK"], 2)
    assert far.rtp.rx_packets == 0 and call.rtp.rx_packets == 0


async def test_ring_delay_then_answer_and_a_policy_per_invite(
    endpoint: SipEndpoint, phone: SipCaller
) -> None:
    endpoint.ring_delay = 0.3
    endpoint.policy = lambda invite: "busy" if invite.user == "2000" else "answer"
    started = time.monotonic()
    call = await phone.dial(address(endpoint))
    assert await call.wait_final(5) == 200
    assert time.monotonic() - started >= 0.3
    assert call.statuses == [100, 180, 200]

    busy = await phone.dial(address(endpoint, "2000"))
    assert await busy.wait_final(5) == 486


async def test_dtmf_goes_as_rfc_4733_events_and_is_decoded(
    endpoint: SipEndpoint, phone: SipCaller
) -> None:
    call, far = await answered(phone, endpoint)
    packets: list[bytes] = []
    receive = far.rtp.datagram_received

    def capture(data: bytes, addr: tuple[str, int]) -> None:
        packets.append(data)
        receive(data, addr)

    far.rtp.datagram_received = capture  # type: ignore[method-assign]
    await call.send_dtmf("7", duration=0.1, pause=0.1)

    events = [p for p in packets if p[1] & 0x7F == 101]
    assert len(events) == 5 + 3  # 100 ms: 5 packets, then the end packet three times
    fields = [(p[1] >> 7, struct.unpack("!I", p[4:8])[0], p[12], p[13] >> 7) for p in events]
    assert [marker for marker, *_ in fields] == [1] + [0] * 7
    assert len({timestamp for _, timestamp, *_ in fields}) == 1
    assert {event for *_, event, _ in fields} == {7}
    assert [end for *_, end in fields] == [0] * 5 + [1] * 3
    durations = [struct.unpack("!H", p[14:16])[0] for p in events]
    assert durations == [160, 320, 480, 640, 800, 800, 800, 800]
    sequence = [struct.unpack("!H", p[2:4])[0] for p in packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequence))
    assert far.rtp.digits == "7"

    await call.send_dtmf("0123456789*#ABCD55", duration=0.04, pause=0.04)
    assert far.rtp.digits == "70123456789*#ABCD55"
    await far.send_dtmf("9")  # and the other way
    await wait_until(lambda: call.rtp.digits == "9", 1)
    with pytest.raises(ValueError):
        await call.send_dtmf("12x")


async def test_a_silent_caller_sends_no_rtp(endpoint: SipEndpoint, phone: SipCaller) -> None:
    call, far = await answered(phone, endpoint, audio=None)
    await asyncio.sleep(0.6)
    assert far.rtp.rx_packets == 0 and call.rtp.tx_packets == 0
    assert call.rtp.rate(0.5).audible >= 20  # the endpoint still plays to it
    await call.send_dtmf("3")  # key presses only
    assert far.rtp.digits == "3" and set(far.rtp.rx_payload_types) == {101}


@pytest.mark.parametrize(
    ("offer", "accept", "chosen"),
    [
        (("PCMA", "PCMU"), LIVEKIT_CODECS, "PCMA"),  # the offer's order wins
        (("G729", "G722"), LIVEKIT_CODECS, "G722"),
        (("opus",), LIVEKIT_CODECS, "opus"),
        (("G729", "GSM"), LIVEKIT_CODECS, None),
        (("PCMU",), ("PCMA",), None),
    ],
)
async def test_codec_negotiation(
    endpoint: SipEndpoint,
    phone: SipCaller,
    offer: tuple[str, ...],
    accept: tuple[str, ...],
    chosen: str | None,
) -> None:
    endpoint.accept = accept
    call = await phone.dial(address(endpoint), codecs=offer)
    status = await call.wait_final(5)
    far = await endpoint.wait_invite(1)
    assert far.invite is not None
    assert far.invite.offered_codecs == [*offer, "telephone-event"]
    assert far.invite.chosen_codec == chosen
    if chosen is None:
        assert status == 488 and call.end_reason == "rejected"
        return
    assert status == 200
    assert call.rtp.codec == far.rtp.codec == chosen
    assert call.remote_sdp is not None and call.remote_sdp.codecs == [chosen, "telephone-event"]
    if chosen == "PCMA":  # G.711 both ways: the tone is heard through A-law too
        await wait_until(lambda: far.rtp.rx_audible >= 10 and call.rtp.rx_audible >= 10, 2)


def test_an_offer_names_static_payload_types_without_rtpmap() -> None:
    offer = Sdp.parse(
        "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18 8 0 13 101\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    )
    assert offer is not None and (offer.ip, offer.port) == ("10.0.0.1", 4000)
    assert offer.codecs == ["G729", "PCMA", "PCMU", "CN", "telephone-event"]
    answer = offer.answer(LIVEKIT_CODECS, "127.0.0.1", 5000)
    assert answer is not None
    assert answer.rtpmap == {8: "PCMA/8000", 101: "telephone-event/8000"}
    assert answer.fmtp == {101: "0-16"}
    assert Sdp.parse(answer.render()) == answer


async def test_requests_inside_the_dialog(endpoint: SipEndpoint, phone: SipCaller) -> None:
    call, far = await answered(phone, endpoint)
    assert (await call.request("OPTIONS")).status == 200
    info = await call.request("INFO", ("Content-Type", "application/dtmf"), body="5")
    assert info.status == 200
    assert call.local_sdp is not None
    reinvite = await call.request(
        "INVITE", ("Content-Type", "application/sdp"), body=call.local_sdp.render()
    )
    assert reinvite.status == 200 and reinvite.body == (far.local_sdp and far.local_sdp.render())
    await wait_until(lambda: len(far.requests) == 5, 2)
    assert [m.method for m in far.requests] == ["ACK", "OPTIONS", "INFO", "INVITE", "ACK"]
    assert [m.cseq[0] for m in far.requests[1:]] == [2, 3, 4, 4]
    assert far.requests[2].body == "5"
    assert call.end_reason is None and far.end_reason is None


async def test_a_retransmitted_invite_is_answered_again_not_taken_for_a_new_call(
    endpoint: SipEndpoint,
) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.settimeout(2)
    here = f"127.0.0.1:{raw.getsockname()[1]}"
    invite = build(
        f"INVITE {address(endpoint)} SIP/2.0",
        [
            ("Via", f"SIP/2.0/UDP {here};branch={new_branch()}"),
            ("From", f"<sip:raw@{here}>;tag=r1"),
            ("To", f"<{address(endpoint)}>"),
            ("Call-ID", "retransmitted"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:raw@{here}>"),
        ],
    )
    try:
        responses: list[SipMessage] = []
        for _ in range(2):
            raw.sendto(invite, (endpoint.host, endpoint.port))
            await asyncio.sleep(0.1)
        while len(responses) < 4:  # 100 and 200 (late offer), twice
            data = await asyncio.get_running_loop().run_in_executor(None, raw.recv, 4096)
            msg = parse_sip(data)
            assert msg is not None
            responses.append(msg)
    finally:
        raw.close()
    assert len(endpoint.invites) == 1
    finals = [r for r in responses if r.status == 200]
    assert len({tag_of(r.get("To") or "") for r in finals}) == 1  # the same answer
    assert "m=audio" in finals[0].body  # no offer came: ours is in the 200


# ----------------------------------------------------------------------------- against SIPp


@needs_sipp
async def test_our_caller_calls_sipp_as_uas(phone: SipCaller) -> None:
    port = free_udp_port()
    uas = asyncio.create_task(
        run_sipp_command(["-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-m", "1"])
    )
    await asyncio.sleep(0.2)  # INVITE retransmissions cover a slow start
    call = await phone.dial(f"sip:service@127.0.0.1:{port}")
    assert await call.wait_final(5) == 200
    assert call.statuses[-2:] == [180, 200]
    assert call.rtp.codec == "PCMU" and call.rtp.remote is not None
    await asyncio.sleep(0.2)
    assert await call.bye() == 200

    result = await uas
    assert result.returncode == 0 and result.successful == 1, result.output
    received = [line.split()[0] for direction, line in result.messages if direction == "received"]
    assert received == ["INVITE", "ACK", "BYE"]


@needs_sipp
@pytest.mark.parametrize("qop", ["", ', qop="auth"'])
@pytest.mark.parametrize(("password", "status"), [("s3cret", 200), ("wrong", 403)])
async def test_digest_credentials_are_checked_by_sipp(
    phone: SipCaller, qop: str, password: str, status: int
) -> None:
    port = free_udp_port()
    uas = asyncio.create_task(
        run_sipp_command(
            [
                *("-sf", str(SCENARIOS / "uas_digest.xml"), "-key", "qop", qop),
                *("-set", "password", "s3cret", "-i", "127.0.0.1", "-p", str(port), "-m", "1"),
            ]
        )
    )
    await asyncio.sleep(0.2)
    call = await phone.dial(f"sip:9999@127.0.0.1:{port}", auth=("caller", password))
    assert await call.wait_final(5) == status
    assert call.statuses[0] == 401
    invites = [m for m in phone.trace if m.startswith("-> INVITE")]
    assert len(invites) == 2  # challenged once, retried once with credentials
    if status == 200:
        assert await call.bye() == 200
    result = await uas
    assert result.returncode == 0 and result.successful == 1, result.errors


@needs_sipp
async def test_sipp_as_uac_calls_our_endpoint(endpoint: SipEndpoint) -> None:
    result = await run_sipp_command(
        [
            *("-sn", "uac", "-s", "4321", "-i", "127.0.0.1", "-m", "1", "-d", "300"),
            f"{endpoint.host}:{endpoint.port}",
        ]
    )
    assert result.returncode == 0 and result.successful == 1, result.errors
    call = await endpoint.wait_invite(1)
    assert call.invite is not None and call.invite.user == "4321"
    assert call.invite.offered_codecs == ["PCMU"] and call.invite.chosen_codec == "PCMU"
    assert call.end_reason == "remote_bye"
    assert [m.method for m in call.requests] == ["ACK", "BYE"]


# ----------------------------------------------------------------------------- SIPp callers


@needs_pcap_play
async def test_sipp_caller_streams_audio_and_sends_dtmf_digits(endpoint: SipEndpoint) -> None:
    digits = [(0.3, "1"), (0.3, "1"), (0.2, "#"), (0.0, "*"), (0.2, "0")]
    result = await run_sipp(address(endpoint), digits=digits, hold=0.5)
    assert result.returncode == 0 and result.successful == 1, result.errors
    assert not result.hung_up_by_far_end
    call = await endpoint.wait_invite(1)
    assert call.invite is not None
    assert call.invite.offered_codecs == ["PCMU", "telephone-event"]
    assert call.end_reason == "remote_bye"
    assert call.rtp.digits == "11#*0"
    assert set(call.rtp.rx_payload_types) == {0, 101}
    assert call.rtp.rx_audible >= 50  # over a second of the tone


@needs_sipp
async def test_silent_sipp_caller_sends_no_rtp(endpoint: SipEndpoint) -> None:
    result = await run_sipp(address(endpoint), silent=True, hold=0.5)
    assert result.returncode == 0 and result.successful == 1, result.errors
    call = await endpoint.wait_invite(1)
    assert call.end_reason == "remote_bye"
    assert call.rtp.rx_packets == 0 and call.rtp.tx_packets > 0


@needs_sipp
async def test_sipp_caller_answers_the_far_ends_bye(endpoint: SipEndpoint) -> None:
    caller = asyncio.create_task(run_sipp(address(endpoint), hold=30))
    call = await endpoint.wait_invite(15)  # sipp starts slowly on a busy machine
    await wait_until(lambda: call.rtp.rx_packets > 10, 2)
    assert await call.bye() == 200
    result = await asyncio.wait_for(caller, 10)
    assert result.returncode == 0 and result.successful == 1, result.errors
    assert result.hung_up_by_far_end


async def test_run_sipp_refuses_bad_digits() -> None:
    with pytest.raises(ValueError, match="digits"):
        await run_sipp("sip:1@127.0.0.1:9", digits=[(0.5, "A")])
    with pytest.raises(ValueError, match="digits"):
        await run_sipp("sip:1@127.0.0.1:9", digits=[(-1, "1")])
    with pytest.raises(ValueError, match="silent"):
        await run_sipp("sip:1@127.0.0.1:9", digits=[(0.5, "1")], silent=True)
