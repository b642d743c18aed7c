"""Settings come from CALLYARD_* variables; a bad value names the variable and what it expects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appserver.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CALLYARD_"):
            monkeypatch.delenv(name)


def test_defaults_work_without_environment() -> None:
    s = load_settings()
    assert s.database_url is None and s.redis_url is None  # embedded servers
    assert s.data_dir == Path(".callyard")
    assert (s.api_host, s.api_port, s.log_level, s.log_format) == (
        "127.0.0.1",
        8080,
        "INFO",
        "console",
    )


def test_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLYARD_DATABASE_URL", "postgresql://u:p@db:5432/callyard")
    monkeypatch.setenv("CALLYARD_REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("CALLYARD_DATA_DIR", "/var/lib/callyard")
    monkeypatch.setenv("CALLYARD_API_PORT", "9000")
    monkeypatch.setenv("CALLYARD_LOG_LEVEL", "debug")
    monkeypatch.setenv("CALLYARD_FREESWITCH_ESL", "fs1:8021:ClueCon, fs2:8021:pa:ss")
    monkeypatch.setenv("CALLYARD_ASTERISK_ARI", "http://ari:secret@ast1:8088")
    monkeypatch.setenv("CALLYARD_ASTERISK_AMI", "ast1:5038:admin:s3cret")
    monkeypatch.setenv("CALLYARD_APPS", "myapp.flows:support")
    s = load_settings()
    assert s.database_url == "postgresql://u:p@db:5432/callyard"
    assert s.redis_url == "redis://cache:6379/2"
    assert s.data_dir == Path("/var/lib/callyard")
    assert s.api_port == 9000 and s.log_level == "DEBUG"
    assert [(n.host, n.port, n.password) for n in s.freeswitch_esl] == [
        ("fs1", 8021, "ClueCon"),
        ("fs2", 8021, "pa:ss"),
    ]
    ari = s.asterisk_ari[0]
    assert (ari.url, ari.username, ari.password) == ("http://ast1:8088", "ari", "secret")
    assert s.asterisk_ami[0].secret == "s3cret"
    assert s.apps == ["myapp.flows:support"]


def test_empty_storage_urls_mean_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLYARD_DATABASE_URL", "")
    monkeypatch.setenv("CALLYARD_REDIS_URL", "")
    s = load_settings()
    assert s.database_url is None and s.redis_url is None


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CALLYARD_DATABASE_URL", "mysql://db/x", "postgresql://"),
        ("CALLYARD_REDIS_URL", "http://cache", "redis://"),
        ("CALLYARD_API_PORT", "eighty", "integer"),
        ("CALLYARD_API_PORT", "70000", "less than or equal to 65535"),
        ("CALLYARD_LOG_LEVEL", "loud", "DEBUG"),
        ("CALLYARD_LOG_FORMAT", "xml", "json"),
        ("CALLYARD_FREESWITCH_ESL", "fs1", "host:port:password"),
        ("CALLYARD_FREESWITCH_LISTEN", "nowhere", "host:port"),
        ("CALLYARD_ASTERISK_ARI", "http://ast1:8088", "user:secret"),
        ("CALLYARD_ASTERISK_ARI", "ast1:8088", "http://"),
        ("CALLYARD_ASTERISK_AMI", "ast1:5038", "host:port:user:secret"),
        ("CALLYARD_ASTERISK_APP", "bad app!", "pattern"),
        ("CALLYARD_APPS", "module_without_attribute", "module.path:attribute"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert f"{variable}:" in message and expected in message
    assert excinfo.value.code == 2


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLYARD_API_PORT", "x")
    monkeypatch.setenv("CALLYARD_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert "CALLYARD_API_PORT" in message and "CALLYARD_LOG_FORMAT" in message


SECRET = "TopSecretAri"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALLYARD_ASTERISK_ARI", f"ftp://ari:{SECRET}@h:8088"),  # as reported
        ("CALLYARD_ASTERISK_ARI", f"ari:{SECRET}@h:8088"),
        ("CALLYARD_ASTERISK_ARI", f"http://ari:{SECRET}@"),
        ("CALLYARD_FREESWITCH_ESL", f"fs1:port:{SECRET}"),
        ("CALLYARD_FREESWITCH_ESL", f"fs1:{SECRET}"),
        ("CALLYARD_ASTERISK_AMI", f"ast1:5038:{SECRET}"),
        ("CALLYARD_ASTERISK_AMI", f"ast1:x:admin:{SECRET}"),
        ("CALLYARD_DATABASE_URL", f"mysql://u:{SECRET}@db/x"),
        ("CALLYARD_REDIS_URL", f"http://:{SECRET}@cache"),
        ("CALLYARD_LIVEKIT_URL", f"ftp://key:{SECRET}@lk"),
        ("CALLYARD_LIVEKIT_SIP_URI", f"sip:user:{SECRET}@lk"),
        ("CALLYARD_FREESWITCH_LISTEN", f"u:{SECRET}@h"),
        ("CALLYARD_HEALTH_LISTEN", f"u:{SECRET}@h:x"),
        ("CALLYARD_API_SECRET", SECRET),  # too short
        ("CALLYARD_LIVEKIT_API_SECRET", SECRET[:5]),
    ],
)
def test_config_errors_never_print_secrets(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """Finding 11: ``CALLYARD_ASTERISK_ARI=ftp://ari:TopSecretAri@h:8088`` answered
    ``...got 'ftp://ari:TopSecretAri@h:8088'``, printing the password to the terminal/logs."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    message = str(excinfo.value)
    assert f"{variable}:" in message
    assert SECRET[:5] not in message, message


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().trusted_proxies == []  # default: believe no forwarded header
    monkeypatch.setenv("CALLYARD_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7, ::1")
    assert [str(n) for n in load_settings().trusted_proxies] == [
        "10.0.0.0/8", "192.168.1.7/32", "::1/128"]
    monkeypatch.setenv("CALLYARD_TRUSTED_PROXIES", "10.0.0.0/8,proxy.example")
    with pytest.raises(SettingsError, match=r"CALLYARD_TRUSTED_PROXIES.*proxy\.example"):
        load_settings()


FAILOVER_URL = ("postgresql://callyard:pw@db1:5432,db2:5432,[fd00::3]:5433/callyard"
                "?target_session_attrs=read-write")


@pytest.mark.parametrize("url", [
    FAILOVER_URL,
    FAILOVER_URL.replace("read-write", "primary"),
    "postgresql://callyard:pw@db1,db2/callyard?target_session_attrs=read-write",  # port 5432
    "postgresql://callyard:pw@db1:5432/callyard",
    "postgresql:///callyard?host=/run/postgresql",  # the local socket: no host part
])
def test_database_url_may_list_several_hosts(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("CALLYARD_DATABASE_URL", url)
    assert load_settings().database_url == url


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u:pw@db1:5432,db2:5432/callyard",
     "2 hosts but no target_session_attrs: add ?target_session_attrs=read-write"),
    ("postgresql://u:pw@db1:5432,db2:5432/callyard?target_session_attrs=any",
     "target_session_attrs=any: Callyard writes"),
    ("postgresql://u:pw@db1/callyard?target_session_attrs=prefer-standby",
     "target_session_attrs=prefer-standby: Callyard writes, so it needs the primary"),
    ("postgresql://u:pw@db1:5432,db2:x/callyard?target_session_attrs=read-write",
     "expected host:port in the host list, got 'db2:x'"),
    ("postgresql://u:pw@db1:5432,/callyard?target_session_attrs=read-write",
     "a host is missing in the host list"),
])
def test_database_url_that_could_reach_a_standby_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    """Several hosts without target_session_attrs=read-write: a process could connect to a
    read-only standby (LISTEN and every write would fail there)."""
    monkeypatch.setenv("CALLYARD_DATABASE_URL", url)
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    assert f"CALLYARD_DATABASE_URL: {expected}" in str(excinfo.value)
    assert "pw" not in str(excinfo.value)
