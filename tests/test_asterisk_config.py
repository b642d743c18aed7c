"""Asterisk configuration: committed output matches the templates, and the simulator, the
worker and the dialplan agree on application, contexts, fallback sounds and numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from appserver.asterisk.driver import DriverConfig
from appserver.devkit.sim.ari import AriSimulator
from appserver.render_config_command import DEFAULTS, render_all, template_vars
from appserver.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def _rendered() -> dict[Path, str]:
    out = render_all(ROOT, load_settings(asterisk_app="callyard"), dict(DEFAULTS))
    return {p: t for p, t in out.items() if p.parts[0] == "asterisk-conf"}


def test_committed_output_is_up_to_date() -> None:
    rendered = _rendered()
    assert {p.name for p in rendered} >= {
        "extensions.conf", "ari.conf", "http.conf", "manager.conf", "pjsip.conf", "rtp.conf"}
    for rel, text in rendered.items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run callyard render-config"


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """An Asterisk extension pattern (``_XXXX``) as a regex."""
    assert pattern.startswith("_")
    table = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]", ".": ".+", "!": ".*"}
    return re.compile("".join(table.get(c, re.escape(c)) for c in pattern[1:]))


def test_dialplan_simulator_and_worker_agree() -> None:
    text = (ROOT / "asterisk-conf" / "extensions.conf").read_text()
    sim = AriSimulator()
    worker_defaults = DriverConfig()
    assert f"Stasis({sim.stasis_app},${{EXTEN}})" in text
    assert " same => n,Goto(callyard-unavailable,s,1)\n same => n(served),Hangup()\n" in text
    assert sim.fallback_context == worker_defaults.fallback_context
    assert f"[{sim.fallback_context}]" in text
    assert sim.transfer_context == worker_defaults.transfer_context
    assert f"[{sim.transfer_context}]" in text
    for exten, sound in sim.fallback_sounds.items():
        block = re.search(rf"exten => {exten},1,.*?(?=\nexten|\n\n|\Z)", text, re.S)
        assert block and f"Playback({sound})" in block.group(0)
    patterns = [_pattern_regex(p) for p in DEFAULTS["asterisk_ivr_pattern"].split(",")]
    for number in ("9999", "0000", "1234", "999", "12345", "+15550100",
                   "*9912345678", "*991234567", "*9812345678"):
        routed = any(p.fullmatch(number) for p in patterns)
        assert routed == bool(sim.ivr_numbers.fullmatch(number)), number


def test_ari_websocket_write_timeout_is_raised() -> None:
    text = (ROOT / "asterisk-conf" / "ari.conf").read_text()
    match = re.search(r"^websocket_write_timeout = (\d+)$", text, re.M)
    assert match and int(match.group(1)) >= 1000


def test_secret_scripts() -> None:
    script = ROOT / "asterisk-conf" / "scripts" / "ari-user.sh"
    env = {**os.environ, "ASTERISK_ARI_USER": "callyard", "ASTERISK_ARI_PASSWORD": "s3cret"}
    out = subprocess.run([str(script)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout == "[callyard]\ntype = user\nread_only = no\npassword = s3cret\n"
    env.pop("ASTERISK_ARI_USER")
    failed = subprocess.run([str(script)], env=env, capture_output=True, text=True)
    assert failed.returncode == 1 and "must be set" in failed.stderr
    ami = ROOT / "asterisk-conf" / "scripts" / "ami-user.sh"
    env = {**os.environ, "ASTERISK_AMI_USER": "cy", "ASTERISK_AMI_SECRET": "pw"}
    out = subprocess.run([str(ami), "10.0.0.0/8,127.0.0.1/32"], env=env, capture_output=True,
                         text=True, check=True)
    assert "permit = 10.0.0.0/8\npermit = 127.0.0.1/32\n" in out.stdout
    assert out.stdout.startswith("[cy]\nsecret = pw\ndeny = 0.0.0.0/0.0.0.0\n")


def test_bind_address_variable() -> None:
    """``asterisk_bind_ip`` places ARI (HTTP), AMI and SIP on one address (tests: loopback)."""
    values = {**DEFAULTS, "asterisk_bind_ip": "127.0.0.1"}
    out = render_all(ROOT, load_settings(asterisk_app="callyard"), values)
    conf = {p.name: t for p, t in out.items() if p.parts[0] == "asterisk-conf"}
    assert "\nbindaddr = 127.0.0.1\n" in conf["http.conf"]
    assert "\nbindaddr = 127.0.0.1\n" in conf["manager.conf"]
    assert f"\nbind = 127.0.0.1:{DEFAULTS['asterisk_sip_port']}\n" in conf["pjsip.conf"]
    assert not re.search(r"^bind(addr)? = 0\.0\.0\.0", "".join(conf.values()), re.M)


def test_http_session_limit_is_raised() -> None:
    """Asterisk refuses HTTP connections (the events WebSocket too) beyond ``sessionlimit``,
    100 by default: fewer than one busy worker may hold (see tests/real/test_asterisk_faults)."""
    text = (ROOT / "asterisk-conf" / "http.conf").read_text()
    match = re.search(r"^sessionlimit = (\d+)$", text, re.M)
    assert match and int(match.group(1)) >= 500


def test_dialplan_tries_each_workers_application_in_order() -> None:
    """``--var asterisk_apps``: one ``Stasis()`` per worker, in order, each followed by a jump
    out when it served the call; after the last the polite ending (as FreeSWITCH's sockets)."""
    values = {**DEFAULTS, "asterisk_apps": "cy-a, cy-b,cy-c"}
    text = render_all(ROOT, load_settings(), values)[Path("asterisk-conf/extensions.conf")]
    body = text.split("[callyard]\n", 1)[1].split("\n\n", 1)[0]
    tried = "".join(f" same => n,Stasis({app},${{EXTEN}})\n"
                    ' same => n,GotoIf($["${STASISSTATUS}" != "FAILED"]?served)\n'
                    for app in ("cy-a", "cy-b", "cy-c"))
    block = tried + " same => n,Goto(callyard-unavailable,s,1)\n same => n(served),Hangup()"
    assert body == ("exten => _XXXX,1,NoOp(Callyard IVR ${EXTEN})\n" + block
                    + "\nexten => _*99XXXXXXXX,1,NoOp(Callyard IVR ${EXTEN})\n" + block)
    assert "tried in order: cy-a, cy-b, cy-c." in text


@pytest.mark.parametrize("apps, error", [
    ("", "empty"), (" , ", "empty"), ("a,b c", "'b c' is not a Stasis application name"),
    ("a,b)", "'b)' is not"), ("a,a", "lists an application twice"),
])
def test_bad_application_list_is_refused(apps: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        template_vars([f"asterisk_apps={apps}"])
    out = subprocess.run(
        [sys.executable, "-m", "appserver.cli", "render-config", "--check",
         "--var", f"asterisk_apps={apps}"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and error in out.stderr and not out.stdout
