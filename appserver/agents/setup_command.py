"""``callyard livekit-setup``: apply the SIP inbound trunk and dispatch rule in ``livekit/``.

Idempotent: an object with the same name and the same definition is kept; one whose
definition changed is replaced; nothing else on the server is touched. The dispatch rule
names its trunks (``trunk_names``) and is bound to their ids here, so it never becomes a
catch-all for other trunks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appserver.settings import Settings
    from livekit import api

HELP = "create or update the LiveKit SIP inbound trunk and dispatch rule (livekit/*.json)"
TRUNK_FILE = "sip-inbound-trunk.json"
RULE_FILE = "sip-dispatch-rule.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=Path("livekit"),
                        help="folder with the definitions (default: ./livekit)")


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"callyard livekit-setup: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise SystemExit(f"callyard livekit-setup: {path} must be an object with a name")
    return data


def _same(current: Any, wanted: Any, ignore: set[str]) -> bool:
    from google.protobuf.json_format import MessageToDict

    def norm(msg: Any) -> dict[str, Any]:
        d = MessageToDict(msg, preserving_proto_field_name=True)
        return {k: v for k, v in d.items() if k not in ignore}

    return norm(current) == norm(wanted)


async def apply(lk: api.LiveKitAPI, trunk_def: dict[str, Any],
                rule_def: dict[str, Any]) -> list[str]:
    """Make the server match the definitions; returns what was done, one line per object."""
    from google.protobuf.json_format import ParseDict

    from livekit import api

    done: list[str] = []
    wanted_trunk = ParseDict(trunk_def, api.SIPInboundTrunkInfo())
    trunks = (await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
    trunk_id = ""
    for t in trunks:
        if t.name != wanted_trunk.name:
            continue
        if not trunk_id and _same(t, wanted_trunk, {"sip_trunk_id", "created_at", "updated_at"}):
            trunk_id = t.sip_trunk_id
            done.append(f"trunk {t.name}: unchanged ({trunk_id})")
        else:
            await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=t.sip_trunk_id))
            done.append(f"trunk {t.name}: removed outdated {t.sip_trunk_id}")
    if not trunk_id:
        created = await lk.sip.create_inbound_trunk(
            api.CreateSIPInboundTrunkRequest(trunk=wanted_trunk))
        trunk_id = created.sip_trunk_id
        done.append(f"trunk {created.name}: created ({trunk_id})")

    rule_def = dict(rule_def)
    names = rule_def.pop("trunk_names", [wanted_trunk.name])
    if names != [wanted_trunk.name]:
        raise SystemExit("callyard livekit-setup: the dispatch rule must name the trunk "
                         f"{wanted_trunk.name!r} in trunk_names")
    wanted_rule = ParseDict(rule_def, api.SIPDispatchRuleInfo())
    wanted_rule.trunk_ids[:] = [trunk_id]
    rules = (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
    rule_id = ""
    for r in rules:
        if r.name != wanted_rule.name:
            continue
        if not rule_id and _same(r, wanted_rule, {"sip_dispatch_rule_id", "created_at",
                                                 "updated_at"}):
            rule_id = r.sip_dispatch_rule_id
            done.append(f"dispatch rule {r.name}: unchanged ({rule_id})")
        else:
            await lk.sip.delete_dispatch_rule(
                api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=r.sip_dispatch_rule_id))
            done.append(f"dispatch rule {r.name}: removed outdated {r.sip_dispatch_rule_id}")
    if not rule_id:
        created_rule = await lk.sip.create_dispatch_rule(
            api.CreateSIPDispatchRuleRequest(dispatch_rule=wanted_rule))
        done.append(f"dispatch rule {created_rule.name}: created "
                    f"({created_rule.sip_dispatch_rule_id})")
    return done


async def _run(settings: Settings, folder: Path) -> int:
    import aiohttp

    from livekit import api

    trunk_def = _load(folder / TRUNK_FILE)
    rule_def = _load(folder / RULE_FILE)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        lk = api.LiveKitAPI(settings.livekit_url, settings.livekit_api_key,
                            settings.livekit_api_secret, session=session, failover=False)
        try:
            for line in await apply(lk, trunk_def, rule_def):
                print(line)
        except (api.TwirpError, aiohttp.ClientError, OSError) as exc:
            print(f"callyard livekit-setup: LiveKit at {settings.livekit_url} refused: {exc}")
            return 1
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_run(settings, args.dir))
