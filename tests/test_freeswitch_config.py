"""``callyard render-config``: FreeSWITCH templates render to valid XML, the committed
output is up to date, and overrides reach the dialplan."""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from appserver import render_config_command
from appserver.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def _render(*overrides: str) -> dict[Path, str]:
    return render_config_command.render_all(
        ROOT, load_settings(), render_config_command.template_vars(list(overrides))
    )


def test_committed_output_matches_templates() -> None:
    rendered = {k: v for k, v in _render().items() if str(k).startswith("freeswitch-conf")}
    assert rendered, "no FreeSWITCH templates found"
    for rel, text in rendered.items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run `callyard render-config`"


def test_every_file_is_well_formed_xml() -> None:
    for rel, text in _render().items():
        if rel.suffix == ".xml":
            ET.fromstring(text)  # raises on malformed XML


def test_dialplan_sockets_in_order_then_fallback() -> None:
    text = _render("freeswitch_workers=a:1,b:2,c:3")[
        Path("freeswitch-conf/conf/dialplan/callyard.xml")
    ]
    ext = ET.fromstring(text).find("./context/extension[@name='callyard_ivr']")
    assert ext is not None
    actions = [(a.get("application"), a.get("data")) for a in ext.iter("action")]
    apps = [a for a, _ in actions]
    assert [d for a, d in actions if a == "socket"] == [
        "a:1 async full",
        "b:2 async full",
        "c:3 async full",
    ]
    assert apps.index("playback") > max(i for i, a in enumerate(apps) if a == "socket")
    assert apps[-1] == "hangup"


def test_dialplan_with_ingress_park_parks_marked_calls() -> None:
    """Ingress park: one multiset (with the marker the workers take calls by), then park;
    no socket, no fallback after it (a parked call leaves only by a transfer or hang-up)."""
    from appserver.freeswitch.parked import MARKER_VALUE, MARKER_VARIABLE

    text = _render("freeswitch_ingress=park")[Path("freeswitch-conf/conf/dialplan/callyard.xml")]
    ext = ET.fromstring(text).find("./context/extension[@name='callyard_ivr']")
    assert ext is not None
    actions = [(a.get("application"), a.get("data") or "") for a in ext.iter("action")]
    assert [a for a, _ in actions] == ["multiset", "park"]
    assert f"{MARKER_VARIABLE}={MARKER_VALUE}" in actions[0][1].split()


def test_stock_throttles_raised_and_password_from_environment() -> None:
    out = _render()
    switch = ET.fromstring(out[Path("freeswitch-conf/conf/autoload_configs/switch.conf.xml")])
    params = {p.get("name"): p.get("value") for p in switch.iter("param")}
    assert int(params["max-sessions"] or 0) > 1000
    assert int(params["sessions-per-second"] or 0) > 30
    esl = out[Path("freeswitch-conf/conf/autoload_configs/event_socket.conf.xml")]
    assert "$${callyard_esl_password}" in esl and "ClueCon" not in esl
    assert (
        'cmd="env-set" data="callyard_esl_password=CALLYARD_ESL_PASSWORD"'
        in out[Path("freeswitch-conf/conf/vars.xml")]
    )


def test_values_are_xml_escaped() -> None:
    text = _render("freeswitch_fallback_prompt=a&b<c")[
        Path("freeswitch-conf/conf/dialplan/callyard.xml")
    ]
    assert "a&amp;b&lt;c" in text
    ET.fromstring(text)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    render_config_command.add_arguments(parser)
    return parser.parse_args(argv)


def test_out_renders_elsewhere_and_leaves_the_repository_alone(tmp_path: Path) -> None:
    """The real-engine tests render the shipped templates for loopback with ``--out``."""
    args = _args("--root", str(ROOT), "--out", str(tmp_path),
                 "--var", "freeswitch_sip_ip=127.0.0.1")
    assert render_config_command.run(args, load_settings()) == 0
    profile = (tmp_path / "freeswitch-conf/conf/sip_profiles/callyard.xml").read_text()
    assert '<param name="sip-ip" value="127.0.0.1"/>' in profile
    assert '<param name="rtp-timer-name" value="soft"/>' in profile
    assert render_config_command.run(_args("--root", str(ROOT), "--check"), load_settings()) == 0


def test_unknown_variable_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args("--root", str(tmp_path), "--var", "nope=1")
    assert render_config_command.run(args, load_settings()) == 2
    assert "unknown --var 'nope=1'" in capsys.readouterr().err


def test_check_mode_reports_stale_files(tmp_path: Path) -> None:
    (tmp_path / "dialplans" / "freeswitch").mkdir(parents=True)
    (tmp_path / "dialplans" / "freeswitch" / "x.xml.j2").write_text(
        "<a n='{{ freeswitch_context }}'/>\n"
    )
    args = _args("--root", str(tmp_path), "--check")
    assert render_config_command.run(args, load_settings()) == 1
    args.check = False
    assert render_config_command.run(args, load_settings()) == 0
    assert (tmp_path / "freeswitch-conf/conf/dialplan/x.xml").read_text() == "<a n='callyard'/>\n"
    args.check = True
    assert render_config_command.run(args, load_settings()) == 0
