"""The simulator's swagger listing against Asterisk 22's own ARI definitions.

Every resource, operation (path, method, nickname, response class), parameter (name, type,
place, required, multiple) and model field the simulator serves must exist in Asterisk's
files with the same meaning. Skipped when ``../shared/reference`` is absent.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aioari
import pytest

from appserver.devkit.sim.ari import AriSimulator, swagger

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "asterisk-ari-api-docs"


def _reference(name: str) -> dict[str, Any]:
    if not REFERENCE.is_dir():
        pytest.skip("Asterisk reference api-docs not available")
    return json.loads((REFERENCE / f"{name}.json").read_text())


def _all_reference_models() -> dict[str, Any]:
    models: dict[str, Any] = {}
    for path in REFERENCE.glob("*.json"):
        if path.name != "resources.json":
            models.update(json.loads(path.read_text()).get("models", {}))
    return models


def _operations(decl: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (api["path"], op["httpMethod"]): op for api in decl["apis"] for op in api["operations"]
    }


@pytest.mark.parametrize("name", swagger.RESOURCE_NAMES)
def test_operations_match_asterisk(name: str) -> None:
    ours = swagger.api_declaration(name, "http://h/ari")
    assert ours is not None
    theirs = _reference(name)
    assert ours["resourcePath"] == theirs["resourcePath"]
    their_ops = _operations(theirs)
    for key, op in _operations(ours).items():
        assert key in their_ops, f"{name}: {key} is not an Asterisk operation"
        ref = their_ops[key]
        assert op["nickname"] == ref["nickname"], key
        assert op["responseClass"] == ref["responseClass"], key
        ref_params = {p["name"]: p for p in ref.get("parameters", [])}
        for param in op["parameters"]:
            assert param["name"] in ref_params, f"{key}: unknown parameter {param['name']}"
            rp = ref_params[param["name"]]
            assert param["paramType"] == rp["paramType"], (key, param["name"])
            assert param["dataType"] == rp["dataType"], (key, param["name"])
            assert param["required"] == bool(rp.get("required", rp["paramType"] == "path"))
            assert param["allowMultiple"] == bool(rp.get("allowMultiple", False)), (
                key, param["name"])
        # Every parameter Asterisk requires is declared (aioari enforces required ones).
        required = {p["name"] for p in ref.get("parameters", []) if p.get("required")}
        assert required <= {p["name"] for p in op["parameters"]}, key
        codes = {e["code"] for e in op.get("errorResponses", [])}
        assert codes <= {int(e["code"]) for e in ref.get("errorResponses", [])}, key


@pytest.mark.parametrize("name", swagger.RESOURCE_NAMES)
def test_models_match_asterisk(name: str) -> None:
    ours = swagger.api_declaration(name, "http://h/ari")
    assert ours is not None
    _reference(name)
    reference = _all_reference_models()
    for model_id, model in ours["models"].items():
        assert model_id in reference, f"{model_id} is not an Asterisk model"
        ref_props = reference[model_id]["properties"]
        for prop, spec in model["properties"].items():
            assert prop in ref_props, f"{model_id}.{prop} is not an Asterisk field"
            assert spec["type"] == ref_props[prop]["type"], f"{model_id}.{prop}"
            assert spec["required"] == bool(ref_props[prop].get("required", False)), (
                f"{model_id}.{prop}")
        if "subTypes" in model:
            assert set(model["subTypes"]) <= set(reference[model_id]["subTypes"])


def test_resource_listing_matches_asterisk() -> None:
    theirs = _reference("resources")
    ours = swagger.resource_listing("http://h/ari")
    assert ours["apiVersion"] == theirs["apiVersion"]
    assert ours["swaggerVersion"] == theirs["swaggerVersion"]
    their_paths = {api["path"] for api in theirs["apis"]}
    assert {api["path"] for api in ours["apis"]} <= their_paths


def _model_fields(models: dict[str, Any], type_name: str, value: Any, where: str) -> None:
    """Recursively check a JSON value against the reference model ``type_name``."""
    if type_name.startswith("List["):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            _model_fields(models, type_name[5:-1], item, f"{where}[{i}]")
        return
    if type_name not in models:
        return  # primitive
    assert isinstance(value, dict), where
    props = models[type_name]["properties"]
    for key, item in value.items():
        assert key in props, f"{where}.{key} is not a field of {type_name}"
        _model_fields(models, props[key]["type"], item, f"{where}.{key}")
    for key, spec in props.items():
        if spec.get("required"):
            assert key in value, f"{where}: required field {key} of {type_name} missing"


async def test_served_events_and_bodies_match_asterisk_models() -> None:
    """Events and REST bodies the simulator sends, checked field by field."""
    _reference("events")
    models = _all_reference_models()
    events: list[dict[str, Any]] = []
    async with AriSimulator() as sim:
        client = await aioari.connect(sim.base_url + "/", sim.username, sim.password)
        try:
            client.on_event("*", events.append)
            runner = asyncio.ensure_future(client.run(apps="callyard"))
            await sim.wait_app_connected("callyard")
            call = await sim.place_call("9999", caller="+15550100", caller_name="Ann")
            while not events:
                await asyncio.sleep(0.01)
            cid = call.call_id
            channel = await client.channels.get(channelId=cid)
            _model_fields(models, "Channel", channel.json, "GET channel")
            await client.channels.answer(channelId=cid)
            playback = await client.channels.play(channelId=cid, media="sound:hello-world")
            _model_fields(models, "Playback", playback.json, "POST play")
            await call.press("1")
            bridge = await client.bridges.create(type="mixing")
            _model_fields(models, "Bridge", bridge.json, "POST bridge")
            await client.bridges.addChannel(bridgeId=bridge.id, channel=cid)
            await client.channels.setChannelVar(channelId=cid, variable="X", value="1")
            await call.wait_for_prompt("file:hello-world")
            await asyncio.sleep(0.3)
            await call.hangup()
            await client.bridges.destroy(bridgeId=bridge.id)
            await asyncio.sleep(0.1)
            runner.cancel()
        finally:
            await client.close()
    seen = set()
    for event in events:
        kind = event["type"]
        seen.add(kind)
        assert kind in models, kind
        assert isinstance(event["asterisk_id"], str) and event["application"] == "callyard"
        assert event["timestamp"].endswith("+0000")
        for key, value in event.items():
            if key in ("type", "asterisk_id", "application", "timestamp"):
                continue
            props = models[kind]["properties"]
            assert key in props, f"{kind}.{key} is not an Asterisk field"
            _model_fields(models, props[key]["type"], value, f"{kind}.{key}")
    assert {"StasisStart", "ChannelStateChange", "PlaybackStarted", "PlaybackFinished",
            "ChannelDtmfReceived", "ChannelEnteredBridge", "ChannelLeftBridge",
            "ChannelVarset", "ChannelHangupRequest", "StasisEnd", "ChannelDestroyed",
            "BridgeDestroyed"} <= seen
