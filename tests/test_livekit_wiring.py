"""LiveKit wiring against the Twirp stand-in: rooms per call, scoped tokens, the SIP
address engines dial, and `callyard livekit-setup` applying the trunk and dispatch rule."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import jwt
import pytest
from api_support import LK_KEY, LK_SECRET, livekit_stand_in

from appserver.agents.rooms import ROOMS_TO_DELETE, CallRooms, LiveKitUnavailable
from appserver.agents.setup_command import RULE_FILE, TRUNK_FILE, apply
from appserver.agents.sip import room_name, sip_address
from appserver.settings import SettingsError, load_settings
from livekit import api

LIVEKIT_DIR = Path(__file__).resolve().parents[1] / "livekit"


def test_room_and_sip_address_of_a_call() -> None:
    assert room_name("1700000000.42") == "call-1700000000.42"
    assert room_name("a b/c") == "call-a_b_c"
    assert sip_address("abc", "sip:livekit-sip:5060") == "sip:call-abc@livekit-sip:5060"
    assert sip_address("abc", "sips:lk.example.com;transport=tls") == "sips:call-abc@lk.example.com"
    for bad in ("", "x" * 201):
        with pytest.raises(ValueError):
            room_name(bad)
    with pytest.raises(SettingsError):
        load_settings(livekit_sip_uri="http://x")
    with pytest.raises(SettingsError):
        load_settings(livekit_sip_uri="sip:user@host")


async def test_rooms_created_and_deleted_through_the_api(redis_client) -> None:
    async with livekit_stand_in() as lk:
        rooms = CallRooms(redis_client, lk.url, LK_KEY, LK_SECRET)
        try:
            assert await rooms.create("c-1") == "call-c-1"
            created = lk.calls[-1][1]
            assert created.name == "call-c-1" and created.empty_timeout == 60
            assert json.loads(created.metadata) == {"call_id": "c-1"}
            await rooms.enter("alice", "call-c-1")
            assert await rooms.room_of("alice") == "call-c-1"
            assert await rooms.close_for("alice") == "call-c-1"
            assert lk.rooms == {}
            assert await rooms.close_for("alice") is None  # idempotent
            # A room already gone on the server is not an error.
            await rooms.enter("bob", await rooms.create("c-2"))
            lk.rooms.clear()
            assert await rooms.close_for("bob") == "call-c-2"
            assert await redis_client.zcard(ROOMS_TO_DELETE) == 0
        finally:
            await rooms.close()
        wrong = CallRooms(redis_client, lk.url, LK_KEY, "not-the-secret-at-all-0123456789abcdef")
        try:
            with pytest.raises(LiveKitUnavailable, match="unauthenticated"):
                await wrong.create("c-3")
        finally:
            await wrong.close()


async def test_a_room_deletion_livekit_did_not_take_is_retried_by_any_api_process(
    redis_client,
) -> None:
    """LiveKit down when a call ends: the room stays queued in Redis, not lost with the
    process that tried; another API process deletes it once LiveKit is back (after a
    backoff), and nobody deletes it twice."""
    async with livekit_stand_in() as lk:
        one = CallRooms(redis_client, lk.url, LK_KEY, LK_SECRET)
        other = CallRooms(redis_client, lk.url, LK_KEY, LK_SECRET)
        try:
            await one.enter("alice", await one.create("c-1"))
            await lk.stop()
            assert await one.close_for("alice") == "call-c-1"
            assert await one.room_of("alice") is None
            assert await redis_client.zrange(ROOMS_TO_DELETE, 0, -1) == ["call-c-1"]
            assert await other.delete_due() == 0  # backing off: not due yet
            await lk.start()
            await asyncio.sleep(1.1)
            assert await other.delete_due() == 1
            assert lk.rooms == {} and await redis_client.zcard(ROOMS_TO_DELETE) == 0
            assert await one.delete_due() == 0
            assert [m for m, _ in lk.calls].count("DeleteRoom") == 1
        finally:
            await one.close()
            await other.close()


def test_token_is_for_one_room_and_short_lived(redis_client) -> None:
    rooms = CallRooms(redis_client, "https://lk.example.com", LK_KEY, LK_SECRET)
    grant = rooms.token("alice", "Alice", "call-c-9")
    assert grant.url == "wss://lk.example.com"
    claims = api.TokenVerifier(LK_KEY, LK_SECRET).verify(grant.token)
    assert claims.identity == "agent-alice" and claims.name == "Alice"
    assert claims.video.room == "call-c-9" and claims.video.room_join
    assert not (claims.video.room_admin or claims.video.room_create or claims.video.room_list)
    raw = jwt.decode(grant.token, LK_SECRET, algorithms=["HS256"])
    assert 0 < raw["exp"] - raw["nbf"] <= 180
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(LK_KEY, "another-secret-entirely-0123456789abcdef").verify(grant.token)


async def test_livekit_setup_is_explicit_and_idempotent() -> None:
    trunk = json.loads((LIVEKIT_DIR / TRUNK_FILE).read_text())
    rule = json.loads((LIVEKIT_DIR / RULE_FILE).read_text())
    async with livekit_stand_in() as lk, aiohttp.ClientSession() as session:
        client = api.LiveKitAPI(lk.url, LK_KEY, LK_SECRET, session=session, failover=False)
        first = await apply(client, trunk, rule)
        assert [line.split(":")[1].split()[0] for line in first] == ["created", "created"]
        (rule_info,) = lk.rules.values()
        (trunk_info,) = lk.trunks.values()
        assert list(rule_info.trunk_ids) == [trunk_info.sip_trunk_id]  # bound, not catch-all
        assert rule_info.rule.WhichOneof("rule") == "dispatch_rule_callee"
        assert rule_info.rule.dispatch_rule_callee.room_prefix == ""
        assert not rule_info.rule.dispatch_rule_callee.randomize
        assert list(trunk_info.allowed_addresses)
        again = await apply(client, trunk, rule)
        assert all("unchanged" in line for line in again)
        trunk["allowed_addresses"] = ["10.1.2.3/32"]
        changed = await apply(client, trunk, rule)
        assert "removed outdated" in changed[0] and "created" in changed[1]
        assert [list(t.allowed_addresses) for t in lk.trunks.values()] == [["10.1.2.3/32"]]
        (rule_info,) = lk.rules.values()
        (trunk_info,) = lk.trunks.values()
        assert list(rule_info.trunk_ids) == [trunk_info.sip_trunk_id]


async def test_callyard_dev_takes_calls_without_a_livekit_server(redis_client) -> None:
    """`callyard dev` (simulated engines, usually no LiveKit running) goes on without rooms
    instead of refusing the agent's accept; nothing waits to be deleted."""
    async with livekit_stand_in() as lk:
        await lk.stop()
        rooms = CallRooms(redis_client, lk.url, LK_KEY, LK_SECRET, require_livekit=False)
        try:
            await rooms.enter("alice", await rooms.create("c-1"))
            assert await rooms.close_for("alice") == "call-c-1"
            assert await redis_client.zcard(ROOMS_TO_DELETE) == 0
        finally:
            await rooms.close()
