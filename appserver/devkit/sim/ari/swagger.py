"""The swagger 1.1 documents the ARI simulator serves at ``/ari/api-docs/``.

Written for the simulator: only the resources, operations and models it implements,
with the same paths, nicknames, parameter names/types and model fields as Asterisk 22
(``tests/test_ari_swagger_conformance.py`` checks them against Asterisk's own files).
``aioari`` loads these exactly as it would from a real Asterisk: ``resources.json`` names
one declaration per resource and each declaration's ``basePath`` is the server's ``/ari``.
"""

from __future__ import annotations

from typing import Any

API_VERSION = "10.0.0"
SWAGGER_VERSION = "1.1"

Json = dict[str, Any]


def _path(name: str, what: str) -> Json:
    return {
        "name": name,
        "description": what,
        "paramType": "path",
        "required": True,
        "allowMultiple": False,
        "dataType": "string",
    }


def _query(
    name: str, what: str, data_type: str = "string", required: bool = False, multiple: bool = False
) -> Json:
    return {
        "name": name,
        "description": what,
        "paramType": "query",
        "required": required,
        "allowMultiple": multiple,
        "dataType": data_type,
    }


def _body(name: str, what: str, required: bool = False) -> Json:
    return {
        "name": name,
        "description": what,
        "paramType": "body",
        "required": required,
        "allowMultiple": False,
        "dataType": "containers",
    }


def _op(
    method: str,
    nickname: str,
    summary: str,
    response: str = "void",
    params: list[Json] | None = None,
    errors: dict[int, str] | None = None,
) -> Json:
    op: Json = {
        "httpMethod": method,
        "summary": summary,
        "nickname": nickname,
        "responseClass": response,
        "parameters": params or [],
    }
    if errors:
        op["errorResponses"] = [{"code": c, "reason": r} for c, r in errors.items()]
    return op


def _api(path: str, what: str, *ops: Json) -> Json:
    return {"path": path, "description": what, "operations": list(ops)}


def _model(model_id: str, what: str, props: dict[str, tuple[str, bool]], **extra: Any) -> Json:
    return {
        "id": model_id,
        "description": what,
        **extra,
        "properties": {
            name: {"type": typ, "required": req} for name, (typ, req) in props.items()
        },
    }


_CHANNEL = _path("channelId", "Channel's id")
_BRIDGE = _path("bridgeId", "Bridge's id")
_GONE = {404: "Channel not found", 409: "Channel not in a Stasis application"}
_GONE_412 = {**_GONE, 412: "Channel in invalid state"}

_ORIGINATE_PARAMS = [
    _query("endpoint", "Endpoint to call", required=True),
    _query("extension", "Extension to dial after the call is answered"),
    _query("context", "Context to dial after the call is answered"),
    _query("priority", "Priority to dial after the call is answered", "long"),
    _query("label", "Label to dial after the call is answered"),
    _query("app", "Stasis application to place the answered channel in"),
    _query("appArgs", "Application arguments, comma separated"),
    _query("callerId", "Caller id for the new channel"),
    _query("timeout", "Seconds to wait for an answer", "int"),
    _body("variables", "Channel variables to set on the new channel"),
    _query("otherChannelId", "Id of the second channel of a Local channel pair"),
    _query("originator", "Id of the channel responsible for this one"),
    _query("formats", "Comma separated codec names"),
]
_PLAY_PARAMS = [
    _query("media", "Media URIs to play, in order", required=True, multiple=True),
    _query("lang", "Language for the media"),
    _query("offsetms", "Milliseconds to skip before playing", "int"),
    _query("skipms", "Milliseconds to skip on forward/reverse", "int"),
]


def _channels() -> Json:
    return {
        "apis": [
            _api(
                "/channels",
                "Active channels",
                _op("GET", "list", "List all active channels.", "List[Channel]"),
                _op(
                    "POST",
                    "originate",
                    "Create a new channel (originate).",
                    "Channel",
                    [*_ORIGINATE_PARAMS[:10], _query("channelId", "Id for the new channel"),
                     *_ORIGINATE_PARAMS[10:]],
                    {400: "Invalid parameters", 409: "Channel id already in use"},
                ),
            ),
            _api(
                "/channels/create",
                "Create a channel without dialing it",
                _op(
                    "POST",
                    "create",
                    "Create a channel and place it in a Stasis application.",
                    "Channel",
                    [
                        _query("endpoint", "Endpoint to call", required=True),
                        _query("app", "Stasis application", required=True),
                        _query("appArgs", "Application arguments"),
                        _query("channelId", "Id for the new channel"),
                        _query("otherChannelId", "Id of the second Local channel"),
                        _query("originator", "Id of the responsible channel"),
                        _query("formats", "Comma separated codec names"),
                        _body("variables", "Channel variables"),
                    ],
                    {409: "Channel id already in use"},
                ),
            ),
            _api(
                "/channels/{channelId}",
                "Active channel",
                _op("GET", "get", "Channel details.", "Channel", [_CHANNEL],
                    {404: "Channel not found"}),
                _op(
                    "POST",
                    "originateWithId",
                    "Create a new channel (originate) with the given id.",
                    "Channel",
                    [_path("channelId", "Id for the new channel"), *_ORIGINATE_PARAMS],
                    {400: "Invalid parameters", 409: "Channel id already in use"},
                ),
                _op(
                    "DELETE",
                    "hangup",
                    "Delete (i.e. hangup) a channel.",
                    "void",
                    [
                        _CHANNEL,
                        _query("reason_code", "Q.850 cause code of the hangup"),
                        _query("reason", "Reason for hanging up (normal, busy, ...)"),
                    ],
                    {400: "Invalid reason", 404: "Channel not found"},
                ),
            ),
            _api(
                "/channels/{channelId}/continue",
                "Exit the application and continue in the dialplan",
                _op(
                    "POST",
                    "continueInDialplan",
                    "Exit application; continue execution in the dialplan.",
                    "void",
                    [
                        _CHANNEL,
                        _query("context", "Context to continue to"),
                        _query("extension", "Extension to continue to"),
                        _query("priority", "Priority to continue to", "int"),
                        _query("label", "Label to continue to"),
                    ],
                    _GONE_412,
                ),
            ),
            _api(
                "/channels/{channelId}/redirect",
                "Redirect a channel to another endpoint",
                _op(
                    "POST",
                    "redirect",
                    "Redirect the channel to a different location.",
                    "void",
                    [_CHANNEL, _query("endpoint", "Destination endpoint", required=True)],
                    {400: "Endpoint missing", **_GONE, 422: "Endpoint not found",
                     412: "Channel in invalid state"},
                ),
            ),
            _api(
                "/channels/{channelId}/answer",
                "Answer a channel",
                _op("POST", "answer", "Answer a channel.", "void", [_CHANNEL], _GONE_412),
            ),
            _api(
                "/channels/{channelId}/dtmf",
                "Send DTMF to a channel",
                _op(
                    "POST",
                    "sendDTMF",
                    "Send provided DTMF to a given channel.",
                    "void",
                    [
                        _CHANNEL,
                        _query("dtmf", "DTMF to send"),
                        _query("before", "Milliseconds before sending", "int"),
                        _query("between", "Milliseconds between digits", "int"),
                        _query("duration", "Milliseconds per digit", "int"),
                        _query("after", "Milliseconds after sending", "int"),
                    ],
                    {400: "DTMF is required", **_GONE_412},
                ),
            ),
            _api(
                "/channels/{channelId}/moh",
                "Music on hold",
                _op("POST", "startMoh", "Play music on hold to a channel.", "void",
                    [_CHANNEL, _query("mohClass", "Music on hold class")], _GONE_412),
                _op("DELETE", "stopMoh", "Stop music on hold.", "void", [_CHANNEL], _GONE_412),
            ),
            _api(
                "/channels/{channelId}/snoop",
                "Snoop (spy/whisper) on a channel",
                _op("POST", "snoopChannel", "Start snooping.", "Channel", [
                    _CHANNEL, _query("spy", "Direction of audio to spy on"),
                    _query("whisper", "Direction of audio to whisper into"),
                    _query("app", "Application the snooping channel is placed into",
                           required=True),
                    _query("appArgs", "The application arguments to pass to the Stasis app"),
                    _query("snoopId", "Unique ID to assign to snooping channel")],
                    {400: "Invalid parameters", 404: "Channel not found"}),
            ),
            _api(
                "/channels/{channelId}/play",
                "Play media to a channel",
                _op(
                    "POST",
                    "play",
                    "Start playback of media.",
                    "Playback",
                    [_CHANNEL, *_PLAY_PARAMS, _query("playbackId", "Id for the playback")],
                    _GONE_412,
                ),
            ),
            _api(
                "/channels/{channelId}/play/{playbackId}",
                "Play media to a channel with a playback id",
                _op(
                    "POST",
                    "playWithId",
                    "Start playback of media with the given playback id.",
                    "Playback",
                    [_CHANNEL, _path("playbackId", "Playback id"), *_PLAY_PARAMS],
                    _GONE_412,
                ),
            ),
            _api(
                "/channels/{channelId}/variable",
                "Channel variables",
                _op(
                    "GET",
                    "getChannelVar",
                    "Get the value of a channel variable or function.",
                    "Variable",
                    [_CHANNEL, _query("variable", "Variable name", required=True)],
                    {400: "Missing variable parameter", 404: "Channel or variable not found",
                     409: "Channel not in a Stasis application"},
                ),
                _op(
                    "POST",
                    "setChannelVar",
                    "Set the value of a channel variable or function.",
                    "void",
                    [
                        _CHANNEL,
                        _query("variable", "Variable name", required=True),
                        _query("value", "Value to set"),
                    ],
                    {400: "Missing variable parameter", **_GONE},
                ),
            ),
        ],
        "models": {
            "CallerID": _model("CallerID", "Caller identification",
                               {"name": ("string", True), "number": ("string", True)}),
            "DialplanCEP": _model(
                "DialplanCEP",
                "Dialplan location (context/extension/priority)",
                {
                    "context": ("string", True),
                    "exten": ("string", True),
                    "priority": ("long", True),
                    "app_name": ("string", True),
                    "app_data": ("string", True),
                },
            ),
            "Channel": _model(
                "Channel",
                "A connection between Asterisk and an endpoint.",
                {
                    "id": ("string", True),
                    "protocol_id": ("string", True),
                    "name": ("string", True),
                    "state": ("string", True),
                    "caller": ("CallerID", True),
                    "connected": ("CallerID", True),
                    "accountcode": ("string", True),
                    "dialplan": ("DialplanCEP", True),
                    "creationtime": ("Date", True),
                    "language": ("string", True),
                    "channelvars": ("object", False),
                },
            ),
        },
    }


def _bridges() -> Json:
    return {
        "apis": [
            _api(
                "/bridges",
                "Active bridges",
                _op("GET", "list", "List all active bridges.", "List[Bridge]"),
                _op(
                    "POST",
                    "create",
                    "Create a new bridge.",
                    "Bridge",
                    [
                        _query("type", "Comma separated bridge type/features (mixing, holding)"),
                        _query("bridgeId", "Id for the new bridge"),
                        _query("name", "Name for the new bridge"),
                    ],
                    {409: "Bridge id already in use"},
                ),
            ),
            _api(
                "/bridges/{bridgeId}",
                "Individual bridge",
                _op(
                    "POST",
                    "createWithId",
                    "Create a new bridge with the given id.",
                    "Bridge",
                    [
                        _query("type", "Comma separated bridge type/features"),
                        _path("bridgeId", "Id for the new bridge"),
                        _query("name", "Name for the new bridge"),
                    ],
                    {409: "Bridge id already in use"},
                ),
                _op("GET", "get", "Bridge details.", "Bridge", [_BRIDGE],
                    {404: "Bridge not found"}),
                _op("DELETE", "destroy", "Shut down a bridge.", "void", [_BRIDGE],
                    {404: "Bridge not found"}),
            ),
            _api(
                "/bridges/{bridgeId}/addChannel",
                "Add a channel to a bridge",
                _op(
                    "POST",
                    "addChannel",
                    "Add a channel to a bridge.",
                    "void",
                    [
                        _BRIDGE,
                        _query("channel", "Ids of channels to add", required=True, multiple=True),
                        _query("role", "Channel's role in the bridge"),
                    ],
                    {400: "Channel not found", 404: "Bridge not found",
                     409: "Bridge not in Stasis application", 422: "Channel not in Stasis"},
                ),
            ),
            _api(
                "/bridges/{bridgeId}/removeChannel",
                "Remove a channel from a bridge",
                _op(
                    "POST",
                    "removeChannel",
                    "Remove a channel from a bridge.",
                    "void",
                    [_BRIDGE,
                     _query("channel", "Ids of channels to remove", required=True, multiple=True)],
                    {400: "Channel not found", 404: "Bridge not found",
                     409: "Bridge not in Stasis application", 422: "Channel not in this bridge"},
                ),
            ),
            _api(
                "/bridges/{bridgeId}/moh",
                "Music on hold for a bridge",
                _op("POST", "startMoh", "Play music on hold to a bridge.", "void",
                    [_BRIDGE, _query("mohClass", "Music on hold class")],
                    {404: "Bridge not found", 409: "Bridge not in Stasis application"}),
                _op("DELETE", "stopMoh", "Stop music on hold in a bridge.", "void", [_BRIDGE],
                    {404: "Bridge not found", 409: "Bridge not in Stasis application"}),
            ),
            _api(
                "/bridges/{bridgeId}/play",
                "Play media to a bridge",
                _op(
                    "POST",
                    "play",
                    "Start playback of media on a bridge.",
                    "Playback",
                    [_BRIDGE, *_PLAY_PARAMS, _query("playbackId", "Id for the playback")],
                    {404: "Bridge not found", 409: "Bridge not in a Stasis application"},
                ),
            ),
        ],
        "models": {
            "Bridge": _model(
                "Bridge",
                "A bridge that channels can be placed in.",
                {
                    "id": ("string", True),
                    "technology": ("string", True),
                    "bridge_type": ("string", True),
                    "bridge_class": ("string", True),
                    "creator": ("string", True),
                    "name": ("string", True),
                    "channels": ("List[string]", True),
                    "video_mode": ("string", False),
                    "creationtime": ("Date", True),
                },
            )
        },
    }


def _playbacks() -> Json:
    pb = _path("playbackId", "Playback's id")
    return {
        "apis": [
            _api(
                "/playbacks/{playbackId}",
                "Control object for a playback operation",
                _op("GET", "get", "Get a playback's details.", "Playback", [pb],
                    {404: "The playback cannot be found"}),
                _op("DELETE", "stop", "Stop a playback.", "void", [pb],
                    {404: "The playback cannot be found"}),
            )
        ],
        "models": {
            "Playback": _model(
                "Playback",
                "Object representing the playback of media to a channel or bridge",
                {
                    "id": ("string", True),
                    "media_uri": ("string", True),
                    "next_media_uri": ("string", False),
                    "target_uri": ("string", True),
                    "language": ("string", False),
                    "state": ("string", True),
                },
            )
        },
    }


def _endpoints() -> Json:
    tech = _path("tech", "Technology of the endpoints (PJSIP, ...)")
    return {
        "apis": [
            _api("/endpoints", "Asterisk endpoints",
                 _op("GET", "list", "List all endpoints.", "List[Endpoint]")),
            _api("/endpoints/{tech}", "Asterisk endpoints of one technology",
                 _op("GET", "listByTech", "List endpoints of a technology.", "List[Endpoint]",
                     [tech], {404: "Endpoints not found"})),
            _api("/endpoints/{tech}/{resource}", "Single endpoint",
                 _op("GET", "get", "Details for an endpoint.", "Endpoint",
                     [tech, _path("resource", "Id of the endpoint")],
                     {400: "Invalid parameters", 404: "Endpoint not found"})),
        ],
        "models": {
            "Endpoint": _model(
                "Endpoint",
                "An external device that may offer/accept calls to/from Asterisk.",
                {
                    "technology": ("string", True),
                    "resource": ("string", True),
                    "state": ("string", False),
                    "channel_ids": ("List[string]", True),
                },
            )
        },
    }


def _applications() -> Json:
    name = _path("applicationName", "Application's name")
    return {
        "apis": [
            _api("/applications", "Stasis applications",
                 _op("GET", "list", "List all applications.", "List[Application]")),
            _api("/applications/{applicationName}", "Stasis application",
                 _op("GET", "get", "Get details of an application.", "Application", [name],
                     {404: "Application does not exist."})),
            _api("/applications/{applicationName}/eventFilter", "Stasis application",
                 _op("PUT", "filter", "Filter application events types.", "Application",
                     [name, {**_body("filter", "Specify which event types to allow/disallow"),
                             "dataType": "object"}],
                     {400: "Bad request.", 404: "Application does not exist."})),
        ],
        "models": {
            "Application": _model(
                "Application",
                "Details of a Stasis application",
                {
                    "name": ("string", True),
                    "channel_ids": ("List[string]", True),
                    "bridge_ids": ("List[string]", True),
                    "endpoint_ids": ("List[string]", True),
                    "device_names": ("List[string]", True),
                    "events_allowed": ("List[object]", True),
                    "events_disallowed": ("List[object]", True),
                },
            )
        },
    }


def _asterisk() -> Json:
    return {
        "apis": [
            _api("/asterisk/info", "Asterisk system information",
                 _op("GET", "getInfo", "Gets Asterisk system information.", "AsteriskInfo",
                     [_query("only", "Which sections to return", multiple=True)])),
            _api("/asterisk/ping", "Asterisk ping",
                 _op("GET", "ping", "Response pong message.", "AsteriskPing")),
        ],
        "models": {
            "BuildInfo": _model(
                "BuildInfo",
                "Info about how Asterisk was built",
                {k: ("string", True) for k in ("os", "kernel", "options", "machine", "date",
                                               "user")},
            ),
            "SystemInfo": _model("SystemInfo", "Info about Asterisk",
                                 {"version": ("string", True), "entity_id": ("string", True)}),
            "SetId": _model("SetId", "Effective user/group id",
                            {"user": ("string", True), "group": ("string", True)}),
            "ConfigInfo": _model(
                "ConfigInfo",
                "Info about Asterisk configuration",
                {"name": ("string", True), "default_language": ("string", True),
                 "setid": ("SetId", True)},
            ),
            "StatusInfo": _model("StatusInfo", "Info about Asterisk status",
                                 {"startup_time": ("Date", True),
                                  "last_reload_time": ("Date", True)}),
            "AsteriskInfo": _model(
                "AsteriskInfo",
                "Asterisk system information",
                {"build": ("BuildInfo", False), "system": ("SystemInfo", False),
                 "config": ("ConfigInfo", False), "status": ("StatusInfo", False)},
            ),
            "AsteriskPing": _model(
                "AsteriskPing",
                "Asterisk ping information",
                {"asterisk_id": ("string", True), "ping": ("string", True),
                 "timestamp": ("string", True)},
            ),
            "Variable": _model("Variable", "The value of a channel variable",
                               {"value": ("string", True)}),
        },
    }


# Events the simulator emits, with their own properties (Event adds application/timestamp).
EVENT_PROPERTIES: dict[str, dict[str, tuple[str, bool]]] = {
    "StasisStart": {"args": ("List[string]", True), "channel": ("Channel", True)},
    "StasisEnd": {"channel": ("Channel", True)},
    "ChannelStateChange": {"channel": ("Channel", True)},
    "ChannelDtmfReceived": {
        "digit": ("string", True),
        "duration_ms": ("int", True),
        "channel": ("Channel", True),
    },
    "ChannelHangupRequest": {
        "cause": ("int", False),
        "soft": ("boolean", False),
        "channel": ("Channel", True),
    },
    "ChannelDestroyed": {
        "cause": ("int", True),
        "cause_txt": ("string", True),
        "channel": ("Channel", True),
    },
    "ChannelVarset": {
        "variable": ("string", True),
        "value": ("string", True),
        "channel": ("Channel", False),
    },
    "ChannelEnteredBridge": {"bridge": ("Bridge", True), "channel": ("Channel", False)},
    "ChannelLeftBridge": {"bridge": ("Bridge", True), "channel": ("Channel", True)},
    "BridgeDestroyed": {"bridge": ("Bridge", True)},
    "PlaybackStarted": {"playback": ("Playback", True)},
    "PlaybackContinuing": {"playback": ("Playback", True)},
    "PlaybackFinished": {"playback": ("Playback", True)},
    "Dial": {
        "caller": ("Channel", False),
        "peer": ("Channel", True),
        "dialstring": ("string", False),
        "dialstatus": ("string", True),
    },
    "EndpointStateChange": {"endpoint": ("Endpoint", True)},
    "ChannelUserevent": {
        "eventname": ("string", True),
        "channel": ("Channel", False),
        "bridge": ("Bridge", False),
        "endpoint": ("Endpoint", False),
        "userevent": ("object", True),
    },
}


def _events() -> Json:
    models: Json = {
        "Message": _model(
            "Message",
            "Base type for errors and events",
            {"type": ("string", True), "asterisk_id": ("string", False)},
            discriminator="type",
            subTypes=["Event"],
        ),
        "Event": _model(
            "Event",
            "Base type for asynchronous events from Asterisk.",
            {"application": ("string", True), "timestamp": ("Date", True)},
            subTypes=sorted(EVENT_PROPERTIES),
        ),
    }
    for name, props in EVENT_PROPERTIES.items():
        models[name] = _model(name, f"{name} event", props)
    return {
        "apis": [
            _api(
                "/events",
                "Events from Asterisk to applications",
                {
                    **_op(
                        "GET",
                        "eventWebsocket",
                        "WebSocket connection for events.",
                        "Message",
                        [_query("app", "Applications to subscribe to", required=True,
                                multiple=True),
                         _query("subscribeAll", "Subscribe to all Asterisk events", "boolean")],
                    ),
                    "upgrade": "websocket",
                    "websocketProtocol": "ari",
                },
            ),
            _api(
                "/events/user/{eventName}",
                "Stasis application user events",
                _op(
                    "POST",
                    "userEvent",
                    "Generate a user event.",
                    "void",
                    [
                        _path("eventName", "Event name"),
                        _query("application", "Application to receive the event",
                               required=True),
                        _query("source", "Event sources (channel:id, bridge:id, ...)",
                               multiple=True),
                        _body("variables", "Key/value pairs for the userevent object"),
                    ],
                    {404: "Application does not exist", 422: "Event source not found",
                     400: "Invalid event source URI or userevent data"},
                ),
            ),
        ],
        "models": models,
    }


_RESOURCES: dict[str, tuple[str, Any]] = {
    "asterisk": ("Asterisk resources", _asterisk),
    "endpoints": ("Endpoint resources", _endpoints),
    "channels": ("Channel resources", _channels),
    "bridges": ("Bridge resources", _bridges),
    "playbacks": ("Playback control resources", _playbacks),
    "events": ("WebSocket resource", _events),
    "applications": ("Stasis application resources", _applications),
}
RESOURCE_NAMES = tuple(_RESOURCES)


def resource_listing(base_path: str) -> Json:
    """``/ari/api-docs/resources.json``; ``base_path`` is ``http://host:port/ari``."""
    return {
        "apiVersion": API_VERSION,
        "swaggerVersion": SWAGGER_VERSION,
        "basePath": base_path,
        "apis": [
            {"path": f"/api-docs/{name}.{{format}}", "description": what}
            for name, (what, _) in _RESOURCES.items()
        ],
    }


def api_declaration(name: str, base_path: str) -> Json | None:
    """``/ari/api-docs/<name>.json``, or None for a resource the simulator does not serve."""
    entry = _RESOURCES.get(name)
    if entry is None:
        return None
    decl: Json = entry[1]()
    return {
        "apiVersion": "2.0.0",
        "swaggerVersion": SWAGGER_VERSION,
        "basePath": base_path,
        "resourcePath": f"/api-docs/{name}.{{format}}",
        **decl,
    }
