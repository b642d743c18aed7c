"""compose/kamailio/entrypoint.sh: environment -> dispatcher list and kamailio arguments.

``KAMAILIO_BIN`` is pointed at a tiny script that prints its arguments, so these tests need
only ``sh``; the last test checks every mode against the real ``kamailio -c`` when present.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "compose" / "kamailio" / "entrypoint.sh"


def run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    echo = tmp_path / "fake-kamailio"
    echo.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    echo.chmod(0o755)
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAMAILIO_BIN": str(echo),
        "KAMAILIO_DISPATCHER_LIST": str(tmp_path / "dispatcher.list"),
        **env,
    }
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args], env=full_env, capture_output=True, text=True, timeout=10
    )


def test_dispatcher_list_and_defines_from_environment(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "FREESWITCH_NODES": "freeswitch:5080, fs-b.example:5090",
            "ASTERISK_NODES": "asterisk",
            "KAMAILIO_DEFAULT_ENGINE": "asterisk",
            "KAMAILIO_PING_INTERVAL": "5",
            "KAMAILIO_ASTERISK_NUMBERS": "^7[0-9]{3}$",
            "KAMAILIO_ADVERTISE": "203.0.113.5:5060",
            "KAMAILIO_SIP_PORT": "5070",
            "KAMAILIO_INTERNAL_IP": "10.0.0.5",
            "KAMAILIO_INTERNAL_PORT": "5080",
        },
        "-Y",
        "/run/x",
    )
    assert result.returncode == 0, result.stderr
    entries = [
        line.split()
        for line in (tmp_path / "dispatcher.list").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert [(e[0], e[1]) for e in entries] == [
        ("1", "sip:freeswitch:5080"),
        ("1", "sip:fs-b.example:5090"),
        ("2", "sip:asterisk:5060"),
    ]
    assert entries[0][4] == "duid=freeswitch:5080;maxload=0;socket=udp:10.0.0.5:5080"
    args = result.stdout.splitlines()
    assert args[:2] == ["-DD", "-E"]
    assert "DEFAULT_SET=2" in args and "DS_ALG=4" in args and "DS_PING_INTERVAL=5" in args
    assert 'ASTERISK_NUMBERS="^7[0-9]{3}$"' in args
    assert "udp:0.0.0.0:5070/203.0.113.5:5060" in args
    assert "tcp:0.0.0.0:5070/203.0.113.5:5060" in args
    # engines are reached from the internal socket, listed before the advertised one
    # (kamailio carries an -l advertise over to the -l options after it)
    assert 'INTERNAL_SOCKET="udp:10.0.0.5:5080"' in args
    assert args.index("udp:10.0.0.5:5080") < args.index("udp:0.0.0.0:5070/203.0.113.5:5060")
    assert args[args.index("-Y") + 1] == "/run/x"
    assert "WITH_CALL_LOAD" not in args
    assert not any(a.startswith("AGENT_PASSWORD") for a in args)


def test_call_load_mode_adds_its_define(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {"FREESWITCH_NODES": "fs:5080", "KAMAILIO_ALGORITHM": "10", "KAMAILIO_MAX_LOAD": "50"},
    )
    assert result.returncode == 0, result.stderr
    assert "DS_ALG=10" in result.stdout.splitlines()
    assert "WITH_CALL_LOAD" in result.stdout.splitlines()
    assert "maxload=50" in (tmp_path / "dispatcher.list").read_text()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set FREESWITCH_NODES and/or ASTERISK_NODES"),
        ({"FREESWITCH_NODES": "bad_host:5060"}, "FREESWITCH_NODES: bad host"),
        ({"ASTERISK_NODES": "asterisk:99999"}, "ASTERISK_NODES: bad port"),
        ({"ASTERISK_NODES": "asterisk:"}, "ASTERISK_NODES: bad port"),
        ({"FREESWITCH_NODES": "fs", "KAMAILIO_ALGORITHM": "0"}, "KAMAILIO_ALGORITHM must be"),
        ({"FREESWITCH_NODES": "fs", "KAMAILIO_DEFAULT_ENGINE": "yate"}, "KAMAILIO_DEFAULT_ENGINE"),
        ({"FREESWITCH_NODES": "fs", "KAMAILIO_PING_INTERVAL": "1s"}, "KAMAILIO_PING_INTERVAL"),
        ({"FREESWITCH_NODES": "fs", "KAMAILIO_AGENT_PASSWORD": 'a"b'}, "KAMAILIO_AGENT_PASSWORD"),
    ],
)
def test_bad_environment_stops_with_a_message(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    (tmp_path / "dispatcher.list").write_text("1 sip:previous:5060\n")
    result = run(tmp_path, env)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""  # kamailio never started
    # a previous list is left alone
    assert (tmp_path / "dispatcher.list").read_text() == "1 sip:previous:5060\n"


@pytest.mark.skipif(shutil.which("kamailio") is None, reason="kamailio not installed")
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"KAMAILIO_ALGORITHM": "10", "KAMAILIO_MAX_LOAD": "100"},
        {"KAMAILIO_AGENT_PASSWORD": "pw", "KAMAILIO_FREESWITCH_NUMBERS": "^1[0-9]{3}$"},
        # as in compose: advertised public socket plus the internal one
        {
            "KAMAILIO_ADVERTISE": "203.0.113.5:5060",
            "KAMAILIO_INTERNAL_IP": "127.0.0.1",
            "KAMAILIO_INTERNAL_PORT": "5070",
            "KAMAILIO_ASTERISK_PREFIX": "*2",
        },
    ],
)
def test_real_kamailio_accepts_the_config_in_every_mode(
    tmp_path: Path, extra: dict[str, str]
) -> None:
    env = {
        "KAMAILIO_BIN": str(shutil.which("kamailio")),
        "FREESWITCH_NODES": "127.0.0.1:5080",
        "ASTERISK_NODES": "127.0.0.1:5090",
        "KAMAILIO_LISTEN_IP": "127.0.0.1",
        "KAMAILIO_CTL": f"unix:{tmp_path}/ctl",
        **extra,
    }
    result = run(tmp_path, env, "-c", "-Y", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "config file ok" in result.stdout + result.stderr
