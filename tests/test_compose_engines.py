"""The compose stack agrees with the engine configuration it mounts.

Ports, host names and environment variables appear both in compose/docker-compose.yml and
in the rendered engine files (freeswitch-conf/conf, asterisk-conf); a change on one side
only would break calls at run time, so these tests read both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
FS_CONF = REPO / "freeswitch-conf" / "conf"
AST_CONF = REPO / "asterisk-conf"


def _services() -> dict[str, dict[str, Any]]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    assert isinstance(services, dict)
    return services


def _published_udp_range(service: dict[str, Any]) -> tuple[int, int]:
    for port in service["ports"]:
        m = re.fullmatch(r"(\d+)-(\d+):(\d+)-(\d+)/udp", port)
        if m:
            assert m.group(1, 2) == m.group(3, 4), f"RTP ports must map 1:1: {port}"
            return int(m.group(1)), int(m.group(2))
    raise AssertionError("no published UDP port range")


def _node_port(nodes: str) -> set[int]:
    return {int(node.rpartition(":")[2]) for node in nodes.split(",")}


def test_kamailio_reaches_freeswitch_on_its_sip_profile_port() -> None:
    profile = (FS_CONF / "sip_profiles" / "callyard.xml").read_text()
    sip_port = re.search(r'name="sip-port" value="(\d+)"', profile)
    assert sip_port
    env = _services()["kamailio"]["environment"]
    assert _node_port(env["FREESWITCH_NODES"]) == {int(sip_port.group(1))}


def test_kamailio_and_asterisk_point_at_each_other() -> None:
    pjsip = (AST_CONF / "pjsip.conf").read_text()
    bind = re.search(r"^bind\s*=\s*[\d.]+:(\d+)", pjsip, re.M)
    assert bind
    env = _services()["kamailio"]["environment"]
    assert _node_port(env["ASTERISK_NODES"]) == {int(bind.group(1))}
    # Asterisk sends calls for agents to the edge's internal socket, by service name
    contact = re.search(r"^contact\s*=\s*sip:([\w.-]+):(\d+)", pjsip, re.M)
    assert contact
    assert contact.group(1) == "kamailio" and "kamailio" in _services()
    assert int(contact.group(2)) == int(env["KAMAILIO_INTERNAL_PORT"])


def test_published_rtp_ports_are_ones_the_engines_use() -> None:
    services = _services()
    switch = (FS_CONF / "autoload_configs" / "switch.conf.xml").read_text()
    fs_start = re.search(r'name="rtp-start-port" value="(\d+)"', switch)
    fs_end = re.search(r'name="rtp-end-port" value="(\d+)"', switch)
    assert fs_start and fs_end
    first, last = _published_udp_range(services["freeswitch"])
    assert int(fs_start.group(1)) == first and last <= int(fs_end.group(1))

    rtp = (AST_CONF / "rtp.conf").read_text()
    ast_start = re.search(r"^rtpstart\s*=\s*(\d+)", rtp, re.M)
    ast_end = re.search(r"^rtpend\s*=\s*(\d+)", rtp, re.M)
    assert ast_start and ast_end
    assert _published_udp_range(services["asterisk"]) == (
        int(ast_start.group(1)),
        int(ast_end.group(1)),
    )


def test_freeswitch_dialplan_workers_are_services_listening_where_it_connects() -> None:
    services = _services()
    dialplan = (FS_CONF / "dialplan" / "callyard.xml").read_text()
    targets = re.findall(r'application="socket" data="([\w.-]+):(\d+) async full"', dialplan)
    assert targets
    for host, port in targets:
        assert host in services, f"dialplan connects to {host}, not a compose service"
        listen = services[host]["environment"]["CALLYARD_FREESWITCH_LISTEN"]
        assert listen.rpartition(":")[2] == port



def test_asterisk_dialplan_applications_each_have_one_worker_service() -> None:
    """Every Stasis application the dialplan tries is run by exactly one worker service."""
    # (each number pattern tries them all, in the same order)
    apps = list(dict.fromkeys(
        re.findall(r"Stasis\(([\w.-]+),", (AST_CONF / "extensions.conf").read_text())))
    assert len(apps) >= 2
    served = [service["environment"]["CALLYARD_ASTERISK_APP"]
              for service in _services().values()
              if service.get("command") == ["asterisk"]]
    assert sorted(served) == sorted(apps)

def test_engines_get_the_environment_their_config_reads() -> None:
    services = _services()
    vars_xml = (FS_CONF / "vars.xml").read_text()
    fs_env = set(re.findall(r'cmd="env-set" data="\w+=(\w+)"', vars_xml))
    assert fs_env
    assert fs_env <= set(services["freeswitch"]["environment"])

    ast_env = set()
    for script in (AST_CONF / "scripts").glob("*.sh"):
        ast_env |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", script.read_text()))
    assert ast_env
    assert ast_env <= set(services["asterisk"]["environment"])


def test_freeswitch_esl_port_and_asterisk_ports_match_the_workers() -> None:
    services = _services()
    esl = (FS_CONF / "autoload_configs" / "event_socket.conf.xml").read_text()
    esl_port = re.search(r'name="listen-port" value="(\d+)"', esl)
    assert esl_port
    for name in ("callyard-freeswitch", "callyard-freeswitch-2"):
        node = services[name]["environment"]["CALLYARD_FREESWITCH_ESL"]
        assert node.split(":")[:2] == ["freeswitch", esl_port.group(1)]

    http = (AST_CONF / "http.conf").read_text()
    manager = (AST_CONF / "manager.conf").read_text()
    http_port = re.search(r"^bindport\s*=\s*(\d+)", http, re.M)
    ami_port = re.search(r"^port\s*=\s*(\d+)", manager, re.M)
    assert http_port and ami_port
    env = services["callyard-asterisk"]["environment"]
    assert env["CALLYARD_ASTERISK_ARI"].endswith(f"@asterisk:{http_port.group(1)}")
    assert env["CALLYARD_ASTERISK_AMI"].startswith(f"asterisk:{ami_port.group(1)}:")
