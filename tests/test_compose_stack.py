"""compose/docker-compose.yml: valid for both compose tools, self-contained in the repository.

Validation runs ``docker compose config`` where the compose plugin works, else Debian's
``docker-compose`` (v1); no Docker engine is needed for either. The structural checks read
the YAML directly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from appserver.api.command import exposure_problems
from appserver.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


COMPOSE = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="neither `docker compose` nor `docker-compose` is installed "
    "(Debian package docker-compose; .ci/run installs it)",
)


def _run_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    # Only PATH and HOME: variables from the caller's shell must not fill in for .env.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        [*COMPOSE, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example line without '=': {line!r}"
            values[name] = value
    return values


@needs_compose
def test_compose_file_validates_with_the_example_env() -> None:
    result = _run_config(ENV_EXAMPLE, "-q")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_compose
def test_resolved_config_wires_services_to_each_other() -> None:
    result = _run_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    example = _env_example()
    api_env = resolved["callyard-api"]["environment"]
    assert api_env["CALLYARD_DATABASE_URL"] == (
        f"postgresql://{example['POSTGRES_USER']}:{example['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{example['POSTGRES_DB']}"
    )
    assert api_env["CALLYARD_REDIS_URL"] == f"redis://:{example['REDIS_PASSWORD']}@redis:6379/0"
    # callyard api on 0.0.0.0 starts only with real secrets (not LiveKit's devkey/secret)
    settings = load_settings(**{k.removeprefix("CALLYARD_").lower(): v
                                for k, v in api_env.items() if k.startswith("CALLYARD_")})
    assert exposure_problems(settings, settings.api_host) == []
    fs_env = resolved["callyard-freeswitch"]["environment"]
    assert fs_env["CALLYARD_FREESWITCH_ESL"] == (
        f"freeswitch:8021:{example['FREESWITCH_ESL_PASSWORD']}"
    )
    ast_env = resolved["callyard-asterisk"]["environment"]
    assert ast_env["CALLYARD_ASTERISK_ARI"] == (
        f"http://{example['ASTERISK_ARI_USER']}:{example['ASTERISK_ARI_PASSWORD']}@asterisk:8088"
    )
    livekit = yaml.safe_load(resolved["livekit"]["environment"]["LIVEKIT_CONFIG"])
    assert livekit["keys"] == {example["LIVEKIT_API_KEY"]: example["LIVEKIT_API_SECRET"]}
    assert livekit["redis"]["password"] == example["REDIS_PASSWORD"]
    sip = yaml.safe_load(resolved["livekit-sip"]["environment"]["SIP_CONFIG_BODY"])
    assert sip["ws_url"] == "ws://livekit:7880"
    assert sip["api_secret"] == example["LIVEKIT_API_SECRET"]


@needs_compose
def test_missing_secrets_stop_compose_with_a_message(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = _run_config(empty, "-q")
    assert result.returncode != 0
    assert "set in compose/.env" in result.stdout + result.stderr


def test_every_mounted_host_path_and_build_context_exists() -> None:
    checked = 0
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                path = (COMPOSE_DIR / source).resolve()
                assert path.exists(), f"{name}: mounted {source} is not in the repository"
                assert REPO in path.parents or path == REPO, f"{name}: {source} is outside"
                checked += 1
        build = service.get("build")
        if build:
            context = COMPOSE_DIR / (build if isinstance(build, str) else build["context"])
            assert context.is_dir(), f"{name}: build context {context} missing"
            dockerfile = context / (
                build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            )
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
    assert checked >= 3


def test_named_volumes_are_declared_and_data_services_persist() -> None:
    data = _compose()
    declared = set(data.get("volumes") or {})
    used = {
        v.split(":", 1)[0]
        for s in data["services"].values()
        for v in s.get("volumes", [])
        if isinstance(v, str) and not v.startswith((".", "/"))
    }
    assert used <= declared, used - declared
    services = _services()
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_secrets_only_come_from_the_env_file() -> None:
    text = COMPOSE_FILE.read_text()
    used = set(VARIABLE.findall(text))
    example = _env_example()
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    for secret in (
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "FREESWITCH_ESL_PASSWORD",
        "ASTERISK_ARI_PASSWORD",
        "ASTERISK_AMI_SECRET",
        "LIVEKIT_API_SECRET",
        "KAMAILIO_AGENT_PASSWORD",
        "CALLYARD_API_SECRET",
    ):
        # required (no default) wherever it is used, so a missing .env cannot start the stack
        uses = re.findall(r"\$\{" + secret + r"(:?[-?])?", text)
        assert uses and all(u == ":?" for u in uses), secret
        assert example[secret].startswith("change-me"), secret
    assert not (COMPOSE_DIR / ".env").exists() or ".env" in (COMPOSE_DIR / ".gitignore").read_text()


def test_services_of_the_stack_and_their_health_checks() -> None:
    services = _services()
    expected = {
        "postgres",
        "redis",
        "freeswitch",
        "asterisk",
        "kamailio",
        "livekit",
        "livekit-sip",
        "setup",
        "callyard-api",
        "callyard-freeswitch",
        "callyard-freeswitch-2",
        "callyard-asterisk",
        "callyard-cdr-writer",
        "prompts",
        "livekit-setup",
    }
    assert expected <= set(services)
    for name in (
        "postgres",
        "redis",
        "freeswitch",
        "asterisk",
        "kamailio",
        "livekit",
        "callyard-api",
        "callyard-freeswitch",
        "callyard-freeswitch-2",
        "callyard-asterisk",
        "callyard-cdr-writer",
    ):
        assert "test" in services[name].get("healthcheck", {}), name
    # workers serve /healthz where their health check looks
    for name in ("callyard-freeswitch", "callyard-asterisk", "callyard-cdr-writer"):
        listen = services[name]["environment"]["CALLYARD_HEALTH_LISTEN"]
        port = listen.rpartition(":")[2]
        assert f"127.0.0.1:{port}/healthz" in services[name]["healthcheck"]["test"][-1], name
    # the Callyard processes share one image built from the repository
    images = {
        services[n]["image"]
        for n in expected
        if n.startswith(("callyard", "setup", "prompts", "livekit-setup"))
    }
    assert images == {"callyard:dev"}
    assert services["setup"]["command"] == ["callyard migrate && callyard seed-demo"]
    commands = {
        n: services[n]["command"]
        for n in ("callyard-api", "callyard-freeswitch", "callyard-asterisk", "callyard-cdr-writer")
    }
    assert commands == {
        "callyard-api": ["api"],
        "callyard-freeswitch": ["freeswitch"],
        "callyard-asterisk": ["asterisk"],
        "callyard-cdr-writer": ["cdr-writer"],
    }


def test_kamailio_service_uses_the_shipped_edge() -> None:
    kamailio = _services()["kamailio"]
    assert "./kamailio:/etc/callyard-kamailio:ro" in kamailio["volumes"]
    dockerfile = (COMPOSE_DIR / "kamailio" / "Dockerfile").read_text()
    assert "/etc/callyard-kamailio/entrypoint.sh" in dockerfile
    env = kamailio["environment"]
    assert env["FREESWITCH_NODES"].startswith("freeswitch:")
    assert env["ASTERISK_NODES"].startswith("asterisk:")
    published = {p.rsplit(":", 1)[1] for p in kamailio["ports"]}
    assert published == {"5060/udp", "5060/tcp"}


def test_callyard_commands_run_by_the_stack_exist() -> None:
    from appserver.cli import COMMANDS

    services = _services()
    used = {services[n]["command"][0] for n in services if n.startswith("callyard-")}
    used |= set(re.findall(r"callyard ([a-z-]+)", services["setup"]["command"][0]))
    used.add(services["livekit-setup"]["command"][0])
    used.add(services["prompts"]["command"][0])
    assert used == {
        "api",
        "freeswitch",
        "asterisk",
        "cdr-writer",
        "migrate",
        "seed-demo",
        "livekit-setup",
        "sounds",
    }
    assert used <= set(COMMANDS), sorted(used - set(COMMANDS))


def test_every_generated_sound_set_reaches_both_engines_sound_folders() -> None:
    from appserver.sounds import SETS

    services = _services()
    prompts = services["prompts"]
    out_dir = prompts["command"][1]
    assert prompts["command"] == ["sounds", out_dir]  # `callyard sounds OUT_DIR`: every set
    # FreeSWITCH plays <set>/x.wav under its sound_prefix; Asterisk sound:<set>/x in en/
    folders = {"freeswitch": "/usr/share/freeswitch/sounds/en/us/callie",
               "asterisk": "/var/lib/asterisk/sounds/en"}
    for set_name in SETS:
        volume = f"sounds-{set_name}"
        assert f"{volume}:{out_dir}/{set_name}" in prompts["volumes"]
        for engine, folder in folders.items():
            assert f"{volume}:{folder}/{set_name}:ro" in services[engine]["volumes"], engine
    for engine in folders:
        condition = services[engine]["depends_on"]["prompts"]["condition"]
        assert condition == "service_completed_successfully"


def test_image_carries_the_console_libraries_where_the_api_serves_them() -> None:
    from appserver.api import app

    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    web = REPO / "appserver" / "api" / "web"
    for name in ("package.json", "package-lock.json"):
        assert (web / name).is_file()
        assert f"appserver/api/web/{name}" in dockerfile
    copied = re.search(r"COPY --from=console /web/node_modules (\S+)", dockerfile)
    assert copied
    package_root = Path(app.__file__).resolve().parents[1]  # .../appserver
    relative = app.LIVEKIT_DIST.relative_to(package_root)
    assert (
        copied.group(1)
        == f"/usr/local/lib/python3.11/site-packages/appserver/{relative.parents[1]}"
    )
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().splitlines()
    assert "**/node_modules" in ignore  # a developer's local copy never enters the image


def test_livekit_setup_applies_the_definitions_shipped_in_livekit() -> None:
    from appserver.agents.setup_command import RULE_FILE, TRUNK_FILE

    setup = _services()["livekit-setup"]
    mount = next(v for v in setup["volumes"] if v.startswith("../livekit:"))
    folder = mount.split(":")[1]
    assert setup["command"] == ["livekit-setup", "--dir", folder]
    for name in (TRUNK_FILE, RULE_FILE):
        assert (COMPOSE_DIR / "../livekit" / name).is_file()
