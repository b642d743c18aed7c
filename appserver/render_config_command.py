"""``callyard render-config``: render engine configuration from jinja2 templates.

Every ``*.j2`` file under a template directory is rendered to the same relative path
(minus ``.j2``) under its output directory. :data:`TEMPLATE_SETS` lists the
``(template dir, output dir)`` pairs, relative to ``--root`` (the repository); an engine
adds its own pair there (one line) and its defaults to :data:`DEFAULTS`.

Templates see ``settings`` (:class:`appserver.settings.Settings`) and every key of
:data:`DEFAULTS`, each overridable with ``--var name=value``. The defaults suit the compose
network (the worker host is ``callyard-freeswitch``); list values are comma-separated.
Rendering is deterministic, so the committed output can be checked against the templates.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appserver.settings import Settings

HELP = "Render FreeSWITCH (and other engine) configuration from templates and settings."

TEMPLATE_SETS: list[tuple[str, str]] = [
    ("dialplans/freeswitch", "freeswitch-conf/conf/dialplan"),
    ("freeswitch-conf/templates", "freeswitch-conf/conf"),
    ("dialplans/asterisk", "asterisk-conf"),
    ("asterisk-conf/templates", "asterisk-conf"),
]

DEFAULTS: dict[str, str] = {
    # FreeSWITCH: how calls reach Callyard: "socket" (an outbound socket per call, to the
    # workers below in order) or "park" (parked; the workers take them over inbound ESL:
    # CALLYARD_FREESWITCH_INGRESS=park).
    "freeswitch_ingress": "socket",
    # FreeSWITCH: where the dialplan's socket application finds Callyard, in order.
    "freeswitch_workers": "callyard-freeswitch:8084,callyard-freeswitch-2:8084",
    # Numbers handed to Callyard (resolved there against the extensions table), and trial
    # numbers (*99 + 8 digits: "Try it" in the admin editor, with CALLYARD_MENU_TRIALS).
    "freeswitch_ivr_pattern": r"^([89][0-9]{3}|\*99[0-9]{8})$",
    "freeswitch_user_pattern": r"^([1-7][0-9]{3})$",
    "freeswitch_context": "callyard",
    "freeswitch_fallback_prompt": "ivr/ivr-call_cannot_be_completed_as_dialed.wav",
    # Networks allowed to use the Event Socket (inbound ESL) and to send SIP unchallenged.
    "freeswitch_esl_acl": "127.0.0.1/32,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16",
    "freeswitch_esl_port": "8021",
    "freeswitch_sip_port": "5060",
    # RTP port range (the compose stack publishes 16384-16483/udp).
    "freeswitch_rtp_start": "16384",
    "freeswitch_rtp_end": "16483",
    "freeswitch_max_sessions": "10000",
    "freeswitch_sessions_per_second": "1000",
    "freeswitch_domain": "callyard.local",
    # Address the callyard SIP profile binds (SIP and RTP); FreeSWITCH's own guess by default.
    "freeswitch_sip_ip": "$${local_ip_v4}",
    # Asterisk: the workers' Stasis applications (each worker's CALLYARD_ASTERISK_APP), tried
    # in order; numbers matching the patterns (comma-separated) go there and are resolved in
    # Callyard (the second: trial numbers, as above).
    "asterisk_apps": "callyard,callyard-2",
    "asterisk_ivr_pattern": "_XXXX,_*99XXXXXXXX",
    "asterisk_context": "callyard",
    "asterisk_transfer_context": "callyard-transfer",
    "asterisk_fallback_context": "callyard-unavailable",
    "asterisk_transfer_ring_seconds": "60",
    "asterisk_edge_endpoint": "kamailio",
    "asterisk_edge_host": "kamailio",
    "asterisk_edge_port": "5070",
    # Address Asterisk's HTTP (ARI), AMI and SIP listen on.
    "asterisk_bind_ip": "0.0.0.0",
    "asterisk_http_port": "8088",
    "asterisk_ami_port": "5038",
    "asterisk_sip_port": "5060",
    "asterisk_rtp_start": "10000",
    "asterisk_rtp_end": "10099",
    "asterisk_websocket_write_timeout": "5000",
    # HTTP sessions (connections) Asterisk accepts at once; each is a thread (see http.conf).
    "asterisk_http_session_limit": "1000",
    # Where Asterisk reads its configuration (its #exec scripts live in scripts/ there).
    "asterisk_conf_dir": "/etc/asterisk",
    "asterisk_max_calls": "10000",
    "asterisk_manager_acl": "127.0.0.1/32,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"override a template variable ({', '.join(sorted(DEFAULTS))})",
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help="write under this directory instead of --root (same relative paths), e.g. to "
        "render a configuration for another host or a test engine",
    )
    parser.add_argument("--check", action="store_true", help="only report files that differ")


def template_vars(overrides: list[str]) -> dict[str, str]:
    values = dict(DEFAULTS)
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in DEFAULTS:
            raise ValueError(f"unknown --var {item!r}; known: {', '.join(sorted(DEFAULTS))}")
        values[name] = value
    check_stasis_apps(values["asterisk_apps"])
    return values


def split_list(text: str) -> list[str]:
    """A comma-separated template value as its items (blanks around them dropped)."""
    return [p.strip() for p in str(text).split(",") if p.strip()]


def check_stasis_apps(text: str) -> None:
    """The dialplan writes each name into ``Stasis(<app>,...)``: refuse any other text."""
    from appserver.settings import STASIS_APP_PATTERN

    apps = split_list(text)
    if not apps:
        raise ValueError("asterisk_apps is empty: list the workers' Stasis applications, "
                         "e.g. --var asterisk_apps=callyard,callyard-2")
    for app in apps:
        if not re.fullmatch(STASIS_APP_PATTERN, app):
            raise ValueError(f"asterisk_apps: {app!r} is not a Stasis application name "
                             "(letters, digits, '_', '.', '-'; at most 64)")
    if len(set(apps)) != len(apps):
        raise ValueError(f"asterisk_apps lists an application twice: {text!r}")


def render_all(root: Path, settings: Settings, values: dict[str, str]) -> dict[Path, str]:
    """Every output path (relative to root) and its rendered text."""
    import jinja2

    out: dict[Path, str] = {}
    for template_dir, output_dir in TEMPLATE_SETS:
        source = root / template_dir
        if not source.is_dir():
            continue
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(source)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=jinja2.select_autoescape(["xml.j2"]),
        )
        env.filters["split"] = split_list
        for path in sorted(source.rglob("*.j2")):
            name = path.relative_to(source).as_posix()
            text = env.get_template(name).render(settings=settings, **values)
            out[Path(output_dir) / name.removesuffix(".j2")] = text
    return out


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        values = template_vars(args.var)
        rendered = render_all(args.root, settings, values)
    except ValueError as exc:
        print(f"callyard render-config: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # jinja2 template errors name the file and line
        print(f"callyard render-config: template error: {exc}", file=sys.stderr)
        return 1
    stale = 0
    out = args.root if args.out is None else args.out
    for rel, text in rendered.items():
        target = out / rel
        current = target.read_text() if target.exists() else None
        if current == text:
            continue
        stale += 1
        if args.check:
            print(f"differs: {rel}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {rel}")
    return 1 if args.check and stale else 0
